//! What a caller other than root may see and hand to the service, decided from the file
//! system itself.
//!
//! Two rules, both walked by handle from `/` without following a symlink:
//! - [`may_list`]: could this uid list the folder itself? Search permission on every
//!   directory on the way, read and search on the folder, by the owner/group/other bits with
//!   the uid's own groups. A directory with an access ACL is answered only for its owner: an
//!   ACL can deny a user the mode bits would allow, and this check must never let in more.
//! - [`check_trusted`]: is every directory from `/` down to a folder root's alone (the sshd
//!   `StrictModes` rule: owned by root, writable by no group or other, unless sticky), so
//!   that no other user can swap one while a root program works there by path; and, for a
//!   chain a caller other than root hands over, every file in it too: it was written by the
//!   service (or root), so virtnbdrestore acting on its domain XML and metadata acts on
//!   root's data.

use std::path::{Component, Path};

use super::safe_fs::{Dir, Kind, Meta};

const ACCESS_ACL: &str = "system.posix_acl_access";

/// The uid's primary and supplementary groups, from the user database.
fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name.clone()) else {
        return vec![user.gid.as_raw()];
    };
    match nix::unistd::getgrouplist(&name, user.gid) {
        Ok(gids) => gids.into_iter().map(|g| g.as_raw()).collect(),
        Err(_) => vec![user.gid.as_raw()],
    }
}

fn has_access_acl(dir: &Dir) -> bool {
    // "No such attribute" (ENODATA) means no ACL; a file system without ACLs (EOPNOTSUPP)
    // has none either; anything else counts as an ACL, so that doubt never lets anyone in.
    match rustix::fs::fgetxattr(dir.handle(), ACCESS_ACL, &mut [0u8; 0]) {
        Ok(_) => true,
        Err(e) => e != rustix::io::Errno::NODATA && e != rustix::io::Errno::OPNOTSUPP,
    }
}

/// Whether `uid` (with `groups`) has all of `want` (bits of `0o7`) on an entry.
fn permits(meta: &Meta, uid: u32, groups: &[u32], want: u32) -> bool {
    let bits = if meta.uid == uid {
        meta.mode >> 6
    } else if groups.contains(&meta.gid) {
        meta.mode >> 3
    } else {
        meta.mode
    } & 0o7;
    bits & want == want
}

