//! Which chain a backup continues, or why it must start a new one.
//!
//! The service owns the chain instead of trusting virtnbdbackup's `auto`: it checks that the
//! domain's live checkpoints are exactly the ones recorded in the period's latest chain folder
//! (same names, same creation times), that every checkpoint's data is complete and every disk
//! still carries every bitmap. Anything else — a crash lost bitmaps, a disk was added, a run
//! failed half-way, the checkpoints belong to another folder — starts a fresh full chain in a
//! new folder. An existing folder is never written into except to continue its own chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::period::{GroupBy, Period};
use crate::host::backup_dir::checkpoint_index;
use crate::host::backup_dir::ChainFolder;
use crate::host::safe_fs::{Dir, Kind};

/// libvirt's and QEMU's side of the chain.
#[derive(Debug, Clone, Default)]
pub struct LiveChain {
    /// VMSnap-owned checkpoints in chain order with their creation times.
    pub checkpoints: Vec<(String, u64)>,
    /// Per eligible disk: its bitmaps as `(name, inconsistent)`.
    pub disks: HashMap<String, Vec<(String, bool)>>,
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Continue the chain in `folder` with an incremental backup.
    Continue { folder: PathBuf },
    /// Start a new chain (full backup) in `folder`, which is new or holds no backup data.
    NewChain { folder: PathBuf, reason: String },
}

/// The chain folders of one period: `<base>`, then `<base>.1`, `<base>.2`, … when a chain had
/// to be restarted within the period. Returns the existing ones, oldest first (only real
/// directories: a symlink named like a chain folder is not one).
pub fn period_folders(domain_dir: &Path, base: &str) -> Vec<PathBuf> {
    let entries = Dir::open(domain_dir)
        .and_then(|d| d.entries())
        .unwrap_or_default();
    let mut suffixes: Vec<u32> = entries
        .iter()
        .filter(|e| e.kind == Kind::Dir)
        .filter_map(|e| {
            if e.name == base {
                return Some(0);
            }
            let n = e.name.strip_prefix(base)?.strip_prefix('.')?;
            (n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() && n != "0")
                .then(|| n.parse().ok())
                .flatten()
        })
        .collect();
    suffixes.sort_unstable();
    suffixes
        .into_iter()
        .map(|n| match n {
            0 => domain_dir.join(base),
            n => domain_dir.join(format!("{base}.{n}")),
        })
        .collect()
}

/// Decides how to back up, given the period's latest chain folder (if any), the live state and
/// whether this backup is to be compressed.
pub fn plan(
    domain_dir: &Path,
    base: &str,
    latest: Option<&ChainFolder>,
    live: &LiveChain,
    compress: bool,
) -> Plan {
    let Some(folder) = latest.filter(|f| f.exists) else {
        return Plan::NewChain {
            folder: domain_dir.join(base),
            reason: "first backup of the period".into(),
        };
    };
    let restart = |reason: String| {
        if folder.has_data() {
            Plan::NewChain {
                folder: next_folder(domain_dir, base, &folder.path),
                reason,
            }
        } else {
            // Only logs of failed attempts: nothing to protect, the full can go here.
            Plan::NewChain {
                folder: folder.path.clone(),
                reason,
            }
        }
    };
    match broken_because(folder, live, compress) {
        Some(reason) => restart(reason),
        None => Plan::Continue {
            folder: folder.path.clone(),
        },
    }
}

