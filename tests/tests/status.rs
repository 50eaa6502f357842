//! Status end to end: vmsnapctl → private system bus → vmsnapd → virsh/qemu-img → real TCG
//! guests. Counterparts of the original VMSnap's status and error-scenario tests (§13: 25–37,
//! 47–50) are marked with their numbers.

use std::sync::OnceLock;

use serde_json::Value;
use vmsnap_integration::guest::{Disk, Guest};
use vmsnap_integration::{host, tool, vmsnapctl, vmsnapctl_as_user};

const META_SUFFIX: &str =
    "meta;touch vmsnap-pwned&&$(touch vmsnap-pwned)`touch vmsnap-pwned`|'\"<x>";

struct Guests {
    running: Guest,
    off_checkpoints: Guest,
    plain: Guest,
    broken: Guest,
    orphan: Guest,
    meta: Guest,
    chain: Guest,
    backup_root: String,
}

fn qcow2(size_mib: u32) -> Disk {
    Disk::Qcow2 {
        target: "vda",
        file: "vda.qcow2",
        size_mib,
    }
}

/// The guests every test reads, created once per run (reading them changes nothing). If
/// creating them fails, every test fails with that first error instead of retrying.
fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Result<Guests, String>> = OnceLock::new();
    let created = GUESTS.get_or_init(|| {
        std::panic::catch_unwind(create_guests).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    });
    match created {
        Ok(guests) => guests,
        Err(first) => panic!("creating the test guests failed: {first}"),
    }
}

fn create_guests() -> Guests {
    {
        // Running, with a path containing a space, a raw disk and an empty cdrom; data written
        // after the last checkpoint so QEMU has something to count.
        let running = Guest::define(
            "running",
            &[
                Disk::Qcow2 {
                    target: "vda",
                    file: "disk one.qcow2",
                    size_mib: 64,
                },
                Disk::Raw {
                    target: "vdb",
                    file: "raw.img",
                    size_mib: 16,
                },
                Disk::EmptyCdrom { target: "hdc" },
            ],
        );
        running.start();
        running.checkpoint("virtnbdbackup.0");
        running.checkpoint("virtnbdbackup.1");
        running.destroy();
        running.write("vda", 0x55, 1, 2);
        running.start();

        let off_checkpoints = Guest::define("off-checkpoints", &[qcow2(32)]);
        off_checkpoints.start();
        off_checkpoints.checkpoint("virtnbdbackup.0");
        off_checkpoints.destroy();

        let plain = Guest::define("plain", &[qcow2(32)]);

        // A checkpoint whose bitmap is gone, as after an unclean QEMU stop.
        let broken = Guest::define("broken", &[qcow2(32)]);
        broken.start();
        broken.checkpoint("virtnbdbackup.0");
        broken.checkpoint("virtnbdbackup.1");
        broken.remove_live_bitmap("vda", "virtnbdbackup.1");

        // A VMSnap-named bitmap without its checkpoint, on a shut-off guest.
        let orphan = Guest::define("orphan", &[qcow2(32)]);
        orphan.add_image_bitmap("vda", "virtnbdbackup.5");

        let meta = Guest::define(META_SUFFIX, &[qcow2(16)]);

        // A real virtnbdbackup chain (full + inc) in the current period's folder.
        let chain = Guest::define("chain", &[qcow2(32)]);
        chain.start();
        let backup_root = host().images.join("backups").display().to_string();
        let folder = format!("{backup_root}/{}/{}", chain.name, current_month_folder());
        for level in ["full", "inc"] {
            tool(
                "virtnbdbackup",
                &[
                    "-d",
                    &chain.name,
                    "-l",
                    level,
                    "-o",
                    &folder,
                    "--noprogress",
                ],
            );
        }
        Guests {
            running,
            off_checkpoints,
            plain,
            broken,
            orphan,
            meta,
            chain,
            backup_root,
        }
    }
}

fn current_month_folder() -> String {
    chrono::Local::now()
        .format("vmsnap-backup-monthly-%Y-%m")
        .to_string()
}

