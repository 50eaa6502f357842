//! Records returned by `Manager.Status`.
//!
//! Every record is an `a{sv}` dictionary on the bus, keyed by the same camelCase names the CLI
//! prints in JSON (`checkpoints`, `disks`, `virtualSize`, `overallStatus` …). A Cockpit page or a
//! Python script therefore reads named fields without knowing Rust, and new keys can be added
//! later without breaking anyone. Optional keys are simply absent when unknown: D-Bus has no
//! null.

use zvariant::{DeserializeDict, SerializeDict, Type};

/// Overall verdict of a domain's status, as the number the original VMSnap printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverallStatus {
    /// Every VMSnap checkpoint has its bitmap on every eligible disk and nothing is orphaned.
    Ok = 0,
    /// Something does not match or could not be read; `problems` says what.
    Inconsistent = 1,
}

impl OverallStatus {
    pub fn from_code(code: u32) -> Self {
        if code == 0 {
            OverallStatus::Ok
        } else {
            OverallStatus::Inconsistent
        }
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn word(self) -> &'static str {
        match self {
            OverallStatus::Ok => "OK",
            OverallStatus::Inconsistent => "INCONSISTENT",
        }
    }
}

/// The status of one domain.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct DomainStatus {
    /// The libvirt domain name.
    pub name: String,
    /// libvirt's state word: `running`, `paused`, `shut off`, `crashed`, …
    pub state: String,
    /// Every checkpoint libvirt knows for the domain, foreign ones included, oldest first.
    pub checkpoints: Vec<String>,
    /// Disks VMSnap can back up incrementally (qcow2 disks with a source).
    pub disks: Vec<DiskStatus>,
    /// Disks that are not eligible, with the reason (raw format, cdrom, no source …).
    pub skipped_disks: Vec<SkippedDisk>,
    /// [`OverallStatus`] as a number: 0 = OK, 1 = INCONSISTENT.
    pub overall_status: u32,
    /// Why the status is not OK, one sentence each; empty when OK.
    pub problems: Vec<String>,
    /// Statistics of the current period's backup folder, when the caller named a backup root.
    pub backup_dir_stats: Option<BackupDirStats>,
    /// Set when the domain could not be queried at all (it vanished, virsh failed); the
    /// report is then incomplete and clients should treat the call as failed for this domain.
    pub error: Option<String>,
}

impl DomainStatus {
    pub fn overall(&self) -> OverallStatus {
        OverallStatus::from_code(self.overall_status)
    }
}

/// One eligible disk.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct DiskStatus {
    /// Target device name (`vda`).
    pub disk: String,
    /// Source image path on the host.
    pub path: String,
    /// Image format (`qcow2`).
    pub format: String,
    /// Size the guest sees, in bytes.
    pub virtual_size: u64,
    /// Bytes the image occupies on the host.
    pub actual_size: u64,
    /// Names of the dirty bitmaps on this disk.
    pub bitmaps: Vec<String>,
    /// Details of each bitmap, in the same order as `bitmaps`.
    pub bitmap_details: Vec<BitmapStatus>,
    /// Bytes the guest changed since the latest VMSnap checkpoint, when QEMU can tell (the
    /// domain is running or paused and the checkpoint's bitmap exists).
    pub changed_since_checkpoint: Option<u64>,
}

/// One dirty bitmap of a disk.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct BitmapStatus {
    pub name: String,
    /// Bytes dirtied since the bitmap was created (from QEMU; absent for shut-off domains).
    pub dirty_bytes: Option<u64>,
    /// Whether QEMU is recording writes into it (absent for shut-off domains).
    pub recording: Option<bool>,
    /// True when the bitmap cannot be trusted: QEMU says so, or the image records that the
    /// bitmap was not closed cleanly (`in-use` on a shut-off domain).
    pub inconsistent: bool,
}

/// A disk that VMSnap does not back up incrementally.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct SkippedDisk {
    pub disk: String,
    /// Device kind from the domain XML (`disk`, `cdrom`, `floppy`, `lun`).
    pub device: String,
    /// Source path, empty when there is none.
    pub path: String,
    pub reason: String,
}

/// Statistics of the current period's backup folder.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct BackupDirStats {
    /// `<output>/<domain>/vmsnap-backup-<period>`.
    pub path: String,
    /// Whether the folder exists yet (it does not before the period's first backup).
    pub exists: bool,
    /// Regular files below the folder, counted once each.
    pub total_files: u64,
    /// Their apparent sizes, summed, in bytes.
    pub total_size: u64,
    /// Number of checkpoint files (`checkpoints/*.xml`) in the folder.
    pub checkpoints: u64,
    /// Their checkpoint names, in chain order.
    pub checkpoint_names: Vec<String>,
}

/// What `Manager.Scrub` removed (or, in a dry run, would remove) from one domain.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct ScrubResult {
    pub domain: String,
    pub checkpoints: Vec<String>,
    /// `disk:bitmap` pairs.
    pub bitmaps: Vec<String>,
    /// What could not be done, one sentence each.
    pub problems: Vec<String>,
    pub dry_run: bool,
}

