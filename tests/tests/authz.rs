//! Authorization with the real polkitd on the private bus, the shipped policy and rules, and
//! confinement of the paths callers other than root may write to.

use std::time::Duration;

use vmsnap_integration::guest::{virsh, Guest};
use vmsnap_integration::polkit::{eventually, Rule};
use vmsnap_integration::{backup_root_for_users, host, run, vmsnapctl, vmsnapctl_as};

fn guest(suffix: &str) -> Guest {
    Guest::qcow2(suffix, 16)
}

fn checkpoints(g: &Guest) -> String {
    virsh(&["checkpoint-list", "--domain", &g.name, "--name"])
}

#[test]
fn destructive_methods_need_an_administrator_and_a_rule_can_grant_them() {
    let g = guest("az-scrub");
    g.start();
    g.checkpoint("virtnbdbackup.0");
    let root = backup_root_for_users().display().to_string();
    let old = format!("{root}/{}/vmsnap-backup-monthly-2001-01", g.name);
    std::fs::create_dir_all(&old).unwrap();

    // No rule: reading works, changing does not, and nothing changes.
    vmsnapctl_as("vmsnaptest", &["status", &g.name]).expect_code(0);
    for args in [
        vec!["scrub", g.name.as_str(), "--type", "all"],
        vec!["prune", g.name.as_str(), "--output", root.as_str()],
        vec!["backup", g.name.as_str(), "--output", root.as_str()],
    ] {
        let r = vmsnapctl_as("vmsnaptest", &args).expect_code(12);
        assert!(
            r.stderr.contains("not allowed") && r.stderr.contains("org.vmsnap."),
            "{}",
            r.stderr
        );
    }
    assert!(checkpoints(&g).contains("virtnbdbackup.0"));
    assert!(std::path::Path::new(&old).is_dir());

    // The interactive path: the caller allows it, nobody can answer, the error says so.
    let r = run(
        std::process::Command::new("runuser")
            .args(["-u", "vmsnaptest", "--", "busctl"])
            .arg(format!("--address={}", host().bus_address))
            .args([
                "--allow-interactive-authorization=yes",
                "call",
                "org.vmsnap.VMSnap1",
                "/org/vmsnap/VMSnap1",
                "org.vmsnap.VMSnap1.Manager",
                "Scrub",
                "asa{sv}",
                "1",
                &g.name,
                "1",
                "type",
                "s",
                "all",
            ]),
        Duration::from_secs(60),
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Interactive authentication required")
            || r.stderr.contains("interactive authentication required"),
        "{}",
        r.stderr
    );
    assert!(checkpoints(&g).contains("virtnbdbackup.0"));

    // A rule for this user grants exactly what it names.
    let rule = Rule::grant(
        "authz",
        "vmsnaptest",
        &["org.vmsnap.scrub", "org.vmsnap.prune"],
    );
    let dry = eventually(
        || {
            vmsnapctl_as(
                "vmsnaptest",
                &["scrub", &g.name, "--type", "all", "--dry-run"],
            )
        },
        0,
    );
    assert!(
        dry.stdout
            .contains("Would remove checkpoint virtnbdbackup.0"),
        "{}",
        dry.stdout
    );
    assert!(
        checkpoints(&g).contains("virtnbdbackup.0"),
        "a dry run removes nothing"
    );
    vmsnapctl_as("vmsnaptest", &["scrub", &g.name, "--type", "all"]).expect_code(0);
    assert!(!checkpoints(&g).contains("virtnbdbackup.0"));
    vmsnapctl_as("vmsnaptest", &["prune", &g.name, "--output", &root]).expect_code(0);
    assert!(!std::path::Path::new(&old).exists());
    vmsnapctl_as("vmsnaptest", &["backup", &g.name, "--output", &root]).expect_code(12);
    drop(rule);
    eventually(
        || vmsnapctl_as("vmsnaptest", &["scrub", &g.name, "--type", "all"]),
        12,
    );
}

#[test]
fn the_libvirt_group_may_read_and_back_up_but_not_destroy() {
    let g = guest("az-libvirt");
    let root = backup_root_for_users().display().to_string();
    vmsnapctl_as("vmsnaplv", &["status", &g.name]).expect_code(0);
    let r = vmsnapctl_as(
        "vmsnaplv",
        &["backup", &g.name, "--output", &root, "--json"],
    )
    .expect_code(0);
    assert_eq!(r.json()["state"], "succeeded");
    let r = vmsnapctl_as("vmsnaplv", &["scrub", &g.name, "--type", "all"]).expect_code(12);
    assert!(r.stderr.contains("org.vmsnap.scrub"), "{}", r.stderr);
    vmsnapctl_as("vmsnaplv", &["prune", &g.name, "--output", &root]).expect_code(12);
    vmsnapctl_as(
        "vmsnaplv",
        &["backup", &g.name, "--output", &root, "--prune"],
    )
    .expect_code(12);
    assert!(checkpoints(&g).contains("virtnbdbackup.0"));
    // Root is always allowed.
    vmsnapctl(&["scrub", &g.name, "--type", "all"]).expect_code(0);
}

#[test]
fn callers_other_than_root_stay_inside_the_backup_roots() {
    let g = guest("az-paths");
    let root = backup_root_for_users();
    let outside = host().images.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link = root.join("escape");
    let _ = std::os::unix::fs::symlink(&outside, &link);
    let cases = [
        outside.display().to_string(),
        format!("{}/../outside", root.display()),
        link.display().to_string(),
        format!("{}/sub", link.display()),
        "relative/dir".to_string(),
    ];
    for output in &cases {
        let r = vmsnapctl_as("vmsnaplv", &["backup", &g.name, "--output", output]).expect_code(2);
        assert!(
            r.stderr.contains("InvalidArgument"),
            "{output}: {}",
            r.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing created outside"
    );
    let r = vmsnapctl_as(
        "vmsnaplv",
        &[
            "backup",
            "../../etc",
            "--output",
            &root.display().to_string(),
        ],
    )
    .expect_code(2);
    assert!(r.stderr.contains("'/'"), "{}", r.stderr);
    // Root may use any absolute path, as with the original.
    let r = vmsnapctl(&[
        "backup",
        &g.name,
        "--output",
        &outside.display().to_string(),
        "--json",
    ])
    .expect_code(0);
    assert_eq!(r.json()["state"], "succeeded");
}

#[test]
fn without_polkit_only_root_is_let_in() {
    // A bus without polkitd: nobody can be asked, so only root may change anything.
    let g = guest("az-nopolkit");
    let bus = vmsnap_integration::bus::ScratchBus::start("no-polkit");
    let _service = bus.start_service(&[]);
    let r = run(
        std::process::Command::new("runuser")
            .args(["-u", "vmsnaptest", "--", "env"])
            .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address))
            .arg(host().bin_dir.join("vmsnapctl"))
            .args(["scrub", &g.name, "--type", "all", "--dry-run"]),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert!(r.stderr.contains("only root"), "{}", r.stderr);
    vmsnap_integration::vmsnapctl_on(
        &bus.address,
        &["scrub", &g.name, "--type", "all", "--dry-run"],
    )
    .expect_code(0);
}
