//! The one place a job's life is decided.
//!
//! A job kind supplies only its per-domain work ([`JobKind::run_domain`]); the runner owns
//! everything around it, the same for every kind, as udisks' base job does for its jobs:
//! the task and its panic guard, the backup slots, the cancel check before a domain starts,
//! each domain's state and error, and the job's final state. Journal records follow from
//! the state changes ([`Job::update`], [`Job::set_state`]); domain locks were taken when the
//! job was created and go when it ends.
//!
//! Adding a job kind is one file with a type that implements [`JobKind`] and one
//! [`super::Operation`] for its name.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::join_all;
use tracing::Instrument;

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::{Job, JobState};
use crate::engine::{Engine, Error};
use crate::selection::DomainName;

/// How the domains of one job take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One after another, in the order asked for.
    OneByOne,
    /// Side by side, each holding one of the service's backup slots (`parallel_backups`,
    /// shared by every job of the kind), so a selection of fifty domains does not start
    /// fifty programs at once.
    Slots,
}

/// One domain of a running job: what a kind's work reads and reports to.
pub struct DomainRun<'a> {
    pub job: &'a Job,
    /// The domain's place in the job's results.
    pub index: usize,
    pub domain: &'a DomainName,
}

impl DomainRun<'_> {
    /// Reports progress on one disk (or another unit the kind names) of this domain.
    pub fn progress(&self, disk: &str, done: u64, total: u64) {
        self.job.progress(self.index, disk, done, total);
    }

    /// Changes this domain's results (level, folder, checks, …).
    pub fn update(&self, change: impl FnOnce(&mut super::DomainProgress)) {
        self.job.update(self.index, change);
    }

    pub fn is_cancelled(&self) -> bool {
        self.job.is_cancelled()
    }
}

