//! Scrub on running and shut-off domains, and retention across period boundaries.
//! Counterparts of the original's scrub tests (§13: 19–24, 43, 44; 21 and 24 corrected: `*`
//! is a glob) and of its prune test 17, which never asserted a prune.

use std::path::Path;

use serde_json::Value;
use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{backup, result, root};
use vmsnap_integration::guest::{virsh, Disk, Guest};
use vmsnap_integration::{vmsnapctl, vmsnapctl_on};

fn guest(suffix: &str) -> Guest {
    Guest::qcow2(suffix, 16)
}

/// The domain's checkpoint names, sorted.
fn checkpoints(g: &Guest) -> Vec<String> {
    let mut names: Vec<String> = virsh(&["checkpoint-list", "--domain", &g.name, "--name"])
        .split_whitespace()
        .map(String::from)
        .collect();
    names.sort();
    names
}

fn status(g: &Guest) -> Value {
    vmsnapctl(&["status", "--json", &g.name])
        .expect_code(0)
        .json()[&g.name]
        .clone()
}

/// The bitmap names of the domain's disk, sorted.
fn bitmaps(g: &Guest) -> Vec<String> {
    let mut names: Vec<String> = status(g)["disks"][0]["bitmaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A guest with VMSnap checkpoints .0 and .1 and a foreign checkpoint with its own bitmap.
fn prepared(suffix: &str) -> Guest {
    let g = guest(suffix);
    g.start();
    g.checkpoint("virtnbdbackup.0");
    g.checkpoint("virtnbdbackup.1");
    g.checkpoint("manual-checkpoint");
    g
}

#[test]
fn scrub_on_a_running_domain_removes_bitmaps_with_checkpoints() {
    let g = prepared("sc-running");
    let out = vmsnapctl(&[
        "scrub",
        &g.name,
        "--type",
        "checkpoint",
        "--checkpoint-name",
        "virtnbdbackup.1",
    ])
    .expect_code(0);
    assert!(out.stdout.contains(&format!(
        "Removing checkpoint virtnbdbackup.1 from {}",
        g.name
    )));
    assert_eq!(checkpoints(&g), ["manual-checkpoint", "virtnbdbackup.0"]);
    assert!(
        !bitmaps(&g).contains(&"virtnbdbackup.1".to_string()),
        "the bitmap went with it"
    );
    assert_eq!(status(&g)["overallStatus"], 0);

    // Bitmaps only: the checkpoint stays, which status calls inconsistent.
    vmsnapctl(&[
        "scrub",
        &g.name,
        "--type",
        "bitmap",
        "--checkpoint-name",
        "*",
    ])
    .expect_code(0);
    assert_eq!(bitmaps(&g), ["manual-checkpoint"]);
    assert_eq!(status(&g)["overallStatus"], 1);

    // all: nothing of VMSnap's is left, the foreign checkpoint is, and status is OK.
    let dry = vmsnapctl(&["scrub", &g.name, "--type", "all", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        dry[0]["checkpoints"],
        serde_json::json!(["virtnbdbackup.0"])
    );
    assert_eq!(checkpoints(&g), ["manual-checkpoint", "virtnbdbackup.0"]);
    vmsnapctl(&["scrub", &g.name, "--type", "all"]).expect_code(0);
    assert_eq!(checkpoints(&g), ["manual-checkpoint"]);
    assert_eq!(bitmaps(&g), ["manual-checkpoint"]);
    assert_eq!(status(&g)["overallStatus"], 0);
}

#[test]
fn scrub_on_a_shut_off_domain_with_the_originals_switches() {
    // §13 19 (corrected: shut-off domains have checkpoints), 20, 22, 23
    let g = prepared("sc-off");
    g.destroy();
    let d = format!("--domains={}", g.name);
    vmsnapctl(&[
        &d,
        "--scrub",
        "--scrubType=checkpoint",
        "--checkpointName=virtnbdbackup.0",
    ])
    .expect_code(0);
    assert_eq!(checkpoints(&g), ["manual-checkpoint", "virtnbdbackup.1"]);
    // Shut off, libvirt can only drop the metadata: the bitmap is now an orphan.
    let s = status(&g);
    assert_eq!(s["overallStatus"], 1);
    assert!(
        s["problems"][0].as_str().unwrap().contains("orphaned"),
        "{s}"
    );
    // The original's scripts pass `--bitmapName=*`, which it ignored; a scrub changes
    // things, so VMSnap refuses the unknown switch (exit 2) and removes nothing.
    let r = vmsnapctl(&[&d, "--scrub", "--scrubType=bitmap", "--bitmapName=*"]).expect_code(2);
    assert!(r.stderr.contains("'--bitmapName'"), "{}", r.stderr);
    assert_eq!(checkpoints(&g), ["manual-checkpoint", "virtnbdbackup.1"]);
    vmsnapctl(&[&d, "--scrub", "--scrubType=bitmap", "--dry-run"]).expect_code(0);
    vmsnapctl(&[
        &d,
        "--scrub",
        "--scrubType=bitmap",
        "--checkpointName=virtnbdbackup.0",
    ])
    .expect_code(0);
    assert_eq!(bitmaps(&g), ["manual-checkpoint", "virtnbdbackup.1"]);
    assert_eq!(status(&g)["overallStatus"], 0);
    vmsnapctl(&[&d, "--scrub", "--scrubType=*"]).expect_code(0);
    assert_eq!(checkpoints(&g), ["manual-checkpoint"]);
    assert_eq!(bitmaps(&g), ["manual-checkpoint"]);
    assert_eq!(status(&g)["overallStatus"], 0);
    assert_eq!(virsh(&["domstate", "--domain", &g.name]).trim(), "shut off");
}

#[test]
fn scrub_globs_several_domains_and_bad_types_touch_nothing() {
    // §13 21, 24 (corrected: `*` is a glob over VMSnap names), 43, 44
    let a = prepared("sc-glob-a");
    let b = prepared("sc-glob-b");
    for bad in [vec!["--scrubType=checkpoints"], vec![]] {
        let mut args = vec!["--domains", a.name.as_str(), "--scrub"];
        args.extend(bad);
        let r = vmsnapctl(&args).expect_code(8);
        assert!(r.stderr.contains("Invalid scrub type"), "{}", r.stderr);
    }
    vmsnapctl(&["scrub", &a.name, "--type", "everything"]).expect_code(8);
    assert_eq!(checkpoints(&a).len(), 3);
    // A name that matches nothing removes nothing and is no error.
    vmsnapctl(&[
        "scrub",
        &a.name,
        "--type",
        "checkpoint",
        "--checkpoint-name",
        "virtnbdbackup.9",
    ])
    .expect_code(0);
    assert_eq!(checkpoints(&a).len(), 3);
    let both = format!("--domains={},{}", a.name, b.name);
    vmsnapctl(&[
        &both,
        "--scrub",
        "--scrubType=checkpoint",
        "--checkpointName=*",
    ])
    .expect_code(0);
    assert_eq!(checkpoints(&a), ["manual-checkpoint"]);
    assert_eq!(checkpoints(&b), ["manual-checkpoint"]);
}

fn month_folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `vmsnapctl prune` against a service whose clock says `date`.
fn prune_at(date: &str, g: &Guest, root: &str, extra: &[&str]) -> Value {
    let bus = ScratchBus::start(&format!("prune-{}", date.replace([' ', ':'], "-")));
    let _service = bus.start_service_with(&["faketime", date], &[]);
    let mut args = vec!["prune", g.name.as_str(), "--output", root, "--json"];
    args.extend_from_slice(extra);
    vmsnapctl_on(&bus.address, &args).expect_code(0).json()
}

#[test]
fn prune_keeps_the_previous_period_until_the_middle_and_honours_keep() {
    let g = guest("pr-clock");
    let root = root("prune-clock");
    let dir = Path::new(&root).join(&g.name);
    let make = |name: &str| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("vda.full.data"), b"x").unwrap();
    };
    for m in ["2027-01", "2027-02", "2027-03"] {
        make(&format!("vmsnap-backup-monthly-{m}"));
    }
    make("vmsnap-backup-quarterly-2026-Q3");
    make("notes");
    let outside = Path::new(&root).join("outside-target");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("vmsnap-backup-monthly-2026-12")).unwrap();

    // Before the middle of March: the previous month stays, older ones go.
    let r = prune_at("2027-03-10 12:00:00", &g, &root, &[]);
    assert_eq!(
        r[0]["deleted"],
        serde_json::json!([dir
            .join("vmsnap-backup-monthly-2027-01")
            .display()
            .to_string()])
    );
    // After the middle, a dry run only tells.
    let r = prune_at("2027-03-20 12:00:00", &g, &root, &["--dry-run"]);
    assert_eq!(r[0]["deleted"].as_array().unwrap().len(), 1);
    assert!(dir.join("vmsnap-backup-monthly-2027-02").is_dir());
    // keep=1: the previous month stays, the one before goes.
    make("vmsnap-backup-monthly-2027-01");
    let r = prune_at("2027-03-20 12:00:00", &g, &root, &["--keep", "1"]);
    assert_eq!(r[0]["deleted"].as_array().unwrap().len(), 1);
    assert!(dir.join("vmsnap-backup-monthly-2027-02").is_dir());
    // keep=0 after the middle: only the current period remains.
    prune_at("2027-03-20 12:00:00", &g, &root, &[]);
    assert_eq!(
        month_folders(&dir),
        [
            "notes",
            "vmsnap-backup-monthly-2026-12",
            "vmsnap-backup-monthly-2027-03",
            "vmsnap-backup-quarterly-2026-Q3"
        ]
    );
    assert!(outside.is_dir(), "a symlink is never followed");
}

