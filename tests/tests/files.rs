//! Single files back from any point: `vmsnapctl files` against real guest file systems
//! (GPT with ext4, FAT32 and XFS; MBR), changed between backups through QEMU's block layer.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmsnap_integration::chain::{backup, result, root};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::guestdisk::{build, Fs, Mounted, Part};
use vmsnap_integration::polkit::{eventually, Rule};
use vmsnap_integration::{backup_root_for_users, host, noise, tool, vmsnapctl, vmsnapctl_as, Run};

fn work(g: &Guest, what: &str) -> PathBuf {
    host().images.join(format!("{}-{what}", g.name))
}

/// A guest whose disk has a GPT with ext4 (`tree`), FAT32 and XFS partitions; returns the
/// guest and the ext4 partition's offset.
fn guest_with(suffix: &str, tree: &Path) -> (Guest, u64) {
    let g = Guest::qcow2(suffix, 16);
    let fat: &[(&str, &[u8])] = &[("README.TXT", b"boot partition\n")];
    let offsets = build(
        &work(&g, "build"),
        g.image("vda"),
        "gpt",
        &[
            Part {
                size_mib: 64,
                fs: Fs::Ext4 {
                    label: "rootfs",
                    from: tree,
                },
            },
            Part {
                size_mib: 32,
                fs: Fs::Vfat {
                    label: "BOOT",
                    files: fat,
                },
            },
            Part {
                size_mib: 300,
                fs: Fs::Xfs,
            },
        ],
    );
    (g, offsets[0])
}

fn files(g: &Guest, root: &str, point: Option<&str>, rest: &[&str]) -> Run {
    let mut args = vec!["files", g.name.as_str(), "--output", root];
    if let Some(p) = point {
        args.extend(["--point", p]);
    }
    args.extend(rest);
    vmsnapctl(&args)
}

