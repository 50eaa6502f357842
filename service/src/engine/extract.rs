//! Extract: files and directories of a browsed point copied out into a target, as a job.
//!
//! The reader streams bytes; the service decides what lands on the host, and trusts nothing
//! the guest recorded: only regular files and directories are created — a symlink, a device
//! node, a FIFO or a socket is listed in the job's checks and not recreated — every name is one
//! path component (no `/`, `.` or `..`), every file is new (`O_EXCL`, reached by handle, never
//! through a link), setuid, setgid and sticky bits and write bits for group and others are
//! dropped, and everything belongs to the caller (root's extraction to root), never to the
//! guest's uid nor to whoever owns a folder. The target is opened, and made where missing, by
//! handle from `/` ([`crate::host::destination`]), never in a chain folder.
//! Like Restore, the copy goes into a hidden directory inside the target first and is moved
//! up only when complete: a failed or cancelled extraction leaves nothing that looks finished.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use vmsnap_guestfs::protocol::{components, Entry, Kind};

use super::files::Session;
use super::jobs::runner::{DomainRun, JobKind, Prepared};
use super::jobs::{Job, Operation};
use super::{Engine, Error};
use crate::host::guestfs::Reader;
use crate::host::safe_fs::{self, Dir};
use crate::host::space;
use crate::host::sparse::SparseWriter;
use crate::host::Error as HostError;
use crate::paths::{self, BackupRoot};

/// Paths one call may name.
pub const MAX_PATHS: usize = 256;
/// Entries one extraction may create, and how deep it may go.
const MAX_ENTRIES: usize = 1_000_000;
const MAX_DEPTH: usize = 256;
const STAGING_PREFIX: &str = ".vmsnap-extract-";

pub struct ExtractRequest {
    pub session: Arc<Session>,
    pub volume: u32,
    pub paths: Vec<String>,
    pub target: BackupRoot,
    pub overwrite: bool,
}

/// The extract job kind.
pub struct Extract {
    request: ExtractRequest,
}

impl JobKind for Extract {
    const NAME: &'static str = "extract";

    async fn run_domain(&self, engine: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
        let target = self.request.target.as_path().display().to_string();
        run.update(|d| d.folder = target);
        engine.extract(run.job, &self.request).await
    }
}

/// One thing to copy: where it is in the guest, where it goes below the target.
struct Planned {
    guest_path: String,
    place: Vec<String>,
    entry: Entry,
}

/// Modes on the host: the owner keeps what it needs, nobody else may write, no special bits.
fn safe_mode(entry: &Entry) -> u32 {
    match entry.kind {
        Kind::Dir => (entry.mode & 0o755) | 0o700,
        _ => (entry.mode & 0o755) | 0o600,
    }
}

/// Who owns what an extraction creates: the caller (with its primary group), decided by
/// its identity on the bus, never read back from a folder someone could have made.
fn owner_of(uid: u32) -> (u32, u32) {
    if uid == 0 {
        return (0, 0);
    }
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => (uid, user.gid.as_raw()),
        // A uid without a user entry: its own files, and the group nobody is in.
        _ => (uid, 65534),
    }
}

/// The host name of a guest name in wire form: its exact bytes, when they are one safe path
/// component (no `/` or NUL, not `.` or `..`).
fn host_name(wire: &str) -> Option<OsString> {
    let name = OsString::from_vec(vmsnap_guestfs::protocol::decode(wire).ok()?);
    safe_fs::check_name(&name).is_ok().then_some(name)
}

/// The name a path is extracted under: its last component (`/` itself: `volume-N`).
fn top_name(path: &str, volume: u32) -> Result<String, Error> {
    let parts = components(path).map_err(|f| Error::InvalidArgument(f.message))?;
    Ok(parts
        .last()
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("volume-{volume}")))
}

impl Engine {
    /// Checks an extraction and creates its job; refuses before anything is written.
    pub async fn prepare_extract(
        &self,
        request: ExtractRequest,
        uid: u32,
    ) -> Result<Prepared<Extract>, Error> {
        if request.paths.is_empty() || request.paths.len() > MAX_PATHS {
            return Err(Error::InvalidArgument(format!(
                "name 1 to {MAX_PATHS} paths to extract"
            )));
        }
        self.inspect_destination(uid, request.target.as_path())?;
        paths::check_writable(request.target.as_path())?;
        let mut names = Vec::new();
        for path in &request.paths {
            let name = top_name(path, request.volume)?;
            if names.contains(&name) {
                return Err(Error::InvalidArgument(format!(
                    "two of the paths would both be extracted as {name}"
                )));
            }
            let volume = request.volume;
            request
                .session
                .ask(async |r: &mut Reader| r.stat(volume, path).await)
                .await?;
            names.push(name);
        }
        if !request.overwrite {
            let target = Dir::open_if_exists(request.target.as_path())
                .map_err(|e| HostError::at(request.target.as_path(), e))?;
            if let Some(target) = target {
                let exists = |n: &&String| host_name(n).is_some_and(|h| target.meta_of(h).is_ok());
                if let Some(taken) = names.iter().find(exists) {
                    return Err(Error::TargetExists(format!(
                        "{} already exists; ask for overwrite to replace it",
                        request.target.as_path().join(taken).display()
                    )));
                }
            }
        }
        let domains = vec![request.session.domain.clone()];
        let job = self.jobs.create(Operation::Extract, domains, uid)?;
        Ok(Prepared::new(job, Extract { request }))
    }

