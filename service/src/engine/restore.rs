//! Restore: a chain rebuilt up to a point into a target directory, optionally defined as a
//! new domain (listing backups: [`super::list`]; verifying them: [`super::verify`]).
//!
//! Restore writes into a fresh hidden directory inside the target and moves the result up only
//! when it succeeded, so a failed or cancelled restore never leaves half an image in the
//! target. Inside, not beside: under the unit's sandbox the target may be the only writable
//! path (`ReadWritePaths=/srv/restore`), and a rename stays on the target's file system.

use super::access::Use;
use super::chains::catalog::{self, Chain};
use super::jobs::runner::{DomainRun, JobKind, Prepared};
use super::jobs::{Job, Operation};
use super::{Engine, Error};
use crate::host::destination::Destination;
use crate::host::safe_fs::{Dir, Kind};
use crate::host::tools::{self, Tool};
use crate::host::virtnbdbackup::Level;
use crate::paths::{self, BackupRoot};
use crate::selection::DomainName;

/// The hidden directory inside a target that a restore writes into first
/// (`.vmsnap-restore-<job>`); one a crashed restore left behind does not make a target
/// "not empty".
const STAGING_PREFIX: &str = ".vmsnap-restore-";

/// The restore job kind.
pub struct Restore {
    request: RestoreRequest,
}

impl JobKind for Restore {
    const NAME: &'static str = "restore";

    async fn run_domain(&self, engine: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
        engine
            .restore(run.job, &self.request)
            .await
            .map_err(Error::Failed)
    }
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub domain: DomainName,
    pub root: BackupRoot,
    pub folder: Option<String>,
    pub until: Option<String>,
    pub disk: Option<String>,
    pub target: BackupRoot,
    pub overwrite: bool,
    pub define_as: Option<DomainName>,
}

impl Engine {
    /// Checks a restore request and creates its job; refuses before anything is written.
    pub async fn prepare_restore(
        &self,
        request: RestoreRequest,
        uid: u32,
    ) -> Result<Prepared<Restore>, Error> {
        tools::require(&[Tool::QemuImg, Tool::Virtnbdbackup])?;
        self.inspect_destination(uid, request.target.as_path())?;
        paths::check_writable(request.target.as_path())?;
        let chain = self.restore_chain(&request).await?;
        // The source too: virtnbdrestore (root) acts on what the chain's files say.
        self.require_trusted(uid, &chain.path, Use::Source)?;
        if let Some(until) = &request.until {
            if !chain.points.iter().any(|p| &p.checkpoint == until) {
                return Err(Error::NoSuchBackup(format!(
                    "{} has no point {until}",
                    chain.folder
                )));
            }
        }
        let target = request.target.as_path();
        let occupied = std::fs::read_dir(target)
            .map(|d| {
                d.flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
            })
            .unwrap_or(false);
        if occupied && (!request.overwrite || request.define_as.is_some()) {
            return Err(Error::TargetExists(format!(
                "{} is not empty{}",
                target.display(),
                if request.define_as.is_some() {
                    " (a restore that defines a domain needs an empty target)"
                } else {
                    "; ask for overwrite to replace its files"
                }
            )));
        }
        if let Some(name) = &request.define_as {
            if self
                .libvirt
                .list_all()
                .await?
                .iter()
                .any(|d| d == name.as_str())
            {
                return Err(Error::TargetExists(format!(
                    "a domain named {name} already exists"
                )));
            }
        }
        let job = self
            .jobs
            .create(Operation::Restore, vec![request.domain.clone()], uid)?;
        Ok(Prepared::new(job, Restore { request }))
    }

    async fn restore_chain(&self, request: &RestoreRequest) -> Result<Chain, Error> {
        self.chosen_chain(&request.domain, &request.root, request.folder.as_deref())
            .await
    }

