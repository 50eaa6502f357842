//! polkit action ids.
//!
//! Every id used by the service must be declared in `polkit/org.vmsnap.policy`; a test checks
//! that, because polkit answers an undeclared action with a confusing "not registered" error.

/// Reading backup folders (ListBackups, Status's statistics of a folder) that the caller's own
/// file permissions would not let it list. Status itself needs nothing, like libvirt's
/// read-only access; folders the caller can list itself need nothing either.
pub const READ: &str = "org.vmsnap.read";

/// Starting backups.
pub const BACKUP: &str = "org.vmsnap.backup";

/// Verifying backups: rebuilds every point as root (reads a lot, changes nothing). The same
/// action as backing up, with its own prompt text.
pub const VERIFY: &str = BACKUP;

/// Cancelling a job someone else started (cancelling one's own job needs nothing).
pub const CANCEL: &str = "org.vmsnap.cancel";

/// Removing checkpoints and bitmaps: administrator authentication every time.
pub const SCRUB: &str = "org.vmsnap.scrub";

/// Deleting old backup folders: administrator authentication every time.
pub const PRUNE: &str = "org.vmsnap.prune";

/// Restoring backups (writes disk images, may define domains): administrator every time.
pub const RESTORE: &str = "org.vmsnap.restore";

/// Browsing the files inside a backup (OpenFiles): listing a guest's directories and, with
/// RESTORE, extracting its files. A separate action, not READ or BACKUP: a backup's contents
/// are the guest's secrets (its /etc/shadow, its keys, its database files), which neither a
/// Status nor a backup ever shows. Administrator by default (kept for a while, since a
/// session is many calls); the shipped libvirt-group rule does not grant it.
pub const BROWSE: &str = "org.vmsnap.browse";

/// All actions the service may check, for the policy-file consistency test.
pub const ALL: &[&str] = &[READ, BACKUP, CANCEL, SCRUB, PRUNE, RESTORE, BROWSE];

#[cfg(test)]
mod tests {
    /// polkit answers an undeclared action with a confusing "not registered" error.
    #[test]
    fn every_action_is_declared_in_the_policy_file() {
        let policy = include_str!("../../polkit/org.vmsnap.policy");
        for action in super::ALL {
            assert!(
                policy.contains(&format!("<action id=\"{action}\">")),
                "{action} is missing from polkit/org.vmsnap.policy"
            );
        }
    }

    #[test]
    fn the_shipped_rule_grants_nothing_destructive() {
        let rules = include_str!("../../polkit/50-org.vmsnap.rules");
        for destructive in [super::SCRUB, super::PRUNE, super::RESTORE, super::BROWSE] {
            assert!(
                !rules.contains(destructive),
                "{destructive} in the libvirt-group rule"
            );
        }
    }
}