fn status_json(domains: &[&str]) -> Value {
    let mut args = vec!["status", "--json", "--machine"];
    args.extend_from_slice(domains);
    vmsnapctl(&args).expect_code(0).json()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn running_guest_reports_every_disk_with_live_bitmaps() {
    let g = guests();
    // Done-when form: the original's switches, one JSON document.
    let run = vmsnapctl(&[
        &format!("--domains={}", g.running.name),
        "--json",
        "--machine",
    ])
    .expect_code(0);
    assert_eq!(run.stdout.lines().count(), 1, "one line: {}", run.stdout);
    let doc = run.json();
    let d = &doc[&g.running.name];
    assert_eq!(d["state"], "running");
    assert_eq!(
        names(&d["checkpoints"]),
        ["virtnbdbackup.0", "virtnbdbackup.1"]
    );
    assert_eq!(d["overallStatus"], 0, "{d}");
    assert_eq!(d["problems"], Value::Array(vec![]));
    let disks = d["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "only the qcow2 disk is eligible: {d}");
    let vda = &disks[0];
    assert_eq!(vda["disk"], "vda");
    assert_eq!(vda["path"], g.running.image("vda").display().to_string());
    assert_eq!(vda["virtualSize"], 64 * 1024 * 1024);
    assert!(vda["actualSize"].as_u64().unwrap() > 0);
    assert_eq!(
        names(&vda["bitmaps"]),
        ["virtnbdbackup.0", "virtnbdbackup.1"]
    );
    // 2 MiB were written after the last checkpoint; QEMU counts at least that much.
    let changed = vda["changedSinceCheckpoint"]
        .as_u64()
        .expect("QEMU's count");
    assert!(changed >= 2 * 1024 * 1024, "changed {changed}");
    let skipped: Vec<(String, String)> = d["skippedDisks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["disk"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].0 == "vdb" && skipped[0].1.contains("raw"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].0 == "hdc" && skipped[1].1.contains("cdrom"),
        "{skipped:?}"
    );
}

#[test]
fn shut_off_guest_reads_bitmaps_from_the_image() {
    let g = guests();
    let doc = status_json(&[&g.off_checkpoints.name]);
    let d = &doc[&g.off_checkpoints.name];
    assert_eq!(d["state"], "shut off");
    assert_eq!(d["overallStatus"], 0, "{d}");
    assert_eq!(names(&d["checkpoints"]), ["virtnbdbackup.0"]);
    assert_eq!(names(&d["disks"][0]["bitmaps"]), ["virtnbdbackup.0"]);
    assert_eq!(d["disks"][0]["changedSinceCheckpoint"], Value::Null);
}

#[test]
fn guest_without_checkpoints_is_ok() {
    // §13 32, 33
    let g = guests();
    let doc = status_json(&[&g.plain.name]);
    let d = &doc[&g.plain.name];
    assert_eq!(d["checkpoints"], Value::Array(vec![]));
    assert_eq!(d["overallStatus"], 0);
    assert_eq!(d["disks"][0]["bitmaps"], Value::Array(vec![]));
    let text = vmsnapctl(&["status", &g.plain.name]).expect_code(0).stdout;
    assert!(
        text.contains(&format!("  No checkpoints found for {}", g.plain.name)),
        "{text}"
    );
    assert!(text.contains("      No bitmaps found for vda"), "{text}");
}

#[test]
fn missing_bitmap_is_inconsistent_and_says_why_in_every_format() {
    let g = guests();
    let why = "checkpoint virtnbdbackup.1 has no bitmap on disk vda";
    let doc = status_json(&[&g.broken.name]);
    let d = &doc[&g.broken.name];
    assert_eq!(d["overallStatus"], 1);
    assert_eq!(names(&d["problems"]), [why]);
    let yaml = vmsnapctl(&["status", "--yaml", &g.broken.name]).expect_code(0);
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml.stdout).expect("YAML parses");
    assert_eq!(y[g.broken.name.as_str()]["overallStatus"], 1);
    assert_eq!(y[g.broken.name.as_str()]["problems"][0].as_str(), Some(why));
    let text = vmsnapctl(&["status", &g.broken.name]).expect_code(0).stdout;
    assert!(text.contains("  Overall status: INCONSISTENT"), "{text}");
    assert!(text.contains(&format!("    {why}")), "{text}");
}

#[test]
fn orphaned_bitmap_on_a_shut_off_guest_is_inconsistent() {
    let g = guests();
    let doc = status_json(&[&g.orphan.name]);
    let d = &doc[&g.orphan.name];
    assert_eq!(d["overallStatus"], 1);
    assert_eq!(
        names(&d["problems"]),
        ["bitmap virtnbdbackup.5 on disk vda has no checkpoint (orphaned)"]
    );
}

#[test]
fn backup_folder_statistics_cross_check_the_chain() {
    let g = guests();
    let run = vmsnapctl(&[
        "status",
        "--json",
        "--output",
        &g.backup_root,
        "--group-by",
        "month",
        &g.chain.name,
    ])
    .expect_code(0);
    let doc = run.json();
    let d = &doc[&g.chain.name];
    assert_eq!(d["overallStatus"], 0, "{d}");
    let stats = &d["backupDirStats"];
    assert_eq!(
        stats["path"],
        format!(
            "{}/{}/{}",
            g.backup_root,
            g.chain.name,
            current_month_folder()
        )
    );
    assert_eq!(stats["checkpoints"], 2);
    assert_eq!(
        names(&stats["checkpointNames"]),
        ["virtnbdbackup.0", "virtnbdbackup.1"]
    );
    // full + inc data, cpt, 2 checkpoint XMLs, 2 vmconfigs, 2 qcow.json, 2 logs at least.
    assert!(stats["totalFiles"].as_u64().unwrap() >= 8, "{stats}");
    assert!(stats["totalSize"].as_u64().unwrap() > 0);

    // Another period's folder does not exist yet: statistics say so, and that is not a problem.
    let other = vmsnapctl(&[
        "status",
        "--json",
        "--output",
        &g.backup_root,
        "--groupBy=year",
        &g.chain.name,
    ])
    .expect_code(0)
    .json();
    assert_eq!(other[&g.chain.name]["backupDirStats"]["exists"], false);
    assert_eq!(other[&g.chain.name]["backupDirStats"]["totalFiles"], 0);
}

#[test]
fn a_checkpoint_outside_the_folder_is_caught() {
    // The chain guest's folder has .0 and .1; a guest whose libvirt checkpoints are not in
    // its folder (here: the running guest, pointed at the same root with a fake folder).
    let g = guests();
    let folder = format!(
        "{}/{}/{}/checkpoints",
        g.backup_root,
        g.off_checkpoints.name,
        current_month_folder()
    );
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        format!("{folder}/virtnbdbackup.3.xml"),
        "<domaincheckpoint/>",
    )
    .unwrap();
    let doc = vmsnapctl(&[
        "status",
        "--machine",
        "--output",
        &g.backup_root,
        &g.off_checkpoints.name,
    ])
    .expect_code(0)
    .json();
    let d = &doc[&g.off_checkpoints.name];
    assert_eq!(d["overallStatus"], 1);
    let problems = names(&d["problems"]).join("\n");
    assert!(
        problems.contains("virtnbdbackup.3") && problems.contains("unknown to libvirt"),
        "{problems}"
    );
    assert!(
        problems.contains("libvirt checkpoint virtnbdbackup.0 is not part"),
        "{problems}"
    );
}

