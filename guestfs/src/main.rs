//! `vmsnap-guestfs MODE N`: reads one disk of a backup chain in place from the N data files
//! vmsnapd hands it on descriptors 3 … 3+N-1 (the full first), confined and unprivileged, and
//! answers on stdin/stdout. Not meant to be run by hand.
//!
//! - `browse`: the point the files end at, for the file-browsing protocol (first line: `ready`
//!   or `failed`).
//! - `check`: verify's structural check of the files (one `checked` line).
//! - `nbd`: the point as a read-only NBD export, spoken on stdin/stdout.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;

use vmsnap_guestfs::image::Disk;
use vmsnap_guestfs::point::Point;
use vmsnap_guestfs::protocol::{Failure, FailureKind, Opened, Reply};
use vmsnap_guestfs::{check, nbd, sandbox, serve, MAX_FILES};

/// The first descriptor vmsnapd passes a data file on.
const FIRST_FD: i32 = 3;

enum Mode {
    Browse,
    Check,
    Nbd,
}

fn arguments() -> Result<(Mode, usize), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, count] = args.as_slice() else {
        return Err("usage: vmsnap-guestfs browse|check|nbd N".into());
    };
    let mode = match mode.as_str() {
        "browse" => Mode::Browse,
        "check" => Mode::Check,
        "nbd" => Mode::Nbd,
        other => return Err(format!("unknown mode {other}")),
    };
    match count.parse::<usize>() {
        Ok(n) if (1..=MAX_FILES).contains(&n) => Ok((mode, n)),
        _ => Err(format!("N must be 1 to {MAX_FILES}, not {count}")),
    }
}

/// Takes descriptors 3 … 3+`count`-1 with their sizes: taken here, before the sandbox, which
/// allows no `fstat`.
fn data_files(count: usize) -> Result<Vec<(File, u64)>, String> {
    (0..count)
        .map(|n| {
            let fd = FIRST_FD + n as i32;
            // SAFETY: vmsnapd opened these descriptors for this process; nothing else owns them.
            let file = unsafe { File::from_raw_fd(fd) };
            match file.metadata() {
                Ok(m) if m.is_file() => Ok((file, m.len())),
                Ok(_) => Err(format!("descriptor {fd} is not a regular file")),
                Err(e) => Err(format!("descriptor {fd}: {e}")),
            }
        })
        .collect()
}

fn say(out: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)?;
    out.flush()
}

fn run(mode: Mode, files: Vec<(File, u64)>) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    if let Mode::Check = mode {
        return say(&mut stdout, &Reply::Checked(check::check_chain(files)));
    }
    let point = match Point::open(files) {
        Ok(p) => p,
        Err(e) => {
            let failure = Failure::new(FailureKind::CorruptBackup, format!("the chain's {e}"));
            return match mode {
                Mode::Nbd => Err(std::io::Error::other(failure.message)),
                _ => say(&mut stdout, &Reply::Failed(failure)),
            };
        }
    };
    match mode {
        Mode::Nbd => nbd::serve(&point, stdin.lock(), &mut stdout),
        _ => {
            let opened = Opened {
                size: point.size(),
                pieces: point.pieces() as u64,
            };
            say(&mut stdout, &Reply::Ready(opened))?;
            let mut session = serve::Session::new(Disk::Point(point));
            serve::serve(&mut session, stdin.lock(), &mut stdout)
        }
    }
}

fn main() -> ExitCode {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("vmsnap-guestfs: refusing to read guest data as root");
        return ExitCode::from(2);
    }
    let prepared = arguments().and_then(|(mode, count)| Ok((mode, data_files(count)?)));
    let (mode, files) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmsnap-guestfs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sandbox::enter() {
        eprintln!("vmsnap-guestfs: {e}");
        return ExitCode::from(2);
    }
    let served = run(mode, files);
    let _ = std::io::stdout().flush();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmsnap-guestfs: {e}");
            ExitCode::from(1)
        }
    }
}
