//! Jobs: long operations that outlive the call that started them.
//!
//! A [`Job`] holds its state behind a mutex that is never held across an await, and publishes
//! what happens on a broadcast channel; the D-Bus layer turns those events into properties and
//! signals. Domain locks live in memory: a crashed service takes them with it, so nothing can
//! stay locked after a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch, Semaphore};
use vmsnap_dbus::job::JobState;

use super::Error;
use crate::selection::DomainName;

/// Progress and results of one domain within a job.
#[derive(Debug, Clone, Default)]
pub struct DomainProgress {
    pub domain: String,
    pub state: Option<JobState>,
    pub level: String,
    pub folder: String,
    pub new_chain_reason: String,
    /// `(disk, done, total)`.
    pub disks: Vec<(String, u64, u64)>,
    pub error: String,
    /// Folders the `prune` option deleted after the backup.
    pub pruned: Vec<String>,
    /// Verify's verdict per point.
    pub checks: Vec<String>,
}

impl DomainProgress {
    pub fn bytes(&self) -> (u64, u64) {
        self.disks
            .iter()
            .fold((0, 0), |(d, t), (_, done, total)| (d + done, t + total))
    }
}

/// What a job tells its watchers.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Progress {
        domain: String,
        disk: String,
        done: u64,
        total: u64,
    },
    /// State or per-domain results changed.
    Changed,
    Finished(JobState),
}

#[derive(Debug)]
pub struct JobData {
    pub state: JobState,
    pub end_time: u64,
    pub domains: Vec<DomainProgress>,
}

/// One job.
pub struct Job {
    pub id: u64,
    pub operation: &'static str,
    pub domains: Vec<DomainName>,
    pub uid: u32,
    pub start_time: u64,
    data: Mutex<JobData>,
    events: broadcast::Sender<JobEvent>,
    cancel: watch::Sender<bool>,
    /// Held while the job runs; released as soon as it ends (the job itself stays readable).
    locks: Mutex<Option<DomainLocks>>,
}

impl Job {
    pub fn snapshot(&self) -> (JobState, u64, Vec<DomainProgress>) {
        let d = self.data.lock().expect("poisoned");
        (d.state, d.end_time, d.domains.clone())
    }

