//! `qemu-img info --force-share --output=json` of a disk image.
//!
//! `--force-share` lets the query read an image QEMU holds open; without it the original
//! VMSnap silently lost every disk of a running domain. For shut-off domains this is where the
//! persistent bitmaps are read from.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::command;
use super::{Error, Result};

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub bitmaps: Vec<ImageBitmap>,
}

/// A persistent bitmap stored in a qcow2 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBitmap {
    pub name: String,
    /// `in-use` set while the image is closed means QEMU did not store the bitmap cleanly
    /// (crash, kill -9): its contents cannot be trusted.
    pub in_use: bool,
}

#[derive(Deserialize)]
struct RawInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    actual_size: u64,
    #[serde(rename = "format-specific")]
    format_specific: Option<RawFormatSpecific>,
}

#[derive(Deserialize)]
struct RawFormatSpecific {
    data: Option<RawFormatData>,
}

#[derive(Deserialize)]
struct RawFormatData {
    #[serde(default)]
    bitmaps: Vec<RawBitmap>,
}

#[derive(Deserialize)]
struct RawBitmap {
    name: String,
    #[serde(default)]
    flags: Vec<String>,
}

/// Parses the JSON document `qemu-img info --output=json` prints.
pub fn parse_info(json: &str) -> Result<ImageInfo> {
    let raw: RawInfo = serde_json::from_str(json).map_err(|e| Error::parse("qemu-img info", e))?;
    let bitmaps = raw
        .format_specific
        .and_then(|f| f.data)
        .map(|d| d.bitmaps)
        .unwrap_or_default()
        .into_iter()
        .map(|b| ImageBitmap {
            in_use: b.flags.iter().any(|f| f == "in-use"),
            name: b.name,
        })
        .collect();
    Ok(ImageInfo {
        format: raw.format,
        virtual_size: raw.virtual_size,
        actual_size: raw.actual_size,
        bitmaps,
    })
}

/// The argument vectors of every `qemu-img` call the service makes, in one place. Each names
/// the image's format (`-f`, so that an image is never probed: a raw image that looks like
/// qcow2 with a backing file would make qemu-img open that file) and ends the options with
/// `--`, so an image name cannot be read as an option. Images are absolute paths, so qemu-img
/// never reads a `protocol:` prefix from them either.
pub mod argv {
    use std::ffi::OsString;
    use std::path::Path;

