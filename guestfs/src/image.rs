//! The disk the helper reads: a point of a chain read in place, or a raw image; by position.
//!
//! Reads are positional (`pread`): no shared file offset, so a volume's reader and the
//! partition-table parser cannot disturb each other, and the only system calls are ones the
//! sandbox allows.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use crate::point::Point;

/// A whole disk, read by position.
pub enum Disk {
    /// A point of a chain, through its index (what vmsnapd hands the helper).
    Point(Point),
    /// A raw image of `size` bytes (the unit tests' disks).
    Raw { file: File, size: u64 },
}

impl Disk {
    pub fn size(&self) -> u64 {
        match self {
            Disk::Point(p) => p.size(),
            Disk::Raw { size, .. } => *size,
        }
    }

    /// Exactly `buf.len()` bytes at `offset`; a read past the end fails.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::Point(p) => p.read_exact_at(buf, offset),
            Disk::Raw { file, .. } => file.read_exact_at(buf, offset),
        }
    }

    /// Up to `buf.len()` bytes at `offset`, fewer only at the end of the disk.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.size().saturating_sub(offset)) as usize;
        self.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }
}

/// A window `[start, start + len)` of the disk, as a seekable, read-only stream.
#[derive(Clone)]
pub struct Window {
    image: Rc<Disk>,
    start: u64,
    len: u64,
    pos: u64,
}

impl Window {
    pub fn new(image: Rc<Disk>, start: u64, len: u64) -> Window {
        Window {
            image,
            start,
            len,
            pos: 0,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` inside the window.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond the volume's end",
            ));
        }
        self.image.read_exact_at(buf, self.start + offset)
    }
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.image.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

/// The FAT driver asks for a writable device; every write is refused (the disk is read-only
/// anyway: its descriptors were opened `O_RDONLY`).
impl Write for Window {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the guest image is read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// ext4-view's reader interface over a window.
impl ext4_view::Ext4Read for Window {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.read_exact_at(start_byte, dst).map_err(Box::new)?;
        Ok(())
    }
}