#[test]
fn glob_and_comma_selection() {
    // §13 30, 31, 34
    let g = guests();
    let all_ours = status_json(&[&format!("{}*", host().prefix)]);
    for guest in [&g.running, &g.plain, &g.broken, &g.meta, &g.chain] {
        assert!(
            all_ours.get(&guest.name).is_some(),
            "{} missing",
            guest.name
        );
    }
    let glob = status_json(&[&format!("{}o?f-checkpoints", host().prefix)]);
    assert_eq!(glob.as_object().unwrap().len(), 1);
    // The original's comma list, with the space users type after the comma.
    let run = vmsnapctl(&[
        &format!("--domains={}, {}", g.plain.name, g.orphan.name),
        "--status",
    ])
    .expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("Status for {}:", g.plain.name)),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("Status for {}:", g.orphan.name)),
        "{}",
        run.stdout
    );
    let both = vmsnapctl(&[
        "--json",
        &format!("--domains={},{}", g.plain.name, g.orphan.name),
    ])
    .expect_code(0)
    .json();
    let keys: Vec<&String> = both.as_object().unwrap().keys().collect();
    assert_eq!(keys, [&g.plain.name, &g.orphan.name]);
}

#[test]
fn no_arguments_means_status_of_every_domain() {
    // §13 47 and 48 had wrong premises: with no arguments status reports every domain.
    let g = guests();
    let run = vmsnapctl(&["--machine"]);
    let doc = run.json();
    assert!(doc.get(&g.plain.name).is_some());
    let run = vmsnapctl(&["--status"]);
    assert!(
        run.stdout
            .contains(&format!("Status for {}:", g.running.name)),
        "{}",
        run.stdout
    );
}

#[test]
fn shell_metacharacters_reach_no_shell() {
    let g = guests();
    let doc = status_json(&[&g.meta.name]);
    assert_eq!(doc[&g.meta.name]["overallStatus"], 0, "{doc}");
    assert_eq!(doc[&g.meta.name]["disks"][0]["disk"], "vda");
    for dir in [
        std::path::PathBuf::from("/"),
        vmsnap_integration::repo().to_path_buf(),
        host().run_dir.clone(),
    ] {
        assert!(
            !dir.join("vmsnap-pwned").exists(),
            "a shell ran in {}",
            dir.display()
        );
    }
}

