//! `vmsnapctl`: VMSnap's unprivileged client. It only speaks D-Bus to vmsnapd.

mod args;
mod client;
mod exit;
mod render;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vmsnap_dbus::options;
use zvariant::Value;

use args::{split_domains, Cli, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(cli: Cli) -> Result<u8, Failure> {
    // The original's --domains and the subcommand's positional names are one selection.
    let (explicit, items) = match &cli.command {
        Some(Command::Status { names }) => {
            let mut all = names.clone();
            all.extend(cli.domains.iter().cloned());
            (!all.is_empty(), all)
        }
        None => (!cli.domains.is_empty(), cli.domains.clone()),
    };
    let domains = split_domains(&items);
    if explicit && domains.is_empty() {
        return Err((exit::SELECTION, "No domains specified".into()));
    }
    status(&cli, &domains).await
}

async fn status(cli: &Cli, domains: &[String]) -> Result<u8, Failure> {
    if cli.format.verbose {
        eprintln!("Starting status check...");
    }
    let (_connection, manager) =
        client::connect(Duration::from_secs(cli.common.timeout.max(1))).await?;
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(output) = &cli.common.output {
        opts.insert(options::OUTPUT, Value::from(output.as_str()));
    }
    if let Some(group_by) = &cli.common.group_by {
        opts.insert(options::GROUP_BY, Value::from(group_by.as_str()));
    }
    if let Some(uri) = &cli.common.connect {
        opts.insert(options::CONNECT, Value::from(uri.as_str()));
    }
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let report = manager
        .status(&names, opts)
        .await
        .map_err(|e| client::failure(&e))?;
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
