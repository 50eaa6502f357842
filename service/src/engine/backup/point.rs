//! One point of one domain, in three steps: plan it (which disks, which chain, which level),
//! prepare its folder (and the record of what to put back), then run virtnbdbackup and settle:
//! keep what it wrote, or undo everything it began — one [`Undo`] for every way a run ends.

use std::path::PathBuf;

use super::fresh::{live_chain, Cleanup};
use super::Backup;
use crate::engine::access::Use;
use crate::engine::chains::eligibility;
use crate::engine::chains::period::Period;
use crate::engine::chains::plan::{self as chain, Plan};
use crate::engine::jobs::rollback::FolderBefore;
use crate::engine::jobs::runner::DomainRun;
use crate::engine::jobs::undo::undo_run;
use crate::engine::{Engine, Error};
use crate::host::backup_dir::{self, Detail};
use crate::host::checksums;
use crate::host::domain_xml::{self, DiskDefinition};
use crate::host::virtnbdbackup::{self, BackupSpec, Level, Outcome, Progress};
use crate::host::{self};
use crate::paths;

/// Where the point goes and what it starts from.
struct PointPlan {
    folder: PathBuf,
    level: Level,
    /// The checkpoints the run starts from; one it adds and does not finish goes again.
    kept: Vec<String>,
}

/// What a run that does not finish must put back: the folder as it was, and libvirt's
/// checkpoints as they were. Saved in the state directory until the run is settled, so a
/// crash in between is undone by the next start ([`crate::engine::jobs::recovery`]).
struct Undo {
    before: FolderBefore,
    /// Its name in the state directory.
    key: String,
}

impl Engine {
    pub(super) async fn back_up_point(
        &self,
        backup: &Backup,
        run: &DomainRun<'_>,
    ) -> Result<(), Error> {
        let plan = self.plan_point(backup, run).await?;
        let undo = self.prepare_folder(run, &plan)?;
        self.run_and_settle(backup, run, &plan, undo).await
    }

    /// Which disks a chain covers, whether the point continues the period's chain or starts
    /// a new one — and for a new one, the old chain's checkpoints and bitmaps removed.
    async fn plan_point(&self, backup: &Backup, run: &DomainRun<'_>) -> Result<PointPlan, Error> {
        let d = run.domain.as_str();
        // One look through the API: the definition, and the checkpoints with their times and
        // whether each disk's bitmap is usable (libvirt's own query of QEMU: no taint).
        let facts = self.libvirt.domain(d).await?;
        let disks = domain_xml::parse_disks(&facts.xml)?;
        let tool = Some(backup.virtnbdbackup.1);
        let mut eligible: Vec<&DiskDefinition> = Vec::new();
        let mut why: Vec<String> = Vec::new();
        for disk in &disks {
            match eligibility::ineligible_reason(disk, tool) {
                None => eligible.push(disk),
                Some(reason) => why.push(format!("{}: {reason}", disk.target)),
            }
        }
        if eligible.is_empty() {
            return Err(Error::Failed(format!(
                "the domain has no disk an incremental chain can cover ({})",
                why.join("; ")
            )));
        }
        if !facts.state.has_qemu() {
            return Err(Error::Failed(format!(
                "the domain is {} and QEMU cannot be asked for its bitmaps",
                facts.state.as_str()
            )));
        }
        let live = live_chain(&facts.checkpoints, &eligible)?;
        let request = &backup.request;
        let domain_dir = request.root.as_path().join(d);
        let base = Period::current(request.group_by).folder_name();
        let latest = chain::period_folders(&domain_dir, &base)
            .last()
            .map(|f| backup_dir::scan(f, Detail::Chain))
            .transpose()?;
        let decided = chain::plan(&domain_dir, &base, latest.as_ref(), &live, request.compress);
        let (plan, reason) = match decided {
            Plan::Continue { folder } => {
                let kept = live.checkpoints.iter().map(|(n, _)| n.clone()).collect();
                let plan = PointPlan {
                    folder,
                    level: Level::Inc,
                    kept,
                };
                (plan, String::new())
            }
            Plan::NewChain { folder, reason } => {
                tracing::info!(%reason, folder = %folder.display(), "starting a new chain");
                let cleanup = Cleanup {
                    libvirt: &self.libvirt,
                    qemu_img: &backup.qemu_img,
                    timeout: self.config.command_timeout,
                };
                cleanup.remove_vmsnap_state(d, &live, &eligible).await?;
                let plan = PointPlan {
                    folder,
                    level: Level::Full,
                    kept: Vec::new(),
                };
                (plan, reason)
            }
        };
        run.update(|x| {
            x.level = Some(plan.level);
            x.folder = plan.folder.display().to_string();
            x.new_chain_reason = reason;
        });
        Ok(plan)
    }

