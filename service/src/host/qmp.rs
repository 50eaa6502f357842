//! QEMU's own view of a running domain's disks (`query-block` through
//! `virsh qemu-monitor-command`).
//!
//! For a running or paused domain only QEMU knows the live bitmaps, and only QEMU can say how
//! many bytes were written since each bitmap was created (`count`). The image file's copy of
//! the bitmaps is stale until QEMU closes it.

use serde::Deserialize;

use super::{Error, Result};

/// One block device QEMU reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The qdev path, e.g. `/machine/peripheral/virtio-disk0/virtio-backend`.
    pub qdev: String,
    /// Legacy device name (empty with `-blockdev`, the cdrom's alias otherwise).
    pub device: String,
    /// The file QEMU has open, when a medium is inserted.
    pub file: Option<String>,
    /// The format node holding the bitmaps (`libvirt-1-format`).
    pub node_name: Option<String>,
    pub bitmaps: Vec<LiveBitmap>,
    /// What QEMU knows of the open image (format and sizes), so that a running domain's
    /// status needs no `qemu-img` process.
    pub image: Option<OpenImage>,
}

/// The image QEMU has open on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenImage {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
}

impl BlockDevice {
    /// Whether this device belongs to the libvirt disk with the given alias (`virtio-disk0`).
    pub fn has_alias(&self, alias: &str) -> bool {
        self.device == alias
            || self.qdev == alias
            || self.qdev.split('/').any(|component| component == alias)
    }
}

/// A dirty bitmap as QEMU holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBitmap {
    pub name: String,
    /// Bytes dirtied since the bitmap was created.
    pub count: u64,
    pub recording: bool,
    pub persistent: bool,
    /// QEMU marks a bitmap inconsistent when it was loaded from an image that was not closed
    /// cleanly.
    pub inconsistent: bool,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "return")]
    ret: Option<Vec<RawDevice>>,
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    desc: String,
}

#[derive(Deserialize)]
struct RawDevice {
    #[serde(default)]
    device: String,
    #[serde(default)]
    qdev: String,
    inserted: Option<RawInserted>,
}

#[derive(Deserialize)]
struct RawInserted {
    file: Option<String>,
    #[serde(rename = "node-name")]
    node_name: Option<String>,
    #[serde(rename = "dirty-bitmaps", default)]
    dirty_bitmaps: Vec<RawBitmap>,
    image: Option<RawImage>,
}

#[derive(Deserialize)]
struct RawImage {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    actual_size: u64,
}

#[derive(Deserialize)]
struct RawBitmap {
    name: String,
    count: u64,
    #[serde(default)]
    recording: bool,
    #[serde(default)]
    persistent: bool,
    #[serde(default)]
    inconsistent: bool,
}

/// Parses the reply to `{"execute":"query-block"}`.
pub fn parse_query_block(json: &str) -> Result<Vec<BlockDevice>> {
    let reply: Reply = serde_json::from_str(json).map_err(|e| Error::parse("query-block", e))?;
    if let Some(err) = reply.error {
        return Err(Error::parse(
            "query-block",
            format!("QEMU error: {}", err.desc),
        ));
    }
    let devices = reply
        .ret
        .ok_or_else(|| Error::parse("query-block", "reply has no \"return\""))?;
    Ok(devices
        .into_iter()
        .map(|d| {
            let (file, node_name, bitmaps, image) = match d.inserted {
                Some(i) => (i.file, i.node_name, i.dirty_bitmaps, i.image),
                None => (None, None, Vec::new(), None),
            };
            BlockDevice {
                qdev: d.qdev,
                device: d.device,
                file,
                node_name,
                bitmaps: bitmaps
                    .into_iter()
                    .map(|b| LiveBitmap {
                        name: b.name,
                        count: b.count,
                        recording: b.recording,
                        persistent: b.persistent,
                        inconsistent: b.inconsistent,
                    })
                    .collect(),
                image: image.map(|i| OpenImage {
                    format: i.format,
                    virtual_size: i.virtual_size,
                    actual_size: i.actual_size,
                }),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from QEMU 7.2 under libvirt 9.0 (blockdev mode).
    const REPLY: &str = r#"{"return":[
      {"io-status":"ok","device":"","locked":false,"removable":false,
       "inserted":{"node-name":"libvirt-3-format","file":"/var/tmp/a disk.qcow2","drv":"qcow2",
         "dirty-bitmaps":[{"name":"virtnbdbackup.1","recording":true,"persistent":true,"busy":false,"granularity":65536,"count":1048576},
                          {"name":"virtnbdbackup.0","recording":true,"persistent":true,"busy":false,"granularity":65536,"count":3145728}]},
       "qdev":"/machine/peripheral/virtio-disk0/virtio-backend","type":"unknown"},
      {"io-status":"ok","device":"ide0-1-0","locked":false,"removable":true,"qdev":"ide0-1-0","tray_open":false,"type":"unknown"}
    ],"id":"libvirt-25"}"#;

    #[test]
    fn live_bitmaps_and_counts_are_read() {
        let devices = parse_query_block(REPLY).unwrap();
        assert_eq!(devices.len(), 2);
        assert!(devices[0].has_alias("virtio-disk0"));
        assert!(!devices[0].has_alias("virtio-disk1"));
        assert_eq!(devices[0].file.as_deref(), Some("/var/tmp/a disk.qcow2"));
        assert_eq!(devices[0].node_name.as_deref(), Some("libvirt-3-format"));
        assert_eq!(devices[0].bitmaps[0].name, "virtnbdbackup.1");
        assert_eq!(devices[0].bitmaps[0].count, 1048576);
        assert!(devices[1].has_alias("ide0-1-0"));
        assert!(devices[1].bitmaps.is_empty());
    }

    #[test]
    fn errors_and_garbage_are_typed() {
        for bad in [
            "",
            "null",
            r#"{"error":{"class":"GenericError","desc":"nope"}}"#,
            r#"{"return":{}}"#,
            r#"{"return":[{"inserted":{"dirty-bitmaps":[{"name":1}]}}]}"#,
        ] {
            assert!(parse_query_block(bad).is_err(), "{bad:?}");
        }
    }
}
