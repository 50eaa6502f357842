//! Rebuilding a chain up to a point with virtnbdrestore: what restore writes into its
//! target, and what verify and file browsing rebuild in scratch space.

use std::path::Path;
use std::time::Duration;

use super::Engine;
use crate::host::safe_fs::Dir;
use crate::host::tools::{self, Tool};
use crate::host::virtnbdrestore::RestoreSpec;
use crate::host::Error as HostError;
use crate::host::{command, qemu_img};

/// The disk images virtnbdrestore wrote into `dir` (everything but its XML, logs and JSON).
pub(super) fn disk_images(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let handle = Dir::open(dir).map_err(|e| HostError::at(dir, e).to_string())?;
    Ok(handle
        .entries()
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .into_iter()
        .filter(|e| e.kind == crate::host::safe_fs::Kind::File)
        .filter(|e| {
            !(e.name.ends_with(".xml") || e.name.ends_with(".log") || e.name.ends_with(".json"))
        })
        .map(|e| dir.join(e.name))
        .collect())
}

impl Engine {
    /// Runs virtnbdrestore from `chain` into `out` (which must not exist yet).
    /// Rebuilds `chain` (up to `until`) into `out` with virtnbdrestore; stopped with its
    /// qemu-nbd when `job` is cancelled.
    pub(super) async fn run_restore(
        &self,
        cancelled: impl std::future::Future<Output = ()>,
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
        let args = RestoreSpec {
            input: chain.to_path_buf(),
            output: out.to_path_buf(),
            log: log.clone(),
            uri: self.config.libvirt_uri.clone(),
            until: until.map(String::from),
            disk: disk.map(String::from),
            define_as: define_as.map(String::from),
        }
        .argv();
        let run =
            command::run_cancellable(&program, &args, Duration::from_secs(24 * 3600), cancelled);
        let result = run.await.map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&log);
        if !result.success {
            return Err(result.error_line());
        }
        // Done means closed: the qemu-nbd virtnbdrestore wrote through may still be exiting.
        let qemu_img = tools::require(&[Tool::QemuImg])
            .map_err(|e| e.to_string())?
            .remove(0);
        for image in disk_images(out)? {
            if !qemu_img::wait_closed(&qemu_img, &image, "qcow2", Duration::from_secs(120)).await {
                return Err(format!(
                    "{} is still held open by another process after the restore",
                    image.display()
                ));
            }
        }
        Ok(())
    }
}
