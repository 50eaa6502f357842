//! Fair share of the read-only calls (Status, ListBackups, BackupHealth) between callers.
//!
//! Any local user may call Status, and each call queries libvirt and may start a `qemu-img`
//! per shut-off disk. A call goes through two gates:
//! - [`ReadLimits::enter`] at once, before anything else: a caller other than root may have
//!   at most [`PER_CALLER`] calls in flight (waiting for polkit, for a worker, or working),
//!   and all of them together [`ALL_CALLERS`]; a call beyond that is refused at once with
//!   `Error.Busy` instead of queueing without end. Root is never refused here.
//! - [`Entered::work`] only once the call is authorized: a worker slot. Callers other than
//!   root share [`WORKERS`]; root (and so the timer's `vmsnapctl`) has [`ROOT_WORKERS`] of
//!   its own that nobody else can take. A polkit check — which may wait 300 s for a password
//!   nobody types — never holds a worker, so no caller can block another's reads with
//!   checks that never end.
//!
//! Backups and other jobs never wait here, and they use their own libvirt connection (the
//! engine's), so a flood of Status calls cannot starve a running backup's libvirt calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmsnap_dbus::Error;

/// Read-only calls of callers other than root doing their work at the same time.
pub const WORKERS: usize = 4;
/// Read-only calls of root doing their work at the same time, beside the others'.
pub const ROOT_WORKERS: usize = 2;
/// Calls in flight per caller other than root.
pub const PER_CALLER: usize = 4;
/// Calls in flight of all callers other than root together.
pub const ALL_CALLERS: usize = 32;

/// The service's read-call limits; one per Manager.
pub struct ReadLimits {
    workers: Arc<Semaphore>,
    root_workers: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            workers: Arc::new(Semaphore::new(WORKERS)),
            root_workers: Arc::new(Semaphore::new(ROOT_WORKERS)),
            in_flight: Arc::default(),
        }
    }
}

/// A call that passed the first gate: it counts against its caller until dropped.
pub struct Entered {
    workers: Arc<Semaphore>,
    count: Option<Counted>,
}

/// A call doing its work: a worker slot, and its count.
pub struct Admitted {
    _worker: OwnedSemaphorePermit,
    _count: Option<Counted>,
}

struct Counted {
    uid: u32,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut map = crate::sync::lock(&self.in_flight);
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

impl ReadLimits {
    /// Counts a call of `uid` at once, or refuses it with `Busy` over the limits. Nothing is
    /// waited for: the call may now be authorized, then [`Entered::work`].
    pub fn enter(&self, uid: u32) -> Result<Entered, Error> {
        let count = if uid == 0 {
            None
        } else {
            let mut map = crate::sync::lock(&self.in_flight);
            let total: usize = map.values().sum();
            let mine = map.get(&uid).copied().unwrap_or(0);
            if mine >= PER_CALLER {
                return Err(Error::Busy(format!(
                    "uid {uid} has {mine} status or listing calls under way (at most \
                     {PER_CALLER}); try again when one has answered"
                )));
            }
            if total >= ALL_CALLERS {
                return Err(Error::Busy(format!(
                    "{total} status or listing calls are under way (at most {ALL_CALLERS} \
                     for callers other than root); try again shortly"
                )));
            }
            *map.entry(uid).or_default() += 1;
            Some(Counted {
                uid,
                in_flight: self.in_flight.clone(),
            })
        };
        let workers = match uid {
            0 => self.root_workers.clone(),
            _ => self.workers.clone(),
        };
        Ok(Entered { workers, count })
    }
}

impl Entered {
    /// Waits for a worker of the caller's lane (root's own, or the shared one).
    pub async fn work(self) -> Result<Admitted, Error> {
        let worker = self
            .workers
            .acquire_owned()
            .await
            .map_err(|_| Error::Failed("the service is stopping".into()))?;
        Ok(Admitted {
            _worker: worker,
            _count: self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_over_its_share_is_refused_and_others_and_root_are_not() {
        let limits = ReadLimits::default();
        // Calls waiting for polkit hold no worker: the caller's whole share can wait.
        let waiting: Vec<Entered> = (0..PER_CALLER)
            .map(|_| limits.enter(1000).unwrap())
            .collect();
        assert!(matches!(limits.enter(1000), Err(Error::Busy(_))));
        // Meanwhile every worker is free for others.
        let mut working = Vec::new();
        for _ in 0..WORKERS {
            working.push(limits.enter(1001).unwrap().work().await.unwrap());
        }
        drop(waiting);
        let again = limits.enter(1000).unwrap();
        drop(again);
        // Other callers' workers all taken: root still works, in its own lane.
        let root = limits.enter(0).unwrap();
        let admitted = tokio::time::timeout(std::time::Duration::from_secs(5), root.work()).await;
        assert!(admitted.is_ok(), "root waited behind other callers");
        drop(working);
    }
}
