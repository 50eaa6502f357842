//! The guest-file-system reader, `vmsnap-guestfs`: started without privileges, asked over a
//! pipe.
//!
//! A guest's file system is data the guest wrote. The service never parses it itself: it
//! starts the reader with the one read-only descriptor of the rebuilt disk (descriptor 3),
//! as the dedicated user `vmsnap-files` (no supplementary groups, so no capabilities), with
//! `no_new_privs`, without network (a network namespace of its own where the service may
//! make one; the unit's `PrivateNetwork=` otherwise), with limits on memory, descriptors and
//! CPU time, an empty environment and `/` as its directory. The reader then loads its own
//! system-call filter (see the guestfs crate). Every answer is bounded and every question has
//! a deadline: a reader that hangs, dies or talks nonsense ends its session, never the
//! service.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use vmsnap_guestfs::protocol::{
    Entry, Failure, Reply, Request, Volume, FRAME_FAILED, MAX_FRAME, MAX_LINE,
};

/// The user the reader runs as, resolved once per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sandbox {
    pub uid: u32,
    pub gid: u32,
}

impl Sandbox {
    /// Looks up `user`; never root, never a user that does not exist.
    pub fn for_user(user: &str) -> Result<Sandbox, String> {
        let found = nix::unistd::User::from_name(user)
            .map_err(|e| format!("looking up the user {user}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "the user {user}, which reads guest file systems, does not exist \
                     (the package creates it; see the README)"
                )
            })?;
        if found.uid.is_root() || found.gid.as_raw() == 0 {
            return Err(format!(
                "{user} is root; guest data is never parsed as root"
            ));
        }
        Ok(Sandbox {
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
        })
    }
}

/// Why a question got no answer.
#[derive(Debug)]
pub enum AskError {
    /// The reader answered: the file system says no (not found, unsupported, corrupt …).
    Failed(Failure),
    /// The reader is gone or misbehaved (died, hung, broke the protocol): the session is over.
    Broken(String),
    /// The caller stopped a read midway; the reader was restarted.
    Cancelled,
    /// The caller's sink refused the bytes (writing the extracted file failed).
    Sink(std::io::Error),
}

/// Memory the reader may map: ext4's block cache and a FAT table fit many times over.
const ADDRESS_SPACE: u64 = 1 << 30;
/// CPU seconds over a reader's life: a loop in a hostile file system ends here at the latest.
const CPU_SECONDS: u64 = 3600;

pub struct Reader {
    program: PathBuf,
    image: std::fs::File,
    sandbox: Sandbox,
    deadline: Duration,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn spawn(
    program: &Path,
    image: &std::fs::File,
    sandbox: Sandbox,
) -> std::io::Result<(Child, ChildStdin, BufReader<ChildStdout>)> {
    let fd = image.as_raw_fd();
    let Sandbox { uid, gid } = sandbox;
    let mut command = tokio::process::Command::new(program);
    command
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls (dup2, fcntl, close_range/close, unshare,
    // setrlimit, setgroups, setres[ug]id, prctl) between fork and exec, on values copied in before the fork.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            if fd == 3 {
                check(libc::fcntl(3, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(fd, 3))?;
            }
            // Nothing else of the service's reaches the reader (descriptors it opened without
            // close-on-exec, or inherited).
            if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                for other in 4..65536 {
                    libc::close(other);
                }
            }
            // Refused inside the unit's sandbox, where PrivateNetwork= already holds.
            let _ = libc::unshare(libc::CLONE_NEWNET);
            for (resource, limit) in [
                (libc::RLIMIT_AS, ADDRESS_SPACE),
                (libc::RLIMIT_CPU, CPU_SECONDS),
                (libc::RLIMIT_NOFILE, 16),
                (libc::RLIMIT_CORE, 0),
            ] {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                check(libc::setrlimit(resource, &l))?;
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    if let Some(stderr) = child.stderr.take() {
        // What the reader says on its way out (a refusal, a panic): logged, a bounded amount.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr.take(64 * 1024)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(target: "vmsnap-guestfs", "{line}");
            }
        });
    }
    Ok((child, stdin, stdout))
}

impl Reader {
    /// Starts the reader `program` on `image` (a regular file opened read-only).
    pub fn start(
        program: &Path,
        image: std::fs::File,
        sandbox: Sandbox,
        deadline: Duration,
    ) -> std::io::Result<Reader> {
        let (child, stdin, stdout) = spawn(program, &image, sandbox)?;
        Ok(Reader {
            program: program.to_path_buf(),
            image,
            sandbox,
            deadline,
            child,
            stdin,
            stdout,
        })
    }

    /// A fresh reader on the same image (after a read was stopped midway).
    fn restart(&mut self) -> std::io::Result<()> {
        let (child, stdin, stdout) = spawn(&self.program, &self.image, self.sandbox)?;
        self.child = child;
        self.stdin = stdin;
        self.stdout = stdout;
        Ok(())
    }

