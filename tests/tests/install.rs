//! systemd and D-Bus integration: unit gates, installation, activation, the scheduled backup's
//! oneshot, and a clean stop on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{backup_under_way, root};
use vmsnap_integration::guest::{virsh, Disk, Guest};
use vmsnap_integration::{host, repo, run, tool, vmsnapctl_on, Run};

fn scratch_dir(name: &str) -> PathBuf {
    let dir = host().run_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A unit file with the installed binary paths pointing at this build.
fn unit_for_this_build(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    let bin = host().bin_dir.display().to_string();
    let text = text
        .replace("/usr/libexec/vmsnapd", &format!("{bin}/vmsnapd"))
        .replace("/usr/bin/vmsnapctl", &format!("{bin}/vmsnapctl"));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn units_pass_systemd_analyze_and_the_service_is_well_sandboxed() {
    let dir = scratch_dir("units");
    let units: Vec<PathBuf> = [
        "vmsnapd.service",
        "vmsnap-backup.service",
        "vmsnap-backup.timer",
    ]
    .iter()
    .map(|u| unit_for_this_build(u, &dir))
    .collect();
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]).args(&units);
    let out = run(&mut verify, Duration::from_secs(60));
    assert_eq!(
        out.code, 0,
        "systemd-analyze verify:\n{}{}",
        out.stdout, out.stderr
    );
    let security = tool(
        "systemd-analyze",
        &["security", "--offline=yes", units[0].to_str().unwrap()],
    );
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vmsnapd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    assert!(
        exposure <= 2.0,
        "exposure {exposure} is above 2.0:\n{security}"
    );
}

fn installed_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(format!(
                    "/{}",
                    e.path().strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    out.sort();
    out
}

fn make(args: &[&str]) -> Run {
    let mut cmd = Command::new("make");
    cmd.args(["--no-print-directory", "-C"])
        .arg(repo())
        .args(args);
    let out = run(&mut cmd, Duration::from_secs(900));
    assert_eq!(out.code, 0, "make {args:?}:\n{}{}", out.stdout, out.stderr);
    out
}

#[test]
fn install_into_destdir_and_uninstall_again() {
    let dest = scratch_dir("destdir");
    let destdir = format!("DESTDIR={}", dest.display());
    make(&["install", "PROFILE=debug", &destdir]);
    let mut expected: Vec<String> = make(&["list"]).stdout.lines().map(String::from).collect();
    expected.sort();
    assert_eq!(installed_files(&dest), expected);
    assert!(expected
        .contains(&"/usr/share/dbus-1/system-services/org.vmsnap.VMSnap1.service".to_string()));
    assert!(expected.contains(&"/usr/share/man/man8/vmsnapd.8".to_string()));
    assert!(expected.contains(&"/usr/share/bash-completion/completions/vmsnapctl".to_string()));
    // The polkit policy is valid against polkit's own DTD, the bus policy is well-formed.
    tool(
        "xmllint",
        &[
            "--noout",
            "--dtdvalid",
            "/usr/share/polkit-1/policyconfig-1.dtd",
            dest.join("usr/share/polkit-1/actions/org.vmsnap.policy")
                .to_str()
                .unwrap(),
        ],
    );
    tool(
        "xmllint",
        &[
            "--noout",
            dest.join("usr/share/dbus-1/system.d/org.vmsnap.VMSnap1.conf")
                .to_str()
                .unwrap(),
        ],
    );
    let man = std::fs::read_to_string(dest.join("usr/share/man/man1/vmsnapctl.1")).unwrap();
    assert!(
        man.contains("scrub") && man.contains("backup"),
        "the man page is generated from clap"
    );
    // An administrator's edit survives uninstall; everything else goes.
    std::fs::write(dest.join("etc/vmsnap/backup.env"), "VMSNAP_DOMAINS=web1\n").unwrap();
    make(&["uninstall", &destdir]);
    assert_eq!(installed_files(&dest), ["/etc/vmsnap/backup.env"]);
}

#[test]
fn polkit_knows_the_installed_actions() {
    let out = run(
        Command::new("pkaction")
            .args(["--action-id", "org.vmsnap.scrub", "--verbose"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &host().bus_address),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("implicit active:   auth_admin"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_first_call_activates_the_service() {
    let dir = scratch_dir("activation");
    let text = std::fs::read_to_string(repo().join("systemd/org.vmsnap.VMSnap1.service")).unwrap();
    let exec = format!("{}/vmsnapd --log-to-stderr", host().bin_dir.display());
    std::fs::write(
        dir.join("org.vmsnap.VMSnap1.service"),
        text.replace("/usr/libexec/vmsnapd", &exec),
    )
    .unwrap();
    let bus = ScratchBus::start_with(
        "activation",
        &format!("<servicedir>{}</servicedir>", dir.display()),
    );
    assert!(!bus.name_has_owner("org.vmsnap.VMSnap1"));
    let out = vmsnapctl_on(
        &bus.address,
        &["--domains=vmsnap-activation-nothing-*", "--status"],
    );
    // The service answered (with its typed error for an empty selection): it was activated.
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("NoSuchDomain"), "{}", out.stderr);
    assert!(bus.name_has_owner("org.vmsnap.VMSnap1"));
    // Dropping the bus makes the activated service notice and exit (it never runs deaf).
}

/// Splits an ExecStart= line the way systemd does: `$VAR` becomes words, `${VAR}` one word.
fn exec_start(unit: &str, env: &[(String, String)]) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let value = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            argv.push(value(name));
        } else if let Some(name) = word.strip_prefix('$') {
            argv.extend(value(name).split_whitespace().map(String::from));
        } else {
            argv.push(word.to_string());
        }
    }
    argv
}

/// `Environment=` defaults of the unit, then an environment file's assignments.
fn unit_env(unit: &str, env_file: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for line in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
        }
    }
    for line in env_file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line.split_once('=').unwrap();
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn run_oneshot(domains: &str, output: &str) -> Run {
    let unit = std::fs::read_to_string(repo().join("systemd/vmsnap-backup.service")).unwrap();
    let shipped = std::fs::read_to_string(repo().join("systemd/backup.env")).unwrap();
    let edited = shipped
        .replace("VMSNAP_DOMAINS=*", &format!("VMSNAP_DOMAINS={domains}"))
        .replace(
            "VMSNAP_OUTPUT=/var/lib/vmsnap",
            &format!("VMSNAP_OUTPUT={output}"),
        );
    let argv = exec_start(&unit, &unit_env(&unit, &edited));
    assert_eq!(argv[0], "/usr/bin/vmsnapctl");
    let mut cmd = Command::new(host().bin_dir.join("vmsnapctl"));
    cmd.args(&argv[1..])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &host().bus_address);
    run(&mut cmd, Duration::from_secs(600))
}