fn names(run: &Run) -> Vec<String> {
    run.json()["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// What the service's scratch area holds for file sessions (`files-*`): nothing, ever, now
/// that points are read in place; earlier versions rebuilt disks there.
fn scratch_in(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("scratch"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("files-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The readers reading a chain below `root`: processes whose descriptor 3 (a reader's first
/// data file, the chain's full) lies there, with the user they run as.
fn readers_of(root: &str) -> Vec<(u32, u32)> {
    let prefix = format!("{}/", root.trim_end_matches('/'));
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let first = std::fs::read_link(p.path().join("fd/3")).ok()?;
            if !first.to_string_lossy().starts_with(&prefix) {
                return None;
            }
            let pid = p.file_name().to_string_lossy().parse().ok()?;
            let status = std::fs::read_to_string(p.path().join("status")).ok()?;
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((pid, uid))
        })
        .collect()
}

fn eventually_true(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_file_deleted_later_is_listed_and_extracted_from_an_earlier_point_byte_for_byte() {
    let tree = host().images.join("fl-chain-tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/report.bin"), noise(3 << 20, 1)).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello\n").unwrap();
    let (g, ext4) = guest_with("fl-chain", &tree);
    let root = root("fl-chain");
    result(&backup(&g, &root, &[]).expect_code(0));
    // Point 1: a file added. Point 2: report.bin rewritten. Point 3: report.bin deleted.
    let version2 = noise(2 << 20, 2);
    for step in 1..=3 {
        let m = Mounted::new(&work(&g, "mount"), g.image("vda"), ext4);
        match step {
            1 => std::fs::write(m.root.join("data/added.txt"), b"added at point 1\n").unwrap(),
            // Replaced, not rewritten in place: Debian 13's fuse2fs leaves a file opened with
            // O_TRUNC at its old size (found by the read-back below).
            2 => {
                std::fs::remove_file(m.root.join("data/report.bin")).unwrap();
                std::fs::write(m.root.join("data/report.bin"), &version2).unwrap();
            }
            _ => std::fs::remove_file(m.root.join("data/report.bin")).unwrap(),
        }
        m.finish();
        if step == 2 {
            // The file as the guest's file system now holds it, read back by fuse2fs.
            let m = Mounted::read_only(&work(&g, "mount"), g.image("vda"), ext4);
            let now = std::fs::read(m.root.join("data/report.bin")).unwrap();
            m.finish();
            assert!(now == version2, "fuse2fs did not write report.bin as asked");
        }
        let r = result(&backup(&g, &root, &[]).expect_code(0));
        assert_eq!(r["level"], "inc", "{r}");
    }

    // The volumes: ext4, vfat, and xfs named but not readable.
    let v = files(&g, &root, None, &["--json", "ls"])
        .expect_code(0)
        .json();
    let fs: Vec<(&str, bool)> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["filesystem"].as_str().unwrap(),
                v["readable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(fs, [("ext4", true), ("vfat", true), ("xfs", false)], "{v}");
    assert_eq!(v["point"], "virtnbdbackup.3");
    let text = files(&g, &root, None, &["ls"]).expect_code(0).stdout;
    assert!(
        text.contains("ext4 \"rootfs\"") && text.contains("(not readable)"),
        "{text}"
    );

    // Deleted at point 3, there at point 2.
    let at3 = files(&g, &root, None, &["--json", "ls", "--volume", "1", "/data"]).expect_code(0);
    assert_eq!(names(&at3), ["added.txt"]);
    let at2 = files(
        &g,
        &root,
        Some("virtnbdbackup.2"),
        &["--json", "ls", "--volume", "1", "/data"],
    )
    .expect_code(0);
    assert_eq!(names(&at2), ["added.txt", "report.bin"]);
    let target = backup_root_for_users().join("fl-chain-out");
    let _ = std::fs::remove_dir_all(&target);
    let t = target.display().to_string();
    let got = files(
        &g,
        &root,
        Some("virtnbdbackup.2"),
        &[
            "get",
            "--volume",
            "1",
            "/data/report.bin",
            "/hello.txt",
            "--target",
            &t,
        ],
    )
    .expect_code(0);
    assert!(got.stdout.contains("succeeded"), "{}", got.stdout);
    assert!(
        std::fs::read(target.join("report.bin")).unwrap() == version2,
        "report.bin differs from point 2's"
    );
    assert_eq!(std::fs::read(target.join("hello.txt")).unwrap(), b"hello\n");
    // At point 0 it was the first version.
    let t0 = target.join("p0").display().to_string();
    files(
        &g,
        &root,
        Some("virtnbdbackup.0"),
        &["get", "--volume", "1", "/data/report.bin", "--target", &t0],
    )
    .expect_code(0);
    assert!(std::fs::read(target.join("p0/report.bin")).unwrap() == noise(3 << 20, 1));
    // Not again without --overwrite; with it, replaced.
    let again = files(
        &g,
        &root,
        Some("virtnbdbackup.2"),
        &["get", "--volume", "1", "/hello.txt", "--target", &t],
    );
    again.expect_code(13);
    files(
        &g,
        &root,
        Some("virtnbdbackup.2"),
        &[
            "get",
            "--volume",
            "1",
            "/hello.txt",
            "--target",
            &t,
            "--overwrite",
        ],
    )
    .expect_code(0);
    // The FAT partition.
    files(
        &g,
        &root,
        None,
        &["get", "--volume", "2", "/README.TXT", "--target", &t],
    )
    .expect_code(0);
    assert_eq!(
        std::fs::read(target.join("README.TXT")).unwrap(),
        b"boot partition\n"
    );
    // XFS is named; a missing point and a missing file are typed.
    let xfs = files(&g, &root, None, &["ls", "--volume", "3"]).expect_code(19);
    assert!(xfs.stderr.contains("xfs: not supported"), "{}", xfs.stderr);
    files(&g, &root, Some("virtnbdbackup.9"), &["ls"]).expect_code(1);
    files(
        &g,
        &root,
        None,
        &["ls", "--volume", "1", "/data/report.bin"],
    )
    .expect_code(18);
}

#[test]
fn a_hostile_tree_extracts_without_links_devices_or_setuid() {
    let tree = host().images.join("fl-hostile-tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(tree.join("evil/sub")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", tree.join("evil/shadow")).unwrap();
    std::os::unix::fs::symlink("/etc", tree.join("evil/etc")).unwrap();
    tool(
        "mknod",
        &[tree.join("evil/disk").to_str().unwrap(), "b", "8", "0"],
    );
    tool("mkfifo", &[tree.join("evil/fifo").to_str().unwrap()]);
    std::fs::write(tree.join("evil/sub/suid"), b"#!/bin/sh\nid\n").unwrap();
    std::fs::write(tree.join("evil/sub/open"), b"world-writable\n").unwrap();
    // Owned by a uid of the guest's (before the modes: chown clears setuid bits).
    tool(
        "chown",
        &["-R", "12345:12345", tree.join("evil").to_str().unwrap()],
    );
    std::fs::set_permissions(
        tree.join("evil/sub/suid"),
        std::fs::Permissions::from_mode(0o4777),
    )
    .unwrap();
    std::fs::set_permissions(
        tree.join("evil/sub/open"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (g, _) = guest_with("fl-hostile", &tree);
    let root = root("fl-hostile");
    result(&backup(&g, &root, &[]).expect_code(0));

    // Listed as they are, links with their targets, never followed.
    let listed = files(&g, &root, None, &["--json", "ls", "--volume", "1", "/evil"])
        .expect_code(0)
        .json();
    let kinds: Vec<(String, String)> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("disk", "block-device"),
        ("etc", "symlink"),
        ("fifo", "fifo"),
        ("shadow", "symlink"),
        ("sub", "dir"),
    ];
    assert_eq!(
        kinds,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{listed}"
    );
    assert!(
        listed.to_string().contains("\"target\":\"/etc/shadow\""),
        "{listed}"
    );
    let through = files(&g, &root, None, &["ls", "--volume", "1", "/evil/etc"]);
    through.expect_code(18);
    let through = files(&g, &root, None, &["ls", "--volume", "1", "/evil/etc/ssh"]);
    assert!(through.stderr.contains("symlink"), "{}", through.stderr);

    // Files and directories only, all the target's owner's (never the guest's uid 12345).
    let target = backup_root_for_users().join("fl-hostile-out");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).unwrap();
    let owner = std::fs::metadata(&target).unwrap();
    let t = target.display().to_string();
    let got = files(
        &g,
        &root,
        None,
        &["--json", "get", "--volume", "1", "/evil", "--target", &t],
    )
    .expect_code(0);
    let checks = got.stdout.clone();
    for skipped in [
        "/evil/shadow: a symlink to /etc/shadow, not recreated",
        "/evil/disk: a block-device, not recreated",
        "/evil/fifo: a fifo, not recreated",
        "/evil/sub/suid: setuid",
    ] {
        assert!(checks.contains(skipped), "{skipped} missing from {checks}");
    }
    let mut seen = Vec::new();
    for entry in walk(&target.join("evil")) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let ft = meta.file_type();
        assert!(
            ft.is_file() || ft.is_dir(),
            "{} is neither file nor directory",
            entry.display()
        );
        assert!(!ft.is_symlink() && !ft.is_block_device() && !ft.is_fifo());
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner.uid(), owner.gid()),
            "{}",
            entry.display()
        );
        assert_eq!(
            meta.mode() & 0o7022,
            0,
            "{} mode {:o}",
            entry.display(),
            meta.mode()
        );
        seen.push(entry.strip_prefix(&target).unwrap().display().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["evil", "evil/sub", "evil/sub/open", "evil/sub/suid"]);
    assert_eq!(
        std::fs::read(target.join("evil/sub/suid")).unwrap(),
        b"#!/bin/sh\nid\n"
    );
    // /etc/shadow of the host was not touched or copied anywhere.
    assert!(!target.join("evil/shadow").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_corrupted_file_system_fails_its_session_and_the_service_keeps_serving() {
    let tree = host().images.join("fl-corrupt-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), b"web1\n").unwrap();
    let g = Guest::qcow2("fl-corrupt", 16);
    let w = work(&g, "build");
    // An MBR disk this time; its ext4's group descriptors are overwritten with noise.
    let offsets = build(
        &w,
        g.image("vda"),
        "dos",
        &[Part {
            size_mib: 32,
            fs: Fs::Ext4 {
                label: "broken",
                from: &tree,
            },
        }],
    );
    let noise_file = w.join("noise");
    std::fs::write(&noise_file, noise(64 << 10, 7)).unwrap();
    let io = format!(
        "write -s {} {} 65536",
        noise_file.display(),
        offsets[0] + 2048
    );
    tool(
        "qemu-io",
        &["-f", "qcow2", "-c", &io, g.image("vda").to_str().unwrap()],
    );
    let root = root("fl-corrupt");
    result(&backup(&g, &root, &[]).expect_code(0));

    let v = files(&g, &root, None, &["--json", "ls"])
        .expect_code(0)
        .json();
    assert_eq!(v["volumes"][0]["table"], "mbr", "{v}");
    let broken = files(&g, &root, None, &["ls", "--volume", "1", "/etc"]);
    assert_eq!(broken.code, 20, "{}\n{}", broken.stdout, broken.stderr);
    // The service is fine, and so is a healthy backup right after.
    vmsnapctl(&["status", &g.name]).expect_code(0);
}

#[test]
fn a_session_whose_client_vanished_is_cleaned_up() {
    let tree = host().images.join("fl-abandon-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let (g, _) = guest_with("fl-abandon", &tree);
    let root = root("fl-abandon");
    result(&backup(&g, &root, &[]).expect_code(0));
    // busctl opens a session and exits without closing it, as a killed client would.
    let out = tool(
        "busctl",
        &[
            &format!("--address={}", host().bus_address),
            "call",
            "org.vmsnap.VMSnap1",
            "/org/vmsnap/VMSnap1",
            "org.vmsnap.VMSnap1.Manager",
            "OpenFiles",
            "sa{sv}",
            &g.name,
            "1",
            "output",
            "s",
            &root,
            "--timeout=600",
        ],
    );
    let session = out
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    assert!(session.starts_with("/org/vmsnap/VMSnap1/files/"), "{out}");
    eventually_true("the abandoned session's reader and object are gone", || {
        let object = std::process::Command::new("busctl")
            .arg(format!("--address={}", host().bus_address))
            .args(["introspect", "org.vmsnap.VMSnap1", &session])
            .output()
            .unwrap();
        readers_of(&root).is_empty() && !object.status.success()
    });
}

#[test]
fn browsing_needs_its_own_right_and_extracting_the_restore_right() {
    let tree = host().images.join("fl-authz-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("secret"), b"guest secret\n").unwrap();
    let (g, _) = guest_with("fl-authz", &tree);
    // Below the users' backup root: the only place the service reads for them.
    let root = backup_root_for_users()
        .join("fl-authz")
        .display()
        .to_string();
    result(&backup(&g, &root, &[]).expect_code(0));
    let args = [
        "files",
        g.name.as_str(),
        "--output",
        root.as_str(),
        "ls",
        "--volume",
        "1",
    ];
    // Neither a user nor a libvirt-group member (who may back up) may browse.
    for user in ["vmsnaptest", "vmsnaplv"] {
        let refused = vmsnapctl_as(user, &args).expect_code(12);
        assert!(
            refused.stderr.contains("org.vmsnap.browse"),
            "{}",
            refused.stderr
        );
    }
    // Refused before anything was read: no reader ever opened that chain.
    assert!(readers_of(&root).is_empty(), "{:?}", readers_of(&root));
    let _rule = Rule::grant("browse", "vmsnaptest", &["org.vmsnap.browse"]);
    let listed = eventually(|| vmsnapctl_as("vmsnaptest", &args), 0);
    assert!(listed.stdout.contains("secret"), "{}", listed.stdout);
    // Browsing is not extracting.
    let t = backup_root_for_users()
        .join("fl-authz-out")
        .display()
        .to_string();
    let get = [
        "files",
        g.name.as_str(),
        "--output",
        root.as_str(),
        "get",
        "--volume",
        "1",
        "/secret",
        "--target",
        t.as_str(),
    ];
    let refused = vmsnapctl_as("vmsnaptest", &get).expect_code(12);
    assert!(
        refused.stderr.contains("org.vmsnap.restore"),
        "{}",
        refused.stderr
    );
    assert!(!Path::new(&t).join("secret").exists());
}

#[tokio::test]
async fn sessions_end_when_idle_or_with_a_crash_and_old_scratch_goes_at_the_next_start() {
    use vmsnap_dbus::options::FilesOptions;
    use vmsnap_dbus::proxy::{FilesProxy, ManagerProxy};
    use vmsnap_integration::bus::ScratchBus;

    let tree = host().images.join("fl-idle-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let (g, _) = guest_with("fl-idle", &tree);
    let root = root("fl-idle");
    result(&backup(&g, &root, &[]).expect_code(0));
    let bus = ScratchBus::start("fl-idle");
    let state = host().run_dir.join("bus-fl-idle/state");
    let readers = || readers_of(&root);
    let options = FilesOptions {
        output: Some(root.clone()),
        ..Default::default()
    };
    let open = |conn: zbus::Connection| {
        let options = options.to_dict();
        let name = g.name.clone();
        async move {
            let manager = ManagerProxy::new(&conn).await.unwrap();
            manager.open_files(&name, options).await.unwrap()
        }
    };

    // A crash with a session open.
    let mut service = bus.start_service_args(&[]);
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let first = open(conn.clone()).await;
    let open_readers = readers();
    assert_eq!(open_readers.len(), 1, "{first:?}");
    // Read in place, as the reader's own user; nothing written for it.
    assert_ne!(open_readers[0].1, 0, "the reader runs as root");
    assert!(scratch_in(&state).is_empty(), "{:?}", scratch_in(&state));
    // Another user cannot use it: to them it does not exist.
    let theirs = vmsnap_integration::run(
        std::process::Command::new("runuser").args([
            "-u",
            "vmsnaptest",
            "--",
            "busctl",
            &format!("--address={}", bus.address),
            "call",
            "org.vmsnap.VMSnap1",
            first.as_str(),
            "org.vmsnap.VMSnap1.Files",
            "Volumes",
        ]),
        Duration::from_secs(30),
    );
    assert_ne!(theirs.code, 0);
    assert!(
        theirs.stderr.contains("no open file session"),
        "{}",
        theirs.stderr
    );
    service.kill_hard();
    drop(conn);
    // Its reader ends with the service (its requests' pipe closed).
    eventually_true("a reader outlived its service", || readers().is_empty());
    // What an earlier version's crash left (a rebuilt disk) goes at the next start.
    let old = state.join("scratch/files-9-u0-AbCdEf");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("disk.raw"), b"rebuilt").unwrap();
    let _service = bus.start_service_args(&["--files-idle-timeout", "2"]);
    assert!(
        scratch_in(&state).is_empty(),
        "left after the restart: {:?}",
        scratch_in(&state)
    );

    // Idle: the session ends while its client is still connected.
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let second = open(conn.clone()).await;
    assert_eq!(readers().len(), 1);
    let start = Instant::now();
    while !readers().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the idle session stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let files = FilesProxy::builder(&conn)
        .path(second)
        .unwrap()
        .build()
        .await
        .unwrap();
    assert!(files.volumes().await.is_err());
}
