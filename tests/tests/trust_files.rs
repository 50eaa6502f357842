//! The trust boundary's second round, on the file-browsing surface: targets another user
//! could prepare, links on the way, chain folders as targets, guests that would fill the
//! host, sessions opened at once and sessions used by another connection. Each against the
//! real service, the attacker being the unprivileged test user `vmsnaptest`.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmsnap_dbus::names::{BUS_NAME, FILES_INTERFACE, JOB_INTERFACE, MANAGER_PATH};
use vmsnap_dbus::proxy::{FilesProxy, ManagerProxy};
use vmsnap_dbus::Error;
use vmsnap_integration::bus::{connect, ScratchBus};
use vmsnap_integration::chain::{backup, result, root};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::guestdisk::ext4_guest;
use vmsnap_integration::{host, tool, vmsnapctl, Run};

fn files_get(g: &Guest, root: &str, paths: &[&str], target: &str) -> Run {
    let mut args = vec![
        "files",
        g.name.as_str(),
        "--output",
        root,
        "get",
        "--volume",
        "1",
    ];
    args.extend(paths);
    args.extend(["--target", target]);
    vmsnapctl(&args)
}

fn uid_of(user: &str) -> u32 {
    tool("id", &["-u", user]).trim().parse().unwrap()
}

/// Runs `args` as the unprivileged test user; true when it succeeded.
fn as_attacker(args: &[&str]) -> bool {
    Command::new("runuser")
        .args(["-u", "vmsnaptest", "--"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `busctl ARGS` on the run's bus as the unprivileged test user; its stdout.
fn attacker_busctl(args: &[&str]) -> String {
    attacker_busctl_on(&host().bus_address, args)
}

/// The same on the bus at `address`.
fn attacker_busctl_on(address: &str, args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "vmsnaptest", "--", "busctl"])
        .arg(format!("--address={address}"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "busctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry below `dir` (not following links).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A folder directly in `/var/tmp` (sticky and world-writable: where anyone may create one),
/// gone before and after the test.
struct TmpTarget(PathBuf);

impl TmpTarget {
    fn new(what: &str) -> TmpTarget {
        let p = PathBuf::from(format!("/var/tmp/{}{what}", host().prefix));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
        TmpTarget(p)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TmpTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_target_another_user_creates_while_the_extraction_plans_never_gets_roots_files() {
    // 4000 directories: the plan asks the reader about each, so it takes a while, and the
    // attacker tries to create the target at every moment of it.
    let tree = host().images.join("tf-race-tree");
    let _ = std::fs::remove_dir_all(&tree);
    for i in 0..4000 {
        std::fs::create_dir_all(tree.join(format!("secrets/d{i:04}"))).unwrap();
    }
    std::fs::write(tree.join("secrets/d0000/id_rsa"), b"PRIVATE KEY\n").unwrap();
    let g = ext4_guest("tf-race", &tree, 64);
    let root = root("tf-race");
    result(&backup(&g, &root, &[]).expect_code(0));
    let target = TmpTarget::new("race");
    let mut get = Command::new(host().bin_dir.join("vmsnapctl"))
        .args(["files", &g.name, "--output", &root, "get", "--volume", "1"])
        .args(["/secrets", "--target", target.s(), "--json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &host().bus_address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the call was answered (its job is listed), the attacker makes the folder.
    let start = Instant::now();
    loop {
        let jobs = vmsnapctl(&["jobs", "--json"]).expect_code(0).json();
        let extracting = jobs
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["operation"] == "extract" && j["domains"][0] == g.name.as_str());
        if extracting {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no extract job appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut attacker_made_it = false;
    while get.try_wait().unwrap().is_none() && !attacker_made_it {
        attacker_made_it = as_attacker(&["mkdir", "-m", "0777", target.s()]);
    }
    let out = get.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        attacker_made_it,
        "the plan ended before the attacker could make the target (make the tree larger); \
         {stderr}"
    );
    // The job saw the folder was not root's and wrote nothing into it.
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not root"), "{stdout}");
    assert_eq!(
        std::fs::metadata(&target.0).unwrap().uid(),
        uid_of("vmsnaptest")
    );
    assert_eq!(walk(&target.0), Vec::<PathBuf>::new());
    // Into a fresh target, root's files are root's.
    let fresh = TmpTarget::new("race-fresh");
    files_get(&g, &root, &["/secrets/d0000"], fresh.s()).expect_code(0);
    for p in walk(&fresh.0) {
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), 0, "{}", p.display());
    }
    assert_eq!(
        std::fs::read(fresh.0.join("d0000/id_rsa")).unwrap(),
        b"PRIVATE KEY\n"
    );
}

#[test]
fn a_link_on_the_way_to_a_target_is_never_followed() {
    let tree = host().images.join("tf-link-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("file"), b"guest file\n").unwrap();
    let g = ext4_guest("tf-link", &tree, 64);
    let root = root("tf-link");
    result(&backup(&g, &root, &[]).expect_code(0));
    // A root-only folder, and the attacker's link to it in /var/tmp.
    let private = host().images.join("tf-link-private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = TmpTarget::new("link");
    assert!(as_attacker(&[
        "ln",
        "-s",
        private.to_str().unwrap(),
        link.s()
    ]));
    let target = format!("{}/restored", link.s());
    let refused = files_get(&g, &root, &["/file"], &target).expect_code(15);
    assert!(refused.stderr.contains("symlink"), "{}", refused.stderr);
    assert!(
        !private.join("restored").exists(),
        "root created a folder behind the link"
    );
    // The same for a restore.
    vmsnapctl(&["restore", &g.name, "--output", &root, "--target", &target]).expect_code(15);
    assert!(!private.join("restored").exists());
}

#[test]
fn nothing_of_the_services_own_is_a_target() {
    let tree = host().images.join("tf-chain-tree");
    std::fs::create_dir_all(tree.join("vmsnap-backup-monthly-2020-01")).unwrap();
    std::fs::write(tree.join("vmconfig.virtnbdbackup.0.xml"), b"<domain/>").unwrap();
    let g = ext4_guest("tf-chain", &tree, 64);
    let root = root("tf-chain");
    let folder = result(&backup(&g, &root, &[]).expect_code(0))["folder"]
        .as_str()
        .unwrap()
        .to_string();
    let before = vmsnap_integration::chain::fingerprint(Path::new(&folder));
    let domain_dir = Path::new(&folder)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let inside = format!("{folder}/checkpoints");
    for target in [folder.as_str(), inside.as_str(), domain_dir.as_str()] {
        let refused = vmsnapctl(&[
            "files",
            &g.name,
            "--output",
            &root,
            "get",
            "--volume",
            "1",
            "/vmconfig.virtnbdbackup.0.xml",
            "/vmsnap-backup-monthly-2020-01",
            "--target",
            target,
            "--overwrite",
        ])
        .expect_code(2);
        assert!(refused.stderr.contains("chain"), "{}", refused.stderr);
        vmsnapctl(&[
            "restore",
            &g.name,
            "--output",
            &root,
            "--target",
            target,
            "--overwrite",
        ])
        .expect_code(2);
    }
    assert_eq!(
        vmsnap_integration::chain::fingerprint(Path::new(&folder)),
        before
    );
    // The service's own working directory is no folder for anyone's paths either.
    let refused = vmsnapctl(&["backups", &g.name, "--output", "/proc/self/cwd"]).expect_code(2);
    assert!(refused.stderr.contains("/proc"), "{}", refused.stderr);
}

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, mib: u32) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let size = format!("size={mib}m,mode=0755");
        tool(
            "mount",
            &["-t", "tmpfs", "-o", &size, "tmpfs", dir.to_str().unwrap()],
        );
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sparse_file_stays_sparse_and_what_would_not_fit_is_refused() {
    let tree = host().images.join("tf-sparse-tree");
    std::fs::create_dir_all(tree.join("bomb")).unwrap();
    let one_gib = std::fs::File::create(tree.join("sparse-1g")).unwrap();
    one_gib.set_len(1 << 30).unwrap();
    std::fs::write(tree.join("small"), b"small file\n").unwrap();
    // 1 TiB of holes: over the default cap of one extraction (256 GiB).
    let huge = std::fs::File::create(tree.join("bomb/huge")).unwrap();
    huge.set_len(1 << 40).unwrap();
    let g = ext4_guest("tf-sparse", &tree, 64);
    let root = root("tf-sparse");
    result(&backup(&g, &root, &[]).expect_code(0));
    let target = host().images.join("tf-sparse-out");
    // A file system of known free space (3 GiB, held in memory only where written): the
    // check counts the 1 GiB file at its full length, and this machine's disk is shared,
    // its free space not ours to count on.
    let _out = SmallFs::mount(&target, 3072);
    let t = target.to_str().unwrap();
    files_get(&g, &root, &["/sparse-1g"], t).expect_code(0);
    let got = std::fs::metadata(target.join("sparse-1g")).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert!(
        got.blocks() * 512 < 1 << 20,
        "{} blocks: holes were filled",
        got.blocks()
    );
    let refused = files_get(&g, &root, &["/bomb"], t).expect_code(10);
    assert!(
        refused.stdout.contains("extract_max_bytes"),
        "{}",
        refused.stdout
    );
    assert_eq!(
        names_in(&target),
        ["sparse-1g"],
        "the refused extraction left something"
    );
    // A target with 64 MiB: the 1 GiB file counts at its full length, and is refused before
    // anything is written; a small file still fits.
    let small = SmallFs::mount(&host().images.join("tf-sparse-small"), 64);
    let s = small.0.to_str().unwrap();
    let refused = files_get(&g, &root, &["/sparse-1g", "/small"], s).expect_code(10);
    assert!(refused.stdout.contains("free"), "{}", refused.stdout);
    assert_eq!(names_in(&small.0), Vec::<String>::new());
    files_get(&g, &root, &["/small"], s).expect_code(0);
    assert_eq!(
        std::fs::read(small.0.join("small")).unwrap(),
        b"small file\n"
    );
}

/// The session at `path`, as seen from `conn`.
async fn session<'a>(conn: &'a zbus::Connection, path: &str) -> FilesProxy<'a> {
    FilesProxy::builder(conn)
        .destination(BUS_NAME)
        .unwrap()
        .path(path.to_string())
        .unwrap()
        .build()
        .await
        .unwrap()
}

async fn open(manager: &ManagerProxy<'_>, domain: &str, root: &str) -> Result<String, Error> {
    let options = HashMap::from([("output", zvariant::Value::from(root))]);
    manager
        .open_files(domain, options)
        .await
        .map(|p| p.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_opened_at_once_stay_within_the_limit_and_serve_only_their_connection() {
    let tree = host().images.join("tf-open-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("file"), b"guest file\n").unwrap();
    let g = ext4_guest("tf-open", &tree, 64);
    let root = root("tf-open");
    result(&backup(&g, &root, &[]).expect_code(0));
    // A service of its own: filling the service-wide limit on the shared one would refuse
    // the sessions other tests of this file open at the same time.
    let bus = ScratchBus::start("tf-open");
    let _service = bus.start_service_args(&[]);
    let conn = connect(&bus.address).await;
    let manager = ManagerProxy::new(&conn).await.unwrap();
    // 24 calls in flight at once on one connection: at most 8 sessions may exist.
    let calls = (0..24).map(|_| open(&manager, &g.name, &root));
    let outcomes = futures_util::future::join_all(calls).await;
    let opened: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    for o in &outcomes {
        if let Err(e) = o {
            assert!(matches!(e, Error::Busy(_)), "{e:?}");
        }
    }
    assert!(
        !opened.is_empty() && opened.len() <= 8,
        "{} sessions opened",
        opened.len()
    );
    // Another connection of root's cannot use them.
    let other = connect(&bus.address).await;
    let theirs = session(&other, opened[0]).await;
    let refused = theirs.list(1, "/").await;
    assert!(matches!(refused, Err(Error::NoSuchFile(_))), "{refused:?}");
    let mine = session(&conn, opened[0]).await;
    let (entries, _) = mine.list(1, "/").await.expect("the opener lists");
    assert!(entries.iter().any(|e| e.name == "file"));
    // Where the chain lies is the opener's to know, not every local user's.
    assert!(mine.folder().await.unwrap().contains("tf-open"));
    let seen = attacker_busctl_on(
        &bus.address,
        &[
            "get-property",
            BUS_NAME,
            opened[0],
            FILES_INTERFACE,
            "Folder",
        ],
    );
    assert_eq!(seen.trim(), "s \"\"", "{seen}");
    for path in opened {
        session(&conn, path).await.close().await.unwrap();
    }
}

#[test]
fn what_a_job_touched_is_shown_to_its_starter_and_root_only() {
    let tree = host().images.join("tf-private-tree");
    std::fs::create_dir_all(tree.join("private-dir")).unwrap();
    std::fs::write(tree.join("private-dir/notes"), b"notes\n").unwrap();
    let _ = std::fs::remove_file(tree.join("private-dir/shadow-link"));
    std::os::unix::fs::symlink("/etc/shadow", tree.join("private-dir/shadow-link")).unwrap();
    let g = ext4_guest("tf-private", &tree, 64);
    let root = root("tf-private");
    result(&backup(&g, &root, &[]).expect_code(0));
    let target = host().images.join("tf-private-out");
    let got = files_get(&g, &root, &["/private-dir"], target.to_str().unwrap()).expect_code(0);
    assert!(got.stdout.contains("shadow-link"), "{}", got.stdout);
    let jobs = vmsnapctl(&["jobs", "--json"]).expect_code(0).json();
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["operation"] == "extract" && j["domains"][0] == g.name.as_str())
        .expect("the extraction is listed")
        .clone();
    // Root, its starter, reads everything.
    let mine = job["results"].to_string();
    assert!(
        mine.contains("tf-private-out") && mine.contains("shadow-link"),
        "{mine}"
    );
    // Another user sees the job, its kind, state and domain, and nothing it touched.
    let path = job["job"].as_str().unwrap();
    let everything = attacker_busctl(&[
        "call",
        BUS_NAME,
        MANAGER_PATH,
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ]);
    let results = attacker_busctl(&["get-property", BUS_NAME, path, JOB_INTERFACE, "Results"]);
    for seen in [&everything, &results] {
        assert!(seen.contains(&g.name), "{seen}");
        for secret in [
            "tf-private-out",
            "private-dir",
            "shadow-link",
            "/etc/shadow",
            &root,
        ] {
            assert!(
                !seen.contains(secret),
                "{secret} shown to another user: {seen}"
            );
        }
    }
    assert!(everything.contains("succeeded"), "{everything}");
}

#[test]
fn hostile_and_non_utf8_names_are_listed_inert_and_extracted_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tree = host().images.join("tf-names-tree");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree).unwrap();
    let at = |name: &[u8]| tree.join(OsStr::from_bytes(name));
    std::fs::write(at(b"esc\x1b]0;owned\x07"), b"title\n").unwrap();
    std::fs::write(at(b"two\nlines"), b"newline\n").unwrap();
    std::fs::create_dir(at(b"\xff\xfe-dir")).unwrap();
    std::fs::write(at(b"\xff\xfe-dir/inner.txt"), b"inside\n").unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"\x1b[2J"), at(b"clear-link")).unwrap();
    let g = ext4_guest("tf-names", &tree, 64);
    let root = root("tf-names");
    result(&backup(&g, &root, &[]).expect_code(0));
    let ls = |path: &str, json: bool| {
        let mut args = vec!["files", g.name.as_str(), "--output", root.as_str()];
        if json {
            args.push("--json");
        }
        args.extend(["ls", "--volume", "1", path]);
        vmsnapctl(&args).expect_code(0)
    };
    // Text: nothing acts on the terminal, one line per entry, names as they can be typed.
    let listed = ls("/", false);
    assert!(!listed.stdout.contains('\x1b'), "{:?}", listed.stdout);
    assert!(
        !listed.stdout.lines().any(|l| l.starts_with("lines")),
        "{}",
        listed.stdout
    );
    for wire in [
        "esc\\x1b]0;owned\\x07",
        "two\\x0alines",
        "\\xff\\xfe-dir",
        "-> \\x1b[2J",
    ] {
        assert!(
            listed.stdout.contains(wire),
            "{wire} missing from {}",
            listed.stdout
        );
    }
    let json = ls("/", true).json();
    let names: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"\\xff\\xfe-dir"), "{names:?}");
    // The directory whose name is not UTF-8 is listed and extracted under its exact bytes.
    let inside = ls("/\\xff\\xfe-dir", false);
    assert!(inside.stdout.contains("inner.txt"), "{}", inside.stdout);
    let target = host().images.join("tf-names-out");
    let t = target.to_str().unwrap();
    files_get(&g, &root, &["/\\xff\\xfe-dir", "/two\\x0alines"], t).expect_code(0);
    let out = |name: &[u8]| target.join(OsStr::from_bytes(name));
    assert_eq!(
        std::fs::read(out(b"\xff\xfe-dir/inner.txt")).unwrap(),
        b"inside\n"
    );
    assert_eq!(std::fs::read(out(b"two\nlines")).unwrap(), b"newline\n");
}
