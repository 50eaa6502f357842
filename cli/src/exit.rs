//! Exit codes, following the original VMSnap's table where it applies.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (a status report was printed, whatever it says) |
//! | 1 | selection error: no domains given, a name not found, a pattern matching nothing |
//! | 2 | usage error: bad switch or option value (the original used 2 for a missing --output) |
//! | 3 | general failure: libvirt unreachable, a host command failed, a domain could not be queried |
//! | 4 | a host program the service needs is missing |
//! | 5 | scrub or prune could not remove everything (the report says what) |
//! | 7 | more than one of --status/--backup/--scrub given |
//! | 8 | invalid or missing --scrubType |
//! | 9 | the service cannot be reached on the system bus |
//! | 10 | a job (backup, verify, restore) failed for at least one domain |
//! | 11 | a job was cancelled |
//! | 12 | not authorized (polkit said no, or needs a password nobody could type) |
//! | 13 | the restore target already holds files (and overwrite was not asked for) |
//! | 14 | the service may not write to the backup root or restore target (its sandbox) |
//! | 15 | the service will not use a folder or file (not root's alone, a symlink, too large) |
//! | 16 | too many calls or jobs under way for this user (or the service); try again later |
//! | 17 | the job cannot be cancelled: it has ended, or was cancelled already |
//! | 18 | `files`: no such file, directory or volume in the backup |
//! | 19 | `files`: the volume's file system is not supported, or it is encrypted |
//! | 20 | `files`: the guest's file system is damaged; the session ended |
//! | 21 | what would be written does not fit (target or scratch space, or the extraction cap) |
//! | 22 | `files`: the chain's data files are damaged (a frame, an extent, a missing point) |

use std::process::ExitCode;

use vmsnap_dbus::Error;

pub const OK: u8 = 0;
pub const SELECTION: u8 = 1;
pub const USAGE: u8 = 2;
pub const FAILURE: u8 = 3;
pub const MISSING_DEPENDENCY: u8 = 4;
pub const INCOMPLETE: u8 = 5;
pub const TOO_MANY_COMMANDS: u8 = 7;
pub const INVALID_SCRUB_TYPE: u8 = 8;
pub const UNREACHABLE: u8 = 9;
pub const JOB_FAILED: u8 = 10;
pub const JOB_CANCELLED: u8 = 11;
pub const ACCESS_DENIED: u8 = 12;
pub const TARGET_EXISTS: u8 = 13;
pub const NOT_WRITABLE: u8 = 14;
pub const UNTRUSTED: u8 = 15;
pub const BUSY: u8 = 16;
pub const NOT_CANCELABLE: u8 = 17;
pub const NO_SUCH_FILE: u8 = 18;
pub const UNREADABLE_VOLUME: u8 = 19;
pub const CORRUPT_FILESYSTEM: u8 = 20;
pub const NO_SPACE: u8 = 21;
pub const CORRUPT_BACKUP: u8 = 22;

/// The exit code for an error the service (or the bus) returned.
pub fn for_error(e: &Error) -> u8 {
    match e {
        Error::NoSuchDomain(_) => SELECTION,
        Error::InvalidArgument(_) => USAGE,
        Error::MissingDependency(_) => MISSING_DEPENDENCY,
        Error::NoSuchJob(_) | Error::NoSuchBackup(_) => SELECTION,
        Error::TargetExists(_) => TARGET_EXISTS,
        Error::NotWritable(_) => NOT_WRITABLE,
        Error::Untrusted(_) => UNTRUSTED,
        Error::Busy(_) => BUSY,
        Error::AlreadyCancelled(_) | Error::NotCancelable(_) => NOT_CANCELABLE,
        Error::NoSuchFile(_) => NO_SUCH_FILE,
        Error::UnsupportedFilesystem(_) | Error::Encrypted(_) => UNREADABLE_VOLUME,
        Error::CorruptFilesystem(_) => CORRUPT_FILESYSTEM,
        Error::NoSpace(_) => NO_SPACE,
        Error::CorruptBackup(_) => CORRUPT_BACKUP,
        Error::HostUnavailable(_) | Error::Failed(_) | Error::AlreadyRunning(_) => FAILURE,
        Error::ZBus(z) if is_unreachable(z) => UNREACHABLE,
        Error::ZBus(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied"
                || name.as_str()
                    == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" =>
        {
            ACCESS_DENIED
        }
        Error::ZBus(_) => FAILURE,
    }
}

/// Whether the error means the service (or the bus itself) is not there.
pub fn is_unreachable(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
        ),
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => true,
        _ => false,
    }
}

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
