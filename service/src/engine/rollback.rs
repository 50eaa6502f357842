//! Undoing what a failed run wrote into a chain folder.
//!
//! virtnbdbackup changes the folder before it copies a byte and again after a failure: it
//! appends the new checkpoint to `<domain>.cpt`, writes `checkpoints/<cp>.xml`, and at the end
//! — even after a failed copy — `vmconfig.<cp>.xml` and the disks' metadata. A failed point
//! therefore looks like the chain's newest one, and on a full disk its `vmconfig` is empty:
//! `virtnbdrestore` reads the newest `vmconfig` for every restore, so the whole chain stops
//! restoring. The folder is recorded before each run and, when the run fails, put back as it
//! was: new files go (the logs stay, as evidence), `<domain>.cpt` gets its old content back.
//! A folder the run created goes as a whole.
//!
//! The record is also saved in the state directory while the run lasts, so that when the
//! service itself is killed, the next instance rolls the folder back the same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A chain folder's state before a run.
#[derive(Debug, Serialize, Deserialize)]
pub struct FolderBefore {
    folder: PathBuf,
    /// The run creates the folder: undoing it removes the folder.
    created: bool,
    files: HashSet<PathBuf>,
    /// Files virtnbdbackup rewrites in place, with their content before the run.
    rewritten: Vec<(PathBuf, Vec<u8>)>,
}

/// Where the records of runs in progress are kept.
fn pending_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("rollback")
}

/// The files of `folder` and of its `checkpoints/` (virtnbdbackup writes no deeper).
fn files_of(folder: &Path) -> Vec<PathBuf> {
    [folder.to_path_buf(), folder.join("checkpoints")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten())
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect()
}

impl FolderBefore {
    /// Records `folder` before a run; `created` when the run is about to create it.
    pub fn record(folder: &Path, created: bool) -> std::io::Result<Self> {
        let files: HashSet<PathBuf> = files_of(folder).into_iter().collect();
        let mut rewritten = Vec::new();
        for f in &files {
            if f.extension().is_some_and(|x| x == "cpt") {
                rewritten.push((f.clone(), std::fs::read(f)?));
            }
        }
        Ok(FolderBefore {
            folder: folder.to_path_buf(),
            created,
            files,
            rewritten,
        })
    }

    /// Keeps the record in the state directory under `key` until [`FolderBefore::forget`].
    pub fn save(&self, state_dir: &Path, key: &str) -> std::io::Result<()> {
        let dir = pending_dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, dir.join(format!("{key}.json")))
    }

    pub fn forget(state_dir: &Path, key: &str) {
        let _ = std::fs::remove_file(pending_dir(state_dir).join(format!("{key}.json")));
    }

    /// Rolls back every run a killed instance left unfinished, and forgets the records.
    pub fn roll_back_pending(state_dir: &Path) {
        let dir = pending_dir(state_dir);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "json") {
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<FolderBefore>(&b).map_err(|e| e.to_string())
                    }) {
                    Ok(before) => {
                        tracing::warn!(folder = %before.folder.display(), "rolling back a backup the previous vmsnapd did not finish");
                        before.roll_back();
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "unreadable rollback record")
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Puts the folder back as it was, keeping the failed run's logs.
    pub fn roll_back(&self) {
        if self.created {
            if let Err(e) = std::fs::remove_dir_all(&self.folder) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(folder = %self.folder.display(), error = %e, "could not remove a failed run's folder");
                }
            }
            return;
        }
        for f in files_of(&self.folder) {
            let is_log = f.extension().is_some_and(|x| x == "log");
            if !self.files.contains(&f) && !is_log {
                if let Err(e) = std::fs::remove_file(&f) {
                    tracing::warn!(file = %f.display(), error = %e, "could not remove a failed run's file");
                }
            }
        }
        for (f, content) in &self.rewritten {
            if std::fs::read(f).ok().as_deref() != Some(content.as_slice()) {
                if let Err(e) = std::fs::write(f, content) {
                    tracing::error!(file = %f.display(), error = %e, "could not restore the chain's checkpoint list");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_runs_files_go_its_log_stays_and_the_checkpoint_list_is_restored() {
        let dir = std::env::temp_dir().join(format!("vmsnap-rollback-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let old = [
            "vda.full.data",
            "vmconfig.virtnbdbackup.0.xml",
            "checkpoints/virtnbdbackup.0.xml",
        ];
        for f in old {
            std::fs::write(dir.join(f), "good").unwrap();
        }
        std::fs::write(dir.join("vm.cpt"), r#"["virtnbdbackup.0"]"#).unwrap();
        let before = FolderBefore::record(&dir, false).unwrap();
        // Saved and read back, as after a crash.
        let state = dir.join("state");
        before.save(&state, "7-0").unwrap();
        // What a failed incremental leaves.
        std::fs::write(
            dir.join("vm.cpt"),
            r#"["virtnbdbackup.0","virtnbdbackup.1"]"#,
        )
        .unwrap();
        for f in [
            "vda.inc.virtnbdbackup.1.data.partial",
            "vmconfig.virtnbdbackup.1.xml",
            "checkpoints/virtnbdbackup.1.xml",
            "backup.inc.11242026010203.log",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        FolderBefore::roll_back_pending(&state);
        assert!(std::fs::read_dir(state.join("rollback"))
            .unwrap()
            .next()
            .is_none());
        std::fs::remove_dir_all(&state).unwrap();
        let mut left: Vec<String> = files_of(&dir)
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "backup.inc.11242026010203.log",
                "checkpoints/virtnbdbackup.0.xml",
                "vda.full.data",
                "vm.cpt",
                "vmconfig.virtnbdbackup.0.xml"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("vm.cpt")).unwrap(),
            r#"["virtnbdbackup.0"]"#
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
