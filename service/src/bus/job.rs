//! `org.vmsnap.VMSnap1.Job` objects: one per engine job, at `/org/vmsnap/VMSnap1/job/<n>`.
//!
//! The object only mirrors the engine's [`Job`]; a forwarding task turns the job's events into
//! the `Progress` and `Completed` signals and property-change notifications, keeps the object
//! exported for a retention period after the end, then removes it and announces that.
//!
//! Any local user may see that a job exists, what kind it is, for which domains, who started
//! it, its state and its byte counters (as udisks shows its jobs to everyone). What it
//! touched — chain folders, targets, guest paths in its checks, the reasons of a failure — is
//! the starter's and root's alone: `Results` answers them in full on `Get`/`GetAll`, and
//! everyone else, every broadcast (`PropertiesChanged`, `Completed`, `InterfacesAdded`) and
//! `GetManagedObjects` (zbus reads properties there without the caller) the public view of
//! [`public`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vmsnap_dbus::actions;
use vmsnap_dbus::job::{DiskProgress, DomainResult};
use vmsnap_dbus::names::JOB_PATH_PREFIX;
use vmsnap_dbus::Error;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};
use zvariant::{ObjectPath, OwnedObjectPath};

use super::authority::Authority;
use super::caller::caller_uid;
use super::convert::{self, job_state_word};
use super::details::Details;
use super::error::CallError;
use crate::engine::jobs::{CancelRefusal, DomainProgress, Job, JobEvent, JobState};

pub struct JobObject {
    job: Arc<Job>,
    authority: Arc<Authority>,
}

pub fn path_of(job: &Job) -> OwnedObjectPath {
    ObjectPath::try_from(format!("{JOB_PATH_PREFIX}/{}", job.id))
        .expect("numeric job paths are valid")
        .into()
}

fn results(domains: &[DomainProgress]) -> Vec<DomainResult> {
    domains
        .iter()
        .map(|d| {
            let (done, total) = d.bytes();
            DomainResult {
                domain: d.domain.clone(),
                state: job_state_word(d.state.unwrap_or(JobState::Queued)).into(),
                level: d
                    .level
                    .map(|l| convert::level(l).as_str().to_string())
                    .unwrap_or_default(),
                folder: d.folder.clone(),
                new_chain_reason: d.new_chain_reason.clone(),
                bytes_done: done,
                bytes_total: total,
                disks: d
                    .disks
                    .iter()
                    .map(|(disk, done, total)| DiskProgress {
                        disk: disk.clone(),
                        bytes_done: *done,
                        bytes_total: *total,
                    })
                    .collect(),
                error: d.error.clone(),
                pruned: d.pruned.clone(),
                checks: d.checks.clone(),
            }
        })
        .collect()
}

/// What anyone may see of a domain's result: no path, no message, no check.
fn public(mut result: DomainResult) -> DomainResult {
    result.folder.clear();
    result.new_chain_reason.clear();
    result.error.clear();
    result.pruned.clear();
    result.checks.clear();
    result
}

impl JobObject {
    /// Whether the caller of `header` may see the job's details: its starter and root.
    async fn may_see(&self, connection: &Connection, header: Option<&Header<'_>>) -> bool {
        match header {
            Some(h) => {
                let uid = caller_uid(connection, h).await;
                uid == 0 || uid == self.job.uid
            }
            None => false,
        }
    }
}

#[interface(name = "org.vmsnap.VMSnap1.Job")]
impl JobObject {
    /// Stops the job, whatever its kind. Running backups are interrupted the safe way (SIGINT
    /// to virtnbdbackup, then libvirt's job is aborted); a verify or restore stops its
    /// virtnbdrestore and qemu-img with their helpers and removes its scratch or staging
    /// directory; queued domains never start. The user who started the job may cancel it;
    /// anyone else needs the org.vmsnap.cancel action. Errors: AlreadyCancelled (asked
    /// before; the job is stopping), NotCancelable (the job has ended).
    async fn cancel(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), CallError> {
        let uid = caller_uid(connection, &header).await;
        // Cancelling one's own job needs no right; anyone else's needs org.vmsnap.cancel.
        if uid != self.job.uid {
            let domains: Vec<String> = self.job.domains.iter().map(|d| d.to_string()).collect();
            let details = Details::new("cancel", &domains).with("job", &self.job.id.to_string());
            self.authority
                .check(connection, &header, actions::CANCEL, &details)
                .await?;
        }
        let job = self.job.id;
        match self.job.request_cancel() {
            Ok(()) => {
                tracing::info!(job, uid, "cancel requested");
                Ok(())
            }
            Err(CancelRefusal::AlreadyCancelled) => {
                Err(Error::AlreadyCancelled(format!("job {job} is already being cancelled")).into())
            }
            Err(CancelRefusal::Ended(state)) => Err(Error::NotCancelable(format!(
                "job {job} has ended ({})",
                job_state_word(state)
            ))
            .into()),
        }
    }

    /// Throttled progress of one disk (at most a few signals per second).
    #[zbus(signal)]
    async fn progress(
        emitter: &SignalEmitter<'_>,
        domain: &str,
        disk: &str,
        done: u64,
        total: u64,
    ) -> zbus::Result<()>;

