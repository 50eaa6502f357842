//! The header of a virtnbdbackup data file: how it was written.
//!
//! Every `*.data` file starts with a `meta` frame — `meta <start> <length>\r\n`, sixteen hex
//! digits each, then `length` bytes of JSON — in both 1.9 and 2.x (stream format versions 1
//! and 2). Its `compressed` key (`false`, or the lz4 level) tells whether the file's data
//! frames are lz4-compressed. A chain is compressed or not from its full on, so the service
//! reads the full's header instead of keeping its own record of the option: a chain written
//! by hand with `virtnbdbackup --compress` is recognised the same way.

use std::io::Read;

use super::safe_fs::Dir;
use super::{Error, Result};

/// `meta ` + 16 hex digits + space + 16 hex digits + `\r\n`.
const FRAME_LEN: usize = 4 + 1 + 16 + 1 + 16 + 2;
/// virtnbdbackup's header is a few hundred bytes; anything past this is not one.
const MAX_META: usize = 64 * 1024;

/// What a data file's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// The data frames are lz4-compressed.
    pub compressed: bool,
    /// The bytes of data the file carries (before compression).
    pub data_size: u64,
    /// The disk's target name (`vda`).
    pub disk: String,
}

/// Reads the header of `name` in `dir` by handle, reading at most the frame and its JSON.
pub fn read(dir: &Dir, name: &str) -> Result<StreamMeta> {
    let path = dir.path().join(name);
    let (file, _) = dir.open_file(name)?;
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut frame = [0u8; FRAME_LEN];
    let mut reader = file.take((FRAME_LEN + MAX_META) as u64);
    reader.read_exact(&mut frame).map_err(io)?;
    let length = frame_length(&frame).ok_or_else(|| not_a_stream(&path))?;
    let mut json = vec![0u8; length];
    reader.read_exact(&mut json).map_err(io)?;
    parse(&json).ok_or_else(|| not_a_stream(&path))
}

fn not_a_stream(path: &std::path::Path) -> Error {
    Error::Rejected(format!(
        "{} does not start with virtnbdbackup's meta frame",
        path.display()
    ))
}

/// The JSON length of a `meta` frame, when the frame is one and the length is sane.
fn frame_length(frame: &[u8; FRAME_LEN]) -> Option<usize> {
    let text = std::str::from_utf8(frame).ok()?;
    let rest = text.strip_prefix("meta ")?.strip_suffix("\r\n")?;
    let (start, length) = rest.split_once(' ')?;
    if start.len() != 16 || length.len() != 16 {
        return None;
    }
    u64::from_str_radix(start, 16).ok()?;
    let length = usize::from_str_radix(length, 16).ok()?;
    (length > 0 && length <= MAX_META).then_some(length)
}

fn parse(json: &[u8]) -> Option<StreamMeta> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let compressed = match value.get("compressed")? {
        serde_json::Value::Bool(b) => *b,
        // The lz4 level (`--compress=N`); 0 is a level too.
        serde_json::Value::Number(_) => true,
        serde_json::Value::Null => false,
        _ => return None,
    };
    Some(StreamMeta {
        compressed,
        data_size: value.get("dataSize")?.as_u64()?,
        disk: value.get("diskName")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(json: &str) -> Vec<u8> {
        let mut out = format!("meta {:016x} {:016x}\r\n", 0, json.len()).into_bytes();
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(b"\r\ndata 0000000000000000 0000000000000004\r\nabcd\r\n");
        out
    }

    fn header_of(bytes: &[u8]) -> Result<StreamMeta> {
        // One directory per call: the tests run in parallel in one process.
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vmsnap-meta-{}-{call}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vda.full.data"), bytes).unwrap();
        let result = read(&Dir::open(&dir).unwrap(), "vda.full.data");
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn both_versions_headers_are_read() {
        // 1.9.15 and 2.28 write `false` or the level (an integer) under `compressed`.
        let plain = r#"{"virtualSize": 1048576, "dataSize": 65536, "diskName": "vda",
            "compressed": false, "compressionMethod": "lz4", "streamVersion": 2}"#;
        let lz4 = plain.replace("\"compressed\": false", "\"compressed\": 2");
        let got = header_of(&stream(plain)).unwrap();
        assert_eq!(
            got,
            StreamMeta {
                compressed: false,
                data_size: 65536,
                disk: "vda".into()
            }
        );
        assert!(header_of(&stream(&lz4)).unwrap().compressed);
    }

    #[test]
    fn anything_else_is_refused_without_reading_it_whole() {
        for bad in [
            b"data 0000000000000000 0000000000000004\r\nabcd".to_vec(),
            b"meta 0000000000000000 00000000ffffffff\r\n{}".to_vec(),
            stream("{\"compressed\": \"yes\", \"dataSize\": 1, \"diskName\": \"vda\"}"),
            stream("not json"),
            b"meta".to_vec(),
        ] {
            assert!(
                header_of(&bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
