//! `scrub` and `prune`: the destructive commands, administrators only.

use vmsnap_dbus::{PruneOptions, ScrubOptions};

use crate::args::{PruneArgs, ScrubArgs};
use crate::client::Service;
use crate::{domains, exit, flag, need_output, Context, Failure};

/// The original's scrub types, plus `all`; anything else is exit code 8 before any call.
pub fn check_scrub_type(kind: &str) -> Result<(), Failure> {
    match kind {
        "checkpoint" | "bitmap" | "both" | "all" | "*" => Ok(()),
        other => Err(Failure::new(
            exit::INVALID_SCRUB_TYPE,
            format!(
                "Invalid scrub type: {}",
                if other.is_empty() { "(none)" } else { other }
            ),
        )),
    }
}

pub async fn scrub(context: &Context, args: &ScrubArgs) -> Result<u8, Failure> {
    // Validated before anything else, as the original's exit code 8 promises.
    check_scrub_type(&args.kind)?;
    let names = domains(&args.selection, true)?;
    let dry_run = args.dry_run.dry_run;
    let service = Service::asking(&context.session).await?;
    let options = ScrubOptions {
        scrub_type: Some(args.kind.clone()),
        checkpoint: args.checkpoint_name.clone(),
        dry_run: flag(dry_run),
        connect: args.libvirt.connect.clone(),
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let scrub = service
        .manager
        .scrub_as(service.interaction(), &names, &options);
    let report = service.call(scrub).await?;
    drop(service);
    if context.json() {
        let doc: Vec<serde_json::Value> = report
            .iter()
            .map(|r| {
                serde_json::json!({"domain": r.domain, "checkpoints": r.checkpoints,
                    "bitmaps": r.bitmaps, "problems": r.problems, "dryRun": r.dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
    } else {
        let verb = if dry_run { "Would remove" } else { "Removing" };
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

pub async fn prune(context: &Context, args: &PruneArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let names = domains(&args.selection, true)?;
    let dry_run = args.dry_run.dry_run;
    let service = Service::asking(&context.session).await?;
    let options = PruneOptions {
        output: Some(output),
        group_by: args.period.group_by.clone(),
        keep: args.keep,
        dry_run: flag(dry_run),
        connect: args.libvirt.connect.clone(),
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let prune = service
        .manager
        .prune_as(service.interaction(), &names, &options);
    let report = service.call(prune).await?;
    drop(service);
    if context.json() {
        let doc: Vec<serde_json::Value> = report
            .iter()
            .map(|r| {
                serde_json::json!({"domain": r.domain, "deleted": r.deleted,
                    "problems": r.problems, "dryRun": r.dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
    } else {
        let verb = if dry_run { "Would prune" } else { "Pruned" };
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
