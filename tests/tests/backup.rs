//! Backup end to end on real TCG guests, proved by restores compared byte for byte.
//! Counterparts of the original's backup tests (§13: 1–16, 18, 40–42, 46) are marked.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use vmsnap_dbus::names::{BUS_NAME, JOB_INTERFACE, JOB_PATH_PREFIX};
use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{
    assert_restores_to, backup, domstate, fingerprint, result, root, snapshot,
};
use vmsnap_integration::guest::{virsh, Disk, Guest};
use vmsnap_integration::{host, vmsnapctl, vmsnapctl_on};

fn guest(suffix: &str, size_mib: u32) -> Guest {
    Guest::qcow2(suffix, size_mib)
}

fn month_folder() -> String {
    chrono::Local::now()
        .format("vmsnap-backup-monthly-%Y-%m")
        .to_string()
}

#[test]
fn running_domain_full_then_two_incrementals_restore_at_every_point() {
    let g = guest("bk-running", 64);
    let root = root("running");
    g.write("vda", 0x11, 0, 8);
    let s0 = snapshot(&g, "vda", "0");
    g.start();
    let full = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(full["level"], "full");
    assert_eq!(full["newChainReason"], "first backup of the period");
    let folder = full["folder"].as_str().unwrap().to_string();
    assert_eq!(folder, format!("{root}/{}/{}", g.name, month_folder()));
    assert!(full["bytesTotal"].as_u64().unwrap() >= 8 << 20);

    let mut points = vec![s0];
    for (i, pattern) in [(1u32, 0x22u8), (2, 0x33)] {
        g.destroy();
        g.write("vda", pattern, 4 * i, 2);
        points.push(snapshot(&g, "vda", &i.to_string()));
        g.start();
        let inc = result(&backup(&g, &root, &[]).expect_code(0));
        assert_eq!(inc["level"], "inc", "{inc}");
        assert_eq!(inc["folder"], folder.as_str());
        // Only what changed is copied.
        assert!(inc["bytesTotal"].as_u64().unwrap() < 8 << 20, "{inc}");
    }
    assert_eq!(domstate(&g), "running", "a running domain stays running");
    g.destroy();
    assert_restores_to(&folder, None, "vda.qcow2", &points[2]);
    assert_restores_to(&folder, Some("virtnbdbackup.1"), "vda.qcow2", &points[1]);
    assert_restores_to(&folder, Some("virtnbdbackup.0"), "vda.qcow2", &points[0]);
}

#[test]
fn shut_off_domain_gets_a_real_chain_and_stays_shut_off() {
    // §13 1, 2 (corrected: offline backups do create checkpoints), 7–11
    let g = guest("bk-off", 64);
    let root = root("off");
    g.write("vda", 0x44, 0, 4);
    let mut points = vec![snapshot(&g, "vda", "0")];
    let full = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(full["level"], "full");
    assert_eq!(domstate(&g), "shut off");
    let folder = full["folder"].as_str().unwrap().to_string();
    for i in 1..=2u32 {
        g.write("vda", 0x50 + i as u8, 8 * i, 1);
        points.push(snapshot(&g, "vda", &i.to_string()));
        let inc = result(&backup(&g, &root, &[]).expect_code(0));
        assert_eq!(inc["level"], "inc");
        assert_eq!(domstate(&g), "shut off");
        // Each incremental has its own file: nothing was overwritten.
        assert!(
            std::path::Path::new(&format!("{folder}/vda.inc.virtnbdbackup.{i}.data")).is_file()
        );
    }
    assert_eq!(
        g.checkpoints(),
        ["virtnbdbackup.0", "virtnbdbackup.1", "virtnbdbackup.2"]
    );
    assert_restores_to(&folder, None, "vda.qcow2", &points[2]);
    assert_restores_to(&folder, Some("virtnbdbackup.1"), "vda.qcow2", &points[1]);
    assert_restores_to(&folder, Some("virtnbdbackup.0"), "vda.qcow2", &points[0]);
    // And the status agrees.
    let status = vmsnapctl(&["status", "--json", "--output", &root, &g.name])
        .expect_code(0)
        .json();
    assert_eq!(status[&g.name]["overallStatus"], 0, "{status}");
    assert_eq!(status[&g.name]["backupDirStats"]["checkpoints"], 3);
}

