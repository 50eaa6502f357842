//! The helper's own confinement, entered before it reads a byte of guest data.
//!
//! vmsnapd starts the helper as an unprivileged user with no capabilities, `no_new_privs`,
//! resource limits and only the image's descriptor (see the service's `host::guestfs`). Here
//! the helper narrows itself further, so that a parser bug a hostile file system exploits
//! gains nothing: a seccomp allow-list of the calls reading and answering need — no `open`,
//! no `socket`, no `execve`, no `fork` — and no core dumps or ptrace by the same user.
//!
//! The filter is loaded with `prctl(PR_SET_SECCOMP)`, not the `seccomp()` call: systemd's
//! `@system-service` filter, which the service's unit sets, allows the first and not the
//! second.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the sandbox filter cannot be built: {0}")]
    Build(String),
    #[error("{call} failed: {source}")]
    Call {
        call: &'static str,
        source: std::io::Error,
    },
}

/// The system calls the helper makes after the filter is loaded.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn check(call: &'static str, rc: libc::c_int) -> Result<(), Error> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Call {
            call,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// The allow-list as a BPF program for this machine's architecture.
pub fn filter() -> Result<BpfProgram, Error> {
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|e| Error::Build(format!("{e:?}")))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|call| (*call, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        // Anything else fails with EPERM rather than killing: a call std makes that the list
        // misses shows up as an error in the session, not as a dead helper.
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| Error::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Build(e.to_string()))
}

/// Enters the sandbox: no dumps, no children, no new files, then the system call filter.
pub fn enter() -> Result<(), Error> {
    let program = filter()?;
    // SAFETY: plain prctl/setrlimit calls with valid arguments; `fprog` points into
    // `program`, which outlives the call (the kernel copies the filter).
    unsafe {
        check(
            "prctl(PR_SET_DUMPABLE)",
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
        )?;
        for (resource, name) in [
            (libc::RLIMIT_NPROC, "setrlimit(RLIMIT_NPROC)"),
            (libc::RLIMIT_FSIZE, "setrlimit(RLIMIT_FSIZE)"),
            (libc::RLIMIT_CORE, "setrlimit(RLIMIT_CORE)"),
        ] {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(name, libc::setrlimit(resource, &zero))?;
        }
        check(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
        let fprog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        check(
            "prctl(PR_SET_SECCOMP)",
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            ),
        )?;
    }
    Ok(())
}
