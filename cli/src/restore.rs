//! `backups`, `verify` and `restore`: what you have, whether it is intact, and getting it back.

use std::collections::HashMap;
use std::time::Duration;

use vmsnap_dbus::{options, BackupChain};
use zvariant::Value;

use crate::args::{Cli, Command};
use crate::render::size::pretty;
use crate::{agent, client, common_options, exit, print_job_result, watch, Failure};

fn need_output(cli: &Cli) -> Result<(), Failure> {
    if cli.common.output.is_none() {
        return Err((exit::USAGE, "No output directory specified".into()));
    }
    Ok(())
}

pub async fn list(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    need_output(cli)?;
    let (_connection, manager) =
        client::connect(Duration::from_secs(cli.common.timeout.max(1))).await?;
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let chains: Vec<BackupChain> = manager
        .list_backups(&names, common_options(cli))
        .await
        .map_err(|e| client::failure(&e))?;
    if cli.format.json || cli.format.machine {
        let doc: Vec<serde_json::Value> = chains
            .iter()
            .map(|c| {
                serde_json::json!({
                    "domain": c.domain, "folder": c.folder, "path": c.path, "live": c.live,
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
        let live = if c.live { " (live chain)" } else { "" };
        println!("{} {}{live}: {}", c.domain, c.folder, pretty(c.bytes));
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
    let (connection, manager) =
        client::connect(Duration::from_secs(cli.common.timeout.max(1))).await?;
    let mut opts = common_options(cli);
    if let Some(Command::Verify {
        folder: Some(f), ..
    }) = &cli.command
    {
        opts.insert(options::FOLDER, Value::from(f.as_str()));
    }
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let path: zvariant::OwnedObjectPath =
        client::call(&manager, "Verify", &(names, opts), agent.is_some())
            .await
            .map_err(|e| client::failure(&e))?;
    drop(agent);
    if cli.backup_opts.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    let (state, results) = watch::wait(&connection, path).await?;
    print_job_result(cli, "verify", state, &results);
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
    let (connection, manager) =
        client::connect(Duration::from_secs(cli.common.timeout.max(1))).await?;
    let mut opts: HashMap<&str, Value<'_>> = common_options(cli);
    opts.insert(options::TARGET, Value::from(target.as_str()));
    for (key, value) in [
        (options::FOLDER, folder),
        (options::UNTIL, until),
        (options::DISK, disk),
        (options::DEFINE_AS, define_as),
    ] {
        if let Some(v) = value {
            opts.insert(key, Value::from(v.as_str()));
        }
    }
    if *overwrite {
        opts.insert(options::OVERWRITE, Value::from(true));
    }
    let path: zvariant::OwnedObjectPath = client::call(
        &manager,
        "Restore",
        &(domain.as_str(), opts),
        agent.is_some(),
    )
    .await
    .map_err(|e| client::failure(&e))?;
    drop(agent);
    if cli.backup_opts.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    let (state, results) = watch::wait(&connection, path).await?;
    print_job_result(cli, "restore", state, &results);
    Ok(watch::exit_code(state))
}
