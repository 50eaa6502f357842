//! `backup`: start a backup job and follow it, or hand back its path (`--no-wait`).

use vmsnap_dbus::{BackupOptions, DomainResult, JobState, Operation};
use zvariant::OwnedObjectPath;

use crate::args::{BackupArgs, Wait};
use crate::client::Service;
use crate::watch::{self, OnInterrupt};
use crate::{domains, exit, flag, need_output, render, Context, Failure};

pub async fn backup(context: &Context, args: &BackupArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let names = domains(&args.selection, true)?;
    let mut service = Service::asking(&context.session).await?;
    let o = &args.options;
    let options = BackupOptions {
        output: Some(output),
        group_by: args.period.group_by.clone(),
        connect: args.libvirt.connect.clone(),
        raw: flag(o.raw),
        compress: flag(o.compress),
        prune: flag(o.prune),
        // Sent as given: the service refuses `keep` without `prune` rather than ignore it.
        keep: o.keep,
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let backup = service
        .manager
        .backup_as(service.interaction(), &names, &options);
    let path = service.call(backup).await?;
    service.done_asking();
    follow(
        context,
        &service.connection,
        path,
        Operation::Backup,
        &args.wait,
    )
    .await
}

/// After a job was started: its path on stdout with `--no-wait`, otherwise its progress until
/// it ends (Ctrl-C cancels it: the caller started it), its result, and the exit code for it.
pub async fn follow(
    context: &Context,
    connection: &zbus::Connection,
    path: OwnedObjectPath,
    operation: Operation,
    wait: &Wait,
) -> Result<u8, Failure> {
    if wait.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    if context.format.verbose {
        eprintln!("Started job {}", path.as_str());
    }
    let (state, results) = watch::wait(connection, path, OnInterrupt::CancelJob).await?;
    print_job_result(context, operation, state, &results);
    Ok(watch::exit_code(state))
}

/// The end of a job on stdout: one document with --json, a line per domain otherwise.
pub fn print_job_result(
    context: &Context,
    operation: Operation,
    state: JobState,
    results: &[DomainResult],
) {
    if context.json() {
        println!("{}", render::document::job_results(state, results));
    } else {
        print!("{}", watch::summary(operation, results));
    }
}
