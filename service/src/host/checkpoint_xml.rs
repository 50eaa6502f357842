//! The `<creationTime>` of a checkpoint XML (libvirt's or a chain folder's copy).
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

#[cfg(test)]
mod tests {
    use super::*;

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
