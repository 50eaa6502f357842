//! Caller-supplied filesystem paths, validated before the root service uses them.

use std::path::{Component, Path, PathBuf};

/// Longest path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("path {0:?} is not absolute")]
    Relative(String),
    #[error("path {0:?} contains '.' or '..' components")]
    DotComponent(String),
    #[error("path of {0} bytes is longer than {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("path {0:?} contains a control character")]
    ControlCharacter(String),
}

/// An absolute, lexically normal directory under which backups live
/// (`<root>/<domain>/vmsnap-backup-<period>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRoot(PathBuf);

impl BackupRoot {
    pub fn new(path: &str) -> Result<Self, InvalidPath> {
        if path.len() > MAX_PATH_BYTES {
            return Err(InvalidPath::TooLong(path.len()));
        }
        if path.chars().any(char::is_control) {
            return Err(InvalidPath::ControlCharacter(
                path.escape_debug().to_string(),
            ));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(InvalidPath::Relative(path.to_string()));
        }
        // `Path::components` silently drops interior `.`, so look at the raw segments too.
        let dotted = path.split('/').any(|s| s == "." || s == "..")
            || p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        if dotted {
            return Err(InvalidPath::DotComponent(path.to_string()));
        }
        Ok(BackupRoot(p.components().collect()))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_normal_paths_are_roots() {
        assert_eq!(
            BackupRoot::new("/backups//vms/").unwrap().as_path(),
            Path::new("/backups/vms")
        );
        assert!(matches!(
            BackupRoot::new("backups"),
            Err(InvalidPath::Relative(_))
        ));
        assert!(matches!(BackupRoot::new(""), Err(InvalidPath::Relative(_))));
        assert!(matches!(
            BackupRoot::new("/a/../etc"),
            Err(InvalidPath::DotComponent(_))
        ));
        assert!(matches!(
            BackupRoot::new("/a/./b"),
            Err(InvalidPath::DotComponent(_))
        ));
        assert!(matches!(
            BackupRoot::new("/a\nb"),
            Err(InvalidPath::ControlCharacter(_))
        ));
        assert!(matches!(
            BackupRoot::new(&format!("/{}", "a".repeat(5000))),
            Err(InvalidPath::TooLong(_))
        ));
    }
}