#[test]
fn a_new_period_starts_a_new_chain_and_leaves_the_old_one_alone() {
    let g = guest("bk-period", 32);
    let root = root("period");
    g.write("vda", 0x61, 0, 2);
    g.start();
    let old = result(&backup(&g, &root, &[]).expect_code(0));
    let old_folder = old["folder"].as_str().unwrap().to_string();
    let before = fingerprint(std::path::Path::new(&old_folder));
    // The service's clock moves 40 days on: the next backup is in the next month.
    let bus = ScratchBus::start("period");
    let _service = bus.start_service_with(&["faketime", "+40 days"], &[]);
    let run = vmsnapctl_on(
        &bus.address,
        &["backup", &g.name, "--output", &root, "--json"],
    );
    let new = run.expect_code(0).json()["domains"][0].clone();
    assert_eq!(new["level"], "full");
    assert_eq!(new["newChainReason"], "first backup of the period");
    let new_folder = new["folder"].as_str().unwrap().to_string();
    assert_ne!(new_folder, old_folder);
    assert!(new_folder.starts_with(&format!("{root}/{}/vmsnap-backup-monthly-", g.name)));
    assert_eq!(
        fingerprint(std::path::Path::new(&old_folder)),
        before,
        "old chain untouched"
    );
    g.destroy();
    let now = snapshot(&g, "vda", "period");
    assert_restores_to(&new_folder, None, "vda.qcow2", &now);
    assert_restores_to(&old_folder, None, "vda.qcow2", &now);
}

#[test]
fn a_broken_chain_restarts_in_a_new_folder_and_says_so() {
    let g = guest("bk-broken", 32);
    let root = root("broken");
    g.write("vda", 0x71, 0, 2);
    g.start();
    let first = result(&backup(&g, &root, &[]).expect_code(0));
    let old_folder = first["folder"].as_str().unwrap().to_string();
    let before = fingerprint(std::path::Path::new(&old_folder));
    // The bitmap disappears behind the service's back (as after a QEMU crash).
    g.remove_live_bitmap("vda", "virtnbdbackup.0");
    let next = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(next["level"], "full");
    let reason = next["newChainReason"].as_str().unwrap();
    assert!(reason.contains("no bitmap"), "{reason}");
    assert_eq!(next["folder"], format!("{old_folder}.1"));
    assert_eq!(fingerprint(std::path::Path::new(&old_folder)), before);
    // The new chain continues normally.
    let inc = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(inc["level"], "inc");
    assert_eq!(inc["folder"], format!("{old_folder}.1"));
    g.destroy();
    let now = snapshot(&g, "vda", "broken");
    assert_restores_to(&format!("{old_folder}.1"), None, "vda.qcow2", &now);
}

/// The job's BytesDone property, read as any D-Bus client would.
fn bytes_done(job: &str) -> u64 {
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", host().bus_address))
        .args(["get-property", BUS_NAME, job, JOB_INTERFACE, "BytesDone"])
        .output()
        .expect("busctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("t ")
        .parse()
        .expect("a number")
}

/// Polls the job until `done` says stop, returning the last value it saw.
fn poll_job<T>(job: &str, mut f: impl FnMut(&Value) -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        let jobs = vmsnapctl(&["jobs", "--json"]).expect_code(0).json();
        let entry = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == job)
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(v) = f(&entry) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "job {job} never got there: {entry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_job_per_domain_and_different_domains_run_together() {
    // §13 46
    let a = guest("bk-lock-a", 512);
    let b = guest("bk-lock-b", 512);
    let root = root("lock");
    a.write("vda", 0x01, 0, 300);
    b.write("vda", 0x02, 0, 300);
    let job_a = vmsnapctl(&["backup", &a.name, "--output", &root, "--no-wait"]).expect_code(0);
    let job_a = job_a.stdout.trim().to_string();
    let second = vmsnapctl(&["backup", &a.name, "--output", &root]).expect_code(3);
    assert!(
        second.stderr.contains("AlreadyRunning"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains(&a.name), "{}", second.stderr);
    let job_b = vmsnapctl(&["backup", &b.name, "--output", &root, "--no-wait"]).expect_code(0);
    let job_b = job_b.stdout.trim().to_string();
    // Status is never blocked by a running backup.
    vmsnapctl(&["status", &a.name]).expect_code(0);
    let mut seen_together = false;
    for job in [&job_a, &job_b] {
        poll_job(job, |j| {
            let states = vmsnapctl(&["jobs", "--json"]).json();
            let running = states
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| {
                    (x["job"] == job_a.as_str() || x["job"] == job_b.as_str())
                        && x["state"] == "running"
                })
                .count();
            seen_together |= running == 2;
            (j["state"] == "succeeded").then_some(())
        });
    }
    assert!(
        seen_together,
        "the two domains' backups never ran at the same time"
    );
}

