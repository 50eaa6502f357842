//! Backup: one job, one chain decision and one virtnbdbackup run per domain.
//!
//! Every domain is backed up *online*: a shut-off domain is started paused for the backup and
//! destroyed afterwards (also when the backup fails), so virtnbdbackup's offline incremental —
//! which overwrites the previous incremental's files — never runs, and every point gets its own
//! checkpoint. The service picks the level itself ([`super::chains::plan`]) and passes `full` or
//! `inc`, never `auto`. One point's run is in [`point`]; clearing the way for a new chain in
//! [`fresh`].

mod fresh;
mod point;

use std::path::PathBuf;

use super::access::Use;
use super::chains::period::GroupBy;
use super::jobs::recovery::PausedRecords;
use super::jobs::runner::{DomainRun, JobKind, Pace, Prepared};
use super::jobs::Operation;
use super::prune::PruneRequest;
use super::{Engine, Error};
use crate::host::libvirt::DomainState;
use crate::host::tools::{self, Tool, ToolVersion};
use crate::paths::{self, BackupRoot};
use crate::selection::Selector;

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

/// The backup job kind: a validated request and the programs it runs.
pub struct Backup {
    request: BackupRequest,
    qemu_img: PathBuf,
    virtnbdbackup: (PathBuf, ToolVersion),
}

impl JobKind for Backup {
    const NAME: &'static str = "backup";
    const PACE: Pace = Pace::Slots;

    async fn run_domain(&self, engine: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
        engine.backup_domain(self, run).await?;
        engine.prune_after_backup(self, run);
        Ok(())
    }
}

impl Engine {
    /// Checks the request, resolves and locks the domains, and creates the (queued) job.
    pub async fn prepare_backup(
        &self,
        request: BackupRequest,
        uid: u32,
    ) -> Result<Prepared<Backup>, Error> {
        if uid != 0 {
            paths::check_inside(request.root.as_path(), &self.config.backup_roots)?;
        }
        self.require_trusted(uid, request.root.as_path(), Use::Destination)?;
        paths::check_writable(request.root.as_path())?;
        let programs = tools::require(&[Tool::QemuImg, Tool::Virtnbdbackup])?;
        let version = self.versions.virtnbdbackup().await?;
        let domains = self
            .resolve_domains(&self.libvirt, &request.selectors)
            .await?;
        let job = self.jobs.create(Operation::Backup, domains, uid)?;
        let kind = Backup {
            request,
            qemu_img: programs[0].clone(),
            virtnbdbackup: (programs[1].clone(), version),
        };
        Ok(Prepared::new(job, kind))
    }

    /// After a domain's successful backup, with the `prune` option: its older periods go.
    fn prune_after_backup(&self, backup: &Backup, run: &DomainRun<'_>) {
        let Some(keep) = backup.request.prune_keep else {
            return;
        };
        let request = PruneRequest {
            selectors: Vec::new(),
            root: backup.request.root.clone(),
            group_by: backup.request.group_by,
            keep,
            dry_run: false,
        };
        let today = chrono::Local::now().date_naive();
        let report = self.prune_domain(&request, run.domain, today, run.job.uid);
        for problem in &report.problems {
            tracing::warn!(%problem, "prune after backup");
        }
        run.update(|d| d.pruned = report.deleted);
    }

    /// One domain, started paused for the backup when it is shut off, and shut off again
    /// afterwards whatever happened.
    async fn backup_domain(&self, backup: &Backup, run: &DomainRun<'_>) -> Result<(), Error> {
        let d = run.domain.as_str();
        let started_here = match self.libvirt.domain(d).await?.state {
            DomainState::Running | DomainState::Paused => false,
            DomainState::ShutOff => {
                tracing::info!("shut off: starting it paused for the backup");
                let records = PausedRecords::new(&self.config.state_dir);
                records.add(d).map_err(|e| {
                    Error::Failed(format!(
                        "cannot record it in the state directory before starting it: {e}"
                    ))
                })?;
                if let Err(e) = self.libvirt.start_paused(d).await {
                    records.remove(d);
                    return Err(Error::Failed(format!("could not start it paused: {e}")));
                }
                true
            }
            DomainState::Other(s) => {
                return Err(Error::Failed(format!(
                    "the domain is {s}; only running, paused or shut-off domains are backed up"
                )))
            }
        };
        let outcome = self.back_up_point(backup, run).await;
        if !started_here {
            return outcome;
        }
        // Back to the state it had, whatever happened.
        match self.libvirt.destroy(d).await {
            Ok(()) => {
                PausedRecords::new(&self.config.state_dir).remove(d);
                outcome
            }
            Err(e) => {
                let before = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                Err(Error::Failed(format!(
                    "{before}; and it could not be shut off again: {e}"
                )))
            }
        }
    }
}
