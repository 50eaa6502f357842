//! `org.vmsnap.VMSnap1.Files`: one open file-browsing session on the bus.
//!
//! Thin: every method checks that the caller is the session's opener (the same connection,
//! so the same uid; any other caller, root's other connections included, gets "no such
//! session", not a hint that one exists), then asks the engine.
//! The object goes away with its session, however the session ends (`watch`), and sessions
//! end when their opener leaves the bus (`watch_clients`) or stays idle (`reap_idle`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use vmsnap_dbus::actions;
use vmsnap_dbus::files::{FileEntry, Volume};
use vmsnap_dbus::names::FILES_PATH_PREFIX;
use vmsnap_dbus::options::{self as keys, ExtractOptions};
use zbus::message::Header;
use zbus::{interface, Connection};
use zvariant::OwnedObjectPath;

use super::authority::Authority;
use super::bounded::{Options, Strings};
use super::caller::caller_uid;
use super::details::Details;
use super::error::CallError;
use super::shelf::JobShelf;
use super::start::JobStarter;
use super::{convert, options};
use crate::engine::extract::ExtractRequest;
use crate::engine::extract::MAX_PATHS;
use crate::engine::files::Session;
use crate::engine::Engine;

pub struct Files {
    engine: Arc<Engine>,
    authority: Arc<Authority>,
    shelf: Arc<JobShelf>,
    session: Arc<Session>,
}

pub fn path_of(id: u64) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{FILES_PATH_PREFIX}/{id}")).expect("a valid object path")
}

/// Exports `session` and removes the object when the session ends.
pub async fn export(
    connection: &Connection,
    engine: Arc<Engine>,
    authority: Arc<Authority>,
    shelf: Arc<JobShelf>,
    session: Arc<Session>,
) -> zbus::Result<OwnedObjectPath> {
    let path = path_of(session.id);
    let object = Files {
        engine,
        authority,
        shelf,
        session: session.clone(),
    };
    connection.object_server().at(&path, object).await?;
    let server = connection.object_server().clone();
    let removed = path.clone();
    tokio::spawn(async move {
        session.ended().await;
        let _ = server.remove::<Files, _>(&removed).await;
    });
    Ok(path)
}

/// Ends the sessions of every connection that leaves the bus.
pub async fn watch_clients(connection: Connection, engine: Arc<Engine>) {
    let Ok(bus) = zbus::fdo::DBusProxy::new(&connection).await else {
        tracing::warn!("cannot watch clients leaving the bus; idle sessions still end");
        return;
    };
    let Ok(mut changes) = bus.receive_name_owner_changed().await else {
        tracing::warn!("cannot watch clients leaving the bus; idle sessions still end");
        return;
    };
    while let Some(change) = changes.next().await {
        let Ok(args) = change.args() else { continue };
        if args.new_owner().is_none() && args.name().starts_with(':') {
            // Closed in a task of its own: this stream is drained at once whatever a close
            // waits for (zbus stops reading the socket while a stream's queue is full).
            let name = args.name().to_string();
            let engine = engine.clone();
            tokio::spawn(async move {
                for id in engine.close_files_of(&name).await {
                    tracing::info!(session = id, client = %name, "file session's client left the bus");
                }
            });
        }
    }
}

/// Ends idle sessions, checking every few seconds.
pub async fn reap_idle(engine: Arc<Engine>) {
    let every = (engine.config().files_idle_timeout / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        engine.close_idle_files().await;
    }
}

/// The caller's unique name on the bus: a session belongs to one connection.
fn sender(header: &Header<'_>) -> String {
    header.sender().map(|s| s.to_string()).unwrap_or_default()
}

impl Files {
    /// The session, for its opener only.
    async fn mine(
        &self,
        connection: &Connection,
        header: &Header<'_>,
    ) -> Result<Arc<Session>, CallError> {
        let uid = caller_uid(connection, header).await;
        self.engine
            .files_session(self.session.id, uid, &sender(header))
            .map_err(|e| convert::error(e).into())
    }
}