/// What `Manager.Prune` deleted (or, in a dry run, would delete) for one domain.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct PruneResult {
    pub domain: String,
    /// Paths of the deleted period folders.
    pub deleted: Vec<String>,
    pub problems: Vec<String>,
    pub dry_run: bool,
}

/// One chain found on disk by `Manager.ListBackups`.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct BackupChain {
    pub domain: String,
    /// The chain folder's name (`vmsnap-backup-monthly-2026-11`, `….1`).
    pub folder: String,
    pub path: String,
    /// Whether the domain's live checkpoints are this chain's (the next backup continues it).
    pub live: bool,
    /// Its data is lz4-compressed (virtnbdbackup's `--compress`), from the full on.
    pub compressed: bool,
    /// Bytes of all its data files.
    pub bytes: u64,
    pub points: Vec<BackupPoint>,
}

/// One restorable point of a chain.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct BackupPoint {
    /// `virtnbdbackup.N`, or `copy` for a copy backup.
    pub checkpoint: String,
    /// `full`, `inc` or `copy`.
    pub level: String,
    /// Creation time of the checkpoint, seconds since the epoch (absent when unknown).
    pub time: Option<u64>,
    pub bytes: u64,
    /// The data files of this point.
    pub files: Vec<String>,
}

/// What an operator alerts on for one domain (`Manager.BackupHealth`), as the service
/// remembers it across restarts. Times are seconds since the epoch; absent when unknown.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct DomainHealth {
    pub domain: String,
    /// The end of the last backup that succeeded.
    pub last_success: Option<u64>,
    /// The end of the last backup attempt, whatever its outcome.
    pub last_attempt: Option<u64>,
    /// Whether that attempt succeeded (a cancelled or interrupted one did not).
    pub last_attempt_ok: Option<bool>,
    /// How long the last successful backup's job ran, in seconds.
    pub last_duration: Option<u64>,
    /// Bytes the last successful backup copied.
    pub last_bytes: Option<u64>,
    /// The chain the last successful backup went into: its folder, points and bytes on disk.
    pub chain_folder: Option<String>,
    pub chain_points: Option<u64>,
    pub chain_bytes: Option<u64>,
    /// The end of the last verify of the domain's backups, and whether it passed.
    pub last_verify: Option<u64>,
    pub last_verify_ok: Option<bool>,
    /// Whether Status's verdict was OK when the facts were last refreshed.
    pub status_ok: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvariant::serialized::Context;
    use zvariant::{to_bytes, Type, LE};

    fn sample() -> DomainStatus {
        DomainStatus {
            name: "vm1".into(),
            state: "running".into(),
            checkpoints: vec!["virtnbdbackup.0".into()],
            disks: vec![DiskStatus {
                disk: "vda".into(),
                path: "/images/a disk.qcow2".into(),
                format: "qcow2".into(),
                virtual_size: 1 << 30,
                actual_size: 4096,
                bitmaps: vec!["virtnbdbackup.0".into()],
                bitmap_details: vec![BitmapStatus {
                    name: "virtnbdbackup.0".into(),
                    dirty_bytes: Some(65536),
                    recording: Some(true),
                    inconsistent: false,
                }],
                changed_since_checkpoint: Some(65536),
            }],
            skipped_disks: vec![SkippedDisk {
                disk: "hdc".into(),
                device: "cdrom".into(),
                path: String::new(),
                reason: "cdrom device".into(),
            }],
            overall_status: OverallStatus::Ok.code(),
            problems: vec![],
            backup_dir_stats: None,
            error: None,
        }
    }

    #[test]
    fn records_are_string_variant_dictionaries() {
        assert_eq!(DomainStatus::SIGNATURE.to_string(), "a{sv}");
        assert_eq!(<Vec<DomainStatus>>::SIGNATURE.to_string(), "aa{sv}");
    }

    #[test]
    fn a_report_survives_the_wire() {
        let ctxt = Context::new_dbus(LE, 0);
        let original = vec![sample()];
        let bytes = to_bytes(ctxt, &original).unwrap();
        let (decoded, _): (Vec<DomainStatus>, _) = bytes.deserialize().unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn absent_optional_keys_stay_absent() {
        let ctxt = Context::new_dbus(LE, 0);
        let bytes = to_bytes(ctxt, &sample()).unwrap();
        let (dict, _): (std::collections::HashMap<String, zvariant::OwnedValue>, _) =
            bytes.deserialize().unwrap();
        assert!(dict.contains_key("overallStatus"));
        assert!(dict.contains_key("skippedDisks"));
        assert!(!dict.contains_key("backupDirStats"));
        assert!(!dict.contains_key("error"));
    }

    #[test]
    fn overall_status_words() {
        assert_eq!(OverallStatus::from_code(0).word(), "OK");
        assert_eq!(OverallStatus::from_code(1).word(), "INCONSISTENT");
    }
}