#[test]
fn backup_prunes_only_after_success() {
    let root = root("prune-backup");
    let old = (chrono::Local::now() - chrono::Duration::days(100))
        .format("vmsnap-backup-monthly-%Y-%m")
        .to_string();
    // A domain whose backup fails (no disk with bitmaps) keeps its old folder.
    let bad = Guest::define(
        "pr-fail",
        &[Disk::Raw {
            target: "vda",
            file: "vda.img",
            size_mib: 8,
        }],
    );
    std::fs::create_dir_all(format!("{root}/{}/{old}", bad.name)).unwrap();
    let r = result(&backup(&bad, &root, &["--prune"]).expect_code(10));
    assert_eq!(r["pruned"], serde_json::json!([]));
    assert!(Path::new(&format!("{root}/{}/{old}", bad.name)).is_dir());
    // A successful one prunes and says what.
    let good = guest("pr-ok");
    std::fs::create_dir_all(format!("{root}/{}/{old}", good.name)).unwrap();
    let r = result(&backup(&good, &root, &["--prune"]).expect_code(0));
    assert_eq!(
        r["pruned"],
        serde_json::json!([format!("{root}/{}/{old}", good.name)])
    );
    assert!(!Path::new(&format!("{root}/{}/{old}", good.name)).exists());
}
