//! `org.vmsnap.VMSnap1.Manager`.
//!
//! Methods take `&self` and keep no lock across an await, so zbus runs each call in its own
//! task and a slow call never holds up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;
use vmsnap_dbus::status::{DomainStatus, PruneResult, ScrubResult};
use vmsnap_dbus::{actions, Error};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};
use zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use super::authority::Authority;
use super::error::CallError;
use super::{convert, options};
use crate::engine::Engine;

pub struct Manager {
    engine: Arc<Engine>,
    authority: Arc<Authority>,
    job_retention: Duration,
    /// Paths of exported jobs, oldest first.
    jobs: Mutex<Vec<OwnedObjectPath>>,
}

impl Manager {
    pub fn new(engine: Arc<Engine>, job_retention: Duration) -> Self {
        Manager {
            engine,
            authority: Arc::default(),
            job_retention,
            jobs: Mutex::new(Vec::new()),
        }
    }

    /// Drops a removed job from [`Manager::list_jobs`].
    pub fn forget_job(&self, path: &OwnedObjectPath) {
        self.jobs.lock().expect("poisoned").retain(|p| p != path);
    }
}

#[interface(name = "org.vmsnap.VMSnap1.Manager")]
impl Manager {
    /// Status of the selected domains. Read-only: allowed to every caller.
    ///
    /// domains: names, "*", or globs with "*" and "?"; empty selects all. A name that does
    /// not exist or a pattern that matches nothing fails with Error.NoSuchDomain naming it.
    /// options: "output" s (absolute backup root; adds backupDirStats), "group_by" s
    /// (month|quarter|bi-annual|year, default month), "connect" s (must equal LibvirtUri).
    /// Unknown keys or wrong types fail with Error.InvalidArgument.
    ///
    /// report: one a{sv} per domain, in selection order, with the keys
    /// name s, state s, checkpoints as, overallStatus u (0 OK, 1 INCONSISTENT),
    /// problems as (why it is not OK), error s (only when the domain could not be queried),
    /// disks aa{sv} (disk s, path s, format s, virtualSize t, actualSize t, bitmaps as,
    /// bitmapDetails aa{sv} (name s, dirtyBytes t, recording b, inconsistent b),
    /// changedSinceCheckpoint t), skippedDisks aa{sv} (disk s, device s, path s, reason s),
    /// backupDirStats a{sv} (path s, exists b, totalFiles t, totalSize t, checkpoints t,
    /// checkpointNames as). Keys whose value is unknown are absent.
    #[zbus(out_args("report"))]
    async fn status(
        &self,
        domains: Vec<String>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<DomainStatus>, Error> {
        let uid = caller_uid(connection, &header).await;
        let request = options::status_request(&domains, options, self.engine.config())?;
        let span = tracing::info_span!("Status", uid, domains = domains.len());
        let result = self.engine.status(&request).instrument(span).await;
        match result {
            Ok(reports) => {
                tracing::debug!(uid, domains = reports.len(), "status answered");
                Ok(reports.into_iter().map(convert::domain_status).collect())
            }
            Err(e) => {
                tracing::info!(uid, error = %e, "status failed");
                Err(convert::error(e))
            }
        }
    }

    /// Starts a backup of the selected domains and returns its job at once.
    ///
    /// options: "output" s (required: absolute backup root), "group_by" s
    /// (month|quarter|bi-annual|year, default month), "raw" b (also back up raw disks, in full
    /// backups only), "prune" b (after a domain's successful backup, prune it as Prune does;
    /// needs org.vmsnap.prune too), "keep" u (with prune), "connect" s.
    /// Each domain is written to <output>/<domain>/vmsnap-backup-<period>[.<n>]: a full backup
    /// starts a chain there, later backups of the period are incremental; a broken chain
    /// restarts in a new folder. Errors: NoSuchDomain, InvalidArgument, AlreadyRunning (a job
    /// for one of the domains is running), MissingDependency, HostUnavailable.
    #[zbus(out_args("job"))]
    async fn backup(
        &self,
        domains: Vec<String>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, CallError> {
        let caller = self
            .authority
            .check(connection, &header, actions::BACKUP, &[])
            .await?;
        if options::wants_prune(&options) {
            self.authority
                .check(connection, &header, actions::PRUNE, &[])
                .await?;
        }
        let uid = caller.uid;
        let request = options::backup_request(&domains, options, self.engine.config())?;
        let prepared = self
            .engine
            .prepare_backup(request, uid)
            .await
            .map_err(convert::error)?;
        let job = prepared.job.clone();
        let path = super::job::export(
            connection,
            job.clone(),
            self.authority.clone(),
            self.job_retention,
        )
        .await
        .map_err(CallError::from)?;
        self.jobs.lock().expect("poisoned").push(path.clone());
        let names: Vec<String> = job.domains.iter().map(|d| d.to_string()).collect();
        tracing::info!(uid, job = job.id, domains = ?names, "backup job created");
        Manager::job_new(&emitter, path.as_ref(), "backup", names).await?;
        self.engine.spawn_backup(prepared);
        Ok(path)
    }

    /// Removes VMSnap checkpoints and bitmaps (only `virtnbdbackup.N` names) and returns what
    /// was removed. Needs org.vmsnap.scrub (administrator, every time).
    ///
    /// options: "type" s (checkpoint|bitmap|both|all, required), "checkpoint" s (a name or a
    /// glob; ignored by all), "dry_run" b (report only), "connect" s.
    /// report: per domain a{sv}: domain s, checkpoints as, bitmaps as ("disk:name"),
    /// problems as, dryRun b.
    #[zbus(out_args("report"))]
    async fn scrub(
        &self,
        domains: Vec<String>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<ScrubResult>, CallError> {
        let caller = self
            .authority
            .check(connection, &header, actions::SCRUB, &[])
            .await?;
        let request = options::scrub_request(&domains, options, self.engine.config())?;
        let reports = self
            .engine
            .scrub(&request, caller.uid)
            .await
            .map_err(convert::error)?;
        Ok(reports
            .into_iter()
            .map(|r| ScrubResult {
                domain: r.domain,
                checkpoints: r.checkpoints,
                bitmaps: r.bitmaps,
                problems: r.problems,
                dry_run: request.dry_run,
            })
            .collect())
    }

    /// Deletes old period folders of the selected domains under "output" and returns them.
    /// Needs org.vmsnap.prune (administrator, every time).
    ///
    /// From the middle of the current period on (15 days into a month, 45 into a quarter, 90
    /// into a half, 180 into a year) only the current period remains; before it, the previous
    /// period too. "keep" u more past periods survive. Only directories named
    /// vmsnap-backup-<grouping>-<period>[.n] directly inside <output>/<domain>/ are deleted.
    /// options: "output" s (required), "group_by" s, "keep" u, "dry_run" b, "connect" s.
    /// report: per domain a{sv}: domain s, deleted as, problems as, dryRun b.
    #[zbus(out_args("report"))]
    async fn prune(
        &self,
        domains: Vec<String>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<PruneResult>, CallError> {
        let caller = self
            .authority
            .check(connection, &header, actions::PRUNE, &[])
            .await?;
        let request = options::prune_request(&domains, options, self.engine.config())?;
        let reports = self
            .engine
            .prune(&request, caller.uid)
            .await
            .map_err(convert::error)?;
        Ok(reports
            .into_iter()
            .map(|r| PruneResult {
                domain: r.domain,
                deleted: r.deleted,
                problems: r.problems,
                dry_run: request.dry_run,
            })
            .collect())
    }

    /// Paths of the jobs: running ones and those finished within the retention period.
    fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.jobs.lock().expect("poisoned").clone()
    }

    /// A job was created.
    #[zbus(signal)]
    async fn job_new(
        emitter: &SignalEmitter<'_>,
        job: ObjectPath<'_>,
        operation: &str,
        domains: Vec<String>,
    ) -> zbus::Result<()>;

    /// A finished job was removed from the bus; `state` is its final state.
    #[zbus(signal)]
    pub async fn job_removed(
        emitter: &SignalEmitter<'_>,
        job: ObjectPath<'_>,
        state: &str,
    ) -> zbus::Result<()>;

    /// Version of the running service.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// The libvirt URI the service uses.
    #[zbus(property(emits_changed_signal = "const"))]
    fn libvirt_uri(&self) -> String {
        self.engine.config().libvirt_uri.clone()
    }

    /// Version of the installed virtnbdbackup, empty when it is missing. Read on every get
    /// (cached per binary), so an upgrade is seen without a restart.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn virtnbdbackup_version(&self) -> String {
        self.engine
            .virtnbdbackup_version()
            .await
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

/// The caller's uid as the bus daemon vouches for it, for logs (`u32::MAX` if unknown).
pub async fn caller_uid(connection: &Connection, header: &Header<'_>) -> u32 {
    let Some(sender) = header.sender() else {
        return u32::MAX;
    };
    let bus = match zbus::fdo::DBusProxy::new(connection).await {
        Ok(bus) => bus,
        Err(_) => return u32::MAX,
    };
    bus.get_connection_unix_user(sender.clone().into())
        .await
        .unwrap_or(u32::MAX)
}
