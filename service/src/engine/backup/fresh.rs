//! Before a new chain: what libvirt says of the old one, and removing its checkpoints and
//! bitmaps so the new full starts clean.

use crate::engine::chains::plan::LiveChain;
use crate::host::backup_dir::checkpoint_index;
use crate::host::domain_xml::DiskDefinition;
use crate::host::libvirt::{CheckpointFact, Libvirt};
use crate::host::{self, qemu_img, qmp};
use std::path::Path;

/// What libvirt says of the domain's VMSnap chain: its checkpoints with their times, and for
/// every eligible disk the checkpoints whose bitmap libvirt found usable there (a missing,
/// inconsistent or non-recording bitmap gets no size in the checkpoint's XML).
pub(super) fn live_chain(
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
pub(super) struct Cleanup<'a> {
    pub libvirt: &'a Libvirt,
    pub qemu_img: &'a Path,
    pub timeout: std::time::Duration,
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
    pub async fn remove_vmsnap_state(
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
