//! Extra private buses and service instances for tests that need their own (a service with a
//! different environment, or no service at all).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{host, repo};

/// A client connection to the bus at `address`, as any D-Bus client would open one.
pub async fn connect(address: &str) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .expect("a bus address")
        .build()
        .await
        .expect("cannot connect to the test bus")
}

/// A private system bus configured like the run's main one, removed on drop.
pub struct ScratchBus {
    child: Child,
    dir: PathBuf,
    pub address: String,
}

impl ScratchBus {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, "")
    }

    /// A bus whose configuration also contains `extra` (e.g. a `<servicedir>`).
    pub fn start_with(name: &str, extra: &str) -> Self {
        let dir = host().run_dir.join(format!("bus-{name}"));
        std::fs::create_dir_all(&dir).expect("cannot create the scratch bus directory");
        let socket = dir.join("bus");
        let template = std::fs::read_to_string(repo().join("tests/host/system-bus.conf.in"))
            .expect("tests/host/system-bus.conf.in is missing");
        let config = template
            .replace("@LISTEN@", &format!("unix:path={}", socket.display()))
            .replace(
                "@POLICY_DIR@",
                &repo().join("systemd").display().to_string(),
            )
            .replace("</busconfig>", &format!("{extra}\n</busconfig>"));
        let config_path = dir.join("bus.conf");
        std::fs::write(&config_path, config).expect("cannot write the bus configuration");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon is missing (tests/run installs the dbus package)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("dbus-daemon printed no address");
        assert!(!line.trim().is_empty(), "dbus-daemon did not start");
        ScratchBus {
            child,
            dir,
            address: line.trim().to_string(),
        }
    }

    /// Starts vmsnapd on this bus with extra environment, and waits until it owns its name.
    pub fn start_service(&self, env: &[(&str, &str)]) -> Service {
        self.start_service_with(&[], env)
    }

    /// vmsnapd with extra arguments.
    pub fn start_service_args(&self, args: &[&str]) -> Service {
        self.spawn_service(&[], args, &[])
    }

    /// Like [`ScratchBus::start_service`], with vmsnapd run through a wrapper command
    /// (`faketime +40 days`, …).
    pub fn start_service_with(&self, wrapper: &[&str], env: &[(&str, &str)]) -> Service {
        self.spawn_service(wrapper, &[], env)
    }

    fn spawn_service(&self, wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Service {
        // Never the machine's /var/lib/vmsnapd: a state directory of this bus unless given.
        let own_state = [
            "--state-dir".to_string(),
            self.dir.join("state").display().to_string(),
        ];
        let state: Vec<&str> = if args.contains(&"--state-dir") {
            Vec::new()
        } else {
            own_state.iter().map(String::as_str).collect()
        };
        let own_exports = [
            "--export-dir".to_string(),
            self.dir.join("exports").display().to_string(),
        ];
        let state: Vec<&str> = state
            .into_iter()
            .chain(own_exports.iter().map(String::as_str))
            .collect();
        let args: Vec<&str> = args.iter().copied().chain(state).collect();
        let daemon = host().bin_dir.join("vmsnapd");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&daemon);
                c
            }
            None => Command::new(&daemon),
        };
        // Its own process group, so that a wrapper (faketime) and vmsnapd go together.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.arg("--log-to-stderr")
            .args(&args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot start vmsnapd");
        let start = Instant::now();
        while !self.name_has_owner("org.vmsnap.VMSnap1") {
            if let Some(status) = child.try_wait().expect("wait failed") {
                panic!("vmsnapd exited with {status} before taking its name");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "vmsnapd did not take its name"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Service { child }
    }

    pub fn name_has_owner(&self, name: &str) -> bool {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(["status", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for ScratchBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A vmsnapd process, killed on drop.
pub struct Service {
    child: Child,
}

/// Removes what a `faketime` wrapper with this pid leaves in /dev/shm when it is killed: a
/// later wrapper that gets the same pid would fail with "sem_open: File exists".
fn forget_faketime(pid: u32) {
    let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
    let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the service, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS")
    }

    /// The most resident memory the service ever had, in KiB (`VmHWM`).
    pub fn peak_kib(&self) -> u64 {
        self.memory_kib("VmHWM")
    }

    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("vmsnapd is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// Kills vmsnapd and everything it started with SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        forget_faketime(self.child.id());
    }

    /// Waits for the service to exit on its own, at most `limit`; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait failed") {
                return status.code();
            }
            assert!(start.elapsed() < limit, "vmsnapd is still running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the service to exit, returning its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait failed") {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(150),
                "vmsnapd did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        forget_faketime(self.child.id());
    }
}
