//! Throwaway TCG guests (`<domain type='qemu'>`, no guest OS) on the machine's libvirtd.
//!
//! Every guest is named with the run's prefix so that `tests/run` can remove exactly what this
//! run created, and nothing else on the shared libvirtd.

use std::path::{Path, PathBuf};

use crate::{host, tool};

const URI: &str = "qemu:///system";

/// A disk of a test guest.
#[derive(Debug, Clone)]
pub enum Disk {
    /// A qcow2 v3 image (persistent bitmaps possible), `size_mib` large.
    Qcow2 {
        target: &'static str,
        file: &'static str,
        size_mib: u32,
    },
    /// A raw image: never eligible for incremental backups.
    Raw {
        target: &'static str,
        file: &'static str,
        size_mib: u32,
    },
    /// A cdrom drive with no medium.
    EmptyCdrom { target: &'static str },
}

/// A defined test domain.
#[derive(Debug)]
pub struct Guest {
    pub name: String,
    pub disks: Vec<(String, PathBuf, bool)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

pub fn virsh(args: &[&str]) -> String {
    let mut all = vec!["-c", URI];
    all.extend_from_slice(args);
    tool("virsh", &all)
}

impl Guest {
    /// A guest with one empty qcow2 disk `vda` of `size_mib` MiB.
    pub fn qcow2(suffix: &str, size_mib: u32) -> Guest {
        Guest::define(
            suffix,
            &[Disk::Qcow2 {
                target: "vda",
                file: "vda.qcow2",
                size_mib,
            }],
        )
    }

    /// Defines (does not start) `<prefix><suffix>` with the given disks.
    pub fn define(suffix: &str, disks: &[Disk]) -> Guest {
        let name = format!("{}{suffix}", host().prefix);
        let dir = host().images.join(format!("guest-{}", sanitize(suffix)));
        std::fs::create_dir_all(&dir).expect("cannot create the guest's image directory");
        let mut devices = String::new();
        let mut list = Vec::new();
        for disk in disks {
            match disk {
                Disk::Qcow2 {
                    target,
                    file,
                    size_mib,
                }
                | Disk::Raw {
                    target,
                    file,
                    size_mib,
                } => {
                    let qcow2 = matches!(disk, Disk::Qcow2 { .. });
                    let format = if qcow2 { "qcow2" } else { "raw" };
                    let path = dir.join(file);
                    let path_str = path.to_str().expect("utf-8 path");
                    tool(
                        "qemu-img",
                        &[
                            "create",
                            "-q",
                            "-f",
                            format,
                            path_str,
                            &format!("{size_mib}M"),
                        ],
                    );
                    devices.push_str(&format!(
                        "<disk type='file' device='disk'><driver name='qemu' type='{format}'/>\
                         <source file='{}'/><target dev='{target}' bus='virtio'/></disk>",
                        escape(path_str)
                    ));
                    list.push((target.to_string(), path, qcow2));
                }
                Disk::EmptyCdrom { target } => devices.push_str(&format!(
                    "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                     <target dev='{target}' bus='ide'/><readonly/></disk>"
                )),
            }
        }
        let xml = format!(
            "<domain type='qemu'><name>{}</name><memory unit='MiB'>48</memory>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os>\
             <devices>{devices}</devices></domain>",
            escape(&name)
        );
        let xml_path = dir.join("domain.xml");
        std::fs::write(&xml_path, xml).expect("cannot write the domain XML");
        virsh(&["define", "--file", xml_path.to_str().expect("utf-8 path")]);
        Guest { name, disks: list }
    }

    pub fn start(&self) {
        virsh(&["start", "--domain", &self.name]);
    }

    /// libvirt's checkpoints of the guest, parents first (a chain's order).
    pub fn checkpoints(&self) -> Vec<String> {
        virsh(&[
            "checkpoint-list",
            "--domain",
            &self.name,
            "--name",
            "--topological",
        ])
        .split_whitespace()
        .map(String::from)
        .collect()
    }

    /// Stops the guest the way a crash or `virsh destroy` does (QEMU still stores bitmaps).
    pub fn destroy(&self) {
        virsh(&["destroy", "--domain", &self.name]);
    }

