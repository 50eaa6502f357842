//! What is on a volume, from its magic numbers (the way blkid recognises file systems).
//!
//! Recognising more than the helper reads is the point: a user told "xfs: not supported" or
//! "LUKS: encrypted" knows what to do next; one told "unknown" does not.

use crate::image::Window;

/// What a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub filesystem: &'static str,
    pub label: String,
    pub kind: Support,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Readable,
    Encrypted,
    Unsupported,
}

fn at(head: &[u8], offset: usize, len: usize) -> &[u8] {
    head.get(offset..offset + len).unwrap_or(&[])
}

fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

fn le32(b: &[u8]) -> u32 {
    b.try_into().map(u32::from_le_bytes).unwrap_or(0)
}

/// How much of a volume's start [`probe`] looks at.
pub const HEAD: usize = 0x10100;

/// Reads a volume's first bytes (shorter volumes: what there is) and recognises them.
pub fn probe_window(window: &Window, size: u64) -> std::io::Result<Probed> {
    let mut head = vec![0u8; (size.min(HEAD as u64)) as usize];
    window.read_exact_at(0, &mut head)?;
    Ok(probe(&head))
}

/// Recognises the file system (or container) whose first bytes are `head`.
pub fn probe(head: &[u8]) -> Probed {
    use Support::*;
    let found = |filesystem, label: String, kind| Probed {
        filesystem,
        label,
        kind,
    };
    if at(head, 0, 6) == b"LUKS\xba\xbe" {
        return found("luks", text(at(head, 24, 48)), Encrypted);
    }
    if at(head, 3, 8) == b"-FVE-FS-" {
        return found("bitlocker", String::new(), Encrypted);
    }
    if at(head, 1080, 2) == [0x53, 0xef] {
        let sb = 1024;
        let compat = le32(at(head, sb + 92, 4));
        let incompat = le32(at(head, sb + 96, 4));
        // extents, 64bit, flex_bg: ext4; a journal without them: ext3.
        let name = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return found(name, text(at(head, sb + 120, 16)), Readable);
    }
    if at(head, 3, 8) == b"NTFS    " {
        return found("ntfs", String::new(), Unsupported);
    }
    if at(head, 3, 8) == b"EXFAT   " {
        return found("exfat", String::new(), Unsupported);
    }
    if at(head, 510, 2) == [0x55, 0xaa] {
        if at(head, 82, 5) == b"FAT32" {
            return found("vfat", text(at(head, 71, 11)), Readable);
        }
        if at(head, 54, 5) == b"FAT12" || at(head, 54, 5) == b"FAT16" {
            return found("vfat", text(at(head, 43, 11)), Readable);
        }
    }
    if at(head, 0, 4) == b"XFSB" {
        return found("xfs", text(at(head, 108, 12)), Unsupported);
    }
    if at(head, 0x10040, 8) == b"_BHRfS_M" {
        return found("btrfs", text(at(head, 0x1012b, 256)), Unsupported);
    }
    if at(head, 512, 8) == b"LABELONE" && at(head, 512 + 24, 4) == b"LVM2" {
        return found("lvm", String::new(), Unsupported);
    }
    if matches!(at(head, 4086, 10), b"SWAPSPACE2" | b"SWAP-SPACE") {
        return found("swap", text(at(head, 1024 + 28, 16)), Unsupported);
    }
    if at(head, 0x8001, 5) == b"CD001" {
        return found("iso9660", String::new(), Unsupported);
    }
    if at(head, 0, 4) == b"hsqs" {
        return found("squashfs", String::new(), Unsupported);
    }
    found("unknown", String::new(), Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut head = vec![0u8; HEAD];
        for (offset, bytes) in parts {
            head[*offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        head
    }

    #[test]
    fn names_what_it_finds() {
        let ext4 = with(&[(1080, &[0x53, 0xef]), (1024 + 96, &[0x40]), (1144, b"root")]);
        assert_eq!(
            probe(&ext4),
            Probed {
                filesystem: "ext4",
                label: "root".into(),
                kind: Support::Readable
            }
        );
        let ext3 = with(&[(1080, &[0x53, 0xef]), (1024 + 92, &[0x4])]);
        assert_eq!(probe(&ext3).filesystem, "ext3");
        let fat = with(&[
            (510, &[0x55, 0xaa]),
            (82, b"FAT32   "),
            (71, b"EFI        "),
        ]);
        assert_eq!(
            (probe(&fat).filesystem, probe(&fat).label.as_str()),
            ("vfat", "EFI")
        );
        let xfs = with(&[(0, b"XFSB")]);
        assert_eq!(probe(&xfs).filesystem, "xfs");
        assert_eq!(probe(&xfs).kind, Support::Unsupported);
        let luks = with(&[(0, b"LUKS\xba\xbe")]);
        assert_eq!(probe(&luks).kind, Support::Encrypted);
        assert_eq!(probe(&with(&[])).filesystem, "unknown");
        // Short input (a tiny volume) is not a panic.
        assert_eq!(probe(&[0u8; 10]).filesystem, "unknown");
    }
}
