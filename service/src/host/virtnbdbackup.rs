//! Driving `virtnbdbackup`: its arguments per version, its log, its progress, its cancellation.
//!
//! virtnbdbackup has no machine-readable progress. It logs, per disk, how many bytes it will
//! copy and which `.partial` file it writes; the file grows as data arrives. So progress is the
//! partial file's size against the announced total, polled a few times per second.
//!
//! Cancellation is SIGINT: virtnbdbackup then aborts libvirt's backup job itself. SIGTERM or
//! SIGKILL would leave that job running and block the domain's next backup, so they are only a
//! last resort after a grace period, followed by libvirt's job abort (the caller's job).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use super::tools::ToolVersion;
use super::{checksums, command, Error, Result};

/// The backup level VMSnap asks for; it never lets virtnbdbackup's `auto` decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Starts a new chain: deletes the domain's VMSnap checkpoints, creates `virtnbdbackup.0`.
    Full,
    /// Continues the chain in the folder with a new checkpoint.
    Inc,
    /// No checkpoint: for domains without any disk that can carry bitmaps.
    Copy,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::Inc => "inc",
            Level::Copy => "copy",
        }
    }

    pub fn parse(word: &str) -> Option<Level> {
        [Level::Full, Level::Inc, Level::Copy]
            .into_iter()
            .find(|l| l.as_str() == word)
    }
}

/// One run of virtnbdbackup.
#[derive(Debug, Clone)]
pub struct BackupSpec {
    pub program: PathBuf,
    pub version: ToolVersion,
    pub uri: String,
    pub domain: String,
    pub level: Level,
    pub output: PathBuf,
    /// NBD socket; QEMU creates it, so it must be where QEMU may write and not in the
    /// service's private /tmp.
    pub socket: PathBuf,
    pub raw: bool,
    /// lz4-compress the data frames (`--compress`, virtnbdbackup's default level 2; 1.9 and
    /// 2.x alike). virtnbdrestore reads such a stream by its header.
    pub compress: bool,
}

impl BackupSpec {
    /// The argument vector, in the dialect of the installed version.
    pub fn argv(&self) -> Vec<OsString> {
        // `--option=value` throughout: a value that starts with `-` (a domain named "-vm")
        // stays a value; with `-d NAME`, argparse would take it for an option.
        let with = |option: &str, value: &std::ffi::OsStr| {
            let mut arg = OsString::from(option);
            arg.push("=");
            arg.push(value);
            arg
        };
        let mut argv: Vec<OsString> = vec![
            with("--domain", self.domain.as_ref()),
            with("--level", self.level.as_str().as_ref()),
            with("--output", self.output.as_os_str()),
            with("--uri", self.uri.as_ref()),
            with("--socketfile", self.socket.as_os_str()),
            // Also makes it log "Backup of disk [..] finished".
            "--noprogress".into(),
        ];
        if self.raw {
            argv.push("--raw".into());
        }
        if self.compress {
            argv.push("--compress".into());
        }
        // 2.x colours its log even into a pipe; the flag does not exist before 1.9.45.
        if self.version >= ToolVersion::new(1, 9, 45) {
            argv.push("--nocolor".into());
        }
        argv
    }
}

/// A line of virtnbdbackup's log: `[ts] LEVEL logger module - func [thread]: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: String,
    pub thread: String,
    pub message: String,
}

pub fn parse_line(line: &str) -> Option<LogLine> {
    let rest = line.strip_prefix('[')?;
    let (_, rest) = rest.split_once("] ")?;
    let (level, rest) = rest.split_once(' ')?;
    let (head, message) = rest.split_once("]: ")?;
    let thread = head.rsplit_once('[')?.1;
    Some(LogLine {
        level: level.to_string(),
        thread: thread.to_string(),
        message: message.trim_end().to_string(),
    })
}

/// What a log line tells the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// The bytes this disk's backup will copy (1.9: `N bytes of data extents to backup`,
    /// 2.x: `N bytes [1.0MiB] of data extents to backup`).
    DiskTotal {
        disk: String,
        bytes: u64,
    },
    /// The file being written (`Write data to target file: [/…/vda.full.data.partial].`).
    Writing {
        disk: String,
        path: PathBuf,
    },
    DiskFinished {
        disk: String,
    },
    Error(String),
}