    pub fn state(&self) -> JobState {
        self.data.lock().expect("poisoned").state
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Asks the job to stop. Running work is interrupted the safe way; queued work never starts.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn cancel_receiver(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    pub fn set_state(&self, state: JobState) {
        {
            let mut d = self.data.lock().expect("poisoned");
            d.state = state;
            if state.is_final() {
                d.end_time = now();
            }
        }
        if state.is_final() {
            self.locks.lock().expect("poisoned").take();
        }
        let _ = self.events.send(if state.is_final() {
            JobEvent::Finished(state)
        } else {
            JobEvent::Changed
        });
    }

    /// Changes one domain's record and tells the watchers.
    pub fn update(&self, index: usize, change: impl FnOnce(&mut DomainProgress)) {
        {
            let mut d = self.data.lock().expect("poisoned");
            if let Some(p) = d.domains.get_mut(index) {
                change(p);
            }
        }
        let _ = self.events.send(JobEvent::Changed);
    }

    pub fn progress(&self, index: usize, disk: &str, done: u64, total: u64) {
        let domain = {
            let mut d = self.data.lock().expect("poisoned");
            let Some(p) = d.domains.get_mut(index) else {
                return;
            };
            match p.disks.iter_mut().find(|(name, _, _)| name == disk) {
                Some(entry) => {
                    entry.1 = done;
                    entry.2 = total;
                }
                None => p.disks.push((disk.to_string(), done, total)),
            }
            p.domain.clone()
        };
        let _ = self.events.send(JobEvent::Progress {
            domain,
            disk: disk.to_string(),
            done,
            total,
        });
    }
}

/// Domains with a job in progress.
#[derive(Default)]
struct LockSet(Mutex<HashSet<String>>);

/// The locks one job holds; released when the job is dropped.
struct DomainLocks {
    set: Arc<LockSet>,
    names: Vec<String>,
}

impl Drop for DomainLocks {
    fn drop(&mut self) {
        let mut held = self.set.0.lock().expect("poisoned");
        for n in &self.names {
            held.remove(n);
        }
    }
}

/// All jobs of the service.
pub struct JobRegistry {
    next_id: AtomicU64,
    locks: Arc<LockSet>,
    /// Every job created, weakly: the ones still alive and unfinished are the running ones.
    all: Mutex<Vec<Weak<Job>>>,
    /// Bounds how many domains are backed up at once.
    pub slots: Arc<Semaphore>,
}

impl JobRegistry {
    pub fn new(parallel: usize) -> Self {
        JobRegistry {
            next_id: AtomicU64::new(1),
            locks: Arc::default(),
            all: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(parallel.max(1))),
        }
    }

    /// Creates a job for `domains`, locking them all or none.
    pub fn create(
        &self,
        operation: &'static str,
        domains: Vec<DomainName>,
        uid: u32,
    ) -> Result<Arc<Job>, Error> {
        let names: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        {
            let mut held = self.locks.0.lock().expect("poisoned");
            let busy: Vec<&str> = names
                .iter()
                .filter(|n| held.contains(*n))
                .map(String::as_str)
                .collect();
            if !busy.is_empty() {
                return Err(Error::AlreadyRunning(busy.join(", ")));
            }
            held.extend(names.iter().cloned());
        }
        let locks = DomainLocks {
            set: self.locks.clone(),
            names: names.clone(),
        };
        let (events, _) = broadcast::channel(256);
        let (cancel, _) = watch::channel(false);
        let job = Arc::new(Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            operation,
            uid,
            start_time: now(),
            data: Mutex::new(JobData {
                state: JobState::Queued,
                end_time: 0,
                domains: names
                    .iter()
                    .map(|n| DomainProgress {
                        domain: n.clone(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            domains,
            events,
            cancel,
            locks: Mutex::new(Some(locks)),
        });
        let mut all = self.all.lock().expect("poisoned");
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&job));
        Ok(job)
    }

    /// Jobs that have not finished yet.
    pub fn unfinished(&self) -> Vec<Arc<Job>> {
        self.all
            .lock()
            .expect("poisoned")
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|j| !j.state().is_final())
            .collect()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DomainName> {
        list.iter().map(|n| DomainName::new(n).unwrap()).collect()
    }

    #[test]
    fn one_job_per_domain_and_locks_die_with_the_job() {
        let reg = JobRegistry::new(2);
        let a = reg.create("backup", names(&["vm1", "vm2"]), 0).unwrap();
        match reg.create("backup", names(&["vm3", "vm2"]), 0) {
            Err(Error::AlreadyRunning(m)) => assert_eq!(m, "vm2"),
            _ => panic!("expected AlreadyRunning"),
        }
        // vm3 was not left locked by the refused job.
        let c = reg.create("backup", names(&["vm3"]), 0).unwrap();
        // The end of a job frees its domains while the job stays readable.
        a.set_state(JobState::Failed);
        reg.create("backup", names(&["vm1", "vm2"]), 0).unwrap();
        drop(c);
        reg.create("backup", names(&["vm3"]), 0).unwrap();
    }

    #[test]
    fn progress_and_state_reach_subscribers() {
        let reg = JobRegistry::new(1);
        let job = reg.create("backup", names(&["vm1"]), 1000).unwrap();
        let mut rx = job.subscribe();
        job.progress(0, "vda", 10, 100);
        job.set_state(JobState::Succeeded);
        assert!(matches!(
            rx.try_recv(),
            Ok(JobEvent::Progress {
                done: 10,
                total: 100,
                ..
            })
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(JobEvent::Finished(JobState::Succeeded))
        ));
        let (state, end, domains) = job.snapshot();
        assert_eq!(state, JobState::Succeeded);
        assert!(end > 0);
        assert_eq!(domains[0].bytes(), (10, 100));
    }
}
