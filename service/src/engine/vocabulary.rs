//! The engine's words for what jobs do and where they stand. The journal stores them as these
//! strings; the bus layer maps them to the contract's (`vmsnap_dbus::JobState`), so the
//! engine depends on no D-Bus type and the two can only drift through a mapping the compiler
//! checks.
//!
//! The bus imports its words from here and nothing from `host/`: a point's level and the
//! period grouping are named here for it, whoever defines them.

pub use super::chains::period::GroupBy;
pub use crate::host::virtnbdbackup::Level;

/// Whether `name` is a point's name as VMSnap writes them (`virtnbdbackup.N`).
pub fn is_point_name(name: &str) -> bool {
    crate::host::backup_dir::checkpoint_index(name).is_some()
}

/// What a job does. Its name is what the journal records and the bus shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Verify,
    Restore,
    /// Scrub and prune take a job only for its domain locks; they run within their call.
    Scrub,
    Prune,
    /// Files copied out of a backup (`Files.Extract`).
    Extract,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::Backup,
        Operation::Verify,
        Operation::Restore,
        Operation::Scrub,
        Operation::Prune,
        Operation::Extract,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Verify => "verify",
            Operation::Restore => "restore",
            Operation::Scrub => "scrub",
            Operation::Prune => "prune",
            Operation::Extract => "extract",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Life cycle of a job, and of each domain within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|s| s.as_str() == word)
    }

    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}
