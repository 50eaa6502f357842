//! Client proxies for the service's interfaces.
//!
//! Methods return [`crate::Error`], so a client matches on `Error::NoSuchDomain` and friends
//! directly; standard D-Bus errors (AccessDenied, ServiceUnknown, NoReply) arrive as
//! [`crate::Error::ZBus`].

use std::collections::HashMap;

use zbus::proxy;
use zbus::proxy::MethodFlags;
use zvariant::{OwnedObjectPath, Value};

use crate::files::{FileEntry, Volume};
use crate::job::DomainResult;
use crate::options::{
    BackupOptions, ExtractOptions, FilesOptions, PruneOptions, RestoreOptions, ScrubOptions,
    VerifyOptions,
};
use crate::status::{BackupChain, DomainHealth, DomainStatus, PruneResult, ScrubResult};
use crate::Error;

/// `org.vmsnap.VMSnap1.Manager` at `/org/vmsnap/VMSnap1`.
#[proxy(
    interface = "org.vmsnap.VMSnap1.Manager",
    default_service = "org.vmsnap.VMSnap1",
    default_path = "/org/vmsnap/VMSnap1",
    gen_blocking = false
)]
pub trait Manager {
    /// Status of the selected domains (names, `*`, globs with `*` and `?`; empty = all), in the
    /// order selected. Options: [`crate::StatusOptions::to_dict`] (every method's options
    /// are the `to_dict()` of its struct in [`crate::options`]).
    fn status(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<Vec<DomainStatus>, Error>;

    /// Starts a backup of the selected domains and returns its job at once. Options: see
    /// [`BackupOptions`].
    fn backup(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Removes VMSnap checkpoints and bitmaps. Options: type, checkpoint, dry_run.
    fn scrub(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<Vec<ScrubResult>, Error>;

    /// Deletes old period folders. Options: output, group_by, keep, dry_run.
    fn prune(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<Vec<PruneResult>, Error>;

    /// Per domain, the facts an operator alerts on (last backup and its outcome, the live
    /// chain, the last verify, the status verdict); all domains the service has seen when
    /// `domains` is empty.
    fn backup_health(&self, domains: &[&str]) -> Result<Vec<DomainHealth>, Error>;

    /// The backup chains found under `output` for the selected domains.
    fn list_backups(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<Vec<BackupChain>, Error>;

    /// Verifies every point of the selected chains; returns the job.
    fn verify(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Restores a chain up to a point into a target directory; returns the job.
    fn restore(
        &self,
        domain: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Opens a point of a domain's backup for browsing: rebuilds the disk at that point in the
    /// service's scratch area and returns the session (`org.vmsnap.VMSnap1.Files`) once its
    /// volumes can be read. Options: see [`crate::options::FilesOptions`].
    fn open_files(
        &self,
        domain: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Paths of the jobs the service knows: running ones and recently finished ones.
    fn list_jobs(&self) -> Result<Vec<OwnedObjectPath>, Error>;

    /// Version of the running service.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    /// The libvirt URI the service is configured to use.
    #[zbus(property)]
    fn libvirt_uri(&self) -> zbus::Result<String>;

    /// Where callers other than root may put backups and restores; the first is the default.
    #[zbus(property)]
    fn backup_roots(&self) -> zbus::Result<Vec<String>>;

    /// Version of the virtnbdbackup found on the host, empty when it is missing.
    #[zbus(property)]
    fn virtnbdbackup_version(&self) -> zbus::Result<String>;
}

/// `org.vmsnap.VMSnap1.Job` at `/org/vmsnap/VMSnap1/job/<n>`.
#[proxy(
    interface = "org.vmsnap.VMSnap1.Job",
    default_service = "org.vmsnap.VMSnap1",
    gen_blocking = false
)]
pub trait Job {
    /// Stops the job, whatever its kind: running work is interrupted the safe way, queued work
    /// never starts. [`Error::AlreadyCancelled`] when asked before, [`Error::NotCancelable`]
    /// once the job has ended.
    fn cancel(&self) -> Result<(), Error>;

    /// Whether `Cancel` would be taken now.
    #[zbus(property)]
    fn cancelable(&self) -> zbus::Result<bool>;

    /// Throttled progress of one disk: bytes copied so far and bytes to copy.
    #[zbus(signal)]
    fn progress(&self, domain: String, disk: String, done: u64, total: u64) -> zbus::Result<()>;

    /// The job finished; `state` is `succeeded`, `failed` or `cancelled`.
    #[zbus(signal)]
    fn completed(&self, state: String, results: Vec<DomainResult>) -> zbus::Result<()>;

    /// `backup`, `verify` or `restore`.
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn domains(&self) -> zbus::Result<Vec<String>>;

    #[zbus(property, name = "StartedByUID")]
    fn started_by_uid(&self) -> zbus::Result<u32>;

    /// A [`crate::JobState`] word.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn bytes_done(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn bytes_total(&self) -> zbus::Result<u64>;

    /// Per-domain state, level, folder, progress and error.
    #[zbus(property)]
    fn results(&self) -> zbus::Result<Vec<DomainResult>>;

    /// Seconds since the epoch.
    #[zbus(property)]
    fn start_time(&self) -> zbus::Result<u64>;

    /// Seconds since the epoch; 0 while the job runs.
    #[zbus(property)]
    fn end_time(&self) -> zbus::Result<u64>;
}

/// `org.vmsnap.VMSnap1.Files` at `/org/vmsnap/VMSnap1/files/<n>`: one point of one disk,
/// open for its opener alone until `Close`, its idle timeout, or the opener leaving the bus.
#[proxy(
    interface = "org.vmsnap.VMSnap1.Files",
    default_service = "org.vmsnap.VMSnap1",
    gen_blocking = false
)]
pub trait Files {
    /// The disk's partitions (or the whole disk), with the file system found on each.
    fn volumes(&self) -> Result<Vec<Volume>, Error>;

    /// The entries of a directory (`/`-separated path from the volume's root; symlinks in the
    /// path are not followed) and whether the listing was cut at its cap.
    fn list(&self, volume: u32, path: &str) -> Result<(Vec<FileEntry>, bool), Error>;

    /// Copies files and directories out into `target` as a job (needs the restore right).
    /// Options: see [`crate::options::ExtractOptions`].
    fn extract(
        &self,
        volume: u32,
        paths: &[&str],
        target: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> Result<OwnedObjectPath, Error>;

    /// Serves the session's point read-only over NBD on a unix socket (needs the restore
    /// right) and returns its URI, `nbd+unix:///?socket=…`; it lives as long as the session.
    fn export(&self) -> Result<String, Error>;

    /// Ends the session: its reader and its export go at once.
    fn close(&self) -> Result<(), Error>;

    #[zbus(property)]
    fn domain(&self) -> zbus::Result<String>;

    /// The chain folder's path.
    #[zbus(property)]
    fn folder(&self) -> zbus::Result<String>;

    /// The point (`virtnbdbackup.N`).
    #[zbus(property)]
    fn point(&self) -> zbus::Result<String>;

    /// The disk's target name (`vda`).
    #[zbus(property)]
    fn disk(&self) -> zbus::Result<String>;

    /// Seconds of inactivity after which the service closes the session.
    #[zbus(property)]
    fn idle_timeout(&self) -> zbus::Result<u32>;
}

impl FilesProxy<'_> {
    /// [`FilesProxy::extract`], allowing interaction or not.
    pub async fn extract_as(
        &self,
        interaction: Interaction,
        volume: u32,
        paths: &[&str],
        target: &str,
        options: &ExtractOptions,
    ) -> Result<OwnedObjectPath, Error> {
        let flags = match interaction {
            Interaction::Allowed => MethodFlags::AllowInteractiveAuth.into(),
            Interaction::Denied => enumflags2::BitFlags::empty(),
        };
        let reply: Option<OwnedObjectPath> = self
            .inner()
            .call_with_flags(
                "Extract",
                flags,
                &(volume, paths, target, options.to_dict()),
            )
            .await?;
        reply.ok_or_else(|| Error::Failed("Extract returned no reply".into()))
    }
}

/// Whether a call may make polkit ask the user (through an agent) for a password, as
/// `ALLOW_INTERACTIVE_AUTHORIZATION` on the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// An agent is there to ask: polkit may wait for the answer.
    Allowed,
    /// Nobody can answer (a script, `--no-ask-password`): a refusal comes at once.
    Denied,
}

/// The Manager's methods that change something, typed like the proxy's, with the
/// interactive-authorization flag chosen per call: zbus fixes that flag per proxy method,
/// but only the client knows whether an agent is running.
impl ManagerProxy<'_> {
    async fn call_changing<B, R>(
        &self,
        method: &'static str,
        interaction: Interaction,
        body: &B,
    ) -> Result<R, Error>
    where
        B: serde::Serialize + zvariant::DynamicType,
        R: for<'d> zvariant::DynamicDeserialize<'d>,
    {
        let flags = match interaction {
            Interaction::Allowed => MethodFlags::AllowInteractiveAuth.into(),
            Interaction::Denied => enumflags2::BitFlags::empty(),
        };
        let reply: Option<R> = self.inner().call_with_flags(method, flags, body).await?;
        reply.ok_or_else(|| Error::Failed(format!("{method} returned no reply")))
    }

    /// [`ManagerProxy::backup`], allowing interaction or not.
    pub async fn backup_as(
        &self,
        interaction: Interaction,
        domains: &[&str],
        options: &BackupOptions,
    ) -> Result<OwnedObjectPath, Error> {
        self.call_changing("Backup", interaction, &(domains, options.to_dict()))
            .await
    }

    /// [`ManagerProxy::scrub`], allowing interaction or not.
    pub async fn scrub_as(
        &self,
        interaction: Interaction,
        domains: &[&str],
        options: &ScrubOptions,
    ) -> Result<Vec<ScrubResult>, Error> {
        self.call_changing("Scrub", interaction, &(domains, options.to_dict()))
            .await
    }

    /// [`ManagerProxy::prune`], allowing interaction or not.
    pub async fn prune_as(
        &self,
        interaction: Interaction,
        domains: &[&str],
        options: &PruneOptions,
    ) -> Result<Vec<PruneResult>, Error> {
        self.call_changing("Prune", interaction, &(domains, options.to_dict()))
            .await
    }

    /// [`ManagerProxy::verify`], allowing interaction or not.
    pub async fn verify_as(
        &self,
        interaction: Interaction,
        domains: &[&str],
        options: &VerifyOptions,
    ) -> Result<OwnedObjectPath, Error> {
        self.call_changing("Verify", interaction, &(domains, options.to_dict()))
            .await
    }

    /// [`ManagerProxy::open_files`], allowing interaction or not.
    pub async fn open_files_as(
        &self,
        interaction: Interaction,
        domain: &str,
        options: &FilesOptions,
    ) -> Result<OwnedObjectPath, Error> {
        self.call_changing("OpenFiles", interaction, &(domain, options.to_dict()))
            .await
    }

    /// [`ManagerProxy::restore`], allowing interaction or not.
    pub async fn restore_as(
        &self,
        interaction: Interaction,
        domain: &str,
        options: &RestoreOptions,
    ) -> Result<OwnedObjectPath, Error> {
        self.call_changing("Restore", interaction, &(domain, options.to_dict()))
            .await
    }
}