#[test]
fn unknown_domains_are_named_and_exit_1() {
    // §13 35, 37
    let run = vmsnapctl(&["--domains=non-existent-vm-12345", "--status"]).expect_code(1);
    assert!(
        run.stderr.contains("non-existent-vm-12345"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("NoSuchDomain"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
    let g = guests();
    let run = vmsnapctl(&["status", &g.plain.name, "nope-1", "vmsnap-nothing-*"]).expect_code(1);
    assert!(
        run.stderr.contains("nope-1") && run.stderr.contains("vmsnap-nothing-*"),
        "{}",
        run.stderr
    );
}

#[test]
fn empty_and_hostile_names_are_refused() {
    // §13 36, 49, 50
    vmsnapctl(&["--domains=", "--status"]).expect_code(1);
    vmsnapctl(&["--domains= , ,", "--json"]).expect_code(1);
    let run = vmsnapctl(&["status", "test@domain#name!"]).expect_code(1);
    assert!(run.stderr.contains("test@domain#name!"));
    let long = "a".repeat(256);
    let run = vmsnapctl(&["status", &long]).expect_code(2);
    assert!(
        run.stderr.contains("InvalidArgument") && run.stderr.contains("longer than 255"),
        "{}",
        run.stderr
    );
    vmsnapctl(&["status", &"b".repeat(10_000)]).expect_code(2);
    let run = vmsnapctl(&["status", "../../etc/passwd"]).expect_code(2);
    assert!(run.stderr.contains("'/'"), "{}", run.stderr);
    vmsnapctl(&["status", "vm\u{1b}[2J"]).expect_code(2);
}

#[test]
fn bad_options_are_usage_errors() {
    let g = guests();
    let run = vmsnapctl(&["status", "--groupBy=monthly", &g.plain.name]).expect_code(2);
    assert!(run.stderr.contains("monthly"), "{}", run.stderr);
    let run = vmsnapctl(&["status", "--output=relative/dir", &g.plain.name]).expect_code(2);
    assert!(run.stderr.contains("not absolute"), "{}", run.stderr);
    let run = vmsnapctl(&[
        "status",
        "--connect=qemu+ssh://elsewhere/system",
        &g.plain.name,
    ])
    .expect_code(2);
    assert!(run.stderr.contains("qemu:///system"), "{}", run.stderr);
    vmsnapctl(&["status", "--connect=qemu:///system", &g.plain.name]).expect_code(0);
}

#[test]
fn every_output_format_parses_back() {
    // §13 25–29
    let g = guests();
    let name = g.running.name.as_str();
    let text = vmsnapctl(&["status", name]).expect_code(0).stdout;
    let expected = [
        format!("Status for {name}:"),
        "  Overall status: OK".to_string(),
        format!("  Checkpoints found for {name}:"),
        "    virtnbdbackup.0".to_string(),
        format!("  Eligible disks found for {name}:"),
        "    vda".to_string(),
        "      Virtual size: 67108864".to_string(),
        "      Bitmaps found for vda:".to_string(),
        "          virtnbdbackup.1".to_string(),
    ];
    for line in &expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        !text.contains('\u{1b}'),
        "no colours when stdout is not a terminal"
    );

    let pretty = vmsnapctl(&["status", "--json", name]).expect_code(0);
    assert!(pretty.stdout.lines().count() > 1, "indented JSON");
    let doc = pretty.json();
    assert_eq!(doc[name]["disks"][0]["virtualSize"], 67108864);

    // --verbose writes diagnostics, but only to stderr: the document still parses.
    let machine =
        vmsnapctl(&["--domains", name, "--json", "--machine", "--verbose"]).expect_code(0);
    assert_eq!(machine.json()[name]["overallStatus"], 0);
    assert!(machine.stderr.contains("Starting status check"));

    let yml = vmsnapctl(&["status", "--yml", "--pretty", name]).expect_code(0);
    let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yml.stdout).expect("YAML parses");
    assert_eq!(y[name]["disks"][0]["virtualSize"].as_str(), Some("67.1 MB"));
    assert_eq!(y[name]["overallStatus"].as_u64(), Some(0));
    let pretty_json = vmsnapctl(&["status", "--json", "--pretty", name])
        .expect_code(0)
        .json();
    assert_eq!(pretty_json[name]["disks"][0]["virtualSize"], "67.1 MB");
}

#[test]
fn an_unprivileged_user_can_read_status() {
    let g = guests();
    let run = vmsnapctl_as_user(&["status", "--machine", &g.plain.name]).expect_code(0);
    assert_eq!(run.json()[&g.plain.name]["overallStatus"], 0);
}
