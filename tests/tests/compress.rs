//! Compressed chains (`vmsnapctl backup --compress`): virtnbdbackup's lz4, decided per chain.
//! Runs on the host (virtnbdbackup 1.9) and in the Debian 13 container (2.x).

use std::path::Path;

use vmsnap_integration::chain::{assert_identical, backup, result, root, snapshot};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::{host, noise, vmsnapctl};

/// The `compressed` key of a data file's meta frame, read the way virtnbdbackup wrote it.
fn header_says_compressed(file: &Path) -> bool {
    let bytes = std::fs::read(file).unwrap();
    let frame = std::str::from_utf8(&bytes[..40]).unwrap();
    assert!(frame.starts_with("meta "), "{file:?}: {frame:?}");
    let length = usize::from_str_radix(frame[22..38].trim(), 16).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&bytes[40..40 + length]).unwrap();
    !matches!(meta["compressed"], serde_json::Value::Bool(false))
}

fn chains(g: &Guest, root: &str) -> Vec<serde_json::Value> {
    vmsnapctl(&["backups", &g.name, "--output", root, "--json"])
        .expect_code(0)
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_compressed_chain_verifies_restores_and_stays_compressed() {
    let g = Guest::qcow2("cz", 64);
    let root = root("cz");
    // Compressible (one byte repeated) and incompressible (random) data.
    g.write("vda", 0x41, 0, 8);
    let random = host().images.join("cz-random");
    std::fs::write(&random, noise(4 << 20, 3)).unwrap();
    g.write_file("vda", &random, 16);
    let mut points = vec![snapshot(&g, "vda", "cz-p0")];
    g.start();
    let full = result(&backup(&g, &root, &["--compress"]).expect_code(0));
    let folder = full["folder"].as_str().unwrap().to_string();
    assert_eq!(full["level"], "full", "{full}");
    g.destroy();
    g.write("vda", 0x42, 32, 4);
    points.push(snapshot(&g, "vda", "cz-p1"));
    g.start();
    let inc = result(&backup(&g, &root, &["--compress"]).expect_code(0));
    assert_eq!(inc["level"], "inc", "{inc}");
    assert_eq!(inc["folder"].as_str().unwrap(), folder);

    // What virtnbdbackup wrote is compressed, and the service says so.
    let dir = Path::new(&folder);
    assert!(header_says_compressed(&dir.join("vda.full.data")));
    assert!(header_says_compressed(
        &dir.join("vda.inc.virtnbdbackup.1.data")
    ));
    let listed = chains(&g, &root);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["compressed"], true, "{listed:?}");
    let data: u64 = listed[0]["points"][0]["bytes"].as_u64().unwrap();
    assert!(
        data < 8 << 20,
        "12 MiB, 8 of them one repeated byte, took {data} bytes"
    );

    // Verify (recorded checksums, every lz4 frame decoded; deep: a rebuild compared with the
    // index's reading) and every point back, identical.
    let verify =
        vmsnapctl(&["verify", &g.name, "--output", &root, "--deep", "--json"]).expect_code(0);
    assert_eq!(verify.json()["state"], "succeeded", "{}", verify.stdout);
    for (i, expected) in points.iter().enumerate() {
        let target = host().images.join(format!("cz-target-{i}"));
        let t = target.display().to_string();
        let until = format!("virtnbdbackup.{i}");
        let r = vmsnapctl(&[
            "restore", &g.name, "--output", &root, "--target", &t, "--until", &until, "--json",
        ])
        .expect_code(0);
        assert_eq!(r.json()["state"], "succeeded");
        assert_identical(&target.join("vda.qcow2"), expected, &until);
    }

    // Without --compress, the compressed chain is not continued: a new chain says why, and
    // the compressed one is untouched.
    let plain = result(&backup(&g, &root, &[]).expect_code(0));
    assert_eq!(plain["level"], "full", "{plain}");
    assert_ne!(plain["folder"].as_str().unwrap(), folder);
    assert!(
        plain["newChainReason"]
            .as_str()
            .unwrap()
            .contains("the chain is compressed and this backup is not"),
        "{plain}"
    );
    let listed = chains(&g, &root);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["compressed"], true);
    assert_eq!(listed[0]["points"].as_array().unwrap().len(), 2);
    assert_eq!(listed[1]["compressed"], false);
    g.destroy();
}
