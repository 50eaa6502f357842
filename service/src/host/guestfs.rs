//! The guest-file-system reader, `vmsnap-guestfs`: started without privileges, asked over a
//! pipe.
//!
//! A chain's data files and the guest's file system in them are data the guest (or whoever
//! could write the backup root) wrote. The service never parses them itself: it starts the
//! reader with read-only descriptors of one disk's data files (descriptors 3 …, the full
//! first), as the dedicated user `vmsnap-files` (no supplementary groups, so no
//! capabilities), with `no_new_privs`, without network (a network namespace of its own where
//! the service may make one; the unit's `PrivateNetwork=` otherwise), with limits on memory,
//! descriptors and CPU time, an empty environment and `/` as its directory. The reader then
//! loads its own system-call filter (see the guestfs crate) and reads the point in place,
//! through the chain's index. Every answer is bounded and every question has a deadline: a
//! reader that hangs, dies or talks nonsense ends its session, never the service.
//!
//! Three modes: `browse` (file browsing, [`Reader`]), `check` (verify's structural check,
//! [`check_chain`]) and `nbd` (one NBD connection, [`serve_nbd`]).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use vmsnap_guestfs::protocol::{
    ChainCheck, Entry, Failure, Opened, Reply, Request, Volume, FRAME_FAILED, MAX_FRAME, MAX_LINE,
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
    files: Vec<std::fs::File>,
    sandbox: Sandbox,
    deadline: Duration,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the reader is started to do.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Browse,
    Check,
    Nbd,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Browse => "browse",
            Mode::Check => "check",
            Mode::Nbd => "nbd",
        }
    }
}

/// Descriptors the reader may hold beyond its data files (standard streams, the allocator's
/// and the runtime's needs).
const SPARE_DESCRIPTORS: u64 = 16;

/// Starts the reader in `mode` on `files`, with `stdio` as its stdin and stdout when given
/// (an NBD connection), pipes otherwise.
fn spawn_reader(
    program: &Path,
    mode: Mode,
    files: &[std::fs::File],
    sandbox: Sandbox,
    stdio: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<Child> {
    let sources: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    // Filled between fork and exec: allocated here, since the child may not allocate.
    let mut moved = vec![0i32; sources.len()];
    let mut command = tokio::process::Command::new(program);
    command
        .arg(mode.arg())
        .arg(sources.len().to_string())
        .env_clear()
        .current_dir("/")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match stdio {
        Some(fd) => {
            let other = fd.try_clone()?;
            command.stdin(Stdio::from(fd)).stdout(Stdio::from(other));
        }
        None => {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
        }
    }
    // SAFETY: `confine` makes only async-signal-safe calls, on values (and a buffer) made
    // before the fork.
    unsafe {
        command.pre_exec(move || confine(&sources, &mut moved, sandbox));
    }
    let mut child = command.spawn()?;
    if let Some(stderr) = child.stderr.take() {
        // What the reader says on its way out (a refusal, a panic): logged, a bounded amount.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr.take(64 * 1024)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(target: "vmsnap-guestfs", "{line}");
            }
        });
    }
    Ok(child)
}

/// In the child, between fork and exec: the data files `sources` to descriptors 3 onward
/// (through `moved`, a buffer as long), nothing else open, no network, the limits, the
/// sandbox user without groups, no new privileges.
///
/// # Safety
/// Only async-signal-safe calls (fcntl, dup2, close_range/close, unshare, setrlimit,
/// setgroups, setres[ug]id, prctl); no allocation.
unsafe fn confine(sources: &[i32], moved: &mut [i32], sandbox: Sandbox) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let count = sources.len() as i32;
    let Sandbox { uid, gid } = sandbox;
    // First every file above the range it goes to, then each into its place: a source that
    // already sits in the range is never overwritten before it moved.
    for (n, fd) in sources.iter().enumerate() {
        moved[n] = libc::fcntl(*fd, libc::F_DUPFD, 3 + count);
        check(moved[n])?;
    }
    for (n, fd) in moved.iter().enumerate() {
        check(libc::dup2(*fd, 3 + n as i32))?;
    }
    // Nothing else of the service's reaches the reader (descriptors it opened without
    // close-on-exec, or inherited), nor the copies made above.
    let first_closed = (3 + count) as u32;
    if libc::syscall(libc::SYS_close_range, first_closed, u32::MAX, 0u32) != 0 {
        for other in first_closed as i32..65536 {
            libc::close(other);
        }
    }
    // Refused inside the unit's sandbox, where PrivateNetwork= already holds.
    let _ = libc::unshare(libc::CLONE_NEWNET);
    for (resource, limit) in [
        (libc::RLIMIT_AS, ADDRESS_SPACE),
        (libc::RLIMIT_CPU, CPU_SECONDS),
        (libc::RLIMIT_NOFILE, 3 + count as u64 + SPARE_DESCRIPTORS),
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
}

