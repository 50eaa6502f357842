//! Is a domain's incremental state sound? Judged by name, never by count.
//!
//! A VMSnap chain needs, for every VMSnap-owned checkpoint (`virtnbdbackup.N`), a bitmap of the
//! same name on every eligible disk, and no bitmap of that form without its checkpoint. The
//! original compared counts, so a foreign bitmap could hide a missing one and raw disks always
//! looked broken.

use crate::host::backup_dir::{checkpoint_index, ChainFolder};

/// What the check needs to know about one eligible disk.
pub struct DiskBitmaps<'a> {
    pub target: &'a str,
    /// `(name, inconsistent)` of every bitmap on the disk.
    pub bitmaps: Vec<(&'a str, bool)>,
}

/// Problems between libvirt's checkpoints and the disks' bitmaps, one sentence each.
pub fn check_bitmaps(checkpoints: &[String], disks: &[DiskBitmaps<'_>]) -> Vec<String> {
    let owned: Vec<&str> = owned(checkpoints);
    let mut problems = Vec::new();
    for disk in disks {
        for cp in &owned {
            if !disk.bitmaps.iter().any(|(b, _)| b == cp) {
                problems.push(format!(
                    "checkpoint {cp} has no bitmap on disk {}",
                    disk.target
                ));
            }
        }
        for (bitmap, inconsistent) in &disk.bitmaps {
            if checkpoint_index(bitmap).is_some() && !owned.contains(bitmap) {
                problems.push(format!(
                    "bitmap {bitmap} on disk {} has no checkpoint (orphaned)",
                    disk.target
                ));
            }
            if *inconsistent {
                problems.push(format!(
                    "bitmap {bitmap} on disk {} is inconsistent (QEMU did not store it cleanly)",
                    disk.target
                ));
            }
        }
    }
    problems
}

/// Problems between libvirt's checkpoints and the checkpoint files of the current period's
/// backup folder. A folder that does not exist yet (the period's first backup has not run)
/// is not a problem: the next backup starts a new chain there.
pub fn check_folder(checkpoints: &[String], folder: &ChainFolder) -> Vec<String> {
    if !folder.exists {
        return Vec::new();
    }
    let owned = owned(checkpoints);
    let path = folder.path.display();
    let mut problems = Vec::new();
    let recorded = folder.checkpoint_names();
    for cp in &recorded {
        if !owned.contains(&cp.as_str()) {
            problems.push(format!(
                "checkpoint {cp} of the backup chain in {path} is unknown to libvirt"
            ));
        }
    }
    for cp in owned {
        if !recorded.iter().any(|f| f == cp) {
            problems.push(format!(
                "libvirt checkpoint {cp} is not part of the backup chain in {path}"
            ));
        }
    }
    problems
}

/// VMSnap-owned checkpoint names, in the given order.
pub fn owned(checkpoints: &[String]) -> Vec<&str> {
    checkpoints
        .iter()
        .map(String::as_str)
        .filter(|c| checkpoint_index(c).is_some())
        .collect()
}

/// The newest VMSnap-owned checkpoint (highest N).
pub fn latest_owned(checkpoints: &[String]) -> Option<&str> {
    owned(checkpoints)
        .into_iter()
        .max_by_key(|c| checkpoint_index(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::backup_dir::CheckpointFile;
    use std::path::PathBuf;

    fn cps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_names_are_ok_and_foreign_ones_do_not_count() {
        let checkpoints = cps(&["virtnbdbackup.0", "virtnbdbackup.1", "manual-snap"]);
        let disks = [DiskBitmaps {
            target: "vda",
            bitmaps: vec![
                ("virtnbdbackup.0", false),
                ("virtnbdbackup.1", false),
                ("other", false),
            ],
        }];
        assert!(check_bitmaps(&checkpoints, &disks).is_empty());
    }

    #[test]
    fn same_count_different_names_is_caught() {
        // The original's count comparison called this OK.
        let checkpoints = cps(&["virtnbdbackup.0", "virtnbdbackup.1"]);
        let disks = [DiskBitmaps {
            target: "vda",
            bitmaps: vec![("virtnbdbackup.0", false), ("virtnbdbackup.7", false)],
        }];
        assert_eq!(
            check_bitmaps(&checkpoints, &disks),
            [
                "checkpoint virtnbdbackup.1 has no bitmap on disk vda",
                "bitmap virtnbdbackup.7 on disk vda has no checkpoint (orphaned)",
            ]
        );
    }

    #[test]
    fn inconsistent_bitmaps_are_reported() {
        let checkpoints = cps(&["virtnbdbackup.0"]);
        let disks = [DiskBitmaps {
            target: "vdb",
            bitmaps: vec![("virtnbdbackup.0", true)],
        }];
        assert_eq!(check_bitmaps(&checkpoints, &disks).len(), 1);
    }

    #[test]
    fn folder_cross_check_by_name() {
        let folder = ChainFolder {
            path: PathBuf::from("/b/vm/vmsnap-backup-monthly-2026-11"),
            exists: true,
            checkpoints: ["virtnbdbackup.0", "virtnbdbackup.1"]
                .map(|name| CheckpointFile {
                    name: name.into(),
                    created: None,
                })
                .into(),
            ..Default::default()
        };
        assert!(check_folder(&cps(&["virtnbdbackup.0", "virtnbdbackup.1"]), &folder).is_empty());
        let problems = check_folder(&cps(&["virtnbdbackup.0", "virtnbdbackup.2"]), &folder);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let absent = ChainFolder::default();
        assert!(check_folder(&cps(&["virtnbdbackup.0"]), &absent).is_empty());
    }

    #[test]
    fn latest_is_by_number() {
        let checkpoints = cps(&["virtnbdbackup.9", "virtnbdbackup.10", "x"]);
        assert_eq!(latest_owned(&checkpoints), Some("virtnbdbackup.10"));
        assert_eq!(latest_owned(&cps(&["x"])), None);
    }
}
