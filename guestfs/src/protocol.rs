//! What vmsnapd and the helper say to each other over the helper's stdin and stdout.
//!
//! One JSON request per line in; one JSON [`Reply`] per line out. A `Read` is answered by a
//! `Reply::File` line and then the file's bytes in frames: a 4-byte big-endian length and that
//! many bytes, ended by an empty frame (all read) or by [`FRAME_FAILED`] followed by a
//! `Reply::Failed` line (the file system broke mid-file). Frames let the service bound every
//! read and stop a file that grows past what its header announced.
//!
//! Guest names are bytes, and JSON and D-Bus strings are UTF-8. So names and paths travel in
//! a *wire form* ([`encode`], [`decode`]): UTF-8 text in which a backslash is `\\`, and every
//! byte that is not part of valid UTF-8 or belongs to a control character is `\xNN`. It is
//! exact (every name has one form and comes back to the same bytes), always valid UTF-8, and
//! never acts on a terminal; a client that shows it shows what a user can type back.

use serde::{Deserialize, Serialize};

/// The longest frame the helper sends; the service refuses a longer one.
pub const MAX_FRAME: u32 = 1 << 20;
/// A frame length that means "failed; an error line follows".
pub const FRAME_FAILED: u32 = u32::MAX;
/// At most this many entries are listed for one directory (`truncated` says so).
pub const MAX_ENTRIES: usize = 100_000;
/// The longest reply line the service reads (a full listing fits).
pub const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// The partitions of the disk (or the whole disk when it has no partition table).
    Volumes,
    /// The entries of a directory.
    List { volume: u32, path: String },
    /// One entry, not following a symlink at its end.
    Stat { volume: u32, path: String },
    /// A regular file's contents, in frames.
    Read { volume: u32, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    Volumes(Vec<Volume>),
    Entries {
        entries: Vec<Entry>,
        truncated: bool,
    },
    Entry(Entry),
    File {
        size: u64,
    },
    /// The helper's first line in `browse` mode: the point opened through its index.
    Ready(Opened),
    /// The one line of `check` mode.
    Checked(ChainCheck),
    Failed(Failure),
}

/// A point opened in place: its size and how many pieces of extents its map holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Opened {
    pub size: u64,
    pub pieces: u64,
}

/// What `check` found in one disk's data files, in chain order: the first `good` files index
/// (every frame inside the disk, lengths and offsets consistent, each continuing the one
/// before it) and decode (every lz4 frame to the size its extent claims); `failure` says why
/// file `good` does not, when one does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainCheck {
    pub good: u32,
    pub failure: Option<String>,
    /// Extents in all the good files, and pieces in the newest good point's map.
    pub extents: u64,
    pub pieces: u64,
}

/// A partition or a whole-disk file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// The partition number (1-based), or 0 for a disk without a partition table.
    pub number: u32,
    /// `gpt`, `mbr` or `none`.
    pub table: String,
    /// Byte offset on the disk.
    pub start: u64,
    pub size: u64,
    /// The file system found there: `ext2`, `ext3`, `ext4`, `vfat`, or what was recognised
    /// and is not readable (`xfs`, `btrfs`, `ntfs`, `swap`, `luks`, `lvm`, …), or `unknown`.
    pub filesystem: String,
    pub label: String,
    /// Whether the helper can list and read it.
    pub readable: bool,
}

/// What an entry is. Only files and directories are ever extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::BlockDevice => "block-device",
            Kind::CharDevice => "char-device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The name as the guest wrote it, in wire form ([`encode`]).
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// Permission bits including setuid, setgid and sticky (as recorded, never applied).
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target, as recorded (in wire form); never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// No such volume, or no such entry in it.
    NotFound,
    NotADirectory,
    /// Not a regular file (a read of a directory, link or device).
    NotAFile,
    /// A symlink in the middle of a path: the helper does not follow it.
    SymlinkInPath,
    /// A file system it recognises and does not read (named in the message).
    Unsupported,
    /// An encrypted volume (LUKS, BitLocker).
    Encrypted,
    /// The file system's structures are damaged or hostile.
    Corrupt,
    /// The chain's data files are: a frame, an extent or a compressed frame is not what
    /// their streams say.
    CorruptBackup,
    /// The request itself is malformed.
    BadRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// The wire form of the guest bytes `name`.
