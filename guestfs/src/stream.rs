//! virtnbdbackup's data files ("sparse streams"), indexed without trusting a byte of them.
//!
//! A data file is a sequence of 40-byte frame headers, `b"%4s %016x %016x\r\n"` (kind, start,
//! length), each followed by what its kind carries:
//!
//! - `meta` first: a JSON header of `length` bytes and `\r\n` (virtual size, data size,
//!   disk, checkpoint, compressed or not);
//! - `data start length`: the disk's bytes `[start, start + length)` and `\r\n`; in a
//!   compressed stream the payload is one lz4 frame, or — for an extent of at least the NBD
//!   server's largest request — several, whose sizes the trailer lists;
//! - `zero start length`: no payload (written by fulls and copies only);
//! - `stop 0 0`: the end. A compressed stream then has its trailer: a JSON list with one entry
//!   per data frame (the compressed size, or `{"total": [size, …]}`), `\r\n`, and a `comp 0
//!   size` frame giving the trailer's size.
//!
//! Both stream versions (1: never compressed; 2: virtnbdbackup 1.9 and 2.x) share this
//! layout. [`index`] walks a file by seeking past payloads, so indexing costs one header read
//! per extent, and checks everything it can without decompressing: frame syntax, extents
//! inside the disk and in order, every payload followed by its terminator, the data size the
//! header claims, the trailer's count and sizes, and the file's end. The result is bounded
//! ([`MAX_EXTENTS`]) whatever the file says.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::Deserialize;

/// Bytes of a frame header.
pub const FRAME_LEN: usize = 40;
const TERM: &[u8; 2] = b"\r\n";
/// The most extents one data file may hold. virtnbdbackup merges neighbouring extents of the
/// same kind; a 1 TiB disk of scattered 64 KiB writes is 16 Mi extents at worst, but real
/// points hold thousands. At 40 bytes an extent, this cap bounds one file's index to 160 MiB.
pub const MAX_EXTENTS: usize = 4 << 20;
/// The longest `meta` header and trailer read (virtnbdbackup's are a few hundred bytes; a
/// trailer holds one number per data frame).
const MAX_META: u64 = 64 << 10;
const MAX_TRAILER: u64 = 256 << 20;

/// Why a data file cannot be read as a point of a disk.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("at byte {at}: {what}")]
    Malformed { at: u64, what: String },
    #[error("more than {MAX_EXTENTS} extents")]
    TooManyExtents,
}

fn malformed(at: u64, what: impl Into<String>) -> StreamError {
    StreamError::Malformed {
        at,
        what: what.into(),
    }
}

/// What a frame header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Meta,
    Data,
    Zero,
    Stop,
    Comp,
}

/// One parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub start: u64,
    pub length: u64,
}

/// Parses one header: a known kind, a space, 16 lowercase hex digits, a space, 16 more and
/// `\r\n` — nothing looser than what virtnbdbackup writes.
pub fn parse_frame(bytes: &[u8; FRAME_LEN]) -> Option<Frame> {
    let kind = match &bytes[0..4] {
        b"meta" => Kind::Meta,
        b"data" => Kind::Data,
        b"zero" => Kind::Zero,
        b"stop" => Kind::Stop,
        b"comp" => Kind::Comp,
        _ => return None,
    };
    if bytes[4] != b' ' || bytes[21] != b' ' || &bytes[38..40] != TERM {
        return None;
    }
    Some(Frame {
        kind,
        start: hex16(&bytes[5..21])?,
        length: hex16(&bytes[22..38])?,
    })
}

fn hex16(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((n << 4) | u64::from(v))
    })
}

/// The `meta` header's keys that reading needs (others are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub virtual_size: u64,
    pub data_size: u64,
    pub disk_name: String,
    pub checkpoint_name: String,
    #[serde(default)]
    pub incremental: bool,
    /// virtnbdbackup writes its compression level here (`2`), or `false`.
    #[serde(default, deserialize_with = "compression")]
    pub compressed: bool,
    #[serde(default)]
    pub stream_version: u32,
    /// The checkpoint an incremental continues (`false` in a full's header).
    #[serde(default, deserialize_with = "name_or_false")]
    pub parent_checkpoint: Option<String>,
}

/// A checkpoint name, or `false`/`null` for none.
fn name_or_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(None),
        other => Err(D::Error::custom(format!("parentCheckpoint is {other}"))),
    }
}

/// `compressed` is `false`, `true` or a level (a number): compressed unless false or absent.
fn compression<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Null => Ok(false),
        serde_json::Value::Number(n) if n.as_u64().is_some() => Ok(true),
        other => Err(D::Error::custom(format!("compressed is {other}"))),
    }
}