pub fn event(line: &LogLine) -> Option<LogEvent> {
    let m = &line.message;
    if line.level == "ERROR" || line.level == "CRITICAL" {
        return Some(LogEvent::Error(m.clone()));
    }
    if m.ends_with("of data extents to backup") {
        let bytes = m.split_whitespace().next()?.parse().ok()?;
        return Some(LogEvent::DiskTotal {
            disk: line.thread.clone(),
            bytes,
        });
    }
    if let Some(rest) = m.strip_prefix("Write data to target file: [") {
        let path = rest.trim_end_matches('.').strip_suffix(']')?;
        return Some(LogEvent::Writing {
            disk: line.thread.clone(),
            path: PathBuf::from(path),
        });
    }
    if m.starts_with("Backup of disk [") && m.contains("] finished") {
        return Some(LogEvent::DiskFinished {
            disk: line.thread.clone(),
        });
    }
    None
}

/// What the caller hears while virtnbdbackup runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Disk { disk: String, done: u64, total: u64 },
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// With the SHA-256 of the data files it wrote (name → digest), hashed while they were
    /// written; files missing here must be hashed by the caller.
    Succeeded {
        digests: std::collections::BTreeMap<String, String>,
    },
    /// The tool's own error line (or its last words when it logged no error).
    Failed(String),
    /// Stopped by a cancel request; `clean` is false when it had to be killed.
    Cancelled { clean: bool },
}

#[derive(Default)]
struct DiskState {
    total: Option<u64>,
    file: Option<PathBuf>,
    finished: bool,
    last_reported: Option<u64>,
}

/// How often partial files are measured (and so at most how often progress is reported).
const POLL: Duration = Duration::from_millis(250);

/// Runs virtnbdbackup to completion, reporting progress, until `cancel` turns true.
pub async fn run(
    spec: &BackupSpec,
    cancel: &mut watch::Receiver<bool>,
    grace: Duration,
    mut on_progress: impl FnMut(Progress),
) -> Result<Outcome> {
    let mut child = command::host_command(&spec.program)
        .args(spec.argv())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "virtnbdbackup".into(),
            source,
        })?;
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Log::default();
    let mut ticker = tokio::time::interval(POLL);
    let mut cancelled = false;
    let mut killed = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut stderr_open = true;
    let hashing = checksums::Concurrent::start();
    let status = loop {
        tokio::select! {
            line = lines.next_line(), if stderr_open => match line {
                Ok(Some(line)) => {
                    log.take(&line);
                    log.disks
                        .iter()
                        .filter_map(|(_, d)| d.file.as_deref())
                        .for_each(|f| hashing.track(f));
                }
                _ => stderr_open = false,
            },
            _ = ticker.tick() => report(&mut log.disks, &mut on_progress),
            changed = cancel.changed(), if !cancelled => {
                if changed.is_err() || *cancel.borrow() {
                    cancelled = true;
                    kill_at = Some(tokio::time::Instant::now() + grace);
                    if let Some(pid) = pid {
                        interrupt(pid);
                    }
                }
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                tracing::warn!(domain = %spec.domain, "virtnbdbackup ignored SIGINT, killing it");
                kill_at = None;
                killed = true;
                let _ = child.start_kill();
            }
            status = child.wait() => break status,
        }
    };
    let status = status.map_err(|source| Error::Spawn {
        program: "virtnbdbackup".into(),
        source,
    });
    // The process can exit before its last log lines were read (the totals of a fast disk,
    // its error): read them all before judging the run.
    while stderr_open {
        match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
            Ok(Ok(Some(line))) => log.take(&line),
            _ => stderr_open = false,
        }
    }
    let Log {
        mut disks,
        last_error,
        last_line,
    } = log;
    report(&mut disks, &mut on_progress);
    if cancelled {
        return Ok(Outcome::Cancelled { clean: !killed });
    }
    let status = status?;
    if status.success() {
        let digests = tokio::task::spawn_blocking(move || hashing.finish())
            .await
            .unwrap_or_default();
        Ok(Outcome::Succeeded { digests })
    } else {
        Ok(Outcome::Failed(
            last_error.unwrap_or_else(|| unexplained_end(status, &last_line)),
        ))
    }
}

