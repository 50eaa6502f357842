//! Scrub: removing VMSnap's checkpoints and bitmaps from domains.
//!
//! Only VMSnap-owned names (`virtnbdbackup.N`) are ever touched, and the method depends on
//! the domain's state: while QEMU runs, libvirt deletes a checkpoint together with its bitmap
//! and orphaned bitmaps go through QEMU; while it is shut off, libvirt can only drop its
//! metadata and the bitmaps are removed from the images with qemu-img. (The original used the
//! shut-off method on running domains and orphaned their bitmaps.)

use wildmatch::WildMatch;

use super::{Engine, Error};
use crate::host::backup_dir::checkpoint_index;
use crate::host::domain_xml::{self, DiskDefinition};
use crate::host::libvirt::CheckpointFact;
use crate::host::tools::{self, Tool};
use crate::host::{self, qemu_img, qmp};
use crate::selection::{DomainName, Selector};

/// What to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubType {
    Checkpoint,
    Bitmap,
    Both,
    /// Every VMSnap checkpoint and bitmap, whatever the name filter says.
    All,
}

impl ScrubType {
    pub const NAMES: &'static [&'static str] = &["checkpoint", "bitmap", "both", "all"];

    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "checkpoint" => Some(ScrubType::Checkpoint),
            "bitmap" => Some(ScrubType::Bitmap),
            "both" => Some(ScrubType::Both),
            "all" | "*" => Some(ScrubType::All),
            _ => None,
        }
    }

    fn checkpoints(self) -> bool {
        self != ScrubType::Bitmap
    }

    fn bitmaps(self) -> bool {
        self != ScrubType::Checkpoint
    }
}

#[derive(Debug, Clone)]
pub struct ScrubRequest {
    pub selectors: Vec<Selector>,
    pub kind: ScrubType,
    /// A name or a glob (`*`, `?`) over VMSnap names; `None` = all of them.
    pub name: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    pub domain: String,
    pub checkpoints: Vec<String>,
    /// `disk:bitmap`.
    pub bitmaps: Vec<String>,
    pub problems: Vec<String>,
}

impl Engine {
    pub async fn scrub(&self, request: &ScrubRequest, uid: u32) -> Result<Vec<ScrubReport>, Error> {
        let programs = tools::require(&[Tool::QemuImg])?;
        let domains = self
            .resolve_domains(&self.libvirt, &request.selectors)
            .await?;
        // Never under a running backup.
        let _job = self
            .jobs
            .create(super::jobs::Operation::Scrub, domains.clone(), uid)?;
        let mut reports = Vec::new();
        for domain in &domains {
            let mut report = ScrubReport {
                domain: domain.to_string(),
                ..Default::default()
            };
            if let Err(e) = self
                .scrub_domain(&programs[0], request, domain, &mut report)
                .await
            {
                if let host::Error::HostUnavailable(_) = e {
                    return Err(e.into());
                }
                report.problems.push(e.to_string());
            }
            tracing::info!(domain = %domain, checkpoints = ?report.checkpoints, bitmaps = ?report.bitmaps, dry_run = request.dry_run, "scrubbed");
            reports.push(report);
        }
        Ok(reports)
    }

