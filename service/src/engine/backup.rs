//! Backup: one job, one chain decision and one virtnbdbackup run per domain.
//!
//! Every domain is backed up *online*: a shut-off domain is started paused for the backup and
//! destroyed afterwards (also when the backup fails), so virtnbdbackup's offline incremental —
//! which overwrites the previous incremental's files — never runs, and every point gets its own
//! checkpoint. The service picks the level itself ([`super::chains::plan`]) and passes `full` or
//! `inc`, never `auto`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::vocabulary::JobState;
use futures_util::future::join_all;
use tracing::Instrument;

use super::access::Use;
use super::chains::eligibility;
use super::chains::plan::{self as chain, LiveChain, Plan};
use super::jobs::recovery::PausedRecords;
use super::jobs::rollback::FolderBefore;
use super::jobs::undo::undo_run;
use super::jobs::Job;
use super::prune::PruneRequest;
use super::{Engine, Error};
use crate::engine::chains::period::{GroupBy, Period};
use crate::host::backup_dir::{self, checkpoint_index, Detail};
use crate::host::checksums;
use crate::host::domain_xml::{self, DiskDefinition};
use crate::host::libvirt::{CheckpointFact, DomainState, Libvirt};
use crate::host::qmp;
use crate::host::tools::{self, Tool, ToolVersion};
use crate::host::virtnbdbackup::{self, BackupSpec, Level, Outcome, Progress};
use crate::host::{self, qemu_img};
use crate::paths::{self, BackupRoot};
use crate::selection::{self, DomainName, Resolved, Selector};

/// What the caller asked for.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
    pub group_by: GroupBy,
    pub raw: bool,
    /// virtnbdbackup's lz4 compression (`--compress`). Decided per chain: a chain that was
    /// written otherwise is not continued, a new one starts (`newChainReason` says why).
    pub compress: bool,
    /// Prune the domain's older period folders after a successful backup, keeping this many
    /// past periods besides the rule's own. Never after a failed one.
    pub prune_keep: Option<u32>,
}

/// A validated backup whose domains are locked, ready to run.
pub struct PreparedBackup {
    pub job: Arc<Job>,
    request: BackupRequest,
    qemu_img: PathBuf,
    virtnbdbackup: (std::path::PathBuf, ToolVersion),
}

/// How one domain ended.
struct DomainOutcome {
    state: JobState,
    error: String,
}

impl DomainOutcome {
    fn failed(error: impl ToString) -> Self {
        DomainOutcome {
            state: JobState::Failed,
            error: error.to_string(),
        }
    }
}

impl Engine {
    /// Checks the request, resolves and locks the domains, and creates the (queued) job.
    pub async fn prepare_backup(
        &self,
        request: BackupRequest,
        uid: u32,
    ) -> Result<PreparedBackup, Error> {
        if uid != 0 {
            paths::check_inside(request.root.as_path(), &self.config.backup_roots)?;
        }
        self.require_trusted(uid, request.root.as_path(), Use::Destination)?;
        paths::check_writable(request.root.as_path())?;
        let programs = tools::require(&[Tool::QemuImg, Tool::Virtnbdbackup])?;
        let version = self.versions.virtnbdbackup().await?;
        let existing = self.libvirt.list_all().await?;
        let domains = match selection::resolve(&request.selectors, &existing) {
            Resolved::Domains(d) => d,
            Resolved::NotFound(missing) => return Err(Error::NoSuchDomain(missing)),
        };
        let job = self
            .jobs
            .create(super::jobs::Operation::Backup, domains, uid)?;
        Ok(PreparedBackup {
            job,
            request,
            qemu_img: programs[0].clone(),
            virtnbdbackup: (programs[1].clone(), version),
        })
    }

    /// Runs a prepared backup in the background.
    pub fn spawn_backup(self: &Arc<Self>, prepared: PreparedBackup) {
        let engine = self.clone();
        let span = tracing::info_span!("backup", job = prepared.job.id, uid = prepared.job.uid);
        let job = prepared.job.clone();
        super::jobs::spawn_guarded(job, span, async move { engine.run_backup(prepared).await });
    }

