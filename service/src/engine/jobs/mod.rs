//! Jobs: long operations that outlive the call that started them.
//!
//! A [`Job`] holds its state behind a mutex that is never held across an await, and publishes
//! what happens on a broadcast channel; the D-Bus layer turns those events into properties and
//! signals. Domain locks live in memory: a crashed service takes them with it, so nothing can
//! stay locked after a restart. What must survive a crash — that a job ran, and how it ended —
//! goes to the [`JobJournal`].

pub mod journal;
pub mod recovery;
pub mod registry;
pub mod rollback;
pub mod runner;
pub mod undo;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

use self::journal::{DomainRecord, JobJournal, JobRecord};
use self::registry::DomainLocks;
pub use self::registry::{JobRegistry, INTERRUPTED, MAX_JOBS_PER_CALLER, MAX_JOBS_ROOT};
pub use self::runner::spawn_guarded;
pub use crate::engine::vocabulary::{JobState, Operation};
use crate::host::virtnbdbackup::Level;
use crate::selection::DomainName;
use crate::sync::lock;

/// Why a cancel request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefusal {
    /// Cancel was asked before; the job is stopping.
    AlreadyCancelled,
    /// The job has ended, in this state.
    Ended(JobState),
}

/// Progress and results of one domain within a job.
#[derive(Debug, Clone, Default)]
pub struct DomainProgress {
    pub domain: String,
    pub state: Option<JobState>,
    /// Once decided.
    pub level: Option<Level>,
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
    /// What the journal keeps of it.
    pub fn record(&self) -> DomainRecord {
        DomainRecord {
            domain: self.domain.clone(),
            state: self
                .state
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            level: self
                .level
                .map(|l| l.as_str().to_string())
                .unwrap_or_default(),
            folder: self.folder.clone(),
            error: self.error.clone(),
        }
    }

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

/// Where a job stands: its state, when it ended (0: not yet) and its domains' results.
#[derive(Debug, Clone)]
pub struct JobData {
    pub state: JobState,
    pub end_time: u64,
    pub domains: Vec<DomainProgress>,
}

/// One job.
pub struct Job {
    pub id: u64,
    pub operation: Operation,
    pub domains: Vec<DomainName>,
    pub uid: u32,
    pub start_time: u64,
    data: Mutex<JobData>,
    events: broadcast::Sender<JobEvent>,
    cancel: watch::Sender<bool>,
    /// Held while the job runs; released as soon as it ends (the job itself stays readable).
    locks: Mutex<Option<DomainLocks>>,
    journal: Option<JobJournal>,
    /// The registry's count of ended jobs, raised when this one ends (backup health listens).
    ended: Arc<watch::Sender<u64>>,
}

impl Job {
    /// A copy of where the job stands now.
    pub fn snapshot(&self) -> JobData {
        lock(&self.data).clone()
    }

    pub fn state(&self) -> JobState {
        lock(&self.data).state
    }

