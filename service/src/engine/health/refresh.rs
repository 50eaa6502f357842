//! Keeping the backup health facts current and publishing them: after every job that ends,
//! at start, and every few minutes (so that the status verdicts stay fresh and the metrics'
//! write time tells a watcher the service is alive).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::DomainFacts;
use crate::engine::status::StatusRequest;
use crate::engine::Engine;
use crate::host::backup_dir::{self, Detail};

/// How often the facts are refreshed without a job ending.
const PERIOD: Duration = Duration::from_secs(300);

/// The metrics file's name in the textfile directory.
pub const METRICS_FILE: &str = "vmsnap.prom";

impl Engine {
    /// Runs for the life of the service.
    pub async fn keep_health(self: Arc<Self>) {
        let mut ended = self.jobs.ended();
        loop {
            self.refresh_health().await;
            tokio::select! {
                _ = ended.changed() => {}
                _ = tokio::time::sleep(PERIOD) => {}
            }
        }
    }

    /// The facts as they are now, for `Manager.BackupHealth`.
    pub fn health(&self) -> BTreeMap<String, DomainFacts> {
        self.health.snapshot()
    }

    async fn refresh_health(&self) {
        let changed = self.health.count_finished(&self.jobs.finished());
        let facts = self.health.snapshot();
        let folders: Vec<(String, String)> = facts
            .iter()
            .filter_map(|(d, f)| f.chain_folder.clone().map(|p| (d.clone(), p)))
            .collect();
        // Directory walks on a blocking thread, like every other chain read.
        let chains = tokio::task::spawn_blocking(move || {
            folders
                .into_iter()
                .filter_map(|(domain, folder)| {
                    let chain = backup_dir::scan(Path::new(&folder), Detail::Names).ok()?;
                    let facts = (chain.checkpoints.len() as u64, chain.total_size);
                    chain.exists.then_some((domain, facts))
                })
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        // One listing of libvirt's domains serves both: whose verdicts to ask, which facts to drop.
        let (verdicts, forgotten) = match self.reads.list_all().await {
            Ok(existing) => {
                let present: Vec<String> = facts
                    .keys()
                    .filter(|n| existing.contains(n))
                    .cloned()
                    .collect();
                (
                    self.verdicts(present).await,
                    self.health.forget_all_but(&existing),
                )
            }
            Err(_) => (BTreeMap::new(), false),
        };
        self.health.set_observed(&chains, &verdicts);
        if changed || forgotten {
            if let Err(e) = self.health.save() {
                tracing::warn!(error = %e, "cannot keep the backup health facts");
            }
        }
        if let Some(dir) = self.config.metrics_dir.clone() {
            let text = super::metrics::render(
                &self.health.snapshot(),
                &super::metrics::Context {
                    version: env!("CARGO_PKG_VERSION"),
                    now: crate::engine::jobs::now(),
                    max_backup_age: self.config.metrics_backup_max_age.as_secs(),
                },
            );
            let written = tokio::task::spawn_blocking(move || {
                crate::host::textfile::replace(&dir, METRICS_FILE, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", dir.display()))
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the metrics"),
                Err(e) => tracing::warn!(error = %e, "cannot write the metrics"),
            }
        }
    }

    /// Status's verdict for each of `present` (domains libvirt has).
    async fn verdicts(&self, present: Vec<String>) -> BTreeMap<String, bool> {
        let Ok(selectors) = crate::selection::parse_all(&present) else {
            return BTreeMap::new();
        };
        if selectors.is_empty() {
            return BTreeMap::new();
        }
        let request = StatusRequest {
            selectors,
            backup_root: None,
            group_by: Default::default(),
            deep: false,
        };
        match self.status(&request).await {
            Ok(reports) => reports
                .into_iter()
                .filter(|r| r.query_error.is_none())
                .map(|r| (r.name.to_string(), r.is_ok()))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }
}