/// Why a run that logged no ERROR failed: how the process ended, and its last line. (1.9's
/// log lines name the `virtnbdbackup` module, 2.x's name `disk` or `root`: the last line alone
/// does not say which program stopped.)
fn unexplained_end(status: std::process::ExitStatus, last_line: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("virtnbdbackup exited with code {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(name) => format!("virtnbdbackup was killed by {name}"),
            Err(_) => format!("virtnbdbackup was killed by signal {signal}"),
        },
        (None, None) => format!("virtnbdbackup ended with {status}"),
    };
    if last_line.is_empty() {
        how
    } else {
        format!("{how}; its last line: {last_line}")
    }
}

/// virtnbdbackup's closing lines that only say that something failed before.
fn is_summary(message: &str) -> bool {
    matches!(message, "Error during backup" | "Backup failed")
}

/// What the log said so far.
#[derive(Default)]
struct Log {
    disks: Vec<(String, DiskState)>,
    last_error: Option<String>,
    last_line: String,
}

impl Log {
    fn take(&mut self, line: &str) {
        tracing::debug!(target: "virtnbdbackup", "{line}");
        if !line.trim().is_empty() {
            self.last_line = line.trim().to_string();
        }
        let Some(parsed) = parse_line(line) else {
            if line.contains("error:") {
                self.last_error = Some(line.trim().to_string());
            }
            return;
        };
        match event(&parsed) {
            Some(LogEvent::DiskTotal { disk, bytes }) => {
                disk_mut(&mut self.disks, &disk).total = Some(bytes)
            }
            Some(LogEvent::Writing { disk, path }) => {
                disk_mut(&mut self.disks, &disk).file = Some(path)
            }
            Some(LogEvent::DiskFinished { disk }) => {
                disk_mut(&mut self.disks, &disk).finished = true
            }
            // 2.x ends a failed run with the bare summary "Error during backup"; the line
            // before it says what failed, and is the one worth showing.
            Some(LogEvent::Error(m)) if is_summary(&m) && self.last_error.is_some() => {}
            Some(LogEvent::Error(m)) => self.last_error = Some(m),
            None => {}
        }
    }
}

fn disk_mut<'a>(disks: &'a mut Vec<(String, DiskState)>, disk: &str) -> &'a mut DiskState {
    if let Some(i) = disks.iter().position(|(d, _)| d == disk) {
        return &mut disks[i].1;
    }
    disks.push((disk.to_string(), DiskState::default()));
    &mut disks.last_mut().expect("just pushed").1
}

fn report(disks: &mut [(String, DiskState)], on_progress: &mut impl FnMut(Progress)) {
    for (disk, state) in disks.iter_mut() {
        let Some(total) = state.total else { continue };
        let done = if state.finished {
            total
        } else {
            state
                .file
                .as_deref()
                .and_then(|f| std::fs::metadata(f).ok())
                .map(|m| m.len().min(total))
                .unwrap_or(0)
        };
        if state.last_reported != Some(done) {
            state.last_reported = Some(done);
            on_progress(Progress::Disk {
                disk: disk.clone(),
                done,
                total,
            });
        }
    }
}

fn interrupt(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    }
}

