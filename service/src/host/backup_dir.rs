//! The one reader of a chain folder: its files, its sizes and the checkpoints of its chain.
//!
//! Status (a period folder's statistics), the chain decision of a backup and the catalog of
//! ListBackups, Verify and Restore all read a folder through [`scan`], so they can never
//! disagree about what a folder holds. Files are counted once each, directories not at all,
//! and the walk is limited by depth only (the original counted `checkpoints/` twice, counted
//! directories as 4 KiB files and limited the walk by a sibling count). Everything is reached
//! by handle ([`super::safe_fs`]): a symlink is never followed, an entry that is not a regular
//! file where one is expected, or a checkpoint XML over its cap, is an error naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::checkpoint_xml;
use super::safe_fs::{self, Dir, Kind};
use super::stream_meta;
use super::{Error, Result};

/// How deep below the period folder files are counted; virtnbdbackup writes two levels.
const MAX_DEPTH: usize = 8;

/// How much of the checkpoint records a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Names only (`checkpoints/*.xml`): what Status shows, without opening each file.
    Names,
    /// Also each checkpoint's creation time from its XML, what a chain is compared by, and
    /// whether the chain is compressed, from its full's stream header.
    Chain,
}

/// One `checkpoints/<name>.xml` of a chain folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    pub name: String,
    /// From the XML with [`Detail::Chain`]; `None` when not read or not in the file.
    pub created: Option<u64>,
}

/// What is on disk in one chain folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainFolder {
    pub path: PathBuf,
    pub exists: bool,
    /// Regular files directly in the folder (the data files, `.partial`s, logs).
    pub files: Vec<String>,
    /// Their sizes in bytes.
    pub sizes: HashMap<String, u64>,
    /// Regular files in the whole folder, `checkpoints/` and below included, and their bytes.
    pub total_files: u64,
    pub total_size: u64,
    /// From `checkpoints/*.xml`, in chain order (`virtnbdbackup.N` by N).
    pub checkpoints: Vec<CheckpointFile>,
    /// With [`Detail::Chain`], whether the full's data is lz4-compressed (`None`: no full,
    /// not read, or its header is unreadable).
    pub compressed: Option<bool>,
}

impl ChainFolder {
    pub fn checkpoint_names(&self) -> Vec<String> {
        self.checkpoints.iter().map(|c| c.name.clone()).collect()
    }

    /// Whether a run that failed, was cancelled or was killed left a data file unfinished.
    pub fn has_partial(&self) -> bool {
        self.files.iter().any(|f| f.ends_with(".partial"))
    }

    /// Whether any backup data (finished or not) is in the folder.
    pub fn has_data(&self) -> bool {
        self.files.iter().any(|f| f.contains(".data"))
    }

    /// The disks with a full backup (`<disk>.full.data`).
    pub fn full_disks(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter_map(|f| f.strip_suffix(".full.data"))
            .collect()
    }

    /// The size of a file directly in the folder, 0 when there is none.
    pub fn size(&self, file: &str) -> u64 {
        self.sizes.get(file).copied().unwrap_or(0)
    }
}

