//! Writing a file the way it was, holes included.
//!
//! The guest-file-system reader sends every byte of a file, holes as zeros. Written as they
//! come, a 2 GiB sparse file with no data (found by a hostile-guest test: from a 786 kB
//! backup) takes 2 GiB of the host's disk. So whole blocks of zeros are skipped with a seek,
//! and the file's length is set at the end: holes stay holes, like `cp --sparse=always`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// The granularity of holes: the page and the usual file-system block.
const BLOCK: u64 = 4096;

/// A file being written from a stream, skipping blocks of zeros.
pub struct SparseWriter {
    file: File,
    /// Where the next byte goes.
    offset: u64,
    /// Bytes actually written (not skipped).
    written: u64,
}

impl SparseWriter {
    pub fn new(file: File) -> Self {
        SparseWriter {
            file,
            offset: 0,
            written: 0,
        }
    }

    /// Appends `bytes`: each block-aligned run of zeros becomes a hole.
    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            // Up to the next block boundary, so that holes line up with the file's blocks.
            let room = (BLOCK - self.offset % BLOCK) as usize;
            let (piece, rest) = bytes.split_at(room.min(bytes.len()));
            if piece.iter().all(|b| *b == 0) {
                self.offset += piece.len() as u64;
            } else {
                self.file.seek(SeekFrom::Start(self.offset))?;
                self.file.write_all(piece)?;
                self.offset += piece.len() as u64;
                self.written += piece.len() as u64;
            }
            bytes = rest;
        }
        Ok(())
    }

    /// Bytes written so far, holes not counted.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sets the length (a trailing hole included) and hands the file back.
    pub fn finish(self) -> std::io::Result<File> {
        self.file.set_len(self.offset)?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zeros_become_holes_and_the_content_is_the_same() {
        let path = std::env::temp_dir().join(format!("vmsnap-sparse-{}", std::process::id()));
        let mut expected = vec![0u8; 64 << 20];
        expected[5000..5010].copy_from_slice(b"0123456789");
        let tail = expected.len() - 3;
        expected[tail] = 7;
        let mut w = SparseWriter::new(File::create(&path).unwrap());
        // In odd-sized pieces, as frames arrive.
        for chunk in expected.chunks(100_003) {
            w.write(chunk).unwrap();
        }
        assert_eq!(w.written(), 2 * BLOCK);
        let file = w.finish().unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), expected.len() as u64);
        assert!(meta.blocks() * 512 <= 4 * BLOCK, "{} blocks", meta.blocks());
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == expected);
        // A file of nothing but zeros: all hole, full length.
        let mut w = SparseWriter::new(File::create(&path).unwrap());
        w.write(&[0u8; 10_000]).unwrap();
        let meta = w.finish().unwrap().metadata().unwrap();
        assert_eq!((meta.len(), meta.blocks()), (10_000, 0));
        std::fs::remove_file(&path).unwrap();
    }
}
