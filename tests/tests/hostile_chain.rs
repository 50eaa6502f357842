//! Hostile data files: a chain whose data files were cut or forged (by whoever could write the
//! backup root) fails a file session with `CorruptBackup` (exit 22) and a verify with the
//! file named, while the service and another session's NBD export go on serving. The forms
//! come from a real chain: the finer cases (overlaps, lying lengths, lz4 bombs, trailers) are
//! the guestfs crate's unit tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmsnap_integration::chain::{backup, result, root};
use vmsnap_integration::guest::Guest;
use vmsnap_integration::{run, vmsnapctl, Exported};

/// The full's data file of the only chain below `root`.
fn full_of(root: &str, g: &Guest) -> PathBuf {
    let domain = Path::new(root).join(&g.name);
    let chain = std::fs::read_dir(&domain)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("vmsnap-backup-")
        })
        .expect("a chain folder")
        .path();
    chain.join("vda.full.data")
}

/// `bytes` with the 40-byte frame header at `at` given another start or length (hex).
fn forged(bytes: &[u8], at: usize, field: usize, value: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    // "kind start length\r\n": the start at 5..21, the length at 22..38.
    let from = at + if field == 0 { 5 } else { 22 };
    out[from..from + 16].copy_from_slice(value.as_bytes());
    out
}

#[test]
fn forged_data_files_fail_their_session_and_verify_and_nothing_else() {
    let g = Guest::qcow2("hc", 64);
    g.write("vda", 0x5a, 0, 4);
    g.start();
    let good = root("hc-good");
    let bad = root("hc-bad");
    result(&backup(&g, &good, &[]).expect_code(0));
    result(&backup(&g, &bad, &[]).expect_code(0));
    g.destroy();
    // Another caller's session stays open over NBD throughout.
    let export = Exported::start(&["files", &g.name, "--output", &good, "export"]);

    let full = full_of(&bad, &g);
    let original = std::fs::read(&full).unwrap();
    let first_data = original
        .windows(5)
        .position(|w| w == b"data ")
        .expect("a data frame");
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("cut in half", original[..original.len() / 2].to_vec()),
        (
            "a 4 GiB meta header",
            forged(&original, 0, 1, "0000000100000000"),
        ),
        (
            "an extent far outside the disk",
            forged(&original, first_data, 0, "7fffffffffff0000"),
        ),
        (
            "a payload length that runs past the file",
            forged(&original, first_data, 1, "00000000ffff0000"),
        ),
    ];
    for (what, bytes) in forms {
        std::fs::write(&full, &bytes).unwrap();
        let session = vmsnapctl(&["files", &g.name, "--output", &bad, "ls"]);
        assert_eq!(
            session.code, 22,
            "{what}: {}{}",
            session.stdout, session.stderr
        );
        assert!(
            session.stderr.contains("CorruptBackup") || session.stderr.contains("data file"),
            "{what}: {}",
            session.stderr
        );
        let verify = vmsnapctl(&["verify", &g.name, "--output", &bad, "--json"]).expect_code(10);
        let checks = verify.json()["domains"][0]["checks"].clone();
        assert!(
            checks[0]
                .as_str()
                .is_some_and(|c| c.contains("failed") && c.contains("vda.full.data")),
            "{what}: {checks}"
        );
    }
    // The service serves on, and so does the other session's export.
    vmsnapctl(&["status", &g.name]).expect_code(0);
    let info = run(
        std::process::Command::new("qemu-img").args(["info", "-f", "raw", &export.uri]),
        Duration::from_secs(60),
    );
    assert_eq!(info.code, 0, "{}{}", info.stdout, info.stderr);
    std::fs::write(&full, &original).unwrap();
    vmsnapctl(&["files", &g.name, "--output", &bad, "ls"]).expect_code(0);
}
