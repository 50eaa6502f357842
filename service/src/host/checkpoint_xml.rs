//! What a checkpoint XML says (libvirt's or a chain folder's copy): its `<creationTime>`, and
//! its disks with the bytes dirtied since it (libvirt's `VIR_DOMAIN_CHECKPOINT_XML_SIZE`).
//!
//! Names alone cannot tell two chains apart (every chain starts at `virtnbdbackup.0`); the
//! creation time can, so the folder that owns the domain's live checkpoints is the one whose
//! checkpoint files carry the same names *and* times.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{Error, Result};

pub fn creation_time(xml: &str) -> Result<u64> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut inside = false;
    loop {
        match reader
            .read_event()
            .map_err(|e| Error::parse("checkpoint XML", e))?
        {
            Event::Start(e) => {
                depth += 1;
                inside = depth == 2 && e.name().as_ref() == "creationTime";
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                inside = false;
            }
            Event::Text(t) if inside => {
                let text = t.xml_content(quick_xml::XmlVersion::Implicit1_0);
                return text
                    .trim()
                    .parse()
                    .map_err(|e| Error::parse("checkpoint XML creationTime", e));
            }
            Event::Eof => return Err(Error::parse("checkpoint XML", "no <creationTime>")),
            _ => {}
        }
    }
}

/// One `<disks><disk>` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDisk {
    /// The disk's target (`vda`).
    pub disk: String,
    /// The bitmap that records changes since the checkpoint; `None` for a disk the checkpoint
    /// leaves out (`checkpoint='no'`).
    pub bitmap: Option<String>,
    /// Bytes written since the checkpoint, when asked for with the size flag. libvirt leaves
    /// it out when the disk's bitmap is missing, inconsistent, not persistent or not
    /// recording: then the checkpoint cannot serve an incremental backup of that disk.
    pub size: Option<u64>,
}

/// The disks of a checkpoint, in document order.
pub fn disks(xml: &str) -> Result<Vec<CheckpointDisk>> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut disks = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Error::parse("checkpoint XML", e))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(_) => {
                path.pop();
                continue;
            }
            Event::Eof => return Ok(disks),
            _ => continue,
        };
        let Some(e) = start else { continue };
        let at_disk = path.len() == 2 && path[1] == "disks" && e.name().as_ref() == "disk";
        if at_disk {
            disks.push(disk(e)?);
        }
        if !empty {
            path.push(e.name().as_ref().to_string());
        }
    }
}

fn disk(e: &quick_xml::events::BytesStart<'_>) -> Result<CheckpointDisk> {
    let mut d = CheckpointDisk {
        disk: String::new(),
        bitmap: None,
        size: None,
    };
    let mut kind = String::new();
    for a in e.attributes() {
        let a = a.map_err(|e| Error::parse("checkpoint XML", e))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| Error::parse("checkpoint XML", e))?
            .into_owned();
        match a.key.as_ref() {
            "name" => d.disk = value,
            "checkpoint" => kind = value,
            "bitmap" => d.bitmap = Some(value),
            "size" => {
                d.size = Some(
                    value
                        .parse()
                        .map_err(|e| Error::parse("checkpoint XML disk size", e))?,
                )
            }
            _ => {}
        }
    }
    if d.disk.is_empty() {
        return Err(Error::parse("checkpoint XML", "a disk without a name"));
    }
    if kind == "no" {
        d.bitmap = None;
    } else if d.bitmap.is_none() {
        return Err(Error::parse(
            "checkpoint XML",
            format!("disk {} has no bitmap", d.disk),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_carry_their_bitmap_and_size_when_libvirt_gave_one() {
        let xml = "<domaincheckpoint><name>virtnbdbackup.0</name><disks>\
                   <disk name='vda' checkpoint='bitmap' bitmap='virtnbdbackup.0' size='1048576'/>\
                   <disk name='vdb' checkpoint='bitmap' bitmap='virtnbdbackup.0'/>\
                   <disk name='sda' checkpoint='no'/></disks>\
                   <domain><devices><disks><disk name='x'/></disks></devices></domain>\
                   </domaincheckpoint>";
        let d = disks(xml).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].size, Some(1 << 20));
        assert_eq!(d[0].bitmap.as_deref(), Some("virtnbdbackup.0"));
        assert_eq!((d[1].disk.as_str(), d[1].size), ("vdb", None));
        assert_eq!(d[2].bitmap, None);
        assert!(disks("<domaincheckpoint><disks><disk name='v' size='x' bitmap='b'/></disks></domaincheckpoint>").is_err());
        assert!(
            disks("<domaincheckpoint><disks><disk bitmap='b'/></disks></domaincheckpoint>")
                .is_err()
        );
    }

    #[test]
    fn creation_time_is_read_at_the_top_level_only() {
        let xml = "<domaincheckpoint><name>virtnbdbackup.1</name><parent><name>virtnbdbackup.0</name>\
                   </parent><creationTime>1795470356</creationTime><domain><creationTime>1</creationTime>\
                   </domain></domaincheckpoint>";
        assert_eq!(creation_time(xml).unwrap(), 1795470356);
        assert!(creation_time("<domaincheckpoint/>").is_err());
        assert!(creation_time("<a><creationTime>x</creationTime></a>").is_err());
        assert!(creation_time("<<<").is_err());
    }
}
