//! Status: what libvirt, QEMU and the images say about each selected domain.
//!
//! libvirt and QEMU are asked through libvirt's API on the service's open connection
//! ([`crate::host::libvirt`]); only the images of shut-off domains need a `qemu-img` process.
//! Nothing here uses QEMU's monitor pass-through, which would taint the guest, unless the
//! caller asked for a `deep` look: then QEMU's own list of bitmaps also shows orphans of a
//! running domain, which libvirt's API cannot.
//! Domains are queried concurrently, and one domain's failure becomes a problem in its own
//! report instead of aborting everyone else's.
//! Only an unreachable libvirt aborts the whole call, because then no report would be true.

use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};
use tracing::Instrument;

use super::chains::consistency::{self, DiskBitmaps};
use super::chains::eligibility;
use super::{Engine, Error};
use crate::engine::chains::period::GroupBy;
use crate::host::backup_dir::{self, ChainFolder, Detail};
use crate::host::domain_xml::{self, DiskDefinition};
use crate::host::libvirt::DomainState;
use crate::host::libvirt::{CheckpointFact, DomainFacts, Libvirt};
use crate::host::qmp::{self, BlockDevice};
use crate::host::tools::{self, Tool};
use crate::host::{self, qemu_img};
use crate::paths::BackupRoot;
use crate::selection::{DomainName, Selector};

/// How many domains are queried at once: enough to overlap libvirt's round trips and the
/// `qemu-img` processes of shut-off domains, few enough not to flood libvirtd's workers (it
/// has 5 by default) or the machine on a host with hundreds of domains.
const CONCURRENT_DOMAINS: usize = 8;

/// What the caller asked for.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub selectors: Vec<Selector>,
    pub backup_root: Option<BackupRoot>,
    pub group_by: GroupBy,
    /// Also ask QEMU's monitor for the bitmaps of running domains (taints them).
    pub deep: bool,
}

/// Status of one domain.
#[derive(Debug, Clone)]
pub struct DomainReport {
    pub name: DomainName,
    pub state: DomainState,
    pub checkpoints: Vec<String>,
    pub disks: Vec<DiskReport>,
    pub skipped_disks: Vec<SkippedDiskReport>,
    pub problems: Vec<String>,
    pub folder: Option<ChainFolder>,
    /// Why the domain could not be queried at all.
    pub query_error: Option<String>,
}

impl DomainReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct DiskReport {
    pub target: String,
    pub path: String,
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub bitmaps: Vec<BitmapReport>,
    pub changed_since_checkpoint: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct BitmapReport {
    pub name: String,
    pub dirty_bytes: Option<u64>,
    pub recording: Option<bool>,
    pub inconsistent: bool,
}

#[derive(Debug, Clone)]
pub struct SkippedDiskReport {
    pub target: String,
    pub device: String,
    pub path: String,
    pub reason: String,
}

impl Engine {
    /// Status of the selected domains, in selection order.
    pub async fn status(&self, request: &StatusRequest) -> Result<Vec<DomainReport>, Error> {
        let programs = tools::require(&[Tool::QemuImg])?;
        let ctx = Context {
            libvirt: &self.reads,
            qemu_img: programs[0].clone(),
            engine: self,
            request,
        };
        let domains = self
            .resolve_domains(ctx.libvirt, &request.selectors)
            .await?;
        let reports: Vec<Result<DomainReport, host::Error>> = stream::iter(domains)
            .map(|d| ctx.domain(d))
            .buffered(CONCURRENT_DOMAINS)
            .collect()
            .await;
        reports
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(Error::from)
    }
}

struct Context<'a> {
    libvirt: &'a Libvirt,
    qemu_img: PathBuf,
    engine: &'a Engine,
    request: &'a StatusRequest,
}

