//! A readable file system on one volume: ext2/3/4 (ext4-view) or FAT (fatfs), both pure Rust
//! and both read-only here.
//!
//! Paths are walked one component at a time and a symlink is never passed through: what a
//! guest's link points to means something inside the guest, never on the host, and listing
//! "through" it would show the user a tree that is not where they think it is.

use std::io::Read;

use crate::image::Window;
use crate::protocol::{byte_components, encode, Entry, Failure, FailureKind, Kind, MAX_ENTRIES};

pub enum Tree {
    Ext(Box<ext4_view::Ext4>),
    Fat(Box<fatfs::FileSystem<Window>>),
}

fn corrupt(fs: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureKind::Corrupt, format!("{fs}: {e}"))
}

fn ext_failure(path: &str, e: ext4_view::Ext4Error) -> Failure {
    use ext4_view::Ext4Error as E;
    let kind = match &e {
        E::NotFound => FailureKind::NotFound,
        E::NotADirectory => FailureKind::NotADirectory,
        E::IsADirectory | E::IsASpecialFile => FailureKind::NotAFile,
        E::Encrypted => FailureKind::Encrypted,
        E::Incompatible(_) => FailureKind::Unsupported,
        E::MalformedPath | E::PathTooLong | E::NotAbsolute => FailureKind::BadRequest,
        _ => FailureKind::Corrupt,
    };
    Failure::new(kind, format!("{path}: {e}"))
}

fn ext_kind(t: ext4_view::FileType) -> Kind {
    if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_block_dev() {
        Kind::BlockDevice
    } else if t.is_char_dev() {
        Kind::CharDevice
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::File
    }
}

/// The guest path of `parts` (bytes, as ext4 stores names).
fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'/'];
    out.extend(parts.join(&b'/'));
    out
}

/// A guest path for messages, in wire form.
fn shown(path: &[u8]) -> String {
    encode(path)
}

/// A FAT name from request bytes (FAT names are Unicode; other bytes name nothing there).
fn fat_name(part: &[u8]) -> &str {
    std::str::from_utf8(part).unwrap_or("\u{fffd}")
}

impl Tree {
    /// Opens the file system `filesystem` (as probed) on `window`.
    pub fn open(filesystem: &str, window: Window) -> Result<Tree, Failure> {
        match filesystem {
            "ext2" | "ext3" | "ext4" => ext4_view::Ext4::load(Box::new(window))
                .map(|fs| Tree::Ext(Box::new(fs)))
                .map_err(|e| ext_failure(filesystem, e)),
            "vfat" => {
                let options = fatfs::FsOptions::new().update_accessed_date(false);
                fatfs::FileSystem::new(window, options)
                    .map(|fs| Tree::Fat(Box::new(fs)))
                    .map_err(|e| corrupt("vfat", e))
            }
            other => Err(Failure::new(
                FailureKind::Unsupported,
                format!("{other}: not supported"),
            )),
        }
    }

    /// The entry at `path`, not following a symlink at its end or anywhere before.
    pub fn stat(&self, path: &str) -> Result<Entry, Failure> {
        let parts = byte_components(path)?;
        match self {
            Tree::Ext(fs) => {
                walk_ext(fs, &parts)?;
                let p = join(&parts);
                let name = parts
                    .last()
                    .map(|n| encode(n))
                    .unwrap_or_else(|| "/".into());
                ext_entry(fs, &p, name)
            }
            Tree::Fat(fs) => {
                let Some((name, parent)) = parts.split_last() else {
                    return Ok(fat_root());
                };
                let dir = fat_dir(fs, parent)?;
                for e in dir.iter() {
                    let e = e.map_err(|e| corrupt("vfat", e))?;
                    if e.file_name().eq_ignore_ascii_case(fat_name(name)) {
                        return Ok(fat_entry(&e));
                    }
                }
                Err(Failure::new(
                    FailureKind::NotFound,
                    format!("{path}: not found"),
                ))
            }
        }
    }

