//! The registry: every job of the service, their numbers, the domain locks, the per-caller
//! caps, and — at start-up — the jobs a previous instance left unfinished.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, watch, Semaphore};

use super::journal::JobJournal;
use super::{now, DomainProgress, Job, JobData, JobState, Operation};
use crate::engine::Error;
use crate::host::virtnbdbackup::Level;
use crate::selection::DomainName;
use crate::sync::lock;

/// Domains with a job in progress.
#[derive(Default)]
struct LockSet(Mutex<HashSet<String>>);

/// The locks one job holds; released when the job is dropped.
pub(super) struct DomainLocks {
    set: Arc<LockSet>,
    names: Vec<String>,
}

impl Drop for DomainLocks {
    fn drop(&mut self) {
        let mut held = lock(&self.set.0);
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
    journal: Option<JobJournal>,
    /// How many jobs have ended; watched by whoever acts on job ends.
    ended: Arc<watch::Sender<u64>>,
}

impl JobRegistry {
    /// A registry whose jobs are recorded in `journal` (none: in memory only, for tests).
    pub fn new(parallel: usize, journal: Option<JobJournal>) -> Self {
        JobRegistry {
            next_id: AtomicU64::new(1),
            locks: Arc::default(),
            all: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(parallel.max(1))),
            journal,
            ended: Arc::new(watch::channel(0).0),
        }
    }

    /// Changes whenever a job ends.
    pub fn ended(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Jobs that have ended and are still kept (on the bus, for their retention time).
    pub fn finished(&self) -> Vec<Arc<Job>> {
        lock(&self.all)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|j| j.state().is_final())
            .collect()
    }

    /// Reads the journal at start-up: job numbers continue after the highest recorded, and
    /// every job a previous instance left unfinished is recorded and returned as failed, so
    /// its caller learns what happened and the host can be cleaned up after it.
    pub fn adopt_interrupted(&self) -> Vec<Arc<Job>> {
        let Some(journal) = &self.journal else {
            return Vec::new();
        };
        let records = journal.load();
        if let Some(last) = records.last() {
            self.next_id.fetch_max(last.id + 1, Ordering::Relaxed);
        }
        journal.trim(&records);
        let mut adopted = Vec::new();
        for record in records.into_iter().filter(|r| !r.is_final()) {
            let Some(operation) = Operation::parse(&record.operation) else {
                tracing::warn!(
                    job = record.id,
                    operation = record.operation,
                    "an unknown job in the journal"
                );
                continue;
            };
            let domains: Vec<DomainName> = record
                .domains
                .iter()
                .filter_map(|d| DomainName::new(d).ok())
                .collect();
            let progress = record
                .results
                .iter()
                .map(|r| {
                    // A domain that finished before the crash keeps its result; the others
                    // were cut short.
                    let done = JobState::parse(&r.state).filter(|s| s.is_final());
                    DomainProgress {
                        domain: r.domain.clone(),
                        state: Some(done.unwrap_or(JobState::Failed)),
                        level: Level::parse(&r.level),
                        folder: r.folder.clone(),
                        error: match done {
                            Some(_) => r.error.clone(),
                            None => INTERRUPTED.to_string(),
                        },
                        ..Default::default()
                    }
                })
                .collect();
            let job = Arc::new(Job {
                id: record.id,
                operation,
                domains,
                uid: record.uid,
                start_time: record.start_time,
                data: Mutex::new(JobData {
                    state: JobState::Running,
                    end_time: 0,
                    domains: progress,
                }),
                events: broadcast::channel(1).0,
                cancel: watch::channel(false).0,
                locks: Mutex::new(None),
                journal: Some(journal.clone()),
                ended: self.ended.clone(),
            });
            job.set_state(JobState::Failed);
            tracing::warn!(
                job = job.id,
                operation = job.operation.as_str(),
                "a job was interrupted by the end of the previous vmsnapd: recorded as failed"
            );
            lock(&self.all).push(Arc::downgrade(&job));
            adopted.push(job);
        }
        adopted
    }

