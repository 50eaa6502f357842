//! Keys of the `a{sv}` option dictionaries the methods accept.
//!
//! Options travel as a dictionary rather than as positional arguments so that new options can be
//! added without changing a method signature (which would break every existing client). The
//! service rejects unknown keys and wrongly typed values with `Error.InvalidArgument`, naming
//! the key, so a typo never silently changes what happens.

/// `s`: absolute path of the backup root. With it, Status adds the statistics of the current
/// period's backup folder `<output>/<domain>/vmsnap-backup-<period>`.
pub const OUTPUT: &str = "output";

/// `s`: how backups are grouped into period folders: `month` (default), `quarter`,
/// `bi-annual` or `year`.
pub const GROUP_BY: &str = "group_by";

/// `s`: libvirt URI the caller expects the service to use. The service never connects where a
/// caller says (it runs as root); it only refuses the call when this differs from its own
/// configured URI, so a script written for another host fails loudly instead of reporting on the
/// wrong one.
pub const CONNECT: &str = "connect";

/// `b`: Status also asks QEMU's monitor for the bitmaps of running domains, which shows
/// bitmaps without a checkpoint (orphans) that libvirt's API cannot. libvirt then marks those
/// domains "tainted: custom monitor control commands issued" for as long as they run, so it
/// needs the right to back up (`org.vmsnap.backup`), and is off by default.
pub const DEEP: &str = "deep";

/// The keys Status accepts.
pub const STATUS_KEYS: &[&str] = &[OUTPUT, GROUP_BY, CONNECT, DEEP];

/// `b`: after a domain's backup succeeded, prune its older period folders (see Prune).
pub const PRUNE: &str = "prune";

/// `b`: include raw disks (full or copy only; they never take part in incrementals).
pub const RAW: &str = "raw";

/// `u`: with pruning, how many past periods survive besides the rule's own (default 0: the
/// original's behaviour).
pub const KEEP: &str = "keep";

/// `b`: report what would be removed, remove nothing.
pub const DRY_RUN: &str = "dry_run";

/// `s`: what Scrub removes: `checkpoint`, `bitmap`, `both` or `all`.
pub const TYPE: &str = "type";

/// `s`: Scrub only these VMSnap names: one name, or a glob with `*` and `?`.
pub const CHECKPOINT: &str = "checkpoint";

/// The keys Backup accepts.
pub const BACKUP_KEYS: &[&str] = &[OUTPUT, GROUP_BY, CONNECT, PRUNE, KEEP, RAW];

/// The keys Scrub accepts.
pub const SCRUB_KEYS: &[&str] = &[TYPE, CHECKPOINT, DRY_RUN, CONNECT];

/// The keys Prune accepts.
pub const PRUNE_KEYS: &[&str] = &[OUTPUT, GROUP_BY, KEEP, DRY_RUN, CONNECT];

/// `s`: a chain folder's name under `<output>/<domain>/` (default: the live or latest chain).
pub const FOLDER: &str = "folder";

/// `s`: restore up to this checkpoint (default: the chain's last).
pub const UNTIL: &str = "until";

/// `s`: restore only this disk (target name, `vda`).
pub const DISK: &str = "disk";

/// `s`: absolute directory to restore into.
pub const TARGET: &str = "target";

/// `b`: replace files that already exist in the target.
pub const OVERWRITE: &str = "overwrite";

/// `s`: define a new domain of this name from the backed-up configuration.
pub const DEFINE_AS: &str = "define_as";

/// The keys ListBackups accepts.
pub const LIST_KEYS: &[&str] = &[OUTPUT, CONNECT];

/// The keys Verify accepts.
pub const VERIFY_KEYS: &[&str] = &[OUTPUT, FOLDER, CONNECT];

/// The keys Restore accepts.
pub const RESTORE_KEYS: &[&str] = &[
    OUTPUT, FOLDER, UNTIL, DISK, TARGET, OVERWRITE, DEFINE_AS, CONNECT,
];