    /// Lists everything below the requested paths (directories before their contents).
    async fn plan(&self, job: &Job, request: &ExtractRequest) -> Result<Vec<Planned>, Error> {
        let mut plan = Vec::new();
        for path in &request.paths {
            let entry = request
                .session
                .ask(async |r: &mut Reader| r.stat(request.volume, path).await)
                .await?;
            let name = top_name(path, request.volume)?;
            let mut pending = vec![(path.clone(), vec![name], entry)];
            while let Some((guest_path, place, entry)) = pending.pop() {
                if job.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                if plan.len() >= MAX_ENTRIES || place.len() > MAX_DEPTH {
                    return Err(Error::InvalidArgument(format!(
                        "more than {MAX_ENTRIES} entries or deeper than {MAX_DEPTH} levels; \
                         extract a smaller part"
                    )));
                }
                if entry.kind == Kind::Dir {
                    let (children, truncated) = request
                        .session
                        .ask(async |r: &mut Reader| r.list(request.volume, &guest_path).await)
                        .await?;
                    if truncated {
                        job.update(0, |d| {
                            d.checks.push(format!(
                                "{guest_path}: listing cut at its cap; not all entries extracted"
                            ))
                        });
                    }
                    // Reversed onto the stack: extracted in name order.
                    for child in children.into_iter().rev() {
                        let mut child_place = place.clone();
                        child_place.push(child.name.clone());
                        let child_path =
                            format!("{}/{}", guest_path.trim_end_matches('/'), child.name);
                        pending.push((child_path, child_place, child));
                    }
                }
                plan.push(Planned {
                    guest_path,
                    place,
                    entry,
                });
            }
        }
        Ok(plan)
    }

