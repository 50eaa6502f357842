//! `backups`, `verify` and `restore`: what you have, whether it is intact, and getting it back.

use vmsnap_dbus::{ListOptions, Operation, RestoreOptions, VerifyOptions};

use crate::args::{Cli, Command};
use crate::render::size::pretty;
use crate::{agent, client, exit, flag, print_job_result, watch, Failure};

fn need_output(cli: &Cli) -> Result<(), Failure> {
    if cli.common.output.is_none() {
        return Err((exit::USAGE, "No output directory specified".into()));
    }
    Ok(())
}

pub async fn list(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    need_output(cli)?;
    let (_connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let options = ListOptions {
        output: cli.common.output.clone(),
        connect: cli.common.connect.clone(),
    };
    let chains = client::answer(
        cli.common.call_timeout(),
        manager.list_backups(&names, options.to_dict()),
    )
    .await?;
    if cli.format.json || cli.format.machine {
        let doc: Vec<serde_json::Value> = chains
            .iter()
            .map(|c| {
                serde_json::json!({
                    "domain": c.domain, "folder": c.folder, "path": c.path, "live": c.live, "compressed": c.compressed,
                    "bytes": c.bytes,
                    "points": c.points.iter().map(|p| serde_json::json!({
                        "checkpoint": p.checkpoint, "level": p.level, "time": p.time,
                        "bytes": p.bytes, "files": p.files,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
        return Ok(exit::OK);
    }
    for c in &chains {
        let mut notes = Vec::new();
        if c.live {
            notes.push("live chain");
        }
        if c.compressed {
            notes.push("compressed");
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        println!("{} {}{notes}: {}", c.domain, c.folder, pretty(c.bytes));
        for p in &c.points {
            let when = p
                .time
                .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "  {:<18} {:<4} {when}  {}",
                p.checkpoint,
                p.level,
                pretty(p.bytes)
            );
        }
    }
    Ok(exit::OK)
}

pub async fn verify(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    need_output(cli)?;
    let agent = agent::start(cli.no_ask_password);
    let (connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let folder = match &cli.command {
        Some(Command::Verify { folder, .. }) => folder.clone(),
        _ => None,
    };
    let options = VerifyOptions {
        output: cli.common.output.clone(),
        folder,
        connect: cli.common.connect.clone(),
    };
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let path = client::answer(
        cli.common.call_timeout(),
        manager.verify_as(agent::interaction(&agent), &names, &options),
    )
    .await?;
    drop(agent);
    if cli.backup_opts.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    let (state, results) = watch::wait(&connection, path).await?;
    print_job_result(cli, Operation::Verify, state, &results);
    Ok(watch::exit_code(state))
}

pub async fn restore(cli: &Cli) -> Result<u8, Failure> {
    need_output(cli)?;
    let Some(Command::Restore {
        domain,
        target,
        folder,
        until,
        disk,
        overwrite,
        define_as,
    }) = &cli.command
    else {
        unreachable!("restore is only dispatched for the restore subcommand");
    };
    let agent = agent::start(cli.no_ask_password);
    let (connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let options = RestoreOptions {
        output: cli.common.output.clone(),
        folder: folder.clone(),
        until: until.clone(),
        disk: disk.clone(),
        target: Some(target.clone()),
        overwrite: flag(*overwrite),
        define_as: define_as.clone(),
        connect: cli.common.connect.clone(),
    };
    let path = client::answer(
        cli.common.call_timeout(),
        manager.restore_as(agent::interaction(&agent), domain, &options),
    )
    .await?;
    drop(agent);
    if cli.backup_opts.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    let (state, results) = watch::wait(&connection, path).await?;
    print_job_result(cli, Operation::Restore, state, &results);
    Ok(watch::exit_code(state))
}
