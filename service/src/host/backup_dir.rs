//! What a period's backup folder holds: its files and the checkpoints of its chain.
//!
//! Files are counted once each, directories not at all, and the walk is limited by depth only
//! (the original counted `checkpoints/` twice, counted directories as 4 KiB files and limited
//! the walk by a sibling count). Symlinks are not followed, so a link cannot make the root
//! service walk elsewhere.

use std::path::{Path, PathBuf};

use super::safe_fs::{Dir, Kind};
use super::{Error, Result};

/// How deep below the period folder files are counted; virtnbdbackup writes two levels.
const MAX_DEPTH: usize = 8;

/// Statistics of one backup folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStats {
    pub path: PathBuf,
    pub exists: bool,
    pub total_files: u64,
    pub total_size: u64,
    /// Checkpoint names from `checkpoints/*.xml`, in chain order (`virtnbdbackup.N` by N).
    pub checkpoints: Vec<String>,
}

/// Reads the statistics of `path`. A missing folder is not an error: it is what a period looks
/// like before its first backup.
pub fn stats(path: &Path) -> Result<FolderStats> {
    let Some(dir) = Dir::open_if_exists(path).map_err(|e| Error::at(path, e))? else {
        return Ok(FolderStats {
            path: path.to_path_buf(),
            ..Default::default()
        });
    };
    let mut stats = FolderStats {
        path: path.to_path_buf(),
        exists: true,
        ..Default::default()
    };
    walk(&dir, 0, &mut stats)?;
    stats.checkpoints = match dir.open_dir_if_exists("checkpoints") {
        Ok(Some(cps)) => checkpoint_names(&cps)?,
        Ok(None) => Vec::new(),
        Err(e) => return Err(Error::at(&path.join("checkpoints"), e)),
    };
    Ok(stats)
}

fn walk(dir: &Dir, depth: usize, stats: &mut FolderStats) -> Result<()> {
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
                walk(&sub, depth + 1, stats)?;
            }
            Kind::File => {
                let meta = dir
                    .meta_of(&entry.name)
                    .map_err(|e| Error::at(&at(&entry.name), e))?;
                stats.total_files += 1;
                stats.total_size += meta.len;
            }
            Kind::Other => {}
        }
    }
    Ok(())
}

/// Names of the `*.xml` files in a chain's open checkpoint folder, ordered by their number.
pub fn checkpoint_names(dir: &Dir) -> Result<Vec<String>> {
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
        let s = stats(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(s.exists);
        assert_eq!(s.total_files, 5);
        assert_eq!(s.total_size, 1005);
        assert_eq!(
            s.checkpoints,
            ["virtnbdbackup.0", "virtnbdbackup.2", "virtnbdbackup.10"]
        );
    }

    #[test]
    fn a_missing_folder_is_empty_not_an_error() {
        let s = stats(Path::new("/nonexistent/vmsnap/x")).unwrap();
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
