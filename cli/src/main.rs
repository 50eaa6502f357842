//! `vmsnapctl`: VMSnap's unprivileged client. It only speaks D-Bus to vmsnapd.

mod admin;
mod agent;
mod args;
mod client;
mod exit;
mod render;
mod restore;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use vmsnap_dbus::{BackupOptions, Operation, StatusOptions};

use args::{split_domains, Cli, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (argv, unknown) = args::drop_unknown_switches(std::env::args().collect());
    for switch in &unknown {
        eprintln!("vmsnapctl: warning: ignoring unknown switch {switch}");
    }
    let cli = Cli::parse_from(argv);
    if let Some(kind) = cli.generate {
        return match args::generate(kind) {
            Ok(()) => exit::code(exit::OK),
            Err(e) => {
                eprintln!("vmsnapctl: {e}");
                exit::code(exit::FAILURE)
            }
        };
    }
    let verbose = cli.format.verbose;
    match run(cli).await {
        Ok(code) => exit::code(code),
        Err((code, message)) => {
            eprintln!("vmsnapctl: {message}");
            if verbose {
                eprintln!("vmsnapctl: exit code {code}");
            }
            exit::code(code)
        }
    }
}

/// An exit code and the message for stderr.
pub type Failure = (u8, String);

/// What the command line asks for, once both spellings are merged.
enum Action {
    Status { deep: bool },
    Backup,
    Scrub(String),
    Prune,
    Backups,
    Verify,
    Restore,
    Jobs,
    Cancel(String),
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    if [cli.status, cli.backup, cli.scrub]
        .iter()
        .filter(|f| **f)
        .count()
        > 1
    {
        return Err((
            exit::TOO_MANY_COMMANDS,
            "Only one command can be run at a time".into(),
        ));
    }
    // The original's --domains and the subcommand's positional names are one selection.
    let mut items = cli.domains.clone();
    let action = match &cli.command {
        Some(Command::Status { names, deep }) => {
            items.extend(names.iter().cloned());
            Action::Status { deep: *deep }
        }
        Some(Command::Backup { names }) => {
            items.extend(names.iter().cloned());
            Action::Backup
        }
        Some(Command::Scrub { names, kind }) => {
            items.extend(names.iter().cloned());
            Action::Scrub(kind.clone())
        }
        Some(Command::Prune { names }) => {
            items.extend(names.iter().cloned());
            Action::Prune
        }
        Some(Command::Backups { names }) | Some(Command::Verify { names, .. }) => {
            items.extend(names.iter().cloned());
            if matches!(cli.command, Some(Command::Backups { .. })) {
                Action::Backups
            } else {
                Action::Verify
            }
        }
        Some(Command::Restore { .. }) => Action::Restore,
        Some(Command::Jobs) => Action::Jobs,
        Some(Command::Cancel { job }) => Action::Cancel(job.clone()),
        None if cli.backup => Action::Backup,
        None if cli.scrub => Action::Scrub(cli.scrub_type.clone().unwrap_or_default()),
        None => Action::Status { deep: false },
    };
    let explicit = !items.is_empty();
    let domains = split_domains(&items);
    // Validated before anything else, as the original's exit code 8 promises.
    if let Action::Scrub(kind) = &action {
        admin::check_scrub_type(kind)?;
    }
    let changes = matches!(action, Action::Backup | Action::Scrub(_) | Action::Prune);
    if (explicit || changes) && domains.is_empty() {
        return Err((exit::SELECTION, "No domains specified".into()));
    }
    match action {
        Action::Status { deep } => status(&cli, &domains, deep).await,
        Action::Backup => backup(&cli, &domains).await,
        Action::Scrub(kind) => admin::scrub(&cli, &domains, &kind).await,
        Action::Prune => admin::prune(&cli, &domains).await,
        Action::Backups => restore::list(&cli, &domains).await,
        Action::Verify => restore::verify(&cli, &domains).await,
        Action::Restore => restore::restore(&cli).await,
        Action::Jobs => jobs(&cli).await,
        Action::Cancel(job) => cancel(&cli, &job).await,
    }
}

/// `true` as an option that is only sent when set (the service's default is `false`).
pub(crate) fn flag(set: bool) -> Option<bool> {
    set.then_some(true)
}

