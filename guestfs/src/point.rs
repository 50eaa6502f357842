//! One point of one disk, read in place from its chain's data files: no rebuild, no scratch
//! image.
//!
//! The data files of a chain up to the point (the full first, then each incremental) are
//! indexed ([`crate::stream::index`]) and laid over each other: the newest file that wrote a
//! byte answers for it, and a byte no file wrote reads as zero (a full's `zero` extents and
//! never-written space alike). The map holds one entry per piece of an extent still visible,
//! so its size follows the extents of the chain, not the size of the disk.
//!
//! Compressed extents are decoded when read, one lz4 frame at a time; the last frame decoded
//! is kept, so reading a file sequentially decodes each frame once. A frame that decodes past
//! its extent (an lz4 bomb) or short of it, or fails its checksum, fails the read.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::stream::{self, Extent, Meta, Source, StreamError};

/// The largest lz4 frame's output virtnbdbackup writes is the NBD server's largest request
/// (32 MiB in QEMU); this leaves room and bounds the decoder's buffer.
const MAX_FRAME_OUTPUT: u64 = 64 << 20;

/// Why a chain's files cannot make a point.
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    #[error("data file {file}: {source}")]
    Stream { file: usize, source: StreamError },
    #[error("data file {file}: {what}")]
    Chain { file: usize, what: String },
    #[error("no data file")]
    Empty,
}

/// A visible piece of an extent: `length` bytes from `skip` bytes into extent `extent` of
/// file `file`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    length: u64,
    file: u32,
    extent: u32,
    skip: u64,
}

/// One decoded lz4 frame: (file, extent, frame number) and its bytes.
type Decoded = ((u32, u32, usize), Vec<u8>);

/// A point of a disk.
pub struct Point {
    files: Vec<File>,
    extents: Vec<Vec<Extent>>,
    metas: Vec<Meta>,
    size: u64,
    pieces: BTreeMap<u64, Piece>,
    /// Per compressed extent, the output size of each of its frames, learnt on first read.
    frame_outputs: RefCell<HashMap<(u32, u32), Vec<u64>>>,
    last: RefCell<Option<Decoded>>,
}

impl Point {
    /// The point the newest of `files` ends: `files` (each with its size) in chain order, the
    /// full (or copy) first, each incremental continuing the one before it, all of the same
    /// disk.
    pub fn open(files: Vec<(File, u64)>) -> Result<Point, PointError> {
        match Point::open_longest(files) {
            (Some(point), None) => Ok(point),
            (_, Some(e)) => Err(e),
            (None, None) => Err(PointError::Empty),
        }
    }

