//! Faults injected on the real host during backups. After each: the job fails (or is reported
//! failed) with a readable reason, the previous chain still restores byte for byte, nothing of
//! the failed point is listed as a backup, libvirt has no backup job left, and the next backup
//! works.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{
    assert_restores_to, backup, backup_under_way, domstate, fingerprint, libvirt_job,
    listed_points, result, root, snapshot, wait_job,
};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::socket_proxy::SocketProxy;
use vmsnap_integration::{host, run, vmsnapctl, vmsnapctl_on};

/// A guest with a good chain (one full point) and enough new data that the next backup takes
/// a while: the window in which a fault strikes.
struct GoodChain {
    guest: Guest,
    root: String,
    folder: String,
    /// The disk at the good point.
    at_full: PathBuf,
    /// The disk with the new data (what the next good backup must hold).
    now: PathBuf,
    full_data: (u64, std::time::SystemTime),
    /// The folder's files and sizes after the good backup, logs aside.
    files: Vec<(String, u64)>,
}

/// Files and sizes below `folder`, without the logs (a failed run's log stays as evidence).
fn folder_files(folder: &str) -> Vec<(String, u64)> {
    fingerprint(std::path::Path::new(folder))
        .into_iter()
        .filter(|(path, _, _)| !path.ends_with(".log"))
        .map(|(path, size, _)| (path, size))
        .collect()
}

impl GoodChain {
    /// `running`: the guest runs during the backups (else it is shut off and started paused).
    fn new(name: &str, running: bool, size_mib: u32, new_mib: u32) -> Self {
        let guest = Guest::qcow2(name, size_mib);
        let root = root(name);
        guest.write("vda", 0x11, 0, 8);
        let at_full = snapshot(&guest, "vda", "full");
        if running {
            guest.start();
        }
        let full = result(&backup(&guest, &root, &[]).expect_code(0));
        assert_eq!(full["level"], "full", "{full}");
        let folder = full["folder"].as_str().unwrap().to_string();
        if running {
            guest.destroy();
        }
        guest.write("vda", 0x22, 16, new_mib);
        let now = snapshot(&guest, "vda", "now");
        if running {
            guest.start();
        }
        let full_data = Self::full_file(&folder);
        let files = folder_files(&folder);
        GoodChain {
            files,
            guest,
            root,
            folder,
            at_full,
            now,
            full_data,
        }
    }

    fn full_file(folder: &str) -> (u64, std::time::SystemTime) {
        let m = std::fs::metadata(format!("{folder}/vda.full.data")).expect("the full's data");
        (m.len(), m.modified().unwrap())
    }

    /// The good chain is intact: its folder is as the good backup left it (the failed point's
    /// files are gone, its log aside), its full untouched and listed alone, it restores byte for
    /// byte, and libvirt holds no backup job.
    fn assert_survived(&self) {
        assert_eq!(
            folder_files(&self.folder),
            self.files,
            "the chain folder changed"
        );
        assert_eq!(Self::full_file(&self.folder), self.full_data);
        assert_eq!(
            listed_points(&self.guest, &self.root, &self.folder),
            ["virtnbdbackup.0"],
            "only the good point is listed"
        );
        assert_eq!(
            libvirt_job(&self.guest),
            None,
            "a libvirt job was left behind"
        );
        let was_running = domstate(&self.guest) == "running";
        if was_running {
            self.guest.destroy();
        }
        assert_restores_to(
            &self.folder,
            Some("virtnbdbackup.0"),
            "vda.qcow2",
            &self.at_full,
        );
        if was_running {
            self.guest.start();
        }
    }

    /// The next backup (through the service at `bus_address`) succeeds and restores to the
    /// disk as it is now. Returns its job path.
    fn assert_next_backup_works(&self, bus_address: &str) -> String {
        let job = vmsnapctl_on(
            bus_address,
            &[
                "backup",
                &self.guest.name,
                "--output",
                &self.root,
                "--no-wait",
            ],
        )
        .expect_code(0)
        .stdout
        .trim()
        .to_string();
        let entry = wait_job(bus_address, &job);
        assert_eq!(entry["state"], "succeeded", "{entry}");
        let folder = entry["results"][0]["folder"].as_str().unwrap().to_string();
        if domstate(&self.guest) == "running" {
            self.guest.destroy();
        }
        assert_restores_to(&folder, None, "vda.qcow2", &self.now);
        job
    }
}

