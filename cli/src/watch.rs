//! Following a job to its end: live progress on stderr, the result on stdout.
//!
//! On a terminal every disk gets a progress bar; otherwise plain lines, at most one per disk
//! and second, so logs of timer runs stay readable. Ctrl-C asks the service to cancel the job
//! (the safe way) and keeps waiting for it to end.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmsnap_dbus::{DomainResult, JobProxy, JobState, Operation};
use zbus::proxy::CacheProperties;
use zbus::Connection;
use zvariant::OwnedObjectPath;

use crate::escape::shown;
use crate::render::size::pretty;
use crate::{client, exit, Failure};

pub async fn job_proxy(
    connection: &Connection,
    path: OwnedObjectPath,
) -> Result<JobProxy<'static>, Failure> {
    JobProxy::builder(connection)
        .path(path)
        .map(|b| b.cache_properties(CacheProperties::No))
        .map_err(|e| client::failure(&vmsnap_dbus::Error::ZBus(e)))?
        .build()
        .await
        .map_err(|e| client::failure(&vmsnap_dbus::Error::ZBus(e)))
}

/// What Ctrl-C does while a job is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Ask the service to cancel the job (the safe way) and keep waiting for it to end: the
    /// command started it.
    CancelJob,
    /// Stop following and leave the job alone: someone else may have started it.
    StopWatching,
}

/// Waits for the job at `path` to finish and returns its final state and results.
pub async fn wait(
    connection: &Connection,
    path: OwnedObjectPath,
    on_interrupt: OnInterrupt,
) -> Result<(JobState, Vec<DomainResult>), Failure> {
    let mut ended = wait_all(connection, &[path], on_interrupt).await?;
    Ok(ended
        .pop()
        .map(|(_, s, r)| (s, r))
        .expect("one job, one end"))
}

/// One thing that happened to one of the jobs followed.
enum Event {
    Progress(vmsnap_dbus::proxy::Progress),
    Completed(usize, Option<vmsnap_dbus::proxy::Completed>),
}

/// Follows every job in `paths` to its end with one progress display (bars keyed by domain
/// and disk), and returns each job's path, final state and results, in the order given.
pub async fn wait_all(
    connection: &Connection,
    paths: &[OwnedObjectPath],
    on_interrupt: OnInterrupt,
) -> Result<Vec<(OwnedObjectPath, JobState, Vec<DomainResult>)>, Failure> {
    let bus = |e: zbus::Error| client::failure(&vmsnap_dbus::Error::ZBus(e));
    let mut jobs = Vec::new();
    let mut events = futures_util::stream::SelectAll::new();
    let mut ended: Vec<Option<(JobState, Vec<DomainResult>)>> = vec![None; paths.len()];
    for (i, path) in paths.iter().enumerate() {
        let job = job_proxy(connection, path.clone()).await?;
        // Subscribe first, then look: a job that ended in between is seen in its properties.
        let progress = job.receive_progress().await.map_err(bus)?;
        let completed = job.receive_completed().await.map_err(bus)?;
        events.push(progress.map(Event::Progress).boxed());
        // The Completed stream ends only with the connection: that end is an event too.
        let completed =
            completed
                .map(move |c| Event::Completed(i, Some(c)))
                .chain(futures_util::stream::once(async move {
                    Event::Completed(i, None)
                }));
        events.push(completed.boxed());
        let state = job.state().await.map_err(bus)?;
        if let Some(s) = JobState::parse(&state).filter(|s| s.is_final()) {
            ended[i] = Some((s, job.results().await.map_err(bus)?));
        }
        jobs.push(job);
    }
    let mut display = Display::new();
    let mut cancel_sent = false;
    // Signals are the way a job's end is heard; its State is looked at now and then as well,
    // so that an end whose Completed signal never reached this connection is still seen.
    let mut look = tokio::time::interval(std::time::Duration::from_secs(2));
    look.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while ended.iter().any(Option::is_none) {
        tokio::select! {
            Some(event) = events.next() => match event {
                Event::Progress(signal) => {
                    if let Ok(a) = signal.args() {
                        display.update(&a.domain, &a.disk, a.done, a.total);
                    }
                }
                Event::Completed(i, _) if ended[i].is_some() => {}
                Event::Completed(_, None) => {
                    display.finish();
                    return Err(Failure::new(exit::FAILURE, "lost the connection to vmsnapd while waiting"));
                }
                Event::Completed(i, Some(signal)) => {
                    let a = signal.args().map_err(bus)?;
                    let state = JobState::parse(&a.state).unwrap_or(JobState::Failed);
                    // The signal carries the public view; the starter reads the details.
                    ended[i] = Some((state, jobs[i].results().await.map_err(bus)?));
                }
            },
            _ = look.tick() => {
                for (i, job) in jobs.iter().enumerate() {
                    if ended[i].is_some() {
                        continue;
                    }
                    let state = job.state().await.map_err(bus)?;
                    if let Some(s) = JobState::parse(&state).filter(|s| s.is_final()) {
                        ended[i] = Some((s, job.results().await.map_err(bus)?));
                    }
                }
            }
            _ = &mut ctrl_c, if !cancel_sent => {
                cancel_sent = true;
                if on_interrupt == OnInterrupt::StopWatching {
                    display.finish();
                    eprintln!("vmsnapctl: stopped following; the job goes on");
                    return Err(Failure::new(exit::JOB_CANCELLED, "interrupted"));
                }
                eprintln!("vmsnapctl: cancelling the job (waiting for it to stop cleanly)…");
                for job in &jobs {
                    if let Err(e) = job.cancel().await {
                        eprintln!("vmsnapctl: {}", client::describe(&e));
                    }
                }
            }
            // Every stream ended without a Completed: the connection is gone.
            else => {
                display.finish();
                return Err(Failure::new(exit::FAILURE, "lost the connection to vmsnapd while waiting"));
            }
        }
    }
    display.finish();
    Ok(paths
        .iter()
        .cloned()
        .zip(ended.into_iter().flatten())
        .map(|(p, (s, r))| (p, s, r))
        .collect())
}

