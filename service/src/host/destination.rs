//! A folder the service writes into as root (a restore's or an extraction's target), opened
//! — and created where missing — by handle, its trust checked on that handle.
//!
//! Checking a path and then creating or opening it by path leaves a gap: another user can
//! create the missing folder in a sticky directory such as `/var/tmp` in between and own
//! what root then writes there, or swap a directory on the way for a link. So the walk here
//! goes from `/` one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, creates a
//! missing component with `mkdirat` relative to its parent's handle, and checks every
//! directory it holds with `fstat` on that handle: owned by root, writable by nobody else
//! unless sticky ([`fs_access::untrusted_because`]). A folder someone else created in the
//! gap is found by `EEXIST`, opened without following it, and refused by the same check. The
//! returned handle is what the operation uses to the end.
//!
//! Nothing of the service's own is a destination: a chain folder (a `vmsnap-backup-*` folder,
//! one holding VMSnap's `vmsnap.sha256`, or one holding virtnbdbackup's `checkpoints/`
//! beside a `<domain>.cpt`), anything inside one, and a domain folder holding chains are
//! refused, so guest content or a restored image can never land in — or, with overwrite,
//! replace — a backup. A folder that merely holds something called `checkpoints` (many a
//! home directory does) is not a chain.

use std::path::{Component, Path};

use super::fs_access::untrusted_because;
use super::safe_fs::{Dir, Identity, Kind};

/// What marks a chain folder: its name, or what VMSnap and virtnbdbackup write into it.
const CHAIN_PREFIX: &str = "vmsnap-backup-";
const VMSNAP_MARKER: &str = "vmsnap.sha256";
const CHECKPOINTS: &str = "checkpoints";

/// An open destination folder, and the topmost folder this walk created (to remove it again
/// when the operation fails before anything lands).
#[derive(Debug)]
pub struct Destination {
    pub dir: Dir,
    created: Option<Created>,
}

#[derive(Debug)]
struct Created {
    parent: Dir,
    name: String,
    identity: Identity,
}

impl Destination {
    /// Removes the folders this walk created, if they are still the same and empty of
    /// anything else than empty folders it made; a failure is only logged (nothing of the
    /// caller's is at stake).
    pub fn remove_created(self) {
        let Some(created) = self.created else {
            return;
        };
        drop(self.dir);
        if let Err(e) = created
            .parent
            .remove_empty_tree(&created.name, created.identity)
        {
            tracing::warn!(folder = %created.parent.path().join(&created.name).display(), error = %e, "created folder not removed");
        }
    }

    /// Whether the walk created the destination (or a folder above it).
    pub fn was_created(&self) -> bool {
        self.created.is_some()
    }
}

