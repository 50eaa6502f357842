//! `verify --deep`: the newest point of a chain rebuilt with virtnbdrestore, checked with
//! `qemu-img check`, and compared byte for byte with the chain index's reading of the same
//! point (served over NBD by the sandboxed reader) — so that the index is checked against
//! virtnbdbackup's own reader — and with the domain's disk where it is shut off and unchanged.
//! It costs a whole disk per disk of the chain in the scratch area, one disk at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::chains::catalog::{self, Chain};
use super::super::files::data_files;
use super::super::jobs::Job;
use super::super::Engine;
use super::structure::{chain_disks, Verdict};
use crate::host::guestfs::Sandbox;
use crate::host::nbd_export::Export;
use crate::host::safe_fs::Dir;
use crate::host::tools::{self, Tool};
use crate::host::virtnbdbackup::Level;
use crate::host::{command, qemu_img, Error as HostError};

/// How long one `qemu-img check` or `compare` may take.
const QEMU_IMG_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// A disk of a shut-off domain: its target (`vda`) and its qcow2 image.
pub(super) type LiveDisk = (String, PathBuf);

impl Engine {
    /// The deep check of `chain`'s newest point; `live` are the shut-off domain's disks when
    /// that point is the live chain's last.
    pub(super) async fn deep_check(&self, chain: &Chain, job: &Job, live: &[LiveDisk]) -> Verdict {
        let sandbox = Sandbox::for_user(&self.config.files_user)?;
        let qemu_img = tools::require(&[Tool::QemuImg, Tool::Virtnbdrestore])
            .map_err(|e| e.to_string())?
            .remove(0);
        let Some(point) = chain.points.last() else {
            return Err("the chain has no point".into());
        };
        let scratch_root = self.scratch_root()?;
        let scratch = scratch_root
            .create_unique_dir(&format!("verify-{}-", job.id))
            .map_err(|e| format!("{}: {e}", self.config.scratch_dir.display()))?;
        let mut notes = Vec::new();
        let mut outcome = Ok(());
        for disk in chain_disks(chain) {
            let checked = self
                .deep_check_disk(
                    chain,
                    point,
                    &disk,
                    scratch.path(),
                    &qemu_img,
                    sandbox,
                    job,
                    live,
                )
                .await;
            match checked {
                Ok(note) => notes.push(note),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let identity = scratch.identity().ok();
        if let Err(e) = scratch_root.remove_tree(scratch.name().unwrap_or_default(), identity) {
            tracing::warn!(scratch = %scratch.path().display(), error = %e, "scratch not removed");
        }
        outcome.map(|()| format!(" (deep: {})", notes.join("; ")))
    }

    fn scratch_root(&self) -> Result<Dir, String> {
        std::fs::create_dir_all(&self.config.scratch_dir)
            .map_err(|e| format!("{}: {e}", self.config.scratch_dir.display()))?;
        Dir::open(&self.config.scratch_dir)
            .map_err(|e| HostError::at(&self.config.scratch_dir, e).to_string())
    }

    /// One disk: rebuild, check, compare with the index's reading and with the live disk.
    #[allow(clippy::too_many_arguments)]
    async fn deep_check_disk(
        &self,
        chain: &Chain,
        point: &catalog::Point,
        disk: &str,
        scratch: &Path,
        qemu_img: &Path,
        sandbox: Sandbox,
        job: &Job,
        live: &[LiveDisk],
    ) -> Result<String, String> {
        let rebuilt = scratch.join(disk);
        let until = (point.level != Level::Copy).then_some(point.checkpoint.as_str());
        self.run_restore(
            job.cancelled(),
            &chain.path,
            &rebuilt,
            until,
            Some(disk),
            None,
        )
        .await?;
        let images = super::super::rebuild::disk_images(&rebuilt)?;
        let [image] = images.as_slice() else {
            return Err(format!(
                "the rebuild of {disk} produced {} images",
                images.len()
            ));
        };
        let run = |args: Vec<std::ffi::OsString>| async move {
            command::run_cancellable(qemu_img, &args, QEMU_IMG_DEADLINE, job.cancelled())
                .await
                .map_err(|e| e.to_string())
        };
        let out = run(qemu_img::argv::check(image, "qcow2")).await?;
        if !out.success {
            return Err(format!(
                "qemu-img check of {disk}'s rebuild: {}",
                out.error_line()
            ));
        }
        let last = chain.points.len() - 1;
        let files = data_files(chain, last, disk).map_err(|e| e.to_string())?;
        let export = Export::start(
            &self.config.scratch_dir,
            &format!("export-verify-{}-", job.id),
            &self.config.files_helper,
            files,
            sandbox,
            (0, 0),
        )
        .map_err(|e| format!("exporting {disk}: {e}"))?;
        let uri = PathBuf::from(export.uri());
        let out = run(qemu_img::argv::compare(image, "qcow2", &uri, "raw")).await?;
        drop(export);
        if !out.success {
            return Err(format!(
                "the chain index's reading of {disk} differs from virtnbdrestore's rebuild: {}",
                out.error_line()
            ));
        }
        let mut note = format!("{disk} rebuilt, qemu-img check clean, identical to the index");
        if let Some((_, path)) = live.iter().find(|(target, _)| target == disk) {
            let out = run(qemu_img::argv::compare(image, "qcow2", path, "qcow2")).await?;
            note.push_str(match out.success {
                true => ", identical to the shut-off domain's disk",
                // Reported, not failed: the disk may have been written since the backup.
                false => ", differs from the shut-off domain's disk (written since the backup?)",
            });
        }
        Ok(note)
    }
}