    async fn run_backup(self: Arc<Self>, prepared: PreparedBackup) {
        let job = prepared.job.clone();
        job.set_state(JobState::Running);
        tracing::info!(domains = job.domains.len(), "backup started");
        let runs = job.domains.iter().enumerate().map(|(index, domain)| {
            let prepared = &prepared;
            let engine = &self;
            async move {
                let _permit = engine.jobs.slots.acquire().await;
                let span = tracing::info_span!("domain", domain = %domain);
                let outcome = engine
                    .backup_domain(prepared, index, domain)
                    .instrument(span)
                    .await;
                if outcome.state == JobState::Succeeded {
                    engine.prune_after_backup(prepared, index, domain);
                }
                job_finish_domain(&prepared.job, index, &outcome);
                outcome.state
            }
        });
        let states = join_all(runs).await;
        let state = if states.iter().all(|s| *s == JobState::Succeeded) {
            JobState::Succeeded
        } else if job.is_cancelled() {
            JobState::Cancelled
        } else {
            JobState::Failed
        };
        tracing::info!(state = state.as_str(), "backup finished");
        job.set_state(state);
    }

    fn prune_after_backup(&self, p: &PreparedBackup, index: usize, domain: &DomainName) {
        let Some(keep) = p.request.prune_keep else {
            return;
        };
        let request = PruneRequest {
            selectors: Vec::new(),
            root: p.request.root.clone(),
            group_by: p.request.group_by,
            keep,
            dry_run: false,
        };
        let today = chrono::Local::now().date_naive();
        let report = self.prune_domain(&request, domain, today, p.job.uid);
        for problem in &report.problems {
            tracing::warn!(domain = %domain, %problem, "prune after backup");
        }
        p.job.update(index, |d| d.pruned = report.deleted);
    }

    async fn backup_domain(
        &self,
        p: &PreparedBackup,
        index: usize,
        domain: &DomainName,
    ) -> DomainOutcome {
        if p.job.is_cancelled() {
            return DomainOutcome {
                state: JobState::Cancelled,
                error: "cancelled before it started".into(),
            };
        }
        p.job.update(index, |d| d.state = Some(JobState::Running));
        let d = domain.as_str();
        let state = match self.libvirt.domain(d).await {
            Ok(facts) => facts.state,
            Err(e) => return DomainOutcome::failed(e),
        };
        let started_here = match state {
            DomainState::Running | DomainState::Paused => false,
            DomainState::ShutOff => {
                tracing::info!("shut off: starting it paused for the backup");
                let records = PausedRecords::new(&self.config.state_dir);
                if let Err(e) = records.add(d) {
                    return DomainOutcome::failed(format!(
                        "cannot record it in the state directory before starting it: {e}"
                    ));
                }
                if let Err(e) = self.libvirt.start_paused(d).await {
                    records.remove(d);
                    return DomainOutcome::failed(format!("could not start it paused: {e}"));
                }
                true
            }
            DomainState::Other(s) => {
                return DomainOutcome::failed(format!(
                    "the domain is {s}; only running, paused or shut-off domains are backed up"
                ))
            }
        };
        let mut outcome = match self.backup_online(p, index, d).await {
            Ok(o) => o,
            Err(e) => DomainOutcome::failed(e),
        };
        if started_here {
            // Back to the state it had, whatever happened.
            match self.libvirt.destroy(d).await {
                Ok(()) => PausedRecords::new(&self.config.state_dir).remove(d),
                Err(e) => {
                    outcome = DomainOutcome::failed(format!(
                        "{}; and it could not be shut off again: {e}",
                        outcome.error
                    ))
                }
            }
        }
        outcome
    }

