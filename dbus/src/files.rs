//! Records of a file-browsing session (`org.vmsnap.VMSnap1.Files`): the volumes of a disk at a
//! point and the entries of a directory in one of them. `a{sv}` dictionaries like every other
//! record (see [`crate::status`]).

use zvariant::{DeserializeDict, SerializeDict, Type};

/// A partition of the disk, or the whole disk when it has no partition table.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct Volume {
    /// The partition number (1-based); 0 for a disk without a partition table.
    pub number: u32,
    /// `gpt`, `mbr` or `none`.
    pub table: String,
    /// Byte offset on the disk and size in bytes.
    pub start: u64,
    pub size: u64,
    /// `ext2`, `ext3`, `ext4`, `vfat`; or what was recognised and cannot be read (`xfs`,
    /// `btrfs`, `ntfs`, `lvm`, `swap`, `luks`, …); or `unknown`.
    pub filesystem: String,
    pub label: String,
    /// Whether List and Extract work on it.
    pub readable: bool,
}

/// One entry of a directory inside the guest.
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "camelCase")]
pub struct FileEntry {
    /// The name in wire form: UTF-8 text in which a backslash is `\\` and each byte that is
    /// not valid UTF-8 or belongs to a control character is `\xNN`. Exact (paths given to
    /// List and Extract use the same form) and inert on a terminal.
    pub name: String,
    /// The name's exact bytes, as the guest stored them.
    pub name_bytes: Vec<u8>,
    /// `file`, `dir`, `symlink`, `block-device`, `char-device`, `fifo` or `socket`.
    pub kind: String,
    pub size: u64,
    /// Permission bits as the guest recorded them (setuid, setgid, sticky included).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target as recorded (wire form); never followed.
    pub target: Option<String>,
}
