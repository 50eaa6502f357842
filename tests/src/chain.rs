//! Checking backups the way a user would on restore day: rebuild the disk with
//! `virtnbdrestore` and compare it byte for byte with a copy taken at that moment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::guest::{virsh, Guest};
use crate::{host, run, vmsnapctl, Run};

/// A copy of a guest's disk at a moment (the guest must be shut off).
pub fn snapshot(guest: &Guest, target: &str, label: &str) -> PathBuf {
    let copy = host().images.join(format!(
        "snap-{}-{target}-{label}.qcow2",
        guest.disks_dir_name()
    ));
    std::fs::copy(guest.image(target), &copy).expect("cannot copy the disk image");
    copy
}

/// Restores `folder` (up to `until`, or all of it) and asserts the image equals `expected`.
pub fn assert_restores_to(folder: &str, until: Option<&str>, disk_file: &str, expected: &Path) {
    let out = host().images.join(format!(
        "restore-{}-{}",
        std::process::id(),
        RESTORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec!["-i", folder, "-o", out.to_str().unwrap()];
    if let Some(cp) = until {
        args.extend(["--until", cp]);
    }
    let restore = run(
        std::process::Command::new("virtnbdrestore")
            .args(&args)
            .current_dir(&host().images),
        Duration::from_secs(300),
    );
    assert_eq!(
        restore.code, 0,
        "virtnbdrestore {args:?} failed:\n{}",
        restore.stderr
    );
    assert_identical(
        &out.join(disk_file),
        expected,
        &format!("{folder} (until {until:?})"),
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Asserts `image` has the same content as `expected` (`qemu-img compare`).
pub fn assert_identical(image: &Path, expected: &Path, what: &str) {
    // virtnbdrestore's qemu-nbd may still be letting go of the image when it returns: wait for
    // the image lock instead of reading a file someone may still write.
    let started = std::time::Instant::now();
    let compare = loop {
        let c = run(
            std::process::Command::new("qemu-img").args([
                "compare",
                image.to_str().unwrap(),
                expected.to_str().unwrap(),
            ]),
            Duration::from_secs(300),
        );
        if c.stderr.contains("lock") && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        break c;
    };
    assert!(
        compare.code == 0 && compare.stdout.contains("Images are identical"),
        "{what} does not restore to {}: {}{}",
        expected.display(),
        compare.stdout,
        compare.stderr
    );
}

static RESTORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Names, sizes and modification times of everything below `dir`, to prove it was not touched.
pub fn fingerprint(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable folder") {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().display().to_string(),
                    m.len(),
                    m.modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// `vmsnapctl backup <guest> --output <root> --json` (waiting), with extra arguments.
pub fn backup(guest: &Guest, root: &str, extra: &[&str]) -> Run {
    let mut args = vec!["backup", guest.name.as_str(), "--output", root, "--json"];
    args.extend_from_slice(extra);
    vmsnapctl(&args)
}

/// The one domain result of a backup's JSON document.
pub fn result(run: &Run) -> serde_json::Value {
    let doc = run.json();
    doc["domains"][0].clone()
}

pub fn domstate(guest: &Guest) -> String {
    virsh(&["domstate", "--domain", &guest.name])
        .trim()
        .to_string()
}

/// A backup root of its own for one test.
pub fn root(test: &str) -> String {
    let dir = host().images.join(format!("root-{test}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

/// Starts a backup of `guest` through the bus at `bus_address` and returns its job path once
/// bytes are being copied (read from the job's `BytesDone`, as any D-Bus client would).
pub fn backup_under_way(bus_address: &str, guest: &Guest, root: &str) -> String {
    let job = crate::vmsnapctl_on(
        bus_address,
        &["backup", &guest.name, "--output", root, "--no-wait"],
    )
    .expect_code(0)
    .stdout
    .trim()
    .to_string();
    let start = std::time::Instant::now();
    loop {
        let out = std::process::Command::new("busctl")
            .arg(format!("--address={bus_address}"))
            .args([
                "get-property",
                vmsnap_dbus::names::BUS_NAME,
                &job,
                vmsnap_dbus::names::JOB_INTERFACE,
                "BytesDone",
            ])
            .output()
            .expect("busctl runs");
        let done: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("t ")
            .parse()
            .unwrap_or(0);
        if done > 0 {
            return job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the backup never started copying"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job's entry in `vmsnapctl jobs --json` on the bus at `bus_address`.
pub fn job_entry(bus_address: &str, job: &str) -> serde_json::Value {
    let jobs = crate::vmsnapctl_on(bus_address, &["jobs", "--json"])
        .expect_code(0)
        .json();
    jobs.as_array()
        .expect("a list of jobs")
        .iter()
        .find(|j| j["job"] == job)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the job has ended and returns its entry.
pub fn wait_job(bus_address: &str, job: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let entry = job_entry(bus_address, job);
        if ["succeeded", "failed", "cancelled"].contains(&entry["state"].as_str().unwrap_or("")) {
            return entry;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "job {job} never ended: {entry}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The restorable points `vmsnapctl backups` lists for `folder`, by checkpoint name.
pub fn listed_points(guest: &Guest, root: &str, folder: &str) -> Vec<String> {
    let list = vmsnapctl(&["backups", &guest.name, "--output", root, "--json"])
        .expect_code(0)
        .json();
    let name = Path::new(folder).file_name().unwrap().to_string_lossy();
    list.as_array()
        .expect("a list of chains")
        .iter()
        .filter(|c| c["folder"] == *name)
        .flat_map(|c| c["points"].as_array().cloned().unwrap_or_default())
        .map(|p| p["checkpoint"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The operation of libvirt's active job on the domain (`None` without one).
pub fn libvirt_job(guest: &Guest) -> Option<String> {
    let out = std::process::Command::new("virsh")
        .args([
            "-c",
            "qemu:///system",
            "domjobinfo",
            "--domain",
            &guest.name,
        ])
        .output()
        .expect("virsh runs");
    let info = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Only a domain that is not running has no job to tell about.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not running"), "domjobinfo failed: {err}");
        return None;
    }
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    match field("Job type:") {
        Some(t) if t != "None" => Some(field("Operation:").unwrap_or_default()),
        _ => None,
    }
}
