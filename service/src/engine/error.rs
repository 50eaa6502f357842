//! What an engine operation reports to its caller, in the engine's own words.
//!
//! Host errors are classified here, at the engine's edge: the bus maps these variants to the
//! contract's typed errors and never sees a host type.

use crate::host;
use crate::paths::InvalidPath;
use crate::selection::InvalidName;

/// Errors an engine operation reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("No matching domains found for: {}", .0.join(", "))]
    NoSuchDomain(Vec<String>),
    /// A domain that was there when the call began is gone (libvirt's words).
    #[error("{0}")]
    DomainGone(String),
    #[error("a job is already running for {0}")]
    AlreadyRunning(String),
    #[error("{0}")]
    NoSuchBackup(String),
    #[error("{0}")]
    TargetExists(String),
    #[error(transparent)]
    NotWritable(#[from] crate::paths::NotWritable),
    /// A folder or file the service will not use for this caller (not root's alone, a
    /// symlink in the way, not a regular file, over its size cap).
    #[error("{0}")]
    Untrusted(String),
    /// The caller has too many calls or jobs under way, or the service as a whole has.
    #[error("{0}")]
    Busy(String),
    /// Inside a browsed backup: no such volume, file or directory (or no such session).
    #[error("{0}")]
    NoSuchFile(String),
    /// A volume the reader does not read ("xfs: not supported").
    #[error("{0}")]
    UnsupportedFilesystem(String),
    #[error("{0}")]
    Encrypted(String),
    /// The guest's file system broke its reader; the session is closed.
    #[error("{0}")]
    CorruptFilesystem(String),
    /// A chain's data files are damaged: their index refuses them.
    #[error("{0}")]
    CorruptBackup(String),
    /// What would be written does not fit where it would go.
    #[error("{0}")]
    NoSpace(String),
    /// Something the feature needs is not installed (a program, the reader, its user).
    #[error("{0}")]
    MissingSetup(String),
    /// libvirtd cannot be reached.
    #[error("libvirt is unreachable: {0}")]
    HostUnavailable(String),
    /// The job was asked to stop and did, the safe way.
    #[error("cancelled")]
    Cancelled,
    /// The work itself failed; the text says why (a program's error, an I/O error, a
    /// verdict such as a failed verification).
    #[error("{0}")]
    Failed(String),
}

impl From<host::Error> for Error {
    fn from(e: host::Error) -> Self {
        match e {
            host::Error::Rejected(m) => Error::Untrusted(m),
            e @ host::Error::MissingDependency(_) => Error::MissingSetup(e.to_string()),
            host::Error::HostUnavailable(m) => Error::HostUnavailable(m),
            e @ host::Error::NoSuchDomain(_) => Error::DomainGone(e.to_string()),
            host::Error::Cancelled { .. } => Error::Cancelled,
            other => Error::Failed(other.to_string()),
        }
    }
}

impl From<InvalidName> for Error {
    fn from(e: InvalidName) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<InvalidPath> for Error {
    fn from(e: InvalidPath) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<crate::host::safe_fs::ReadError> for Error {
    fn from(e: crate::host::safe_fs::ReadError) -> Self {
        host::Error::from(e).into()
    }
}