#[interface(name = "org.vmsnap.VMSnap1.Files")]
impl Files {
    /// The disk's partitions (MBR or GPT), or the whole disk when it has no partition table,
    /// each with the file system found there and whether it can be read (ext2/3/4, vfat).
    #[zbus(out_args("volumes"))]
    async fn volumes(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<Volume>, CallError> {
        let session = self.mine(connection, &header).await?;
        let volumes = session.volumes().await.map_err(convert::error)?;
        Ok(volumes.into_iter().map(convert::volume).collect())
    }

    /// The entries of a directory of a volume: name, kind, size, mode, mtime and a symlink's
    /// target (never followed; a path through a symlink is refused). `truncated` when the
    /// directory holds more than 100000 entries. Errors: NoSuchFile, UnsupportedFilesystem
    /// ("xfs: not supported"), Encrypted, CorruptFilesystem (the session is closed),
    /// InvalidArgument.
    #[zbus(out_args("entries", "truncated"))]
    async fn list(
        &self,
        volume: u32,
        path: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(Vec<FileEntry>, bool), CallError> {
        let session = self.mine(connection, &header).await?;
        let (entries, truncated) = session.list(volume, &path).await.map_err(convert::error)?;
        Ok((
            entries.into_iter().map(convert::file_entry).collect(),
            truncated,
        ))
    }

    /// Copies files and directories of a volume into the directory `target` as a job (with
    /// Progress and Cancel). Only regular files and directories are created, owned by the
    /// caller, without setuid/setgid/sticky bits or write bits for others, holes kept; links,
    /// devices, FIFOs and sockets are listed in the job's checks, not recreated. The target is
    /// made where missing by the service, never through a link, and never is or lies in a
    /// backup chain. Needs org.vmsnap.restore; callers other than root extract below the backup
    /// roots. Options: overwrite (b). Errors: TargetExists, NoSuchFile, NotWritable, Untrusted,
    /// InvalidArgument (a chain folder as target); the job fails with NoSpace's message when
    /// the files would not fit.
    #[zbus(out_args("job"))]
    async fn extract(
        &self,
        volume: u32,
        paths: Strings,
        target: String,
        options: Options,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath, CallError> {
        let paths = paths.into_vec(MAX_PATHS, "paths")?;
        let options = options.into_map()?;
        let options = ExtractOptions::from_dict(options)?;
        let domains = [self.session.domain.to_string()];
        let details = Details::new("extract", &domains)
            .with(keys::FOLDER, &self.session.folder.display().to_string())
            .with(keys::POINT, &self.session.point)
            .with(keys::TARGET, &target);
        let client = sender(&header);
        let start = |uid| async move {
            let session = self.engine.files_session(self.session.id, uid, &client)?;
            let request = ExtractRequest {
                session,
                volume,
                paths,
                target: options::extract_target(&target)?,
                overwrite: options.overwrite.unwrap_or(false),
            };
            Ok(self.engine.prepare_extract(request, uid).await?)
        };
        let starter = JobStarter {
            engine: &self.engine,
            authority: &self.authority,
            shelf: &self.shelf,
        };
        let asks = [(actions::RESTORE, &details)];
        let path = starter.start(connection, &header, &asks, start).await?;
        tracing::debug!(session = self.session.id, job = %path.as_str(), "extract answered");
        Ok(path)
    }

    /// Serves the session's point read-only over NBD on a unix socket and returns its URI,
    /// `nbd+unix:///?socket=…`, for qemu-img, nbdfuse, guestfish or QEMU: the whole disk as it
    /// was at the point, read in place, each connection by a sandboxed reader of its own;
    /// writes are refused. The socket is the caller's alone (its directory is mode 0700 and
    /// theirs) and lives as long as the session, which an export keeps from its idle timeout.
    /// Asked again, the same URI. Needs org.vmsnap.restore (the whole disk is every file in
    /// it). Errors: MissingDependency (the reader's user), Failed.
    #[zbus(out_args("uri"))]
    async fn export(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<String, CallError> {
        let domains = [self.session.domain.to_string()];
        let details = Details::new("export", &domains)
            .with(keys::FOLDER, &self.session.folder.display().to_string())
            .with(keys::POINT, &self.session.point)
            .with(keys::DISK, &self.session.disk);
        let caller = self
            .authority
            .check(connection, &header, actions::RESTORE, &details)
            .await?;
        let session = self
            .engine
            .files_session(self.session.id, caller.uid, &sender(&header))
            .map_err(convert::error)?;
        let uri = self
            .engine
            .export_files(&session, caller.uid)
            .map_err(convert::error)?;
        tracing::debug!(session = session.id, "export answered");
        Ok(uri)
    }

    /// Ends the session: its reader and its export stop.
    async fn close(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<(), CallError> {
        let session = self.mine(connection, &header).await?;
        self.engine.close_files(session.id).await;
        tracing::debug!(session = session.id, "close answered");
        Ok(())
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn domain(&self) -> String {
        self.session.domain.to_string()
    }

    /// The chain folder's path: to the session's own connection and root; empty for anyone
    /// else and in GetManagedObjects (the folder may lie where they may not look).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn folder(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> String {
        let Some(header) = header else {
            return String::new();
        };
        let uid = caller_uid(connection, &header).await;
        if uid == 0 || (uid == self.session.uid && sender(&header) == self.session.client) {
            self.session.folder.display().to_string()
        } else {
            String::new()
        }
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn point(&self) -> String {
        self.session.point.clone()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn disk(&self) -> String {
        self.session.disk.clone()
    }

    /// Seconds without a call after which the service closes the session.
    #[zbus(property(emits_changed_signal = "const"))]
    fn idle_timeout(&self) -> u32 {
        self.engine.config().files_idle_timeout.as_secs() as u32
    }
}
