//! Verify: is every point of a chain intact and restorable?
//!
//! Per point and in chain order: the data files against the checksums the service recorded at
//! backup time, a rebuild up to that point with virtnbdrestore in a scratch directory, and
//! `qemu-img check` of the result. A point that fails makes every later point of its chain fail
//! too: they cannot be restored without it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::access::Use;
use super::chains::catalog::{self, Chain};
use super::jobs::runner::{DomainRun, JobKind, Prepared};
use super::jobs::{Job, Operation};
use super::{Engine, Error};
use crate::host::safe_fs::Dir;
use crate::host::tools::{self, Tool};
use crate::host::{checksums, command, qemu_img, Error as HostError};

use super::list::vmsnap_checkpoints;
use crate::host::virtnbdbackup::Level;
use crate::paths::BackupRoot;
use crate::selection::{DomainName, Selector};

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
    pub folder: Option<String>,
}

/// The verify job kind.
pub struct Verify {
    request: VerifyRequest,
}

impl JobKind for Verify {
    const NAME: &'static str = "verify";

    async fn run_domain(&self, engine: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
        match engine
            .verify_domain(run.job, run.index, run.domain, &self.request)
            .await?
        {
            true => Ok(()),
            false => Err(Error::Failed(
                "some points failed verification (see checks)".into(),
            )),
        }
    }
}

impl Engine {
    /// Validates a verify request and creates its (queued) job.
    pub async fn prepare_verify(
        &self,
        request: VerifyRequest,
        uid: u32,
    ) -> Result<Prepared<Verify>, Error> {
        tools::require(&[Tool::QemuImg, Tool::Virtnbdbackup])?;
        let domains = self
            .resolve_domains(&self.libvirt, &request.selectors)
            .await?;
        for domain in &domains {
            // Each chain is checked again before it is rebuilt (verify_domain).
            self.require_trusted(
                uid,
                &request.root.as_path().join(domain.as_str()),
                Use::Destination,
            )?;
        }
        let job = self.jobs.create(Operation::Verify, domains, uid)?;
        Ok(Prepared::new(job, Verify { request }))
    }

