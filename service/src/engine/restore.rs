//! Trusting backups: listing them, verifying every point, and restoring them.
//!
//! Verify checks, per point and in chain order, the data files against the checksums the
//! service recorded at backup time, rebuilds the disks up to that point with virtnbdrestore in
//! a scratch directory and runs `qemu-img check` on them. A point that fails makes every later
//! point of its chain fail too: they cannot be restored without it. Restore writes into a
//! fresh directory next to the target and moves the result in only when it succeeded, so a
//! failed or cancelled restore never leaves half an image in the target.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;
use vmsnap_dbus::job::JobState;

use super::catalog::{self, Chain};
use super::jobs::Job;
use super::{Engine, Error};
use crate::host::backup_dir::checkpoint_index;
use crate::host::tools::{self, Tool};
use crate::host::virsh::Virsh;
use crate::host::{checksums, command, Error as HostError};
use crate::paths::{self, BackupRoot};
use crate::selection::{DomainName, Selector};

/// A chain as listed, with whether it is the domain's live one.
pub struct Listed {
    pub domain: String,
    pub chain: Chain,
    pub live: bool,
}

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
    pub folder: Option<String>,
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
    fn virsh(&self) -> Result<Virsh, Error> {
        let programs = tools::require(&[Tool::Virsh])?;
        Ok(Virsh::new(
            programs[0].clone(),
            self.config.libvirt_uri.clone(),
            self.config.command_timeout,
        ))
    }

    /// libvirt's VMSnap checkpoints of a domain with their times (empty if it has none or is gone).
    async fn live_checkpoints(&self, virsh: &Virsh, domain: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for name in virsh.checkpoints(domain).await.unwrap_or_default() {
            if checkpoint_index(&name).is_some() {
                if let Ok(t) = virsh.checkpoint_creation_time(domain, &name).await {
                    out.push((name, t));
                }
            }
        }
        out
    }

    pub async fn list_backups(
        &self,
        selectors: &[Selector],
        root: &BackupRoot,
    ) -> Result<Vec<Listed>, Error> {
        let virsh = self.virsh()?;
        let domains = self.resolve_for_change(selectors).await?;
        let mut out = Vec::new();
        for d in domains {
            let live = self.live_checkpoints(&virsh, d.as_str()).await;
            for chain in catalog::chains(&root.as_path().join(d.as_str()))? {
                out.push(Listed {
                    domain: d.to_string(),
                    live: chain.is_live(&live),
                    chain,
                });
            }
        }
        Ok(out)
    }

    /// Validates a verify request and creates its (queued) job.
    pub async fn prepare_verify(
        &self,
        request: &VerifyRequest,
        uid: u32,
    ) -> Result<Arc<Job>, Error> {
        tools::require(&[Tool::Virsh, Tool::QemuImg, Tool::Virtnbdbackup])?;
        let domains = self.resolve_for_change(&request.selectors).await?;
        self.jobs.create("verify", domains, uid)
    }

    pub fn spawn_verify(self: &Arc<Self>, job: Arc<Job>, request: VerifyRequest) {
        let engine = self.clone();
        let span = tracing::info_span!("verify", job = job.id, uid = job.uid);
        tokio::spawn(
            async move {
                job.set_state(JobState::Running);
                let mut all_ok = true;
                for (index, domain) in job.domains.clone().iter().enumerate() {
                    job.update(index, |d| d.state = Some(JobState::Running));
                    let (ok, error) =
                        match engine.verify_domain(&job, index, domain, &request).await {
                            Ok(ok) => (ok, String::new()),
                            Err(e) => (false, e.to_string()),
                        };
                    all_ok &= ok;
                    job.update(index, |d| {
                        d.state = Some(if ok {
                            JobState::Succeeded
                        } else {
                            JobState::Failed
                        });
                        if !error.is_empty() {
                            d.error = error;
                        } else if !ok {
                            d.error = "some points failed verification (see checks)".into();
                        }
                    });
                }
                job.set_state(if all_ok {
                    JobState::Succeeded
                } else {
                    JobState::Failed
                });
            }
            .instrument(span),
        );
    }

    async fn verify_domain(
        &self,
        job: &Job,
        index: usize,
        domain: &DomainName,
        request: &VerifyRequest,
    ) -> Result<bool, HostError> {
        let chains: Vec<Chain> = catalog::chains(&request.root.as_path().join(domain.as_str()))?
            .into_iter()
            .filter(|c| request.folder.as_deref().is_none_or(|f| f == c.folder))
            .collect();
        if chains.is_empty() {
            job.update(index, |d| d.checks.push("no backup chain found".into()));
            return Ok(false);
        }
        let total: u64 = chains.iter().map(Chain::bytes).sum();
        let mut done = 0u64;
        let mut all_ok = true;
        for chain in &chains {
            let sums = checksums::read(&chain.path)?;
            let mut broken: Option<String> = None;
            for point in &chain.points {
                let verdict = match &broken {
                    Some(first) => Err(format!("follows the failed point {first}")),
                    None => self.verify_point(chain, point, &sums, job.id).await,
                };
                let line = match &verdict {
                    Ok(note) => format!("{} {}: ok{note}", chain.folder, point.checkpoint),
                    Err(reason) => {
                        format!("{} {}: failed: {reason}", chain.folder, point.checkpoint)
                    }
                };
                tracing::info!(domain = %domain, "{line}");
                if verdict.is_err() {
                    all_ok = false;
                    broken.get_or_insert(point.checkpoint.clone());
                }
                done += point.bytes;
                job.update(index, |d| d.checks.push(line));
                job.progress(index, &chain.folder, done, total);
            }
        }
        Ok(all_ok)
    }

    /// One point: checksums, a rebuild up to it, and `qemu-img check` of the result.
    async fn verify_point(
        &self,
        chain: &Chain,
        point: &catalog::Point,
        sums: &std::collections::BTreeMap<String, String>,
        job: u64,
    ) -> Result<String, String> {
        let mut note = String::new();
        for file in &point.files {
            match sums.get(file) {
                Some(expected) => {
                    let actual =
                        checksums::digest(&chain.path.join(file)).map_err(|e| e.to_string())?;
                    if &actual != expected {
                        return Err(format!("checksum mismatch in {file}"));
                    }
                }
                None => note = " (no checksum recorded)".into(),
            }
        }
        let scratch = self
            .config
            .scratch_dir
            .join(format!("vmsnapd-verify-{}-{job}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let until = (point.level != "copy").then_some(point.checkpoint.as_str());
        let result = self
            .run_restore(&chain.path, &scratch, until, None, None)
            .await;
        let checked = match result {
            Ok(()) => self.check_images(&scratch).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&scratch);
        checked.map(|()| note)
    }

    async fn check_images(&self, dir: &Path) -> Result<(), String> {
        let qemu_img = tools::require(&[Tool::QemuImg])
            .map_err(|e| e.to_string())?
            .remove(0);
        let images: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !(name.ends_with(".xml") || name.ends_with(".log") || name.ends_with(".json"))
            })
            .collect();
        if images.is_empty() {
            return Err("the rebuild produced no disk image".into());
        }
        for image in images {
            let args: Vec<OsString> = vec!["check".into(), image.clone().into()];
            let out = command::run(&qemu_img, &args, Duration::from_secs(3600))
                .await
                .map_err(|e| e.to_string())?;
            if !out.success {
                return Err(format!(
                    "qemu-img check {}: {}",
                    image.file_name().unwrap_or_default().to_string_lossy(),
                    out.stdout
                        .lines()
                        .chain(out.stderr.lines())
                        .last()
                        .unwrap_or("failed")
                ));
            }
        }
        Ok(())
    }

    /// Runs virtnbdrestore from `chain` into `out` (which must not exist yet).
    async fn run_restore(
        &self,
        chain: &Path,
        out: &Path,
        until: Option<&str>,
        disk: Option<&str>,
        define_as: Option<&str>,
    ) -> Result<(), String> {
        let program = tools::require(&[Tool::Virtnbdrestore])
            .map_err(|e| e.to_string())?
            .remove(0);
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let log = out.join("virtnbdrestore.log");
        let mut args: Vec<OsString> = vec![
            "-i".into(),
            chain.into(),
            "-o".into(),
            out.into(),
            "-n".into(),
            "-L".into(),
            log.clone().into(),
            "-U".into(),
            self.config.libvirt_uri.clone().into(),
        ];
        if let Some(cp) = until {
            args.extend(["-u".into(), cp.into()]);
        }
        if let Some(d) = disk {
            args.extend(["-d".into(), d.into()]);
        }
        if let Some(name) = define_as {
            args.extend(["-c".into(), "-D".into(), "-N".into(), name.into()]);
        }
        let result = command::run(&program, &args, Duration::from_secs(24 * 3600))
            .await
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&log);
        if result.success {
            Ok(())
        } else {
            Err(result.error_line())
        }
    }

    /// Checks a restore request and creates its job; refuses before anything is written.
    pub async fn prepare_restore(
        &self,
        request: &RestoreRequest,
        uid: u32,
    ) -> Result<Arc<Job>, Error> {
        tools::require(&[Tool::Virsh, Tool::QemuImg, Tool::Virtnbdbackup])?;
        if uid != 0 {
            paths::check_inside(request.target.as_path(), &self.config.backup_roots)?;
        }
        let chain = self.restore_chain(request).await?;
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
            .map(|mut d| d.next().is_some())
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
            let virsh = self.virsh()?;
            if virsh.list_all().await?.iter().any(|d| d == name.as_str()) {
                return Err(Error::TargetExists(format!(
                    "a domain named {name} already exists"
                )));
            }
        }
        self.jobs
            .create("restore", vec![request.domain.clone()], uid)
    }

    async fn restore_chain(&self, request: &RestoreRequest) -> Result<Chain, Error> {
        let chains = catalog::chains(&request.root.as_path().join(request.domain.as_str()))?;
        let chosen = match &request.folder {
            Some(f) => chains.into_iter().find(|c| &c.folder == f),
            None => {
                let live = self
                    .live_checkpoints(&self.virsh()?, request.domain.as_str())
                    .await;
                let live_chain = chains.iter().position(|c| c.is_live(&live));
                match live_chain {
                    Some(i) => chains.into_iter().nth(i),
                    None => chains
                        .into_iter()
                        .filter(|c| !c.points.is_empty())
                        .max_by_key(|c| c.points.iter().filter_map(|p| p.time).max().unwrap_or(0)),
                }
            }
        };
        chosen.filter(|c| !c.points.is_empty()).ok_or_else(|| {
            Error::NoSuchBackup(format!(
                "no backup chain{} for {} under {}",
                request
                    .folder
                    .as_deref()
                    .map(|f| format!(" {f}"))
                    .unwrap_or_default(),
                request.domain,
                request.root.as_path().display()
            ))
        })
    }

    pub fn spawn_restore(self: &Arc<Self>, job: Arc<Job>, request: RestoreRequest) {
        let engine = self.clone();
        let span =
            tracing::info_span!("restore", job = job.id, uid = job.uid, domain = %request.domain);
        tokio::spawn(
            async move {
                job.set_state(JobState::Running);
                job.update(0, |d| d.state = Some(JobState::Running));
                let outcome = engine.restore(&job, &request).await;
                let state = match &outcome {
                    Ok(()) => JobState::Succeeded,
                    Err(_) if job.is_cancelled() => JobState::Cancelled,
                    Err(_) => JobState::Failed,
                };
                job.update(0, |d| {
                    d.state = Some(state);
                    if let Err(e) = &outcome {
                        d.error = e.clone();
                    }
                });
                job.set_state(state);
            }
            .instrument(span),
        );
    }

    async fn restore(&self, job: &Job, request: &RestoreRequest) -> Result<(), String> {
        let chain = self
            .restore_chain(request)
            .await
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
        let target = request.target.as_path();
        let until = request
            .until
            .as_deref()
            .filter(|_| chain.points[0].level != "copy");
        let mut cancel = job.cancel_receiver();
        if let Some(name) = &request.define_as {
            // Defining needs the final paths in the adjusted configuration: restore in place,
            // in a directory QEMU (another user; libvirt hands it the image) can traverse.
            std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("{}: {e}", target.display()))?;
            let run = self.run_restore(
                &chain.path,
                target,
                until,
                request.disk.as_deref(),
                Some(name.as_str()),
            );
            tokio::select! {
                r = run => r?,
                _ = cancel.changed() => return Err("cancelled".into()),
            }
        } else {
            let staging = target.with_file_name(format!(
                ".{}.vmsnap-restore-{}",
                target.file_name().unwrap_or_default().to_string_lossy(),
                job.id
            ));
            let _ = std::fs::remove_dir_all(&staging);
            let run = self.run_restore(&chain.path, &staging, until, request.disk.as_deref(), None);
            let result = tokio::select! {
                r = run => r,
                _ = cancel.changed() => Err("cancelled".into()),
            };
            if let Err(e) = result {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
            for entry in std::fs::read_dir(&staging).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                let dest = target.join(entry.file_name());
                std::fs::rename(entry.path(), &dest)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
            }
            let _ = std::fs::remove_dir_all(&staging);
        }
        job.progress(0, disk, total, total);
        Ok(())
    }
}
