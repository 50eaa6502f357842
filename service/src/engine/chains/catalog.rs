//! What backups exist: the chains under a backup root, read from disk.
//!
//! Reads the folders themselves (never only the service's records), so it also lists chains
//! made by the original VMSnap or by virtnbdbackup by hand.

use std::path::{Path, PathBuf};

use crate::host::backup_dir::{self, checkpoint_index, CheckpointFile, Detail};
use crate::host::virtnbdbackup::Level;
use crate::host::Result;

/// One restorable point.
#[derive(Debug, Clone)]
pub struct Point {
    pub checkpoint: String,
    pub level: Level,
    pub time: Option<u64>,
    pub bytes: u64,
    pub files: Vec<String>,
}

/// One chain folder.
#[derive(Debug, Clone)]
pub struct Chain {
    pub folder: String,
    pub path: PathBuf,
    pub points: Vec<Point>,
    /// `(name, time)` of its checkpoints, to compare with libvirt's.
    pub checkpoints: Vec<CheckpointFile>,
    /// From the full's stream header; `None` without a readable full.
    pub compressed: Option<bool>,
    /// Checkpoints from a point whose data file is gone on, when a later point still holds
    /// data: not an unfinished run (which ends a chain) but a lost file. They cannot be
    /// restored, and verify says so.
    pub lost: Vec<String>,
}

impl Chain {
    pub fn bytes(&self) -> u64 {
        self.points.iter().map(|p| p.bytes).sum()
    }

    /// Whether `live` (libvirt's VMSnap checkpoints with times) are exactly this chain's.
    pub fn is_live(&self, live: &[(String, u64)]) -> bool {
        !live.is_empty()
            && self.checkpoints.len() == live.len()
            && self
                .checkpoints
                .iter()
                .zip(live)
                .all(|(file, (name, time))| file.name == *name && file.created == Some(*time))
    }
}

/// [`chains`] on a blocking thread: a domain folder with years of chains is thousands of
/// directory reads, which must not hold up the runtime's workers.
pub async fn chains_of(domain_dir: PathBuf) -> Result<Vec<Chain>> {
    tokio::task::spawn_blocking(move || chains(&domain_dir))
        .await
        .map_err(|e| crate::host::Error::Rejected(format!("listing the chains failed: {e}")))?
}

/// The chains in `<root>/<domain>/`, oldest first.
pub fn chains(domain_dir: &Path) -> Result<Vec<Chain>> {
    let entries = match crate::host::safe_fs::Dir::open_if_exists(domain_dir) {
        Ok(Some(dir)) => dir
            .entries()
            .map_err(|e| crate::host::Error::at(domain_dir, e))?,
        Ok(None) => Vec::new(),
        Err(e) => return Err(crate::host::Error::at(domain_dir, e)),
    };
    let mut names: Vec<String> = entries
        .into_iter()
        .filter(|e| e.kind == crate::host::safe_fs::Kind::Dir)
        .map(|e| e.name)
        .filter(|n| n.starts_with("vmsnap-backup-"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = domain_dir.join(&name);
        let folder = backup_dir::scan(&path, Detail::Chain)?;
        let size = |f: &str| folder.size(f);
        let mut points = Vec::new();
        let mut lost = Vec::new();
        for (i, CheckpointFile { name: cp, created }) in folder.checkpoints.iter().enumerate() {
            let n = checkpoint_index(cp).unwrap_or(0);
            let of_point = |f: &str| {
                if n == 0 {
                    f.ends_with(".full.data") || f.ends_with(".copy.data")
                } else {
                    f.ends_with(&format!(".inc.{cp}.data"))
                }
            };
            let files: Vec<String> = folder
                .files
                .iter()
                .filter(|f| of_point(f))
                .cloned()
                .collect();
            let partial = folder
                .files
                .iter()
                .any(|f| f.strip_suffix(".partial").is_some_and(of_point));
            if files.is_empty() || partial {
                // A point that never finished (a failed, cancelled or killed run) is no backup,
                // and nothing after it can be restored through it.
                tracing::info!(folder = %name, checkpoint = %cp, "incomplete point not listed");
                let later = &folder.checkpoints[i + 1..];
                if later.iter().any(|c| {
                    let inc = format!(".inc.{}.data", c.name);
                    folder.files.iter().any(|f| f.ends_with(&inc))
                }) {
                    lost = folder.checkpoints[i..]
                        .iter()
                        .map(|c| c.name.clone())
                        .collect();
                }
                break;
            }
            points.push(Point {
                checkpoint: cp.clone(),
                level: if n == 0 { Level::Full } else { Level::Inc },
                time: *created,
                bytes: files.iter().map(|f| size(f)).sum(),
                files,
            });
        }
        if points.is_empty() {
            let files: Vec<String> = folder
                .files
                .iter()
                .filter(|f| f.ends_with(".copy.data"))
                .cloned()
                .collect();
            if !files.is_empty() {
                points.push(Point {
                    checkpoint: "copy".into(),
                    level: Level::Copy,
                    time: None,
                    bytes: files.iter().map(|f| size(f)).sum(),
                    files,
                });
            }
        }
        out.push(Chain {
            folder: name,
            path,
            points,
            checkpoints: folder.checkpoints,
            compressed: folder.compressed,
            lost,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_point_and_those_after_it_are_not_listed() {
        let dir = std::env::temp_dir().join(format!("vmsnap-catalog-{}", std::process::id()));
        let folder = dir.join("vm/vmsnap-backup-monthly-2026-11");
        std::fs::create_dir_all(folder.join("checkpoints")).unwrap();
        for n in 0..4 {
            std::fs::write(
                folder.join(format!("checkpoints/virtnbdbackup.{n}.xml")),
                "<domaincheckpoint/>",
            )
            .unwrap();
        }
        for f in [
            "vda.full.data",
            "vda.inc.virtnbdbackup.1.data",
            "vda.inc.virtnbdbackup.2.data.partial",
            "vda.inc.virtnbdbackup.3.data",
        ] {
            std::fs::write(folder.join(f), b"x").unwrap();
        }
        let listed = chains(&dir.join("vm")).unwrap();
        let points: Vec<&str> = listed[0]
            .points
            .iter()
            .map(|p| p.checkpoint.as_str())
            .collect();
        assert_eq!(points, ["virtnbdbackup.0", "virtnbdbackup.1"]);
        // An unfinished point loses nothing: nothing after it holds data.
        std::fs::remove_file(folder.join("vda.inc.virtnbdbackup.3.data")).unwrap();
        assert!(chains(&dir.join("vm")).unwrap()[0].lost.is_empty());
        // A data file gone from the middle of a chain is a loss.
        std::fs::remove_file(folder.join("vda.inc.virtnbdbackup.2.data.partial")).unwrap();
        std::fs::write(folder.join("vda.inc.virtnbdbackup.3.data"), b"x").unwrap();
        let listed = chains(&dir.join("vm")).unwrap();
        assert_eq!(listed[0].points.len(), 2);
        assert_eq!(listed[0].lost, ["virtnbdbackup.2", "virtnbdbackup.3"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