    /// Kills the guest's QEMU with SIGKILL, as a crash would: unlike `destroy`, QEMU gets no
    /// chance to store its dirty bitmaps in the images. Returns once libvirt sees it shut off.
    pub fn crash(&self) {
        let pid_file = format!("/run/libvirt/qemu/{}.pid", self.name);
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{pid_file}: {e} (is the guest running?)"));
        let status = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "could not kill QEMU {pid}");
        let start = std::time::Instant::now();
        while virsh(&["domstate", "--domain", &self.name]).trim() != "shut off" {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "libvirt never saw QEMU die"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Creates a checkpoint with a bitmap on every qcow2 disk (the guest must be running).
    pub fn checkpoint(&self, checkpoint: &str) {
        let mut args = vec![
            "checkpoint-create-as".to_string(),
            "--domain".into(),
            self.name.clone(),
            "--name".into(),
            checkpoint.into(),
        ];
        for (target, _, qcow2) in &self.disks {
            args.push("--diskspec".into());
            args.push(format!(
                "{target},checkpoint={}",
                if *qcow2 { "bitmap" } else { "no" }
            ));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        virsh(&refs);
    }

    /// Writes `len_mib` MiB of `pattern` at `offset_mib` into a qcow2 disk of a shut-off guest.
    /// The image's persistent bitmaps record the write, as they would a guest's.
    pub fn write(&self, target: &str, pattern: u8, offset_mib: u32, len_mib: u32) {
        let path = self.image(target);
        tool(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                &format!("write -P {pattern:#04x} {offset_mib}M {len_mib}M"),
                path.to_str().expect("utf-8 path"),
            ],
        );
    }

    /// Writes the whole of `file` into the disk at `offset_mib` (with QEMU not running):
    /// data of the test's choosing, such as bytes no compressor can shrink.
    pub fn write_file(&self, target: &str, file: &std::path::Path, offset_mib: u32) {
        let len = std::fs::metadata(file).expect("the file to write").len();
        let path = self.image(target);
        tool(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                &format!(
                    "write -s {} {offset_mib}M {len}",
                    file.to_str().expect("utf-8 path")
                ),
                path.to_str().expect("utf-8 path"),
            ],
        );
    }

    /// Removes a bitmap from the running QEMU, leaving libvirt's checkpoint behind: the state
    /// after an unclean stop lost it.
    pub fn remove_live_bitmap(&self, target: &str, bitmap: &str) {
        let path = self.image(target).to_str().expect("utf-8 path").to_string();
        let nodes: serde_json::Value = serde_json::from_str(&virsh(&[
            "qemu-monitor-command",
            "--domain",
            &self.name,
            "--cmd",
            r#"{"execute":"query-named-block-nodes","arguments":{"flat":true}}"#,
        ]))
        .expect("QEMU's answer is JSON");
        let node = nodes["return"]
            .as_array()
            .expect("a list of nodes")
            .iter()
            .find(|n| n["drv"] == "qcow2" && n["file"] == path.as_str())
            .and_then(|n| n["node-name"].as_str())
            .expect("the qcow2 node of the disk")
            .to_string();
        let cmd = serde_json::json!({
            "execute": "block-dirty-bitmap-remove",
            "arguments": {"node": node, "name": bitmap},
        })
        .to_string();
        virsh(&[
            "qemu-monitor-command",
            "--domain",
            &self.name,
            "--cmd",
            &cmd,
        ]);
    }

    /// Adds a persistent bitmap to a shut-off guest's image, without a checkpoint.
    pub fn add_image_bitmap(&self, target: &str, bitmap: &str) {
        let path = self.image(target);
        tool(
            "qemu-img",
            &[
                "bitmap",
                "--add",
                path.to_str().expect("utf-8 path"),
                bitmap,
            ],
        );
    }

    /// A file-name-safe form of the guest's name.
    pub fn disks_dir_name(&self) -> String {
        sanitize(&self.name)
    }

    pub fn image(&self, target: &str) -> &Path {
        self.disks
            .iter()
            .find(|(t, _, _)| t == target)
            .map(|(_, p, _)| p.as_path())
            .unwrap_or_else(|| panic!("{} has no disk {target}", self.name))
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