#[test]
fn the_scheduled_oneshot_backs_up_and_fails_visibly() {
    let g = Guest::qcow2("sched-ok", 16);
    let bad = Guest::define(
        "sched-bad",
        &[Disk::Raw {
            target: "vda",
            file: "vda.img",
            size_mib: 8,
        }],
    );
    let root = root("scheduled");
    let ok = run_oneshot(&g.name, &root);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout
            .contains(&format!("Backup of {}: succeeded (full", g.name)),
        "{}",
        ok.stdout
    );
    assert!(Path::new(&format!("{root}/{}", g.name)).is_dir());
    let failed = run_oneshot(&format!("{} {}", g.name, bad.name), &root);
    assert_ne!(failed.code, 0);
    assert!(
        failed
            .stdout
            .contains(&format!("Backup of {}: failed", bad.name)),
        "{}",
        failed.stdout
    );
}

#[test]
fn sigterm_cancels_running_backups_cleanly() {
    let g = Guest::qcow2("sigterm", 1024);
    g.write("vda", 0x7e, 0, 900);
    let root = root("sigterm");
    let bus = ScratchBus::start("sigterm");
    let mut service = bus.start_service(&[]);
    backup_under_way(&bus.address, &g, &root);
    assert_eq!(
        virsh(&["domstate", "--domain", &g.name]).trim(),
        "paused",
        "started paused for the backup"
    );
    assert_eq!(service.terminate(), Some(0));
    assert_eq!(virsh(&["domstate", "--domain", &g.name]).trim(), "shut off");
    // Nothing that looks like a backup was left behind.
    let leftovers = std::process::Command::new("find")
        .args([&format!("{root}/{}", g.name), "-name", "*.data"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(leftovers.trim().is_empty(), "{leftovers}");
}
