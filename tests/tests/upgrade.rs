//! A distribution upgrade under a live chain (Debian 12 → 13): virtnbdbackup 1.9 writes the
//! full and an incremental, then 2.x continues the same folder with the next incremental.
//!
//! Continuing is right only if every point, the ones 1.9 wrote included, still restores byte
//! for byte with the tools the host has after the upgrade. Both versions run on this host: the
//! release's own and the other release's (`host_other_virtnbdbackup` in tests/host/lib.sh), so
//! this test runs on Debian 12 (2.x from trixie's package) and on Debian 13 (1.9 from
//! bookworm's). Each service instance finds its virtnbdbackup and virtnbdrestore through
//! `PATH`, as vmsnapd does on a real host after `apt full-upgrade` and a restart.

use std::path::{Path, PathBuf};

use vmsnap_integration::bus::{ScratchBus, Service};
use vmsnap_integration::chain::{assert_identical, fingerprint, root, snapshot};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::{host, tool, vmsnapctl_on};

/// One virtnbdbackup installation: the `PATH` that finds it first, and its version.
struct Installation {
    path: String,
    version: String,
}

impl Installation {
    fn system() -> Self {
        Installation {
            path: std::env::var("PATH").expect("PATH is set"),
            version: tool("virtnbdbackup", &["-V"]).trim().to_string(),
        }
    }

    fn other_release() -> Self {
        let dir = PathBuf::from(std::env::var("VMSNAP_TEST_OTHER_VIRTNBDBACKUP").expect(
            "VMSNAP_TEST_OTHER_VIRTNBDBACKUP is not set: tests/run unpacks the other Debian \
             release's virtnbdbackup for this test (host_other_virtnbdbackup)",
        ));
        let program = dir.join("virtnbdbackup");
        Installation {
            path: format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
            version: tool(program.to_str().unwrap(), &["-V"]).trim().to_string(),
        }
    }

    fn major(&self) -> u32 {
        let major = self.version.split('.').next().unwrap_or("");
        major
            .parse()
            .unwrap_or_else(|_| panic!("virtnbdbackup -V printed {:?}", self.version))
    }

    /// vmsnapd on a bus of its own, finding this installation's tools first.
    fn serve(&self, name: &str) -> (ScratchBus, Service) {
        let bus = ScratchBus::start(name);
        let service = bus.start_service(&[("PATH", &self.path)]);
        (bus, service)
    }
}

/// Debian 12's 1.9 and Debian 13's 2.x, whichever of the two this host runs itself.
fn before_and_after_the_upgrade() -> (Installation, Installation) {
    let (system, other) = (Installation::system(), Installation::other_release());
    let (old, new) = if system.major() < other.major() {
        (system, other)
    } else {
        (other, system)
    };
    assert_eq!(
        (old.major(), new.major()),
        (1, 2),
        "the upgrade test needs virtnbdbackup 1.x and 2.x, found {} and {}",
        old.version,
        new.version
    );
    (old, new)
}

fn backup_on(bus: &ScratchBus, g: &Guest, root: &str) -> serde_json::Value {
    let run = vmsnapctl_on(
        &bus.address,
        &["backup", &g.name, "--output", root, "--json"],
    )
    .expect_code(0);
    run.json()["domains"][0].clone()
}

/// A new point: the guest is stopped, written, copied as the expected image, started again.
fn next_point(g: &Guest, pattern: u8, offset_mib: u32, label: &str) -> PathBuf {
    g.destroy();
    g.write("vda", pattern, offset_mib, 4);
    let expected = snapshot(g, "vda", label);
    g.start();
    expected
}