/// Starts a backup of `g` into `root`, cancels it once bytes flow, and requires that it ended
/// `cancelled` with no libvirt job left and the domain still running.
fn cancel_a_backup_mid_way(g: &Guest, root: &str) {
    let job = vmsnapctl(&["backup", &g.name, "--output", root, "--no-wait"]).expect_code(0);
    let job = job.stdout.trim().to_string();
    let number = job.rsplit('/').next().unwrap().to_string();
    let start = Instant::now();
    while bytes_done(&job) == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    vmsnapctl(&["cancel", &number]).expect_code(0);
    let state = poll_job(&job, |j| {
        let s = j["state"].as_str().unwrap_or("").to_string();
        (s != "running" && s != "queued").then_some(s)
    });
    assert_eq!(state, "cancelled");
    let jobinfo = virsh(&["domjobinfo", "--domain", &g.name]);
    assert!(jobinfo.contains("None"), "libvirt's job is gone: {jobinfo}");
    assert_eq!(domstate(g), "running");
}

#[test]
fn cancel_stops_cleanly_and_the_next_backup_succeeds() {
    let g = guest("bk-cancel", 1024);
    let root = root("cancel");
    g.write("vda", 0x0c, 0, 900);
    g.start();
    cancel_a_backup_mid_way(&g, &root);
    // The cancelled first full left nothing that looks like a backup, and no checkpoint on
    // the guest.
    assert!(
        !std::path::Path::new(&format!("{root}/{}/{}", g.name, month_folder()))
            .join("vda.full.data")
            .exists()
    );
    assert_eq!(g.checkpoints(), Vec::<String>::new());
    let next = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(next["state"], "succeeded");
    g.destroy();
    let now = snapshot(&g, "vda", "cancel");
    assert_restores_to(next["folder"].as_str().unwrap(), None, "vda.qcow2", &now);
}

#[test]
fn a_cancelled_incremental_leaves_the_chain_to_continue() {
    let g = guest("bk-cancel-inc", 1024);
    let root = root("cancel-inc");
    g.write("vda", 0x1c, 0, 8);
    let s0 = snapshot(&g, "vda", "0");
    g.start();
    let full = result(&backup(&g, &root, &[]).expect_code(0));
    let folder = full["folder"].as_str().unwrap().to_string();
    g.destroy();
    // Enough changed data for the incremental to be cancelled while it copies.
    g.write("vda", 0x1d, 0, 900);
    g.start();
    cancel_a_backup_mid_way(&g, &root);
    // The checkpoint the cancelled run began went with it (its bitmap merged into the
    // full's): libvirt holds exactly the checkpoints the chain folder records.
    assert_eq!(g.checkpoints(), ["virtnbdbackup.0"]);
    let next = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(next["level"], "inc", "{next}");
    assert_eq!(next["folder"], folder.as_str());
    // Nothing written since the full is forgotten: this incremental copies all of it.
    assert!(next["bytesTotal"].as_u64().unwrap() >= 900 << 20, "{next}");
    g.destroy();
    let now = snapshot(&g, "vda", "1");
    assert_restores_to(&folder, None, "vda.qcow2", &now);
    assert_restores_to(&folder, Some("virtnbdbackup.0"), "vda.qcow2", &s0);
}