/// Where an extent's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Zeros (a `zero` frame).
    Zero,
    /// Stored as they are, from this offset of the file.
    Plain { offset: u64 },
    /// lz4 frames from this offset of the file, of these compressed sizes, one after another.
    Lz4 { offset: u64, frames: Vec<u64> },
}

/// One extent of the disk as a data file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    pub source: Source,
}

/// A data file's header and extents, in disk order.
#[derive(Debug, Clone)]
pub struct StreamIndex {
    pub meta: Meta,
    pub extents: Vec<Extent>,
}

/// A compressed data frame's entry in the trailer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TrailerEntry {
    One(u64),
    Several(std::collections::BTreeMap<String, Vec<u64>>),
}

impl TrailerEntry {
    fn frames(self) -> Option<Vec<u64>> {
        match self {
            TrailerEntry::One(n) => Some(vec![n]),
            TrailerEntry::Several(map) if map.len() == 1 => {
                let (total, sizes) = map.into_iter().next()?;
                let sum = sizes.iter().try_fold(0u64, |a, b| a.checked_add(*b))?;
                (total.parse::<u64>().ok()? == sum && !sizes.is_empty()).then_some(sizes)
            }
            TrailerEntry::Several(_) => None,
        }
    }
}

fn read_frame(file: &File, at: u64) -> Result<Frame, StreamError> {
    let mut bytes = [0u8; FRAME_LEN];
    file.read_exact_at(&mut bytes, at)
        .map_err(|_| malformed(at, "a frame header is cut short"))?;
    parse_frame(&bytes).ok_or_else(|| malformed(at, "not a frame header"))
}

fn expect_term(file: &File, at: u64) -> Result<(), StreamError> {
    let mut term = [0u8; 2];
    file.read_exact_at(&mut term, at)
        .map_err(|_| malformed(at, "the stream ends inside a payload"))?;
    if &term != TERM {
        return Err(malformed(at, "a payload is not followed by its terminator"));
    }
    Ok(())
}

