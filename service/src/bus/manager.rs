//! `org.vmsnap.VMSnap1.Manager`.
//!
//! Methods take `&self` and keep no lock across an await, so zbus runs each call in its own
//! task and a slow call never holds up another.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;
use vmsnap_dbus::actions;
use vmsnap_dbus::options::{
    BackupOptions, ListOptions, PruneOptions, RestoreOptions, ScrubOptions, StatusOptions,
    VerifyOptions,
};
use vmsnap_dbus::status::{BackupChain, DomainHealth, DomainStatus, PruneResult, ScrubResult};
use zbus::message::Header;
use zbus::{interface, Connection};
use zvariant::OwnedObjectPath;

use super::authority::Authority;
use super::bounded::{Options, Strings};
use super::caller::caller_uid;
use super::details::Details;
use super::error::CallError;
use super::limits::ReadLimits;
use super::shelf::JobShelf;
use super::start::JobStarter;
use super::{convert, options};
use crate::engine::Engine;
use crate::selection::MAX_ITEMS;
use vmsnap_dbus::options as keys;

/// The backup folders a read-only call is about to read.
struct Reading<'a> {
    root: &'a std::path::Path,
    selectors: &'a [crate::selection::Selector],
    /// Each chain folder too (ListBackups), not only the domains' folders (Status).
    chains: bool,
}

pub struct Manager {
    engine: Arc<Engine>,
    authority: Arc<Authority>,
    /// The jobs on the bus (shared with the file sessions, which make jobs too).
    shelf: Arc<JobShelf>,
    /// Fair share of Status and ListBackups.
    reads: ReadLimits,
}

impl Manager {
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    pub fn new(engine: Arc<Engine>, job_retention: Duration) -> Self {
        let authority: Arc<Authority> = Arc::default();
        Manager {
            engine,
            shelf: Arc::new(JobShelf::new(authority.clone(), job_retention)),
            authority,
            reads: ReadLimits::default(),
        }
    }