    async fn restore(&self, job: &Job, request: &RestoreRequest) -> Result<(), String> {
        let chain = self
            .restore_chain(request)
            .await
            .map_err(|e| e.to_string())?;
        // Again at the start of the work: nothing may have changed since the call.
        self.require_trusted(job.uid, &chain.path, Use::Source)
            .map_err(|e| e.to_string())?;
        let upto: Vec<&catalog::Point> = match &request.until {
            Some(u) => {
                let end = chain
                    .points
                    .iter()
                    .position(|p| &p.checkpoint == u)
                    .unwrap_or(0);
                chain.points[..=end].iter().collect()
            }
            None => chain.points.iter().collect(),
        };
        let total: u64 = upto.iter().map(|p| p.bytes).sum();
        let disk = request.disk.as_deref().unwrap_or("all disks");
        job.update(0, |d| d.folder = chain.path.display().to_string());
        job.progress(0, disk, 0, total);
        // Opened (and made where missing) by handle, trusted on that handle, and used to
        // the end: the call's check was a courtesy.
        let destination = self
            .open_destination(job.uid, request.target.as_path())
            .map_err(|e| e.to_string())?;
        let until = request
            .until
            .as_deref()
            .filter(|_| chain.points[0].level != Level::Copy);
        let rebuild = Rebuild {
            job,
            chain: &chain.path,
            until,
            disk: request.disk.as_deref(),
        };
        match &request.define_as {
            Some(name) => self.restore_defining(&rebuild, destination, name).await?,
            None => self.restore_staged(&rebuild, destination).await?,
        }
        job.progress(0, disk, total, total);
        Ok(())
    }

    /// Restores in place and defines the domain: defining needs the final paths in the
    /// adjusted configuration, in a directory QEMU (another user; libvirt hands it the image)
    /// can traverse. On failure only what this run wrote goes.
    async fn restore_defining(
        &self,
        rebuild: &Rebuild<'_>,
        destination: Destination,
        name: &DomainName,
    ) -> Result<(), String> {
        let target_dir = &destination.dir;
        let target = target_dir.path();
        let before: Vec<String> = names(target_dir)?;
        if !before.is_empty() {
            return Err(format!(
                "{} is no longer empty (a restore that defines a domain needs an empty target)",
                target.display()
            ));
        }
        target_dir
            .set_mode(0o711)
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let run = self.run_restore(
            rebuild.job.cancelled(),
            rebuild.chain,
            target,
            rebuild.until,
            rebuild.disk,
            Some(name.as_str()),
        );
        if let Err(e) = run.await {
            // Only what this run wrote goes; what the target held before stays.
            let entries = target_dir.entries().map_err(|e| e.to_string())?;
            for written in entries.iter().filter(|n| !before.contains(&n.name)) {
                let removed = match written.kind {
                    Kind::Dir => target_dir.remove_tree(&written.name, None),
                    _ => target_dir.remove_file(&written.name),
                };
                if let Err(e) = removed {
                    tracing::warn!(file = %target.join(&written.name).display(), error = %e, "not removed");
                }
            }
            destination.remove_created();
            return Err(e);
        }
        Ok(())
    }

    /// Restores into a new directory with a random name nobody could have prepared, inside
    /// the target, and moves the result up only when it is complete.
    async fn restore_staged(
        &self,
        rebuild: &Rebuild<'_>,
        destination: Destination,
    ) -> Result<(), String> {
        let target_dir = &destination.dir;
        let target = target_dir.path();
        let staging = target_dir
            .create_unique_dir(STAGING_PREFIX)
            .map_err(|e| format!("{}: {e}", target.display()))?;
        let staging_name = staging.name().unwrap_or_default().to_string();
        let staging_id = staging.identity().map_err(|e| e.to_string())?;
        let result = self
            .run_restore(
                rebuild.job.cancelled(),
                rebuild.chain,
                staging.path(),
                rebuild.until,
                rebuild.disk,
                None,
            )
            .await;
        let discard = || {
            if let Err(e) = target_dir.remove_tree(&staging_name, Some(staging_id)) {
                tracing::warn!(staging = %staging.path().display(), error = %e, "staging not removed");
            }
        };
        if let Err(e) = result {
            discard();
            destination.remove_created();
            return Err(e);
        }
        for entry in staging.entries().map_err(|e| e.to_string())? {
            staging
                .rename_into(&entry.name, target_dir, &entry.name)
                .map_err(|e| format!("{}: {e}", target.join(&entry.name).display()))?;
        }
        discard();
        Ok(())
    }
}

/// What is rebuilt: a chain up to a point, one disk or all.
struct Rebuild<'a> {
    job: &'a Job,
    chain: &'a std::path::Path,
    until: Option<&'a str>,
    disk: Option<&'a str>,
}

/// The names in a directory reached by handle.
fn names(dir: &Dir) -> Result<Vec<String>, String> {
    Ok(dir
        .entries()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|e| e.name)
        .collect())
}