/// Reads the folder at `path`. A missing folder is not an error: it is what a period looks
/// like before its first backup (`exists: false`).
pub fn scan(path: &Path, detail: Detail) -> Result<ChainFolder> {
    let mut folder = ChainFolder {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let Some(dir) = Dir::open_if_exists(path).map_err(|e| Error::at(path, e))? else {
        return Ok(folder);
    };
    folder.exists = true;
    walk(&dir, 0, &mut folder)?;
    let checkpoints = dir
        .open_dir_if_exists("checkpoints")
        .map_err(|e| Error::at(&path.join("checkpoints"), e))?;
    if let Some(cps) = checkpoints {
        for name in checkpoint_names(&cps)? {
            let created = match detail {
                Detail::Names => None,
                Detail::Chain => {
                    let xml = cps.read_text(&format!("{name}.xml"), safe_fs::cap::SMALL)?;
                    checkpoint_xml::creation_time(&xml).ok()
                }
            };
            folder.checkpoints.push(CheckpointFile { name, created });
        }
    }
    if detail == Detail::Chain {
        // Any disk's full tells: one run writes every disk with the same option.
        let mut fulls: Vec<&String> = folder
            .files
            .iter()
            .filter(|f| f.ends_with(".full.data"))
            .collect();
        fulls.sort();
        if let Some(full) = fulls.first() {
            // An unreadable header leaves it unknown: the chain decision refuses to continue
            // such a chain, and listing it must not fail because of one file.
            match stream_meta::read(&dir, full) {
                Ok(meta) => folder.compressed = Some(meta.compressed),
                Err(e) => tracing::warn!(error = %e, "a full backup's header cannot be read"),
            }
        }
    }
    Ok(folder)
}

fn walk(dir: &Dir, depth: usize, folder: &mut ChainFolder) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let at = |name: &str| dir.path().join(name);
    for entry in dir.entries().map_err(|e| Error::at(dir.path(), e))? {
        match entry.kind {
            Kind::Dir => {
                let sub = dir
                    .open_dir(&entry.name)
                    .map_err(|e| Error::at(&at(&entry.name), e))?;
                walk(&sub, depth + 1, folder)?;
            }
            Kind::File => {
                let meta = dir
                    .meta_of(&entry.name)
                    .map_err(|e| Error::at(&at(&entry.name), e))?;
                folder.total_files += 1;
                folder.total_size += meta.len;
                if depth == 0 {
                    folder.sizes.insert(entry.name.clone(), meta.len);
                    folder.files.push(entry.name);
                }
            }
            Kind::Other => {}
        }
    }
    Ok(())
}

/// Names of the `*.xml` files in a chain's open checkpoint folder, ordered by their number.
fn checkpoint_names(dir: &Dir) -> Result<Vec<String>> {
    let mut names: Vec<String> = dir
        .entries()
        .map_err(|e| Error::at(dir.path(), e))?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .filter_map(|e| e.name.strip_suffix(".xml").map(String::from))
        .collect();
    names.sort_by_key(|n| (checkpoint_index(n), n.clone()));
    Ok(names)
}

/// `N` of a VMSnap-owned checkpoint name `virtnbdbackup.N`, `None` for any other name.
pub fn checkpoint_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("virtnbdbackup.")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_counted_once_and_directories_not_at_all() {
        let root = std::env::temp_dir().join(format!("vmsnap-dirstats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("checkpoints")).unwrap();
        std::fs::write(root.join("vda.full.data"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.join("vm.cpt"), b"[]").unwrap();
        for n in [10, 2, 0] {
            std::fs::write(
                root.join(format!("checkpoints/virtnbdbackup.{n}.xml")),
                b"x",
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let s = scan(&root, Detail::Names).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(s.exists);
        assert_eq!(s.total_files, 5);
        assert_eq!(s.total_size, 1005);
        assert_eq!(
            s.checkpoint_names(),
            ["virtnbdbackup.0", "virtnbdbackup.2", "virtnbdbackup.10"]
        );
        // Only what lies directly in the folder is a chain file; the link is nothing.
        let mut top = s.files.clone();
        top.sort();
        assert_eq!(top, ["vda.full.data", "vm.cpt"]);
        assert_eq!(s.size("vda.full.data"), 1000);
        assert!(s.checkpoints.iter().all(|c| c.created.is_none()));
    }

    #[test]
    fn a_missing_folder_is_empty_not_an_error() {
        let s = scan(Path::new("/nonexistent/vmsnap/x"), Detail::Chain).unwrap();
        assert!(!s.exists);
        assert_eq!(s.total_files, 0);
    }

    #[test]
    fn only_virtnbdbackup_n_is_ours() {
        assert_eq!(checkpoint_index("virtnbdbackup.12"), Some(12));
        for other in [
            "virtnbdbackup.",
            "virtnbdbackup.1a",
            "foreign",
            "virtnbdbackup.-1",
        ] {
            assert_eq!(checkpoint_index(other), None, "{other}");
        }
    }
}
