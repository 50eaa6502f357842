//! Fair share of the read-only calls (Status, ListBackups) between callers.
//!
//! Any local user may call Status, and each call queries libvirt and may start a `qemu-img`
//! per shut-off disk. So at most [`WORKERS`] such calls do their work at once, in arrival
//! order, whoever makes them; a caller other than root may have at most [`PER_CALLER`] calls
//! in flight (working or waiting), and all of them together [`ALL_CALLERS`]; a call beyond
//! that is refused at once with `Error.Busy` instead of queueing without end. Root is
//! only queued, never refused: it could stop the service anyway. Backups and other jobs
//! never wait here, and they use their own libvirt connection (the engine's), so a flood
//! of Status calls cannot starve a running backup's libvirt calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmsnap_dbus::Error;

/// Read-only calls doing their work at the same time.
pub const WORKERS: usize = 4;
/// Calls in flight per caller other than root.
pub const PER_CALLER: usize = 4;
/// Calls in flight of all callers other than root together.
pub const ALL_CALLERS: usize = 32;

/// The service's read-call limits; one per Manager.
pub struct ReadLimits {
    workers: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            workers: Arc::new(Semaphore::new(WORKERS)),
            in_flight: Arc::default(),
        }
    }
}

/// A call's place: it holds a worker slot and counts against its caller until dropped.
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
        let mut map = self.in_flight.lock().expect("poisoned");
        if let Some(n) = map.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.uid);
            }
        }
    }
}

impl ReadLimits {
    /// Admits a call of `uid`, waiting for a worker; refuses with `Busy` over the limits.
    pub async fn admit(&self, uid: u32) -> Result<Admitted, Error> {
        let count = if uid == 0 {
            None
        } else {
            let mut map = self.in_flight.lock().expect("poisoned");
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
        let worker = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Failed("the service is stopping".into()))?;
        Ok(Admitted {
            _worker: worker,
            _count: count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_over_its_share_is_refused_and_others_and_root_are_not() {
        let limits = ReadLimits::default();
        let mut held = Vec::new();
        for _ in 0..PER_CALLER {
            // Beyond WORKERS they would wait: hold only the counts by admitting fewer.
            if held.len() < WORKERS {
                held.push(limits.admit(1000).await.unwrap());
            }
        }
        assert!(matches!(limits.admit(1000).await, Err(Error::Busy(_))));
        drop(held.pop());
        // A slot is free again for the same caller; another caller is never refused by it.
        let again = limits.admit(1000).await.unwrap();
        drop(again);
        drop(held);
        assert!(limits.admit(1001).await.is_ok());
        assert!(limits.admit(0).await.is_ok());
    }
}
