//! File browsing: one point of one disk, read in place from its chain's data files by the
//! sandboxed reader, for as long as its opener needs it.
//!
//! Opening a session rebuilds nothing and writes nothing: the reader gets read-only handles
//! of the disk's data files up to the point and indexes them (the index follows the chain's
//! extents, not the disk's size), and reading a file reads about the file. A session still
//! costs a reader process and its memory, so it is bounded in number (per caller and in all),
//! belongs to the caller that opened it (another caller, even root, cannot use it: it would
//! read data it was never authorized for), and ends when its opener closes it, stays idle
//! past the timeout, leaves the bus, or when the service stops. Earlier versions rebuilt the
//! disk in scratch directories `files-*`; what a crash of one left goes at the next start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vmsnap_guestfs::protocol::{Entry, FailureKind, Volume};

use super::access::Use;
use super::chains::catalog::{Chain, Point};
use super::{Engine, Error};
use crate::host::guestfs::{AskError, Reader, Sandbox};
use crate::host::nbd_export::Export;
use crate::host::safe_fs::Dir;
use crate::host::Error as HostError;
use crate::paths::BackupRoot;
use crate::selection::DomainName;

/// Open sessions per caller other than root, and in all.
const PER_CALLER: usize = 2;
const IN_ALL: usize = 8;
/// Scratch directories of earlier versions' sessions start with this.
const SCRATCH_PREFIX: &str = "files-";
/// How long one question to the reader may take (a directory of 100 000 entries included).
const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct FilesRequest {
    pub domain: DomainName,
    pub root: BackupRoot,
    pub folder: Option<String>,
    pub point: Option<String>,
    pub disk: Option<String>,
}

pub struct Session {
    pub id: u64,
    pub uid: u32,
    /// Who opened it, in the bus layer's terms (its unique name); opaque here.
    pub client: String,
    pub domain: DomainName,
    pub folder: PathBuf,
    pub point: String,
    pub disk: String,
    reader: tokio::sync::Mutex<Option<Reader>>,
    /// The data files, for an export's readers.
    files: Vec<std::fs::File>,
    /// The point served over NBD, once asked for.
    export: Mutex<Option<Export>>,
    last_used: Mutex<Instant>,
    /// Raised when the session ends (an opening under way stops).
    ended: watch::Sender<bool>,
    closed: AtomicBool,
}

impl Session {
    /// A session with nothing behind it, for tests of the bus object's shape.
    #[cfg(test)]
    pub fn detached(id: u64, uid: u32, domain: DomainName) -> Session {
        Session {
            id,
            uid,
            client: String::new(),
            domain,
            folder: PathBuf::from("/b/vm1/vmsnap-backup-monthly-2026-12"),
            point: "virtnbdbackup.0".into(),
            disk: "vda".into(),
            reader: tokio::sync::Mutex::new(None),
            files: Vec::new(),
            export: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            ended: watch::channel(false).0,
            closed: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        *crate::sync::lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        crate::sync::lock(&self.last_used).elapsed()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Resolves when the session has ended.
    pub async fn ended(&self) {
        let mut receiver = self.ended.subscribe();
        let _ = receiver.wait_for(|ended| *ended).await;
    }

    /// Stops the reader; once.
    async fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.ended.send_replace(true);
        if let Some(mut reader) = self.reader.lock().await.take() {
            reader.stop().await;
        }
        // Its listener and every connection's reader stop; the socket goes.
        drop(crate::sync::lock(&self.export).take());
        tracing::info!(session = self.id, uid = self.uid, domain = %self.domain, "file session closed");
    }

    /// Asks the reader; a reader that broke ends the session.
    pub(super) async fn ask<T>(
        &self,
        question: impl AsyncFnOnce(&mut Reader) -> Result<T, AskError>,
    ) -> Result<T, Error> {
        self.touch();
        let mut guard = self.reader.lock().await;
        let Some(reader) = guard.as_mut() else {
            return Err(Error::NoSuchFile(format!(
                "file session {} has ended",
                self.id
            )));
        };
        let answer = question(reader).await;
        drop(guard);
        self.touch();
        match answer {
            Ok(t) => Ok(t),
            Err(AskError::Broken(why)) => {
                tracing::warn!(session = self.id, domain = %self.domain, error = %why, "file session failed");
                self.close().await;
                Err(Error::CorruptFilesystem(format!(
                    "{why}; the session is closed"
                )))
            }
            Err(e) => Err(failure(e)),
        }
    }

    pub async fn volumes(&self) -> Result<Vec<Volume>, Error> {
        self.ask(async |r: &mut Reader| r.volumes().await).await
    }

    pub async fn list(&self, volume: u32, path: &str) -> Result<(Vec<Entry>, bool), Error> {
        self.ask(async |r: &mut Reader| r.list(volume, path).await)
            .await
    }
}

/// The engine error for a reader's answer.
pub(super) fn failure(e: AskError) -> Error {
    match e {
        AskError::Failed(f) => match f.kind {
            FailureKind::NotFound | FailureKind::NotADirectory | FailureKind::NotAFile => {
                Error::NoSuchFile(f.message)
            }
            FailureKind::SymlinkInPath | FailureKind::BadRequest => {
                Error::InvalidArgument(f.message)
            }
            FailureKind::Unsupported => Error::UnsupportedFilesystem(f.message),
            FailureKind::Encrypted => Error::Encrypted(f.message),
            FailureKind::Corrupt => Error::CorruptFilesystem(f.message),
            FailureKind::CorruptBackup => Error::CorruptBackup(f.message),
        },
        AskError::Broken(why) => Error::CorruptFilesystem(why),
        AskError::Cancelled => Error::Cancelled,
        AskError::Sink(e) => Error::Untrusted(e.to_string()),
    }
}

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    /// Open sessions, and the uids of sessions being opened: counted together, under one
    /// lock, so that calls arriving at once cannot all pass the limit before any is listed.
    open: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    sessions: Vec<Arc<Session>>,
    reserved: Vec<u32>,
}

