//! The backup health facts as Prometheus text-format metrics, for node_exporter's textfile
//! collector (https://prometheus.io/docs/instrumenting/exposition_formats/).
//!
//! Names follow Prometheus' conventions: a `vmsnap_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_timestamp_seconds` for points in time, and the domain as a
//! `domain` label. A fact that is not known is left out rather than written as 0, so an alert
//! on "no successful backup" is not fooled by a domain that was never backed up; such a
//! domain has `vmsnap_backup_last_success_timestamp_seconds` 0 only when it has had attempts.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::DomainFacts;

/// What a textfile gets besides the facts.
pub struct Context<'a> {
    pub version: &'a str,
    /// When the file is written (for the staleness alert).
    pub now: u64,
    /// The age after which a domain's last successful backup is overdue (configured).
    pub max_backup_age: u64,
}

/// One metric family: its name, help, type, and one sample per domain that has the fact.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
    value: fn(&DomainFacts) -> Option<f64>,
}

fn flag(b: Option<bool>) -> Option<f64> {
    b.map(|b| if b { 1.0 } else { 0.0 })
}

const FAMILIES: &[Family] = &[
    Family {
        name: "vmsnap_backup_last_success_timestamp_seconds",
        help: "When the domain's last successful backup ended (0: attempted, never succeeded).",
        kind: "gauge",
        value: |f| f.last_attempt.map(|_| f.last_success.unwrap_or(0) as f64),
    },
    Family {
        name: "vmsnap_backup_last_attempt_timestamp_seconds",
        help: "When the domain's last backup attempt ended, whatever its outcome.",
        kind: "gauge",
        value: |f| f.last_attempt.map(|t| t as f64),
    },
    Family {
        name: "vmsnap_backup_last_attempt_success",
        help: "1 if the domain's last backup attempt succeeded, 0 if it failed or was cancelled.",
        kind: "gauge",
        value: |f| flag(f.last_attempt_ok),
    },
    Family {
        name: "vmsnap_backup_last_duration_seconds",
        help: "How long the job of the domain's last successful backup ran.",
        kind: "gauge",
        value: |f| f.last_duration.map(|d| d as f64),
    },
    Family {
        name: "vmsnap_backup_last_bytes",
        help: "Bytes the domain's last successful backup copied.",
        kind: "gauge",
        value: |f| f.last_bytes.map(|b| b as f64),
    },
    Family {
        name: "vmsnap_chain_points",
        help: "Restorable points in the chain of the domain's last successful backup.",
        kind: "gauge",
        value: |f| f.chain_points.map(|p| p as f64),
    },
    Family {
        name: "vmsnap_chain_size_bytes",
        help: "Bytes on disk of the chain of the domain's last successful backup.",
        kind: "gauge",
        value: |f| f.chain_bytes.map(|b| b as f64),
    },
    Family {
        name: "vmsnap_verify_last_timestamp_seconds",
        help: "When the last verify of the domain's backups ended.",
        kind: "gauge",
        value: |f| f.last_verify.map(|t| t as f64),
    },
    Family {
        name: "vmsnap_verify_last_success",
        help: "1 if the last verify of the domain's backups passed, 0 if it failed.",
        kind: "gauge",
        value: |f| flag(f.last_verify_ok),
    },
    Family {
        name: "vmsnap_domain_status_ok",
        help: "1 if the domain's checkpoints and bitmaps are consistent (Status says OK).",
        kind: "gauge",
        value: |f| flag(f.status_ok),
    },
];

/// A label value escaped as the text format wants (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole textfile.
pub fn render(facts: &BTreeMap<String, DomainFacts>, context: &Context) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP vmsnap_info The VMSnap service writing these metrics.\n\
         # TYPE vmsnap_info gauge\n\
         vmsnap_info{{version=\"{}\"}} 1",
        label(context.version)
    );
    let _ = writeln!(
        out,
        "# HELP vmsnap_metrics_written_timestamp_seconds When vmsnapd last wrote these metrics.\n\
         # TYPE vmsnap_metrics_written_timestamp_seconds gauge\n\
         vmsnap_metrics_written_timestamp_seconds {}",
        context.now
    );
    let _ = writeln!(
        out,
        "# HELP vmsnap_backup_max_age_seconds Age after which a domain's last successful backup \
         is overdue (vmsnapd.toml metrics_backup_max_age_seconds).\n\
         # TYPE vmsnap_backup_max_age_seconds gauge\n\
         vmsnap_backup_max_age_seconds {}",
        context.max_backup_age
    );
    for family in FAMILIES {
        let samples: Vec<(&String, f64)> = facts
            .iter()
            .filter_map(|(domain, f)| (family.value)(f).map(|v| (domain, v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (domain, value) in samples {
            let _ = writeln!(
                out,
                "{}{{domain=\"{}\"}} {value}",
                family.name,
                label(domain)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_facts_are_written_unknown_ones_left_out() {
        let mut facts = BTreeMap::new();
        facts.insert(
            "web\"1".to_string(),
            DomainFacts {
                last_attempt: Some(200),
                last_attempt_ok: Some(false),
                status_ok: Some(true),
                ..Default::default()
            },
        );
        let text = render(
            &facts,
            &Context {
                version: "0.1.0",
                now: 300,
                max_backup_age: 93600,
            },
        );
        assert!(text.contains("vmsnap_info{version=\"0.1.0\"} 1\n"));
        assert!(text.contains("vmsnap_metrics_written_timestamp_seconds 300\n"));
        assert!(
            text.contains("vmsnap_backup_last_success_timestamp_seconds{domain=\"web\\\"1\"} 0\n")
        );
        assert!(text.contains("vmsnap_backup_last_attempt_success{domain=\"web\\\"1\"} 0\n"));
        assert!(text.contains("vmsnap_domain_status_ok{domain=\"web\\\"1\"} 1\n"));
        assert!(!text.contains("vmsnap_verify_last_success"), "{text}");
        assert!(!text.contains("vmsnap_chain_points"), "{text}");
    }
}
