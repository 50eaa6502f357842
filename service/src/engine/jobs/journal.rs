//! The job journal: a record of every job that outlives the process.
//!
//! Jobs live in memory, so a service that is killed in the middle of a backup would otherwise
//! forget that the backup ever ran, and its caller would never learn that it failed. Each job
//! that starts writes `<state_dir>/jobs/<id>.json` and rewrites it when it ends; the next
//! instance finds the records still marked running, reports those jobs as failed, and undoes
//! what they left on the host (see [`super::recovery`]). The records also keep job numbers from
//! being reused across restarts, so a job path always means one job.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::engine::vocabulary::JobState;
use serde::{Deserialize, Serialize};

/// How many finished records are kept; older ones are deleted at start-up and, while the
/// service runs, each time a job ends.
const KEEP: usize = 200;

/// What is remembered of one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobRecord {
    pub id: u64,
    pub operation: String,
    pub domains: Vec<String>,
    pub uid: u32,
    pub start_time: u64,
    pub end_time: u64,
    pub state: String,
    pub results: Vec<DomainRecord>,
}

/// What is remembered of one domain of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainRecord {
    pub domain: String,
    pub state: String,
    pub level: String,
    pub folder: String,
    pub error: String,
}

impl JobRecord {
    pub fn is_final(&self) -> bool {
        JobState::parse(&self.state).is_some_and(|s| s.is_final())
    }
}

/// The directory of job records.
///
/// Records are written by a thread of their own: each is fsynced, which takes milliseconds
/// to tens of milliseconds on a busy disk, and the job updates that ask for a write happen
/// on the async runtime that also answers every Status call. Only the newest record of a job
/// waits to be written; an older one still queued is simply replaced.
#[derive(Debug, Clone)]
pub struct JobJournal {
    dir: PathBuf,
    /// Ids of the finished records on disk, oldest first: trimmed to [`KEEP`] as jobs end, so
    /// a loop of failing jobs cannot fill the state directory.
    finished: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    queue: Arc<Queue>,
}

/// Records waiting for the writer thread.
#[derive(Debug, Default)]
struct Queue {
    pending: Mutex<Pending>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    records: BTreeMap<u64, JobRecord>,
    writing: bool,
}

impl JobJournal {
    pub fn new(state_dir: &Path) -> Self {
        let journal = JobJournal {
            dir: state_dir.join("jobs"),
            finished: Default::default(),
            queue: Default::default(),
        };
        let writer = journal.clone();
        std::thread::Builder::new()
            .name("job-journal".into())
            .spawn(move || writer.write_queued())
            .expect("cannot start the job journal's thread");
        journal
    }

    /// Queues a record for the writer thread and returns at once.
    pub fn write(&self, record: &JobRecord) {
        let mut pending = lock(&self.queue.pending);
        pending.records.insert(record.id, record.clone());
        self.queue.changed.notify_all();
    }

    /// Waits until every record queued so far is on disk (before the service exits).
    pub fn flush(&self) {
        let mut pending = lock(&self.queue.pending);
        while !pending.records.is_empty() || pending.writing {
            pending = self
                .queue
                .changed
                .wait(pending)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn write_queued(&self) {
        loop {
            let batch = {
                let mut pending = lock(&self.queue.pending);
                while pending.records.is_empty() {
                    pending = self
                        .queue
                        .changed
                        .wait(pending)
                        .unwrap_or_else(|p| p.into_inner());
                }
                pending.writing = true;
                std::mem::take(&mut pending.records)
            };
            for record in batch.values() {
                if let Err(e) = self.write_now(record) {
                    tracing::warn!(job = record.id, error = %e, "cannot write the job record");
                }
            }
            lock(&self.queue.pending).writing = false;
            self.queue.changed.notify_all();
        }
    }

    /// Writes a record atomically (temporary file, fsync, rename), so a crash leaves the old
    /// record or the new one, never half of one.
    fn write_now(&self, record: &JobRecord) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir)?;
        let file = self.dir.join(format!("{}.json", record.id));
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        if record.is_final() {
            let mut finished = lock(&self.finished);
            finished.insert(record.id);
            while finished.len() > KEEP {
                let Some(oldest) = finished.pop_first() else {
                    break;
                };
                let _ = std::fs::remove_file(self.dir.join(format!("{oldest}.json")));
            }
        }
        Ok(())
    }

    /// Every readable record, by job number. Unreadable files are logged and skipped: a
    /// damaged record must not keep the service from starting.
    pub fn load(&self) -> Vec<JobRecord> {
        let Ok(Some(dir)) = crate::host::safe_fs::Dir::open_if_exists(&self.dir) else {
            return Vec::new();
        };
        let mut records: Vec<JobRecord> = dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name.ends_with(".json") && !e.name.starts_with('.'))
            .filter_map(
                |e| match dir.read(&e.name, crate::host::safe_fs::cap::MEDIUM) {
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(r) => Some(r),
                        Err(err) => {
                            tracing::warn!(file = %e.name, error = %err, "unreadable job record");
                            None
                        }
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "unreadable job record");
                        None
                    }
                },
            )
            .collect();
        records.sort_by_key(|r| r.id);
        let mut finished = lock(&self.finished);
        finished.extend(records.iter().filter(|r| r.is_final()).map(|r| r.id));
        records
    }

    /// Deletes all but the newest [`KEEP`] records.
    pub fn trim(&self, records: &[JobRecord]) {
        let excess = records.len().saturating_sub(KEEP);
        let mut finished = lock(&self.finished);
        for r in &records[..excess] {
            finished.remove(&r.id);
            let _ = std::fs::remove_file(self.dir.join(format!("{}.json", r.id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, state: &str) -> JobRecord {
        JobRecord {
            id,
            operation: "backup".into(),
            domains: vec!["vm;$(x)".into()],
            uid: 0,
            start_time: 1,
            end_time: 0,
            state: state.into(),
            results: vec![DomainRecord {
                domain: "vm;$(x)".into(),
                state: "running".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn records_round_trip_replace_and_skip_junk() {
        let dir = std::env::temp_dir().join(format!("vmsnap-journal-{}", std::process::id()));
        let journal = JobJournal::new(&dir);
        journal.write(&record(3, "running"));
        journal.write(&record(12, "running"));
        journal.write(&record(3, "succeeded"));
        journal.flush();
        std::fs::write(dir.join("jobs/99.json"), b"{ not json").unwrap();
        let loaded = journal.load();
        assert_eq!(loaded.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 12]);
        assert!(loaded[0].is_final());
        assert!(!loaded[1].is_final());
        assert_eq!(loaded[1], record(12, "running"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
