//! Backups you can trust: list, verify and restore through the service.

use std::path::Path;

use vmsnap_integration::chain::{assert_identical, backup, result, root, snapshot};
use vmsnap_integration::guest::{virsh, Guest};
use vmsnap_integration::{host, vmsnapctl, vmsnapctl_as, Run};

/// A guest with a full and two incrementals, each after different data was written, and a
/// copy of its disk at each point.
fn three_points(suffix: &str) -> (Guest, String, Vec<std::path::PathBuf>) {
    let g = Guest::qcow2(suffix, 64);
    let root = root(suffix);
    g.write("vda", 0x10, 0, 6);
    let mut points = vec![snapshot(&g, "vda", "p0")];
    g.start();
    result(&backup(&g, &root, &[]).expect_code(0));
    for (i, pattern) in [(1u32, 0x21u8), (2, 0x32)] {
        g.destroy();
        g.write("vda", pattern, 8 * i, 3);
        points.push(snapshot(&g, "vda", &format!("p{i}")));
        g.start();
        result(&backup(&g, &root, &[]).expect_code(0));
    }
    g.destroy();
    (g, root, points)
}

fn restore(g: &Guest, root: &str, target: &Path, extra: &[&str]) -> Run {
    let t = target.display().to_string();
    let mut args = vec![
        "restore",
        g.name.as_str(),
        "--output",
        root,
        "--target",
        t.as_str(),
        "--json",
    ];
    args.extend_from_slice(extra);
    vmsnapctl(&args)
}

#[test]
fn list_and_restore_every_point_identically() {
    let (g, root, points) = three_points("rs-points");
    let list = vmsnapctl(&["backups", &g.name, "--output", &root, "--json"])
        .expect_code(0)
        .json();
    let chains = list.as_array().unwrap();
    assert_eq!(chains.len(), 1, "{list}");
    assert_eq!(chains[0]["live"], true);
    let levels: Vec<&str> = chains[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["full", "inc", "inc"]);
    assert!(chains[0]["points"][1]["time"].as_u64().unwrap() > 0);
    assert!(chains[0]["points"][2]["bytes"].as_u64().unwrap() >= 3 << 20);
    let text = vmsnapctl(&["backups", &g.name, "--output", &root])
        .expect_code(0)
        .stdout;
    assert!(
        text.contains("(live chain)") && text.contains("virtnbdbackup.2"),
        "{text}"
    );

    for (i, expected) in points.iter().enumerate() {
        let target = host().images.join(format!("rs-points-target-{i}"));
        let until = format!("virtnbdbackup.{i}");
        let r = restore(&g, &root, &target, &["--until", &until]).expect_code(0);
        assert_eq!(r.json()["state"], "succeeded");
        assert_identical(&target.join("vda.qcow2"), expected, &until);
    }
    // Without --until: the latest point.
    let target = host().images.join("rs-points-target-latest");
    restore(&g, &root, &target, &[]).expect_code(0);
    assert_identical(&target.join("vda.qcow2"), &points[2], "latest");
    // A point that does not exist is a typed error before anything is written.
    let missing = host().images.join("rs-points-missing");
    let r = restore(&g, &root, &missing, &["--until", "virtnbdbackup.9"]).expect_code(1);
    assert!(r.stderr.contains("NoSuchBackup"), "{}", r.stderr);
    assert!(!missing.exists());
}

