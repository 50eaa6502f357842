//! `vmsnap-guestfs`: answers vmsnapd's questions about one disk image (descriptor 3) on
//! stdin/stdout, confined and unprivileged. Not meant to be run by hand.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;

use vmsnap_guestfs::{sandbox, serve};

/// The descriptor vmsnapd passes the image on.
const IMAGE_FD: i32 = 3;

fn main() -> ExitCode {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("vmsnap-guestfs: refusing to read guest data as root");
        return ExitCode::from(2);
    }
    // SAFETY: vmsnapd opened descriptor 3 for this process; nothing else owns it.
    let image = unsafe { File::from_raw_fd(IMAGE_FD) };
    let size = match image.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            eprintln!("vmsnap-guestfs: descriptor 3 is not a regular file");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("vmsnap-guestfs: descriptor 3: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sandbox::enter() {
        eprintln!("vmsnap-guestfs: {e}");
        return ExitCode::from(2);
    }
    let mut session = serve::Session::new(image, size);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let served = serve::serve(&mut session, stdin.lock(), &mut stdout);
    let _ = stdout.flush();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmsnap-guestfs: {e}");
            ExitCode::from(1)
        }
    }
}
