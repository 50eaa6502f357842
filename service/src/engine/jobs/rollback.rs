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
//! service itself is killed, the next instance rolls the folder back the same way. It also
//! names the domain's checkpoints before the run, so that the next instance can delete the
//! one the run began, as a run that fails or is cancelled does itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::safe_fs::{self, Dir, Identity, Kind};

/// A chain folder's state before a run.
#[derive(Debug, Serialize, Deserialize)]
pub struct FolderBefore {
    folder: PathBuf,
    /// The folder itself (device, inode): nothing is deleted in a directory that is no
    /// longer this one (swapped for another between the run and its rollback).
    identity: Identity,
    /// The run creates the folder: undoing it removes the folder.
    created: bool,
    /// Files as `name` or `checkpoints/name`.
    files: HashSet<String>,
    /// Files virtnbdbackup rewrites in place (`<domain>.cpt`), with their content before.
    rewritten: Vec<(String, Vec<u8>)>,
    /// The domain's VMSnap checkpoints before the run (absent in records of older versions).
    #[serde(default)]
    checkpoints: Option<CheckpointsBefore>,
}

/// A domain and the VMSnap checkpoints it had before a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointsBefore {
    pub domain: String,
    pub names: Vec<String>,
}

/// Where the records of runs in progress are kept.
fn pending_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("rollback")
}

/// The regular files of the folder and of its `checkpoints/` (virtnbdbackup writes no
/// deeper), as `name` and `checkpoints/name`, each with the directory that holds it.
fn files_of(folder: &Dir) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let top = folder.entries().unwrap_or_default();
    out.extend(
        top.iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| (String::new(), e.name.clone())),
    );
    if let Ok(Some(cps)) = folder.open_dir_if_exists("checkpoints") {
        out.extend(
            cps.entries()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.kind == Kind::File)
                .map(|e| ("checkpoints".to_string(), e.name)),
        );
    }
    out
}

fn joined(sub: &str, name: &str) -> String {
    match sub {
        "" => name.to_string(),
        sub => format!("{sub}/{name}"),
    }
}

impl FolderBefore {
    /// Records `folder` before a run; `created` when the run has just created it.
    pub fn record(folder: &Path, created: bool) -> std::io::Result<Self> {
        let dir = Dir::open(folder)?;
        let files: HashSet<String> = files_of(&dir)
            .iter()
            .map(|(sub, name)| joined(sub, name))
            .collect();
        let mut rewritten = Vec::new();
        for f in &files {
            if f.ends_with(".cpt") && !f.contains('/') {
                let content = dir
                    .read(f, safe_fs::cap::SMALL)
                    .map_err(std::io::Error::other)?;
                rewritten.push((f.clone(), content));
            }
        }
        Ok(FolderBefore {
            folder: folder.to_path_buf(),
            identity: dir.identity()?,
            created,
            files,
            rewritten,
            checkpoints: None,
        })
    }

    /// Adds the domain's checkpoints before the run to the record.
    pub fn with_checkpoints(mut self, domain: &str, names: &[String]) -> Self {
        self.checkpoints = Some(CheckpointsBefore {
            domain: domain.to_string(),
            names: names.to_vec(),
        });
        self
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
    /// Returns the checkpoints those runs' domains had before them.
    pub fn roll_back_pending(state_dir: &Path) -> Vec<CheckpointsBefore> {
        let mut checkpoints = Vec::new();
        let dir = pending_dir(state_dir);
        let Ok(Some(records)) = Dir::open_if_exists(&dir) else {
            return checkpoints;
        };
        for entry in records.entries().unwrap_or_default() {
            if entry.kind == Kind::File && entry.name.ends_with(".json") {
                let parsed = records
                    .read(&entry.name, safe_fs::cap::MEDIUM)
                    .map_err(|e| e.to_string())
                    .and_then(|b| {
                        serde_json::from_slice::<FolderBefore>(&b).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(before) => {
                        tracing::warn!(folder = %before.folder.display(), "rolling back a backup the previous vmsnapd did not finish");
                        before.roll_back();
                        checkpoints.extend(before.checkpoints);
                    }
                    Err(e) => {
                        tracing::error!(file = %dir.join(&entry.name).display(), error = %e, "unreadable rollback record")
                    }
                }
            }
            let _ = records.remove_file(&entry.name);
        }
        checkpoints
    }

    /// Puts the folder back as it was, keeping the failed run's logs. Works on the folder by
    /// handle and only when it is still the recorded directory.
    pub fn roll_back(&self) {
        if let Err(e) = self.try_roll_back() {
            tracing::error!(folder = %self.folder.display(), error = %e, "rollback refused or incomplete");
        }
    }

    fn try_roll_back(&self) -> std::io::Result<()> {
        if self.created {
            let (Some(parent), Some(name)) = (
                self.folder.parent(),
                self.folder.file_name().and_then(|n| n.to_str()),
            ) else {
                return Ok(());
            };
            return match Dir::open(parent).and_then(|p| p.remove_tree(name, Some(self.identity))) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        let dir = match Dir::open(&self.folder) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        if dir.identity()? != self.identity {
            return Err(std::io::Error::other(
                "the folder was replaced since the run started; nothing deleted",
            ));
        }
        let checkpoints = dir.open_dir_if_exists("checkpoints")?;
        for (sub, name) in files_of(&dir) {
            let is_log = name.ends_with(".log");
            if self.files.contains(&joined(&sub, &name)) || is_log {
                continue;
            }
            let holder = match (sub.as_str(), &checkpoints) {
                ("", _) => &dir,
                (_, Some(cps)) => cps,
                _ => continue,
            };
            if let Err(e) = holder.remove_file(&name) {
                tracing::warn!(file = %joined(&sub, &name), error = %e, "could not remove a failed run's file");
            }
        }
        for (f, content) in &self.rewritten {
            if dir.read(f, safe_fs::cap::SMALL).ok().as_deref() != Some(content.as_slice()) {
                if let Err(e) = dir.write(f, content, 0o644) {
                    tracing::error!(file = %f, error = %e, "could not restore the chain's checkpoint list");
                }
            }
        }
        Ok(())
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
        let mut left: Vec<String> = files_of(&Dir::open(&dir).unwrap())
            .iter()
            .map(|(sub, name)| joined(sub, name))
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

    #[test]
    fn a_folder_replaced_since_the_record_is_left_alone() {
        let base =
            std::env::temp_dir().join(format!("vmsnap-rollback-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("chain");
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::write(dir.join("vm.cpt"), "[]").unwrap();
        let before = FolderBefore::record(&dir, false).unwrap();
        let created = FolderBefore::record(&dir, true).unwrap();
        // Another directory under the same name, holding files the run never wrote.
        std::fs::rename(&dir, base.join("moved")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::write(dir.join("precious"), "keep").unwrap();
        std::fs::write(dir.join("vm.cpt"), "theirs").unwrap();
        before.roll_back();
        created.roll_back();
        assert_eq!(
            std::fs::read_to_string(dir.join("precious")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("vm.cpt")).unwrap(),
            "theirs"
        );
        // A link in its place is not followed either.
        std::fs::remove_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(base.join("moved"), &dir).unwrap();
        std::fs::write(base.join("moved/new-file"), "x").unwrap();
        before.roll_back();
        assert!(base.join("moved/new-file").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
