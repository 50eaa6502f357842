//! Records of long-running jobs (`org.vmsnap.VMSnap1.Job`).
//!
//! A job is an object on the bus that outlives the call that started it: the method returns
//! its path at once, the work runs in the service, and clients watch its properties and
//! signals. Finished jobs stay readable for a while so that a client that looks late still
//! learns the result.

use zvariant::{DeserializeDict, OwnedValue, SerializeDict, Type, Value};

/// What a job does: the `Operation` property of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Verify,
    Restore,
    /// Scrub and Prune answer within their call and are not exported as jobs today; the words
    /// are reserved so that a client reading `Operation` knows every one the service has.
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

    pub fn parse(word: &str) -> Option<Self> {
        Operation::ALL.into_iter().find(|o| o.as_str() == word)
    }
}

/// The kind of a backup point: a result's `level` and a listed point's `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The first point of a chain: every allocated block.
    Full,
    /// What changed since the previous point of the chain.
    Inc,
    /// A standalone copy without a checkpoint (raw disks only): never part of a chain.
    Copy,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Full, Level::Inc, Level::Copy];

    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::Inc => "inc",
            Level::Copy => "copy",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Level::ALL.into_iter().find(|l| l.as_str() == word)
    }
}

/// Life cycle of a job (and of each domain within it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn parse(word: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|s| s.as_str() == word)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Where one domain of a job stands.
#[derive(
    Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct DomainResult {
    pub domain: String,
    /// A [`JobState`] word.
    pub state: String,
    /// A [`Level`] word once decided, empty before.
    pub level: String,
    /// The chain folder written to.
    pub folder: String,
    /// Why a new chain was started, when one was (`first backup of the period`, …).
    pub new_chain_reason: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub disks: Vec<DiskProgress>,
    /// On failure: the tool's own error line.
    pub error: String,
    /// Period folders deleted by the `prune` option after this domain's backup succeeded.
    pub pruned: Vec<String>,
    /// Verify: one line per point, `<folder> <checkpoint>: ok` or `…: failed: <reason>`.
    pub checks: Vec<String>,
}

/// Progress of one disk.
#[derive(
    Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type, Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct DiskProgress {
    pub disk: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}
