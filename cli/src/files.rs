//! `files`: browse the files of a backup point and copy some out.
//!
//! One session per invocation: opened (the service reads the point in place), asked, closed. The
//! session belongs to this connection, so if vmsnapctl dies the service ends it too.

use std::time::Duration;

use vmsnap_dbus::files::{FileEntry, Volume};
use vmsnap_dbus::options::{ExtractOptions, FilesOptions};
use vmsnap_dbus::proxy::FilesProxy;
use vmsnap_dbus::{Error, JobState, Operation};

use crate::args::{FilesAction, FilesArgs};
use crate::backup::print_job_result;
use crate::client::Service;
use crate::escape::shown;
use crate::render::size::pretty;
use crate::{client, exit, flag, need_output, watch, Context, Failure};

/// Opening indexes the chain's data files: quick, but a chain of thousands of points on a slow
/// disk may take longer than an ordinary call.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3600);

pub async fn run(context: &Context, args: &FilesArgs) -> Result<u8, Failure> {
    let output = need_output(&args.root.output)?;
    let timeout = context.session.call_timeout().max(OPEN_TIMEOUT);
    let service = Service::asking_for(&context.session, timeout).await?;
    let connection = &service.connection;
    let options = FilesOptions {
        output: Some(output),
        folder: args.folder.clone(),
        point: args.point.clone(),
        disk: args.disk.clone(),
        connect: args.libvirt.connect.clone(),
    };
    let open = service
        .manager
        .open_files_as(service.interaction(), &args.domain, &options);
    let path = service.call(open).await?;
    let files = FilesProxy::builder(connection)
        .path(path)
        .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
        .map_err(|e| client::failure(&Error::ZBus(e)))?
        .build()
        .await
        .map_err(|e| client::failure(&Error::ZBus(e)))?;
    let result = match &args.action {
        FilesAction::Ls { volume: None, .. } => volumes(context, &files, timeout).await,
        FilesAction::Ls {
            volume: Some(v),
            path,
        } => list(context, &files, timeout, *v, path).await,
        FilesAction::Export => export(context, &service, &files).await,
        FilesAction::Get {
            volume,
            paths,
            target,
            overwrite,
        } => {
            let volume = match volume {
                Some(v) => *v,
                None => only_readable(&files, timeout).await?,
            };
            let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
            let options = ExtractOptions {
                overwrite: flag(*overwrite),
            };
            let extract = files.extract_as(service.interaction(), volume, &paths, target, &options);
            match service.call(extract).await {
                Ok(job) => until_done(context, connection, job).await,
                Err(e) => Err(e),
            }
        }
    };
    // The session would end with this connection anyway; closing says so at once.
    let _ = client::answer(context.session.call_timeout(), files.close()).await;
    drop(service);
    result
}