fn spawn(
    program: &Path,
    files: &[std::fs::File],
    sandbox: Sandbox,
) -> std::io::Result<(Child, ChildStdin, BufReader<ChildStdout>)> {
    let mut child = spawn_reader(program, Mode::Browse, files, sandbox, None)?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    Ok((child, stdin, stdout))
}

/// Reads one reply line from `stdout` within `deadline`.
async fn reply_line(
    stdout: &mut BufReader<ChildStdout>,
    deadline: Duration,
) -> Result<Reply, AskError> {
    let mut line = Vec::new();
    let mut bounded = stdout.take(MAX_LINE as u64);
    let read = tokio::time::timeout(deadline, bounded.read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => Err(AskError::Broken(format!(
            "the file-system reader did not answer within {} s",
            deadline.as_secs()
        ))),
        Ok(Err(e)) => Err(AskError::Broken(format!("the file-system reader: {e}"))),
        Ok(Ok(0)) => Err(AskError::Broken(
            "the file-system reader ended (the data made it fail)".into(),
        )),
        Ok(Ok(_)) if !line.ends_with(b"\n") => Err(AskError::Broken(
            "the file-system reader's answer is too long".into(),
        )),
        Ok(Ok(_)) => serde_json::from_slice(&line)
            .map_err(|e| AskError::Broken(format!("the file-system reader's answer: {e}"))),
    }
}

/// Verify's structural check of one disk's data `files` (the full first), by a reader of
/// its own; `Err` when the reader could not say (it died, hung or broke the protocol).
pub async fn check_chain(
    program: &Path,
    files: &[std::fs::File],
    sandbox: Sandbox,
    deadline: Duration,
) -> Result<ChainCheck, AskError> {
    let mut child = spawn_reader(program, Mode::Check, files, sandbox, None)
        .map_err(|e| AskError::Broken(format!("starting the reader: {e}")))?;
    drop(child.stdin.take());
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let answer = reply_line(&mut stdout, deadline).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    match answer? {
        Reply::Checked(found) => Ok(found),
        Reply::Failed(f) => Err(AskError::Failed(f)),
        other => Err(Reader::unexpected(other)),
    }
}

/// Serves one NBD connection (`connection`, a connected socket in blocking mode) with a
/// reader on `files`; returns when the client leaves or the reader ends.
pub async fn serve_nbd(
    program: &Path,
    files: &[std::fs::File],
    sandbox: Sandbox,
    connection: std::os::fd::OwnedFd,
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = spawn_reader(program, Mode::Nbd, files, sandbox, Some(connection))?;
    child.wait().await
}

impl Reader {
    /// Starts the reader `program` on one disk's data `files` (the full first, the point's
    /// own last), and waits for it to open the point: a chain its index refuses is
    /// `AskError::Failed` with `FailureKind::CorruptBackup`.
    pub async fn start(
        program: &Path,
        files: Vec<std::fs::File>,
        sandbox: Sandbox,
        deadline: Duration,
    ) -> Result<(Reader, Opened), AskError> {
        let (child, stdin, stdout) = spawn(program, &files, sandbox)
            .map_err(|e| AskError::Broken(format!("starting the reader: {e}")))?;
        let mut reader = Reader {
            program: program.to_path_buf(),
            files,
            sandbox,
            deadline,
            child,
            stdin,
            stdout,
        };
        match reader.reply().await {
            Ok(Reply::Ready(opened)) => Ok((reader, opened)),
            Ok(Reply::Failed(f)) => {
                reader.stop().await;
                Err(AskError::Failed(f))
            }
            Ok(other) => {
                reader.stop().await;
                Err(Self::unexpected(other))
            }
            Err(e) => {
                reader.stop().await;
                Err(e)
            }
        }
    }

    /// A fresh reader on the same files (after a read was stopped midway).
    async fn restart(&mut self) -> Result<(), AskError> {
        let (child, stdin, stdout) = spawn(&self.program, &self.files, self.sandbox)
            .map_err(|e| AskError::Broken(format!("restarting the reader: {e}")))?;
        self.child = child;
        self.stdin = stdin;
        self.stdout = stdout;
        match self.reply().await? {
            Reply::Ready(_) => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The reader's process id (for the tests' and the logs' sake).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn reply(&mut self) -> Result<Reply, AskError> {
        reply_line(&mut self.stdout, self.deadline).await
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
                self.restart().await?;
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
