//! Well-known bus name, object paths and interface names.
//!
//! They are versioned (`…VMSnap1`) so that an incompatible future API can live beside this one
//! instead of breaking clients that were written against it.

/// The name `vmsnapd` owns on the system bus.
pub const BUS_NAME: &str = "org.vmsnap.VMSnap1";

/// The manager object: entry point for every operation.
pub const MANAGER_PATH: &str = "/org/vmsnap/VMSnap1";

/// The manager interface, served at [`MANAGER_PATH`].
pub const MANAGER_INTERFACE: &str = "org.vmsnap.VMSnap1.Manager";

/// Prefix of every error name the service returns (`org.vmsnap.VMSnap1.Error.NoSuchDomain` …).
pub const ERROR_PREFIX: &str = "org.vmsnap.VMSnap1.Error";

/// Job objects live at `<JOB_PATH_PREFIX>/<n>`, numbered from 1 for the life of the service.
pub const JOB_PATH_PREFIX: &str = "/org/vmsnap/VMSnap1/job";

/// The interface of job objects.
pub const JOB_INTERFACE: &str = "org.vmsnap.VMSnap1.Job";

/// Object path prefix of file-browsing sessions (`/org/vmsnap/VMSnap1/files/<n>`).
pub const FILES_PATH_PREFIX: &str = "/org/vmsnap/VMSnap1/files";

/// Interface of a file-browsing session.
pub const FILES_INTERFACE: &str = "org.vmsnap.VMSnap1.Files";