pub fn encode(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    let hex = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            out.push_str(&format!("\\x{b:02x}"));
        }
    };
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => hex(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes()),
                c => out.push(c),
            }
        }
        hex(&mut out, chunk.invalid());
    }
    out
}

/// The guest bytes of the wire-form `name`; anything but `\\` and `\xNN` after a backslash
/// is refused.
pub fn decode(name: &str) -> Result<Vec<u8>, Failure> {
    let bad = || {
        Failure::new(
            FailureKind::BadRequest,
            format!("{name:?}: a backslash starts \\\\ or \\xNN (two hex digits) in a guest name"),
        )
    };
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let digits = bytes.get(i + 2..i + 4).ok_or_else(bad)?;
                    let digits = std::str::from_utf8(digits).map_err(|_| bad())?;
                    out.push(u8::from_str_radix(digits, 16).map_err(|_| bad())?);
                    i += 4;
                }
                _ => return Err(bad()),
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The components of a request path as guest bytes: [`components`], each decoded, none
/// holding a `/` or NUL or being `.` or `..` once decoded.
pub fn byte_components(path: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    for part in components(path)? {
        let bytes = decode(part)?;
        if bytes.contains(&b'/') || bytes.contains(&0) || bytes == b"." || bytes == b".." {
            return Err(Failure::new(
                FailureKind::BadRequest,
                format!("{path:?}: {part:?} is not a name"),
            ));
        }
        out.push(bytes);
    }
    Ok(out)
}

/// The path components of a request path: absolute, `/`-separated, no `.`/`..` (a guest
/// path means nothing relative to anything else).
pub fn components(path: &str) -> Result<Vec<&str>, Failure> {
    if !path.starts_with('/') {
        return Err(Failure::new(
            FailureKind::BadRequest,
            format!("{path:?}: a path inside the guest starts with /"),
        ));
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts
        .iter()
        .any(|c| *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(Failure::new(
            FailureKind::BadRequest,
            format!("{path:?}: . and .. are not allowed"),
        ));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_a_stable_wire_form() {
        let r: Request = serde_json::from_str(r#"{"op":"list","volume":2,"path":"/etc"}"#).unwrap();
        assert_eq!(
            r,
            Request::List {
                volume: 2,
                path: "/etc".into()
            }
        );
        let f = Reply::Failed(Failure::new(FailureKind::Unsupported, "xfs: not supported"));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"failed":{"kind":"unsupported","message":"xfs: not supported"}}"#
        );
    }

    #[test]
    fn the_wire_form_is_exact_and_inert() {
        let names: [&[u8]; 6] = [
            b"plain.txt",
            b"\xff\xfe-dir",
            b"esc\x1b]0;owned\x07",
            b"two\nlines",
            "caf\u{e9} \u{9b}".as_bytes(),
            b"back\\x41slash",
        ];
        for name in names {
            let wire = encode(name);
            assert!(!wire.chars().any(char::is_control), "{wire:?}");
            assert_eq!(decode(&wire).unwrap(), name, "{wire:?}");
        }
        assert_eq!(encode(b"\xff\xfe-dir"), "\\xff\\xfe-dir");
        assert_eq!(encode(b"two\nlines"), "two\\x0alines");
        assert_eq!(encode(b"a\\b"), "a\\\\b");
        assert_eq!(encode("café".as_bytes()), "café");
        for bad in ["a\\", "\\q", "\\x4", "\\xzz"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert_eq!(
            byte_components("/\\xff/x").unwrap(),
            [vec![0xff], b"x".to_vec()]
        );
        for bad in ["/a\\x2fb", "/\\x2e\\x2e", "/a\\x00"] {
            assert!(byte_components(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_absolute_and_never_climb() {
        assert_eq!(components("/a//b/").unwrap(), ["a", "b"]);
        assert!(components("/").unwrap().is_empty());
        for bad in ["a/b", "/a/../b", "/./a", ""] {
            assert!(components(bad).is_err(), "{bad}");
        }
    }
}
