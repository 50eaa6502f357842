//! Everything that touches the host: external programs, their output, and the backup folders.
//!
//! Nothing in here knows about D-Bus. Every program runs from an argument vector
//! ([`command`]), never through a shell, and every piece of program output is parsed by a
//! function that turns malformed input into an [`Error`] instead of panicking.

pub mod backup_dir;
pub mod checkpoint_xml;
pub mod checksums;
pub mod command;
pub mod destination;
pub mod domain_xml;
pub mod fs_access;
pub mod guestfs;
pub mod libvirt;
pub mod libvirt_rpc;
pub mod nbd_export;
pub mod qemu_img;
pub mod qmp;
pub mod safe_fs;
pub mod space;
pub mod sparse;
pub mod stream_meta;
pub mod textfile;
pub mod tools;
pub mod virtnbdbackup;
pub mod virtnbdrestore;
pub mod xdr;

use std::path::PathBuf;

/// What can go wrong on the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Missing dependencies ({})", .0.join(", "))]
    MissingDependency(Vec<String>),
    #[error("libvirt is unreachable: {0}")]
    HostUnavailable(String),
    #[error("domain {0:?} does not exist")]
    NoSuchDomain(String),
    #[error("{program} timed out after {seconds} s")]
    Timeout { program: String, seconds: u64 },
    /// The caller's job was cancelled while the program ran; it was stopped.
    #[error("{program} stopped: cancelled")]
    Cancelled { program: String },
    #[error("{program} failed: {message}")]
    CommandFailed { program: String, message: String },
    /// libvirt's own error for a call, with its `virterror.h` code.
    #[error("libvirt: {message}")]
    Libvirt { code: i32, message: String },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("unexpected output from {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file or folder the service will not use: a symlink in the way, not a regular file,
    /// over its size cap, or (for callers other than root) not written by the service.
    #[error("{0}")]
    Rejected(String),
}

impl From<safe_fs::ReadError> for Error {
    fn from(e: safe_fs::ReadError) -> Self {
        match e {
            safe_fs::ReadError::Io { path, source } => Error::Io { path, source },
            other => Error::Rejected(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error at `path`; a refused symlink becomes [`Error::Rejected`].
    pub fn at(path: &std::path::Path, source: std::io::Error) -> Self {
        if safe_fs::is_symlink_refusal(&source) {
            Error::Rejected(format!(
                "{}: a symlink is in the way (the service never follows one here)",
                path.display()
            ))
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    pub fn parse(what: impl Into<String>, detail: impl ToString) -> Self {
        Error::Parse {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
