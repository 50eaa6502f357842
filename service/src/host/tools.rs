//! Finding the host programs VMSnap drives, and which virtnbdbackup dialect is installed.
//!
//! Programs are resolved through the absolute entries of `PATH` only: a relative entry (or an
//! empty one, which means the working directory) would let whoever controls the current
//! directory plant a `qemu-img` that root then runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::command;
use super::{Error, Result};

/// A host program VMSnap needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    QemuImg,
    Virtnbdbackup,
    Virtnbdrestore,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::QemuImg => "qemu-img",
            Tool::Virtnbdbackup => "virtnbdbackup",
            Tool::Virtnbdrestore => "virtnbdrestore",
        }
    }
}

/// Resolves `tool` through the absolute entries of `search_path`.
pub fn find(tool: Tool, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let search_path = search_path?;
    let absolute: Vec<PathBuf> = std::env::split_paths(search_path)
        .filter(|p| p.is_absolute())
        .collect();
    let joined = std::env::join_paths(absolute).ok()?;
    which::which_in(tool.name(), Some(joined), "/").ok()
}

/// Resolves every tool in `needed`, or names all the missing ones at once, in the order given,
/// so the user fixes the host in one go instead of one error at a time.
pub fn require(needed: &[Tool]) -> Result<Vec<PathBuf>> {
    let path = std::env::var_os("PATH");
    let found: Vec<(Tool, Option<PathBuf>)> = needed
        .iter()
        .map(|&t| (t, find(t, path.as_deref())))
        .collect();
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| t.name().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingDependency(missing));
    }
    Ok(found.into_iter().filter_map(|(_, p)| p).collect())
}

/// A parsed `major.minor.patch` version of virtnbdbackup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ToolVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ToolVersion {
    /// Parses the first `N.N[.N]` found in `text` (`virtnbdbackup -V` prints just `1.9.15`).
    pub fn parse(text: &str) -> Option<Self> {
        let token = text
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .find(|t| t.contains('.') && t.starts_with(|c: char| c.is_ascii_digit()))?;
        let mut parts = token.split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(ToolVersion {
            major,
            minor,
            patch,
        })
    }

    /// `--start-domain` (`-S`) exists from 2.3; before it, `-S` means `--scratchdir DIR`.
    pub fn has_start_domain(self) -> bool {
        self >= ToolVersion::new(2, 3, 0)
    }

    /// 1.9 skips every `<disk type='block'>` ("Skipping direct attached block device"), qcow2
    /// or not; 2.x backs up qcow2 on block devices (LVM volumes, partitions, LUNs).
    pub fn backs_up_block_devices(self) -> bool {
        self >= ToolVersion::new(2, 0, 0)
    }

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ToolVersion {
            major,
            minor,
            patch,
        }
    }
}

impl std::fmt::Display for ToolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Remembers the virtnbdbackup version per binary, so the ~0.3 s Python start-up of
/// `virtnbdbackup -V` is paid once, and again only when the package is upgraded under us.
#[derive(Default)]
pub struct VersionCache {
    cached: Mutex<Option<(PathBuf, Option<SystemTime>, ToolVersion)>>,
}

impl VersionCache {
    pub async fn virtnbdbackup(&self) -> Result<ToolVersion> {
        let path = require(&[Tool::Virtnbdbackup])?.remove(0);
        let mtime = modified(&path);
        if let Some((p, m, v)) = crate::sync::lock(&self.cached).as_ref() {
            if *p == path && *m == mtime {
                return Ok(*v);
            }
        }
        let out = command::run(&path, &[OsString::from("-V")], Duration::from_secs(30)).await?;
        let text = format!("{}{}", out.stdout, out.stderr);
        let version = ToolVersion::parse(&text)
            .filter(|_| out.success)
            .ok_or_else(|| Error::parse("virtnbdbackup -V", text.trim()))?;
        *crate::sync::lock(&self.cached) = Some((path, mtime, version));
        Ok(version)
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_both_dialects() {
        assert_eq!(
            ToolVersion::parse("1.9.15\n"),
            Some(ToolVersion::new(1, 9, 15))
        );
        assert_eq!(
            ToolVersion::parse("virtnbdbackup 2.47"),
            Some(ToolVersion::new(2, 47, 0))
        );
        assert_eq!(ToolVersion::parse("garbage"), None);
        assert!(!ToolVersion::new(1, 9, 15).has_start_domain());
        assert!(ToolVersion::new(2, 3, 0).has_start_domain());
        assert!(ToolVersion::new(2, 28, 0).has_start_domain());
    }

    #[test]
    fn relative_path_entries_are_never_searched() {
        // A directory below the working directory, named relatively and absolutely.
        let relative = PathBuf::from(format!(".vmsnap-tools-test-{}", std::process::id()));
        std::fs::create_dir_all(&relative).unwrap();
        let fake = relative.join("qemu-img");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let absolute = std::fs::canonicalize(&relative).unwrap();
        let via_relative = find(Tool::QemuImg, Some(relative.as_os_str()));
        let via_absolute = find(Tool::QemuImg, Some(absolute.as_os_str()));
        std::fs::remove_dir_all(&relative).unwrap();
        assert_eq!(via_relative, None);
        assert_eq!(via_absolute, Some(absolute.join("qemu-img")));
    }
}
