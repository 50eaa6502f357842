//! Files below caller-named directories, reached by handle and read with bounds.
//!
//! vmsnapd is root and callers name the folders it works in. A path checked once and used
//! later by name can be redirected in between (a directory swapped for a symlink), and a file
//! read whole can be a 1 GiB sparse file or a FIFO that blocks forever. So every file the
//! service itself touches under a backup root, a restore target or a scratch area is reached
//! here: a path is walked one component at a time from `/`, each opened with `openat(…,
//! O_NOFOLLOW)` relative to the handle of its parent — no symlink anywhere in the path is
//! followed, so a swapped-in link fails (`ELOOP`) instead of leading elsewhere — and
//! everything below a directory is reached from its handle by single names (never `..`).
//! That is what `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` promises, without `openat2`
//! itself: seccomp filters that predate it (systemd-nspawn 252's, found by the system
//! containers) answer it with `ENOSYS`. Files are opened non-blocking, must be regular files,
//! and are read up to a cap. A destructive step compares the folder's [`Identity`] (device
//! and inode) with the one it recorded before it deletes.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Caps of the files the service reads, by kind. A checkpoint XML is a few KiB; a domain XML
/// with many devices some tens; a sha256 list is one line per data file.
pub mod cap {
    /// `checkpoints/<name>.xml`, `<domain>.cpt`, `*.qcow.json`.
    pub const SMALL: u64 = 256 * 1024;
    /// `vmconfig.<cp>.xml`, `vmsnap.sha256`, job and rollback records.
    pub const MEDIUM: u64 = 4 * 1024 * 1024;
}

/// Most directory entries one listing returns; a folder with more is refused, not truncated.
pub const MAX_ENTRIES: usize = 100_000;

/// Why a bounded read failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than the {cap} bytes such a file may have", path.display())]
    TooLarge { path: PathBuf, cap: u64 },
    #[error("{}: not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{}: a symlink is in the way (the service never follows one here)", path.display())]
    Symlink { path: PathBuf },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Device and inode of a directory: what a destructive step checks before it deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

/// What an entry of a directory is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Symlinks, FIFOs, sockets, devices: never opened by the service.
    Other,
}

/// One entry of a directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
}

/// Owner, mode and size of an entry (its `lstat`).
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub len: u64,
    pub mtime: i64,
    pub identity: Identity,
}

/// An open directory.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `ELOOP` from an `O_NOFOLLOW` open: a symlink is where a directory or file was.
pub fn is_symlink_refusal(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

fn kind_of(t: FileType) -> Kind {
    match t {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        _ => Kind::Other,
    }
}

fn meta_of(st: &rustix::fs::Stat) -> Meta {
    Meta {
        kind: kind_of(FileType::from_raw_mode(st.st_mode)),
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        len: st.st_size as u64,
        mtime: st.st_mtime,
        identity: Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        },
    }
}

