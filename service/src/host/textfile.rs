//! Replacing a file that another program reads at any moment (node_exporter's textfile
//! collector): written under a temporary name in the same directory, made readable, synced,
//! then renamed over the old one, so a reader sees the old file or the new one, never half.
//!
//! The directory may be writable by another account (the `prometheus` user owns Debian's
//! `/var/lib/prometheus/node-exporter`), so nothing here follows a link: the temporary file is
//! created exclusively, and its mode is set on the open handle, not by name.

use std::io::Write;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// Atomically replaces `dir/name` with `data`, readable by everyone (mode 0644, whatever the
/// service's umask).
pub fn replace(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let dir_fd = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let create = || {
        rustix::fs::openat(
            &dir_fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    // A temporary file a killed predecessor with our pid left: removed (unlink does not
    // follow a link), then created anew.
    let fd = match create() {
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(&dir_fd, tmp.as_str(), rustix::fs::AtFlags::empty())?;
            create()?
        }
        other => other?,
    };
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644))?;
    let mut file = std::fs::File::from(fd);
    let written = file.write_all(data).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dir_fd, tmp.as_str(), rustix::fs::AtFlags::empty());
        return Err(e);
    }
    rustix::fs::renameat(&dir_fd, tmp.as_str(), &dir_fd, name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_all() {
        let dir = std::env::temp_dir().join(format!("vmsnap-textfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        super::replace(&dir, "vmsnap.prom", b"a 1\n").unwrap();
        super::replace(&dir, "vmsnap.prom", b"a 2\n").unwrap();
        let file = dir.join("vmsnap.prom");
        assert_eq!(std::fs::read(&file).unwrap(), b"a 2\n");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
