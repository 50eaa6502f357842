//! `status`: the original VMSnap's report of every domain's checkpoints, bitmaps and folder.

use vmsnap_dbus::{DomainStatus, StatusOptions};

use crate::args::StatusArgs;
use crate::client::Service;
use crate::{domains, exit, flag, render, Context, Failure};

pub async fn status(context: &Context, args: &StatusArgs) -> Result<u8, Failure> {
    if context.format.verbose {
        eprintln!("Starting status check...");
    }
    let names = domains(&args.selection, false)?;
    let options = StatusOptions {
        output: args.output.clone(),
        group_by: args.period.group_by.clone(),
        connect: args.libvirt.connect.clone(),
        deep: flag(args.deep),
    };
    let report = ask(context, &names, &options).await?;
    render::status(&report, &context.format)
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot write the report: {e}")))?;
    unqueried(&report)
}

/// The service's Status of `names` (all domains when empty).
pub async fn ask(
    context: &Context,
    names: &[String],
    options: &StatusOptions,
) -> Result<Vec<DomainStatus>, Failure> {
    let service = Service::reading(&context.session).await?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let status = service.manager.status(&names, options.to_dict());
    service.call(status).await
}

/// Exit code 0, or 3 naming the domains that could not be queried at all.
pub fn unqueried(report: &[DomainStatus]) -> Result<u8, Failure> {
    let failed: Vec<&str> = report
        .iter()
        .filter(|d| d.error.is_some())
        .map(|d| d.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(exit::OK)
    } else {
        Err(Failure::new(
            exit::FAILURE,
            format!("could not query: {}", failed.join(", ")),
        ))
    }
}

/// Domain names for the shell's completion, one per line. Completion must never hang or
/// print errors into the command line being typed: a short timeout, and nothing on failure.
pub async fn complete_domains(context: &Context) -> Result<u8, Failure> {
    let quick = Context {
        format: context.format.clone(),
        session: crate::args::SessionArgs {
            no_ask_password: true,
            timeout: context.session.timeout.min(3),
        },
    };
    if let Ok(report) = ask(&quick, &[], &StatusOptions::default()).await {
        for domain in report {
            println!("{}", domain.name);
        }
    }
    Ok(exit::OK)
}