fn pids_of(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

impl GoodChain {
    /// libvirt holds the good point's checkpoint alone (the failed run's went with it), and
    /// the next backup continues the chain: an incremental in the same folder. Returns that
    /// backup's job.
    fn assert_chain_continues(&self, bus_address: &str) -> String {
        assert_eq!(self.guest.checkpoints(), ["virtnbdbackup.0"]);
        let job = self.assert_next_backup_works(bus_address);
        assert_eq!(
            listed_points(&self.guest, &self.root, &self.folder),
            ["virtnbdbackup.0", "virtnbdbackup.1"],
            "the next backup continued the chain"
        );
        job
    }
}

#[test]
fn a_killed_virtnbdbackup_fails_the_job_and_the_chain_survives() {
    let c = GoodChain::new("f-kill-tool", true, 1024, 900);
    let job = backup_under_way(&host().bus_address, &c.guest, &c.root);
    let pids = pids_of(&format!("virtnbdbackup.*{}", c.guest.name));
    assert!(!pids.is_empty(), "virtnbdbackup is not running");
    for pid in &pids {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
    let entry = wait_job(&host().bus_address, &job);
    assert_eq!(entry["state"], "failed", "{entry}");
    let error = entry["results"][0]["error"].as_str().unwrap();
    assert!(error.contains("virtnbdbackup"), "{error}");
    c.assert_survived();
    c.assert_chain_continues(&host().bus_address);
}

#[test]
fn the_domain_destroyed_during_its_backup_fails_the_job_and_the_chain_survives() {
    let c = GoodChain::new("f-destroyed", true, 1024, 900);
    let job = backup_under_way(&host().bus_address, &c.guest, &c.root);
    c.guest.destroy();
    let entry = wait_job(&host().bus_address, &job);
    assert_eq!(entry["state"], "failed", "{entry}");
    assert!(!entry["results"][0]["error"].as_str().unwrap().is_empty());
    c.assert_survived();
    c.guest.start();
    c.assert_next_backup_works(&host().bus_address);
}

#[test]
fn a_killed_service_is_reported_and_cleaned_up_after_its_restart() {
    // A running domain: libvirt's backup job outlives virtnbdbackup and must be aborted.
    let c = GoodChain::new("f-kill-svc", true, 1024, 900);
    let state = host().run_dir.join("state-f-kill-svc");
    let state_arg = state.display().to_string();
    let bus = ScratchBus::start("f-kill-svc");
    let mut service = bus.start_service_args(&["--state-dir", &state_arg]);
    let job = backup_under_way(&bus.address, &c.guest, &c.root);
    service.kill_hard();
    assert_eq!(libvirt_job(&c.guest).as_deref(), Some("Backup"));
    let _restarted = bus.start_service_args(&["--state-dir", &state_arg]);
    // The job is reported, as failed, under the same path.
    let entry = wait_job(&bus.address, &job);
    assert_eq!(entry["state"], "failed", "{entry}");
    let error = entry["results"][0]["error"].as_str().unwrap();
    assert!(error.contains("vmsnapd stopped during this job"), "{error}");
    c.assert_survived();
    // The restarted service deleted the checkpoint the killed run began: the chain goes on.
    // A new job gets a new number.
    let next = c.assert_chain_continues(&bus.address);
    assert_ne!(next, job);
}

#[test]
fn a_killed_service_leaves_nothing_paused_after_its_restart() {
    // A shut-off domain: the service started it paused for the backup.
    let c = GoodChain::new("f-kill-paused", false, 1024, 900);
    let state = host().run_dir.join("state-f-kill-paused");
    let state_arg = state.display().to_string();
    let bus = ScratchBus::start("f-kill-paused");
    let mut service = bus.start_service_args(&["--state-dir", &state_arg]);
    let job = backup_under_way(&bus.address, &c.guest, &c.root);
    assert_eq!(
        domstate(&c.guest),
        "paused",
        "started paused for the backup"
    );
    service.kill_hard();
    assert_eq!(domstate(&c.guest), "paused", "the crash left it paused");
    // The next instance undoes it before it serves.
    let _restarted = bus.start_service_args(&["--state-dir", &state_arg]);
    assert_eq!(domstate(&c.guest), "shut off");
    assert_eq!(wait_job(&bus.address, &job)["state"], "failed");
    c.assert_survived();
    c.assert_next_backup_works(&bus.address);
    assert_eq!(domstate(&c.guest), "shut off");
}

/// A tmpfs of `mib` MiB mounted at a new directory, unmounted on drop.
struct SmallFilesystem {
    path: PathBuf,
}

impl SmallFilesystem {
    fn mount(name: &str, mib: u32) -> Self {
        let path = host().images.join(format!("fs-{name}"));
        std::fs::create_dir_all(&path).unwrap();
        let r = run(
            Command::new("mount").args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
                path.to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(r.code, 0, "cannot mount a tmpfs: {}", r.stderr);
        SmallFilesystem { path }
    }

    /// Makes room, as a user who freed space would.
    fn grow(&self, mib: u32) {
        let r = run(
            Command::new("mount").args([
                "-o",
                &format!("remount,size={mib}m"),
                self.path.to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(r.code, 0, "cannot grow the tmpfs: {}", r.stderr);
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_with_its_reason_and_counts_nothing() {
    let fs = SmallFilesystem::mount("full", 48);
    let guest = Guest::qcow2("f-full", 256);
    let root = fs.path.display().to_string();
    guest.write("vda", 0x11, 0, 8);
    let at_full = snapshot(&guest, "vda", "full");
    let full = result(&backup(&guest, &root, &[]).expect_code(0));
    let folder = full["folder"].as_str().unwrap().to_string();
    let files = folder_files(&folder);
    // 100 MiB of changes cannot fit in what is left.
    guest.write("vda", 0x22, 16, 100);
    let now = snapshot(&guest, "vda", "now");
    let failed = backup(&guest, &root, &[]);
    assert_eq!(failed.code, 10, "{}{}", failed.stdout, failed.stderr);
    let error = result(&failed)["error"].as_str().unwrap().to_string();
    assert!(
        error.to_lowercase().contains("no space left"),
        "the reason should say the disk is full: {error}"
    );
    assert_eq!(listed_points(&guest, &root, &folder), ["virtnbdbackup.0"]);
    assert_eq!(domstate(&guest), "shut off");
    // The folder is back as it was: the partial data (and the space it held) and the empty
    // configuration the full disk made virtnbdbackup write are gone.
    assert_eq!(folder_files(&folder), files);
    // The service keeps serving.
    vmsnapctl(&["status", &guest.name, "--output", &root, "--json"]).expect_code(0);
    assert_restores_to(&folder, Some("virtnbdbackup.0"), "vda.qcow2", &at_full);
    // Once there is room, the next backup works (a new chain: the failed point broke it).
    fs.grow(512);
    let next = result(&backup(&guest, &root, &[]).expect_code(0));
    assert_restores_to(next["folder"].as_str().unwrap(), None, "vda.qcow2", &now);
}

#[test]
fn a_crash_that_loses_the_bitmaps_starts_a_new_chain_on_its_own() {
    let guest = Guest::qcow2("f-crash", 64);
    let root = root("f-crash");
    guest.write("vda", 0x11, 0, 8);
    guest.start();
    let full = result(&backup(&guest, &root, &[]).expect_code(0));
    let folder = full["folder"].as_str().unwrap().to_string();
    // QEMU dies right after the checkpoint: its bitmaps never reach the image.
    guest.crash();
    guest.write("vda", 0x33, 4, 2);
    let now = snapshot(&guest, "vda", "now");
    guest.start();
    let next = result(&backup(&guest, &root, &[]).expect_code(0));
    assert_eq!(next["level"], "full", "{next}");
    assert_eq!(next["folder"], format!("{folder}.1"));
    let reason = next["newChainReason"].as_str().unwrap();
    assert!(reason.contains("bitmap"), "{reason}");
    guest.destroy();
    assert_restores_to(&format!("{folder}.1"), None, "vda.qcow2", &now);
    // The old chain is still what it was.
    assert_eq!(listed_points(&guest, &root, &folder), ["virtnbdbackup.0"]);
}

/// A backup through the service on `bus` succeeds and restores to `now`.
fn backs_up_identically(bus: &ScratchBus, guest: &Guest, root: &str, now: &std::path::Path) {
    let r = vmsnapctl_on(
        &bus.address,
        &["backup", &guest.name, "--output", root, "--json"],
    )
    .expect_code(0);
    assert_eq!(result(&r)["state"], "succeeded");
    assert_restores_to(
        result(&r)["folder"].as_str().unwrap(),
        None,
        "vda.qcow2",
        now,
    );
}

#[test]
fn without_libvirtd_calls_fail_fast_and_work_again_when_it_is_back() {
    // The service reaches libvirtd through a socket path this test controls: removing it is,
    // for the service, libvirtd gone; without stopping the libvirtd other tests use.
    let dir = host().run_dir.join("libvirt-link");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("libvirt-sock");
    let _ = std::fs::remove_file(&socket);
    let uri = format!("qemu:///system?socket={}", socket.display());
    let guest = Guest::qcow2("f-nolibvirt", 32);
    guest.write("vda", 0x11, 0, 4);
    let now = snapshot(&guest, "vda", "now");
    let root = root("f-nolibvirt");
    let bus = ScratchBus::start("f-nolibvirt");
    let _service = bus.start_service_args(&["--connect", &uri]);
    for args in [
        vec!["status", guest.name.as_str(), "--json"],
        vec!["backup", guest.name.as_str(), "--output", &root, "--json"],
    ] {
        let r = vmsnapctl_on(&bus.address, &args);
        // HostUnavailable: exit code 3 and libvirt's own words.
        assert_eq!(r.code, 3, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("connect"), "{}", r.stderr);
    }
    // libvirtd is back: the same service answers, without a restart.
    std::os::unix::fs::symlink("/run/libvirt/libvirt-sock", &socket).unwrap();
    let status = vmsnapctl_on(&bus.address, &["status", &guest.name, "--json"])
        .expect_code(0)
        .json();
    assert!(status.get(&guest.name).is_some(), "{status}");
    backs_up_identically(&bus, &guest, &root, &now);
}

#[test]
fn a_libvirtd_restart_under_the_open_connection_is_survived() {
    // libvirtd restarting closes every client's connection, and the service keeps one open.
    // Here that connection goes through a proxy this test closes and opens again.
    let dir = host().run_dir.join("libvirt-proxy");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("libvirt-sock");
    let libvirtd = std::path::Path::new("/run/libvirt/libvirt-sock");
    let mut proxy = SocketProxy::start(&socket, libvirtd);
    let uri = format!("qemu:///system?socket={}", socket.display());
    let guest = Guest::qcow2("f-restart", 32);
    guest.write("vda", 0x22, 0, 4);
    let now = snapshot(&guest, "vda", "now");
    // Running, so that status also asks QEMU (libvirt's QEMU program) on the new connection.
    guest.start();
    let root = root("f-restart");
    let bus = ScratchBus::start("f-restart");
    let _service = bus.start_service_args(&["--connect", &uri]);
    let status = || vmsnapctl_on(&bus.address, &["status", guest.name.as_str(), "--json"]);
    // The first call opens the service's connection.
    status().expect_code(0);
    proxy.stop();
    // Down: HostUnavailable at once, with the reason.
    let r = status();
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("connect"), "{}", r.stderr);
    // Back: the same service process answers on a new connection, and backs up.
    let _proxy = SocketProxy::start(&socket, libvirtd);
    let s = status().expect_code(0).json();
    assert_eq!(s[guest.name.as_str()]["state"], "running", "{s}");
    backs_up_identically(&bus, &guest, &root, &now);
}

#[test]
fn a_service_that_loses_its_bus_exits_instead_of_running_deaf() {
    let bus = ScratchBus::start("f-bus-restart");
    let mut service = bus.start_service_args(&[]);
    drop(bus);
    // Exits non-zero (systemd's Restart=on-failure then starts a fresh one on the new bus).
    let code = service.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(1));
}