    async fn scrub_domain(
        &self,
        qemu_img: &std::path::Path,
        request: &ScrubRequest,
        domain: &DomainName,
        report: &mut ScrubReport,
    ) -> Result<(), host::Error> {
        let d = domain.as_str();
        let selected = |name: &str| {
            checkpoint_index(name).is_some()
                && (request.kind == ScrubType::All
                    || request
                        .name
                        .as_deref()
                        .is_none_or(|pattern| WildMatch::new(pattern).matches(name)))
        };
        let facts = self.libvirt.domain(d).await?;
        let live = facts.state.has_qemu();
        if request.kind.checkpoints() {
            // Children first, so every delete is of a leaf.
            let mut names: Vec<String> = facts.checkpoints.into_iter().map(|c| c.name).collect();
            names.retain(|n| selected(n));
            names.reverse();
            for name in names {
                if !request.dry_run {
                    // Running: libvirt removes the bitmap with the checkpoint. Shut off:
                    // libvirt 9 can only drop its metadata.
                    match self.libvirt.delete_checkpoint(d, &name, !live).await {
                        Ok(()) => {}
                        // The bitmap is already gone (scrubbed, or lost in a crash): libvirt
                        // refuses the full delete, so only its metadata is left to drop.
                        Err(host::Error::Libvirt { message, .. })
                            if live && message.contains("not found") =>
                        {
                            self.libvirt.delete_checkpoint(d, &name, true).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                report.checkpoints.push(name);
            }
        }
        if request.kind.bitmaps() {
            // Asked again: the checkpoint deletes above took their bitmaps along.
            let facts = self.libvirt.domain(d).await?;
            let disks = domain_xml::parse_disks(&facts.xml)?;
            let disks: Vec<&DiskDefinition> = disks
                .iter()
                .filter(|x| x.device == "disk" && x.format.as_deref() == Some("qcow2"))
                .collect();
            if live {
                let found = self
                    .live_bitmaps(qemu_img, &facts.checkpoints, &disks, &selected)
                    .await;
                if !request.dry_run && !found.is_empty() {
                    self.remove_live_bitmaps(d, &disks, &found).await?;
                }
                for (target, bitmap) in found {
                    report.bitmaps.push(format!("{target}:{bitmap}"));
                }
            } else {
                let timeout = self.config.command_timeout;
                for disk in disks {
                    let Some(path) = disk.source.as_deref() else {
                        continue;
                    };
                    let fmt = disk.format.as_deref().unwrap_or("qcow2");
                    let info = qemu_img::info(qemu_img, path, fmt, timeout).await?;
                    for b in info.bitmaps.iter().filter(|b| selected(&b.name)) {
                        if !request.dry_run {
                            qemu_img::bitmap_remove(qemu_img, path, fmt, &b.name, timeout).await?;
                        }
                        report.bitmaps.push(format!("{}:{}", disk.target, b.name));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    /// The selected VMSnap bitmaps of a domain QEMU runs, as `(disk, bitmap)`, without asking
    /// QEMU's monitor (which would taint it): those of its checkpoints that libvirt found on
    /// the disk, and those in the images (QEMU loaded them at start; removed ones are gone
    /// from the image at once).
    async fn live_bitmaps(
        &self,
        qemu_img: &std::path::Path,
        checkpoints: &[CheckpointFact],
        disks: &[&DiskDefinition],
        selected: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut add = |target: &str, bitmap: &str| {
            let entry = (target.to_string(), bitmap.to_string());
            if selected(bitmap) && !found.contains(&entry) {
                found.push(entry);
            }
        };
        for cp in checkpoints {
            for disk in cp.disks.iter().filter(|x| x.size.is_some()) {
                if let Some(bitmap) = &disk.bitmap {
                    if disks.iter().any(|x| x.target == disk.disk) {
                        add(&disk.disk, bitmap);
                    }
                }
            }
        }
        let timeout = self.config.command_timeout;
        for disk in disks {
            let Some(path) = disk.source.as_deref() else {
                continue;
            };
            let fmt = disk.format.as_deref().unwrap_or("qcow2");
            match qemu_img::info(qemu_img, path, fmt, timeout).await {
                Ok(info) => info.bitmaps.iter().for_each(|b| add(&disk.target, &b.name)),
                Err(e) => tracing::warn!(disk = %disk.target, error = %e, "image not readable"),
            }
        }
        found
    }

    /// Removes bitmaps from a running domain through QEMU's monitor: libvirt has no API for
    /// a bitmap, and scrubbing one changes the domain anyway (this taints it).
    async fn remove_live_bitmaps(
        &self,
        d: &str,
        disks: &[&DiskDefinition],
        found: &[(String, String)],
    ) -> Result<(), host::Error> {
        let reply = self.libvirt.monitor_query_block(d).await?;
        let devices = qmp::parse_query_block(&reply)?;
        for (target, bitmap) in found {
            let Some(disk) = disks.iter().find(|x| &x.target == target) else {
                continue;
            };
            let device = devices.iter().find(|dev| {
                disk.alias.as_deref().is_some_and(|a| dev.has_alias(a))
                    || (dev.file.is_some() && dev.file == disk.source)
            });
            let Some(device) = device else { continue };
            let (Some(node), true) = (
                device.node_name.as_deref(),
                device.bitmaps.iter().any(|b| &b.name == bitmap),
            ) else {
                continue;
            };
            self.libvirt.monitor_remove_bitmap(d, node, bitmap).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_the_originals_plus_all() {
        assert_eq!(ScrubType::parse("*"), Some(ScrubType::All));
        assert_eq!(ScrubType::parse("all"), Some(ScrubType::All));
        assert_eq!(ScrubType::parse("both"), Some(ScrubType::Both));
        assert_eq!(ScrubType::parse("checkpoints"), None);
        assert!(ScrubType::Both.checkpoints() && ScrubType::Both.bitmaps());
        assert!(!ScrubType::Checkpoint.bitmaps() && !ScrubType::Bitmap.checkpoints());
    }
}
