//! Harness for the integration tests: the real binaries, a real libvirtd, a real bus.
//!
//! `tests/run` prepares the host (libvirtd, a private system bus with polkitd, vmsnapd) and
//! passes it in through `VMSNAP_TEST_*` variables. A test that finds a part missing fails with
//! a message naming it; nothing is skipped.

pub mod bus;
pub mod chain;
pub mod guest;
pub mod guestdisk;
pub mod polkit;
pub mod socket_proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `tests/run` set up.
#[derive(Debug)]
pub struct TestHost {
    /// Directory holding vmsnapd and vmsnapctl.
    pub bin_dir: PathBuf,
    /// Prefix of every domain this run creates (`vmsnaptest-<pid>-`).
    pub prefix: String,
    /// Directory for this run's disk images.
    pub images: PathBuf,
    /// Scratch directory of this run (bus socket, logs).
    pub run_dir: PathBuf,
    /// Address of the private system bus vmsnapd serves on.
    pub bus_address: String,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: the integration tests need the test host that `tests/run` \
             prepares (libvirtd, a private system bus with polkitd, a running vmsnapd); \
             run them through tests/run"
        )
    })
}

/// Reproducible bytes no compressor or zero detection shortens (xorshift from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The test host, checked once.
pub fn host() -> &'static TestHost {
    static HOST: OnceLock<TestHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = TestHost {
            bin_dir: PathBuf::from(required("VMSNAP_BIN_DIR")),
            prefix: required("VMSNAP_TEST_PREFIX"),
            images: PathBuf::from(required("VMSNAP_TEST_IMAGES")),
            run_dir: PathBuf::from(required("VMSNAP_TEST_DIR")),
            bus_address: required("DBUS_SYSTEM_BUS_ADDRESS"),
        };
        for bin in ["vmsnapd", "vmsnapctl"] {
            assert!(
                host.bin_dir.join(bin).is_file(),
                "{} is missing: build the workspace first (tests/run does)",
                host.bin_dir.join(bin).display()
            );
        }
        for tool in [
            "virsh",
            "qemu-img",
            "qemu-io",
            "virtnbdbackup",
            "dbus-daemon",
            "busctl",
        ] {
            assert!(
                which(tool).is_some(),
                "{tool} is not installed: tests/run installs the test host's packages"
            );
        }
        std::fs::create_dir_all(&host.images).expect("cannot create the images directory");
        host
    })
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs a command to completion, killing it after `deadline` (then the test fails: a hang is
/// a defect, not a slow machine).
pub fn run(command: &mut Command, deadline: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait failed").is_some() {
            break;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait failed");
            panic!(
                "{command:?} did not finish within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("wait failed");
    Run {
        code: out.status.code().unwrap_or(128),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `vmsnapctl ARGS` as root against the run's bus.
pub fn vmsnapctl(args: &[&str]) -> Run {
    vmsnapctl_on(&host().bus_address, args)
}

/// `vmsnapctl ARGS` against another bus.
pub fn vmsnapctl_on(bus_address: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new(host().bin_dir.join("vmsnapctl"));
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .env_remove("VMSNAP_LOG");
    run(&mut cmd, Duration::from_secs(180))
}

/// `vmsnapctl files … export` running: its URI, until dropped (which stops it as Ctrl-C
/// would).
pub struct Exported {
    child: std::process::Child,
    pub uri: String,
}

impl Exported {
    /// Starts `vmsnapctl ARGS` (a `files … export` command) as root and waits for its URI.
    pub fn start(args: &[&str]) -> Exported {
        use std::io::BufRead;
        let mut child = Command::new(host().bin_dir.join("vmsnapctl"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &host().bus_address)
            .env_remove("VMSNAP_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("vmsnapctl starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the export's URI");
        let uri = line.trim().to_string();
        if !uri.starts_with("nbd+unix:///?socket=") {
            let _ = child.kill();
            let status = child.wait();
            panic!("vmsnapctl {args:?} printed {line:?} and ended {status:?}");
        }
        Exported { child, uri }
    }

    /// The export's socket.
    pub fn socket(&self) -> &str {
        self.uri.trim_start_matches("nbd+unix:///?socket=")
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        // SIGTERM, as a service manager or Ctrl-C would end it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `vmsnapctl ARGS` as the unprivileged user `vmsnaptest` (no rights but reading).
pub fn vmsnapctl_as_user(args: &[&str]) -> Run {
    vmsnapctl_as("vmsnaptest", args)
}

/// `vmsnapctl ARGS` as `user` (`vmsnaptest`: no rights; `vmsnaplv`: in the libvirt group).
pub fn vmsnapctl_as(user: &str, args: &[&str]) -> Run {
    vmsnapctl_as_on(user, &host().bus_address, args)
}

/// `vmsnapctl ARGS` as `user` against the bus at `bus_address`.
pub fn vmsnapctl_as_on(user: &str, bus_address: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env"])
        .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={bus_address}"))
        .arg(host().bin_dir.join("vmsnapctl"))
        .args(args);
    run(&mut cmd, Duration::from_secs(180))
}

/// Runs a host tool for test set-up; panics with its output when it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = run(
        Command::new(program).args(args).env("LC_ALL", "C"),
        Duration::from_secs(120),
    );
    assert_eq!(
        out.code, 0,
        "{program} {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The directory the run's vmsnapd lets callers other than root write below.
pub fn backup_root_for_users() -> PathBuf {
    host().images.join("roots")
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}