/// Why a destination is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Another user could change it (or a folder on its way), or it is a link.
    #[error("{0}")]
    Untrusted(String),
    /// It is, or is inside, a folder of the service's own.
    #[error("{0}")]
    Internal(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path, source: std::io::Error) -> Refused {
    if super::safe_fs::is_symlink_refusal(&source) {
        return Refused::Untrusted(format!(
            "{} is a symlink (the service never follows one to a target)",
            path.display()
        ));
    }
    Refused::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check(dir: &Dir) -> Result<(), Refused> {
    let meta = dir.meta().map_err(|e| io(dir.path(), e))?;
    match untrusted_because(&meta) {
        Some(why) => Err(Refused::Untrusted(format!(
            "{} {why}",
            dir.path().display()
        ))),
        None => Ok(()),
    }
}

/// Whether `dir` (with the name `name`) is a chain folder.
fn is_chain(dir: &Dir, name: &str) -> bool {
    if name.starts_with(CHAIN_PREFIX) || dir.meta_of(VMSNAP_MARKER).is_ok() {
        return true;
    }
    // Listed only where a `checkpoints` folder is: the walk stays a few `stat`s elsewhere.
    dir.meta_of(CHECKPOINTS).is_ok_and(|m| m.kind == Kind::Dir)
        && dir.entries().is_ok_and(|entries| {
            entries
                .iter()
                .any(|e| e.kind == Kind::File && e.name.ends_with(".cpt"))
        })
}

fn refuse_internal(dir: &Dir, name: &str) -> Result<(), Refused> {
    if is_chain(dir, name) {
        return Err(Refused::Internal(format!(
            "{} is a backup chain folder or inside one; restore or extract elsewhere",
            dir.path().display()
        )));
    }
    Ok(())
}

/// Opens the absolute folder `path` for writing into as root, creating what is missing
/// (mode `mode`), refusing a link anywhere, a folder another user could change, and any
/// folder of the service's own (chains, domain folders holding chains, `internal`).
pub fn open(path: &Path, mode: u32, internal: &[&Path]) -> Result<Destination, Refused> {
    walk(path, Some(mode), internal).map(|d| d.expect("created where missing"))
}

/// [`open`]'s checks on the part of `path` that exists, creating nothing: a call is refused
/// before its job starts (the job opens the folder again, and that open is what counts).
pub fn inspect(path: &Path, internal: &[&Path]) -> Result<(), Refused> {
    walk(path, None, internal).map(|_| ())
}

/// With `create`, missing folders are made with that mode; without, the walk ends (`None`)
/// at the first missing one.
fn walk(
    path: &Path,
    create: Option<u32>,
    internal: &[&Path],
) -> Result<Option<Destination>, Refused> {
    if let Some(inside) = internal.iter().find(|i| path.starts_with(i)) {
        return Err(Refused::Internal(format!(
            "{} is inside the service's own {}; restore or extract elsewhere",
            path.display(),
            inside.display()
        )));
    }
    let mut dir = Dir::open(Path::new("/")).map_err(|e| io(Path::new("/"), e))?;
    check(&dir)?;
    let mut created: Option<Created> = None;
    for component in path.components() {
        let name = match component {
            Component::RootDir => continue,
            Component::Normal(n) => n
                .to_str()
                .ok_or_else(|| Refused::Untrusted(format!("{} is not UTF-8", path.display())))?,
            _ => {
                return Err(Refused::Untrusted(format!(
                    "{} is not a plain absolute path",
                    path.display()
                )))
            }
        };
        let child_path = dir.path().join(name);
        let next = match dir.open_dir(name) {
            Ok(next) => next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(mode) = create else {
                    return Ok(None);
                };
                match dir.create_dir(name, mode) {
                    Ok(made) => {
                        made.set_mode(mode).map_err(|e| io(&child_path, e))?;
                        if created.is_none() {
                            created = Some(Created {
                                parent: dir.reopen().map_err(|e| io(dir.path(), e))?,
                                name: name.to_string(),
                                identity: made.identity().map_err(|e| io(&child_path, e))?,
                            });
                        }
                        made
                    }
                    // Someone else made it in between: opened without following it and
                    // judged like any existing folder below.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        dir.open_dir(name).map_err(|e| io(&child_path, e))?
                    }
                    Err(e) => return Err(io(&child_path, e)),
                }
            }
            // O_DIRECTORY | O_NOFOLLOW on a link is ENOTDIR: say what is in the way.
            Err(_) if dir.is_symlink(name) => {
                return Err(io(
                    &child_path,
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                ))
            }
            Err(e) => return Err(io(&child_path, e)),
        };
        check(&next)?;
        refuse_internal(&next, name)?;
        dir = next;
    }
    // A domain folder: chains side by side with what would land.
    let entries = dir.entries().map_err(|e| io(dir.path(), e))?;
    if let Some(chain) = entries
        .iter()
        .find(|e| e.kind == Kind::Dir && e.name.starts_with(CHAIN_PREFIX))
    {
        return Err(Refused::Internal(format!(
            "{} holds the backup chain {}; restore or extract elsewhere",
            dir.path().display(),
            chain.name
        )));
    }
    Ok(Some(Destination { dir, created }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmsnap-dest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn refused(r: Result<Destination, Refused>) -> String {
        match r {
            Ok(d) => panic!("accepted {}", d.dir.path().display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_folders_are_made_by_handle_and_removed_again() {
        let base = scratch("make");
        let dest = open(&base.join("a/b/c"), 0o755, &[]).unwrap();
        assert!(dest.was_created());
        assert_eq!(dest.dir.meta().unwrap().uid, 0);
        assert!(base.join("a/b/c").is_dir());
        dest.remove_created();
        assert!(!base.join("a").exists());
        // An existing folder is not "created", and stays.
        std::fs::create_dir(base.join("kept")).unwrap();
        let dest = open(&base.join("kept"), 0o755, &[]).unwrap();
        assert!(!dest.was_created());
        dest.remove_created();
        assert!(base.join("kept").is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_folder_another_user_made_or_a_link_is_refused() {
        let base = scratch("other");
        std::fs::create_dir(base.join("theirs")).unwrap();
        std::os::unix::fs::chown(base.join("theirs"), Some(65534), Some(65534)).unwrap();
        let why = refused(open(&base.join("theirs"), 0o755, &[]));
        assert!(why.contains("not root"), "{why}");
        let why = refused(open(&base.join("theirs/new"), 0o755, &[]));
        assert!(why.contains("not root"), "{why}");
        assert!(
            !base.join("theirs/new").exists(),
            "created inside a refused folder"
        );
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let why = refused(open(&base.join("link/new"), 0o755, &[]));
        assert!(why.contains("symlink"), "{why}");
        assert!(!base.join("real/new").exists(), "created through a link");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn chains_domain_folders_and_internal_folders_are_refused() {
        let base = scratch("chains");
        let chain = base.join("root/vm/vmsnap-backup-monthly-2026-12");
        std::fs::create_dir_all(chain.join("checkpoints")).unwrap();
        // virtnbdbackup's own chain, whatever its name; and a home with a `checkpoints` folder.
        let by_hand = base.join("by-hand");
        std::fs::create_dir_all(by_hand.join("checkpoints")).unwrap();
        std::fs::write(by_hand.join("vm.cpt"), b"[]").unwrap();
        let why = refused(open(&by_hand.join("restored"), 0o755, &[]));
        assert!(why.contains("chain"), "{why}");
        let home = base.join("home");
        std::fs::create_dir_all(home.join("checkpoints")).unwrap();
        assert!(open(&home.join("restored"), 0o755, &[]).is_ok());
        for target in [chain.clone(), chain.join("checkpoints"), chain.join("x/y")] {
            let why = refused(open(&target, 0o755, &[]));
            assert!(why.contains("chain"), "{why}");
        }
        assert!(!chain.join("x").exists());
        let why = refused(open(&base.join("root/vm"), 0o755, &[]));
        assert!(why.contains("holds the backup chain"), "{why}");
        // A chain by its contents, whatever its name.
        std::fs::create_dir_all(base.join("root/vm2/renamed")).unwrap();
        std::fs::write(base.join("root/vm2/renamed/vmsnap.sha256"), b"").unwrap();
        let why = refused(open(&base.join("root/vm2/renamed"), 0o755, &[]));
        assert!(why.contains("chain"), "{why}");
        let state = base.join("state");
        let why = refused(open(&state.join("scratch/x"), 0o755, &[&state]));
        assert!(why.contains("service's own"), "{why}");
        // Beside the chains, in a folder of its own, is fine.
        assert!(open(&base.join("root/restored"), 0o755, &[]).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
