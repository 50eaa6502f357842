//! `backups`, `verify` and `restore`: what you have, whether it is intact, and getting it back.

use vmsnap_dbus::{ListOptions, Operation, RestoreOptions, VerifyOptions};

use crate::args::{BackupsArgs, RestoreArgs, VerifyArgs};
use crate::backup::follow;
use crate::client::Service;
use crate::render::size::pretty;
use crate::{domains, exit, flag, need_output, Context, Failure};

/// The service's ListBackups of `names` (all domains with backups when empty).
pub async fn chains(
    context: &Context,
    names: &[String],
    options: &ListOptions,
) -> Result<Vec<vmsnap_dbus::BackupChain>, Failure> {
    let service = Service::reading(&context.session).await?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let list = service.manager.list_backups(&names, options.to_dict());
    service.call(list).await
}

pub async fn list(context: &Context, args: &BackupsArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let names = domains(&args.selection, false)?;
    let options = ListOptions {
        output: Some(output),
        connect: args.libvirt.connect.clone(),
    };
    let chains = chains(context, &names, &options).await?;
    if context.json() {
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

pub async fn verify(context: &Context, args: &VerifyArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let names = domains(&args.selection, false)?;
    let mut service = Service::asking(&context.session).await?;
    let options = VerifyOptions {
        output: Some(output),
        folder: args.folder.clone(),
        deep: args.deep.then_some(true),
        connect: args.libvirt.connect.clone(),
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let verify = service
        .manager
        .verify_as(service.interaction(), &names, &options);
    let path = service.call(verify).await?;
    service.done_asking();
    follow(
        context,
        &service.connection,
        path,
        Operation::Verify,
        &args.wait,
    )
    .await
}

pub async fn restore(context: &Context, args: &RestoreArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let mut service = Service::asking(&context.session).await?;
    let options = RestoreOptions {
        output: Some(output),
        folder: args.folder.clone(),
        until: args.until.clone(),
        disk: args.disk.clone(),
        target: Some(args.target.clone()),
        overwrite: flag(args.overwrite),
        define_as: args.define_as.clone(),
        connect: args.libvirt.connect.clone(),
    };
    let restore = service
        .manager
        .restore_as(service.interaction(), &args.domain, &options);
    let path = service.call(restore).await?;
    service.done_asking();
    follow(
        context,
        &service.connection,
        path,
        Operation::Restore,
        &args.wait,
    )
    .await
}
