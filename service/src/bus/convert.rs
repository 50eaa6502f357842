//! Engine results and errors → the contract's wire records and typed errors.

use vmsnap_dbus::status::{
    BackupDirStats, BitmapStatus, DiskStatus, DomainStatus, OverallStatus, SkippedDisk,
};
use vmsnap_dbus::Error;

use crate::engine::status::{DiskReport, DomainReport};
use crate::engine::Error as EngineError;

/// The engine's job state as the contract names it.
pub fn job_state(state: crate::engine::jobs::JobState) -> vmsnap_dbus::JobState {
    use crate::engine::jobs::JobState as Engine;
    use vmsnap_dbus::JobState as Wire;
    match state {
        Engine::Queued => Wire::Queued,
        Engine::Running => Wire::Running,
        Engine::Succeeded => Wire::Succeeded,
        Engine::Failed => Wire::Failed,
        Engine::Cancelled => Wire::Cancelled,
    }
}

/// The engine's operation as the contract names it.
pub fn operation(operation: crate::engine::jobs::Operation) -> vmsnap_dbus::Operation {
    use crate::engine::jobs::Operation as Engine;
    use vmsnap_dbus::Operation as Wire;
    match operation {
        Engine::Backup => Wire::Backup,
        Engine::Verify => Wire::Verify,
        Engine::Restore => Wire::Restore,
        Engine::Scrub => Wire::Scrub,
        Engine::Prune => Wire::Prune,
        Engine::Extract => Wire::Extract,
    }
}

/// A backup point's level as the contract names it.
pub fn level(level: crate::engine::vocabulary::Level) -> vmsnap_dbus::Level {
    use crate::engine::vocabulary::Level as Engine;
    use vmsnap_dbus::Level as Wire;
    match level {
        Engine::Full => Wire::Full,
        Engine::Inc => Wire::Inc,
        Engine::Copy => Wire::Copy,
    }
}

/// The word of a job state on the bus.
pub fn job_state_word(state: crate::engine::jobs::JobState) -> &'static str {
    job_state(state).as_str()
}

pub fn domain_status(report: DomainReport) -> DomainStatus {
    let overall = if report.is_ok() {
        OverallStatus::Ok
    } else {
        OverallStatus::Inconsistent
    };
    DomainStatus {
        name: report.name.to_string(),
        state: report.state.as_str().to_string(),
        checkpoints: report.checkpoints,
        disks: report.disks.into_iter().map(disk_status).collect(),
        skipped_disks: report
            .skipped_disks
            .into_iter()
            .map(|s| SkippedDisk {
                disk: s.target,
                device: s.device,
                path: s.path,
                reason: s.reason,
            })
            .collect(),
        overall_status: overall.code(),
        problems: report.problems,
        backup_dir_stats: report.folder.map(|f| BackupDirStats {
            path: f.path.display().to_string(),
            exists: f.exists,
            total_files: f.total_files,
            total_size: f.total_size,
            checkpoints: f.checkpoints.len() as u64,
            checkpoint_names: f.checkpoint_names(),
        }),
        error: report.query_error,
    }
}

fn disk_status(disk: DiskReport) -> DiskStatus {
    DiskStatus {
        disk: disk.target,
        path: disk.path,
        format: disk.format,
        virtual_size: disk.virtual_size,
        actual_size: disk.actual_size,
        bitmaps: disk.bitmaps.iter().map(|b| b.name.clone()).collect(),
        bitmap_details: disk
            .bitmaps
            .into_iter()
            .map(|b| BitmapStatus {
                name: b.name,
                dirty_bytes: b.dirty_bytes,
                recording: b.recording,
                inconsistent: b.inconsistent,
            })
            .collect(),
        changed_since_checkpoint: disk.changed_since_checkpoint,
    }
}

pub fn chain(listed: crate::engine::list::Listed) -> vmsnap_dbus::BackupChain {
    let c = listed.chain;
    vmsnap_dbus::BackupChain {
        domain: listed.domain,
        folder: c.folder.clone(),
        path: c.path.display().to_string(),
        live: listed.live,
        compressed: c.compressed.unwrap_or(false),
        bytes: c.bytes(),
        points: c
            .points
            .into_iter()
            .map(|p| vmsnap_dbus::BackupPoint {
                checkpoint: p.checkpoint,
                level: level(p.level).as_str().to_string(),
                time: p.time,
                bytes: p.bytes,
                files: p.files,
            })
            .collect(),
    }
}

/// Maps an engine error to the typed D-Bus error a client can branch on.
pub fn error(e: EngineError) -> Error {
    match e {
        EngineError::InvalidArgument(m) => Error::InvalidArgument(m),
        e @ EngineError::NoSuchDomain(_) => Error::NoSuchDomain(e.to_string()),
        e @ EngineError::AlreadyRunning(_) => Error::AlreadyRunning(e.to_string()),
        EngineError::NoSuchBackup(m) => Error::NoSuchBackup(m),
        EngineError::TargetExists(m) => Error::TargetExists(m),
        EngineError::NotWritable(e) => Error::NotWritable(e.message),
        EngineError::Untrusted(m) => Error::Untrusted(m),
        EngineError::Busy(m) => Error::Busy(m),
        EngineError::NoSpace(m) => Error::NoSpace(m),
        EngineError::NoSuchFile(m) => Error::NoSuchFile(m),
        EngineError::UnsupportedFilesystem(m) => Error::UnsupportedFilesystem(m),
        EngineError::Encrypted(m) => Error::Encrypted(m),
        EngineError::CorruptFilesystem(m) => Error::CorruptFilesystem(m),
        EngineError::CorruptBackup(m) => Error::CorruptBackup(m),
        EngineError::MissingSetup(m) => Error::MissingDependency(m),
        EngineError::HostUnavailable(m) => Error::HostUnavailable(m),
        EngineError::DomainGone(m) => Error::NoSuchDomain(m),
        e @ (EngineError::Cancelled | EngineError::Failed(_)) => Error::Failed(e.to_string()),
    }
}

/// One domain's backup health facts, as the contract carries them.
pub fn health(
    domain: String,
    f: crate::engine::health::DomainFacts,
) -> vmsnap_dbus::status::DomainHealth {
    vmsnap_dbus::status::DomainHealth {
        domain,
        last_success: f.last_success,
        last_attempt: f.last_attempt,
        last_attempt_ok: f.last_attempt_ok,
        last_duration: f.last_duration,
        last_bytes: f.last_bytes,
        chain_folder: f.chain_folder,
        chain_points: f.chain_points,
        chain_bytes: f.chain_bytes,
        last_verify: f.last_verify,
        last_verify_ok: f.last_verify_ok,
        status_ok: f.status_ok,
    }
}

/// A volume as the contract carries it.
pub fn volume(v: vmsnap_guestfs::protocol::Volume) -> vmsnap_dbus::files::Volume {
    vmsnap_dbus::files::Volume {
        number: v.number,
        table: v.table,
        start: v.start,
        size: v.size,
        filesystem: v.filesystem,
        label: v.label,
        readable: v.readable,
    }
}

/// A directory entry as the contract carries it.
pub fn file_entry(e: vmsnap_guestfs::protocol::Entry) -> vmsnap_dbus::files::FileEntry {
    vmsnap_dbus::files::FileEntry {
        // The reader sends wire forms only; one that does not decode is shown, not guessed.
        name_bytes: vmsnap_guestfs::protocol::decode(&e.name).unwrap_or_default(),
        name: e.name,
        kind: e.kind.as_str().to_string(),
        size: e.size,
        mode: e.mode,
        mtime: e.mtime,
        target: e.target,
    }
}
