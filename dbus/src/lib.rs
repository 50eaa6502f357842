//! The D-Bus contract of VMSnap.
//!
//! Everything `vmsnapd` promises on the system bus and `vmsnapctl` relies on lives here and
//! nowhere else: the well-known names ([`names`]), the polkit action ids ([`actions`]), the
//! typed errors ([`Error`]), the wire records ([`status`]), the option dictionaries ([`options`]) and
//! the client proxies ([`proxy`]). The checked-in introspection XML under `interfaces/` is the
//! same contract in the form other languages read; a golden test keeps the two in step.
//!
//! The CLI depends on this crate and never on the service crate, so the only way the client can
//! learn something about the service is through what is written down here.

pub mod actions;
pub mod error;
pub mod files;
pub mod job;
pub mod names;
pub mod options;
pub mod proxy;
pub mod status;

pub use error::Error;
pub use job::{DiskProgress, DomainResult, JobState, Level, Operation};
pub use options::{
    BackupOptions, ListOptions, PruneOptions, RestoreOptions, ScrubOptions, StatusOptions,
    VerifyOptions,
};
pub use proxy::{Interaction, JobProxy, ManagerProxy};
pub use status::{
    BackupChain, BackupDirStats, BackupPoint, BitmapStatus, DiskStatus, DomainHealth, DomainStatus,
    OverallStatus, PruneResult, ScrubResult, SkippedDisk,
};

/// The checked-in introspection XML of the Manager interface, exactly as shipped.
pub const MANAGER_INTROSPECTION_XML: &str =
    include_str!("../interfaces/org.vmsnap.VMSnap1.Manager.xml");

/// The checked-in introspection XML of the Job interface.
pub const JOB_INTROSPECTION_XML: &str = include_str!("../interfaces/org.vmsnap.VMSnap1.Job.xml");

/// Introspection XML of `org.vmsnap.VMSnap1.Files` (a file-browsing session).
pub const FILES_INTROSPECTION_XML: &str =
    include_str!("../interfaces/org.vmsnap.VMSnap1.Files.xml");
