//! Typed errors of the service, `org.vmsnap.VMSnap1.Error.<Name>` on the bus.
//!
//! One enum serves both sides: the service returns it from interface methods, and the proxies
//! return it too, so a client branches on the variant instead of parsing message text.
//! Authorization failures use the standard `org.freedesktop.DBus.Error.AccessDenied` and
//! arrive as [`Error::ZBus`].

use zbus::DBusError;

#[derive(Debug, DBusError)]
#[zbus(prefix = "org.vmsnap.VMSnap1.Error")]
pub enum Error {
    /// Any transport-level or standard D-Bus error (AccessDenied, ServiceUnknown, timeouts …).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// One or more selected domains do not exist, or a pattern matched none. The message names
    /// every name and pattern that was not found.
    NoSuchDomain(String),
    /// An argument or option is malformed; the message names it and says what is expected.
    InvalidArgument(String),
    /// A host program the operation needs is not installed; the message lists them by name.
    MissingDependency(String),
    /// libvirt cannot be reached (libvirtd not running, socket refused, call timed out).
    HostUnavailable(String),
    /// A host operation failed; the message carries the tool's own error line.
    Failed(String),
    /// A job for one of the domains is already running; the message names them.
    AlreadyRunning(String),
    /// No job with that path exists (any more).
    NoSuchJob(String),
    /// No backup chain or point matches what was asked for.
    NoSuchBackup(String),
    /// A restore target already holds files and overwriting was not asked for.
    TargetExists(String),
    /// The service may not write to a backup root or restore target: it is read-only for the
    /// service (its systemd unit's sandbox). The message names the path and how to allow it.
    NotWritable(String),
    /// The service will not use a folder or file for this caller: for callers other than root
    /// a chain or target that is not root's alone (owned by root, writable by nobody else);
    /// for anyone a symlink in the way, something not a regular file, or a file over its size
    /// cap. The message names the path and why.
    Untrusted(String),
    /// The caller has too many calls or jobs under way (or the service as a whole has); try
    /// again when some have finished. The message says which limit.
    Busy(String),
    /// Cancel was asked for this job before; it is stopping.
    AlreadyCancelled(String),
    /// The job cannot be cancelled: it has ended (the message says how).
    NotCancelable(String),
    /// No such file, directory or volume inside the backup, or no such browsing session
    /// (closed, expired, or another caller's).
    NoSuchFile(String),
    /// The volume holds a file system the service does not read; the message names it
    /// ("xfs: not supported").
    UnsupportedFilesystem(String),
    /// The volume is encrypted (LUKS, BitLocker); the message names it.
    Encrypted(String),
    /// The guest's file system is damaged (or built to harm its reader); the session ended.
    CorruptFilesystem(String),
    /// A chain's data files are damaged (or built to harm their reader): a frame, an extent or
    /// a compressed frame is not what its stream says, or a point of the chain is missing. The
    /// message names the file and what is wrong; the service goes on.
    CorruptBackup(String),
    /// What the operation would write does not fit: an extraction larger than its target's
    /// free space (less a margin) or the configured cap, a restore or verify rebuild that would
    /// not fit the scratch area. The message says how much is needed and how much is free.
    NoSpace(String),
}

impl Error {
    /// The short D-Bus name of the error (`NoSuchDomain` …), or the full name for standard
    /// errors, for logs and exit-code mapping.
    pub fn short_name(&self) -> String {
        match self {
            Error::ZBus(zbus::Error::MethodError(name, _, _)) => name.to_string(),
            Error::ZBus(_) => "Transport".to_string(),
            other => other
                .name()
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The human-readable message without the error name.
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(zbus::Error::MethodError(_, Some(msg), _)) => msg.clone(),
            Error::ZBus(e) => e.to_string(),
            Error::NoSuchDomain(m)
            | Error::InvalidArgument(m)
            | Error::MissingDependency(m)
            | Error::HostUnavailable(m)
            | Error::Failed(m)
            | Error::AlreadyRunning(m)
            | Error::NoSuchJob(m)
            | Error::NoSuchFile(m)
            | Error::UnsupportedFilesystem(m)
            | Error::Encrypted(m)
            | Error::CorruptFilesystem(m)
            | Error::CorruptBackup(m)
            | Error::NoSpace(m)
            | Error::NoSuchBackup(m)
            | Error::TargetExists(m)
            | Error::NotWritable(m)
            | Error::Untrusted(m)
            | Error::Busy(m)
            | Error::AlreadyCancelled(m)
            | Error::NotCancelable(m) => m.clone(),
        }
    }
}
