//! `qemu-img info --force-share --output=json` of a disk image.
//!
//! `--force-share` lets the query read an image QEMU holds open; without it the original
//! VMSnap silently lost every disk of a running domain. For shut-off domains this is where the
//! persistent bitmaps are read from.

use std::ffi::OsString;
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

/// Runs `qemu-img info --force-share --output=json -- <image>`.
pub async fn info(qemu_img: &Path, image: &str, timeout: Duration) -> Result<ImageInfo> {
    let args: Vec<OsString> = ["info", "--force-share", "--output=json", image]
        .into_iter()
        .map(OsString::from)
        .collect();
    let out = command::run(qemu_img, &args, timeout).await?;
    if !out.success {
        return Err(Error::CommandFailed {
            program: "qemu-img".into(),
            message: out.error_line(),
        });
    }
    parse_info(&out.stdout)
}

/// Removes a persistent bitmap from a closed image (`qemu-img bitmap --remove`).
pub async fn bitmap_remove(
    qemu_img: &Path,
    image: &str,
    bitmap: &str,
    timeout: Duration,
) -> Result<()> {
    let args: Vec<OsString> = ["bitmap", "--remove", image, bitmap]
        .into_iter()
        .map(OsString::from)
        .collect();
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