    fn format(f: &str) -> &str {
        // A format comes from libvirt's domain XML or is ours; anything odd is not probed
        // for but passed as a format qemu-img will reject.
        if !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric()) {
            f
        } else {
            "invalid-format"
        }
    }

    pub fn info(image: &Path, fmt: &str) -> Vec<OsString> {
        let mut v: Vec<OsString> = [
            "info",
            "--force-share",
            "--output=json",
            "-f",
            format(fmt),
            "--",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        v.push(image.into());
        v
    }

    pub fn bitmap_remove(image: &Path, fmt: &str, bitmap: &str) -> Vec<OsString> {
        let mut v: Vec<OsString> = ["bitmap", "--remove", "-f", format(fmt), "--"]
            .into_iter()
            .map(OsString::from)
            .collect();
        v.push(image.into());
        v.push(bitmap.into());
        v
    }

    pub fn check(image: &Path, fmt: &str) -> Vec<OsString> {
        let mut v: Vec<OsString> = ["check", "-f", format(fmt), "--"]
            .into_iter()
            .map(OsString::from)
            .collect();
        v.push(image.into());
        v
    }

    /// `compare` of `a` (format `a_fmt`) with `b`, sharing locks (`-U`) with a running user.
    pub fn compare(a: &Path, a_fmt: &str, b: &Path, b_fmt: &str) -> Vec<OsString> {
        let mut v: Vec<OsString> = [
            "compare",
            "-U",
            "-f",
            format(a_fmt),
            "-F",
            format(b_fmt),
            "--",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        v.push(a.into());
        v.push(b.into());
        v
    }
}

/// Runs `qemu-img info --force-share --output=json -f FMT -- <image>`.
pub async fn info(qemu_img: &Path, image: &str, fmt: &str, timeout: Duration) -> Result<ImageInfo> {
    let args = argv::info(Path::new(image), fmt);
    let out = command::run(qemu_img, &args, timeout).await?;
    if !out.success {
        return Err(Error::CommandFailed {
            program: "qemu-img".into(),
            message: out.error_line(),
        });
    }
    parse_info(&out.stdout)
}

/// Waits until no process holds `image` open for writing, at most `limit`: virtnbdrestore
/// returns while the qemu-nbd it wrote the image through may still be closing it (seen with
/// four 1 GiB rebuilds in `bench/run`: the image still locked, then, read past the lock, with
/// refcounts not yet written). `qemu-img info` without `-U` takes the image's lock, so it
/// succeeds only once the writer is gone. Returns whether it was released.
pub async fn wait_closed(qemu_img: &Path, image: &Path, fmt: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let args = {
        let mut v = argv::info(image, fmt);
        v.retain(|a| a != "--force-share");
        v
    };
    loop {
        match command::run(qemu_img, &args, Duration::from_secs(60)).await {
            Ok(out) if out.success => return true,
            Ok(out) if !is_lock_conflict(&out.stderr) => return true,
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// qemu's message when another process holds an image's lock.
fn is_lock_conflict(stderr: &str) -> bool {
    stderr.contains("another process using the image") || stderr.contains("Failed to get")
}

/// Removes a persistent bitmap from a closed image (`qemu-img bitmap --remove`).
pub async fn bitmap_remove(
    qemu_img: &Path,
    image: &str,
    fmt: &str,
    bitmap: &str,
    timeout: Duration,
) -> Result<()> {
    let args = argv::bitmap_remove(Path::new(image), fmt, bitmap);
    let out = command::run(qemu_img, &args, timeout).await?;
    if out.success {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            program: "qemu-img".into(),
            message: out.error_line(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_and_sizes_are_read() {
        let info = parse_info(
            r#"{"virtual-size": 67108864, "filename": "a disk.qcow2", "format": "qcow2",
                "actual-size": 200704, "format-specific": {"type": "qcow2", "data": {"compat": "1.1",
                "bitmaps": [{"flags": ["auto"], "name": "virtnbdbackup.1", "granularity": 65536},
                            {"flags": ["in-use", "auto"], "name": "virtnbdbackup.0", "granularity": 65536}]}},
                "dirty-flag": false}"#,
        )
        .unwrap();
        assert_eq!(info.virtual_size, 67108864);
        assert_eq!(info.actual_size, 200704);
        assert_eq!(info.format, "qcow2");
        assert_eq!(
            info.bitmaps,
            vec![
                ImageBitmap {
                    name: "virtnbdbackup.1".into(),
                    in_use: false
                },
                ImageBitmap {
                    name: "virtnbdbackup.0".into(),
                    in_use: true
                },
            ]
        );
    }

    #[test]
    fn every_call_names_the_format_and_ends_options_before_the_image() {
        let image = Path::new("/b/-rf x");
        for v in [
            argv::info(image, "qcow2"),
            argv::check(image, "qcow2"),
            argv::bitmap_remove(image, "qcow2", "-b"),
            argv::compare(image, "qcow2", Path::new("/d"), "raw"),
        ] {
            let f = v.iter().position(|a| a == "-f").unwrap();
            let end = v.iter().position(|a| a == "--").unwrap();
            assert!(f < end && v[end + 1] == *"/b/-rf x", "{v:?}");
        }
        assert_eq!(argv::info(image, "qcow2; x")[4], "invalid-format");
    }

    #[test]
    fn raw_images_have_no_bitmaps() {
        let info =
            parse_info(r#"{"virtual-size": 16777216, "format": "raw", "actual-size": 8192}"#)
                .unwrap();
        assert!(info.bitmaps.is_empty());
    }

    #[test]
    fn malformed_output_is_an_error() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"format": "qcow2"}"#,
            r#"{"format":1,"virtual-size":-1}"#,
        ] {
            assert!(parse_info(bad).is_err(), "{bad:?}");
        }
    }
}
