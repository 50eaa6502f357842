//! Caller-supplied filesystem paths, validated before the root service uses them.

use std::path::{Component, Path, PathBuf};

/// Longest path accepted (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    #[error("path {0:?} is not absolute")]
    Relative(String),
    #[error("path {0:?} contains '.' or '..' components")]
    DotComponent(String),
    #[error("path of {0} bytes is longer than {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("path {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("path {path:?} is not inside a configured backup root ({roots})")]
    OutsideRoots { path: String, roots: String },
    #[error("path {0:?} is in a kernel file system (/proc, /sys), not a folder for backups")]
    Pseudo(String),
    #[error("path {path:?} cannot be resolved: {reason}")]
    Unresolvable { path: String, reason: String },
}

/// Refuses `path` unless, with every symlink of its existing part resolved, it lies inside one
/// of `roots`. Used for callers other than root, before anything is created, and again on the
/// final folder so that a symlink planted inside a root cannot lead out of it.
pub fn check_inside(path: &Path, roots: &[PathBuf]) -> Result<(), InvalidPath> {
    confine(path, roots).map(|_| ())
}

/// [`check_inside`], returning `path` with the symlinks of its existing part resolved.
pub fn confine(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, InvalidPath> {
    let resolved = resolve(path)?;
    let inside = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .any(|root| resolved.starts_with(&root));
    match inside {
        true => Ok(resolved),
        false => Err(InvalidPath::OutsideRoots {
            path: path.display().to_string(),
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The deepest ancestor of `path` (itself included) that exists, without following a link
/// at its end.
fn deepest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|a| std::fs::symlink_metadata(a).is_ok())
        .unwrap_or(path)
}

/// Links followed while resolving one path, as the kernel's `ELOOP` limit.
const MAX_LINKS: usize = 40;

/// `path` with the links of its existing part resolved, the missing rest appended as it is.
/// Only root's links are followed: a link another user owns (one made in `/var/tmp`, say)
/// could point anywhere and be changed at any time, so the path is refused instead of
/// leading root where that user chose.
fn resolve(path: &Path) -> Result<PathBuf, InvalidPath> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::os::unix::fs::MetadataExt;
    let refuse = |reason: String| InvalidPath::Unresolvable {
        path: path.display().to_string(),
        reason,
    };
    // Names still to walk; `..` kept as such (a link's target may hold it).
    let names = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    };
    let mut done = PathBuf::from("/");
    let mut rest: VecDeque<OsString> = names(path).into();
    let mut links = 0;
    while let Some(name) = rest.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done = next;
                done.extend(rest);
                return Ok(done);
            }
            Err(e) => return Err(refuse(e.to_string())),
        };
        if !meta.file_type().is_symlink() {
            done = next;
            continue;
        }
        if meta.uid() != 0 {
            return Err(refuse(format!(
                "{} is a symlink owned by uid {}; the service follows only root's links",
                next.display(),
                meta.uid()
            )));
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(refuse("too many levels of symbolic links".into()));
        }
        let target = std::fs::read_link(&next).map_err(|e| refuse(e.to_string()))?;
        // The link's names go first; an absolute one starts again at `/`.
        for n in names(&target).into_iter().rev() {
            rest.push_front(n);
        }
        if target.is_absolute() {
            done = PathBuf::from("/");
        }
    }
    Ok(done)
}

/// A path the service may not write to: it lies on a file system mounted read-only for the
/// service. Under systemd that is the unit's sandbox (`ProtectSystem=strict` leaves only the
/// unit's `ReadWritePaths=` writable), so the message says how to allow the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotWritable {
    pub message: String,
}

/// Refuses `path` when the service could not create or write it because its deepest existing
/// ancestor is on a read-only mount. Checked before a backup or restore writes anything, so
/// it fails at once with a message that names the path and the way to allow it, never
/// halfway through with a bare "Read-only file system".
pub fn check_writable(path: &Path) -> Result<(), NotWritable> {
    let existing = deepest_existing(path);
    let read_only = nix::sys::statvfs::statvfs(existing)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false);
    if !read_only {
        return Ok(());
    }
    // systemd sets INVOCATION_ID for every service it starts.
    let message = if std::env::var_os("INVOCATION_ID").is_some() {
        format!(
            "vmsnapd may not write to {p}: its systemd unit lets it write only to the paths in \
             ReadWritePaths= (see `systemctl cat vmsnapd`). To allow it: mkdir -p {p}; \
             systemctl edit vmsnapd, add \"[Service]\" and \"ReadWritePaths=-{p}\" \
             (the - lets the service start while the path is missing); \
             systemctl restart vmsnapd",
            p = path.display()
        )
    } else {
        format!(
            "vmsnapd may not write to {}: {} is on a read-only file system",
            path.display(),
            existing.display()
        )
    };
    Err(NotWritable { message })
}