#[tokio::test]
async fn progress_signals_grow_before_completion_and_the_job_matches_its_xml() {
    let g = guest("bk-progress", 512);
    let root = root("progress");
    g.write("vda", 0x0d, 0, 256);
    let conn = zbus::connection::Builder::address(host().bus_address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    // Subscribe before starting, as a careful client does.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(JOB_INTERFACE)
        .unwrap()
        .path_namespace(JOB_PATH_PREFIX)
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(256))
        .await
        .unwrap();
    let manager = vmsnap_dbus::ManagerProxy::new(&conn).await.unwrap();
    let opts = vmsnap_dbus::BackupOptions {
        output: Some(root.clone()),
        ..Default::default()
    };
    let path = manager
        .backup(&[g.name.as_str()], opts.to_dict())
        .await
        .unwrap();

    let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(BUS_NAME)
        .unwrap()
        .path(path.clone())
        .unwrap()
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    let iface = |x: &str| {
        let s = x
            .find("<interface name=\"org.vmsnap.VMSnap1.Job\">")
            .expect("Job interface");
        let e = s + x[s..].find("</interface>").unwrap();
        x[s..e].to_string()
    };
    let (live, shipped) = (iface(&xml), iface(vmsnap_dbus::JOB_INTROSPECTION_XML));
    if live != shipped && std::env::var_os("VMSNAP_UPDATE_GOLDEN").is_some() {
        let path = vmsnap_integration::repo().join("dbus/interfaces/org.vmsnap.VMSnap1.Job.xml");
        std::fs::write(
            &path,
            vmsnap_dbus::JOB_INTROSPECTION_XML.replace(&shipped, &live),
        )
        .unwrap();
        panic!("updated {}; review and commit it", path.display());
    }
    assert_eq!(
        live, shipped,
        "dbus/interfaces/…Job.xml is stale (rerun with VMSNAP_UPDATE_GOLDEN=1 to update it)"
    );

    let mut seen: Vec<(u64, u64)> = Vec::new();
    let state = loop {
        let msg = tokio::time::timeout(Duration::from_secs(300), stream.next())
            .await
            .expect("no signal within 5 minutes")
            .unwrap()
            .unwrap();
        let header = msg.header();
        if header.path().map(|p| p.as_str()) != Some(path.as_str()) {
            continue;
        }
        match header.member().map(|m| m.as_str()) {
            Some("Progress") => {
                let (_, disk, done, total): (String, String, u64, u64) =
                    msg.body().deserialize().unwrap();
                assert_eq!(disk, "vda");
                seen.push((done, total));
            }
            Some("Completed") => {
                let (state, _): (String, Vec<vmsnap_dbus::DomainResult>) =
                    msg.body().deserialize().unwrap();
                break state;
            }
            _ => {}
        }
    };
    assert_eq!(state, "succeeded");
    assert!(!seen.is_empty(), "no progress before completion");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress never goes back: {seen:?}"
    );
    let (last_done, total) = *seen.last().unwrap();
    assert_eq!(last_done, total);
    assert!(total >= 256 << 20);
}