/// Sets the owner and mode of an open file or directory.
pub fn set_owner_and_mode(fd: impl AsFd, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    rustix::fs::fchown(&fd, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(std::io::Error::from)
}

/// A single path component: no `/` or NUL, not `.` or `..`, not empty. Any other bytes
/// are a name (a guest's names need not be UTF-8).
pub fn check_name(name: impl AsRef<OsStr>) -> std::io::Result<()> {
    let name = name.as_ref();
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes == b"."
        || bytes == b".."
        || bytes.contains(&b'/')
        || bytes.contains(&0)
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    Ok(())
}

/// Opens the single name `name` in `dir`, never following a symlink: with `O_NOFOLLOW` a
/// link there is `ELOOP`, and a name is never more than one component.
fn open_at(
    dir: impl AsFd,
    name: &OsStr,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, rustix::io::Errno> {
    rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode)
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY);

impl Dir {
    /// Opens the absolute directory `path`, refusing a symlink anywhere in it.
    pub fn open(path: &Path) -> std::io::Result<Dir> {
        use std::path::Component;
        if !path.is_absolute() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not absolute", path.display()),
            ));
        }
        let mut fd = rustix::fs::openat(
            rustix::fs::CWD,
            "/",
            DIR_FLAGS | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        for component in path.components() {
            let name = match component {
                Component::Normal(n) => n,
                Component::ParentDir => OsStr::new(".."),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            };
            fd = rustix::fs::openat(
                &fd,
                name,
                DIR_FLAGS | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// [`Dir::open`], with a missing directory as `None`.
    pub fn open_if_exists(path: &Path) -> std::io::Result<Option<Dir>> {
        match Dir::open(path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The path this handle was opened as, for messages and for programs that take paths.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The child directory `name`, never through a symlink.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> std::io::Result<Dir> {
        let name = name.as_ref();
        check_name(name)?;
        let path = self.path.join(name);
        let fd = open_at(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(std::io::Error::from)?;
        Ok(Dir { fd, path })
    }

    /// [`Dir::open_dir`], with a missing directory as `None`.
    pub fn open_dir_if_exists(&self, name: impl AsRef<OsStr>) -> std::io::Result<Option<Dir>> {
        let name = name.as_ref();
        match self.open_dir(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the child directory `name` (mode `mode`, not there before) and opens it.
    pub fn create_dir(&self, name: impl AsRef<OsStr>, mode: u32) -> std::io::Result<Dir> {
        let name = name.as_ref();
        check_name(name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))
            .map_err(std::io::Error::from)?;
        self.open_dir(name)
    }

    /// Creates a new directory with a random name `<prefix><random>` (mode 0700), like
    /// `mkdtemp`: nobody can have prepared it.
    pub fn create_unique_dir(&self, prefix: &str) -> std::io::Result<Dir> {
        for _ in 0..32 {
            let name = format!("{prefix}{:016x}", random_u64());
            match self.create_dir(&name, 0o700) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
        Err(std::io::Error::other("no unused random name"))
    }

    /// Device and inode of this directory.
    pub fn identity(&self) -> std::io::Result<Identity> {
        Ok(self.meta()?.identity)
    }

    /// This directory's own metadata.
    pub fn meta(&self) -> std::io::Result<Meta> {
        let st = rustix::fs::fstat(&self.fd).map_err(std::io::Error::from)?;
        Ok(meta_of(&st))
    }

    /// Metadata of the entry `name`, not following a link.
    pub fn meta_of(&self, name: impl AsRef<OsStr>) -> std::io::Result<Meta> {
        let name = name.as_ref();
        check_name(name)?;
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(std::io::Error::from)?;
        Ok(meta_of(&st))
    }

    /// Whether the entry `name` is a symlink (never followed).
    pub fn is_symlink(&self, name: impl AsRef<OsStr>) -> bool {
        let name = name.as_ref();
        check_name(name).is_ok()
            && rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    }

    /// The entries of this directory (without `.` and `..`), at most [`MAX_ENTRIES`], with
    /// their names as text: for the service's own files (a name that is not UTF-8 is shown
    /// with replacement characters and cannot be reached again; [`Dir::raw_entries`] can).
    pub fn entries(&self) -> std::io::Result<Vec<Entry>> {
        Ok(self
            .raw_entries()?
            .into_iter()
            .map(|(name, kind)| Entry {
                name: name.to_string_lossy().into_owned(),
                kind,
            })
            .collect())
    }

    /// [`Dir::entries`] with each name's exact bytes.
    pub fn raw_entries(&self) -> std::io::Result<Vec<(std::ffi::OsString, Kind)>> {
        let dup = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).map_err(std::io::Error::from)?;
        let mut dir = rustix::fs::Dir::new(dup).map_err(std::io::Error::from)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(std::io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if out.len() >= MAX_ENTRIES {
                return Err(std::io::Error::other(format!(
                    "{} has more than {MAX_ENTRIES} entries",
                    self.path.display()
                )));
            }
            let name = OsStr::from_bytes(name).to_os_string();
            let kind = match entry.file_type() {
                FileType::Unknown => self.meta_of(&name).map(|m| m.kind).unwrap_or(Kind::Other),
                t => kind_of(t),
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Opens the regular file `name` for reading: non-blocking (a FIFO cannot hang the
    /// service), never through a link, and refused unless it is a regular file.
    pub fn open_file(&self, name: &str) -> Result<(std::fs::File, Meta), ReadError> {
        let path = self.path.join(name);
        let io = |source: std::io::Error| {
            if is_symlink_refusal(&source) {
                ReadError::Symlink { path: path.clone() }
            } else {
                ReadError::Io {
                    path: path.clone(),
                    source,
                }
            }
        };
        check_name(name).map_err(io)?;
        let fd = open_at(
            &self.fd,
            name.as_ref(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| io(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(e.into()))?;
        let meta = meta_of(&st);
        if meta.kind != Kind::File {
            return Err(ReadError::NotRegular { path });
        }
        Ok((std::fs::File::from(fd), meta))
    }

    /// Reads the regular file `name`, at most `cap` bytes; a larger one is an error.
    pub fn read(&self, name: &str, cap: u64) -> Result<Vec<u8>, ReadError> {
        let (file, meta) = self.open_file(name)?;
        let path = || self.path.join(name);
        if meta.len > cap {
            return Err(ReadError::TooLarge { path: path(), cap });
        }
        let mut data = Vec::with_capacity(meta.len as usize);
        // Read one byte past the cap: a file that grew after fstat is caught too.
        file.take(cap + 1)
            .read_to_end(&mut data)
            .map_err(|source| ReadError::Io {
                path: path(),
                source,
            })?;
        if data.len() as u64 > cap {
            return Err(ReadError::TooLarge { path: path(), cap });
        }
        Ok(data)
    }

    /// [`Dir::read`] as UTF-8 text.
    pub fn read_text(&self, name: &str, cap: u64) -> Result<String, ReadError> {
        let data = self.read(name, cap)?;
        String::from_utf8(data).map_err(|_| ReadError::Io {
            path: self.path.join(name),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
        })
    }

    /// Creates or truncates the regular file `name` and writes `data` (never through a link).
    pub fn write(&self, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        self.write_with(name, data, mode, OFlags::TRUNC)
    }

    /// Appends `data` to the regular file `name`, creating it (never through a link).
    pub fn append(&self, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        self.write_with(name, data, mode, OFlags::APPEND)
    }

    fn write_with(&self, name: &str, data: &[u8], mode: u32, how: OFlags) -> std::io::Result<()> {
        use std::io::Write;
        check_name(name)?;
        let path = self.path.join(name);
        let fd = open_at(
            &self.fd,
            name.as_ref(),
            OFlags::WRONLY | OFlags::CREATE | how | OFlags::NONBLOCK,
            Mode::from_raw_mode(mode),
        )
        .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        file.write_all(data)
    }

    /// Creates the regular file `name` for writing: new (`O_EXCL`, so nothing prepared there
    /// is reused), never through a link.
    pub fn create_new_file(
        &self,
        name: impl AsRef<OsStr>,
        mode: u32,
    ) -> std::io::Result<std::fs::File> {
        let name = name.as_ref();
        check_name(name)?;
        let fd = open_at(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(mode),
        )
        .map_err(std::io::Error::from)?;
        Ok(std::fs::File::from(fd))
    }

    /// Sets this directory's mode (through its handle; the umask does not apply).
    pub fn set_mode(&self, mode: u32) -> std::io::Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(std::io::Error::from)
    }

    /// A second handle on the same directory.
    pub fn reopen(&self) -> std::io::Result<Dir> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0).map_err(std::io::Error::from)?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// Removes the directory `name` if it is still `expected` and holds nothing but empty
    /// directories; anything else in it stays, and so does it.
    pub fn remove_empty_tree(
        &self,
        name: impl AsRef<OsStr>,
        expected: Identity,
    ) -> std::io::Result<()> {
        let name = name.as_ref();
        let child = self.open_dir(name)?;
        if child.identity()? != expected {
            return Err(std::io::Error::other(format!(
                "{} was replaced since it was made; not removed",
                child.path.display()
            )));
        }
        for (name, kind) in child.raw_entries()? {
            match kind {
                Kind::Dir => {
                    let id = child.open_dir(&name)?.identity()?;
                    child.remove_empty_tree(&name, id)?;
                }
                _ => {
                    return Err(std::io::Error::other(format!(
                        "{} is not empty",
                        child.path.display()
                    )))
                }
            }
        }
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(std::io::Error::from)
    }

    /// Sets this directory's owner and mode (through its handle, so never a link's target).
    pub fn set_owner_and_mode(&self, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
        set_owner_and_mode(&self.fd, uid, gid, mode)
    }

    /// Removes the entry `name` (a file, a link, anything but a directory).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> std::io::Result<()> {
        let name = name.as_ref();
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(std::io::Error::from)
    }

    /// Moves `from` in this directory to `to` in `dest` (same file system).
    pub fn rename_into(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> std::io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_name(from)?;
        check_name(to)?;
        rustix::fs::renameat(&self.fd, from, &dest.fd, to).map_err(std::io::Error::from)
    }

    /// The handle itself, for calls on the directory (its extended attributes).
    pub fn handle(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The last component of this directory's path.
    pub fn name(&self) -> Option<&str> {
        self.path.file_name().and_then(|n| n.to_str())
    }

    /// Removes the directory `name` and everything in it, walking by handle: a link inside
    /// is removed, never followed. With `expected`, only when `name` is still that directory.
    pub fn remove_tree(
        &self,
        name: impl AsRef<OsStr>,
        expected: Option<Identity>,
    ) -> std::io::Result<()> {
        let name = name.as_ref();
        let child = self.open_dir(name)?;
        if let Some(expected) = expected {
            let found = child.identity()?;
            if found != expected {
                return Err(std::io::Error::other(format!(
                    "{} was replaced since it was checked; not removed",
                    child.path.display()
                )));
            }
        }
        child.empty(0)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(std::io::Error::from)
    }

    /// Removes everything inside this directory.
    pub fn empty(&self, depth: usize) -> std::io::Result<()> {
        if depth > 64 {
            return Err(std::io::Error::other(format!(
                "{} is nested too deep to remove",
                self.path.display()
            )));
        }
        // By exact names: a guest's extracted files need not be named in UTF-8.
        for (name, kind) in self.raw_entries()? {
            match kind {
                Kind::Dir => {
                    self.open_dir(&name)?.empty(depth + 1)?;
                    rustix::fs::unlinkat(&self.fd, name.as_os_str(), AtFlags::REMOVEDIR)
                        .map_err(std::io::Error::from)?;
                }
                _ => self.remove_file(&name)?,
            }
        }
        Ok(())
    }
}

/// 64 random bits from the kernel, for names nobody can guess.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // getrandom(2) without flags blocks only before the pool is initialised at boot.
    let _ = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    u64::from_ne_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmsnap-safefs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn symlinks_anywhere_are_refused() {
        let base = scratch("links");
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join("real/passwd")).unwrap();
        assert!(Dir::open(&base.join("link/sub")).is_err());
        let real = Dir::open(&base.join("real")).unwrap();
        assert!(real.open_dir("sub").is_ok());
        assert!(matches!(
            real.read("passwd", 1 << 20),
            Err(ReadError::Symlink { .. })
        ));
        assert!(real.open_dir("..").is_err());
        assert!(Dir::open(&base).unwrap().open_dir("link").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn reads_are_bounded_and_only_of_regular_files() {
        let base = scratch("bounds");
        std::fs::write(base.join("small"), b"hello").unwrap();
        let big = std::fs::File::create(base.join("big")).unwrap();
        big.set_len(1 << 30).unwrap();
        nix::unistd::mkfifo(&base.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let dir = Dir::open(&base).unwrap();
        assert_eq!(dir.read("small", 5).unwrap(), b"hello");
        assert!(matches!(
            dir.read("small", 4),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(matches!(
            dir.read("big", cap::SMALL),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(matches!(
            dir.read("fifo", cap::SMALL),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(dir.read("missing", 1).unwrap_err().is_not_found());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_tree_is_removed_by_handle_and_only_if_it_is_the_one_checked() {
        let base = scratch("tree");
        std::fs::create_dir_all(base.join("victim/a/b")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/keep"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("victim/a/link")).unwrap();
        let dir = Dir::open(&base).unwrap();
        let id = dir.open_dir("victim").unwrap().identity().unwrap();
        // Swapped: same name, another directory.
        std::fs::rename(base.join("victim"), base.join("moved")).unwrap();
        std::fs::create_dir(base.join("victim")).unwrap();
        assert!(dir.remove_tree("victim", Some(id)).is_err());
        assert!(base.join("victim").is_dir());
        std::fs::remove_dir(base.join("victim")).unwrap();
        std::fs::rename(base.join("moved"), base.join("victim")).unwrap();
        dir.remove_tree("victim", Some(id)).unwrap();
        assert!(!base.join("victim").exists());
        assert!(
            base.join("outside/keep").is_file(),
            "a link inside was followed"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn unique_dirs_are_private_and_new() {
        let base = scratch("unique");
        let dir = Dir::open(&base).unwrap();
        let a = dir.create_unique_dir("verify-").unwrap();
        let b = dir.create_unique_dir("verify-").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(a.meta().unwrap().mode, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