#[test]
fn a_chain_written_by_1_9_continues_after_the_upgrade_to_2_x_and_every_point_restores() {
    let (old, new) = before_and_after_the_upgrade();
    let g = Guest::qcow2("upg", 64);
    let root = root("upgrade");
    g.write("vda", 0x51, 0, 4);
    let mut points = vec![snapshot(&g, "vda", "upg-p0")];
    g.start();

    // Before the upgrade: the full and one incremental by 1.9.
    let (old_bus, old_service) = old.serve("upg-old");
    let full = backup_on(&old_bus, &g, &root);
    assert_eq!(full["level"], "full", "{full}");
    let folder = full["folder"].as_str().unwrap().to_string();
    points.push(next_point(&g, 0x52, 8, "upg-p1"));
    let inc = backup_on(&old_bus, &g, &root);
    assert_eq!(inc["level"], "inc", "{inc}");
    assert_eq!(inc["folder"], folder.as_str());
    drop(old_service);
    drop(old_bus);
    let written_by_old = fingerprint(Path::new(&folder));
    let old_contents: Vec<Vec<u8>> = written_by_old
        .iter()
        .map(|(file, _, _)| std::fs::read(file).unwrap())
        .collect();

    // After it: 2.x continues the same chain, twice, and leaves 1.9's files as they were.
    let (new_bus, _new_service) = new.serve("upg-new");
    for (pattern, offset, label) in [(0x53, 16, "upg-p2"), (0x54, 24, "upg-p3")] {
        points.push(next_point(&g, pattern, offset, label));
        let next = backup_on(&new_bus, &g, &root);
        assert_eq!(
            (next["level"].as_str(), next["folder"].as_str()),
            (Some("inc"), Some(folder.as_str())),
            "{} did not continue the chain of {}: {next}",
            new.version,
            old.version
        );
    }
    // Of what 1.9 wrote, only virtnbdbackup's list of checkpoints (`<domain>.cpt`) is
    // rewritten and the service's checksum list grows; everything else is as it was.
    for ((file, _, _), before) in written_by_old.iter().zip(&old_contents) {
        let after = std::fs::read(file).unwrap();
        let unchanged = if file.ends_with(".cpt") {
            true
        } else if file.ends_with("/vmsnap.sha256") {
            after.starts_with(before)
        } else {
            after == *before
        };
        assert!(
            unchanged,
            "{} changed a file {} wrote: {file}",
            new.version, old.version
        );
    }

    // Which tool wrote which point shows in the folder: 2.x leaves its own checksum beside
    // each data file it writes (`<file>.chksum`), 1.9 none.
    let dir = Path::new(&folder);
    for (file, by_new) in [
        ("vda.full.data", false),
        ("vda.inc.virtnbdbackup.1.data", false),
        ("vda.inc.virtnbdbackup.2.data", true),
        ("vda.inc.virtnbdbackup.3.data", true),
    ] {
        assert!(dir.join(file).is_file(), "{file} is missing");
        assert_eq!(
            dir.join(format!("{file}.chksum")).exists(),
            by_new,
            "{file}: written by {}",
            if by_new { &new.version } else { &old.version }
        );
    }

    // Verify (checksums and every frame of both tools' files; deep: a rebuild of the newest
    // point compared with the index's reading of it) and a restore of every point with the
    // upgraded tools, compared byte for byte with the guest at that moment.
    let verify = vmsnapctl_on(
        &new_bus.address,
        &["verify", &g.name, "--output", &root, "--deep", "--json"],
    )
    .expect_code(0);
    assert_eq!(verify.json()["state"], "succeeded", "{}", verify.stdout);
    let checks = verify.json()["domains"][0]["checks"].clone();
    assert!(
        checks[3]
            .as_str()
            .is_some_and(|c| c.contains("identical to the index")),
        "{checks}"
    );
    for (i, expected) in points.iter().enumerate() {
        let target = host().images.join(format!("upg-target-{i}"));
        let until = format!("virtnbdbackup.{i}");
        let restore = vmsnapctl_on(
            &new_bus.address,
            &[
                "restore",
                &g.name,
                "--output",
                &root,
                "--target",
                target.to_str().unwrap(),
                "--until",
                &until,
                "--json",
            ],
        )
        .expect_code(0);
        assert_eq!(restore.json()["state"], "succeeded", "{}", restore.stdout);
        assert_identical(
            &target.join("vda.qcow2"),
            expected,
            &format!(
                "{until} (written by {}, restored by {})",
                old.version, new.version
            ),
        );
    }
    g.destroy();
}
