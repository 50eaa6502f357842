//! Free space where the service is about to write, asked before it writes.
//!
//! A guest decides how large what it hands over is (a sparse file of 16 TiB, a directory of
//! copies), so an extraction or a session's rebuild that would not fit is refused up front
//! instead of filling the host's file system halfway through.

use std::os::fd::AsFd;
use std::path::Path;

/// Bytes an unprivileged writer could still use on the file system holding `path` (root may
/// use the reserved blocks too; the service leaves them to the host).
pub fn available(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// [`available`] and the file system's size, of the one holding the open `fd`.
pub fn of_handle(fd: impl AsFd) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::fstatvfs(&fd).map_err(std::io::Error::from)?;
    Ok((
        st.blocks_available().saturating_mul(st.fragment_size()),
        st.blocks().saturating_mul(st.fragment_size()),
    ))
}

/// `bytes` for a message: `1.5 GiB`, `300 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(300 << 20), "300.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(16 << 40), "16.0 TiB");
    }

    #[test]
    fn the_temporary_directory_has_a_size() {
        let dir = std::env::temp_dir();
        let free = available(&dir).unwrap();
        let (free_again, size) = of_handle(std::fs::File::open(&dir).unwrap()).unwrap();
        assert!(size >= free && size >= free_again && size > 0);
    }
}
