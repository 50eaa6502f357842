//! Every point of a real chain, read in place through the chain index (`vmsnap_guestfs::point`):
//! byte for byte what the disk held when the point was taken, and what virtnbdrestore rebuilds.
//! Plain and compressed chains of a guest with two disks, an extent larger than the NBD
//! server's largest request (several lz4 frames), an incremental with nothing new on one disk.
//! Every point of both disks is also read through the service's NBD export, with qemu-img.
//! Runs on the host (virtnbdbackup 1.9) and in the Debian 13 container (2.x).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmsnap_guestfs::point::Point;
use vmsnap_integration::chain::{assert_restores_to, backup, result, root, snapshot};
use vmsnap_integration::guest::{Disk, Guest};
use vmsnap_integration::{host, noise, run, Exported};

/// The raw bytes of a qcow2 copy, as a file beside it.
fn raw_of(image: &Path) -> PathBuf {
    let raw = image.with_extension("raw");
    let convert = run(
        std::process::Command::new("qemu-img").args([
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            image.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]),
        Duration::from_secs(120),
    );
    assert_eq!(convert.code, 0, "qemu-img convert: {}", convert.stderr);
    raw
}

/// Opens the point the chain's `files` end at and compares all of it with `expected` (raw),
/// in 1 MiB reads and once more across a piece boundary at an odd offset.
fn assert_reads_as(files: &[PathBuf], expected: &Path, what: &str) {
    let opened = files
        .iter()
        .map(|f| {
            let file = File::open(f).unwrap();
            let size = file.metadata().unwrap().len();
            (file, size)
        })
        .collect();
    let point = Point::open(opened).unwrap_or_else(|e| panic!("{what}: {e}"));
    let expected = std::fs::read(expected).unwrap();
    assert_eq!(point.size(), expected.len() as u64, "{what}: size");
    let mut buf = vec![0u8; 1 << 20];
    for (n, want) in expected.chunks(buf.len()).enumerate() {
        let got = &mut buf[..want.len()];
        point.read_exact_at(got, (n << 20) as u64).unwrap();
        assert!(
            got == want,
            "{what}: MiB {n} differs from the disk at that point"
        );
    }
    let odd = (8 << 20) - 4093;
    let mut across = vec![0u8; 12345];
    point.read_exact_at(&mut across, odd).unwrap();
    assert!(
        across == expected[odd as usize..odd as usize + 12345],
        "{what}: across pieces"
    );
}

fn chain_reads_in_place(compress: bool) {
    let suffix = if compress { "ipz" } else { "ip" };
    let g = Guest::define(
        suffix,
        &[
            Disk::Qcow2 {
                target: "vda",
                file: "vda.qcow2",
                size_mib: 64,
            },
            Disk::Qcow2 {
                target: "vdb",
                file: "vdb.qcow2",
                size_mib: 16,
            },
        ],
    );
    let root = root(suffix);
    let extra: &[&str] = if compress { &["--compress"] } else { &[] };
    let random = host().images.join(format!("{suffix}-random"));
    // The points: what each writes before its backup (disk, pattern or noise, MiB, length).
    let mut points: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut folder = String::new();
    for step in 0..3 {
        match step {
            0 => {
                // 40 MiB of noise: one extent past the NBD server's largest request.
                std::fs::write(&random, noise(40 << 20, 1)).unwrap();
                g.write_file("vda", &random, 0);
                g.write("vda", 0x41, 48, 4);
                g.write("vdb", 0x51, 0, 2);
            }
            1 => {
                g.write("vda", 0x42, 8, 2);
                std::fs::write(&random, noise(1 << 20, 2)).unwrap();
                g.write_file("vda", &random, 50);
                g.write("vdb", 0x52, 8, 4);
            }
            _ => g.write("vda", 0x43, 60, 2), // vdb: nothing new
        }
        points.push((
            snapshot(&g, "vda", &format!("{suffix}-{step}")),
            snapshot(&g, "vdb", &format!("{suffix}-{step}")),
        ));
        g.start();
        let done = result(&backup(&g, &root, extra).expect_code(0));
        assert_eq!(
            done["level"],
            if step == 0 { "full" } else { "inc" },
            "{done}"
        );
        folder = done["folder"].as_str().unwrap().to_string();
        g.destroy();
    }
    let dir = Path::new(&folder);
    for (disk, pick) in [("vda", 0), ("vdb", 1)] {
        let mut files = vec![dir.join(format!("{disk}.full.data"))];
        for (n, point) in points.iter().enumerate() {
            if n > 0 {
                files.push(dir.join(format!("{disk}.inc.virtnbdbackup.{n}.data")));
            }
            let expected = if pick == 0 { &point.0 } else { &point.1 };
            let what = format!("{disk} at virtnbdbackup.{n} (compressed: {compress})");
            assert_reads_as(&files, &raw_of(expected), &what);
        }
    }
    // The service's NBD export of every point of both disks reads as the disk did, for qemu-img.
    let name = g.name.clone();
    for (n, (vda, vdb)) in points.iter().enumerate() {
        for (disk, expected) in [("vda", vda), ("vdb", vdb)] {
            let point = format!("virtnbdbackup.{n}");
            let export = Exported::start(&[
                "files", &name, "--output", &root, "--point", &point, "--disk", disk, "export",
            ]);
            let compare = run(
                std::process::Command::new("qemu-img").args([
                    "compare",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    expected.to_str().unwrap(),
                    &export.uri,
                ]),
                Duration::from_secs(120),
            );
            assert_eq!(
                compare.code, 0,
                "{disk} at {point} over NBD (compressed: {compress}): {}{}",
                compare.stdout, compare.stderr
            );
            let socket = PathBuf::from(export.socket());
            drop(export);
            // The export ends with its session: its socket and directory go.
            let gone = std::time::Instant::now();
            while socket.parent().unwrap().exists() {
                assert!(
                    gone.elapsed() < Duration::from_secs(30),
                    "{socket:?} stayed"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // virtnbdbackup's own reader agrees with the same copies.
    let (vda, vdb) = points.last().unwrap();
    assert_restores_to(&folder, None, "vda.qcow2", vda);
    assert_restores_to(&folder, None, "vdb.qcow2", vdb);
}

#[test]
fn every_point_of_a_plain_chain_reads_in_place_as_it_was_backed_up() {
    chain_reads_in_place(false);
}

#[test]
fn every_point_of_a_compressed_chain_reads_in_place_as_it_was_backed_up() {
    chain_reads_in_place(true);
}