fn broken_because(folder: &ChainFolder, live: &LiveChain, compress: bool) -> Option<String> {
    if folder.has_partial() {
        return Some("a failed run left a partial file in the chain folder".into());
    }
    let full_disks = folder.full_disks();
    if full_disks.is_empty() {
        return Some("the chain folder holds no complete full backup".into());
    }
    // virtnbdrestore reads a chain with one setting; a chain is compressed or not from its
    // full on, so a change of the option starts a new chain rather than mix the two.
    match (folder.compressed, compress) {
        (None, _) => return Some("the full backup's stream header cannot be read".into()),
        (Some(true), false) => {
            return Some("the chain is compressed and this backup is not".into())
        }
        (Some(false), true) => {
            return Some("compression was asked for and the chain is not compressed".into())
        }
        _ => {}
    }
    if live.checkpoints.is_empty() {
        return Some("libvirt has no checkpoint of this chain".into());
    }
    let recorded: Vec<&str> = folder.checkpoints.iter().map(|c| c.name.as_str()).collect();
    let current: Vec<&str> = live.checkpoints.iter().map(|(n, _)| n.as_str()).collect();
    if recorded != current {
        return Some(format!(
            "libvirt's checkpoints ({}) are not those of the chain folder ({})",
            current.join(", "),
            recorded.join(", ")
        ));
    }
    for (file, (_, live_time)) in folder.checkpoints.iter().zip(&live.checkpoints) {
        if file.created != Some(*live_time) {
            return Some(format!(
                "checkpoint {} in libvirt is not the one recorded in the chain folder",
                file.name
            ));
        }
    }
    // Every disk that carries the chain must have been in its full backup; a disk added since
    // would have no base. Extra full files are raw disks (`raw` option), which never take part
    // in incrementals.
    let mut live_disks: Vec<&str> = live.disks.keys().map(String::as_str).collect();
    live_disks.sort_unstable();
    let added: Vec<&str> = live_disks
        .iter()
        .copied()
        .filter(|d| !full_disks.contains(d))
        .collect();
    if !added.is_empty() {
        return Some(format!(
            "disk {} is not part of the chain (added since its full backup)",
            added.join(", ")
        ));
    }
    for name in folder.checkpoints.iter().map(|c| &c.name) {
        let n = checkpoint_index(name).unwrap_or(0);
        for disk in &live_disks {
            let data = if n == 0 {
                format!("{disk}.full.data")
            } else {
                format!("{disk}.inc.{name}.data")
            };
            if !folder.files.contains(&data) {
                return Some(format!("the data of checkpoint {name} ({data}) is missing"));
            }
        }
    }
    for (disk, bitmaps) in &live.disks {
        for (name, _) in &live.checkpoints {
            match bitmaps.iter().find(|(b, _)| b == name) {
                None => return Some(format!("checkpoint {name} has no bitmap on disk {disk}")),
                Some((_, true)) => {
                    return Some(format!("bitmap {name} on disk {disk} is inconsistent"))
                }
                Some(_) => {}
            }
        }
    }
    None
}

fn next_folder(domain_dir: &Path, base: &str, latest: &Path) -> PathBuf {
    let current = latest
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(base))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    domain_dir.join(format!("{base}.{}", current + 1))
}

