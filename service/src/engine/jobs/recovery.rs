//! What the service must undo if it dies in the middle of a backup.
//!
//! A shut-off domain is started paused for its backup. If the service is killed before it can
//! shut the domain off again, nothing in memory remembers that: so the fact is written to the
//! state directory before the domain starts and removed after it is shut off. On the next start
//! the service shuts off every domain it finds recorded that is still paused, aborts libvirt's
//! backup job on it, and forgets the record.
//!
//! Jobs themselves are in the [`super::journal`]: a backup recorded as still running when the
//! previous instance died is reported as failed, and libvirt's backup job on each of its
//! domains (left behind when virtnbdbackup died with the service) is aborted, so the next
//! backup can start, and the chain folders they were writing are rolled back
//! ([`super::rollback`]).

use std::path::{Path, PathBuf};

use std::sync::Arc;

use tracing::Instrument;

use super::Job;
use crate::engine::Engine;
use crate::host::libvirt::DomainState;

/// The records of domains started paused: one file per domain, named by its hex-encoded name
/// (domain names may hold any character but `/`).
pub struct PausedRecords {
    dir: PathBuf,
}

impl PausedRecords {
    pub fn new(state_dir: &Path) -> Self {
        PausedRecords {
            dir: state_dir.join("started-paused"),
        }
    }

    fn file(&self, domain: &str) -> PathBuf {
        let hex: String = domain.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(hex)
    }

    /// Records `domain` before it is started; an error means it must not be started.
    pub fn add(&self, domain: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(self.file(domain), domain)
    }

    pub fn remove(&self, domain: &str) {
        let _ = std::fs::remove_file(self.file(domain));
    }

    /// The recorded domain names.
    pub fn list(&self) -> Vec<String> {
        let Ok(Some(dir)) = crate::host::safe_fs::Dir::open_if_exists(&self.dir) else {
            return Vec::new();
        };
        dir.entries()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| dir.read_text(&e.name, 4096).ok())
            .collect()
    }
}

impl Engine {
    /// Undoes what a previous instance left behind (run once at start-up, before serving), and
    /// returns the jobs it left unfinished, now recorded as failed, for the bus to report.
    pub async fn recover(&self) -> Vec<Arc<Job>> {
        self.shut_off_paused().await;
        let interrupted = self.jobs.adopt_interrupted();
        for job in interrupted
            .iter()
            .filter(|j| j.operation == super::Operation::Backup)
        {
            self.abort_backup_jobs(job).await;
        }
        // After the jobs are known to be dead: their folders go back to their state before,
        // and the checkpoints they began go, as after a failed run. (Where libvirt cannot
        // delete the bitmaps of a domain shut off again above, its checkpoint stays, and the
        // next backup starts a new chain.)
        let pending = super::rollback::FolderBefore::roll_back_pending(&self.config.state_dir);
        for before in pending {
            let span = tracing::info_span!("recovery", domain = %before.domain);
            super::undo::delete_unfinished_checkpoints(
                &self.libvirt,
                &before.domain,
                &before.names,
            )
            .instrument(span)
            .await;
        }
        interrupted
    }

    /// Aborts libvirt's backup job on the domains of an interrupted backup. Only a job libvirt
    /// reports as a backup is aborted: a migration someone else started is left alone.
    async fn abort_backup_jobs(&self, job: &Job) {
        for domain in &job.domains {
            match self.libvirt.abort_backup_job(domain.as_str()).await {
                Ok(true) => {
                    tracing::warn!(domain = %domain, job = job.id, "aborted the backup job an interrupted vmsnapd left running");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(domain = %domain, error = %e, "could not abort its backup job")
                }
            }
        }
    }

    async fn shut_off_paused(&self) {
        let records = PausedRecords::new(&self.config.state_dir);
        let names = records.list();
        if names.is_empty() {
            return;
        }
        for name in names {
            match self.libvirt.state(&name).await {
                Ok(DomainState::Paused) => {
                    tracing::warn!(domain = %name, "a previous vmsnapd left it paused: shutting it off");
                    if let Err(e) = self.libvirt.abort_job(&name).await {
                        tracing::warn!(domain = %name, error = %e, "could not abort its backup job");
                    }
                    if let Err(e) = self.libvirt.destroy(&name).await {
                        tracing::error!(domain = %name, error = %e, "could not shut it off");
                        continue;
                    }
                }
                Ok(state) => {
                    tracing::info!(domain = %name, state = state.as_str(), "recorded as started paused, but no longer paused: left alone");
                }
                Err(e) => tracing::info!(domain = %name, error = %e, "recorded domain not found"),
            }
            records.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_in_files_and_any_name_fits() {
        let dir = std::env::temp_dir().join(format!("vmsnap-recovery-{}", std::process::id()));
        let records = PausedRecords::new(&dir);
        records.add("vm;x $(y) ü").unwrap();
        records.add("vm2").unwrap();
        let mut names = PausedRecords::new(&dir).list();
        names.sort();
        assert_eq!(names, ["vm2", "vm;x $(y) ü"]);
        records.remove("vm2");
        assert_eq!(records.list(), ["vm;x $(y) ü"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
