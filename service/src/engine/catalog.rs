//! What backups exist: the chains under a backup root, read from disk.
//!
//! Reads the folders themselves (never only the service's records), so it also lists chains
//! made by the original VMSnap or by virtnbdbackup by hand.

use std::path::{Path, PathBuf};

use super::chain::ChainFolder;
use crate::host::backup_dir::checkpoint_index;
use crate::host::Result;

/// One restorable point.
#[derive(Debug, Clone)]
pub struct Point {
    pub checkpoint: String,
    pub level: &'static str,
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
    pub checkpoints: Vec<(String, Option<u64>)>,
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
                .all(|((n, t), (ln, lt))| n == ln && *t == Some(*lt))
    }
}

/// The chains in `<root>/<domain>/`, oldest first.
pub fn chains(domain_dir: &Path) -> Result<Vec<Chain>> {
    let mut names: Vec<String> = match std::fs::read_dir(domain_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| n.starts_with("vmsnap-backup-"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(crate::host::Error::Io {
                path: domain_dir.to_path_buf(),
                source,
            })
        }
    };
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = domain_dir.join(&name);
        let folder = ChainFolder::inspect(&path)?;
        let size = |f: &str| {
            std::fs::metadata(path.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut points = Vec::new();
        for (cp, time) in &folder.checkpoints {
            let n = checkpoint_index(cp).unwrap_or(0);
            let files: Vec<String> = folder
                .files
                .iter()
                .filter(|f| {
                    if n == 0 {
                        f.ends_with(".full.data") || f.ends_with(".copy.data")
                    } else {
                        f.ends_with(&format!(".inc.{cp}.data"))
                    }
                })
                .cloned()
                .collect();
            points.push(Point {
                checkpoint: cp.clone(),
                level: if n == 0 { "full" } else { "inc" },
                time: *time,
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
                    level: "copy",
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
        });
    }
    Ok(out)
}