    /// Starts the jobs this interface's methods ask for.
    fn starter(&self) -> JobStarter<'_> {
        JobStarter {
            engine: &self.engine,
            authority: &self.authority,
            shelf: &self.shelf,
        }
    }

    /// For a caller other than root reading backup folders under `root`: those it could not
    /// list itself need `org.vmsnap.read` (asked with the folders as details).
    async fn authorize_reading(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        uid: u32,
        reading: Reading<'_>,
        details: Details,
    ) -> Result<(), CallError> {
        let hidden = self
            .engine
            .unlistable(uid, reading.root, reading.selectors, reading.chains)
            .await
            .map_err(convert::error)?;
        if hidden.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = hidden.iter().map(|p| p.display().to_string()).collect();
        let details = details.with("folders", &names.join(", "));
        match self
            .authority
            .check(connection, header, actions::READ, &details)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Standard(zbus::fdo::Error::AccessDenied(why))) => {
                Err(CallError::access_denied(format!(
                    "{why}: uid {uid} cannot list {} itself",
                    names.join(", ")
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Lists a job a previous instance left unfinished (already failed).
    pub async fn adopt(
        &self,
        connection: &Connection,
        job: Arc<crate::engine::jobs::Job>,
    ) -> zbus::Result<()> {
        self.shelf.adopt(connection, job).await
    }
}

#[interface(name = "org.vmsnap.VMSnap1.Manager")]
impl Manager {
    /// Status of the selected domains. Read-only: allowed to every caller; with "output", a
    /// caller other than root needs org.vmsnap.read for folders it could not list itself.
    /// At most 4 calls per caller other than root at once (beyond: Error.Busy).
    ///
    /// domains: names, "*", or globs with "*" and "?"; empty selects all. A name that does
    /// not exist or a pattern that matches nothing fails with Error.NoSuchDomain naming it.
    /// options: "output" s (absolute backup root; adds backupDirStats), "group_by" s
    /// (month|quarter|bi-annual|year, default month), "connect" s (must equal LibvirtUri),
    /// "deep" b (also ask QEMU itself for every bitmap through libvirt's monitor pass-through:
    /// libvirt then marks each running domain "tainted: custom monitor control commands
    /// issued", so it needs org.vmsnap.backup). Unknown keys or wrong types fail with
    /// Error.InvalidArgument.
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
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<DomainStatus>, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = options.into_map()?;
        let uid = caller_uid(connection, &header).await;
        let entered = self.reads.enter(uid)?;
        let options = StatusOptions::from_dict(options)?;
        let details = Details::new("read", &domains).option(keys::OUTPUT, &options.output);
        if options.deep == Some(true) {
            let details = details.as_operation("status-deep");
            self.authority
                .check(connection, &header, actions::BACKUP, &details)
                .await?;
        }
        let request = options::status_request(&domains, options, self.engine.config())?;
        if let Some(root) = &request.backup_root {
            let reading = Reading {
                root: root.as_path(),
                selectors: &request.selectors,
                chains: false,
            };
            self.authorize_reading(connection, &header, uid, reading, details)
                .await?;
        }
        // Authorized: only now a worker.
        let _admitted = entered.work().await?;
        let span = tracing::info_span!("Status", uid, domains = domains.len());
        let result = self.engine.status(&request).instrument(span).await;
        match result {
            Ok(reports) => {
                tracing::debug!(uid, domains = reports.len(), "status answered");
                Ok(reports.into_iter().map(convert::domain_status).collect())
            }
            Err(e) => {
                tracing::info!(uid, error = %e, "status failed");
                Err(convert::error(e).into())
            }
        }
    }

    /// Starts a backup of the selected domains and returns its job at once.
    ///
    /// options: "output" s (required: absolute backup root), "group_by" s
    /// (month|quarter|bi-annual|year, default month), "raw" b (also back up raw disks, in full
    /// backups only), "compress" b (virtnbdbackup's lz4; a chain is compressed or not from
    /// its full on, so asking otherwise than the live chain starts a new chain), "prune" b
    /// (after a domain's successful backup, prune it as Prune does; needs org.vmsnap.prune
    /// too), "keep" u (with prune), "connect" s.
    /// Each domain is written to <output>/<domain>/vmsnap-backup-<period>[.<n>]: a full backup
    /// starts a chain there, later backups of the period are incremental; a broken chain
    /// restarts in a new folder. Errors: NoSuchDomain, InvalidArgument, AlreadyRunning (a job
    /// for one of the domains is running), MissingDependency, HostUnavailable.
    #[zbus(out_args("job"))]
    async fn backup(
        &self,
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = BackupOptions::from_dict(options.into_map()?)?;
        let details = Details::new("backup", &domains).option(keys::OUTPUT, &options.output);
        let pruning = details.clone().as_operation("backup-prune");
        let mut asks = vec![(actions::BACKUP, &details)];
        if options.prune == Some(true) {
            asks.push((actions::PRUNE, &pruning));
        }
        let config = self.engine.config();
        let start = |uid| async move {
            let request = options::backup_request(&domains, options, config)?;
            Ok(self.engine.prepare_backup(request, uid).await?)
        };
        self.starter()
            .start(connection, &header, &asks, start)
            .await
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
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<ScrubResult>, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = options.into_map()?;
        let options = ScrubOptions::from_dict(options)?;
        let details = Details::new("scrub", &domains).option(keys::TYPE, &options.scrub_type);
        let caller = self
            .authority
            .check(connection, &header, actions::SCRUB, &details)
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
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<PruneResult>, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = options.into_map()?;
        let options = PruneOptions::from_dict(options)?;
        let details = Details::new("prune", &domains).option(keys::OUTPUT, &options.output);
        let caller = self
            .authority
            .check(connection, &header, actions::PRUNE, &details)
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

    /// Per domain, what an operator alerts on, as the service remembers it across restarts:
    /// the last backup (when it ended, whether it succeeded, how long it took, bytes), the
    /// chain it went into (folder, points, bytes), the last verify and the status verdict.
    /// The same facts vmsnapd writes for Prometheus. A caller other than root needs
    /// org.vmsnap.read (chain folders and sizes are named).
    ///
    /// domains: names (no patterns); empty: every domain the service has facts for.
    /// report: per domain a{sv}: domain s, lastSuccess t, lastAttempt t, lastAttemptOk b,
    /// lastDuration t, lastBytes t, chainFolder s, chainPoints t, chainBytes t, lastVerify t,
    /// lastVerifyOk b, statusOk b (each absent while unknown; times in seconds since the epoch).
    #[zbus(out_args("report"))]
    async fn backup_health(
        &self,
        domains: Strings,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<DomainHealth>, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let uid = caller_uid(connection, &header).await;
        let entered = self.reads.enter(uid)?;
        if uid != 0 {
            let details = Details::new("read", &domains);
            self.authority
                .check(connection, &header, actions::READ, &details)
                .await?;
        }
        let _admitted = entered.work().await?;
        Ok(self
            .engine
            .health()
            .into_iter()
            .filter(|(domain, _)| domains.is_empty() || domains.contains(domain))
            .map(|(domain, facts)| convert::health(domain, facts))
            .collect())
    }

    /// The backup chains under "output" of the selected domains, read from disk. Read-only; a
    /// caller other than root needs org.vmsnap.read for folders it could not list itself, and
    /// has at most 4 such calls at once (beyond: Error.Busy).
    ///
    /// options: "output" s (required), "connect" s.
    /// report: per chain a{sv}: domain s, folder s, path s, live b (the domain's checkpoints are
    /// this chain's), compressed b (its data is lz4-compressed), bytes t, points aa{sv}
    /// (checkpoint s, level s (full|inc|copy), time t, bytes t, files as).
    #[zbus(out_args("chains"))]
    async fn list_backups(
        &self,
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<BackupChain>, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = options.into_map()?;
        let uid = caller_uid(connection, &header).await;
        let entered = self.reads.enter(uid)?;
        let options = ListOptions::from_dict(options)?;
        let details = Details::new("read", &domains).option(keys::OUTPUT, &options.output);
        let request = options::list_request(&domains, options, self.engine.config())?;
        let root = request.root;
        let reading = Reading {
            root: root.as_path(),
            selectors: &request.selectors,
            chains: true,
        };
        self.authorize_reading(connection, &header, uid, reading, details)
            .await?;
        let _admitted = entered.work().await?;
        let listed = self
            .engine
            .list_backups(&request.selectors, &root)
            .await
            .map_err(convert::error)?;
        Ok(listed.into_iter().map(convert::chain).collect())
    }

    /// Verifies every point of the selected chains and returns the job at once. In one read of
    /// every stored byte: the data files against their recorded checksums, and the structure of
    /// every data file and the index of every point (checked by the sandboxed reader). "deep"
    /// adds a rebuild of each chain's newest point with virtnbdrestore, `qemu-img check`, and a
    /// comparison with the index's reading. The job's Results carry one line per point in
    /// "checks". Needs org.vmsnap.backup.
    ///
    /// options: "output" s (required), "folder" s (one chain; default all), "deep" b,
    /// "connect" s.
    #[zbus(out_args("job"))]
    async fn verify(
        &self,
        domains: Strings,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, CallError> {
        let domains = domains.into_vec(MAX_ITEMS, "domains")?;
        let options = VerifyOptions::from_dict(options.into_map()?)?;
        let details = Details::new("verify", &domains)
            .option(keys::OUTPUT, &options.output)
            .option(keys::FOLDER, &options.folder)
            .with(
                keys::DEEP,
                if options.deep == Some(true) {
                    "true"
                } else {
                    "false"
                },
            );
        let config = self.engine.config();
        let start = |uid| async move {
            let request = options::verify_request(&domains, options, config)?;
            Ok(self.engine.prepare_verify(request, uid).await?)
        };
        let asks = [(actions::VERIFY, &details)];
        self.starter()
            .start(connection, &header, &asks, start)
            .await
    }

    /// Restores a domain's chain up to a point into a target directory and returns the job at
    /// once. Needs org.vmsnap.restore (administrator, every time).
    ///
    /// options: "output" s (required: the backup root), "target" s (required: absolute
    /// directory), "folder" s (default: the live chain, else the newest), "until" s
    /// (checkpoint; default the last), "disk" s (one disk), "overwrite" b (replace files in a
    /// non-empty target), "define_as" s (define a new domain of that name from the backed-up
    /// configuration; needs an empty target). Errors: NoSuchBackup, TargetExists,
    /// InvalidArgument.
    #[zbus(out_args("job"))]
    async fn restore(
        &self,
        domain: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, CallError> {
        // Every restore needs the action (administrator every time by default), define_as
        // included: defining a domain makes libvirt run a program as root.
        let options = RestoreOptions::from_dict(options.into_map()?)?;
        let details = Details::new("restore", std::slice::from_ref(&domain))
            .option(keys::OUTPUT, &options.output)
            .option(keys::FOLDER, &options.folder)
            .option(keys::UNTIL, &options.until)
            .option(keys::TARGET, &options.target)
            .option(keys::DEFINE_AS, &options.define_as);
        let config = self.engine.config();
        let start = |uid| async move {
            let request = options::restore_request(&domain, options, config)?;
            Ok(self.engine.prepare_restore(request, uid).await?)
        };
        let asks = [(actions::RESTORE, &details)];
        self.starter()
            .start(connection, &header, &asks, start)
            .await
    }

    /// Opens one point of one disk of a domain's backup for browsing its files, and returns
    /// the session (org.vmsnap.VMSnap1.Files) once it can be read: an unprivileged, sandboxed
    /// reader indexes the disk's data files up to the point and reads it in place (nothing is
    /// rebuilt or written). Options: output (required), folder, point (default the chain's
    /// last), disk (default the first). Needs org.vmsnap.browse, checked before anything is
    /// read. The session is the caller's alone and ends with Close, after its idle timeout, or
    /// when the caller leaves the bus. Errors: NoSuchBackup (no such chain, point or disk),
    /// CorruptBackup (the data files are damaged), Busy (too many sessions), MissingDependency
    /// (the reader or its user is not installed), Failed.
    #[zbus(out_args("session"))]
    async fn open_files(
        &self,
        domain: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, CallError> {
        let options = options.into_map()?;
        let options = vmsnap_dbus::options::FilesOptions::from_dict(options)?;
        let details = Details::new("browse", std::slice::from_ref(&domain))
            .option(keys::OUTPUT, &options.output)
            .option(keys::FOLDER, &options.folder)
            .option(keys::POINT, &options.point);
        let caller = self
            .authority
            .check(connection, &header, actions::BROWSE, &details)
            .await?;
        let request = options::files_request(&domain, options, self.engine.config())?;
        let client = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let span = tracing::info_span!("OpenFiles", uid = caller.uid, domain = %request.domain);
        let session = self
            .engine
            .open_files(request, caller.uid, client)
            .instrument(span)
            .await
            .map_err(convert::error)?;
        super::files::export(
            connection,
            self.engine.clone(),
            self.authority.clone(),
            self.shelf.clone(),
            session,
        )
        .await
        .map_err(CallError::from)
    }

    /// Paths of the jobs: running ones and those finished within the retention period. Every
    /// caller sees every job's path; what a job shows is decided by the job itself (its
    /// Results are the starter's and root's).
    #[zbus(out_args("jobs"))]
    fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.shelf.paths()
    }

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

    /// Where callers other than root may put backups and restores (root may use any absolute
    /// path); the first is the default a client offers (the Cockpit page does).
    #[zbus(property(emits_changed_signal = "const"))]
    fn backup_roots(&self) -> Vec<String> {
        self.engine
            .config()
            .backup_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect()
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
