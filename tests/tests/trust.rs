//! The trust boundary, attacked by the unprivileged test users with the real polkitd: a root
//! service must touch only what the caller may touch, by handle, with bounds. Each test tries
//! one attack and checks that nothing was read, written, deleted or leaked; the same call as
//! root (or as a caller entitled to it) still works.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{backup_under_way, wait_job};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::polkit::{eventually, Rule};
use vmsnap_integration::{
    backup_root_for_users, host, run, vmsnapctl, vmsnapctl_as, vmsnapctl_as_on, Run,
};

fn uid_of(user: &str) -> u32 {
    let out = run(
        Command::new("id").args(["-u", user]),
        Duration::from_secs(10),
    );
    out.stdout.trim().parse().expect("a uid")
}

/// A fresh directory of this run, owned by `owner` (a uid), mode `mode`.
fn dir_owned(name: &str, owner: u32, mode: u32) -> PathBuf {
    let dir = host().images.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// Changes the owner of everything below `dir` (as the user would own what they wrote).
fn chown_tree(dir: &Path, owner: u32) {
    let r = run(
        Command::new("chown").args(["-R", &format!("{owner}:{owner}"), dir.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The chain folder a real chain of this period would have.
const CHAIN: &str = "vmsnap-backup-monthly-2026-12";

/// A chain folder on disk that looks like one virtnbdbackup wrote (not restorable; for reads).
fn fake_chain(root: &Path, domain: &str) -> PathBuf {
    let folder = root.join(domain).join(CHAIN);
    std::fs::create_dir_all(folder.join("checkpoints")).unwrap();
    std::fs::write(
        folder.join("checkpoints/virtnbdbackup.0.xml"),
        "<domaincheckpoint><name>virtnbdbackup.0</name><creationTime>1764720000</creationTime></domaincheckpoint>",
    )
    .unwrap();
    std::fs::write(folder.join("vda.full.data"), vec![0u8; 4096]).unwrap();
    std::fs::write(
        folder.join(format!("{domain}.cpt")),
        r#"["virtnbdbackup.0"]"#,
    )
    .unwrap();
    folder
}

#[test]
fn a_huge_or_fifo_checkpoint_file_is_refused_unread_and_memory_stays_bounded() {
    let g = Guest::qcow2("tr-huge", 16);
    let bus = ScratchBus::start("tr-huge");
    let service = bus.start_service_args(&[]);
    let nobody = uid_of("vmsnaptest");
    // A folder the attacker owns and can list itself: the read rule lets it through, so the
    // bounds are what protects the service.
    let root = dir_owned("tr-huge-root", nobody, 0o755);
    let folder = fake_chain(&root, &g.name);
    let checkpoint = folder.join("checkpoints/virtnbdbackup.0.xml");
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::File::create(&checkpoint)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    chown_tree(&root, nobody);
    let output = root.display().to_string();
    // Warm up, then measure the peak.
    vmsnapctl_as_on("vmsnaptest", &bus.address, &["status", &g.name]).expect_code(0);
    let before = service.peak_kib();
    let r = vmsnapctl_as_on(
        "vmsnaptest",
        &bus.address,
        &["backups", &g.name, "--output", &output],
    )
    .expect_code(15);
    assert!(
        r.stderr.contains("Untrusted")
            && r.stderr.contains("virtnbdbackup.0.xml")
            && r.stderr.contains("larger than"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.is_empty(),
        "a refusal prints no document: {}",
        r.stdout
    );
    let after = service.peak_kib();
    eprintln!("vmsnapd VmHWM {before} KiB before, {after} KiB after a 1 GiB checkpoint XML");
    assert!(
        after < before + 16 * 1024,
        "peak memory grew from {before} KiB to {after} KiB: the file was read"
    );
    // The same file as a FIFO, then as a symlink to /etc/shadow: not a regular file, so not a
    // checkpoint; never opened or followed (a FIFO opened to read would block), the call
    // answers, and the chain lists no point. (A file swapped for one between the listing and
    // the open is opened non-blocking and refused: unit test host::safe_fs.)
    for swap in ["fifo", "symlink"] {
        std::fs::remove_file(&checkpoint).unwrap();
        match swap {
            "fifo" => {
                let made = run(
                    Command::new("mkfifo").arg(&checkpoint),
                    Duration::from_secs(10),
                );
                assert_eq!(made.code, 0, "{}", made.stderr);
            }
            _ => std::os::unix::fs::symlink("/etc/shadow", &checkpoint).unwrap(),
        }
        let r = vmsnapctl_as_on(
            "vmsnaptest",
            &bus.address,
            &["backups", &g.name, "--output", &output, "--json"],
        )
        .expect_code(0);
        let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(doc[0]["points"], serde_json::json!([]), "{swap}: {doc}");
        assert!(!r.stdout.contains("root:"), "{swap}: /etc/shadow was read");
    }
    // Still serving, for everyone.
    vmsnapctl_as_on("vmsnaptest", &bus.address, &["status", &g.name]).expect_code(0);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_root_only_backup_folder_is_listed_for_nobody_else_but_the_entitled() {
    let g = Guest::qcow2("tr-private", 16);
    let root = dir_owned("tr-private-root", 0, 0o755);
    let folder = fake_chain(&root, &g.name);
    for d in [
        root.join(&g.name),
        folder.clone(),
        folder.join("checkpoints"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let output = root.display().to_string();
    // vmsnaptest cannot list the folder itself, and polkit does not grant it more.
    for args in [
        vec!["backups", g.name.as_str(), "--output", &output],
        vec!["status", g.name.as_str(), "--output", &output],
    ] {
        let r = vmsnapctl_as("vmsnaptest", &args).expect_code(12);
        assert!(r.stderr.contains("org.vmsnap.read"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "nothing printed: {}", r.stdout);
        assert!(
            !r.stderr.contains(CHAIN),
            "the refusal names what is inside: {}",
            r.stderr
        );
    }
    // A member of the libvirt group is granted org.vmsnap.read by the shipped rule.
    let r = vmsnapctl_as(
        "vmsnaplv",
        &["backups", &g.name, "--output", &output, "--json"],
    )
    .expect_code(0);
    assert!(r.stdout.contains(CHAIN), "{}", r.stdout);
    // Root reads everything.
    let r = vmsnapctl(&["backups", &g.name, "--output", &output, "--json"]).expect_code(0);
    assert!(r.stdout.contains(CHAIN), "{}", r.stdout);
    // A folder vmsnaptest can list itself needs no grant.
    for d in [
        root.join(&g.name),
        folder.clone(),
        folder.join("checkpoints"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let r = vmsnapctl_as(
        "vmsnaptest",
        &["backups", &g.name, "--output", &output, "--json"],
    )
    .expect_code(0);
    assert!(r.stdout.contains(CHAIN), "{}", r.stdout);
    std::fs::remove_dir_all(&root).unwrap();
}

/// A domain XML that, if virtnbdrestore acted on it, would make root copy a "firmware" file
/// to a path the attacker chose.
fn hostile_chain(root: &Path, domain: &str, planted: &Path) -> PathBuf {
    let folder = fake_chain(root, domain);
    let xml = format!(
        "<domain type='kvm'><name>{domain}</name><memory>65536</memory><os><type>hvm</type>\
         <loader readonly='yes' type='pflash'>{}</loader><nvram>{}</nvram></os>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='/etc/vmsnap-hostile.qcow2'/><target dev='vda'/></disk></devices></domain>",
        planted.display(),
        planted.display()
    );
    std::fs::write(folder.join("vmconfig.virtnbdbackup.0.xml"), xml).unwrap();
    std::fs::write(
        folder.join("vda.virtnbdbackup.0.qcow.json"),
        r#"{"virtual-size": 1048576, "format": "qcow2", "data-file": "/etc/passwd"}"#,
    )
    .unwrap();
    std::fs::write(
        folder.join(planted.file_name().unwrap()),
        b"attacker's firmware",
    )
    .unwrap();
    folder
}

#[test]
fn verify_and_restore_refuse_a_source_the_caller_wrote() {
    let g = Guest::qcow2("tr-source", 16);
    let lv = uid_of("vmsnaplv");
    let roots = backup_root_for_users();
    // A folder inside the configured root that vmsnaplv owns and filled itself.
    let owned = roots.join(format!("tr-source-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&owned);
    std::fs::create_dir_all(&owned).unwrap();
    let planted = host().images.join("tr-source-planted.fd");
    let _ = std::fs::remove_file(&planted);
    hostile_chain(&owned, &g.name, &planted);
    chown_tree(&owned, lv);
    let output = owned.display().to_string();
    let r = vmsnapctl_as("vmsnaplv", &["verify", &g.name, "--output", &output]).expect_code(15);
    assert!(
        r.stderr.contains("Untrusted") && r.stderr.contains("not root"),
        "{}",
        r.stderr
    );
    // Restore needs an administrator; with a rule that grants it, the source is still refused.
    let rule = Rule::grant("trust", "vmsnaplv", &["org.vmsnap.restore"]);
    let target = roots.join(format!("tr-source-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    let t = target.display().to_string();
    let r = eventually(
        || {
            vmsnapctl_as(
                "vmsnaplv",
                &["restore", &g.name, "--output", &output, "--target", &t],
            )
        },
        15,
    );
    assert!(r.stderr.contains("not root"), "{}", r.stderr);
    let r = vmsnapctl_as(
        "vmsnaplv",
        &[
            "restore",
            &g.name,
            "--output",
            &output,
            "--target",
            &t,
            "--define-as",
            "tr-source-defined",
        ],
    )
    .expect_code(15);
    assert!(r.stderr.contains("not root"), "{}", r.stderr);
    drop(rule);
    assert!(
        !planted.exists(),
        "virtnbdrestore acted on the caller's domain XML"
    );
    assert!(!target.exists(), "the refused restore created its target");
    let defined = vmsnap_integration::guest::virsh(&["list", "--all", "--name"]);
    assert!(!defined.contains("tr-source-defined"), "{defined}");
    std::fs::remove_dir_all(&owned).unwrap();
}

#[test]
fn outputs_and_targets_another_user_could_swap_are_refused_for_every_caller() {
    let g = Guest::qcow2("tr-swap", 16);
    let lv = uid_of("vmsnaplv");
    let roots = backup_root_for_users();
    let owned = roots.join(format!("tr-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&owned);
    std::fs::create_dir_all(&owned).unwrap();
    std::os::unix::fs::chown(&owned, Some(lv), Some(lv)).unwrap();
    let output = owned.display().to_string();
    // The caller's own folder inside the root: it could rename what root creates there.
    let r = vmsnapctl_as("vmsnaplv", &["backup", &g.name, "--output", &output]).expect_code(15);
    assert!(r.stderr.contains("not root"), "{}", r.stderr);
    // Root is refused too: vmsnaplv could swap the chain folder under virtnbdbackup.
    let r = vmsnapctl(&["backup", &g.name, "--output", &output]).expect_code(15);
    assert!(r.stderr.contains("not root"), "{}", r.stderr);
    // A group- or world-writable folder on the way, the same.
    let open = dir_owned("tr-swap-open", 0, 0o777);
    let r = vmsnapctl(&[
        "backup",
        &g.name,
        "--output",
        &open.join("b").display().to_string(),
    ])
    .expect_code(15);
    assert!(
        r.stderr.contains("writable by its group or others"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_dir(&owned).unwrap().count(),
        0,
        "nothing written"
    );
    assert_eq!(
        std::fs::read_dir(&open).unwrap().count(),
        0,
        "nothing written"
    );
    // A sticky world-writable directory (/var/tmp) is fine: others cannot rename root's.
    let fine = dir_owned("tr-swap-sticky", 0, 0o1777).join("b");
    vmsnapctl(&["backup", &g.name, "--output", &fine.display().to_string()]).expect_code(0);
    std::fs::remove_dir_all(&owned).unwrap();
}

#[test]
fn a_chain_folder_swapped_for_a_symlink_during_a_cancelled_backup_deletes_nothing_elsewhere() {
    let g = Guest::qcow2("tr-rollback", 256);
    g.write("vda", 0x3c, 0, 200);
    let root = dir_owned("tr-rollback-root", 0, 0o755);
    let victim = dir_owned("tr-rollback-victim", 0, 0o755);
    // Names the rollback of a new chain would remove if it followed a link.
    for f in ["precious", "vda.full.data.partial", "checkpoints"] {
        std::fs::write(victim.join(f), b"keep me").unwrap();
    }
    let job = backup_under_way(&host().bus_address, &g, &root.display().to_string());
    // While virtnbdbackup copies, the domain folder is swapped for a link to the victim (only
    // root can do this here; the service's checks keep every other user from doing it).
    let domain_dir = root.join(&g.name);
    std::fs::rename(&domain_dir, root.join("moved-away")).unwrap();
    std::os::unix::fs::symlink(&victim, &domain_dir).unwrap();
    vmsnapctl(&["cancel", &job]).expect_code(0);
    let entry = wait_job(&host().bus_address, &job);
    assert_eq!(entry["state"], "cancelled", "{entry}");
    for f in ["precious", "vda.full.data.partial", "checkpoints"] {
        assert_eq!(
            std::fs::read(victim.join(f)).unwrap(),
            b"keep me",
            "{f} in the link's target was touched"
        );
    }
    assert!(std::fs::symlink_metadata(&domain_dir)
        .unwrap()
        .file_type()
        .is_symlink());
    // The real folder was not rolled back by name either: it is where the attacker put it,
    // and listing it as root shows no point (the cancelled one is not a good backup).
    std::fs::remove_file(&domain_dir).unwrap();
    std::fs::rename(root.join("moved-away"), &domain_dir).unwrap();
    let r = vmsnapctl(&[
        "backups",
        &g.name,
        "--output",
        &root.display().to_string(),
        "--json",
    ])
    .expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let points: usize = doc
        .as_array()
        .map(|chains| {
            chains
                .iter()
                .map(|c| c["points"].as_array().map_or(0, |p| p.len()))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(points, 0, "a cancelled backup looks like a good one: {doc}");
}

#[test]
fn a_status_flood_from_one_user_is_refused_beyond_its_share_and_a_backup_succeeds() {
    let g = Guest::qcow2("tr-flood", 256);
    g.write("vda", 0x4d, 0, 200);
    let root = dir_owned("tr-flood-root", 0, 0o755);
    let job = backup_under_way(&host().bus_address, &g, &root.display().to_string());
    // 24 status calls at once from one unprivileged user: at most 4 are admitted, the rest
    // are refused with Busy (exit 16) at once; none hangs, none fails otherwise.
    let calls: Vec<std::thread::JoinHandle<Run>> = (0..24)
        .map(|_| {
            let name = g.name.clone();
            std::thread::spawn(move || vmsnapctl_as("vmsnaptest", &["status", &name]))
        })
        .collect();
    let codes: Vec<i32> = calls.into_iter().map(|c| c.join().unwrap().code).collect();
    eprintln!(
        "24 status calls at once: {} answered, {} refused with Busy",
        codes.iter().filter(|c| **c == 0).count(),
        codes.iter().filter(|c| **c == 16).count()
    );
    assert!(codes.iter().all(|c| *c == 0 || *c == 16), "{codes:?}");
    assert!(codes.contains(&0), "{codes:?}");
    let entry = wait_job(&host().bus_address, &job);
    assert_eq!(entry["state"], "succeeded", "{entry}");
    // Root's calls are queued, never refused.
    vmsnapctl(&["status", &g.name]).expect_code(0);
}

#[test]
fn a_loop_of_failing_jobs_keeps_the_bus_and_the_state_directory_bounded() {
    let g = Guest::qcow2("tr-loop", 16);
    let bus = ScratchBus::start("tr-loop");
    // Retention of an hour: only the cap removes finished jobs here.
    let _service = bus.start_service_args(&["--job-retention", "3600"]);
    let missing = host().images.join("tr-loop-missing-root").join("x");
    let _ = std::fs::remove_dir_all(missing.parent().unwrap());
    // Verify of a root without backups fails at once; more of them in a row than the
    // journal keeps (200).
    for _ in 0..210 {
        let r = vmsnap_integration::vmsnapctl_on(
            &bus.address,
            &[
                "verify",
                &g.name,
                "--output",
                &missing.display().to_string(),
            ],
        );
        assert!(r.code == 10, "{}", r.stderr);
    }
    let jobs = vmsnap_integration::vmsnapctl_on(&bus.address, &["jobs", "--json"])
        .expect_code(0)
        .json();
    let listed = jobs.as_array().map_or(0, |j| j.len());
    assert!(
        listed <= 64,
        "{listed} finished jobs still exported: not bounded"
    );
    assert!(listed > 0, "every job gone: {jobs}");
    let records = std::fs::read_dir(host().run_dir.join("bus-tr-loop/state/jobs"))
        .unwrap()
        .count();
    assert!(records <= 200, "{records} job records kept: not bounded");
}
