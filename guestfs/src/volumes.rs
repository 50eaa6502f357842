//! The volumes of a disk: the partitions of its GPT or MBR partition table, or the whole disk
//! when it holds a file system directly.

use std::rc::Rc;

use crate::image::{Disk, Window};
use crate::probe::{self, Probed, Support};
use crate::protocol::Volume;

/// A partition before probing: where it is, in which table.
struct Span {
    number: u32,
    table: &'static str,
    start: u64,
    size: u64,
    /// What the table says it holds, when that decides (an LVM or extended partition).
    hint: Option<&'static str>,
}

/// Finds the volumes of `image` (`disk_size` bytes) and what each holds.
pub fn volumes(image: &Rc<Disk>, disk_size: u64) -> std::io::Result<Vec<Volume>> {
    let whole = Window::new(image.clone(), 0, disk_size);
    let spans = gpt_spans(&whole)
        .or_else(|| {
            // A file system on the whole disk may end its first sector with 0x55AA too (FAT
            // does): only a disk whose start is no known file system is read as an MBR.
            let start = probe::probe_window(&whole, disk_size).ok()?;
            (start.filesystem == "unknown")
                .then(|| mbr_spans(&whole))
                .flatten()
        })
        .unwrap_or_else(|| {
            vec![Span {
                number: 0,
                table: "none",
                start: 0,
                size: disk_size,
                hint: None,
            }]
        });
    let mut out = Vec::new();
    for span in spans {
        // A partition that claims to reach past the disk is cut at its end.
        let size = span.size.min(disk_size.saturating_sub(span.start));
        let probed = match span.hint {
            Some(name) => Probed {
                filesystem: name,
                label: String::new(),
                kind: Support::Unsupported,
            },
            None => probe::probe_window(&Window::new(image.clone(), span.start, size), size)?,
        };
        out.push(Volume {
            number: span.number,
            table: span.table.into(),
            start: span.start,
            size,
            filesystem: probed.filesystem.into(),
            label: probed.label,
            readable: probed.kind == Support::Readable,
        });
    }
    Ok(out)
}

fn gpt_spans(disk: &Window) -> Option<Vec<Span>> {
    let mut reader = disk.clone();
    let gpt = gptman::GPT::find_from(&mut reader).ok()?;
    // E6D6D379-F507-44C2-A23C-238F2A3DF928 as GPT stores it (the first three fields
    // little-endian).
    const LINUX_LVM: [u8; 16] = [
        0x79, 0xd3, 0xd6, 0xe6, 0x07, 0xf5, 0xc2, 0x44, 0xa2, 0x3c, 0x23, 0x8f, 0x2a, 0x3d, 0xf9,
        0x28,
    ];
    Some(
        gpt.iter()
            .filter(|(_, p)| p.is_used())
            .map(|(number, p)| Span {
                number,
                table: "gpt",
                start: p.starting_lba * gpt.sector_size,
                size: (p.ending_lba + 1).saturating_sub(p.starting_lba) * gpt.sector_size,
                hint: (p.partition_type_guid == LINUX_LVM).then_some("lvm"),
            })
            .collect(),
    )
}

fn mbr_spans(disk: &Window) -> Option<Vec<Span>> {
    let mut reader = disk.clone();
    let mbr = mbrman::MBR::read_from(&mut reader, 512).ok()?;
    let spans: Vec<Span> = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        // Extended partitions only hold the logical ones, which are listed themselves.
        .filter(|(_, p)| !matches!(p.sys, 0x05 | 0x0f | 0x85))
        .map(|(number, p)| Span {
            number: number as u32,
            table: "mbr",
            start: u64::from(p.starting_lba) * 512,
            size: u64::from(p.sectors) * 512,
            hint: (p.sys == 0x8e).then_some("lvm"),
        })
        .collect();
    (!spans.is_empty()).then_some(spans)
}