    /// The entries of the directory `path` (at most [`MAX_ENTRIES`]; `true` when cut there).
    pub fn list(&self, path: &str) -> Result<(Vec<Entry>, bool), Failure> {
        let parts = byte_components(path)?;
        let mut entries = Vec::new();
        let mut truncated = false;
        match self {
            Tree::Ext(fs) => {
                walk_ext(fs, &parts)?;
                let p = join(&parts);
                if !fs
                    .symlink_metadata(p.as_slice())
                    .map_err(|e| ext_failure(&shown(&p), e))?
                    .is_dir()
                {
                    return Err(Failure::new(
                        FailureKind::NotADirectory,
                        format!("{}: not a directory", shown(&p)),
                    ));
                }
                let read = fs.read_dir(p.as_slice());
                for e in read.map_err(|e| ext_failure(&shown(&p), e))? {
                    let e = e.map_err(|e| ext_failure(&shown(&p), e))?;
                    // The name's bytes as stored: looked up again by those bytes, never by a
                    // lossy copy (a name that is not UTF-8 once hid its whole directory).
                    let stored = e.file_name();
                    let name: &[u8] = stored.as_ref();
                    if name == b"." || name == b".." {
                        continue;
                    }
                    if entries.len() == MAX_ENTRIES {
                        truncated = true;
                        break;
                    }
                    let mut child = p.clone();
                    if !parts.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name);
                    entries.push(ext_entry(fs, &child, encode(name))?);
                }
            }
            Tree::Fat(fs) => {
                for e in fat_dir(fs, &parts)?.iter() {
                    let e = e.map_err(|e| corrupt("vfat", e))?;
                    let name = e.file_name();
                    if name == "." || name == ".." {
                        continue;
                    }
                    if entries.len() == MAX_ENTRIES {
                        truncated = true;
                        break;
                    }
                    entries.push(fat_entry(&e));
                }
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((entries, truncated))
    }

    /// A reader of the regular file at `path`, and its size.
    pub fn open_file(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64), Failure> {
        let entry = self.stat(path)?;
        if entry.kind != Kind::File {
            return Err(Failure::new(
                FailureKind::NotAFile,
                format!("{path}: a {}, not a regular file", entry.kind.as_str()),
            ));
        }
        let parts = byte_components(path)?;
        match self {
            Tree::Ext(fs) => {
                let p = join(&parts);
                let file = fs
                    .open(p.as_slice())
                    .map_err(|e| ext_failure(&shown(&p), e))?;
                Ok((Box::new(file), entry.size))
            }
            Tree::Fat(fs) => {
                let (name, parent) = parts.split_last().expect("a file is not the root");
                let dir = fat_dir(fs, parent)?;
                let file = dir
                    .open_file(fat_name(name))
                    .map_err(|e| corrupt("vfat", e))?;
                Ok((Box::new(file), entry.size))
            }
        }
    }
}

/// Checks every directory on the way to `parts`' last component: it exists, is a directory,
/// and is not a symlink.
fn walk_ext(fs: &ext4_view::Ext4, parts: &[Vec<u8>]) -> Result<(), Failure> {
    for depth in 1..parts.len() {
        let bytes = join(&parts[..depth]);
        let p = shown(&bytes);
        let meta = fs
            .symlink_metadata(bytes.as_slice())
            .map_err(|e| ext_failure(&p, e))?;
        if meta.is_symlink() {
            return Err(Failure::new(
                FailureKind::SymlinkInPath,
                format!("{p} is a symlink; it is listed, never followed"),
            ));
        }
        if !meta.is_dir() {
            return Err(Failure::new(
                FailureKind::NotADirectory,
                format!("{p}: not a directory"),
            ));
        }
    }
    Ok(())
}

/// The entry at the guest path `path`, named `name` (wire form).
fn ext_entry(fs: &ext4_view::Ext4, path: &[u8], name: String) -> Result<Entry, Failure> {
    let meta = fs
        .symlink_metadata(path)
        .map_err(|e| ext_failure(&shown(path), e))?;
    let kind = ext_kind(meta.file_type());
    let target = if kind == Kind::Symlink {
        let link = fs
            .read_link(path)
            .map_err(|e| ext_failure(&shown(path), e))?;
        Some(encode(link.as_ref()))
    } else {
        None
    };
    Ok(Entry {
        name,
        kind,
        size: meta.len(),
        mode: u32::from(meta.mode()),
        mtime: meta.modified().seconds(),
        target,
    })
}

fn fat_dir<'a>(
    fs: &'a fatfs::FileSystem<Window>,
    parts: &[Vec<u8>],
) -> Result<fatfs::Dir<'a, Window>, Failure> {
    let mut dir = fs.root_dir();
    for (i, part) in parts.iter().enumerate() {
        let here = shown(&join(&parts[..=i]));
        let found = dir
            .iter()
            .filter_map(Result::ok)
            .find(|e| e.file_name().eq_ignore_ascii_case(fat_name(part)))
            .ok_or_else(|| Failure::new(FailureKind::NotFound, format!("{here}: not found")))?;
        if !found.is_dir() {
            return Err(Failure::new(
                FailureKind::NotADirectory,
                format!("{here}: not a directory"),
            ));
        }
        dir = found.to_dir();
    }
    Ok(dir)
}

fn fat_root() -> Entry {
    Entry {
        name: "/".into(),
        kind: Kind::Dir,
        size: 0,
        mode: 0o755,
        mtime: 0,
        target: None,
    }
}

/// FAT records no owner or mode: directories are 0755, files 0644 (0444 when read-only).
fn fat_entry(e: &fatfs::DirEntry<'_, Window>) -> Entry {
    let read_only = e.attributes().contains(fatfs::FileAttributes::READ_ONLY);
    let m = e.modified();
    let mtime = civil_to_epoch(
        i64::from(m.date.year),
        u32::from(m.date.month),
        u32::from(m.date.day),
    ) + i64::from(m.time.hour) * 3600
        + i64::from(m.time.min) * 60
        + i64::from(m.time.sec);
    Entry {
        name: encode(e.file_name().as_bytes()),
        kind: if e.is_dir() { Kind::Dir } else { Kind::File },
        size: if e.is_dir() { 0 } else { e.len() },
        mode: match (e.is_dir(), read_only) {
            (true, _) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        },
        // FAT times are local time of the guest; they are reported as if UTC.
        mtime,
        target: None,
    }
}

/// Days from 1970-01-01 to a civil date, in seconds (Howard Hinnant's algorithm).
fn civil_to_epoch(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates_count_from_the_epoch() {
        assert_eq!(super::civil_to_epoch(1970, 1, 1), 0);
        assert_eq!(super::civil_to_epoch(2000, 3, 1), 951_868_800);
    }
}