/// A session's place, taken before any work; given back when dropped unless the session
/// took it over ([`Reservation::fill`]).
struct Reservation<'a> {
    sessions: &'a Sessions,
    uid: u32,
    filled: bool,
}

impl Reservation<'_> {
    /// Lists `session` in the place this reservation held, in one step.
    fn fill(mut self, session: Arc<Session>) {
        let mut slots = self.sessions.slots();
        slots.sessions.push(session);
        slots.give_back(self.uid);
        self.filled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.sessions.slots().give_back(self.uid);
        }
    }
}

impl Slots {
    fn give_back(&mut self, uid: u32) {
        if let Some(i) = self.reserved.iter().position(|u| *u == uid) {
            self.reserved.swap_remove(i);
        }
    }
}

impl Sessions {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        crate::sync::lock(&self.open)
    }

    /// Takes a place for a session of `uid`, or refuses with `Busy` over the limits.
    fn reserve(&self, uid: u32) -> Result<Reservation<'_>, Error> {
        let mut slots = self.slots();
        let all = slots.sessions.len() + slots.reserved.len();
        let mine = slots.sessions.iter().filter(|s| s.uid == uid).count()
            + slots.reserved.iter().filter(|u| **u == uid).count();
        if all >= IN_ALL || (uid != 0 && mine >= PER_CALLER) {
            return Err(Error::Busy(format!(
                "{mine} file sessions open or opening for uid {uid}, {all} in all (at most \
                 {PER_CALLER} per caller, {IN_ALL} in all); close one"
            )));
        }
        slots.reserved.push(uid);
        Ok(Reservation {
            sessions: self,
            uid,
            filled: false,
        })
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.slots().sessions.clone()
    }

    fn forget(&self, id: u64) {
        self.slots().sessions.retain(|s| s.id != id);
    }
}

/// The disk a point's data file is of (`vda.inc.virtnbdbackup.2.data` → `vda`).
pub(super) fn disk_of(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// The point (default the chain's last) and the disk (default the first) a session opens.
fn point_and_disk<'c>(
    chain: &'c Chain,
    request: &FilesRequest,
) -> Result<(&'c Point, String), Error> {
    let point = match &request.point {
        None => chain.points.last(),
        Some(p) => chain.points.iter().find(|q| &q.checkpoint == p),
    }
    .ok_or_else(|| {
        Error::NoSuchBackup(format!(
            "{} has no point {}",
            chain.folder,
            request.point.as_deref().unwrap_or("")
        ))
    })?;
    let disks: Vec<&str> = chain.points[0].files.iter().map(|f| disk_of(f)).collect();
    let disk = match &request.disk {
        Some(d) if disks.contains(&d.as_str()) => d.clone(),
        Some(d) => {
            return Err(Error::NoSuchBackup(format!(
                "{} has no disk {d} (it has {})",
                chain.folder,
                disks.join(", ")
            )))
        }
        None => disks
            .first()
            .map(|d| d.to_string())
            .ok_or_else(|| Error::NoSuchBackup(format!("{} holds no disk", chain.folder)))?,
    };
    Ok((point, disk))
}