    async fn backup_online(
        &self,
        p: &PreparedBackup,
        index: usize,
        d: &str,
    ) -> Result<DomainOutcome, host::Error> {
        // One look through the API: the definition, and the checkpoints with their times and
        // whether each disk's bitmap is usable (libvirt's own query of QEMU: no taint).
        let facts = self.libvirt.domain(d).await?;
        let disks = domain_xml::parse_disks(&facts.xml)?;
        let tool = Some(p.virtnbdbackup.1);
        let mut eligible: Vec<&DiskDefinition> = Vec::new();
        let mut why: Vec<String> = Vec::new();
        for disk in &disks {
            match eligibility::ineligible_reason(disk, tool) {
                None => eligible.push(disk),
                Some(reason) => why.push(format!("{}: {reason}", disk.target)),
            }
        }
        if eligible.is_empty() {
            return Ok(DomainOutcome::failed(format!(
                "the domain has no disk an incremental chain can cover ({})",
                why.join("; ")
            )));
        }
        if !facts.state.has_qemu() {
            return Ok(DomainOutcome::failed(format!(
                "the domain is {} and QEMU cannot be asked for its bitmaps",
                facts.state.as_str()
            )));
        }
        let live = live_chain(&facts.checkpoints, &eligible)?;
        let domain_dir = p.request.root.as_path().join(d);
        let base = Period::current(p.request.group_by).folder_name();
        let latest = chain::period_folders(&domain_dir, &base)
            .last()
            .map(|f| backup_dir::scan(f, Detail::Chain))
            .transpose()?;
        let plan = chain::plan(
            &domain_dir,
            &base,
            latest.as_ref(),
            &live,
            p.request.compress,
        );
        // The checkpoints the run starts from; one it adds and does not finish goes again.
        let mut kept: Vec<String> = Vec::new();
        let (folder, level, reason) = match plan {
            Plan::Continue { folder } => {
                kept = live.checkpoints.iter().map(|(n, _)| n.clone()).collect();
                (folder, Level::Inc, String::new())
            }
            Plan::NewChain { folder, reason } => {
                tracing::info!(%reason, folder = %folder.display(), "starting a new chain");
                let cleanup = Cleanup {
                    libvirt: &self.libvirt,
                    qemu_img: &p.qemu_img,
                    timeout: self.config.command_timeout,
                };
                cleanup.remove_vmsnap_state(d, &live, &eligible).await?;
                (folder, Level::Full, reason)
            }
        };
        p.job.update(index, |x| {
            x.level = Some(level);
            x.folder = folder.display().to_string();
            x.new_chain_reason = reason.clone();
        });
        if p.job.uid != 0 {
            // Again on the final folder: a symlink planted inside a root must not lead out.
            if let Err(e) = paths::check_inside(&folder, &self.config.backup_roots) {
                return Ok(DomainOutcome::failed(e));
            }
        }
        // Just before virtnbdbackup (root) writes there by path: no directory on the way may
        // be one that another user could swap.
        if let Err(e) = self.require_trusted(p.job.uid, &folder, Use::Destination) {
            return Ok(DomainOutcome::failed(e));
        }
        let created = !folder.exists();
        let io = |source| host::Error::Io {
            path: folder.clone(),
            source,
        };
        std::fs::create_dir_all(&folder).map_err(io)?;
        // What to put back if the run fails, kept on disk until the run has ended.
        let before = FolderBefore::record(&folder, created)
            .map_err(io)?
            .with_checkpoints(d, &kept);
        let rollback_key = format!("{}-{index}", p.job.id);
        before
            .save(&self.config.state_dir, &rollback_key)
            .map_err(|source| host::Error::Io {
                path: self.config.state_dir.clone(),
                source,
            })?;
        let socket = virtnbdbackup::socket_path(&self.config.socket_dir, p.job.id, index);
        let spec = BackupSpec {
            program: p.virtnbdbackup.0.clone(),
            version: p.virtnbdbackup.1,
            uri: self.config.libvirt_uri.clone(),
            domain: d.to_string(),
            level,
            output: folder.clone(),
            socket: socket.clone(),
            raw: p.request.raw,
            compress: p.request.compress,
        };
        let mut cancel = p.job.cancel_receiver();
        let job = p.job.clone();
        let outcome = virtnbdbackup::run(&spec, &mut cancel, self.config.cancel_grace, |pr| {
            let Progress::Disk { disk, done, total } = pr;
            job.progress(index, &disk, done, total);
        })
        .await;
        let _ = std::fs::remove_file(&socket);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                undo_run(&self.libvirt, d, &kept).await;
                before.roll_back();
                FolderBefore::forget(&self.config.state_dir, &rollback_key);
                return Err(e);
            }
        };
        let result = match outcome {
            Outcome::Succeeded { digests } => match checksums::record_new_with(&folder, &digests) {
                Ok(_) => DomainOutcome {
                    state: JobState::Succeeded,
                    error: String::new(),
                },
                Err(e) => DomainOutcome::failed(format!("recording checksums: {e}")),
            },
            Outcome::Failed(reason) => {
                undo_run(&self.libvirt, d, &kept).await;
                before.roll_back();
                DomainOutcome::failed(reason)
            }
            Outcome::Cancelled { clean } => {
                // SIGINT makes virtnbdbackup abort libvirt's job; make sure, as a kill does not.
                if !clean {
                    tracing::warn!("virtnbdbackup did not stop cleanly");
                }
                undo_run(&self.libvirt, d, &kept).await;
                before.roll_back();
                DomainOutcome {
                    state: JobState::Cancelled,
                    error: "cancelled".into(),
                }
            }
        };
        FolderBefore::forget(&self.config.state_dir, &rollback_key);
        Ok(result)
    }
}

