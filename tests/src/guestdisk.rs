//! Guest disks with real file systems, built and changed the way a guest would see it.
//!
//! A disk is laid out with sfdisk (GPT or MBR), its file systems made with the real mkfs
//! tools from directories the test fills, and written into the guest's qcow2. Changes between
//! backups go through QEMU's block layer, so the image's dirty bitmaps record them as they
//! would a running guest's writes: qemu-storage-daemon exports the qcow2 as a writable FUSE
//! file and fuse2fs mounts the ext4 partition in it read-write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tool;

const MIB: u64 = 1024 * 1024;

/// A file system of a partition.
pub enum Fs<'a> {
    /// ext4 without a journal, filled from a directory (`mkfs.ext4 -d`: modes, owners, links,
    /// device nodes kept).
    Ext4 { label: &'a str, from: &'a Path },
    /// FAT (16 at these sizes) with these files (name in the root, contents).
    Vfat {
        label: &'a str,
        files: &'a [(&'a str, &'a [u8])],
    },
    /// XFS, empty (a file system the service names and does not read).
    Xfs,
}

/// A partition: its size and file system.
pub struct Part<'a> {
    pub size_mib: u64,
    pub fs: Fs<'a>,
}

/// Writes a partitioned disk (`table` is `gpt` or `dos`) into `image` (an existing qcow2,
/// replaced) and returns each partition's byte offset.
pub fn build(work: &Path, image: &Path, table: &str, parts: &[Part<'_>]) -> Vec<u64> {
    std::fs::create_dir_all(work).unwrap();
    let total: u64 = 2 + parts.iter().map(|p| p.size_mib).sum::<u64>();
    let raw = work.join("disk.raw");
    let _ = std::fs::remove_file(&raw);
    tool(
        "truncate",
        &["-s", &format!("{total}M"), raw.to_str().unwrap()],
    );
    let kind = if table == "gpt" { "L" } else { "83" };
    let script: String = std::iter::once(format!("label: {table}\n"))
        .chain(parts.iter().map(|p| format!(",{}M,{kind}\n", p.size_mib)))
        .collect();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", raw.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk package) runs");
    std::io::Write::write_all(sfdisk.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    let mut offsets = Vec::new();
    let mut start = MIB;
    for (i, part) in parts.iter().enumerate() {
        let img = work.join(format!("part{i}.img"));
        let _ = std::fs::remove_file(&img);
        let size = format!("{}M", part.size_mib);
        tool("truncate", &["-s", &size, img.to_str().unwrap()]);
        let img_s = img.to_str().unwrap();
        match &part.fs {
            Fs::Ext4 { label, from } => {
                tool(
                    "mkfs.ext4",
                    // Without a journal: fuse2fs (Debian 13's) does not write to a journaled
                    // ext4, and the tests change these file systems through it.
                    &[
                        "-q",
                        "-O",
                        "^has_journal",
                        "-L",
                        label,
                        "-d",
                        from.to_str().unwrap(),
                        img_s,
                    ],
                );
            }
            Fs::Vfat { label, files } => {
                tool("mkfs.vfat", &["-n", label, img_s]);
                for (name, data) in *files {
                    let src = work.join(format!("fat-{name}"));
                    std::fs::write(&src, data).unwrap();
                    let to = format!("::/{name}");
                    tool("mcopy", &["-i", img_s, src.to_str().unwrap(), &to]);
                }
            }
            Fs::Xfs => {
                tool("mkfs.xfs", &["-q", "-f", "-L", "data", img_s]);
            }
        }
        tool(
            "dd",
            &[
                &format!("if={img_s}"),
                &format!("of={}", raw.to_str().unwrap()),
                "bs=1M",
                &format!("seek={}", start / MIB),
                "conv=notrunc,sparse",
                "status=none",
            ],
        );
        std::fs::remove_file(&img).unwrap();
        offsets.push(start);
        start += part.size_mib * MIB;
    }
    let _ = std::fs::remove_file(image);
    tool(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&raw).unwrap();
    offsets
}

/// An ext4 partition of a shut-off guest's qcow2, mounted read-write through QEMU.
pub struct Mounted {
    qsd: Child,
    fuse2fs: Child,
    export: PathBuf,
    pub root: PathBuf,
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(p))
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not happen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Mounted {
    pub fn new(work: &Path, image: &Path, offset: u64) -> Mounted {
        Mounted::with(work, image, offset, true)
    }

    /// Mounted read-only: what the guest's file system holds now, read by fuse2fs (another
    /// implementation than the one under test).
    pub fn read_only(work: &Path, image: &Path, offset: u64) -> Mounted {
        Mounted::with(work, image, offset, false)
    }

    fn with(work: &Path, image: &Path, offset: u64, writable: bool) -> Mounted {
        let (export_mode, mount_mode, read_only) = if writable {
            ("on", "rw", "off")
        } else {
            ("off", "ro", "on")
        };
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: qemu-storage-daemon's FUSE export and fuse2fs need it (a \
             system container gets it from tests/containers/lib.sh's --bind=/dev/fuse)"
        );
        std::fs::create_dir_all(work).unwrap();
        let export = work.join("export.raw");
        let root = work.join("mnt");
        std::fs::write(&export, b"").unwrap();
        std::fs::create_dir_all(&root).unwrap();
        let qsd = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=file0,filename={},read-only={read_only}",
                image.display()
            ))
            .arg("--blockdev")
            .arg(format!(
                "driver=qcow2,node-name=disk0,file=file0,read-only={read_only}"
            ))
            .arg("--export")
            .arg(format!(
                "type=fuse,id=exp0,node-name=disk0,mountpoint={},writable={export_mode}",
                export.display()
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-storage-daemon runs");
        wait_for("the FUSE export", || mounted(&export));
        let fuse2fs = Command::new("fuse2fs")
            .arg(&export)
            .arg(&root)
            .args(["-f", "-o"])
            .arg(format!("{mount_mode},offset={offset}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fuse2fs runs");
        wait_for("the fuse2fs mount", || mounted(&root));
        Mounted {
            qsd,
            fuse2fs,
            export,
            root,
        }
    }

    /// Unmounts, lets fuse2fs write everything back, and stops QEMU (which stores the
    /// bitmaps in the image).
    pub fn finish(mut self) {
        tool("umount", &[self.root.to_str().unwrap()]);
        self.fuse2fs.wait().unwrap();
        // SIGTERM: QEMU closes the image cleanly, persistent bitmaps included.
        tool("kill", &["-TERM", &self.qsd.id().to_string()]);
        self.qsd.wait().unwrap();
        if mounted(&self.export) {
            tool("umount", &[self.export.to_str().unwrap()]);
        }
    }
}

/// A guest whose disk has one GPT partition of `size_mib` with ext4 filled from `tree`.
pub fn ext4_guest(suffix: &str, tree: &Path, size_mib: u64) -> crate::guest::Guest {
    let g = crate::guest::Guest::qcow2(suffix, 16);
    let work = crate::host().images.join(format!("{}-build", g.name));
    build(
        &work,
        g.image("vda"),
        "gpt",
        &[Part {
            size_mib,
            fs: Fs::Ext4 {
                label: "data",
                from: tree,
            },
        }],
    );
    g
}
