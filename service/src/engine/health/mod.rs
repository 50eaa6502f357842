//! Backup health: per domain, the facts an operator alerts on, kept across restarts.
//!
//! Every finished backup or verify job updates them; they are kept in the state directory
//! (`health.json`, replaced atomically) so that a restart does not forget when a domain was
//! last backed up, and offered to clients by `Manager.BackupHealth` and to Prometheus as a
//! textfile (`metrics.rs`).

pub mod metrics;
pub(crate) mod refresh;

use crate::sync::lock;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::jobs::{Job, JobState, Operation};

/// The facts of one domain. Times are seconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainFacts {
    pub last_success: Option<u64>,
    pub last_attempt: Option<u64>,
    pub last_attempt_ok: Option<bool>,
    pub last_duration: Option<u64>,
    pub last_bytes: Option<u64>,
    /// The chain folder the last successful backup went into (absolute path).
    pub chain_folder: Option<String>,
    pub chain_points: Option<u64>,
    pub chain_bytes: Option<u64>,
    pub last_verify: Option<u64>,
    pub last_verify_ok: Option<bool>,
    /// Not kept: Status's verdict, refreshed before every metrics write.
    #[serde(skip)]
    pub status_ok: Option<bool>,
}

/// All domains' facts, and which finished jobs they already include.
pub struct HealthBook {
    file: PathBuf,
    facts: Mutex<BTreeMap<String, DomainFacts>>,
    /// Ids of finished jobs already counted (a job is seen by every refresh while it stays in
    /// the registry).
    counted: Mutex<HashSet<u64>>,
}

impl HealthBook {
    /// The book kept in `state_dir/health.json`; empty when there is none (or it is damaged:
    /// the facts come back with the next jobs).
    pub fn load(state_dir: &Path) -> Self {
        let file = state_dir.join("health.json");
        let facts = std::fs::read(&file)
            .ok()
            .filter(|bytes| bytes.len() < 16 << 20)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        HealthBook {
            file,
            facts: Mutex::new(facts),
            counted: Mutex::new(HashSet::new()),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, DomainFacts> {
        lock(&self.facts).clone()
    }

    /// Takes in the finished jobs not counted yet; returns whether anything changed.
    pub fn count_finished(&self, jobs: &[Arc<Job>]) -> bool {
        let mut changed = false;
        for job in jobs {
            let crate::engine::jobs::JobData {
                state,
                end_time: end,
                domains,
            } = job.snapshot();
            if !state.is_final() || !lock(&self.counted).insert(job.id) {
                continue;
            }
            let mut facts = lock(&self.facts);
            for d in &domains {
                let entry = facts.entry(d.domain.clone()).or_default();
                let ok = d.state == Some(JobState::Succeeded);
                match job.operation {
                    Operation::Backup => {
                        entry.last_attempt = Some(end);
                        entry.last_attempt_ok = Some(ok);
                        if ok {
                            entry.last_success = Some(end);
                            entry.last_duration = Some(end.saturating_sub(job.start_time));
                            entry.last_bytes = Some(d.bytes().0);
                            entry.chain_folder = Some(d.folder.clone());
                        }
                    }
                    Operation::Verify => {
                        entry.last_verify = Some(end);
                        entry.last_verify_ok = Some(ok);
                    }
                    _ => continue,
                }
                changed = true;
            }
        }
        // Only ids of jobs still kept can come again.
        lock(&self.counted).retain(|id| jobs.iter().any(|j| j.id == *id));
        changed
    }

    /// Drops the facts of domains libvirt no longer has: a deleted guest must not stay
    /// "overdue" forever. Returns whether any were dropped.
    pub fn forget_all_but(&self, existing: &[String]) -> bool {
        let mut facts = lock(&self.facts);
        let before = facts.len();
        facts.retain(|domain, _| existing.contains(domain));
        facts.len() != before
    }

    /// Sets what is read from the host before each write: the chains' sizes and the verdicts.
    pub fn set_observed(
        &self,
        chains: &BTreeMap<String, (u64, u64)>,
        verdicts: &BTreeMap<String, bool>,
    ) {
        let mut facts = lock(&self.facts);
        for (domain, entry) in facts.iter_mut() {
            if let Some((points, bytes)) = chains.get(domain) {
                entry.chain_points = Some(*points);
                entry.chain_bytes = Some(*bytes);
            }
            entry.status_ok = verdicts.get(domain).copied();
        }
    }

    /// Writes the facts to the state directory (temporary file, fsync, rename).
    pub fn save(&self) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(&*lock(&self.facts)).map_err(std::io::Error::other)?;
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        crate::host::textfile::replace(dir, "health.json", &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jobs::JobRegistry;
    use crate::selection::DomainName;

    #[test]
    fn backups_and_verifies_become_facts_once_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("vmsnap-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let book = HealthBook::load(&dir);
        let reg = JobRegistry::new(2, None);
        let names = |n: &[&str]| -> Vec<DomainName> {
            n.iter().map(|s| DomainName::new(s).unwrap()).collect()
        };
        let ok = reg.create(Operation::Backup, names(&["web1"]), 0).unwrap();
        ok.update(0, |d| {
            d.state = Some(JobState::Succeeded);
            d.folder = "/b/web1/vmsnap-backup-monthly-2026-12".into();
            d.disks = vec![("vda".into(), 300, 300)];
        });
        ok.set_state(JobState::Succeeded);
        let failed = reg.create(Operation::Backup, names(&["db1"]), 0).unwrap();
        failed.update(0, |d| d.state = Some(JobState::Failed));
        failed.set_state(JobState::Failed);
        let running = reg.create(Operation::Verify, names(&["web1"]), 0).unwrap();
        let jobs = vec![ok.clone(), failed.clone(), running.clone()];
        assert!(book.count_finished(&jobs));
        assert!(!book.count_finished(&jobs), "a job is counted once");
        let facts = book.snapshot();
        assert_eq!(facts["web1"].last_attempt_ok, Some(true));
        assert_eq!(facts["web1"].last_bytes, Some(300));
        assert_eq!(
            facts["web1"].last_verify, None,
            "the verify is still running"
        );
        assert_eq!(facts["db1"].last_attempt_ok, Some(false));
        assert_eq!(facts["db1"].last_success, None);

        running.update(0, |d| d.state = Some(JobState::Failed));
        running.set_state(JobState::Failed);
        assert!(book.count_finished(&jobs));
        book.save().unwrap();
        let again = HealthBook::load(&dir).snapshot();
        assert_eq!(again["web1"].last_verify_ok, Some(false));
        assert_eq!(again["web1"].last_success, facts["web1"].last_success);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
