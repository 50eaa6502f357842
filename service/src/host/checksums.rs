//! VMSnap's own checksums of backup data files (`<chain>/vmsnap.sha256`, sha256sum format).
//!
//! virtnbdbackup 1.9 (Debian 12) writes no checksums at all, and 2.x's adler32 is rewritten
//! together with the file it describes. The service therefore records a SHA-256 of every data
//! file right after the backup that wrote it succeeded; Verify recomputes them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Error, Result};

pub const FILE: &str = "vmsnap.sha256";

/// Recorded checksums of a chain folder: file name → hex digest.
pub fn read(folder: &Path) -> Result<BTreeMap<String, String>> {
    let path = folder.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(Error::Io { path, source }),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect())
}

/// SHA-256 of a file, as lowercase hex.
pub fn digest(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Records the checksum of every `*.data` file in `folder` that has none yet.
pub fn record_new(folder: &Path) -> Result<Vec<String>> {
    let known = read(folder)?;
    let io = |source| Error::Io {
        path: folder.to_path_buf(),
        source,
    };
    let mut added = Vec::new();
    let mut lines = String::new();
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with(".data") && !known.contains_key(n))
        .collect();
    names.sort();
    for name in names {
        let sum = digest(&folder.join(&name))?;
        lines.push_str(&format!("{sum}  {name}\n"));
        added.push(name);
    }
    if !lines.is_empty() {
        use std::io::Write;
        let path = folder.join(FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io { path, source })?;
        f.write_all(lines.as_bytes()).map_err(io)?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_recorded_once_and_corruption_shows() {
        let dir = std::env::temp_dir().join(format!("vmsnap-sums-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vda.full.data"), b"abc").unwrap();
        std::fs::write(dir.join("vm.cpt"), b"[]").unwrap();
        assert_eq!(record_new(&dir).unwrap(), ["vda.full.data"]);
        std::fs::write(dir.join("vda.inc.virtnbdbackup.1.data"), b"def").unwrap();
        assert_eq!(record_new(&dir).unwrap(), ["vda.inc.virtnbdbackup.1.data"]);
        let sums = read(&dir).unwrap();
        assert_eq!(
            sums["vda.full.data"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(dir.join("vda.full.data"), b"abd").unwrap();
        assert_ne!(
            digest(&dir.join("vda.full.data")).unwrap(),
            sums["vda.full.data"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