fn job_finish_domain(job: &Job, index: usize, outcome: &DomainOutcome) {
    job.update(index, |d| {
        d.state = Some(outcome.state);
        d.error = outcome.error.clone();
        if outcome.state == JobState::Succeeded {
            for disk in &mut d.disks {
                disk.1 = disk.2;
            }
        }
    });
}

/// What libvirt says of the domain's VMSnap chain: its checkpoints with their times, and for
/// every eligible disk the checkpoints whose bitmap libvirt found usable there (a missing,
/// inconsistent or non-recording bitmap gets no size in the checkpoint's XML).
fn live_chain(
    checkpoints: &[CheckpointFact],
    eligible: &[&DiskDefinition],
) -> Result<LiveChain, host::Error> {
    let mut live = LiveChain::default();
    for disk in eligible {
        live.disks.insert(disk.target.clone(), Vec::new());
    }
    for cp in checkpoints {
        if checkpoint_index(&cp.name).is_none() {
            continue;
        }
        let time = cp.created.ok_or_else(|| {
            host::Error::parse(
                format!("checkpoint {}", cp.name),
                "libvirt gave no creation time",
            )
        })?;
        live.checkpoints.push((cp.name.clone(), time));
        for d in cp.disks.iter().filter(|d| d.size.is_some()) {
            if let (Some(bitmaps), Some(bitmap)) = (live.disks.get_mut(&d.disk), &d.bitmap) {
                bitmaps.push((bitmap.clone(), false));
            }
        }
    }
    Ok(live)
}

/// Removing a domain's VMSnap checkpoints and bitmaps before a new chain.
struct Cleanup<'a> {
    libvirt: &'a Libvirt,
    qemu_img: &'a Path,
    timeout: std::time::Duration,
}

impl Cleanup<'_> {
    /// Removes the domain's VMSnap checkpoints *with* their bitmaps, and any VMSnap bitmap
    /// left without a checkpoint. Deleting only libvirt's metadata (what the original did)
    /// leaves QEMU's bitmaps behind and every later full fails with "Bitmap already exists".
    /// Only libvirt's and QEMU's state changes; no backup folder is touched.
    ///
    /// Orphans are looked for in the images (bitmaps QEMU loaded at start; one removed since
    /// is gone from the image at once) and where a delete could drop only the metadata; only
    /// when there is one is QEMU's monitor used, which taints the domain, to remove it.
    async fn remove_vmsnap_state(
        &self,
        d: &str,
        live: &LiveChain,
        eligible: &[&DiskDefinition],
    ) -> Result<(), host::Error> {
        let mut suspects = Vec::new();
        for (name, _) in live.checkpoints.iter().rev() {
            if let Err(e) = self.libvirt.delete_checkpoint(d, name, false).await {
                tracing::warn!(checkpoint = %name, error = %e, "deleting metadata only");
                self.libvirt.delete_checkpoint(d, name, true).await?;
                suspects.push(name.clone());
            }
        }
        for disk in eligible {
            let (Some(path), Some(fmt)) = (disk.source.as_deref(), disk.format.as_deref()) else {
                continue;
            };
            match qemu_img::info(self.qemu_img, path, fmt, self.timeout).await {
                Ok(info) => suspects.extend(
                    info.bitmaps
                        .into_iter()
                        .map(|b| b.name)
                        .filter(|n| checkpoint_index(n).is_some()),
                ),
                Err(e) => tracing::warn!(disk = %disk.target, error = %e, "image not readable"),
            }
        }
        if suspects.is_empty() {
            return Ok(());
        }
        tracing::info!(?suspects, "orphaned bitmaps possible: asking QEMU");
        let reply = self.libvirt.monitor_query_block(d).await?;
        for device in qmp::parse_query_block(&reply)? {
            let Some(node) = device.node_name.as_deref() else {
                continue;
            };
            for bitmap in &device.bitmaps {
                if checkpoint_index(&bitmap.name).is_some() {
                    tracing::info!(bitmap = %bitmap.name, node, "removing orphaned bitmap");
                    self.libvirt
                        .monitor_remove_bitmap(d, node, &bitmap.name)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// The chain folder a status report should describe: the period's latest.
pub fn current_chain_folder(root: &Path, domain: &str, group_by: GroupBy) -> PathBuf {
    let domain_dir = root.join(domain);
    let base = Period::current(group_by).folder_name();
    chain::period_folders(&domain_dir, &base)
        .pop()
        .unwrap_or_else(|| domain_dir.join(base))
}
