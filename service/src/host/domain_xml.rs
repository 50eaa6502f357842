//! The disks of a domain, read from its XML (`virsh dumpxml`).
//!
//! The XML is the only exact source: text tables such as `domblklist` split paths with spaces
//! and cannot say which disks are raw, cdroms or sourceless.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{Error, Result};

/// One `<disk>` element of a domain definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskDefinition {
    /// `<target dev=…>`, e.g. `vda`.
    pub target: String,
    /// `device=` attribute: `disk`, `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `type=` attribute: `file`, `block`, `network`, `volume`, …
    pub source_type: String,
    /// `<driver type=…>`: `qcow2`, `raw`, … (absent on some empty cdroms).
    pub format: Option<String>,
    /// `<source file=…>` or `<source dev=…>`; `None` for an empty drive or a network/volume
    /// source that has no host path.
    pub source: Option<String>,
    /// `<alias name=…>` of a running domain (`virtio-disk0`), which QEMU reports as the device.
    pub alias: Option<String>,
}

/// Parses every `<devices><disk>` of a domain XML, in document order.
pub fn parse_disks(xml: &str) -> Result<Vec<DiskDefinition>> {
    let mut reader = Reader::from_str(xml);
    let mut disks = Vec::new();
    // Path of element names from the root, so that only direct children of the top-level
    // `<disk>` count (a `<backingStore>` has its own `<source>`, and a checkpoint XML embeds a
    // whole `<domain>`).
    let mut stack: Vec<String> = Vec::new();
    let mut current: Option<DiskDefinition> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Error::parse("domain XML", e))?;
        match event {
            Event::Start(e) => {
                visit(&e, &stack, &mut current)?;
                stack.push(e.name().as_ref().to_string());
            }
            Event::Empty(e) => {
                visit(&e, &stack, &mut current)?;
                stack.push(e.name().as_ref().to_string());
                close(&mut stack, &mut current, &mut disks)?;
            }
            Event::End(_) => close(&mut stack, &mut current, &mut disks)?,
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::parse(
            "domain XML",
            "document ends inside an element",
        ));
    }
    Ok(disks)
}

fn is_top_level_disk(stack: &[String]) -> bool {
    stack.len() == 2 && stack[0] == "domain" && stack[1] == "devices"
}

fn visit(e: &BytesStart, stack: &[String], current: &mut Option<DiskDefinition>) -> Result<()> {
    let name = e.name();
    if name.as_ref() == "disk" && is_top_level_disk(stack) {
        *current = Some(DiskDefinition {
            device: attr(e, "device")?.unwrap_or_else(|| "disk".into()),
            source_type: attr(e, "type")?.unwrap_or_default(),
            ..Default::default()
        });
        return Ok(());
    }
    let Some(disk) = current.as_mut() else {
        return Ok(());
    };
    // Direct children of the disk only.
    if stack.len() != 3 {
        return Ok(());
    }
    match name.as_ref() {
        "driver" => disk.format = attr(e, "type")?,
        "source" => disk.source = attr(e, "file")?.or(attr(e, "dev")?),
        "target" => disk.target = attr(e, "dev")?.unwrap_or_default(),
        "alias" => disk.alias = attr(e, "name")?,
        _ => {}
    }
    Ok(())
}

fn close(
    stack: &mut Vec<String>,
    current: &mut Option<DiskDefinition>,
    disks: &mut Vec<DiskDefinition>,
) -> Result<()> {
    let closed = stack
        .pop()
        .ok_or_else(|| Error::parse("domain XML", "unbalanced end tag"))?;
    if closed == "disk" && is_top_level_disk(stack) {
        if let Some(disk) = current.take() {
            if disk.target.is_empty() {
                return Err(Error::parse("domain XML", "a <disk> has no <target dev>"));
            }
            disks.push(disk);
        }
    }
    Ok(())
}

fn attr(e: &BytesStart, key: &str) -> Result<Option<String>> {
    for a in e.attributes() {
        let a = a.map_err(|err| Error::parse("domain XML", err))?;
        if a.key.as_ref() == key {
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| Error::parse("domain XML", err))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='qemu' id='3'>
  <name>vm &amp; co</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/images/a disk &amp; more.qcow2' index='3'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/var/lib/images/base.qcow2'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/image'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
  </devices>
</domain>"#;

    #[test]
    fn disks_come_from_the_xml_exactly() {
        let disks = parse_disks(XML).unwrap();
        assert_eq!(disks.len(), 4);
        assert_eq!(
            disks[0],
            DiskDefinition {
                target: "vda".into(),
                device: "disk".into(),
                source_type: "file".into(),
                format: Some("qcow2".into()),
                source: Some("/var/lib/images/a disk & more.qcow2".into()),
                alias: Some("virtio-disk0".into()),
            }
        );
        assert_eq!(disks[1].source.as_deref(), Some("/dev/vg0/data"));
        assert_eq!(disks[1].format.as_deref(), Some("raw"));
        assert_eq!(disks[2].device, "cdrom");
        assert_eq!(disks[2].source, None);
        assert_eq!(disks[2].format, None);
        assert_eq!(disks[3].source, None);
        assert_eq!(disks[3].source_type, "network");
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        for bad in [
            "<domain><devices><disk><target dev='vda'/>",
            "<domain><devices></disk></devices></domain>",
            "<domain><devices><disk device='disk'></disk></devices></domain>",
            "\u{0}\u{1}<<>>",
        ] {
            assert!(parse_disks(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_disks("").unwrap(), vec![]);
    }
}