async fn backup(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    if cli.common.output.is_none() {
        return Err((exit::USAGE, "No output directory specified".into()));
    }
    let agent = agent::start(cli.no_ask_password);
    let (connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let options = BackupOptions {
        output: cli.common.output.clone(),
        group_by: cli.common.group_by.clone(),
        connect: cli.common.connect.clone(),
        raw: flag(cli.backup_opts.raw),
        compress: flag(cli.backup_opts.compress),
        prune: flag(cli.backup_opts.prune),
        // Sent as given: the service refuses `keep` without `prune` rather than ignore it.
        keep: cli.backup_opts.keep,
    };
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let path = client::answer(
        cli.common.call_timeout(),
        manager.backup_as(agent::interaction(&agent), &names, &options),
    )
    .await?;
    drop(agent);
    if cli.backup_opts.no_wait {
        println!("{}", path.as_str());
        return Ok(exit::OK);
    }
    if cli.format.verbose {
        eprintln!("Started job {}", path.as_str());
    }
    let (state, results) = watch::wait(&connection, path).await?;
    print_job_result(cli, Operation::Backup, state, &results);
    Ok(watch::exit_code(state))
}

/// The end of a job on stdout: one document with --json, a line per domain otherwise.
pub(crate) fn print_job_result(
    cli: &Cli,
    operation: Operation,
    state: vmsnap_dbus::JobState,
    results: &[vmsnap_dbus::DomainResult],
) {
    if cli.format.json || cli.format.machine {
        println!("{}", render::document::job_results(state, results));
    } else {
        print!("{}", watch::summary(operation, results));
    }
}

async fn jobs(cli: &Cli) -> Result<u8, Failure> {
    let (connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let paths = client::answer(cli.common.call_timeout(), manager.list_jobs()).await?;
    let mut rows = Vec::new();
    for path in paths {
        let job = watch::job_proxy(&connection, path.clone()).await?;
        let read = async {
            Ok::<_, zbus::Error>((
                job.operation().await?,
                job.state().await?,
                job.started_by_uid().await?,
                job.results().await?,
            ))
        };
        match read.await {
            Ok(row) => rows.push((path.to_string(), row)),
            // Removed between the list and the read: it is simply gone.
            Err(_) => continue,
        }
    }
    if cli.format.json || cli.format.machine {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(path, (op, state, uid, results))| {
                let domains: Vec<&str> = results.iter().map(|r| r.domain.as_str()).collect();
                // The job's own state string; the document's is only a placeholder here.
                let outcome = render::document::job_results(vmsnap_dbus::JobState::Queued, results);
                serde_json::json!({"job": path, "operation": op, "state": state, "uid": uid,
                    "domains": domains, "results": outcome["domains"]})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
    } else {
        for (path, (op, state, uid, results)) in rows {
            let domains: Vec<&str> = results.iter().map(|r| r.domain.as_str()).collect();
            println!("{path}\t{op}\t{state}\tuid {uid}\t{}", domains.join(","));
            for r in results.iter().filter(|r| !r.error.is_empty()) {
                println!("\t{}: {}", r.domain, r.error);
            }
        }
    }
    Ok(exit::OK)
}

async fn cancel(cli: &Cli, job: &str) -> Result<u8, Failure> {
    let path = if job.bytes().all(|b| b.is_ascii_digit()) && !job.is_empty() {
        format!("{}/{job}", vmsnap_dbus::names::JOB_PATH_PREFIX)
    } else {
        job.to_string()
    };
    let path = zvariant::OwnedObjectPath::try_from(path).map_err(|_| {
        (
            exit::USAGE,
            format!("{job:?} is neither a job number nor a job path"),
        )
    })?;
    let (connection, _) = client::connect(cli.common.call_timeout()).await?;
    let proxy = watch::job_proxy(&connection, path.clone()).await?;
    match proxy.cancel().await {
        Ok(()) => Ok(exit::OK),
        Err(vmsnap_dbus::Error::ZBus(zbus::Error::MethodError(name, _, _)))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownObject"
                || name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            Err((exit::SELECTION, format!("no such job: {}", path.as_str())))
        }
        Err(e) => Err(client::failure(&e)),
    }
}

async fn status(cli: &Cli, domains: &[String], deep: bool) -> Result<u8, Failure> {
    if cli.format.verbose {
        eprintln!("Starting status check...");
    }
    let (_connection, manager) = client::connect(cli.common.call_timeout()).await?;
    let options = StatusOptions {
        output: cli.common.output.clone(),
        group_by: cli.common.group_by.clone(),
        connect: cli.common.connect.clone(),
        deep: flag(deep),
    };
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let report = client::answer(
        cli.common.call_timeout(),
        manager.status(&names, options.to_dict()),
    )
    .await?;
    render::status(&report, &cli.format)
        .map_err(|e| (exit::FAILURE, format!("cannot write the report: {e}")))?;
    let failed: Vec<&str> = report
        .iter()
        .filter(|d| d.error.is_some())
        .map(|d| d.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(exit::OK)
    } else {
        Err((
            exit::FAILURE,
            format!("could not query: {}", failed.join(", ")),
        ))
    }
}
