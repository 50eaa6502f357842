//! Jobs: long operations that outlive the call that started them.
//!
//! A [`Job`] holds its state behind a mutex that is never held across an await, and publishes
//! what happens on a broadcast channel; the D-Bus layer turns those events into properties and
//! signals. Domain locks live in memory: a crashed service takes them with it, so nothing can
//! stay locked after a restart. What must survive a crash — that a job ran, and how it ended —
//! goes to the [`JobJournal`].

pub mod journal;
pub mod recovery;
pub mod rollback;
pub mod runner;
pub mod undo;

use crate::sync::lock;
use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::engine::vocabulary::{JobState, Operation};
use futures_util::FutureExt;
use tokio::sync::{broadcast, watch, Semaphore};
use tracing::Instrument;

use crate::engine::jobs::journal::{DomainRecord, JobJournal, JobRecord};
use crate::engine::Error;
use crate::host::virtnbdbackup::Level;
use crate::selection::DomainName;

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

/// Runs a job's work as its own task. A panic in it is caught: the job ends as failed with an
/// internal-error reason and its domains are unlocked, and the service goes on serving.
pub fn spawn_guarded(
    job: Arc<Job>,
    span: tracing::Span,
    work: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(job = job.id, panic = %what, "internal error in a job task");
                let reason = format!("internal error in vmsnapd: {what}");
                let count = job.domains.len();
                for index in 0..count {
                    job.update(index, |d| {
                        if !d.state.is_some_and(JobState::is_final) {
                            d.state = Some(JobState::Failed);
                            d.error = reason.clone();
                        }
                    });
                }
                job.set_state(JobState::Failed);
            }
            // The work, with its buffers and host handles, is gone now.
            crate::memory::release_free_pages();
        }
        .instrument(span),
    )
}

pub(crate) fn now() -> u64 {
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

    #[tokio::test]
    async fn a_panicking_job_task_fails_its_job_and_frees_its_domains() {
        let reg = JobRegistry::new(1, None);
        let job = reg.create(Operation::Backup, names(&["vm1"]), 0).unwrap();
        let task = job.clone();
        spawn_guarded(job.clone(), tracing::Span::none(), async move {
            task.set_state(JobState::Running);
            let _held = task.data.lock();
            panic!("boom");
        })
        .await
        .expect("the panic was caught inside the task");
        let JobData { state, domains, .. } = job.snapshot();
        assert_eq!(state, JobState::Failed);
        assert!(domains[0].error.contains("boom"), "{}", domains[0].error);
        reg.create(Operation::Backup, names(&["vm1"]), 0).unwrap();
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