impl Context<'_> {
    /// One domain's report. Only `HostUnavailable` escapes; anything else is a problem entry.
    async fn domain(&self, name: DomainName) -> Result<DomainReport, host::Error> {
        let span = tracing::debug_span!("status", domain = %name);
        self.domain_inner(name).instrument(span).await
    }

    async fn domain_inner(&self, name: DomainName) -> Result<DomainReport, host::Error> {
        let mut report = DomainReport {
            name: name.clone(),
            state: DomainState::Other("unknown".into()),
            checkpoints: Vec::new(),
            disks: Vec::new(),
            skipped_disks: Vec::new(),
            problems: Vec::new(),
            folder: None,
            query_error: None,
        };
        let d = name.as_str();
        let DomainFacts {
            state,
            xml,
            checkpoints,
        } = match self.libvirt.domain(d).await {
            Ok(facts) => facts,
            Err(e @ host::Error::HostUnavailable(_)) => return Err(e),
            Err(e) => {
                report.problems.push(format!("could not query {d}: {e}"));
                report.query_error = Some(e.to_string());
                return Ok(report);
            }
        };
        report.state = state;
        report.checkpoints = checkpoints.iter().map(|c| c.name.clone()).collect();
        match domain_xml::parse_disks(&xml) {
            Ok(disks) => self.fill_disks(&mut report, disks, &checkpoints).await,
            Err(e) => report.problems.push(e.to_string()),
        }
        let bitmaps: Vec<DiskBitmaps<'_>> = report
            .disks
            .iter()
            .map(|disk| DiskBitmaps {
                target: &disk.target,
                bitmaps: disk
                    .bitmaps
                    .iter()
                    .map(|b| (b.name.as_str(), b.inconsistent))
                    .collect(),
            })
            .collect();
        let mut problems = consistency::check_bitmaps(&report.checkpoints, &bitmaps);
        report.problems.append(&mut problems);
        if let Some(root) = &self.request.backup_root {
            self.fill_folder(&mut report, root.as_path()).await;
        }
        Ok(report)
    }

    /// The disks a chain can cover; the others go to the report's skipped disks with why.
    async fn eligible_disks(
        &self,
        report: &mut DomainReport,
        disks: Vec<DiskDefinition>,
    ) -> Vec<DiskDefinition> {
        let tool = if eligibility::needs_tool_version(&disks) {
            self.engine.virtnbdbackup_version().await
        } else {
            None
        };
        let mut eligible = Vec::new();
        for disk in disks {
            match eligibility::ineligible_reason(&disk, tool) {
                Some(reason) => report.skipped_disks.push(SkippedDiskReport {
                    target: disk.target,
                    device: disk.device,
                    path: disk.source.unwrap_or_default(),
                    reason,
                }),
                None => eligible.push(disk),
            }
        }
        eligible
    }

    /// QEMU's own view of every block device (`deep`); when it cannot be had, libvirt's
    /// view is used, but never called OK.
    async fn ask_qemu(&self, report: &mut DomainReport, d: &str) -> Option<Vec<BlockDevice>> {
        let asked = match self.libvirt.monitor_query_block(d).await {
            Ok(reply) => qmp::parse_query_block(&reply).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        asked
            .map_err(|e| {
                report
                    .problems
                    .push(format!("QEMU could not be asked for live bitmaps: {e}"))
            })
            .ok()
    }

    /// Disk reports: for a domain QEMU runs, sizes from libvirt's block info and bitmaps
    /// from its checkpoints (or all from QEMU's `query-block` when asked to look deep); for a
    /// shut-off one from `qemu-img info` of each image, all at once.
    async fn fill_disks(
        &self,
        report: &mut DomainReport,
        disks: Vec<DiskDefinition>,
        checkpoints: &[CheckpointFact],
    ) {
        let eligible = self.eligible_disks(report, disks).await;
        if eligible.is_empty() {
            return;
        }
        let d = report.name.as_str().to_string();
        let running = report.state.has_qemu();
        let deep = match running && self.request.deep {
            true => self.ask_qemu(report, &d).await,
            false => None,
        };
        let timeout = self.engine.config.command_timeout;
        let infos = futures_util::future::join_all(eligible.iter().map(|disk| {
            let path = disk.source.clone().unwrap_or_default();
            let fmt = disk.format.clone().unwrap_or_else(|| "qcow2".into());
            let open = deep
                .as_deref()
                .and_then(|devices| device_of(devices, disk, &path))
                .and_then(|dev| dev.image.clone());
            let (qemu_img, d) = (self.qemu_img.clone(), d.as_str());
            async move {
                match (open, running) {
                    (Some(image), _) => Ok(qemu_img::ImageInfo {
                        format: image.format,
                        virtual_size: image.virtual_size,
                        actual_size: image.actual_size,
                        bitmaps: Vec::new(),
                    }),
                    (None, true) => {
                        let info = self.libvirt.block_info(d, &disk.target).await?;
                        Ok(qemu_img::ImageInfo {
                            format: fmt,
                            virtual_size: info.capacity,
                            actual_size: info.allocation,
                            bitmaps: Vec::new(),
                        })
                    }
                    (None, false) => qemu_img::info(&qemu_img, &path, &fmt, timeout).await,
                }
            }
        }))
        .await;
        let latest = consistency::latest_owned(&report.checkpoints).map(String::from);
        for (disk, info) in eligible.into_iter().zip(infos) {
            let path = disk.source.clone().unwrap_or_default();
            let info = match info {
                Ok(info) => info,
                Err(e) => {
                    report
                        .problems
                        .push(format!("disk {} could not be inspected: {e}", disk.target));
                    continue;
                }
            };
            let bitmaps = match (&deep, running) {
                (Some(devices), _) => live_bitmaps(devices, &disk, &path),
                (None, true) => checkpoint_bitmaps(checkpoints, &disk.target),
                (None, false) => info
                    .bitmaps
                    .iter()
                    .map(|b| BitmapReport {
                        name: b.name.clone(),
                        dirty_bytes: None,
                        recording: None,
                        inconsistent: b.in_use,
                    })
                    .collect(),
            };
            let changed_since_checkpoint = latest.as_deref().and_then(|cp| {
                bitmaps
                    .iter()
                    .find(|b| b.name == cp)
                    .and_then(|b| b.dirty_bytes)
            });
            report.disks.push(DiskReport {
                target: disk.target,
                path,
                format: info.format,
                virtual_size: info.virtual_size,
                actual_size: info.actual_size,
                bitmaps,
                changed_since_checkpoint,
            });
        }
    }

    async fn fill_folder(&self, report: &mut DomainReport, root: &Path) {
        let path = super::chains::plan::current_chain_folder(
            root,
            report.name.as_str(),
            self.request.group_by,
        );
        let result =
            tokio::task::spawn_blocking(move || backup_dir::scan(&path, Detail::Names)).await;
        match result {
            Ok(Ok(folder)) => {
                let mut problems = consistency::check_folder(&report.checkpoints, &folder);
                report.problems.append(&mut problems);
                report.folder = Some(folder);
            }
            Ok(Err(e)) => report
                .problems
                .push(format!("backup folder could not be read: {e}")),
            Err(e) => report
                .problems
                .push(format!("backup folder could not be read: {e}")),
        }
    }
}