/// Exit code for a finished backup job.
pub fn exit_code(state: JobState) -> u8 {
    match state {
        JobState::Succeeded => exit::OK,
        JobState::Cancelled => exit::JOB_CANCELLED,
        _ => exit::JOB_FAILED,
    }
}

/// One line per domain, for stdout.
pub fn summary(operation: Operation, results: &[DomainResult]) -> String {
    let label = match operation {
        Operation::Verify => "Verify of",
        Operation::Restore => "Restore of",
        Operation::Backup => "Backup of",
        Operation::Scrub => "Scrub of",
        Operation::Prune => "Prune of",
        Operation::Extract => "Extraction from",
    };
    let mut out = String::new();
    for r in results {
        for check in &r.checks {
            out.push_str(&format!("{}: {}\n", r.domain, shown(check)));
        }
        let mut line = format!("{label} {}: {}", r.domain, r.state);
        if !r.level.is_empty() {
            line.push_str(&format!(" ({}", r.level));
            if !r.new_chain_reason.is_empty() {
                line.push_str(&format!(", new chain: {}", r.new_chain_reason));
            }
            line.push(')');
        }
        let succeeded = JobState::parse(&r.state) == Some(JobState::Succeeded);
        if succeeded && operation == Operation::Backup {
            line.push_str(&format!(", {} in {}", pretty(r.bytes_total), r.folder));
        }
        if !r.error.is_empty() && !succeeded {
            line.push_str(&format!(": {}", shown(&r.error)));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

enum Display {
    Bars {
        multi: MultiProgress,
        bars: HashMap<(String, String), ProgressBar>,
    },
    Lines {
        last: HashMap<(String, String), Instant>,
    },
}

impl Display {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            Display::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: HashMap::new(),
            }
        } else {
            Display::Lines {
                last: HashMap::new(),
            }
        }
    }

    fn update(&mut self, domain: &str, disk: &str, done: u64, total: u64) {
        let key = (domain.to_string(), disk.to_string());
        match self {
            Display::Bars { multi, bars } => {
                let bar = bars.entry(key).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(total));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("{domain} {disk}"));
                    bar
                });
                bar.set_length(total);
                bar.set_position(done);
            }
            Display::Lines { last } => {
                let now = Instant::now();
                let due = last
                    .get(&key)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(1));
                if due || done == total {
                    last.insert(key, now);
                    let percent = (done * 100).checked_div(total).unwrap_or(100);
                    eprintln!(
                        "{domain} {disk}: {} / {} ({percent}%)",
                        pretty(done),
                        pretty(total)
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Display::Bars { bars, .. } = self {
            for bar in bars.values() {
                bar.finish();
            }
        }
    }
}
