//! polkit action ids.
//!
//! Every id used by the service must be declared in `polkit/org.vmsnap.policy`; a test checks
//! that, because polkit answers an undeclared action with a confusing "not registered" error.

/// Read-only inspection (Status). Allowed to any caller.
pub const STATUS: &str = "org.vmsnap.status";

/// Starting backups (and, in a later issue, verifying).
pub const BACKUP: &str = "org.vmsnap.backup";

/// Cancelling a job someone else started.
pub const CANCEL: &str = "org.vmsnap.cancel";

/// All actions the service may check, for the policy-file consistency test.
pub const ALL: &[&str] = &[STATUS, BACKUP, CANCEL];
