//! The service leaves production guests as it found them: no libvirt taint from any of its
//! operations, and no `virsh` started (every libvirt interaction is on its RPC client).
//!
//! libvirt marks a domain "tainted: custom monitor control commands issued" as soon as anyone
//! uses the monitor pass-through, and distributions treat tainted domains as unsupported. The
//! check reads what libvirt itself reports (`virsh dominfo`'s messages while the guest runs,
//! the guest's log across its restarts) and ends with the one opt-in that does taint
//! (`status --deep`), so the check is shown to see a taint when there is one.

use std::path::PathBuf;

use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::root;
use vmsnap_integration::guest::{virsh, Guest};
use vmsnap_integration::{host, vmsnapctl_on};

/// What libvirt says about the running domain's taint (nothing when untainted).
fn taint(g: &Guest) -> Vec<String> {
    virsh(&["dominfo", "--domain", &g.name])
        .lines()
        .filter(|l| l.contains("tainted:"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The taint records libvirt wrote to the guest's log (they survive a restart).
fn logged_taint(g: &Guest) -> Vec<String> {
    let log = PathBuf::from(format!("/var/log/libvirt/qemu/{}.log", g.name));
    std::fs::read_to_string(&log)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (libvirt writes one per started guest)",
                log.display()
            )
        })
        .lines()
        .filter(|l| l.contains("tainted:"))
        .map(String::from)
        .collect()
}

/// A `virsh` that records that it ran and fails, first on the service's PATH.
fn virsh_trap(dir: &std::path::Path) -> (String, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let called = dir.join("virsh-called");
    let script = dir.join("virsh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"virsh $*\" >> '{}'\necho 'vmsnapd must not run virsh' >&2\nexit 99\n",
            called.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, called)
}

#[test]
fn status_backups_verify_restore_and_scrub_leave_no_taint_and_run_no_virsh() {
    let trap_dir = host().images.join("virsh-trap");
    let (path, called) = virsh_trap(&trap_dir);
    let bus = ScratchBus::start("untainted");
    let _service = bus.start_service(&[("PATH", &path)]);
    let on = |args: &[&str]| vmsnapctl_on(&bus.address, args);
    let out = root("untainted");

    let g = Guest::qcow2("untainted", 16);
    g.write("vda", 0x5a, 0, 4);
    g.start();
    assert_eq!(taint(&g), Vec::<String>::new(), "tainted before VMSnap ran");

    let step = |what: &str| {
        assert_eq!(taint(&g), Vec::<String>::new(), "tainted after {what}");
    };
    on(&["status", "--json", &g.name]).expect_code(0);
    step("status");
    on(&["backup", &g.name, "--output", &out, "--json"]).expect_code(0);
    step("a full backup");
    on(&["status", "--json", "--output", &out, &g.name]).expect_code(0);
    step("status with a checkpoint");
    on(&["backup", &g.name, "--output", &out, "--json"]).expect_code(0);
    step("an incremental backup");
    on(&["backups", &g.name, "--output", &out, "--json"]).expect_code(0);
    on(&["verify", &g.name, "--output", &out, "--json"]).expect_code(0);
    step("verify");

    // Shut off: the service starts it paused for the backup and stops it again.
    g.destroy();
    g.write("vda", 0xa5, 8, 2);
    on(&["backup", &g.name, "--output", &out, "--json"]).expect_code(0);
    let target = host().images.join("untainted-restore");
    on(&[
        "restore",
        &g.name,
        "--output",
        &out,
        "--target",
        target.to_str().unwrap(),
        "--json",
    ])
    .expect_code(0);
    g.start();
    on(&["scrub", &g.name, "--type", "both", "--json"]).expect_code(0);
    step("scrub");
    on(&["status", "--json", &g.name]).expect_code(0);
    step("status after scrub");
    assert_eq!(logged_taint(&g), Vec::<String>::new(), "the guest's log");

    assert!(
        !called.exists(),
        "vmsnapd ran virsh: {}",
        std::fs::read_to_string(&called).unwrap_or_default()
    );

    // The documented opt-in does taint, and the checks above see it.
    on(&["status", "--deep", "--json", &g.name]).expect_code(0);
    let marks = taint(&g);
    assert!(
        marks.iter().any(|m| m.contains("custom monitor")),
        "status --deep should have tainted the guest: {marks:?}"
    );
    assert!(!logged_taint(&g).is_empty(), "libvirt logged no taint");
    g.destroy();
}