/// Read-only handles of `disk`'s data files in `chain` from the full to point `upto`,
/// reached by handle from the chain folder (no link followed, regular files only).
pub(super) fn data_files(
    chain: &Chain,
    upto: usize,
    disk: &str,
) -> Result<Vec<std::fs::File>, Error> {
    let dir = Dir::open(&chain.path).map_err(|e| HostError::at(&chain.path, e))?;
    let files: Vec<std::fs::File> = chain.points[..=upto]
        .iter()
        .flat_map(|p| &p.files)
        .filter(|f| disk_of(f) == disk && f.ends_with(".data"))
        .map(|f| {
            dir.open_file(f)
                .map(|(file, _)| file)
                .map_err(HostError::from)
        })
        .collect::<Result<_, _>>()?;
    if files.is_empty() || files.len() > vmsnap_guestfs::MAX_FILES {
        return Err(Error::NoSuchBackup(format!(
            "{} holds {} data files of {disk} up to {}; a point is read from 1 to {}",
            chain.folder,
            files.len(),
            chain.points[upto].checkpoint,
            vmsnap_guestfs::MAX_FILES
        )));
    }
    Ok(files)
}

impl Engine {
    /// Opens `request`'s point for `uid` (calling as `client`): checks, then starts the
    /// reader on the disk's data files up to the point.
    pub async fn open_files(
        &self,
        request: FilesRequest,
        uid: u32,
        client: String,
    ) -> Result<Arc<Session>, Error> {
        let reservation = self.files.reserve(uid)?;
        let sandbox = Sandbox::for_user(&self.config.files_user).map_err(Error::MissingSetup)?;
        self.require_reader()?;
        let chain = self
            .chosen_chain(&request.domain, &request.root, request.folder.as_deref())
            .await?;
        self.require_trusted(uid, &chain.path, Use::Source)?;
        let (point, disk) = point_and_disk(&chain, &request)?;
        let upto = chain
            .points
            .iter()
            .position(|p| p.checkpoint == point.checkpoint)
            .unwrap_or(0);
        let files = data_files(&chain, upto, &disk)?;
        let kept = files
            .iter()
            .map(std::fs::File::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| HostError::at(&chain.path, e))?;
        let id = self.files.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (ended, _) = watch::channel(false);
        let session = Arc::new(Session {
            id,
            uid,
            client,
            domain: request.domain.clone(),
            folder: chain.path.clone(),
            point: point.checkpoint.clone(),
            disk: disk.clone(),
            reader: tokio::sync::Mutex::new(None),
            files: kept,
            export: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            ended,
            closed: AtomicBool::new(false),
        });
        // Listed before the reader indexes the chain, so that the opener leaving the bus
        // stops it.
        reservation.fill(session.clone());
        let start = Reader::start(&self.config.files_helper, files, sandbox, ANSWER_DEADLINE);
        let started = tokio::select! {
            started = start => started.map_err(failure),
            () = session.ended() => Err(Error::Cancelled),
        };
        match started {
            Ok((reader, opened)) if !session.is_closed() => {
                tracing::info!(session = id, uid, domain = %session.domain, point = %session.point, disk = %disk, reader = ?reader.pid(), pieces = opened.pieces, "file session open");
                *session.reader.lock().await = Some(reader);
                session.touch();
                Ok(session)
            }
            Ok((mut reader, _)) => {
                reader.stop().await;
                self.close_files(id).await;
                Err(Error::Cancelled)
            }
            Err(e) => {
                self.close_files(id).await;
                Err(e)
            }
        }
    }