/// The chain folder a status report should describe: the period's latest.
pub fn current_chain_folder(root: &Path, domain: &str, group_by: GroupBy) -> PathBuf {
    let domain_dir = root.join(domain);
    let base = Period::current(group_by).folder_name();
    period_folders(&domain_dir, &base)
        .pop()
        .unwrap_or_else(|| domain_dir.join(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::backup_dir::{scan, CheckpointFile, Detail};

    const BASE: &str = "vmsnap-backup-monthly-2026-11";

    fn folder(files: &[&str], checkpoints: &[(&str, u64)]) -> ChainFolder {
        ChainFolder {
            path: PathBuf::from("/b/vm").join(BASE),
            exists: true,
            files: files.iter().map(|s| s.to_string()).collect(),
            checkpoints: checkpoints
                .iter()
                .map(|(n, t)| CheckpointFile {
                    name: n.to_string(),
                    created: Some(*t),
                })
                .collect(),
            compressed: Some(false),
            ..Default::default()
        }
    }

    fn live(checkpoints: &[(&str, u64)], disks: &[(&str, &[&str])]) -> LiveChain {
        LiveChain {
            checkpoints: checkpoints
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect(),
            disks: disks
                .iter()
                .map(|(d, b)| {
                    (
                        d.to_string(),
                        b.iter().map(|n| (n.to_string(), false)).collect(),
                    )
                })
                .collect(),
        }
    }

    fn good() -> (ChainFolder, LiveChain) {
        (
            folder(
                &["vda.full.data", "vda.inc.virtnbdbackup.1.data", "vm.cpt"],
                &[("virtnbdbackup.0", 100), ("virtnbdbackup.1", 200)],
            ),
            live(
                &[("virtnbdbackup.0", 100), ("virtnbdbackup.1", 200)],
                &[("vda", &["virtnbdbackup.0", "virtnbdbackup.1"])],
            ),
        )
    }

    fn new_chain_reason(plan: Plan) -> (PathBuf, String) {
        match plan {
            Plan::NewChain { folder, reason } => (folder, reason),
            other => panic!("expected a new chain, got {other:?}"),
        }
    }

    #[test]
    fn an_intact_chain_continues() {
        let (f, l) = good();
        assert_eq!(
            plan(Path::new("/b/vm"), BASE, Some(&f), &l, false),
            Plan::Continue {
                folder: f.path.clone()
            }
        );
    }

    #[test]
    fn a_new_period_starts_a_chain_in_its_folder() {
        let (_, l) = good();
        let (folder, reason) = new_chain_reason(plan(Path::new("/b/vm"), BASE, None, &l, false));
        assert_eq!(folder, Path::new("/b/vm").join(BASE));
        assert!(reason.contains("first backup"));
    }

    #[test]
    fn broken_chains_restart_in_a_new_folder_and_say_why() {
        let dir = Path::new("/b/vm");
        let cases: Vec<(ChainFolder, LiveChain, &str)> = vec![
            {
                let (mut f, l) = good();
                f.files.push("vda.inc.virtnbdbackup.2.data.partial".into());
                (f, l, "partial")
            },
            {
                let (f, mut l) = good();
                l.disks.get_mut("vda").unwrap().pop();
                (f, l, "has no bitmap on disk vda")
            },
            {
                let (f, mut l) = good();
                l.disks.insert("vdb".into(), vec![]);
                (f, l, "disk vdb is not part of the chain")
            },
            {
                let (f, mut l) = good();
                l.checkpoints[1].1 = 999;
                (f, l, "not the one recorded")
            },
            {
                let (f, mut l) = good();
                l.checkpoints.push(("virtnbdbackup.2".into(), 300));
                (f, l, "are not those of the chain folder")
            },
            {
                let (mut f, l) = good();
                f.files.retain(|n| n != "vda.inc.virtnbdbackup.1.data");
                (f, l, "data of checkpoint virtnbdbackup.1")
            },
            {
                let (f, mut l) = good();
                l.checkpoints.clear();
                (f, l, "no checkpoint")
            },
            {
                let (mut f, l) = good();
                f.compressed = Some(true);
                (f, l, "the chain is compressed and this backup is not")
            },
            {
                let (mut f, l) = good();
                f.compressed = None;
                (f, l, "stream header cannot be read")
            },
        ];
        for (f, l, expected) in cases {
            let (folder, reason) = new_chain_reason(plan(dir, BASE, Some(&f), &l, false));
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
            assert_eq!(
                folder,
                dir.join(format!("{BASE}.1")),
                "never into the old folder"
            );
        }
    }

    #[test]
    fn a_compressed_chain_continues_compressed_only() {
        let (mut f, l) = good();
        f.compressed = Some(true);
        let dir = Path::new("/b/vm");
        assert!(matches!(
            plan(dir, BASE, Some(&f), &l, true),
            Plan::Continue { .. }
        ));
        f.compressed = Some(false);
        let (folder, reason) = new_chain_reason(plan(dir, BASE, Some(&f), &l, true));
        assert!(reason.contains("compression was asked for"), "{reason}");
        assert_eq!(folder, dir.join(format!("{BASE}.1")));
    }

    #[test]
    fn raw_disks_in_the_full_do_not_break_the_chain() {
        let (mut f, l) = good();
        f.files.push("vdb.full.data".into());
        assert!(matches!(
            plan(Path::new("/b/vm"), BASE, Some(&f), &l, false),
            Plan::Continue { .. }
        ));
    }

    #[test]
    fn a_folder_with_only_failed_logs_is_reused() {
        let (_, l) = good();
        let f = folder(&["backup.full.11232026222302.log"], &[]);
        let (folder, _) = new_chain_reason(plan(Path::new("/b/vm"), BASE, Some(&f), &l, false));
        assert_eq!(folder, f.path);
    }

    #[test]
    fn restarts_count_up() {
        let (mut f, l) = good();
        f.path = PathBuf::from(format!("/b/vm/{BASE}.3"));
        f.files.push("x.partial".into());
        let (folder, _) = new_chain_reason(plan(Path::new("/b/vm"), BASE, Some(&f), &l, false));
        assert_eq!(folder, PathBuf::from(format!("/b/vm/{BASE}.4")));
    }

    #[test]
    fn a_checkpoint_file_over_its_cap_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("vmsnap-chain-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::File::create(dir.join("checkpoints/virtnbdbackup.0.xml"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let e = scan(&dir, Detail::Chain).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("virtnbdbackup.0.xml") && e.contains("larger than"),
            "{e}"
        );
    }
}
