//! `scrub` and `prune`: the destructive commands, administrators only.

use vmsnap_dbus::{PruneOptions, ScrubOptions};

use crate::args::Cli;
use crate::{agent, client, exit, flag, Failure};

/// The original's scrub types, plus `all`; anything else is exit code 8 before any call.
pub fn check_scrub_type(kind: &str) -> Result<(), Failure> {
    match kind {
        "checkpoint" | "bitmap" | "both" | "all" | "*" => Ok(()),
        other => Err((
            exit::INVALID_SCRUB_TYPE,
            format!(
                "Invalid scrub type: {}",
                if other.is_empty() { "(none)" } else { other }
            ),
        )),
    }
}

pub async fn scrub(cli: &Cli, domains: &[String], kind: &str) -> Result<u8, Failure> {
    let agent = agent::start(cli.no_ask_password);
    let (_connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let options = ScrubOptions {
        scrub_type: Some(kind.to_string()),
        checkpoint: cli.checkpoint_name.clone(),
        dry_run: flag(cli.dry_run),
        connect: cli.common.connect.clone(),
    };
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let report = client::answer(
        cli.common.call_timeout(),
        manager.scrub_as(agent::interaction(&agent), &names, &options),
    )
    .await?;
    drop(agent);
    if cli.format.json || cli.format.machine {
        let doc: Vec<serde_json::Value> = report
            .iter()
            .map(|r| {
                serde_json::json!({"domain": r.domain, "checkpoints": r.checkpoints,
                    "bitmaps": r.bitmaps, "problems": r.problems, "dryRun": r.dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
    } else {
        let verb = if cli.dry_run {
            "Would remove"
        } else {
            "Removing"
        };
        for r in &report {
            println!("Scrubbing domain: {}", r.domain);
            for c in &r.checkpoints {
                println!("{verb} checkpoint {c} from {}", r.domain);
            }
            for b in &r.bitmaps {
                let (disk, name) = b.split_once(':').unwrap_or(("?", b));
                println!("{verb} bitmap {name} from {disk} on {}", r.domain);
            }
            for p in &r.problems {
                eprintln!("vmsnapctl: {}: {p}", r.domain);
            }
        }
    }
    Ok(if report.iter().any(|r| !r.problems.is_empty()) {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}

pub async fn prune(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    if cli.common.output.is_none() {
        return Err((exit::USAGE, "No output directory specified".into()));
    }
    let agent = agent::start(cli.no_ask_password);
    let (_connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let options = PruneOptions {
        output: cli.common.output.clone(),
        group_by: cli.common.group_by.clone(),
        keep: cli.backup_opts.keep,
        dry_run: flag(cli.dry_run),
        connect: cli.common.connect.clone(),
    };
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let report = client::answer(
        cli.common.call_timeout(),
        manager.prune_as(agent::interaction(&agent), &names, &options),
    )
    .await?;
    drop(agent);
    if cli.format.json || cli.format.machine {
        let doc: Vec<serde_json::Value> = report
            .iter()
            .map(|r| {
                serde_json::json!({"domain": r.domain, "deleted": r.deleted,
                    "problems": r.problems, "dryRun": r.dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
    } else {
        let verb = if cli.dry_run { "Would prune" } else { "Pruned" };
        for r in &report {
            for d in &r.deleted {
                println!("{verb} {d} for {}", r.domain);
            }
            for p in &r.problems {
                eprintln!("vmsnapctl: {}: {p}", r.domain);
            }
        }
    }
    Ok(if report.iter().any(|r| !r.problems.is_empty()) {
        exit::INCOMPLETE
    } else {
        exit::OK
    })
}