fn read_json<T: for<'a> Deserialize<'a>>(
    file: &File,
    at: u64,
    len: u64,
    cap: u64,
    what: &str,
) -> Result<T, StreamError> {
    if len > cap {
        return Err(malformed(at, format!("a {what} of {len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, at)
        .map_err(|_| malformed(at, format!("the {what} is cut short")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(at, format!("the {what}: {e}")))
}

/// The compressed sizes of every data frame, read from the end of the file, and where the
/// trailer begins (right after `stop`).
fn trailer(file: &File, size: u64) -> Result<(Vec<Vec<u64>>, u64), StreamError> {
    let comp_at = size
        .checked_sub(FRAME_LEN as u64)
        .ok_or_else(|| malformed(0, "no compression trailer"))?;
    let comp = read_frame(file, comp_at)?;
    if comp.kind != Kind::Comp || comp.start != 0 {
        return Err(malformed(
            comp_at,
            "a compressed stream does not end in `comp`",
        ));
    }
    let json_at = comp_at
        .checked_sub(comp.length + 2)
        .ok_or_else(|| malformed(comp_at, "the trailer is longer than the file"))?;
    expect_term(file, json_at + comp.length)?;
    let entries: Vec<TrailerEntry> = read_json(file, json_at, comp.length, MAX_TRAILER, "trailer")?;
    if entries.len() > MAX_EXTENTS {
        return Err(StreamError::TooManyExtents);
    }
    let sizes = entries
        .into_iter()
        .map(|e| {
            e.frames()
                .ok_or_else(|| malformed(json_at, "a trailer entry is not a size"))
        })
        .collect::<Result<_, _>>()?;
    Ok((sizes, json_at))
}

/// Indexes one data file of `size` bytes (taken by whoever opened it: the sandboxed reader
/// may not `fstat`). Every check that needs no decompression is made here; a payload's own
/// bytes are checked when they are read (lz4's checksums) or hashed (verify).
pub fn index(file: &File, size: u64) -> Result<StreamIndex, StreamError> {
    let first = read_frame(file, 0)?;
    if first.kind != Kind::Meta || first.start != 0 {
        return Err(malformed(0, "the stream does not start with `meta`"));
    }
    let meta: Meta = read_json(
        file,
        FRAME_LEN as u64,
        first.length,
        MAX_META,
        "meta header",
    )?;
    let mut at = FRAME_LEN as u64 + first.length;
    expect_term(file, at)?;
    at += 2;
    // The end of the stream proper: the trailer's start, or the file's end.
    let (sizes, stream_end) = match meta.compressed {
        true => trailer(file, size)?,
        false => (Vec::new(), size),
    };
    let mut sizes = sizes.into_iter();
    let mut extents = Vec::new();
    let mut next_free = 0u64;
    let mut data_bytes = 0u64;
    loop {
        let frame = read_frame(file, at)?;
        let payload_at = at + FRAME_LEN as u64;
        if matches!(frame.kind, Kind::Data | Kind::Zero) {
            let end = frame.start.checked_add(frame.length);
            if frame.length == 0 || end.is_none_or(|e| e > meta.virtual_size) {
                return Err(malformed(at, "an extent outside the disk"));
            }
            if frame.start < next_free {
                return Err(malformed(at, "extents overlap or are out of order"));
            }
            next_free = frame.start + frame.length;
            if extents.len() == MAX_EXTENTS {
                return Err(StreamError::TooManyExtents);
            }
        }
        match frame.kind {
            Kind::Data => {
                let (source, stored) = match meta.compressed {
                    false => (Source::Plain { offset: payload_at }, frame.length),
                    true => {
                        let frames = sizes
                            .next()
                            .ok_or_else(|| malformed(at, "more data frames than the trailer"))?;
                        let stored = frames
                            .iter()
                            .try_fold(0u64, |a, b| a.checked_add(*b))
                            .ok_or_else(|| malformed(at, "a compressed size overflows"))?;
                        (
                            Source::Lz4 {
                                offset: payload_at,
                                frames,
                            },
                            stored,
                        )
                    }
                };
                let term_at = payload_at
                    .checked_add(stored)
                    .filter(|t| *t <= stream_end)
                    .ok_or_else(|| malformed(at, "a payload runs past the end of the file"))?;
                expect_term(file, term_at)?;
                data_bytes = data_bytes.saturating_add(frame.length);
                extents.push(Extent {
                    start: frame.start,
                    length: frame.length,
                    source,
                });
                at = term_at + 2;
            }
            Kind::Zero => {
                extents.push(Extent {
                    start: frame.start,
                    length: frame.length,
                    source: Source::Zero,
                });
                at = payload_at;
            }
            Kind::Stop => {
                at = payload_at;
                break;
            }
            Kind::Meta | Kind::Comp => {
                return Err(malformed(at, "a second header inside the stream"));
            }
        }
    }
    if data_bytes != meta.data_size {
        return Err(malformed(
            at,
            format!(
                "the data frames hold {data_bytes} bytes, the header says {}",
                meta.data_size
            ),
        ));
    }
    if sizes.next().is_some() {
        return Err(malformed(
            at,
            "the trailer lists more data frames than there are",
        ));
    }
    // Nothing after `stop` but the trailer of a compressed stream.
    if at != stream_end {
        return Err(malformed(at, "bytes after the end of the stream"));
    }
    Ok(StreamIndex { meta, extents })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// An extent a test writes: start, length, and its bytes (`None`: a zero extent).
    pub(crate) type TestExtent = (u64, u64, Option<Vec<u8>>);

    /// Writes a data file as virtnbdbackup does: `extents` are `(start, Some(bytes))` for data
    /// and `(start, None)` with a length for zeros, in disk order.
    pub(crate) fn write_stream(
        path: &std::path::Path,
        virtual_size: u64,
        extents: &[TestExtent],
        compress: bool,
    ) {
        write_point(path, virtual_size, extents, compress, false)
    }

    /// The same, for a full (`incremental` false) or an incremental.
    pub(crate) fn write_point(
        path: &std::path::Path,
        virtual_size: u64,
        extents: &[TestExtent],
        compress: bool,
        incremental: bool,
    ) {
        let data_size: u64 = extents.iter().filter(|e| e.2.is_some()).map(|e| e.1).sum();
        let meta = serde_json::json!({
            "virtualSize": virtual_size, "dataSize": data_size, "date": "2026-12-07T10:00:00",
            "diskName": "vda", "diskFormat": "qcow2", "checkpointName": "virtnbdbackup.0",
            // virtnbdbackup writes the lz4 level it used, or false.
            "compressed": if compress { serde_json::json!(2) } else { serde_json::json!(false) },
            "compressionMethod": "lz4", "parentCheckpoint": false,
            "incremental": incremental, "streamVersion": 2,
        })
        .to_string();
        let mut out = Vec::new();
        let frame = |out: &mut Vec<u8>, kind: &str, start: u64, len: u64| {
            out.extend_from_slice(format!("{kind} {start:016x} {len:016x}\r\n").as_bytes())
        };
        frame(&mut out, "meta", 0, meta.len() as u64);
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut trailer = Vec::new();
        for (start, len, bytes) in extents {
            match bytes {
                Some(b) => {
                    frame(&mut out, "data", *start, *len);
                    if compress {
                        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                        enc.write_all(b).unwrap();
                        let c = enc.finish().unwrap();
                        trailer.push(c.len() as u64);
                        out.extend_from_slice(&c);
                    } else {
                        out.extend_from_slice(b);
                    }
                    out.extend_from_slice(b"\r\n");
                }
                None => frame(&mut out, "zero", *start, *len),
            }
        }
        frame(&mut out, "stop", 0, 0);
        if compress {
            let json = serde_json::to_string(&trailer).unwrap();
            out.extend_from_slice(json.as_bytes());
            out.extend_from_slice(b"\r\n");
            frame(&mut out, "comp", 0, json.len() as u64);
        }
        std::fs::write(path, out).unwrap();
    }

    pub(crate) fn index_of(path: &std::path::Path) -> Result<StreamIndex, StreamError> {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        index(&file, size)
    }

    pub(crate) fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vmsnap-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn headers_are_read_exactly_as_written() {
        let f = parse_frame(b"data 0000000000100000 0000000000001000\r\n").unwrap();
        assert_eq!((f.kind, f.start, f.length), (Kind::Data, 0x100000, 0x1000));
        for bad in [
            b"data 0000000000100000 000000000000100G\r\n",
            b"DATA 0000000000100000 0000000000001000\r\n",
            b"data 0000000000100000 0000000000001000\n\n",
            b"data 00000000001000000000000000001000\r\n ",
            b"xxxx 0000000000100000 0000000000001000\r\n",
        ] {
            assert!(
                parse_frame(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn plain_and_compressed_streams_index_the_same_extents() {
        for compress in [false, true] {
            let path = temp(&format!("ok-{compress}.data"));
            let extents = vec![
                (0, 4096, Some(vec![1u8; 4096])),
                (4096, 1 << 20, None),
                (2 << 20, 512, Some(vec![7u8; 512])),
            ];
            write_stream(&path, 4 << 20, &extents, compress);
            let index = index_of(&path).unwrap();
            assert_eq!(index.meta.virtual_size, 4 << 20);
            let shape: Vec<(u64, u64, bool)> = index
                .extents
                .iter()
                .map(|e| (e.start, e.length, e.source == Source::Zero))
                .collect();
            assert_eq!(
                shape,
                [
                    (0, 4096, false),
                    (4096, 1 << 20, true),
                    (2 << 20, 512, false)
                ]
            );
        }
    }

    /// Every cut of a valid stream is refused (nothing indexes half a point), and so is every
    /// one of these lies.
    #[test]
    fn truncated_and_lying_streams_are_refused() {
        for compress in [false, true] {
            let path = temp(&format!("cut-{compress}.data"));
            write_stream(
                &path,
                1 << 20,
                &[
                    (0, 4096, Some(vec![3u8; 4096])),
                    (8192, 100, Some(vec![4u8; 100])),
                ],
                compress,
            );
            let whole = std::fs::read(&path).unwrap();
            for cut in 0..whole.len() {
                std::fs::write(&path, &whole[..cut]).unwrap();
                assert!(index_of(&path).is_err(), "cut at {cut} accepted");
            }
        }
        let lies: Vec<(&str, Vec<TestExtent>)> = vec![
            (
                "outside the disk",
                vec![(1 << 20, 4096, Some(vec![0; 4096]))],
            ),
            (
                "overlapping",
                vec![
                    (0, 4096, Some(vec![0; 4096])),
                    (2048, 10, Some(vec![0; 10])),
                ],
            ),
            (
                "out of order",
                vec![(8192, 10, Some(vec![0; 10])), (0, 10, Some(vec![0; 10]))],
            ),
        ];
        for (what, extents) in lies {
            let path = temp("lie.data");
            write_stream(&path, 1 << 20, &extents, false);
            assert!(index_of(&path).is_err(), "{what} accepted");
        }
        // A length that lies: the frame claims more than follows.
        let path = temp("long.data");
        write_stream(&path, 1 << 20, &[(0, 16, Some(vec![9; 16]))], false);
        let text = std::fs::read(&path).unwrap();
        let fixed = String::from_utf8_lossy(&text).replace(
            "data 0000000000000000 0000000000000010",
            "data 0000000000000000 0000000000000020",
        );
        std::fs::write(&path, fixed.as_bytes()).unwrap();
        assert!(index_of(&path).is_err());
        // A 4 GiB meta frame is refused before anything is allocated.
        std::fs::write(&path, b"meta 0000000000000000 0000000100000000\r\n{}").unwrap();
        let e = index_of(&path).unwrap_err();
        assert!(
            e.to_string().contains("meta header of 4294967296 bytes"),
            "{e}"
        );
    }
}