    /// The newest point the longest good prefix of `files` makes, and why the file after it
    /// is refused (if one is).
    pub fn open_longest(files: Vec<(File, u64)>) -> (Option<Point>, Option<PointError>) {
        let mut extents = Vec::new();
        let mut metas: Vec<Meta> = Vec::new();
        let mut refused = None;
        for (n, (file, size)) in files.iter().enumerate() {
            match index_next(n, file, *size, metas.last()) {
                Ok(index) => {
                    metas.push(index.meta);
                    extents.push(index.extents);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if metas.is_empty() {
            return (None, refused.or(Some(PointError::Empty)));
        }
        let mut files = files;
        files.truncate(metas.len());
        let size = metas.last().map(|m| m.virtual_size).unwrap_or(0);
        let mut point = Point {
            files: files.into_iter().map(|(f, _)| f).collect(),
            extents,
            metas,
            size,
            pieces: BTreeMap::new(),
            frame_outputs: RefCell::default(),
            last: RefCell::default(),
        };
        point.lay_out();
        (Some(point), refused)
    }

    /// Lays every file's data extents over the older ones.
    fn lay_out(&mut self) {
        for (file, extents) in self.extents.iter().enumerate() {
            for (n, extent) in extents.iter().enumerate() {
                if extent.source == Source::Zero || extent.start >= self.size {
                    continue;
                }
                let piece = Piece {
                    length: extent.length.min(self.size - extent.start),
                    file: file as u32,
                    extent: n as u32,
                    skip: 0,
                };
                cover(&mut self.pieces, extent.start, piece);
            }
        }
    }

    /// The disk's size at this point (the newest header's).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The checkpoint this point is.
    pub fn checkpoint(&self) -> &str {
        self.metas
            .last()
            .map(|m| m.checkpoint_name.as_str())
            .unwrap_or("")
    }

    /// How many pieces of extents the map holds (what its memory follows).
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// How many extents its files record, all of them (what the index's memory follows).
    pub fn extents(&self) -> usize {
        self.extents.iter().map(Vec::len).sum()
    }

    /// How many data files the point is made of.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Decodes every compressed frame of every file, hidden by a newer point or not: each
    /// must decode, and each extent's frames to exactly its length. Returns the number of
    /// the first file that fails, with why. Uncompressed payloads have nothing to decode;
    /// their bytes are checked by their checksums.
    pub fn check_frames(&self) -> Result<(), (usize, io::Error)> {
        for (file, extents) in self.extents.iter().enumerate() {
            for (n, extent) in extents.iter().enumerate() {
                let Source::Lz4 { offset, frames } = &extent.source else {
                    continue;
                };
                let key = (file as u32, n as u32);
                let (mut frame_start, mut file_at) = (0u64, *offset);
                for (f, size) in frames.iter().enumerate() {
                    let last = f + 1 == frames.len();
                    self.decode(key, f, file_at, *size, extent.length - frame_start, last)
                        .map_err(|e| (file, e))?;
                    frame_start += self.known_output(key, f).unwrap_or(0);
                    file_at += size;
                }
            }
        }
        *self.last.borrow_mut() = None;
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes of the disk at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read beyond the disk"))?;
        let mut pos = offset;
        while pos < end {
            let out = &mut buf[(pos - offset) as usize..(end - offset) as usize];
            let covering = self
                .pieces
                .range(..=pos)
                .next_back()
                .filter(|(start, p)| **start + p.length > pos);
            let n = match covering {
                Some((&start, piece)) => {
                    let n = out.len().min((start + piece.length - pos) as usize);
                    self.read_piece(piece, piece.skip + (pos - start), &mut out[..n])?;
                    n
                }
                None => {
                    // Never written since the full, or zero: up to the next piece.
                    let next = self
                        .pieces
                        .range(pos..)
                        .next()
                        .map(|(s, _)| *s)
                        .unwrap_or(end);
                    let n = out.len().min((next.min(end) - pos) as usize);
                    out[..n].fill(0);
                    n
                }
            };
            pos += n as u64;
        }
        Ok(())
    }

    /// `out.len()` bytes from `at` bytes into the piece's extent.
    fn read_piece(&self, piece: &Piece, at: u64, out: &mut [u8]) -> io::Result<()> {
        let extent = &self.extents[piece.file as usize][piece.extent as usize];
        let file = &self.files[piece.file as usize];
        match &extent.source {
            Source::Zero => {
                out.fill(0);
                Ok(())
            }
            Source::Plain { offset } => file.read_exact_at(out, offset + at),
            Source::Lz4 { offset, frames } => {
                self.read_compressed(piece, extent.length, *offset, frames, at, out)
            }
        }
    }

    fn read_compressed(
        &self,
        piece: &Piece,
        length: u64,
        offset: u64,
        frames: &[u64],
        mut at: u64,
        mut out: &mut [u8],
    ) -> io::Result<()> {
        let key = (piece.file, piece.extent);
        while !out.is_empty() {
            // Find the frame holding `at`, decoding frames whose output size is not known yet.
            let mut frame_start = 0u64;
            let mut file_at = offset;
            let mut found = None;
            for (n, size) in frames.iter().enumerate() {
                let output = match self.known_output(key, n) {
                    Some(o) => o,
                    None => {
                        let left = length - frame_start;
                        self.decode(key, n, file_at, *size, left, frames.len() - 1 == n)?;
                        self.known_output(key, n).unwrap_or(0)
                    }
                };
                if at < frame_start + output {
                    found = Some((n, frame_start, file_at, *size));
                    break;
                }
                frame_start += output;
                file_at += size;
            }
            let Some((n, frame_start, file_at, size)) = found else {
                return Err(corrupt("a compressed extent decodes short of its length"));
            };
            let hit = matches!(&*self.last.borrow(), Some((k, _)) if *k == (key.0, key.1, n));
            if !hit {
                self.decode(
                    key,
                    n,
                    file_at,
                    size,
                    length - frame_start,
                    frames.len() - 1 == n,
                )?;
            }
            let last = self.last.borrow();
            let bytes = &last.as_ref().expect("just decoded").1;
            let from = (at - frame_start) as usize;
            let n = out.len().min(bytes.len() - from);
            out[..n].copy_from_slice(&bytes[from..from + n]);
            out = &mut out[n..];
            at += n as u64;
        }
        Ok(())
    }

    fn known_output(&self, key: (u32, u32), frame: usize) -> Option<u64> {
        self.frame_outputs
            .borrow()
            .get(&key)
            .and_then(|o| o.get(frame).copied())
    }

    /// Decodes frame `frame` of an extent (at `file_at`, `size` stored bytes) into the cache,
    /// refusing more output than `left` bytes of the extent (or than any frame may hold), and,
    /// for the extent's last frame, less.
    fn decode(
        &self,
        key: (u32, u32),
        frame: usize,
        file_at: u64,
        size: u64,
        left: u64,
        last_frame: bool,
    ) -> io::Result<()> {
        let file = &self.files[key.0 as usize];
        // lz4 never grows data by more than a small fraction: a frame stored larger than
        // any frame's output may be is refused before its buffer is made.
        if size > MAX_FRAME_OUTPUT + MAX_FRAME_OUTPUT / 64 {
            return Err(corrupt("an lz4 frame larger than any frame may be"));
        }
        let mut stored = vec![0u8; size as usize];
        file.read_exact_at(&mut stored, file_at)?;
        let cap = left.min(MAX_FRAME_OUTPUT);
        let mut decoder = lz4_flex::frame::FrameDecoder::new(stored.as_slice()).take(cap + 1);
        let mut bytes = Vec::new();
        decoder
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(&format!("an lz4 frame does not decode: {e}")))?;
        let got = bytes.len() as u64;
        if got > cap {
            return Err(corrupt("an lz4 frame decodes past its extent"));
        }
        if got == 0 || (last_frame && got != left) {
            return Err(corrupt("a compressed extent decodes short of its length"));
        }
        let mut outputs = self.frame_outputs.borrow_mut();
        let known = outputs.entry(key).or_default();
        if known.len() == frame {
            known.push(got);
        } else if known.get(frame) != Some(&got) {
            return Err(corrupt("an lz4 frame decoded to two sizes"));
        }
        *self.last.borrow_mut() = Some(((key.0, key.1, frame), bytes));
        Ok(())
    }
}

/// Indexes file `n` of a chain and checks that it continues `previous` (the file before it):
/// a full first, then incrementals of the same disk, each naming the checkpoint before it.
fn index_next(
    n: usize,
    file: &File,
    size: u64,
    previous: Option<&Meta>,
) -> Result<stream::StreamIndex, PointError> {
    let index =
        stream::index(file, size).map_err(|source| PointError::Stream { file: n, source })?;
    let chain = |what: String| PointError::Chain { file: n, what };
    match previous {
        None if index.meta.incremental => {
            return Err(chain(
                "a chain starts with a full backup, not an incremental".into(),
            ))
        }
        Some(_) if !index.meta.incremental => {
            return Err(chain("a full backup in the middle of a chain".into()))
        }
        Some(previous) if previous.disk_name != index.meta.disk_name => {
            return Err(chain(format!(
                "disk {} after disk {}",
                index.meta.disk_name, previous.disk_name
            )))
        }
        // An incremental names the checkpoint it continues: one that does not follow
        // the file before it means a point of the chain is missing.
        Some(previous)
            if index
                .meta
                .parent_checkpoint
                .as_ref()
                .is_some_and(|p| *p != previous.checkpoint_name) =>
        {
            return Err(chain(format!(
                "{} continues {}, not {} (a point of the chain is missing)",
                index.meta.checkpoint_name,
                index.meta.parent_checkpoint.as_deref().unwrap_or_default(),
                previous.checkpoint_name
            )))
        }
        _ => {}
    }
    Ok(index)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Makes `piece` the one visible over `[start, start + piece.length)`: older pieces there are
/// cut back or dropped.
fn cover(pieces: &mut BTreeMap<u64, Piece>, start: u64, piece: Piece) {
    let end = start + piece.length;
    let hidden: Vec<u64> = pieces
        .range(..end)
        .rev()
        .take_while(|(s, p)| **s + p.length > start)
        .map(|(s, _)| *s)
        .collect();
    for s in hidden {
        let old = pieces.remove(&s).expect("listed above");
        if s < start {
            pieces.insert(
                s,
                Piece {
                    length: start - s,
                    ..old
                },
            );
        }
        let old_end = s + old.length;
        if old_end > end {
            let tail = Piece {
                length: old_end - end,
                skip: old.skip + (end - s),
                ..old
            };
            pieces.insert(end, tail);
        }
    }
    pieces.insert(start, piece);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{temp, write_point, write_stream, TestExtent};

    /// A model disk: what a rebuild would hold after applying `layers` in order.
    fn model(size: u64, layers: &[Vec<TestExtent>]) -> Vec<u8> {
        let mut disk = vec![0u8; size as usize];
        for layer in layers {
            for (start, len, bytes) in layer {
                if let Some(b) = bytes {
                    disk[*start as usize..(*start + *len) as usize].copy_from_slice(b);
                }
            }
        }
        disk
    }

    fn sized(path: &std::path::Path) -> (File, u64) {
        let file = File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        (file, size)
    }

    fn write_chain(
        name: &str,
        size: u64,
        layers: &[Vec<TestExtent>],
        compress: bool,
    ) -> Vec<(File, u64)> {
        layers
            .iter()
            .enumerate()
            .map(|(n, layer)| {
                let path = temp(&format!("{name}-{n}.data"));
                write_point(&path, size, layer, compress, n > 0);
                sized(&path)
            })
            .collect()
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    #[test]
    fn the_newest_writer_wins_and_unwritten_space_reads_as_zero() {
        let size = 1 << 20;
        let layers = [
            vec![
                (0, 65536, Some(pattern(1, 65536))),
                (65536, 131072, None),
                (262144, 8192, Some(pattern(2, 8192))),
            ],
            vec![
                (4096, 8192, Some(pattern(3, 8192))),
                (260000, 4096, Some(pattern(4, 4096))),
            ],
            vec![
                (0, 100, Some(pattern(5, 100))),
                (262144 + 8000, 1000, Some(pattern(6, 1000))),
            ],
        ];
        for compress in [false, true] {
            for upto in 1..=layers.len() {
                let files = write_chain(
                    &format!("chain-{compress}"),
                    size,
                    &layers[..upto],
                    compress,
                );
                let point = Point::open(files).unwrap();
                let expected = model(size, &layers[..upto]);
                let mut whole = vec![0xffu8; size as usize];
                point.read_exact_at(&mut whole, 0).unwrap();
                assert!(
                    whole == expected,
                    "point {upto} (compressed: {compress}) differs"
                );
                // Odd windows, across piece boundaries.
                for (at, len) in [
                    (4000u64, 300usize),
                    (259999, 5000),
                    (65530, 20),
                    (size - 7, 7),
                ] {
                    let mut part = vec![0xffu8; len];
                    point.read_exact_at(&mut part, at).unwrap();
                    assert_eq!(part, expected[at as usize..at as usize + len]);
                }
            }
        }
    }

    #[test]
    fn a_chain_must_start_with_a_full_and_keep_to_its_disk() {
        let layers = vec![
            vec![(0, 10, Some(vec![1; 10]))],
            vec![(0, 10, Some(vec![2; 10]))],
        ];
        let mut files = write_chain("order", 4096, &layers, false);
        files.reverse();
        let second = files.remove(1);
        assert!(
            Point::open(vec![files.remove(0)]).is_err(),
            "an incremental alone"
        );
        assert!(Point::open(vec![second]).is_ok());
        assert!(matches!(Point::open(Vec::new()), Err(PointError::Empty)));
    }

    #[test]
    fn a_frame_that_decodes_past_its_extent_fails_the_read() {
        // A 64 KiB extent whose payload decodes to 1 MiB of zeros: the frame is swapped in
        // after writing, with the trailer's size fixed to match.
        let path = temp("bomb.data");
        write_stream(&path, 4 << 20, &[(0, 65536, Some(vec![0u8; 65536]))], true);
        let honest = std::fs::read(&path).unwrap();
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut enc, &vec![0u8; 1 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        let mut small = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut small, &vec![0u8; 65536]).unwrap();
        let small = small.finish().unwrap();
        let at = honest
            .windows(small.len())
            .position(|w| w == small.as_slice())
            .unwrap();
        let mut forged = honest[..at].to_vec();
        forged.extend_from_slice(&bomb);
        forged.extend_from_slice(b"\r\nstop 0000000000000000 0000000000000000\r\n");
        let trailer = format!("[{}]", bomb.len());
        forged.extend_from_slice(trailer.as_bytes());
        forged.extend_from_slice(b"\r\n");
        forged.extend_from_slice(format!("comp {:016x} {:016x}\r\n", 0, trailer.len()).as_bytes());
        std::fs::write(&path, forged).unwrap();
        let point = Point::open(vec![sized(&path)]).unwrap();
        let mut buf = vec![0u8; 4096];
        let e = point.read_exact_at(&mut buf, 0).unwrap_err();
        assert!(e.to_string().contains("past its extent"), "{e}");
    }

    /// What the README states about the index's memory: per extent of every file, its
    /// record, and per visible piece, a map entry (plus the tree's own overhead).
    #[test]
    fn the_index_costs_what_the_readme_says() {
        assert_eq!(std::mem::size_of::<Extent>(), 48);
        assert_eq!(std::mem::size_of::<Piece>(), 24);
    }

    #[test]
    fn covering_splits_older_pieces() {
        let mut map = BTreeMap::new();
        let p = |file, length| Piece {
            length,
            file,
            extent: 0,
            skip: 0,
        };
        cover(&mut map, 0, p(0, 100));
        cover(&mut map, 40, p(1, 20));
        cover(&mut map, 90, p(2, 30));
        let shape: Vec<(u64, u64, u32, u64)> = map
            .iter()
            .map(|(s, p)| (*s, p.length, p.file, p.skip))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 40, 0, 0),
                (40, 20, 1, 0),
                (60, 30, 0, 60),
                (90, 30, 2, 0)
            ]
        );
    }
}
