//! The jobs on the bus: exported when created, listed by `ListJobs`, and evicted beyond a cap.
//!
//! Its own object, shared by the Manager and the file sessions (whose `Extract` makes jobs
//! too), so that neither reaches into the other's D-Bus interface to announce a job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::Connection;
use zvariant::OwnedObjectPath;

use super::authority::Authority;
use super::error::CallError;
use super::job::Exported;
use crate::engine::jobs::Job;

/// Finished jobs kept on the bus at most (the newest), whatever the retention period.
pub const MAX_FINISHED_JOBS: usize = 64;

pub struct JobShelf {
    authority: Arc<Authority>,
    retention: Duration,
    /// Exported jobs, oldest first.
    jobs: Mutex<Vec<Exported>>,
}

impl JobShelf {
    pub fn new(authority: Arc<Authority>, retention: Duration) -> Self {
        JobShelf {
            authority,
            retention,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// Exports a new job (ObjectManager announces it with `InterfacesAdded`) and lists it;
    /// the caller then starts it.
    pub async fn announce(
        &self,
        connection: &Connection,
        job: &Arc<Job>,
    ) -> Result<OwnedObjectPath, CallError> {
        let exported = super::job::export(
            connection,
            job.clone(),
            self.authority.clone(),
            self.retention,
        )
        .await
        .map_err(CallError::from)?;
        let path = exported.path.clone();
        self.keep(exported);
        let names: Vec<String> = job.domains.iter().map(|d| d.to_string()).collect();
        tracing::info!(uid = job.uid, job = job.id, operation = job.operation.as_str(), domains = ?names, "job created");
        Ok(path)
    }

    /// Lists a job a previous instance left unfinished (already failed): exported for the
    /// retention period like any finished job.
    pub async fn adopt(&self, connection: &Connection, job: Arc<Job>) -> zbus::Result<()> {
        let exported =
            super::job::export(connection, job, self.authority.clone(), self.retention).await?;
        self.keep(exported);
        Ok(())
    }

    /// The paths of the jobs still on the bus.
    pub fn paths(&self) -> Vec<OwnedObjectPath> {
        crate::sync::lock(&self.jobs)
            .iter()
            .filter(|j| !j.is_removed())
            .map(|j| j.path.clone())
            .collect()
    }

    /// Lists an exported job; beyond [`MAX_FINISHED_JOBS`] finished ones, the oldest finished
    /// go before their retention period is over, so a loop of failing jobs cannot grow the
    /// service without bound.
    fn keep(&self, exported: Exported) {
        let mut jobs = crate::sync::lock(&self.jobs);
        jobs.retain(|j| !j.is_removed());
        // Room for the new job once it has finished too.
        let finished = jobs.iter().filter(|j| j.job.state().is_final()).count();
        let mut excess = (finished + 1).saturating_sub(MAX_FINISHED_JOBS);
        jobs.retain(|j| {
            if excess > 0 && j.job.state().is_final() {
                excess -= 1;
                // Unlisted at once; the object goes (with InterfacesRemoved) as soon as its task runs.
                j.evict.notify_one();
                false
            } else {
                true
            }
        });
        jobs.push(exported);
    }
}