    /// The job finished: `state` is succeeded, failed or cancelled; `results` in their public
    /// form (a broadcast reaches everyone): the starter reads the details from `Results`.
    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        state: &str,
        results: Vec<DomainResult>,
    ) -> zbus::Result<()>;

    /// What the job does: `backup`, `verify` or `restore`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn operation(&self) -> String {
        convert::operation(self.job.operation).as_str().to_string()
    }

    /// The domains, in order.
    #[zbus(property(emits_changed_signal = "const"))]
    fn domains(&self) -> Vec<String> {
        self.job.domains.iter().map(|d| d.to_string()).collect()
    }

    /// Who started the job.
    #[zbus(property(emits_changed_signal = "const"), name = "StartedByUID")]
    fn started_by_uid(&self) -> u32 {
        self.job.uid
    }

    /// queued, running, succeeded, failed or cancelled.
    #[zbus(property)]
    fn state(&self) -> String {
        job_state_word(self.job.state()).to_string()
    }

    /// Whether Cancel would be taken now: true until the job ends or is asked to stop.
    #[zbus(property)]
    fn cancelable(&self) -> bool {
        self.job.is_cancelable()
    }

    /// Bytes copied so far, all domains and disks (use the Progress signal to follow it).
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_done(&self) -> u64 {
        self.job
            .snapshot()
            .domains
            .iter()
            .map(|d| d.bytes().0)
            .sum()
    }

    /// Bytes to copy, as far as announced.
    #[zbus(property(emits_changed_signal = "false"))]
    fn bytes_total(&self) -> u64 {
        self.job
            .snapshot()
            .domains
            .iter()
            .map(|d| d.bytes().1)
            .sum()
    }

    /// Per domain: domain, state, level (full, inc, copy), folder, newChainReason, bytesDone,
    /// bytesTotal, disks (disk, bytesDone, bytesTotal), error (the tool's own error line),
    /// pruned and checks. folder, newChainReason, error, pruned and checks are given only to
    /// the job's starter and root, on Get or GetAll; everyone else, PropertiesChanged and
    /// GetManagedObjects get them empty.
    #[zbus(property)]
    async fn results(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<DomainResult> {
        let full = results(&self.job.snapshot().domains);
        match self.may_see(connection, header.as_ref()).await {
            true => full,
            false => full.into_iter().map(public).collect(),
        }
    }

    /// Start time, seconds since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn start_time(&self) -> u64 {
        self.job.start_time
    }

    /// End time, seconds since the epoch; 0 while the job runs.
    #[zbus(property)]
    fn end_time(&self) -> u64 {
        self.job.snapshot().end_time
    }
}

/// A job on the bus, as the Manager lists it.
pub struct Exported {
    pub path: OwnedObjectPath,
    pub job: Arc<Job>,
    /// Ends the retention period early: the object goes at once if the job has finished, or
    /// as soon as it finishes.
    pub evict: Arc<tokio::sync::Notify>,
    /// Set once the object has left the bus, so the Manager stops listing it.
    removed: Arc<AtomicBool>,
}

impl Exported {
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

/// Exports `job`, then forwards its events until it ends and the retention period is over
/// (or it is evicted). Returns once the object is exported, so the caller can hand out its
/// path.
pub async fn export(
    connection: &Connection,
    job: Arc<Job>,
    authority: Arc<Authority>,
    retention: Duration,
) -> zbus::Result<Exported> {
    let evict = Arc::new(tokio::sync::Notify::new());
    let evicted = evict.clone();
    let removed = Arc::new(AtomicBool::new(false));
    let removed_flag = removed.clone();
    let listed = job.clone();
    let path = path_of(&job);
    let mut events = job.subscribe();
    connection
        .object_server()
        .at(
            &path,
            JobObject {
                job: job.clone(),
                authority,
            },
        )
        .await?;
    let connection = connection.clone();
    let task_path = path.clone();
    tokio::spawn(async move {
        let server = connection.object_server();
        let Ok(iface) = server.interface::<_, JobObject>(&task_path).await else {
            return;
        };
        let emitter = iface.signal_emitter().clone();
        // Subscribed before this check, so an end cannot slip between the two; a job that
        // had ended before it was exported (one adopted from the journal) has no events left.
        let final_state = loop {
            if job.state().is_final() && events.is_empty() {
                break job.state();
            }
            match events.recv().await {
                Ok(JobEvent::Progress {
                    domain,
                    disk,
                    done,
                    total,
                }) => {
                    let _ = JobObject::progress(&emitter, &domain, &disk, done, total).await;
                }
                Ok(JobEvent::Changed) => {
                    let obj = iface.get().await;
                    let _ = obj.state_changed(&emitter).await;
                    let _ = obj.cancelable_changed(&emitter).await;
                    let _ = obj.results_changed(&emitter).await;
                }
                Ok(JobEvent::Finished(state)) => break state,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break job.state(),
            }
        };
        {
            let obj = iface.get().await;
            let _ = obj.state_changed(&emitter).await;
            let _ = obj.cancelable_changed(&emitter).await;
            let _ = obj.results_changed(&emitter).await;
            let _ = obj.end_time_changed(&emitter).await;
        }
        let _ = JobObject::completed(
            &emitter,
            job_state_word(final_state),
            results(&job.snapshot().domains)
                .into_iter()
                .map(public)
                .collect(),
        )
        .await;
        tokio::select! {
            () = tokio::time::sleep(retention) => {}
            () = evicted.notified() => {}
        }
        let _ = server.remove::<JobObject, _>(&task_path).await;
        // ObjectManager announces the removal (`InterfacesRemoved`).
        removed_flag.store(true, Ordering::Release);
    });
    Ok(Exported {
        path,
        job: listed,
        evict,
        removed,
    })
}
