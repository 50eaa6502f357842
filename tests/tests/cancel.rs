//! Every kind of job can be cancelled half way, and nothing is left behind: verify and
//! restore (backup's cancel is in backup.rs and load.rs), by a client and by the service's own
//! stop. Each test cancels while virtnbdrestore is running — seen in the process table, as an
//! administrator would — and then looks for what a careless cancel leaves: the helper
//! processes (virtnbdrestore, its qemu-nbd), the scratch or staging directory, a half-restored
//! target, a job that still says it can be cancelled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmsnap_dbus::names::{BUS_NAME, JOB_INTERFACE};
use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{assert_identical, root, snapshot, wait_job};
use vmsnap_integration::guest::{virsh, Guest};
use vmsnap_integration::{host, vmsnapctl_on, Run};

/// Processes whose command line mentions `needle`, as `pid: command line`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) && pid != std::process::id().to_string() {
            found.push(format!("{pid}: {}", line.trim()));
        }
    }
    found
}

/// Waits until a virtnbdrestore mentioning `needle` runs.
fn wait_for_virtnbdrestore(needle: &str) {
    let start = Instant::now();
    while !processes_mentioning(needle)
        .iter()
        .any(|p| p.contains("virtnbdrestore"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "virtnbdrestore never started for {needle}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until nothing mentioning `needle` runs any more (a stopped helper may take a moment
/// to be reaped), and fails naming what is still there.
fn assert_no_process_left(needle: &str) {
    let start = Instant::now();
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "left running after the cancel: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(list) => list
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn cancelable(bus: &str, job: &str) -> String {
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={bus}"))
        .args(["get-property", BUS_NAME, job, JOB_INTERFACE, "Cancelable"])
        .output()
        .expect("busctl runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn number(job: &str) -> &str {
    job.rsplit('/').next().unwrap()
}

/// A shut-off guest with 300 MiB of data backed up in one full (long enough to rebuild that
/// a cancel lands while virtnbdrestore runs), a copy of its disk, and a service of its own.
struct Setup {
    guest: Guest,
    root: String,
    disk: PathBuf,
    bus: ScratchBus,
    scratch: PathBuf,
    service: vmsnap_integration::bus::Service,
}

fn setup(name: &str) -> Setup {
    let guest = Guest::qcow2(name, 512);
    guest.write("vda", 0x3c, 0, 300);
    let disk = snapshot(&guest, "vda", "before");
    let root = root(name);
    let state = host().images.join(format!("{name}-state"));
    let bus = ScratchBus::start(name);
    let service = bus.start_service_args(&["--state-dir", state.to_str().unwrap()]);
    vmsnapctl_on(
        &bus.address,
        &["backup", &guest.name, "--output", &root, "--json"],
    )
    .expect_code(0);
    Setup {
        guest,
        root,
        disk,
        bus,
        scratch: state.join("scratch"),
        service,
    }
}

impl Setup {
    fn ctl(&self, args: &[&str]) -> Run {
        vmsnapctl_on(&self.bus.address, args)
    }

    /// `verify --deep` (the kind that rebuilds, which a cancel must stop) with `extra`.
    fn deep_verify(&self, extra: &str) -> Run {
        let name = self.guest.name.as_str();
        self.ctl(&["verify", name, "--output", &self.root, "--deep", extra])
    }

    fn restore(&self, target: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "restore",
            self.guest.name.as_str(),
            "--output",
            self.root.as_str(),
            "--target",
            target.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ctl(&args)
    }

    /// Cancels a running job twice: the first is taken, the second refused (exit 17) while
    /// the job stops or once it has; the job then ends cancelled and cannot be cancelled.
    fn cancel(&self, job: &str) -> serde_json::Value {
        assert_eq!(cancelable(&self.bus.address, job), "b true");
        self.ctl(&["cancel", number(job)]).expect_code(0);
        self.ctl(&["cancel", number(job)]).expect_code(17);
        let end = wait_job(&self.bus.address, job);
        assert_eq!(end["state"], "cancelled", "{end}");
        assert_eq!(cancelable(&self.bus.address, job), "b false");
        self.ctl(&["cancel", number(job)]).expect_code(17);
        end
    }
}

#[test]
fn a_cancelled_deep_verify_stops_its_rebuild_and_removes_its_scratch() {
    let s = setup("cn-verify");
    let job = s
        .deep_verify("--no-wait")
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    wait_for_virtnbdrestore(&s.root);
    let end = s.cancel(&job);
    let result = &end["results"][0];
    assert_eq!(result["state"], "cancelled", "{end}");
    // The point under way is neither good nor bad: it is not reported at all.
    assert_eq!(result["checks"], serde_json::json!([]), "{end}");
    assert_no_process_left(&s.root);
    assert_no_process_left(s.scratch.to_str().unwrap());
    assert_eq!(entries(&s.scratch), Vec::<String>::new(), "scratch left");
    // The chain is untouched: a verify to the end finds it good.
    let verified = s.deep_verify("--json").expect_code(0).json();
    assert_eq!(verified["state"], "succeeded", "{verified}");
}

#[test]
fn a_cancelled_restore_leaves_no_target_and_the_next_one_is_identical() {
    let s = setup("cn-restore");
    let target = host().images.join("cn-restore-target");
    let job = s
        .restore(&target, &["--no-wait"])
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    wait_for_virtnbdrestore(target.to_str().unwrap());
    s.cancel(&job);
    assert_no_process_left(target.to_str().unwrap());
    assert!(
        !target.exists(),
        "the cancelled restore left {:?}",
        entries(&target)
    );
    s.restore(&target, &["--json"]).expect_code(0);
    assert_identical(
        &target.join("vda.qcow2"),
        &s.disk,
        "the restore after the cancel",
    );
}

#[test]
fn a_cancelled_restore_as_a_new_domain_leaves_the_target_as_it_was() {
    let s = setup("cn-define");
    let target = host().images.join("cn-define-target");
    // An empty directory the administrator made (a restore that defines a domain needs one).
    std::fs::create_dir_all(&target).unwrap();
    let new_name = format!("{}cn-defined", host().prefix);
    let job = s
        .restore(
            &target,
            &["--define-as", &new_name, "--overwrite", "--no-wait"],
        )
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
    wait_for_virtnbdrestore(target.to_str().unwrap());
    s.cancel(&job);
    assert_no_process_left(target.to_str().unwrap());
    assert!(target.is_dir(), "the administrator's directory went");
    assert_eq!(
        entries(&target),
        Vec::<String>::new(),
        "the cancelled restore left files"
    );
    let listed = virsh(&["list", "--all", "--name"]);
    assert!(
        !listed.lines().any(|l| l.trim() == new_name),
        "the cancelled restore defined {new_name}"
    );
}

#[test]
fn stopping_the_service_cancels_a_verify_and_waits_for_it() {
    let mut s = setup("cn-stop");
    s.deep_verify("--no-wait").expect_code(0);
    wait_for_virtnbdrestore(&s.root);
    assert_eq!(s.service.terminate(), Some(0), "vmsnapd's exit code");
    // It waited: nothing of the verify runs once the service is gone.
    assert!(
        processes_mentioning(&s.root).is_empty(),
        "the service stopped before its verify: {:?}",
        processes_mentioning(&s.root)
    );
    assert_eq!(entries(&s.scratch), Vec::<String>::new(), "scratch left");
}