/// An absolute, lexically normal directory under which backups live
/// (`<root>/<domain>/vmsnap-backup-<period>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRoot(PathBuf);

impl BackupRoot {
    pub fn new(path: &str) -> Result<Self, InvalidPath> {
        if path.len() > MAX_PATH_BYTES {
            return Err(InvalidPath::TooLong(path.len()));
        }
        if path.chars().any(char::is_control) {
            return Err(InvalidPath::ControlCharacter(
                path.escape_debug().to_string(),
            ));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(InvalidPath::Relative(path.to_string()));
        }
        // `Path::components` silently drops interior `.`, so look at the raw segments too.
        let dotted = path.split('/').any(|s| s == "." || s == "..")
            || p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
        if dotted {
            return Err(InvalidPath::DotComponent(path.to_string()));
        }
        // Their links lead into other processes' views (`/proc/<pid>/root`, `/proc/self/cwd`).
        if ["/proc", "/sys"].iter().any(|k| p.starts_with(k)) {
            return Err(InvalidPath::Pseudo(path.to_string()));
        }
        Ok(BackupRoot(p.components().collect()))
    }

    /// [`BackupRoot::new`], with the symlinks of the path's existing part resolved once,
    /// here: from then on the service opens it without following any link
    /// ([`crate::host::safe_fs`]), so a link swapped in later fails instead of leading
    /// elsewhere, and programs that take paths get the resolved one.
    pub fn resolved(path: &str) -> Result<Self, InvalidPath> {
        let lexical = BackupRoot::new(path)?;
        Ok(match resolve(&lexical.0) {
            Ok(real) => BackupRoot(real),
            Err(_) => lexical,
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_out_of_a_root_are_caught() {
        let base = std::env::temp_dir().join(format!("vmsnap-confine-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = vec![root.clone()];
        let inside = check_inside(&root.join("vm1/new/deeper"), &roots);
        let via_link = check_inside(&root.join("escape/vm1"), &roots);
        let beside = check_inside(&outside, &roots);
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(inside, Ok(()));
        assert!(matches!(via_link, Err(InvalidPath::OutsideRoots { .. })));
        assert!(matches!(beside, Err(InvalidPath::OutsideRoots { .. })));
    }

    #[test]
    fn paths_on_writable_mounts_pass() {
        // The read-only case needs a sandbox or a read-only mount: the system-container suite
        // checks it under the real unit (tests/containers).
        assert_eq!(check_writable(&std::env::temp_dir().join("a/b/c")), Ok(()));
        assert_eq!(check_writable(Path::new("/")), Ok(()));
    }

    #[test]
    fn only_roots_links_are_followed() {
        let base = std::env::temp_dir().join(format!("vmsnap-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real/inner")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("roots")).unwrap();
        std::os::unix::fs::symlink("real/inner/..", base.join("relative")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("theirs")).unwrap();
        std::os::unix::fs::lchown(base.join("theirs"), Some(65534), None).unwrap();
        let real = std::fs::canonicalize(base.join("real")).unwrap();
        assert_eq!(
            resolve(&base.join("roots/new/x")).unwrap(),
            real.join("new/x")
        );
        assert_eq!(
            resolve(&base.join("relative/inner")).unwrap(),
            real.join("inner")
        );
        let refused = resolve(&base.join("theirs/new")).unwrap_err().to_string();
        assert!(refused.contains("owned by uid 65534"), "{refused}");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn kernel_file_systems_are_never_folders() {
        for p in ["/proc/self/cwd", "/proc/1/root/etc", "/sys/fs", "/proc"] {
            assert!(
                matches!(BackupRoot::new(p), Err(InvalidPath::Pseudo(_))),
                "{p}"
            );
        }
        assert!(BackupRoot::new("/processed/backups").is_ok());
    }

    #[test]
    fn only_absolute_normal_paths_are_roots() {
        assert_eq!(
            BackupRoot::new("/backups//vms/").unwrap().as_path(),
            Path::new("/backups/vms")
        );
        assert!(matches!(
            BackupRoot::new("backups"),
            Err(InvalidPath::Relative(_))
        ));
        assert!(matches!(BackupRoot::new(""), Err(InvalidPath::Relative(_))));
        assert!(matches!(
            BackupRoot::new("/a/../etc"),
            Err(InvalidPath::DotComponent(_))
        ));
        assert!(matches!(
            BackupRoot::new("/a/./b"),
            Err(InvalidPath::DotComponent(_))
        ));
        assert!(matches!(
            BackupRoot::new("/a\nb"),
            Err(InvalidPath::ControlCharacter(_))
        ));
        assert!(matches!(
            BackupRoot::new(&format!("/{}", "a".repeat(5000))),
            Err(InvalidPath::TooLong(_))
        ));
    }
}
