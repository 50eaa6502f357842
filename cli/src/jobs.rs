//! `jobs`, `wait` and `cancel`: the service's jobs, whoever started them.

use vmsnap_dbus::{JobState, Operation};
use zvariant::OwnedObjectPath;

use crate::args::JobsArgs;
use crate::backup::print_job_result;
use crate::client::Service;
use crate::watch::{self, OnInterrupt};
use crate::{client, exit, render, Context, Failure};

/// A job as `jobs` shows it.
struct Row {
    path: OwnedObjectPath,
    operation: String,
    state: String,
    uid: u32,
    results: Vec<vmsnap_dbus::DomainResult>,
}

async fn rows(
    context: &Context,
    connection: &zbus::Connection,
    manager: &vmsnap_dbus::ManagerProxy<'_>,
) -> Result<Vec<Row>, Failure> {
    let paths = client::answer(context.session.call_timeout(), manager.list_jobs()).await?;
    let mut rows = Vec::new();
    for path in paths {
        let job = watch::job_proxy(connection, path.clone()).await?;
        let read = async {
            Ok::<_, zbus::Error>(Row {
                path: path.clone(),
                operation: job.operation().await?,
                state: job.state().await?,
                uid: job.started_by_uid().await?,
                results: job.results().await?,
            })
        };
        // Removed between the list and the read: it is simply gone.
        if let Ok(row) = read.await {
            rows.push(row);
        }
    }
    Ok(rows)
}

pub async fn list(context: &Context, args: &JobsArgs) -> Result<u8, Failure> {
    let service = Service::reading(&context.session).await?;
    let connection = &service.connection;
    let rows = rows(context, connection, &service.manager).await?;
    if args.watch {
        let running: Vec<OwnedObjectPath> = rows
            .iter()
            .filter(|r| !JobState::parse(&r.state).is_some_and(|s| s.is_final()))
            .map(|r| r.path.clone())
            .collect();
        if running.is_empty() {
            eprintln!("No job is running.");
            return Ok(exit::OK);
        }
        let ended = watch::wait_all(connection, &running, OnInterrupt::StopWatching).await?;
        let code = ended
            .iter()
            .map(|(_, state, _)| watch::exit_code(*state))
            .max()
            .unwrap_or(exit::OK);
        if context.json() {
            // One document on stdout: every job's end, as `wait --json` prints one.
            let doc: Vec<serde_json::Value> = ended
                .iter()
                .map(|(path, state, results)| {
                    let mut end = render::document::job_results(*state, results);
                    end["job"] = path.as_str().into();
                    end
                })
                .collect();
            println!("{}", serde_json::Value::Array(doc));
            return Ok(code);
        }
        for (path, state, results) in ended {
            let operation = rows
                .iter()
                .find(|r| r.path == path)
                .and_then(|r| Operation::parse(&r.operation))
                .unwrap_or(Operation::Backup);
            print_job_result(context, operation, state, &results);
        }
        return Ok(code);
    }
    if context.json() {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let domains: Vec<&str> = r.results.iter().map(|d| d.domain.as_str()).collect();
                // The job's own state string; the document's is only a placeholder here.
                let outcome = render::document::job_results(JobState::Queued, &r.results);
                serde_json::json!({"job": r.path.as_str(), "operation": r.operation,
                    "state": r.state, "uid": r.uid, "domains": domains,
                    "results": outcome["domains"]})
            })
            .collect();
        println!("{}", serde_json::Value::Array(doc));
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        println!("No jobs: none running, none finished recently.");
    }
    for r in rows {
        let domains: Vec<&str> = r.results.iter().map(|d| d.domain.as_str()).collect();
        println!(
            "{}\t{}\t{}\tuid {}\t{}",
            r.path.as_str(),
            r.operation,
            r.state,
            r.uid,
            domains.join(",")
        );
        for d in r.results.iter().filter(|d| !d.error.is_empty()) {
            println!("\t{}: {}", d.domain, crate::escape::shown(&d.error));
        }
    }
    Ok(exit::OK)
}

/// `wait JOB`: follows a job someone else may have started, with the same progress display as
/// the command that started it; Ctrl-C stops following, never cancels another's job.
pub async fn wait(context: &Context, job: &str) -> Result<u8, Failure> {
    let path = job_path(job)?;
    let service = Service::reading(&context.session).await?;
    let connection = &service.connection;
    let proxy = watch::job_proxy(connection, path.clone()).await?;
    let operation = match proxy.operation().await {
        Ok(op) => Operation::parse(&op).unwrap_or(Operation::Backup),
        Err(e) => return Err(no_such_job(e, &path)),
    };
    let ended = watch::wait_all(connection, &[path], OnInterrupt::StopWatching).await?;
    let mut code = exit::OK;
    for (_, state, results) in ended {
        print_job_result(context, operation, state, &results);
        code = watch::exit_code(state);
    }
    Ok(code)
}

pub async fn cancel(context: &Context, job: &str) -> Result<u8, Failure> {
    let path = job_path(job)?;
    let service = Service::reading(&context.session).await?;
    let connection = &service.connection;
    let proxy = watch::job_proxy(connection, path.clone()).await?;
    match proxy.cancel().await {
        Ok(()) => Ok(exit::OK),
        Err(vmsnap_dbus::Error::ZBus(e)) => Err(no_such_job(e, &path)),
        Err(e) => Err(client::failure(&e)),
    }
}

/// A job number (`7`) or object path.
fn job_path(job: &str) -> Result<OwnedObjectPath, Failure> {
    let path = if !job.is_empty() && job.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}/{job}", vmsnap_dbus::names::JOB_PATH_PREFIX)
    } else {
        job.to_string()
    };
    OwnedObjectPath::try_from(path).map_err(|_| {
        Failure::new(
            exit::USAGE,
            format!("{job:?} is neither a job number nor a job path"),
        )
    })
}

/// "No such job" for a path nobody serves; the error as it is otherwise. A method call's
/// error comes as a method error, a property read's as zbus's typed `fdo` error.
fn no_such_job(e: zbus::Error, path: &OwnedObjectPath) -> Failure {
    let gone = match &e {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.UnknownObject" | "org.freedesktop.DBus.Error.UnknownMethod"
        ),
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::UnknownObject(_) | zbus::fdo::Error::UnknownMethod(_)
        ),
        _ => false,
    };
    if gone {
        Failure::new(exit::SELECTION, format!("no such job: {}", path.as_str()))
    } else {
        client::failure(&vmsnap_dbus::Error::ZBus(e))
    }
}