    /// Checks the folder once more, creates it, and records what to put back if the run
    /// does not finish.
    fn prepare_folder(&self, run: &DomainRun<'_>, plan: &PointPlan) -> Result<Undo, Error> {
        let folder = &plan.folder;
        if run.job.uid != 0 {
            // Again on the final folder: a symlink planted inside a root must not lead out.
            paths::check_inside(folder, &self.config.backup_roots)?;
        }
        // Just before virtnbdbackup (root) writes there by path: no directory on the way may
        // be one that another user could swap.
        self.require_trusted(run.job.uid, folder, Use::Destination)?;
        let created = !folder.exists();
        let io = |source| host::Error::Io {
            path: folder.clone(),
            source,
        };
        std::fs::create_dir_all(folder).map_err(io)?;
        let before = FolderBefore::record(folder, created)
            .map_err(io)?
            .with_checkpoints(run.domain.as_str(), &plan.kept);
        let key = format!("{}-{}", run.job.id, run.index);
        before
            .save(&self.config.state_dir, &key)
            .map_err(|source| host::Error::Io {
                path: self.config.state_dir.clone(),
                source,
            })?;
        Ok(Undo { before, key })
    }

    /// Runs virtnbdbackup into the prepared folder; a point that was written gets its
    /// checksums, every other ending is undone.
    async fn run_and_settle(
        &self,
        backup: &Backup,
        run: &DomainRun<'_>,
        plan: &PointPlan,
        undo: Undo,
    ) -> Result<(), Error> {
        let d = run.domain.as_str();
        let socket = virtnbdbackup::socket_path(&self.config.socket_dir, run.job.id, run.index);
        let spec = BackupSpec {
            program: backup.virtnbdbackup.0.clone(),
            version: backup.virtnbdbackup.1,
            uri: self.config.libvirt_uri.clone(),
            domain: d.to_string(),
            level: plan.level,
            output: plan.folder.clone(),
            socket: socket.clone(),
            raw: backup.request.raw,
            compress: backup.request.compress,
        };
        let mut cancel = run.job.cancel_receiver();
        let ran = virtnbdbackup::run(&spec, &mut cancel, self.config.cancel_grace, |pr| {
            let Progress::Disk { disk, done, total } = pr;
            run.progress(&disk, done, total);
        })
        .await;
        let _ = std::fs::remove_file(&socket);
        let result = match ran {
            // Written: from here on the point stays, even if its checksums cannot be recorded
            // (verify then says "no checksum recorded").
            Ok(Outcome::Succeeded { digests }) => {
                let recorded = checksums::record_new_with(&plan.folder, &digests);
                FolderBefore::forget(&self.config.state_dir, &undo.key);
                return recorded
                    .map(|_| ())
                    .map_err(|e| Error::Failed(format!("recording checksums: {e}")));
            }
            Ok(Outcome::Failed(reason)) => Error::Failed(reason),
            Ok(Outcome::Cancelled { clean }) => {
                // SIGINT makes virtnbdbackup abort libvirt's job; make sure, as a kill does not.
                if !clean {
                    tracing::warn!("virtnbdbackup did not stop cleanly");
                }
                Error::Cancelled
            }
            Err(e) => e.into(),
        };
        undo_run(&self.libvirt, d, &plan.kept).await;
        undo.before.roll_back();
        FolderBefore::forget(&self.config.state_dir, &undo.key);
        Err(result)
    }
}