/// A kind of job: its per-domain work, and how its domains take turns.
pub trait JobKind: Send + Sync + 'static {
    /// Its name in the task's span and log lines.
    const NAME: &'static str;
    /// How its domains take turns.
    const PACE: Pace = Pace::OneByOne;

    /// One domain's work. `Ok` is success; [`Error::Cancelled`] (or any error once the job
    /// was asked to stop) ends the domain as cancelled; any other error fails it with its
    /// text. Undo steps belong here, before the error is returned: the runner cannot know
    /// what a kind began.
    fn run_domain(
        &self,
        engine: &Engine,
        run: &DomainRun<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A job that was checked and created (its domains locked, queued), with its kind's work,
/// ready to start.
pub struct Prepared<K> {
    pub job: Arc<Job>,
    kind: K,
}

impl<K: JobKind> Prepared<K> {
    pub fn new(job: Arc<Job>, kind: K) -> Self {
        Prepared { job, kind }
    }
}

impl Engine {
    /// Starts a prepared job in a task of its own; returns at once.
    pub fn start<K: JobKind>(self: &Arc<Self>, prepared: Prepared<K>) {
        self.spawn_job(prepared.job, prepared.kind);
    }

    /// Runs `job` as `kind` in a task of its own; returns at once.
    fn spawn_job<K: JobKind>(self: &Arc<Self>, job: Arc<Job>, kind: K) {
        let engine = self.clone();
        let span = tracing::info_span!("job", kind = K::NAME, job = job.id, uid = job.uid);
        let task_job = job.clone();
        spawn_guarded(job, span, async move {
            engine.run_job(&task_job, &kind).await;
        });
    }

    async fn run_job<K: JobKind>(&self, job: &Job, kind: &K) {
        job.set_state(JobState::Running);
        tracing::info!(domains = job.domains.len(), "{} started", K::NAME);
        let runs = job.domains.iter().enumerate().map(|(index, domain)| {
            let run = DomainRun { job, index, domain };
            async move {
                let _slot = match K::PACE {
                    Pace::Slots => Some(self.jobs.slots.acquire().await),
                    Pace::OneByOne => None,
                };
                let span = tracing::info_span!("domain", domain = %domain);
                self.run_one(kind, &run).instrument(span).await
            }
        });
        let states = match K::PACE {
            Pace::Slots => join_all(runs).await,
            Pace::OneByOne => {
                let mut states = Vec::new();
                for run in runs {
                    states.push(run.await);
                }
                states
            }
        };
        let state = final_state(&states, job.is_cancelled());
        tracing::info!(state = state.as_str(), "{} finished", K::NAME);
        job.set_state(state);
    }

    /// One domain, from its cancel check to its recorded end.
    async fn run_one<K: JobKind>(&self, kind: &K, run: &DomainRun<'_>) -> JobState {
        if run.is_cancelled() {
            run.update(|d| {
                d.state = Some(JobState::Cancelled);
                d.error = "cancelled before it started".into();
            });
            return JobState::Cancelled;
        }
        run.update(|d| d.state = Some(JobState::Running));
        let (state, error) = match kind.run_domain(self, run).await {
            Ok(()) => (JobState::Succeeded, String::new()),
            Err(e @ Error::Cancelled) => (JobState::Cancelled, e.to_string()),
            Err(e) if run.is_cancelled() => (JobState::Cancelled, e.to_string()),
            Err(e) => (JobState::Failed, e.to_string()),
        };
        run.update(|d| {
            d.state = Some(state);
            d.error = error;
            if state == JobState::Succeeded {
                // Done is done, whatever the last progress report said.
                for disk in &mut d.disks {
                    disk.1 = disk.2;
                }
            }
        });
        state
    }
}

/// A job succeeds when every domain did (a cancel that came after the last one ended changed
/// nothing); otherwise it was cancelled if it was asked to stop, and failed if not.
fn final_state(domains: &[JobState], cancelled: bool) -> JobState {
    if domains.iter().all(|s| *s == JobState::Succeeded) {
        JobState::Succeeded
    } else if cancelled {
        JobState::Cancelled
    } else {
        JobState::Failed
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jobs::tests::names;
    use crate::engine::jobs::{JobData, JobRegistry, Operation};

    /// A kind whose work is given per domain name.
    struct Scripted;

    impl JobKind for Scripted {
        const NAME: &'static str = "scripted";

        async fn run_domain(&self, _: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
            match run.domain.as_str() {
                "ok" => {
                    run.progress("vda", 5, 10);
                    Ok(())
                }
                "stop" => {
                    run.job.cancel();
                    Err(Error::Cancelled)
                }
                "panic" => panic!("scripted panic"),
                other => Err(Error::Failed(format!("{other} broke"))),
            }
        }
    }

    /// Runs `domains` as a [`Scripted`] job on an engine of its own (its state directory
    /// removed afterwards) and returns how the job and each domain ended.
    async fn run(domains: &[&str]) -> (JobState, Vec<super::super::DomainProgress>) {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state_dir =
            std::env::temp_dir().join(format!("vmsnap-runner-{}-{n}", std::process::id()));
        let engine = Arc::new(Engine::new(crate::engine::Config {
            state_dir: state_dir.clone(),
            ..Default::default()
        }));
        let names = domains
            .iter()
            .map(|d| DomainName::new(d).unwrap())
            .collect();
        let job = engine
            .jobs
            .create(Operation::Verify, names, 1000)
            .expect("created");
        let mut events = job.subscribe();
        engine.spawn_job(job.clone(), Scripted);
        while !job.state().is_final() {
            let _ = events.recv().await;
        }
        engine.jobs.flush_journal().await;
        let _ = std::fs::remove_dir_all(&state_dir);
        let snapshot = job.snapshot();
        (snapshot.state, snapshot.domains)
    }

    #[tokio::test]
    async fn every_domain_ends_with_a_state_and_the_job_with_the_rule() {
        let (state, domains) = run(&["ok", "bad"]).await;
        assert_eq!(state, JobState::Failed);
        assert_eq!(domains[0].state, Some(JobState::Succeeded));
        assert_eq!(domains[0].bytes(), (10, 10), "done is done");
        assert_eq!(domains[1].state, Some(JobState::Failed));
        assert_eq!(domains[1].error, "bad broke");

        let (state, domains) = run(&["ok", "stop", "ok2"]).await;
        assert_eq!(state, JobState::Cancelled);
        assert_eq!(domains[1].error, "cancelled");
        assert_eq!(domains[2].state, Some(JobState::Cancelled));
        assert_eq!(domains[2].error, "cancelled before it started");

        let (state, _) = run(&["ok"]).await;
        assert_eq!(state, JobState::Succeeded);
    }

    #[tokio::test]
    async fn a_panicking_kind_fails_the_job_and_the_domains_not_yet_ended() {
        let (state, domains) = run(&["ok", "panic"]).await;
        assert_eq!(state, JobState::Failed);
        assert_eq!(domains[0].state, Some(JobState::Succeeded));
        assert_eq!(domains[1].state, Some(JobState::Failed));
        assert!(domains[1].error.contains("scripted panic"), "{domains:?}");
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
}
