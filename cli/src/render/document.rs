//! The JSON/YAML document of a status report.
//!
//! Keyed by domain name, with the original VMSnap's keys first and in its order
//! (`checkpoints`, `disks[].{disk, virtualSize, actualSize, bitmaps}`, `overallStatus`,
//! `backupDirStats`), followed by what VMSnap adds (`state`, `problems`, …), so scripts written
//! for the original keep working.

use serde_json::{json, Map, Value};
use vmsnap_dbus::{BackupDirStats, DiskStatus, DomainResult, DomainStatus, JobState};

use super::size;

pub fn status_document(report: &[DomainStatus], pretty: bool) -> Value {
    let size = |bytes: u64| -> Value {
        if pretty {
            Value::from(size::pretty(bytes))
        } else {
            Value::from(bytes)
        }
    };
    let mut root = Map::new();
    for d in report {
        let mut m = Map::new();
        m.insert("checkpoints".into(), json!(d.checkpoints));
        m.insert(
            "disks".into(),
            Value::Array(d.disks.iter().map(|disk| disk_value(disk, &size)).collect()),
        );
        m.insert("overallStatus".into(), json!(d.overall_status));
        if let Some(stats) = &d.backup_dir_stats {
            m.insert("backupDirStats".into(), dir_value(stats, &size));
        }
        m.insert("state".into(), json!(d.state));
        m.insert("problems".into(), json!(d.problems));
        m.insert(
            "skippedDisks".into(),
            Value::Array(
                d.skipped_disks
                    .iter()
                    .map(|s| json!({"disk": s.disk, "device": s.device, "path": s.path, "reason": s.reason}))
                    .collect(),
            ),
        );
        if let Some(error) = &d.error {
            m.insert("error".into(), json!(error));
        }
        root.insert(d.name.clone(), Value::Object(m));
    }
    Value::Object(root)
}

fn disk_value(disk: &DiskStatus, size: &dyn Fn(u64) -> Value) -> Value {
    let mut m = Map::new();
    m.insert("disk".into(), json!(disk.disk));
    m.insert("virtualSize".into(), size(disk.virtual_size));
    m.insert("actualSize".into(), size(disk.actual_size));
    m.insert("bitmaps".into(), json!(disk.bitmaps));
    m.insert("path".into(), json!(disk.path));
    m.insert("format".into(), json!(disk.format));
    m.insert(
        "changedSinceCheckpoint".into(),
        disk.changed_since_checkpoint
            .map(size)
            .unwrap_or(Value::Null),
    );
    m.insert(
        "bitmapDetails".into(),
        Value::Array(
            disk.bitmap_details
                .iter()
                .map(|b| {
                    json!({
                        "name": b.name,
                        "dirtyBytes": b.dirty_bytes.map(size).unwrap_or(Value::Null),
                        "recording": b.recording,
                        "inconsistent": b.inconsistent,
                    })
                })
                .collect(),
        ),
    );
    Value::Object(m)
}

fn dir_value(stats: &BackupDirStats, size: &dyn Fn(u64) -> Value) -> Value {
    let mut m = Map::new();
    m.insert("path".into(), json!(stats.path));
    m.insert("totalFiles".into(), json!(stats.total_files));
    m.insert("checkpoints".into(), json!(stats.checkpoints));
    m.insert("totalSize".into(), size(stats.total_size));
    m.insert("exists".into(), json!(stats.exists));
    m.insert("checkpointNames".into(), json!(stats.checkpoint_names));
    Value::Object(m)
}

/// The result document of a finished job.
pub fn job_results(state: JobState, results: &[DomainResult]) -> Value {
    json!({
        "state": state.as_str(),
        "domains": results.iter().map(|r| json!({
            "domain": r.domain,
            "state": r.state,
            "level": r.level,
            "folder": r.folder,
            "newChainReason": r.new_chain_reason,
            "bytesDone": r.bytes_done,
            "bytesTotal": r.bytes_total,
            "disks": r.disks.iter().map(|d| json!({"disk": d.disk, "bytesDone": d.bytes_done, "bytesTotal": d.bytes_total})).collect::<Vec<_>>(),
            "error": r.error,
            "pruned": r.pruned,
            "checks": r.checks,
        })).collect::<Vec<_>>(),
    })
}