#[test]
fn verify_finds_a_corrupted_byte_and_every_point_after_it() {
    let (g, root, _) = three_points("rs-verify");
    let ok = vmsnapctl(&["verify", &g.name, "--output", &root, "--json"])
        .expect_code(0)
        .json();
    let checks = ok["domains"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{ok}");
    assert!(
        checks.iter().all(|c| c.as_str().unwrap().contains(": ok")),
        "{ok}"
    );
    // Deep: the newest point is rebuilt and compared with the index's reading, and, as the
    // guest is shut off and unchanged since its last backup, with its disk.
    let deep = vmsnapctl(&["verify", &g.name, "--output", &root, "--deep", "--json"])
        .expect_code(0)
        .json();
    let last = deep["domains"][0]["checks"][2]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("qemu-img check clean, identical to the index")
            && last.contains("identical to the shut-off domain's disk"),
        "{deep}"
    );
    // One byte of the first incremental's data changes.
    let chain = format!(
        "{root}/{}/{}",
        g.name,
        chrono::Local::now().format("vmsnap-backup-monthly-%Y-%m")
    );
    let file = Path::new(&chain).join("vda.inc.virtnbdbackup.1.data");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let bad = vmsnapctl(&["verify", &g.name, "--output", &root, "--json"])
        .expect_code(10)
        .json();
    let checks: Vec<String> = bad["domains"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(checks[0].contains("virtnbdbackup.0: ok"), "{checks:?}");
    assert!(
        checks[1].contains("virtnbdbackup.1: failed")
            && checks[1].contains("vda.inc.virtnbdbackup.1.data"),
        "{checks:?}"
    );
    assert!(checks[2].contains("virtnbdbackup.2: failed"), "{checks:?}");
    assert_eq!(bad["state"], "failed");
}

/// The checks of a verify that must fail.
fn failed_checks(g: &Guest, root: &str) -> Vec<String> {
    let bad = vmsnapctl(&["verify", &g.name, "--output", root, "--json"])
        .expect_code(10)
        .json();
    assert_eq!(bad["state"], "failed", "{bad}");
    bad["domains"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn verify_finds_a_frame_cut_short_behind_rewritten_checksums_and_a_missing_incremental() {
    let (g, root, _) = three_points("rs-cut");
    let chain = Path::new(&root).join(&g.name).join(
        chrono::Local::now()
            .format("vmsnap-backup-monthly-%Y-%m")
            .to_string(),
    );
    // The last incremental loses its end, inside its last frames, and whoever cut it also
    // rewrote VMSnap's record and removed virtnbdbackup's: only the structure shows it.
    let last = chain.join("vda.inc.virtnbdbackup.2.data");
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 30]).unwrap();
    let _ = std::fs::remove_file(chain.join("vda.inc.virtnbdbackup.2.data.chksum"));
    let sum = vmsnap_integration::tool("sha256sum", &[last.to_str().unwrap()]);
    let sum = sum.split_whitespace().next().unwrap();
    let records = std::fs::read_to_string(chain.join("vmsnap.sha256")).unwrap();
    let records: String = records
        .lines()
        .map(|l| match l.ends_with("  vda.inc.virtnbdbackup.2.data") {
            true => format!("{sum}  vda.inc.virtnbdbackup.2.data\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(chain.join("vmsnap.sha256"), records).unwrap();
    let checks = failed_checks(&g, &root);
    assert!(checks[1].contains("virtnbdbackup.1: ok"), "{checks:?}");
    assert!(
        checks[2].contains("virtnbdbackup.2: failed")
            && checks[2].contains("vda.inc.virtnbdbackup.2.data"),
        "{checks:?}"
    );

    // The first incremental is gone: the chain cannot be restored past the full.
    std::fs::remove_file(chain.join("vda.inc.virtnbdbackup.1.data")).unwrap();
    let checks = failed_checks(&g, &root);
    assert!(checks[0].contains("virtnbdbackup.0: ok"), "{checks:?}");
    assert!(
        checks.iter().skip(1).all(|c| c.contains(": failed")),
        "{checks:?}"
    );
}

/// The installed virtnbdbackup's major version (1 on Debian 12, 2 on Debian 13).
fn virtnbdbackup_major() -> u32 {
    let out = std::process::Command::new("virtnbdbackup")
        .arg("-V")
        .output()
        .expect("virtnbdbackup -V");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

#[test]
fn virtnbdbackups_own_checksums_are_a_second_check_where_it_writes_them() {
    let (g, root, _points) = three_points("rs-chksum");
    let chain = Path::new(&root).join(&g.name).join(
        chrono::Local::now()
            .format("vmsnap-backup-monthly-%Y-%m")
            .to_string(),
    );
    let file = chain.join("vda.inc.virtnbdbackup.1.data");
    let chksum = chain.join("vda.inc.virtnbdbackup.1.data.chksum");
    // VMSnap's own record gone: what is left is virtnbdbackup's, where it writes one.
    std::fs::remove_file(chain.join("vmsnap.sha256")).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let run = vmsnapctl(&["verify", &g.name, "--output", &root, "--json"]);
    let checks = run.json()["domains"][0]["checks"].clone();
    if virtnbdbackup_major() >= 2 {
        assert!(chksum.exists(), "2.x writes {chksum:?}");
        assert_eq!(run.code, 10, "{}", run.stdout);
        assert!(
            checks[1]
                .as_str()
                .unwrap()
                .contains("virtnbdbackup's own checksum (vda.inc.virtnbdbackup.1.data.chksum)"),
            "{checks}"
        );
    } else {
        // 1.9 writes none: without VMSnap's record nothing notices a flipped data byte.
        assert!(!chksum.exists(), "1.9 wrote {chksum:?}");
        assert!(
            checks[1].as_str().unwrap().contains("no checksum recorded"),
            "{checks}"
        );
    }
}

#[test]
fn restore_never_overwrites_unasked_and_needs_an_administrator() {
    let (g, root, points) = three_points("rs-target");
    let target = host().images.join("rs-target-existing");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("vda.qcow2"), b"precious").unwrap();
    let r = restore(&g, &root, &target, &[]).expect_code(13);
    assert!(r.stderr.contains("TargetExists"), "{}", r.stderr);
    assert_eq!(
        std::fs::read(target.join("vda.qcow2")).unwrap(),
        b"precious"
    );
    let r = vmsnapctl_as(
        "vmsnaplv",
        &[
            "restore",
            &g.name,
            "--output",
            &root,
            "--target",
            "/tmp/vmsnap-x",
        ],
    );
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert!(r.stderr.contains("org.vmsnap.restore"), "{}", r.stderr);
    assert!(!Path::new("/tmp/vmsnap-x").exists());
    // Asked to overwrite, it does.
    restore(&g, &root, &target, &["--overwrite"]).expect_code(0);
    assert_identical(&target.join("vda.qcow2"), &points[2], "overwrite");
}

#[test]
fn restore_as_a_new_domain_that_starts() {
    let (g, root, _) = three_points("rs-define");
    let name = format!("{}rs-define-restored", host().prefix);
    let target = host().images.join("rs-define-target");
    let r = restore(&g, &root, &target, &["--define-as", &name]).expect_code(0);
    assert_eq!(r.json()["state"], "succeeded");
    virsh(&["start", "--domain", &name]);
    assert_eq!(virsh(&["domstate", "--domain", &name]).trim(), "running");
    virsh(&["destroy", "--domain", &name]);
    // The original is untouched and still defined.
    assert_eq!(virsh(&["domstate", "--domain", &g.name]).trim(), "shut off");
    // Defining over an existing name is refused.
    let again = host().images.join("rs-define-target-2");
    restore(&g, &root, &again, &["--define-as", &g.name]).expect_code(13);
}