    /// Verifies every chain of one domain; `Err(Cancelled)` when the job was cancelled, with
    /// the point under way left out of the checks (it was neither good nor bad).
    async fn verify_domain(
        &self,
        job: &Job,
        index: usize,
        domain: &DomainName,
        request: &VerifyRequest,
    ) -> Result<bool, HostError> {
        let chains: Vec<Chain> = catalog::chains_of(request.root.as_path().join(domain.as_str()))
            .await?
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
        let live_disks = self.live_disks_if_shut_off(domain.as_str()).await;
        for chain in &chains {
            if let Err(e) = self.require_trusted(job.uid, &chain.path, Use::Source) {
                all_ok = false;
                job.update(index, |d| {
                    d.checks.push(format!("{}: refused: {e}", chain.folder))
                });
                continue;
            }
            let sums = checksums::read(&chain.path)?;
            let mut broken: Option<String> = None;
            for point in &chain.points {
                // The live chain's last point of a shut-off domain is also compared with
                // the domain's disks.
                let compare = match (&live_disks, chain.points.last()) {
                    (Some((live, disks)), Some(last))
                        if chain.is_live(live) && last.checkpoint == point.checkpoint =>
                    {
                        disks.as_slice()
                    }
                    _ => &[],
                };
                let verdict = match &broken {
                    Some(first) => Err(format!("follows the failed point {first}")),
                    None => self.verify_point(chain, point, &sums, job, compare).await,
                };
                if job.is_cancelled() {
                    return Err(HostError::Cancelled {
                        program: "verify".into(),
                    });
                }
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
        job: &Job,
        compare: &[PathBuf],
    ) -> Result<String, String> {
        let mut note = String::new();
        let folder =
            Dir::open(&chain.path).map_err(|e| HostError::at(&chain.path, e).to_string())?;
        for file in &point.files {
            // VMSnap's SHA-256, and virtnbdbackup 2.x's adler32 where it wrote one: two
            // records made independently, checked in one read of the file.
            let recorded = sums.get(file);
            let tool = checksums::tool_checksum(&folder, file).map_err(|e| e.to_string())?;
            if recorded.is_none() && tool.is_none() {
                note = " (no checksum recorded)".into();
                continue;
            }
            let actual = digest(chain.path.join(file), job).await?;
            if recorded.is_some_and(|r| *r != actual.sha256) {
                return Err(format!("checksum mismatch in {file}"));
            }
            if tool.is_some_and(|t| t != actual.adler32) {
                return Err(format!(
                    "virtnbdbackup's own checksum ({file}.chksum) does not match {file}"
                ));
            }
        }
        // mkdtemp-style: a new 0700 directory with a random name in the service's scratch
        // area, reached and removed by handle.
        std::fs::create_dir_all(&self.config.scratch_dir)
            .map_err(|e| format!("{}: {e}", self.config.scratch_dir.display()))?;
        let scratch_root = Dir::open(&self.config.scratch_dir)
            .map_err(|e| HostError::at(&self.config.scratch_dir, e).to_string())?;
        let scratch = scratch_root
            .create_unique_dir(&format!("verify-{}-", job.id))
            .map_err(|e| format!("{}: {e}", self.config.scratch_dir.display()))?;
        let until = (point.level != Level::Copy).then_some(point.checkpoint.as_str());
        let result = self
            .run_restore(
                job.cancelled(),
                &chain.path,
                scratch.path(),
                until,
                None,
                None,
            )
            .await;
        let checked = match result {
            Ok(()) => self.check_images(job, scratch.path()).await,
            Err(e) => Err(e),
        };
        if checked.is_ok() && !compare.is_empty() {
            note.push_str(&self.compare_with_live(job, scratch.path(), compare).await);
        }
        let identity = scratch.identity().ok();
        if let Err(e) = scratch_root.remove_tree(scratch.name().unwrap_or_default(), identity) {
            tracing::warn!(scratch = %scratch.path().display(), error = %e, "scratch not removed");
        }
        checked.map(|()| note)
    }

    /// For a shut-off domain: its VMSnap checkpoints and the paths of its qcow2 disks.
    async fn live_disks_if_shut_off(
        &self,
        domain: &str,
    ) -> Option<(Vec<(String, u64)>, Vec<PathBuf>)> {
        let facts = self.libvirt.domain(domain).await.ok()?;
        if facts.state != crate::host::libvirt::DomainState::ShutOff {
            return None;
        }
        let disks = crate::host::domain_xml::parse_disks(&facts.xml)
            .ok()?
            .into_iter()
            .filter(|d| d.device == "disk" && d.format.as_deref() == Some("qcow2"))
            .filter_map(|d| d.source.map(PathBuf::from))
            .collect();
        Some((vmsnap_checkpoints(&facts.checkpoints), disks))
    }

    /// `qemu-img compare` of the rebuilt images with the shut-off domain's disks. A difference
    /// is reported, not failed: the disk may have been written since the backup.
    async fn compare_with_live(&self, job: &Job, rebuilt: &Path, disks: &[PathBuf]) -> String {
        let Ok(qemu_img) = tools::require(&[Tool::QemuImg]).map(|mut p| p.remove(0)) else {
            return String::new();
        };
        let mut same = 0;
        let mut differ = Vec::new();
        for disk in disks {
            let image = rebuilt.join(disk.file_name().unwrap_or_default());
            // Both are qcow2: the rebuild is virtnbdrestore's, and only qcow2 disks are compared.
            let args = qemu_img::argv::compare(&image, "qcow2", disk, "qcow2");
            let run = command::run_cancellable(
                &qemu_img,
                &args,
                Duration::from_secs(3600),
                job.cancelled(),
            );
            match run.await {
                Ok(out) if out.success => same += 1,
                _ => differ.push(
                    disk.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                ),
            }
        }
        if differ.is_empty() {
            format!(" (identical to the shut-off domain's {same} disk(s))")
        } else {
            format!(
                " (differs from the live {}: written since the backup?)",
                differ.join(", ")
            )
        }
    }

    async fn check_images(&self, job: &Job, dir: &Path) -> Result<(), String> {
        let qemu_img = tools::require(&[Tool::QemuImg])
            .map_err(|e| e.to_string())?
            .remove(0);
        let images = super::rebuild::disk_images(dir)?;
        if images.is_empty() {
            return Err("the rebuild produced no disk image".into());
        }
        for image in images {
            let args = qemu_img::argv::check(&image, "qcow2");
            let out = command::run_cancellable(
                &qemu_img,
                &args,
                Duration::from_secs(3600),
                job.cancelled(),
            )
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
}

/// The sums of a chain file on a blocking thread (a whole image takes seconds, and the
/// runtime's workers serve every other call meanwhile), stopped within one read when the job
/// is cancelled.
async fn digest(path: PathBuf, job: &Job) -> Result<checksums::FileDigests, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reading = stop.clone();
    let hashing = tokio::task::spawn_blocking(move || {
        checksums::digest_unless(&path, &|| stop_reading.load(Ordering::Relaxed))
    });
    tokio::select! {
        hashed = hashing => match hashed {
            Ok(Ok(Some(digest))) => Ok(digest),
            Ok(Ok(None)) => Err("cancelled".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("hashing failed: {e}")),
        },
        () = job.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            Err("cancelled".into())
        }
    }
}