    /// The reader's process id (for the tests' and the logs' sake).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn reply(&mut self) -> Result<Reply, AskError> {
        let mut line = Vec::new();
        let mut bounded = (&mut self.stdout).take(MAX_LINE as u64);
        let read = tokio::time::timeout(self.deadline, bounded.read_until(b'\n', &mut line)).await;
        match read {
            Err(_) => Err(AskError::Broken(format!(
                "the file-system reader did not answer within {} s",
                self.deadline.as_secs()
            ))),
            Ok(Err(e)) => Err(AskError::Broken(format!("the file-system reader: {e}"))),
            Ok(Ok(0)) => Err(AskError::Broken(
                "the file-system reader ended (the file system made it fail)".into(),
            )),
            Ok(Ok(_)) if !line.ends_with(b"\n") => Err(AskError::Broken(
                "the file-system reader's answer is too long".into(),
            )),
            Ok(Ok(_)) => serde_json::from_slice(&line)
                .map_err(|e| AskError::Broken(format!("the file-system reader's answer: {e}"))),
        }
    }

    async fn ask(&mut self, request: &Request) -> Result<Reply, AskError> {
        let mut text = serde_json::to_vec(request).expect("requests serialize");
        text.push(b'\n');
        let sent = tokio::time::timeout(self.deadline, self.stdin.write_all(&text)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return Err(AskError::Broken(
                "the file-system reader stopped listening".into(),
            ));
        }
        match self.reply().await? {
            Reply::Failed(f) => Err(AskError::Failed(f)),
            other => Ok(other),
        }
    }

    fn unexpected(reply: Reply) -> AskError {
        AskError::Broken(format!("unexpected answer from the reader: {reply:?}"))
    }

    pub async fn volumes(&mut self) -> Result<Vec<Volume>, AskError> {
        match self.ask(&Request::Volumes).await? {
            Reply::Volumes(v) => Ok(v),
            other => Err(Self::unexpected(other)),
        }
    }

    pub async fn list(&mut self, volume: u32, path: &str) -> Result<(Vec<Entry>, bool), AskError> {
        let request = Request::List {
            volume,
            path: path.into(),
        };
        match self.ask(&request).await? {
            Reply::Entries { entries, truncated } => Ok((entries, truncated)),
            other => Err(Self::unexpected(other)),
        }
    }

    pub async fn stat(&mut self, volume: u32, path: &str) -> Result<Entry, AskError> {
        let request = Request::Stat {
            volume,
            path: path.into(),
        };
        match self.ask(&request).await? {
            Reply::Entry(e) => Ok(e),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Streams a regular file's bytes into `sink`, never more than the size the reader
    /// announced; stops (and restarts the reader) when `stop` says so between frames.
    pub async fn read(
        &mut self,
        volume: u32,
        path: &str,
        sink: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<u64, AskError> {
        let request = Request::Read {
            volume,
            path: path.into(),
        };
        let size = match self.ask(&request).await? {
            Reply::File { size } => size,
            other => return Err(Self::unexpected(other)),
        };
        let mut done = 0u64;
        let mut buf = vec![0u8; MAX_FRAME as usize];
        loop {
            if stop() {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                self.restart()
                    .map_err(|e| AskError::Broken(format!("restarting the reader: {e}")))?;
                return Err(AskError::Cancelled);
            }
            let mut header = [0u8; 4];
            let got =
                tokio::time::timeout(self.deadline, self.stdout.read_exact(&mut header)).await;
            if !matches!(got, Ok(Ok(_))) {
                return Err(AskError::Broken(format!(
                    "{path}: the reader stopped mid-file"
                )));
            }
            let len = u32::from_be_bytes(header);
            if len == 0 {
                return if done == size {
                    Ok(done)
                } else {
                    Err(AskError::Broken(format!("{path}: shorter than announced")))
                };
            }
            if len == FRAME_FAILED {
                return match self.reply().await? {
                    Reply::Failed(f) => Err(AskError::Failed(f)),
                    other => Err(Self::unexpected(other)),
                };
            }
            if len > MAX_FRAME || done + u64::from(len) > size {
                return Err(AskError::Broken(format!(
                    "{path}: the reader sent more than it announced"
                )));
            }
            let chunk = &mut buf[..len as usize];
            let got = tokio::time::timeout(self.deadline, self.stdout.read_exact(chunk)).await;
            if !matches!(got, Ok(Ok(_))) {
                return Err(AskError::Broken(format!(
                    "{path}: the reader stopped mid-file"
                )));
            }
            sink(chunk).map_err(AskError::Sink)?;
            done += u64::from(len);
        }
    }

    /// Stops the reader and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
