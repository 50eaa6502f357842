//! Which disks a chain covers, decided in one place for Status and Backup, so that Status
//! never calls a disk backed up that a backup would leave out.

use crate::host::domain_xml::DiskDefinition;
use crate::host::tools::ToolVersion;

/// Why `disk` cannot be part of an incremental chain with the installed virtnbdbackup
/// (`None`: it can). `tool` is that version, when known.
pub fn ineligible_reason(disk: &DiskDefinition, tool: Option<ToolVersion>) -> Option<String> {
    if disk.device != "disk" {
        return Some(format!("{} device", disk.device));
    }
    if disk.source.is_none() {
        return Some(format!("no host path ({} source)", disk.source_type));
    }
    match disk.format.as_deref() {
        Some("qcow2") => {}
        Some(other) => return Some(format!("{other} format has no persistent bitmaps")),
        None => return Some("unknown format".into()),
    }
    match tool {
        Some(v) if disk.source_type == "block" && !v.backs_up_block_devices() => Some(format!(
            "block device: virtnbdbackup {v} does not back up block devices (2.x does)"
        )),
        _ => None,
    }
}

/// Whether eligibility depends on the virtnbdbackup version (only block devices do), so the
/// version is asked for only then.
pub fn needs_tool_version(disks: &[DiskDefinition]) -> bool {
    disks.iter().any(|d| d.source_type == "block")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(device: &str, format: Option<&str>, source: Option<&str>) -> DiskDefinition {
        DiskDefinition {
            target: "vda".into(),
            device: device.into(),
            source_type: "file".into(),
            format: format.map(String::from),
            source: source.map(String::from),
            alias: None,
        }
    }

    #[test]
    fn only_qcow2_disks_with_a_source_are_eligible() {
        let v2 = Some(ToolVersion::new(2, 28, 0));
        assert_eq!(
            ineligible_reason(&disk("disk", Some("qcow2"), Some("/a")), v2),
            None
        );
        assert!(ineligible_reason(&disk("disk", Some("raw"), Some("/a")), v2).is_some());
        assert!(ineligible_reason(&disk("cdrom", Some("qcow2"), Some("/a")), v2).is_some());
        assert!(ineligible_reason(&disk("disk", Some("qcow2"), None), v2).is_some());
        assert!(ineligible_reason(&disk("disk", None, Some("/a")), v2).is_some());
    }

    #[test]
    fn qcow2_on_a_block_device_needs_virtnbdbackup_2() {
        let mut block = disk("disk", Some("qcow2"), Some("/dev/vg0/web1"));
        block.source_type = "block".into();
        let reason = ineligible_reason(&block, Some(ToolVersion::new(1, 9, 15))).unwrap();
        assert!(reason.contains("1.9.15"), "{reason}");
        assert_eq!(
            ineligible_reason(&block, Some(ToolVersion::new(2, 28, 0))),
            None
        );
        assert!(needs_tool_version(&[block]));
        assert!(!needs_tool_version(&[disk(
            "disk",
            Some("qcow2"),
            Some("/a")
        )]));
    }
}