    /// Creates a job for `domains`, locking them all or none.
    pub fn create(
        &self,
        operation: Operation,
        domains: Vec<DomainName>,
        uid: u32,
    ) -> Result<Arc<Job>, Error> {
        let names: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        let cap = if uid == 0 {
            MAX_JOBS_ROOT
        } else {
            MAX_JOBS_PER_CALLER
        };
        let mine = self.unfinished().iter().filter(|j| j.uid == uid).count();
        if mine >= cap {
            return Err(Error::Busy(format!(
                "uid {uid} has {mine} jobs queued or running (at most {cap}); wait for one to end"
            )));
        }
        // Extracting reads a scratch copy, never the domain or its chain: it holds no domain
        // lock, so the nightly backup is not held up by someone copying files out.
        let locked: Vec<String> = if operation == Operation::Extract {
            Vec::new()
        } else {
            names.clone()
        };
        {
            let mut held = lock(&self.locks.0);
            let busy: Vec<&str> = locked
                .iter()
                .filter(|n| held.contains(*n))
                .map(String::as_str)
                .collect();
            if !busy.is_empty() {
                return Err(Error::AlreadyRunning(busy.join(", ")));
            }
            held.extend(locked.iter().cloned());
        }
        let locks = DomainLocks {
            set: self.locks.clone(),
            names: locked,
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
            journal: self.journal.clone(),
            ended: self.ended.clone(),
        });
        let mut all = lock(&self.all);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&job));
        Ok(job)
    }

    /// Waits until every job record handed to the journal is on disk.
    pub async fn flush_journal(&self) {
        if let Some(journal) = self.journal.clone() {
            let _ = tokio::task::spawn_blocking(move || journal.flush()).await;
        }
    }

    /// Jobs that have not finished yet.
    pub fn unfinished(&self) -> Vec<Arc<Job>> {
        lock(&self.all)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|j| !j.state().is_final())
            .collect()
    }
}

/// Jobs a caller other than root may have queued or running at once (each locks its
/// domains, so more would only wait); beyond, a new one is refused with `Busy`.
pub const MAX_JOBS_PER_CALLER: usize = 8;
/// The same for root, whose scripts may start one job per domain.
pub const MAX_JOBS_ROOT: usize = 256;

/// Why a job found unfinished in the journal failed.
pub const INTERRUPTED: &str =
    "vmsnapd stopped during this job (killed or crashed); nothing it wrote counts as a backup";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jobs::tests::names;

    #[test]
    fn one_job_per_domain_and_locks_die_with_the_job() {
        let reg = JobRegistry::new(2, None);
        let a = reg
            .create(Operation::Backup, names(&["vm1", "vm2"]), 0)
            .unwrap();
        match reg.create(Operation::Backup, names(&["vm3", "vm2"]), 0) {
            Err(Error::AlreadyRunning(m)) => assert_eq!(m, "vm2"),
            _ => panic!("expected AlreadyRunning"),
        }
        // vm3 was not left locked by the refused job.
        let c = reg.create(Operation::Backup, names(&["vm3"]), 0).unwrap();
        // The end of a job frees its domains while the job stays readable.
        a.set_state(JobState::Failed);
        reg.create(Operation::Backup, names(&["vm1", "vm2"]), 0)
            .unwrap();
        drop(c);
        reg.create(Operation::Backup, names(&["vm3"]), 0).unwrap();
    }

    #[test]
    fn interrupted_jobs_are_adopted_as_failed_and_numbers_go_on() {
        let dir = std::env::temp_dir().join(format!("vmsnap-jobs-{}", std::process::id()));
        let first = JobRegistry::new(2, Some(JobJournal::new(&dir)));
        let done = first.create(Operation::Backup, names(&["vm1"]), 0).unwrap();
        done.set_state(JobState::Running);
        done.set_state(JobState::Succeeded);
        let cut = first
            .create(Operation::Backup, names(&["vm2", "vm3"]), 1000)
            .unwrap();
        cut.set_state(JobState::Running);
        cut.update(0, |d| d.state = Some(JobState::Succeeded));
        // What was handed to the journal's thread is on disk; the process dies here, and a
        // new one reads the journal.
        first.journal.as_ref().unwrap().flush();
        let second = JobRegistry::new(2, Some(JobJournal::new(&dir)));
        let adopted = second.adopt_interrupted();
        assert_eq!(adopted.len(), 1);
        let job = &adopted[0];
        assert_eq!(
            (job.id, job.uid, job.operation),
            (cut.id, 1000, Operation::Backup)
        );
        let JobData {
            state,
            end_time: end,
            domains,
        } = job.snapshot();
        assert_eq!(state, JobState::Failed);
        assert!(end > 0);
        assert_eq!(domains[0].state, Some(JobState::Succeeded));
        assert_eq!(domains[1].state, Some(JobState::Failed));
        assert_eq!(domains[1].error, INTERRUPTED);
        // Nothing stays locked, and numbers are never reused.
        let next = second
            .create(Operation::Backup, names(&["vm2"]), 0)
            .unwrap();
        assert!(next.id > cut.id);
        // Reported once: a third instance finds nothing unfinished.
        second.journal.as_ref().unwrap().flush();
        assert!(JobRegistry::new(1, Some(JobJournal::new(&dir)))
            .adopt_interrupted()
            .is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