    /// Serves `session`'s point over NBD for `uid` (its opener; the bus checked the right) and
    /// returns the export's URI; the same one when asked again.
    pub fn export_files(&self, session: &Session, uid: u32) -> Result<String, Error> {
        session.touch();
        let mut export = crate::sync::lock(&session.export);
        if let Some(running) = export.as_ref() {
            return Ok(running.uri());
        }
        let sandbox = Sandbox::for_user(&self.config.files_user).map_err(Error::MissingSetup)?;
        let gid = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or(0, |u| u.gid.as_raw());
        let dir = &self.config.export_dir;
        let at = |e| Error::from(HostError::at(dir, e));
        std::fs::create_dir_all(dir).map_err(at)?;
        // Passable by every caller to their own export, listable by nobody.
        Dir::open(dir).and_then(|d| d.set_mode(0o711)).map_err(at)?;
        let files = session
            .files
            .iter()
            .map(std::fs::File::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(at)?;
        let prefix = format!("files-{}-", session.id);
        let started = Export::start(
            dir,
            &prefix,
            &self.config.files_helper,
            files,
            sandbox,
            (uid, gid),
        )
        .map_err(at)?;
        let uri = started.uri();
        tracing::info!(session = session.id, uid, socket = %started.socket().display(), "file session exported over NBD");
        *export = Some(started);
        Ok(uri)
    }

    /// Refuses work for the reader when it is not installed.
    pub(super) fn require_reader(&self) -> Result<(), Error> {
        if self.config.files_helper.is_file() {
            return Ok(());
        }
        Err(Error::MissingSetup(format!(
            "the guest-file-system reader {} is not installed",
            self.config.files_helper.display()
        )))
    }

    /// The open session `id`, for its opener only: the same uid on the same connection
    /// (`client`), so that not even another of root's connections can use it.
    pub fn files_session(&self, id: u64, uid: u32, client: &str) -> Result<Arc<Session>, Error> {
        self.files
            .all()
            .into_iter()
            .find(|s| s.id == id && s.uid == uid && s.client == client && !s.is_closed())
            .ok_or_else(|| {
                Error::NoSuchFile(format!(
                    "no open file session {id} of this connection (uid {uid})"
                ))
            })
    }

    /// Ends session `id` (whoever's: the bus layer checked).
    pub async fn close_files(&self, id: u64) {
        let found = self.files.all().into_iter().find(|s| s.id == id);
        if let Some(session) = found {
            session.close().await;
        }
        self.files.forget(id);
    }

    /// Ends every session `client` opened (it left the bus).
    pub async fn close_files_of(&self, client: &str) -> Vec<u64> {
        let gone: Vec<u64> = self
            .files
            .all()
            .iter()
            .filter(|s| s.client == client)
            .map(|s| s.id)
            .collect();
        for id in &gone {
            self.close_files(*id).await;
        }
        gone
    }

    /// Ends the sessions idle for longer than the timeout; returns their ids.
    pub async fn close_idle_files(&self) -> Vec<u64> {
        let timeout = self.config.files_idle_timeout;
        let idle: Vec<u64> = self
            .files
            .all()
            .iter()
            // A session still being opened has no reader yet and is not idle; an exported one
            // is read over NBD, which no call shows: it ends with its opener or Close.
            .filter(|s| s.idle_for() > timeout && s.reader.try_lock().is_ok_and(|r| r.is_some()))
            .filter(|s| crate::sync::lock(&s.export).is_none())
            .map(|s| s.id)
            .collect();
        for id in &idle {
            tracing::info!(session = id, "file session idle past its timeout");
            self.close_files(*id).await;
        }
        idle
    }

    /// Ends every session (the service is stopping).
    pub async fn close_all_files(&self) {
        for s in self.files.all() {
            self.close_files(s.id).await;
        }
    }

    /// Removes the scratch directories of sessions a previous instance left behind.
    pub fn remove_stale_file_scratch(&self) {
        let Ok(Some(root)) = Dir::open_if_exists(&self.config.scratch_dir) else {
            return;
        };
        for entry in root.entries().unwrap_or_default() {
            if entry.name.starts_with(SCRATCH_PREFIX) {
                let id = root.open_dir(&entry.name).and_then(|d| d.identity()).ok();
                match root.remove_tree(&entry.name, id) {
                    Ok(()) => {
                        tracing::info!(scratch = %entry.name, "removed a file session's scratch left by a previous instance")
                    }
                    Err(e) => {
                        tracing::warn!(scratch = %entry.name, error = %e, "stale scratch not removed")
                    }
                }
            }
        }
    }
}