/// Socket path for one run: unique per service process, job and domain.
pub fn socket_path(dir: &Path, job: u64, index: usize) -> PathBuf {
    dir.join(format!("vmsnapd.{}.{job}.{index}.sock", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_of_both_dialects_parse() {
        let l19 = "[2026-11-23 22:23:03] INFO root virtnbdbackup - backupDisk [vda]: 5242880 bytes of data extents to backup";
        let l2x = "[2026-11-23 22:23:03] INFO root disk - backup [sda]: 5242880 bytes [5.0MiB] of data extents to backup";
        for (line, disk) in [(l19, "vda"), (l2x, "sda")] {
            let parsed = parse_line(line).unwrap();
            assert_eq!(
                event(&parsed),
                Some(LogEvent::DiskTotal {
                    disk: disk.into(),
                    bytes: 5242880
                })
            );
        }
        let w = parse_line("[2026-11-23 22:23:03] INFO root virtnbdbackup - getWriter [vda]: Write data to target file: [/b/vm/x/vda.full.data.partial].").unwrap();
        assert_eq!(
            event(&w),
            Some(LogEvent::Writing {
                disk: "vda".into(),
                path: "/b/vm/x/vda.full.data.partial".into()
            })
        );
        let f = parse_line("[2026-11-23 22:23:03] INFO root virtnbdbackup - backupDisk [vda]: Backup of disk [vda] finished, file: [/b/vda.full.data]").unwrap();
        assert_eq!(
            event(&f),
            Some(LogEvent::DiskFinished { disk: "vda".into() })
        );
        let e = parse_line("[2026-11-23 22:17:46] ERROR root virtnbdbackup - startBackupJob [MainThread]: Failed to start backup: [internal error: x]").unwrap();
        assert_eq!(
            event(&e),
            Some(LogEvent::Error(
                "Failed to start backup: [internal error: x]".into()
            ))
        );
        for junk in [
            "",
            "[",
            "[x] ",
            "no brackets: at all",
            "[a] INFO b [c",
            "\u{0}\u{ff}",
        ] {
            let _ = parse_line(junk).and_then(|l| event(&l));
        }
    }

    #[test]
    fn an_end_without_an_error_line_says_how_the_program_ended() {
        use std::os::unix::process::ExitStatusExt;
        let last = "[2026-12-06 17:04:58] INFO root disk - backup [vda]: Creating thin provisioned stream backup image";
        let killed = unexplained_end(std::process::ExitStatus::from_raw(9), last);
        assert_eq!(
            killed,
            format!("virtnbdbackup was killed by SIGKILL; its last line: {last}")
        );
        let exited = unexplained_end(std::process::ExitStatus::from_raw(2 << 8), "");
        assert_eq!(exited, "virtnbdbackup exited with code 2");
    }

    #[test]
    fn the_cause_is_kept_over_the_closing_summary() {
        let mut log = Log::default();
        for line in [
            "[2026-12-07 00:48:40] ERROR root disk - backup [vda]: Disk backup failed: [NBD connection reset]",
            "[2026-12-07 00:48:41] ERROR root virtnbdbackup - main [MainThread]: Error during backup",
        ] {
            log.take(line);
        }
        assert_eq!(
            log.last_error.as_deref(),
            Some("Disk backup failed: [NBD connection reset]")
        );
        let mut alone = Log::default();
        alone.take("[2026-12-07 00:48:41] ERROR root virtnbdbackup - main [MainThread]: Error during backup");
        assert_eq!(alone.last_error.as_deref(), Some("Error during backup"));
    }

    #[test]
    fn arguments_follow_the_version() {
        let spec = BackupSpec {
            program: "/usr/bin/virtnbdbackup".into(),
            version: ToolVersion::new(1, 9, 15),
            uri: "qemu:///system".into(),
            domain: "-vm; x".into(),
            level: Level::Inc,
            output: "/b/-vm; x/vmsnap-backup-monthly-2026-11".into(),
            socket: "/var/lib/libvirt/qemu/s.sock".into(),
            raw: true,
            compress: false,
        };
        let old: Vec<String> = spec
            .argv()
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        assert_eq!(&old[..2], ["--domain=-vm; x", "--level=inc"]);
        assert!(old.contains(&"--raw".to_string()));
        assert!(!old
            .iter()
            .any(|a| a == "--nocolor" || a == "-S" || a == "--compress"));
        let new = BackupSpec {
            version: ToolVersion::new(2, 28, 0),
            compress: true,
            ..spec
        };
        let new = new.argv();
        assert!(new.iter().any(|a| a == "--nocolor"));
        // Bare, so both versions take their default level (argparse's `const`).
        assert!(new.iter().any(|a| a == "--compress"));
    }
}