/// The bitmaps of a running domain's disk as libvirt reports them: each checkpoint's bitmap
/// that libvirt found usable (it gives the bytes dirtied since only for those).
fn checkpoint_bitmaps(checkpoints: &[CheckpointFact], target: &str) -> Vec<BitmapReport> {
    checkpoints
        .iter()
        .flat_map(|cp| cp.disks.iter())
        .filter(|disk| disk.disk == target)
        .filter_map(|disk| {
            Some(BitmapReport {
                name: disk.bitmap.clone()?,
                dirty_bytes: Some(disk.size?),
                recording: Some(true),
                inconsistent: false,
            })
        })
        .collect()
}

/// QEMU's device for a libvirt disk: by alias, else by the file it has open.
fn device_of<'a>(
    devices: &'a [BlockDevice],
    disk: &DiskDefinition,
    path: &str,
) -> Option<&'a BlockDevice> {
    disk.alias
        .as_deref()
        .and_then(|alias| devices.iter().find(|d| d.has_alias(alias)))
        .or_else(|| devices.iter().find(|d| d.file.as_deref() == Some(path)))
}

fn live_bitmaps(devices: &[BlockDevice], disk: &DiskDefinition, path: &str) -> Vec<BitmapReport> {
    device_of(devices, disk, path)
        .map(|d| {
            d.bitmaps
                .iter()
                .map(|b| BitmapReport {
                    name: b.name.clone(),
                    dirty_bytes: Some(b.count),
                    recording: Some(b.recording),
                    inconsistent: b.inconsistent,
                })
                .collect()
        })
        .unwrap_or_default()
}