    async fn extract(&self, job: &Job, request: &ExtractRequest) -> Result<(), Error> {
        let plan = self.plan(job, request).await?;
        let total: u64 = plan
            .iter()
            .filter(|p| p.entry.kind == Kind::File)
            .map(|p| p.entry.size)
            .sum();
        let label = format!("volume {}", request.volume);
        job.progress(0, &label, 0, total);
        // Opened (and made where missing) only now, by handle, and trusted on that handle:
        // the call's check was a courtesy; this is the one that counts.
        let destination = self.open_destination(job.uid, request.target.as_path())?;
        let target = &destination.dir;
        let target_path = target.path().to_path_buf();
        if let Err(e) = self.require_room(target, total) {
            destination.remove_created();
            return Err(e);
        }
        let staging = target
            .create_unique_dir(STAGING_PREFIX)
            .map_err(|e| HostError::at(&target_path, e))?;
        let staging_name = staging.name().unwrap_or_default().to_string();
        let staging_id = staging
            .identity()
            .map_err(|e| HostError::at(&target_path, e))?;
        let owner = owner_of(job.uid);
        let copied = self
            .copy_all(job, request, &plan, &staging, owner, &label, total)
            .await;
        let moved = match copied {
            Ok(()) => self.move_up(request, &plan, &staging, target),
            Err(e) => Err(e),
        };
        if let Err(e) = target.remove_tree(&staging_name, Some(staging_id)) {
            tracing::warn!(staging = %staging.path().display(), error = %e, "staging not removed");
        }
        if moved.is_err() {
            destination.remove_created();
        }
        moved?;
        job.progress(0, &label, total, total);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_all(
        &self,
        job: &Job,
        request: &ExtractRequest,
        plan: &[Planned],
        staging: &Dir,
        (uid, gid): (u32, u32),
        label: &str,
        total: u64,
    ) -> Result<(), Error> {
        let mut dirs: HashMap<Vec<String>, Dir> = HashMap::new();
        let mut done = 0u64;
        for item in plan {
            if job.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let (name, parent_place) = item.place.split_last().expect("never empty");
            let parent = match parent_place.is_empty() {
                true => staging,
                false => match dirs.get(parent_place) {
                    Some(d) => d,
                    // Its directory was skipped: so is everything in it.
                    None => continue,
                },
            };
            let shown = &item.guest_path;
            let Some(name) = host_name(name) else {
                job.update(0, |d| {
                    d.checks
                        .push(format!("{shown}: skipped: {name} is not a safe file name"))
                });
                continue;
            };
            let name = name.as_os_str();
            if item.entry.mode & 0o7000 != 0 {
                job.update(0, |d| {
                    d.checks
                        .push(format!("{shown}: setuid, setgid and sticky bits not kept"))
                });
            }
            let io = |e: std::io::Error| HostError::at(&parent.path().join(name), e);
            match item.entry.kind {
                Kind::Dir => {
                    let dir = parent.create_dir(name, 0o700).map_err(io)?;
                    dir.set_owner_and_mode(uid, gid, safe_mode(&item.entry))
                        .map_err(io)?;
                    dirs.insert(item.place.clone(), dir);
                }
                Kind::File => {
                    let file = parent.create_new_file(name, 0o600).map_err(io)?;
                    let mut file = SparseWriter::new(file);
                    let start = done;
                    let size = item.entry.size;
                    let mut sink = |bytes: &[u8]| {
                        // Never more than the plan counted: the free-space check holds.
                        if done - start + bytes.len() as u64 > size {
                            return Err(std::io::Error::other(format!(
                                "{shown} grew past the {size} bytes it was listed with"
                            )));
                        }
                        file.write(bytes)?;
                        done += bytes.len() as u64;
                        job.progress(0, label, done, total);
                        Ok(())
                    };
                    let stop = || job.is_cancelled();
                    request
                        .session
                        .ask(async |r: &mut Reader| {
                            r.read(request.volume, &item.guest_path, &mut sink, &stop)
                                .await
                        })
                        .await?;
                    done = start + item.entry.size;
                    let file = file.finish().map_err(io)?;
                    safe_fs::set_owner_and_mode(&file, uid, gid, safe_mode(&item.entry))
                        .map_err(io)?;
                }
                other => {
                    let what = match &item.entry.target {
                        Some(t) => format!("a symlink to {t}"),
                        None => format!("a {}", other.as_str()),
                    };
                    job.update(0, |d| {
                        d.checks.push(format!("{shown}: {what}, not recreated"))
                    });
                }
            }
        }
        Ok(())
    }

    /// Refuses an extraction of `total` bytes (apparent sizes: a guest's sparse file counts
    /// at its full length, so no hole can be turned into data beyond this) over the
    /// configured cap, or over the target's free space less a margin (5% of its file
    /// system, at most 1 GiB).
    fn require_room(&self, target: &Dir, total: u64) -> Result<(), Error> {
        let cap = self.config.extract_max_bytes;
        if total > cap {
            return Err(Error::NoSpace(format!(
                "the extraction would write {}, over the {} one extraction may write \
                 (extract_max_bytes); extract a smaller part",
                space::human(total),
                space::human(cap)
            )));
        }
        let (free, size) =
            space::of_handle(target.handle()).map_err(|e| HostError::at(target.path(), e))?;
        let margin = (size / 20).min(1 << 30);
        if total.saturating_add(margin) > free {
            return Err(Error::NoSpace(format!(
                "the extraction would write {} into {}, which has {} free (and keeps {} \
                 free); extract a smaller part or choose another target",
                space::human(total),
                target.path().display(),
                space::human(free),
                space::human(margin)
            )));
        }
        Ok(())
    }

    /// Moves the finished top-level entries from the staging directory into the target.
    fn move_up(
        &self,
        request: &ExtractRequest,
        plan: &[Planned],
        staging: &Dir,
        target: &Dir,
    ) -> Result<(), Error> {
        for item in plan.iter().filter(|p| p.place.len() == 1) {
            let Some(name) = host_name(&item.place[0]) else {
                continue;
            };
            let name = name.as_os_str();
            if staging.meta_of(name).is_err() {
                continue;
            }
            let io = |e: std::io::Error| HostError::at(&target.path().join(name), e);
            if let Ok(existing) = target.meta_of(name) {
                if !request.overwrite {
                    return Err(Error::TargetExists(format!(
                        "{} appeared while extracting",
                        target.path().join(name).display()
                    )));
                }
                match existing.kind {
                    safe_fs::Kind::Dir => target.remove_tree(name, Some(existing.identity)),
                    _ => target.remove_file(name),
                }
                .map_err(io)?;
            }
            staging.rename_into(name, target, name).map_err(io)?;
        }
        Ok(())
    }
}
