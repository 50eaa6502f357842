//! The service's configuration file (`/etc/vmsnap/vmsnapd.toml`).
//!
//! Administrators edit this file; callers on the bus can never change what is in it. Every key
//! is optional; command-line switches of `vmsnapd` override it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the service looks when `--config` is not given. A missing default file means the
/// built-in defaults; a missing file named explicitly is an error.
pub const DEFAULT_PATH: &str = "/etc/vmsnap/vmsnapd.toml";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// libvirt URI for every host call.
    pub libvirt_uri: String,
    /// Directories under which callers other than root may put backups (root may use any
    /// absolute path, as with the original VMSnap).
    pub backup_roots: Vec<PathBuf>,
    /// Domains backed up at the same time.
    pub parallel_backups: usize,
    /// Where QEMU creates the backups' NBD sockets.
    pub socket_dir: PathBuf,
    /// The service's own state (what to undo after a crash).
    pub state_dir: PathBuf,
    pub command_timeout_seconds: u64,
    pub cancel_grace_seconds: u64,
    pub job_retention_seconds: u64,
    /// node_exporter's textfile-collector directory (Debian:
    /// `/var/lib/prometheus/node-exporter`); unset: no metrics are written.
    pub metrics_dir: Option<PathBuf>,
    /// After how long without a successful backup a domain is overdue (the shipped alert
    /// rule reads it from the metrics).
    pub metrics_backup_max_age_seconds: u64,
    /// The unprivileged user that reads guest file systems for file browsing.
    pub files_user: String,
    /// After how long without a call a file-browsing session is closed.
    pub files_idle_timeout_seconds: u64,
    /// Where file sessions' NBD exports get their sockets.
    pub export_dir: PathBuf,
    /// The most one extraction may write (apparent sizes, holes included), whatever the
    /// target's free space.
    pub extract_max_bytes: u64,
}

/// How long a finished job stays on the bus (the bus layer's own setting).
pub const DEFAULT_JOB_RETENTION_SECONDS: u64 = 600;

/// The engine's defaults, in the file's units: each default is written once, in
/// `engine::Config::default`.
impl Default for FileConfig {
    fn default() -> Self {
        let engine = crate::engine::Config::default();
        FileConfig {
            libvirt_uri: engine.libvirt_uri,
            backup_roots: engine.backup_roots,
            parallel_backups: engine.parallel_backups,
            socket_dir: engine.socket_dir,
            state_dir: engine.state_dir,
            command_timeout_seconds: engine.command_timeout.as_secs(),
            cancel_grace_seconds: engine.cancel_grace.as_secs(),
            job_retention_seconds: DEFAULT_JOB_RETENTION_SECONDS,
            metrics_dir: engine.metrics_dir,
            metrics_backup_max_age_seconds: engine.metrics_backup_max_age.as_secs(),
            files_user: engine.files_user,
            files_idle_timeout_seconds: engine.files_idle_timeout.as_secs(),
            export_dir: engine.export_dir,
            extract_max_bytes: engine.extract_max_bytes,
        }
    }
}

impl FileConfig {
    /// Reads `path`, or the defaults when `path` is the default one and does not exist.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(FileConfig::default())
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let config: FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config
            .metrics_dir
            .as_ref()
            .is_some_and(|d| !d.is_absolute())
        {
            return Err(format!("{}: metrics_dir must be absolute", path.display()));
        }
        if config.backup_roots.iter().any(|r| !r.is_absolute()) {
            return Err(format!("{}: backup_roots must be absolute", path.display()));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c: FileConfig = toml::from_str("backup_roots = [\"/srv/backups\"]").unwrap();
        assert_eq!(c.backup_roots, [PathBuf::from("/srv/backups")]);
        assert_eq!(c.libvirt_uri, "qemu:///system");
    }

    #[test]
    fn typos_are_errors() {
        assert!(toml::from_str::<FileConfig>("backup_root = [\"/x\"]").is_err());
    }

    #[test]
    fn a_missing_default_file_means_defaults() {
        let c = FileConfig::load(Path::new("/nonexistent/vmsnapd.toml"), false).unwrap();
        assert_eq!(c, FileConfig::default());
        assert!(FileConfig::load(Path::new("/nonexistent/vmsnapd.toml"), true).is_err());
    }
}
