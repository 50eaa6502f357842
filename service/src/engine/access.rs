//! What a caller other than root may read, hand over and write, decided before any work.
//!
//! Root is entitled to everything. Any other caller:
//! - reads backup folders (ListBackups, Status's `backupDirStats`) only where its own file
//!   permissions would let it list them; beyond that the bus layer asks polkit for
//!   `org.vmsnap.read` ([`Engine::unlistable`] says which folders need it);
//! - writes (Backup's output, Restore's target) and reads chains for Verify and Restore only
//!   inside a configured backup root, and only chains whose every file is root's alone: such
//!   a chain was written by the service, so virtnbdrestore never acts on a caller's domain
//!   XML or metadata.
//!
//! For every caller, root included, the way to a folder the service works in by path (root
//! programs write and read there: virtnbdbackup, virtnbdrestore, qemu-img) must be root's
//! alone from `/` down ([`fs_access::check_trusted`]), so no other user can swap a directory
//! for a symlink while they work.

use std::path::{Path, PathBuf};

use super::{Engine, Error};

/// How an operation uses a folder it is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Written into (created where missing): a backup's output, a restore's target.
    Destination,
    /// Read by a root program: a chain to verify or restore.
    Source,
}
use crate::host::destination::{self, Destination, Refused};
use crate::host::fs_access;
use crate::paths;
use crate::selection::Selector;

impl Engine {
    /// Refuses a folder the service would work in by path as root (a backup's output, a
    /// restore's target, a chain to rebuild) unless no user but root can change the way to
    /// it ([`fs_access::check_trusted`]); for a caller other than root it must also lie in a
    /// configured root, and a `source` chain must be root's alone inside as well.
    /// `allow_missing`: parts the operation will create.
    pub(crate) fn require_trusted(&self, uid: u32, path: &Path, use_as: Use) -> Result<(), Error> {
        let (allow_missing, contents) = match use_as {
            Use::Destination => (true, false),
            Use::Source => (false, uid != 0),
        };
        let path = if uid == 0 {
            path.to_path_buf()
        } else {
            paths::confine(path, &self.config.backup_roots)?
        };
        fs_access::check_trusted(&path, allow_missing, contents).map_err(|why| {
            Error::Untrusted(format!(
                "{why}: the service works only in folders that root alone can change (see \
                 the README's authorization section)"
            ))
        })
    }

    /// Opens (creating what is missing) the folder a restore or an extraction writes into,
    /// by handle: for a caller other than root confined to a backup root; refused when
    /// another user could change it or when it is a folder of the service's own
    /// ([`destination::open`]). The handle is what the job then uses.
    pub(crate) fn open_destination(&self, uid: u32, path: &Path) -> Result<Destination, Error> {
        let path = self.destination_path(uid, path)?;
        destination::open(&path, 0o755, &self.internal_folders()).map_err(refused)
    }

    /// [`Engine::open_destination`]'s checks without creating anything, for the call itself.
    pub(crate) fn inspect_destination(&self, uid: u32, path: &Path) -> Result<(), Error> {
        let path = self.destination_path(uid, path)?;
        destination::inspect(&path, &self.internal_folders()).map_err(refused)
    }

    fn destination_path(&self, uid: u32, path: &Path) -> Result<PathBuf, Error> {
        Ok(if uid == 0 {
            path.to_path_buf()
        } else {
            paths::confine(path, &self.config.backup_roots)?
        })
    }

    fn internal_folders(&self) -> [&Path; 2] {
        [&self.config.state_dir, &self.config.scratch_dir]
    }

    /// The folders under `root` of the selected domains that `uid` could not list itself:
    /// reading them for that caller needs `org.vmsnap.read`. `chains`: also each chain
    /// folder (ListBackups); otherwise the domain folders (Status's statistics).
    pub async fn unlistable(
        &self,
        uid: u32,
        root: &Path,
        selectors: &[Selector],
        chains: bool,
    ) -> Result<Vec<PathBuf>, Error> {
        if uid == 0 {
            return Ok(Vec::new());
        }
        let domains = self.resolve_domains(&self.reads, selectors).await?;
        let root = root.to_path_buf();
        let names: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        let check = move || -> Vec<PathBuf> {
            let hidden = |f: &Path| !fs_access::may_list(f, uid).unwrap_or(false);
            if hidden(&root) {
                return vec![root];
            }
            let mut out = Vec::new();
            for name in &names {
                let dir = root.join(name);
                if hidden(&dir) {
                    // Only what the caller named: the names inside are not its to learn.
                    out.push(dir);
                } else if chains {
                    let inside = super::chains::catalog::chains(&dir)
                        .map(|c| c.into_iter().map(|c| c.path).collect::<Vec<_>>())
                        .unwrap_or_default();
                    out.extend(inside.into_iter().filter(|c| hidden(c)));
                }
            }
            out
        };
        tokio::task::spawn_blocking(check)
            .await
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

fn refused(e: Refused) -> Error {
    match e {
        Refused::Untrusted(why) => Error::Untrusted(format!(
            "{why}: the service writes only into folders that root alone can change (see the \
             README's authorization section)"
        )),
        Refused::Internal(why) => Error::InvalidArgument(why),
        Refused::Io { path, source } => crate::host::Error::at(&path, source).into(),
    }
}