#[test]
fn a_failing_backup_fails_the_job_with_a_readable_reason() {
    let g = guest("bk-fail", 16);
    // A backup root below a regular file cannot be created.
    let run = backup(&g, "/etc/hostname/vmsnap", &[]).expect_code(10);
    let r = result(&run);
    assert_eq!(r["state"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("Not a directory"),
        "{r}"
    );
    assert_eq!(domstate(&g), "shut off", "the domain is left as it was");
    // The text form names the reason too.
    let text = vmsnapctl(&["backup", &g.name, "--output", "/etc/hostname/vmsnap"]).expect_code(10);
    assert!(
        text.stdout.contains("failed") && text.stdout.contains("Not a directory"),
        "{}",
        text.stdout
    );
}

#[test]
fn the_originals_switches_selection_and_folder_names() {
    // §13 4, 5, 6, 12–16, 18, 40, 41, 42
    let a = guest("bk-sel-one", 16);
    let b = guest("bk-sel-two", 16);
    let c = guest("bk-sel-three", 16);
    let root = root("selection");
    a.write("vda", 0x5e, 0, 4);
    let p = &host().prefix;
    vmsnapctl(&[
        &format!("--domains={}, {}", a.name, b.name),
        "--output",
        &root,
        "--backup",
    ])
    .expect_code(0);
    assert!(std::path::Path::new(&format!("{root}/{}", a.name)).is_dir());
    assert!(std::path::Path::new(&format!("{root}/{}", b.name)).is_dir());
    assert!(
        !std::path::Path::new(&format!("{root}/{}", c.name)).exists(),
        "only the selected"
    );
    vmsnapctl(&[
        &format!("--domains={p}bk-sel-t*"),
        &format!("--output={root}"),
        "--backup",
    ])
    .expect_code(0);
    assert!(std::path::Path::new(&format!("{root}/{}", c.name)).is_dir());
    // A second run without changes adds a small incremental in the same single folder.
    let size = |d: &str| {
        fingerprint(std::path::Path::new(d))
            .iter()
            .map(|f| f.1)
            .sum::<u64>()
    };
    let folder = format!("{root}/{}/{}", a.name, month_folder());
    let before = size(&folder);
    let again = result(&backup(&a, &root, &["--groupBy=month"]).expect_code(0));
    assert_eq!(again["level"], "inc");
    assert!(size(&folder) - before < before / 2);
    let monthly: Vec<_> = std::fs::read_dir(format!("{root}/{}", a.name))
        .unwrap()
        .collect();
    assert_eq!(monthly.len(), 1);
    let today = chrono::Local::now().date_naive();
    use chrono::Datelike;
    let expected = [
        (
            "quarter",
            format!(
                "vmsnap-backup-quarterly-{}-Q{}",
                today.year(),
                (today.month() - 1) / 3 + 1
            ),
        ),
        (
            "bi-annual",
            format!(
                "vmsnap-backup-bi-annually-{}-p{}",
                today.year(),
                if today.month() <= 6 { 1 } else { 2 }
            ),
        ),
        ("year", format!("vmsnap-backup-yearly-{}", today.year())),
    ];
    for (group, name) in expected {
        let r = result(&backup(&b, &root, &["--group-by", group]).expect_code(0));
        assert_eq!(r["folder"], format!("{root}/{}/{name}", b.name));
        assert_eq!(r["level"], "full", "a new period folder starts a chain");
    }
    let no_output = vmsnapctl(&[&format!("--domains={}", a.name), "--backup"]).expect_code(2);
    assert!(no_output.stderr.contains("No output directory specified"));
    let bad_group =
        vmsnapctl(&["backup", &a.name, "--output", &root, "--groupBy=monthly"]).expect_code(2);
    assert!(bad_group.stderr.contains("monthly"));
    assert!(!std::path::Path::new(&format!("{root}/{}/undefined", a.name)).exists());
    vmsnapctl(&[
        &format!("--domains={}", a.name),
        "--backup",
        "--status",
        "--output",
        &root,
    ])
    .expect_code(7);
    vmsnapctl(&["backup", "--output", &root]).expect_code(1);
    vmsnapctl(&["backup", &a.name, "--output", "relative"]).expect_code(2);
    vmsnapctl(&["backup", "nope-no-such-vm", "--output", &root]).expect_code(1);
    vmsnapctl(&["backup", &a.name, "--output", &root, "--keep", "1"]).expect_code(2);
}

#[test]
fn raw_disks_join_full_backups_and_never_break_the_chain() {
    let g = Guest::define(
        "bk-raw",
        &[
            Disk::Qcow2 {
                target: "vda",
                file: "vda.qcow2",
                size_mib: 32,
            },
            Disk::Raw {
                target: "vdb",
                file: "vdb.img",
                size_mib: 16,
            },
        ],
    );
    let root = root("raw");
    g.write("vda", 0x3a, 0, 2);
    let full = result(&backup(&g, &root, &["--raw"]).expect_code(0));
    assert_eq!(full["level"], "full");
    let folder = full["folder"].as_str().unwrap().to_string();
    assert!(
        std::path::Path::new(&format!("{folder}/vdb.copy.data")).is_file(),
        "raw disk included"
    );
    g.write("vda", 0x3b, 4, 1);
    let inc = result(&backup(&g, &root, &["--raw"]).expect_code(0));
    assert_eq!(inc["level"], "inc", "{inc}");
    let status = vmsnapctl(&["status", "--json", "--output", &root, &g.name])
        .expect_code(0)
        .json();
    assert_eq!(status[&g.name]["overallStatus"], 0, "{status}");
    let now = snapshot(&g, "vda", "raw");
    assert_restores_to(&folder, None, "vda.qcow2", &now);
}

#[test]
fn ctrl_c_in_vmsnapctl_cancels_the_job() {
    let g = guest("bk-ctrlc", 1024);
    let root = root("ctrlc");
    g.write("vda", 0x0e, 0, 900);
    let child = std::process::Command::new(host().bin_dir.join("vmsnapctl"))
        .args(["backup", &g.name, "--output", &root, "--json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &host().bus_address)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for its job to copy bytes.
    let start = Instant::now();
    loop {
        let jobs = vmsnapctl(&["jobs", "--json"]).json();
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["domains"][0] == g.name.as_str() && j["state"] == "running")
            .cloned();
        if job.is_some_and(|j| bytes_done(j["job"].as_str().unwrap()) > 0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the backup never started copying"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{stderr}");
    assert!(stderr.contains("cancelling"), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the result document");
    assert_eq!(doc["state"], "cancelled");
    assert_eq!(
        domstate(&g),
        "shut off",
        "started paused for the backup, shut off again"
    );
    result(&backup(&g, &root, &[]).expect_code(0));
}
