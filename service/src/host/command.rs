//! Running host programs from an argument vector, with a deadline.
//!
//! This is the only place the service starts processes. There is no shell anywhere on the path:
//! a domain called `vm1;touch /tmp/x` is one argv element that qemu-img receives verbatim.
//! Every run has a timeout, so a wedged libvirtd turns into an error instead of a call that
//! never returns, and the child is killed when the future is dropped (a cancelled call leaves
//! no orphan behind).

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{Error, Result};

/// Captured result of a finished program.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
    pub code: Option<i32>,
}

impl Output {
    /// The line a user needs to see: the last `error:` line of stderr, else its last non-empty
    /// line, else the exit status.
    pub fn error_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines
            .iter()
            .rev()
            .find(|l| l.starts_with("error:") || l.contains("ERROR"))
            .or(lines.last())
            .map(|l| l.to_string())
            .unwrap_or_else(|| match self.code {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            })
    }
}

/// A host program with the environment every one of them gets: stable, parseable messages
/// whatever the host's locale, and a `HOME` (systemd gives system services none, and
/// virtnbdrestore 1.9 stops with `KeyError: 'HOME'` without it; the unit sets the service's
/// state directory, this covers a start by D-Bus activation without systemd).
pub fn host_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command.env("LC_ALL", "C");
    if std::env::var_os("HOME").is_none() {
        command.env("HOME", "/root");
    }
    command
}

/// Runs `program args…` and captures its output. A non-zero exit is *not* an error here: the
/// caller decides what a failure means (qemu-img's "image is locked" is a different thing from
/// "no such file").
pub async fn run(program: &Path, args: &[OsString], timeout: Duration) -> Result<Output> {
    run_cancellable(program, args, timeout, std::future::pending()).await
}

/// How long a cancelled program and its helpers get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Like [`run`], but stops the program when `cancelled` resolves first, with
/// [`Error::Cancelled`]. The program runs in a process group of its own, and the whole group
/// is stopped (SIGTERM, then SIGKILL after a grace period) and waited for: helpers it started
/// — virtnbdrestore's qemu-nbd — go with it, so nothing holds a scratch image open after.
pub async fn run_cancellable(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    cancelled: impl std::future::Future<Output = ()>,
) -> Result<Output> {
    let name = program_name(program);
    let mut command = host_command(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    tracing::debug!(program = %name, ?args, "running");
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: name.clone(),
        source,
    })?;
    let group = child.id().map(|pid| pid as i32);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let captured = async { tokio::join!(capture(stdout), capture(stderr)) };
    let finished = async {
        let ((out, err), status) = tokio::join!(captured, child.wait());
        status.map(|status| (out, err, status))
    };
    let stopped = tokio::select! {
        r = tokio::time::timeout(timeout, finished) => Some(r),
        () = cancelled => None,
    };
    let Some(result) = stopped else {
        stop_group(&mut child, group, &name).await;
        return Err(Error::Cancelled { program: name });
    };
    let (stdout, stderr, status) = match result {
        Ok(done) => done.map_err(|source| Error::Spawn {
            program: name.clone(),
            source,
        })?,
        Err(_) => {
            stop_group(&mut child, group, &name).await;
            return Err(Error::Timeout {
                program: name.clone(),
                seconds: timeout.as_secs(),
            });
        }
    };
    Ok(Output {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        success: status.success(),
        code: status.code(),
    })
}

/// SIGTERM to the program's process group, SIGKILL to what is left after [`STOP_GRACE`], and
/// waits for the program itself.
async fn stop_group(child: &mut tokio::process::Child, group: Option<i32>, name: &str) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(group) = group else {
        return;
    };
    let _ = killpg(Pid::from_raw(group), Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(program = %name, "did not stop on SIGTERM, killing its process group");
    }
    // Helpers may outlive the program itself; the group goes in any case.
    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Most bytes kept of one stream of a program's output; the rest is read and dropped, so
/// the program never blocks on a full pipe and the service's memory stays bounded.
pub const MAX_CAPTURE: u64 = 4 * 1024 * 1024;

async fn capture(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut stream).take(MAX_CAPTURE).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    kept
}

pub fn program_name(program: &Path) -> String {
    program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_and_the_program_still_finishes() {
        let out = run(
            Path::new("/usr/bin/head"),
            &args(&["-c", "20000000", "/dev/zero"]),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(out.success, "head was blocked or killed: {out:?}");
        assert_eq!(out.stdout.len() as u64, MAX_CAPTURE);
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[tokio::test]
    async fn metacharacters_reach_the_program_verbatim() {
        let out = run(
            Path::new("/bin/echo"),
            &args(&["vm1;touch /tmp/x", "$(id)", "`id`"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(out.success);
        assert_eq!(out.stdout, "vm1;touch /tmp/x $(id) `id`\n");
    }

    #[tokio::test]
    async fn a_hung_program_times_out() {
        let err = run(
            Path::new("/bin/sleep"),
            &args(&["30"]),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn error_line_prefers_the_error_line() {
        let out = Output {
            stdout: String::new(),
            stderr: "warning: x\nerror: failed to get domain 'nope'\n\n".into(),
            success: false,
            code: Some(1),
        };
        assert_eq!(out.error_line(), "error: failed to get domain 'nope'");
        let silent = Output {
            stderr: String::new(),
            ..out
        };
        assert_eq!(silent.error_line(), "exit status 1");
    }
}