    /// The job as the journal keeps it.
    pub fn record(&self) -> JobRecord {
        let JobData {
            state,
            end_time,
            domains,
        } = self.snapshot();
        JobRecord {
            id: self.id,
            operation: self.operation.as_str().to_string(),
            domains: self.domains.iter().map(|d| d.to_string()).collect(),
            uid: self.uid,
            start_time: self.start_time,
            end_time,
            state: state.as_str().to_string(),
            results: domains.iter().map(DomainProgress::record).collect(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.events.subscribe()
    }

    /// Asks the job to stop. Running work is interrupted the safe way; queued work never starts.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// A client's cancel: refused for a job that has ended or was cancelled already, so the
    /// caller learns that nothing it asked for will happen.
    pub fn request_cancel(&self) -> Result<(), CancelRefusal> {
        let state = self.state();
        if state.is_final() {
            return Err(CancelRefusal::Ended(state));
        }
        if self.cancel.send_replace(true) {
            return Err(CancelRefusal::AlreadyCancelled);
        }
        let _ = self.events.send(JobEvent::Changed);
        Ok(())
    }

    /// Whether a cancel request would be taken now.
    pub fn is_cancelable(&self) -> bool {
        !self.state().is_final() && !self.is_cancelled()
    }

    /// Resolves once the job is asked to stop (at once if it was already).
    pub async fn cancelled(&self) {
        let mut receiver = self.cancel.subscribe();
        let _ = receiver.wait_for(|cancelled| *cancelled).await;
    }

    pub fn cancel_receiver(&self) -> watch::Receiver<bool> {
        self.cancel.subscribe()
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    pub fn set_state(&self, state: JobState) {
        if state.is_final() {
            // Before the end is visible: a client that sees the job finished and starts the
            // next one for the same domains must not find them still locked (found by
            // trust.rs's loop of jobs, which got AlreadyRunning during the journal's fsync).
            lock(&self.locks).take();
        }
        {
            let mut d = lock(&self.data);
            d.state = state;
            if state.is_final() {
                d.end_time = now();
            }
        }
        self.journal_write();
        if state.is_final() {
            self.log_end(None, state, "");
            self.ended.send_modify(|n| *n = n.wrapping_add(1));
        }
        let _ = self.events.send(if state.is_final() {
            JobEvent::Finished(state)
        } else {
            JobEvent::Changed
        });
    }

    /// Changes one domain's record and tells the watchers. A domain's end goes to the journal
    /// at once, so a crash later in the job does not turn a finished backup into a failed one.
    pub fn update(&self, index: usize, change: impl FnOnce(&mut DomainProgress)) {
        let ended = {
            let mut d = lock(&self.data);
            match d.domains.get_mut(index) {
                Some(p) => {
                    let before = p.state;
                    change(p);
                    let ended = p.state != before && p.state.is_some_and(JobState::is_final);
                    ended.then(|| (p.domain.clone(), p.state, p.error.clone()))
                }
                None => None,
            }
        };
        if let Some((domain, state, error)) = ended {
            self.log_end(Some(&domain), state.unwrap_or(JobState::Failed), &error);
            self.journal_write();
        }
        let _ = self.events.send(JobEvent::Changed);
    }

    /// One journal entry per domain and one per job at their end, with the fields an
    /// administrator filters on (`journalctl -u vmsnapd JOB=12`, `DOMAIN=web1`, and
    /// `-p err` for failures).
    fn log_end(&self, domain: Option<&str>, state: JobState, error: &str) {
        let (job, operation, uid, result) =
            (self.id, self.operation.as_str(), self.uid, state.as_str());
        match (domain, state) {
            (Some(domain), JobState::Failed) => {
                tracing::error!(
                    job,
                    operation,
                    uid,
                    domain,
                    result,
                    error,
                    "{operation} of {domain} failed: {error}"
                )
            }
            (Some(domain), JobState::Cancelled) => {
                tracing::warn!(
                    job,
                    operation,
                    uid,
                    domain,
                    result,
                    "{operation} of {domain} cancelled"
                )
            }
            (Some(domain), _) => {
                tracing::info!(
                    job,
                    operation,
                    uid,
                    domain,
                    result,
                    "{operation} of {domain} {result}"
                )
            }
            (None, JobState::Failed) => {
                tracing::error!(job, operation, uid, result, "{operation} job {job} failed")
            }
            (None, _) => tracing::info!(
                job,
                operation,
                uid,
                result,
                "{operation} job {job} {result}"
            ),
        }
    }

    fn journal_write(&self) {
        if let Some(journal) = &self.journal {
            journal.write(&self.record());
        }
    }

    pub fn progress(&self, index: usize, disk: &str, done: u64, total: u64) {
        let domain = {
            let mut d = lock(&self.data);
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

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Domain names for the jobs' tests (here, in the registry's and in the runner's).
    pub(crate) fn names(list: &[&str]) -> Vec<DomainName> {
        list.iter().map(|n| DomainName::new(n).unwrap()).collect()
    }

    #[test]
    fn progress_and_state_reach_subscribers() {
        let reg = JobRegistry::new(1, None);
        let job = reg
            .create(Operation::Backup, names(&["vm1"]), 1000)
            .unwrap();
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
        let JobData {
            state,
            end_time: end,
            domains,
        } = job.snapshot();
        assert_eq!(state, JobState::Succeeded);
        assert!(end > 0);
        assert_eq!(domains[0].bytes(), (10, 100));
    }
}