/// Whether `uid` could list the absolute directory `folder` itself. A folder that does not
/// exist is listable when its deepest existing ancestor is (what the caller could see).
pub fn may_list(folder: &Path, uid: u32) -> std::io::Result<bool> {
    if uid == 0 {
        return Ok(true);
    }
    let groups = groups_of(uid);
    let mut dir = Dir::open(Path::new("/"))?;
    let names: Vec<String> = folder
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for name in &names {
        let meta = dir.meta()?;
        let acl_blocks = meta.uid != uid && has_access_acl(&dir);
        if acl_blocks || !permits(&meta, uid, &groups, 0o1) {
            return Ok(false);
        }
        match dir.open_dir(name) {
            Ok(next) => dir = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    let meta = dir.meta()?;
    let acl_blocks = meta.uid != uid && has_access_acl(&dir);
    Ok(!acl_blocks && permits(&meta, uid, &groups, 0o5))
}

/// Why an entry is not root's alone, or `None`. A sticky directory (`/tmp`) may be writable
/// by others: they cannot rename or remove what root has in it.
pub(crate) fn untrusted_because(meta: &Meta) -> Option<String> {
    let sticky_dir = meta.kind == Kind::Dir && meta.mode & 0o1000 != 0;
    if meta.uid != 0 {
        Some(format!("is owned by uid {}, not root", meta.uid))
    } else if meta.mode & 0o022 != 0 && !sticky_dir {
        Some(format!(
            "is writable by its group or others (mode {:o})",
            meta.mode
        ))
    } else {
        None
    }
}

/// Refuses `folder` unless every directory from `/` down to it is owned by root and writable
/// by nobody else (or sticky), so no other user can swap a directory on the way while a root
/// program works there by path. With `contents`, every entry inside (two levels:
/// virtnbdbackup writes `checkpoints/`) must be root's alone too: a chain only root could
/// have written. Missing parts pass when `allow_missing` (a backup or restore creates them,
/// as root); the message names the first offending path.
pub fn check_trusted(folder: &Path, allow_missing: bool, contents: bool) -> Result<(), String> {
    let mut dir = Dir::open(Path::new("/")).map_err(|e| describe(Path::new("/"), e))?;
    let check = |dir: &Dir| -> Result<(), String> {
        let meta = dir.meta().map_err(|e| describe(dir.path(), e))?;
        match untrusted_because(&meta) {
            Some(why) => Err(format!("{} {why}", dir.path().display())),
            None => Ok(()),
        }
    };
    check(&dir)?;
    for component in folder.components() {
        let name = match component {
            Component::RootDir => continue,
            Component::Normal(name) => name.to_string_lossy(),
            _ => return Err(format!("{} is not a plain absolute path", folder.display())),
        };
        match dir.open_dir(&*name) {
            Ok(next) => dir = next,
            // Missing, or a file where a directory would go: creating it fails later with
            // that reason, and there is nothing on the way another user could swap.
            Err(e)
                if allow_missing
                    && (e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR)) =>
            {
                return Ok(())
            }
            Err(e) => return Err(describe(&dir.path().join(&*name), e)),
        }
        check(&dir)?;
    }
    if contents {
        check_contents(&dir, 0)?;
    }
    Ok(())
}

fn check_contents(dir: &Dir, depth: usize) -> Result<(), String> {
    for entry in dir.entries().map_err(|e| describe(dir.path(), e))? {
        let path = dir.path().join(&entry.name);
        let meta = dir.meta_of(&entry.name).map_err(|e| describe(&path, e))?;
        if let Some(why) = untrusted_because(&meta) {
            return Err(format!("{} {why}", path.display()));
        }
        match entry.kind {
            Kind::Dir if depth == 0 => check_contents(
                &dir.open_dir(&entry.name).map_err(|e| describe(&path, e))?,
                1,
            )?,
            Kind::Dir => return Err(format!("{} is nested deeper than a chain", path.display())),
            Kind::File => {}
            Kind::Other => {
                return Err(format!(
                    "{} is not a regular file or directory",
                    path.display()
                ))
            }
        }
    }
    Ok(())
}

fn describe(path: &Path, e: std::io::Error) -> String {
    super::Error::at(path, e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, gid: u32, mode: u32) -> Meta {
        Meta {
            kind: Kind::Dir,
            uid,
            gid,
            mode,
            len: 0,
            mtime: 0,
            identity: super::super::safe_fs::Identity { dev: 0, ino: 0 },
        }
    }

    #[test]
    fn owner_group_and_other_bits_are_applied_in_order() {
        // The owner class applies to the owner even when "other" would allow more.
        assert!(!permits(&meta(1000, 0, 0o077), 1000, &[], 0o1));
        assert!(permits(&meta(0, 50, 0o750), 1000, &[50], 0o5));
        assert!(!permits(&meta(0, 50, 0o750), 1000, &[51], 0o1));
        assert!(permits(&meta(0, 0, 0o701), 1000, &[], 0o1));
        assert!(!permits(&meta(0, 0, 0o701), 1000, &[], 0o5));
    }

    #[test]
    fn a_root_only_folder_is_not_listable_by_others() {
        let base = std::env::temp_dir().join(format!("vmsnap-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("open/closed/inner")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &str, m| {
            std::fs::set_permissions(base.join(p), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("", 0o755);
        set("open", 0o755);
        set("open/closed", 0o700);
        let nobody = 65534;
        assert!(may_list(&base.join("open"), nobody).unwrap());
        assert!(!may_list(&base.join("open/closed"), nobody).unwrap());
        assert!(!may_list(&base.join("open/closed/inner"), nobody).unwrap());
        assert!(may_list(&base.join("open/closed"), 0).unwrap());
        assert_eq!(
            check_trusted(&base.join("open/closed"), false, true),
            Ok(())
        );
        assert_eq!(
            check_trusted(&base.join("open/new/deeper"), true, true),
            Ok(())
        );
        set("open", 0o775);
        let refused = check_trusted(&base.join("open/closed"), false, true).unwrap_err();
        assert!(refused.contains("writable by its group"), "{refused}");
        set("open", 0o755);
        std::os::unix::fs::chown(base.join("open/closed/inner"), Some(nobody), None).unwrap();
        let refused = check_trusted(&base.join("open/closed"), false, true).unwrap_err();
        assert!(refused.contains("not root"), "{refused}");
        assert_eq!(
            check_trusted(&base.join("open/closed"), false, false),
            Ok(())
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