/// Waits for the extraction job by reading its `State`, each read bounded and repeated: an
/// extraction usually ends before a signal subscription would be in place, and this command
/// has nothing to show meanwhile but the end. (Ctrl-C ends the command, and with its
/// connection the session: the extraction stops and leaves nothing in the target.)
async fn until_done(
    context: &Context,
    connection: &zbus::Connection,
    path: zvariant::OwnedObjectPath,
) -> Result<u8, Failure> {
    let job = watch::job_proxy(connection, path).await?;
    let bus = |e: zbus::Error| client::failure(&Error::ZBus(e));
    let mut failures = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), job.state()).await {
            Ok(Ok(word)) => {
                if let Some(state) = JobState::parse(&word).filter(|s| s.is_final()) {
                    let results = job.results().await.map_err(bus)?;
                    print_job_result(context, Operation::Extract, state, &results);
                    return Ok(watch::exit_code(state));
                }
            }
            Ok(Err(e)) => return Err(bus(e)),
            // No answer in time: asked again (a busy service answers the next one).
            Err(_) => {
                failures += 1;
                if failures > 60 {
                    return Err(Failure::new(exit::FAILURE, "the service stopped answering"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks for the export, prints its URI (the document, on stdout) and serves until Ctrl-C or
/// SIGTERM; the session, and with it the export, ends when this command does.
async fn export(
    context: &Context,
    service: &Service,
    files: &FilesProxy<'_>,
) -> Result<u8, Failure> {
    let uri = service.call(files.export()).await?;
    if context.json() {
        println!("{}", serde_json::json!({ "uri": uri }));
    } else {
        println!("{uri}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!("serving the point read-only over NBD until interrupted (Ctrl-C)");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(exit::FAILURE, format!("SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(exit::OK)
}

/// The one readable volume, when there is exactly one.
async fn only_readable(files: &FilesProxy<'_>, timeout: Duration) -> Result<u32, Failure> {
    let volumes = client::answer(timeout, files.volumes()).await?;
    let readable: Vec<u32> = volumes
        .iter()
        .filter(|v| v.readable)
        .map(|v| v.number)
        .collect();
    match readable.as_slice() {
        [one] => Ok(*one),
        _ => Err(Failure::new(
            exit::USAGE,
            format!(
                "the disk has {} readable volumes ({}); name one with --volume (see `ls`)",
                readable.len(),
                readable
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

async fn volumes(
    context: &Context,
    files: &FilesProxy<'_>,
    timeout: Duration,
) -> Result<u8, Failure> {
    let volumes = client::answer(timeout, files.volumes()).await?;
    let (domain, point, disk) = (
        files.domain().await.unwrap_or_default(),
        files.point().await.unwrap_or_default(),
        files.disk().await.unwrap_or_default(),
    );
    if context.json() {
        let doc = serde_json::json!({
            "domain": domain, "folder": files.folder().await.unwrap_or_default(),
            "point": point, "disk": disk,
            "volumes": volumes.iter().map(volume_json).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return Ok(exit::OK);
    }
    println!("{domain} {disk} at {point}:");
    for v in &volumes {
        let label = if v.label.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", shown(&v.label))
        };
        let readable = if v.readable { "" } else { "  (not readable)" };
        println!(
            "  volume {:<2} {:<4} {:>10}  {}{label}{readable}",
            v.number,
            v.table,
            pretty(v.size),
            shown(&v.filesystem)
        );
    }
    Ok(exit::OK)
}

fn volume_json(v: &Volume) -> serde_json::Value {
    serde_json::json!({
        "volume": v.number, "table": v.table, "start": v.start, "size": v.size,
        "filesystem": v.filesystem, "label": v.label, "readable": v.readable,
    })
}

async fn list(
    context: &Context,
    files: &FilesProxy<'_>,
    timeout: Duration,
    volume: u32,
    path: &str,
) -> Result<u8, Failure> {
    let (entries, truncated) = client::answer(timeout, files.list(volume, path)).await?;
    if context.json() {
        let doc = serde_json::json!({
            "volume": volume, "path": path, "truncated": truncated,
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return Ok(exit::OK);
    }
    for e in &entries {
        let when = chrono::DateTime::from_timestamp(e.mtime, 0)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        let target = e
            .target
            .as_deref()
            .map(|t| format!(" -> {}", shown(t)))
            .unwrap_or_default();
        println!(
            "{} {:>10} {when} {}{target}",
            mode_string(e),
            e.size,
            shown(&e.name)
        );
    }
    if truncated {
        eprintln!(
            "vmsnapctl: {}: only the first {} entries are listed",
            shown(path),
            entries.len()
        );
    }
    Ok(exit::OK)
}

fn entry_json(e: &FileEntry) -> serde_json::Value {
    serde_json::json!({
        "name": e.name, "kind": e.kind, "size": e.size, "mode": format!("{:04o}", e.mode),
        "mtime": e.mtime, "target": e.target,
    })
}

/// `ls -l`'s mode column: the kind, then rwx triplets with s/S and t/T.
fn mode_string(e: &FileEntry) -> String {
    let kind = match e.kind.as_str() {
        "dir" => 'd',
        "symlink" => 'l',
        "block-device" => 'b',
        "char-device" => 'c',
        "fifo" => 'p',
        "socket" => 's',
        _ => '-',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |exec: bool, set: bool, lower: char, upper: char| match (set, exec) {
        (true, true) => lower,
        (true, false) => upper,
        (false, true) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(m & 0o100 != 0, m & 0o4000 != 0, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(m & 0o010 != 0, m & 0o2000 != 0, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(m & 0o001 != 0, m & 0o1000 != 0, 't', 'T'),
    ]
    .iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        let e = |kind: &str, mode| FileEntry {
            kind: kind.into(),
            mode,
            ..Default::default()
        };
        assert_eq!(mode_string(&e("file", 0o4755)), "-rwsr-xr-x");
        assert_eq!(mode_string(&e("dir", 0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(&e("symlink", 0o777)), "lrwxrwxrwx");
        assert_eq!(mode_string(&e("file", 0o2640)), "-rw-r-S---");
    }
}
