//! The engine: what the service does, in terms of the host layer, without any D-Bus.
//!
//! The D-Bus interfaces translate calls into engine requests and engine results back into wire
//! records; everything that decides something lives here, where it can be tested alone.

pub mod access;
pub mod backup;
pub mod chains;
mod error;
pub mod extract;
pub mod files;
pub mod health;
pub mod jobs;
pub mod list;
pub mod prune;
mod rebuild;
pub mod restore;
pub mod scrub;
pub mod status;
pub mod verify;
pub mod vocabulary;

use std::time::Duration;

pub use error::Error;

use crate::host::{self, tools::VersionCache};

/// Settings fixed at service start.
#[derive(Debug, Clone)]
pub struct Config {
    /// libvirt URI every host call uses (`qemu:///system`).
    pub libvirt_uri: String,
    /// Deadline for one libvirt call or qemu-img run.
    pub command_timeout: Duration,
    /// How many domains are backed up at the same time.
    pub parallel_backups: usize,
    /// Where QEMU creates the NBD sockets of backups: a directory QEMU may write to and that
    /// is not inside the service's private /tmp.
    pub socket_dir: std::path::PathBuf,
    /// How long virtnbdbackup may take to stop after SIGINT before it is killed.
    pub cancel_grace: Duration,
    /// Where callers other than root may put backups.
    pub backup_roots: Vec<std::path::PathBuf>,
    /// Where Verify rebuilds disks in private directories with random names (room for the
    /// largest disk is needed): `<state_dir>/scratch` unless configured.
    pub scratch_dir: std::path::PathBuf,
    /// The service's own state (what to undo after a crash).
    pub state_dir: std::path::PathBuf,
    /// node_exporter's textfile-collector directory: backup health is written there as
    /// `vmsnap.prom` after every job, at start and every few minutes (none: not written).
    pub metrics_dir: Option<std::path::PathBuf>,
    /// The age after which a domain's last successful backup is overdue (exported for the
    /// shipped alert rule).
    pub metrics_backup_max_age: Duration,
    /// The unprivileged user `vmsnap-guestfs` runs as (file browsing).
    pub files_user: String,
    /// The guest-file-system reader: `vmsnap-guestfs` beside `vmsnapd` unless configured.
    pub files_helper: std::path::PathBuf,
    /// Where a file-browsing session's NBD export gets its socket (a private directory of
    /// the caller's in here).
    pub export_dir: std::path::PathBuf,
    /// A file-browsing session without a call for this long is closed.
    pub files_idle_timeout: Duration,
    /// The most one extraction may write (apparent sizes), whatever the free space.
    pub extract_max_bytes: u64,
}

/// Backups go here unless configured otherwise.
pub const DEFAULT_BACKUP_ROOT: &str = "/var/lib/vmsnap";

/// 256 GiB: a whole guest's worth of files is a restore, not an extraction.
pub const DEFAULT_EXTRACT_MAX_BYTES: u64 = 256 << 30;

impl Default for Config {
    fn default() -> Self {
        Config {
            libvirt_uri: "qemu:///system".into(),
            command_timeout: Duration::from_secs(60),
            parallel_backups: 4,
            socket_dir: "/var/lib/libvirt/qemu".into(),
            cancel_grace: Duration::from_secs(60),
            backup_roots: vec![DEFAULT_BACKUP_ROOT.into()],
            scratch_dir: "/var/lib/vmsnapd/scratch".into(),
            state_dir: "/var/lib/vmsnapd".into(),
            metrics_dir: None,
            metrics_backup_max_age: Duration::from_secs(26 * 3600),
            files_user: "vmsnap-files".into(),
            files_helper: "/usr/libexec/vmsnap-guestfs".into(),
            export_dir: "/run/vmsnapd/exports".into(),
            files_idle_timeout: Duration::from_secs(600),
            extract_max_bytes: DEFAULT_EXTRACT_MAX_BYTES,
        }
    }
}

/// The service's engine; one per process, shared by all calls.
pub struct Engine {
    config: Config,
    versions: VersionCache,
    jobs: jobs::JobRegistry,
    /// The jobs' connection to libvirtd: their reads and every change they make.
    libvirt: host::libvirt::Libvirt,
    /// A second connection for Status and ListBackups, which any caller can make: libvirtd
    /// serves a bounded number of calls per connection at once, and a flood of status calls
    /// on the jobs' connection would make a running backup's calls wait or time out.
    reads: host::libvirt::Libvirt,
    /// Per domain, what an operator alerts on (`health.rs`).
    health: health::HealthBook,
    /// Open file-browsing sessions (`files.rs`).
    files: files::Sessions,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Engine {
            health: health::HealthBook::load(&config.state_dir),
            jobs: jobs::JobRegistry::new(
                config.parallel_backups,
                Some(jobs::journal::JobJournal::new(&config.state_dir)),
            ),
            libvirt: host::libvirt::Libvirt::new(&config.libvirt_uri, config.command_timeout),
            reads: host::libvirt::Libvirt::new(&config.libvirt_uri, config.command_timeout),
            config,
            versions: VersionCache::default(),
            files: files::Sessions::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The job registry, for the bus layer's tests, which create jobs without a host.
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> &jobs::JobRegistry {
        &self.jobs
    }

    /// Stops for good: cancels every unfinished job the safe way and waits until they have
    /// ended (domains started paused are shut off again, libvirt jobs aborted), at most
    /// `limit`. Backups that were running end as `cancelled`, never half-written.
    pub async fn shutdown(&self, limit: Duration) {
        self.stop_jobs(limit).await;
        self.close_all_files().await;
        // The ends just recorded must be on disk, or the next start reports them interrupted.
        self.jobs.flush_journal().await;
    }

    async fn stop_jobs(&self, limit: Duration) {
        let jobs = self.jobs.unfinished();
        if jobs.is_empty() {
            return;
        }
        tracing::info!(jobs = jobs.len(), "cancelling running jobs before stopping");
        for job in &jobs {
            job.cancel();
        }
        let deadline = tokio::time::Instant::now() + limit;
        // Every kind is waited for: backups, verifies and restores stop at their cancel points;
        // scrub and prune run within their call and end on their own.
        while jobs.iter().any(|j| !j.state().is_final()) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("jobs still running at the stop deadline");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves a selection against the domains `libvirt` lists (the jobs' connection, or
    /// `reads` for calls any caller can make): every name must exist, every pattern match;
    /// otherwise `NoSuchDomain` names all that did not.
    pub(crate) async fn resolve_domains(
        &self,
        libvirt: &host::libvirt::Libvirt,
        selectors: &[crate::selection::Selector],
    ) -> Result<Vec<crate::selection::DomainName>, Error> {
        let existing = libvirt.list_all().await?;
        match crate::selection::resolve(selectors, &existing) {
            crate::selection::Resolved::Domains(d) => Ok(d),
            crate::selection::Resolved::NotFound(missing) => Err(Error::NoSuchDomain(missing)),
        }
    }

    /// The installed virtnbdbackup's version, `None` when it is missing or unreadable.
    pub async fn virtnbdbackup_version(&self) -> Option<host::tools::ToolVersion> {
        match self.versions.virtnbdbackup().await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "virtnbdbackup version unknown");
                None
            }
        }
    }
}
