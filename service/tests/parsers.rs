//! Property tests of every parser of host output (virsh's XML, QEMU's and qemu-img's JSON,
//! virtnbdbackup's log, folder names, versions, libvirt's wire replies). Each is fed real output captured on a test
//! host (`samples/`), that output mutated at random, JSON trees of any shape grafted into it,
//! and arbitrary text. None may panic: malformed host output must become a typed error.
//!
//! The tests run a few hundred cases each; `bench/fuzz` runs them for minutes
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use proptest::sample::Index;
use vmsnapd::engine::chains::period::{GroupBy, Period};
use vmsnapd::host::libvirt::{reply, DomainRef};
use vmsnapd::host::libvirt_rpc::wire::{parse_error, parse_header};
use vmsnapd::host::tools::ToolVersion;
use vmsnapd::host::virtnbdbackup::{event, parse_line};
use vmsnapd::host::xdr::Encoder;
use vmsnapd::host::{backup_dir, checkpoint_xml, domain_xml, qemu_img, qmp};

const DOMAIN_XML: &str = include_str!("samples/domain.xml");
const CHECKPOINT_XML: &str = include_str!("samples/checkpoint.xml");
const QUERY_BLOCK: &str = include_str!("samples/query-block.json");
const QEMU_IMG_INFO: &str = include_str!("samples/qemu-img-info.json");
const LOG: &str = include_str!("samples/virtnbdbackup.log");

/// One random edit of a text.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(Index),
    Delete(Index, usize),
    Insert(Index, String),
    Duplicate(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (
            any::<Index>(),
            prop_oneof![
                Just("<".to_string()),
                Just("/>".to_string()),
                Just("\"".to_string()),
                Just("&amp;".to_string()),
                Just("]}".to_string()),
                Just("{\"a\":".to_string()),
                Just("-1".to_string()),
                Just("18446744073709551616".to_string()),
                Just("\u{0}".to_string()),
                ".{0,12}",
            ]
        )
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<Index>(), 1usize..256).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// Applies `edits` to `sample` at byte offsets (the result may split characters: it is
/// turned back into text the way the service reads host output, lossily).
fn mutate(sample: &str, edits: &[Edit]) -> String {
    let mut bytes = sample.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Truncate(i) => bytes.truncate(i.index(len)),
            Edit::Delete(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Insert(i, s) => {
                let at = i.index(len).min(bytes.len());
                bytes.splice(at..at, s.bytes());
            }
            Edit::Duplicate(i, n) => {
                let at = i.index(len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("inserted".to_string()),
                    Just("dirty-bitmaps".to_string()),
                    Just("bitmaps".to_string()),
                    Just("flags".to_string()),
                    Just("format-specific".to_string()),
                    Just("data".to_string()),
                    Just("virtual-size".to_string()),
                    "[a-z-]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `sample` with the node at a random position (in pre-order) replaced by `value`.
fn graft(sample: &str, at: Index, value: serde_json::Value) -> String {
    fn count(v: &serde_json::Value) -> usize {
        1 + match v {
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            serde_json::Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn replace(v: &mut serde_json::Value, n: &mut usize, value: &mut Option<serde_json::Value>) {
        if *n == 0 {
            if let Some(new) = value.take() {
                *v = new;
            }
            return;
        }
        *n -= 1;
        let children: Vec<&mut serde_json::Value> = match v {
            serde_json::Value::Array(a) => a.iter_mut().collect(),
            serde_json::Value::Object(o) => o.values_mut().collect(),
            _ => Vec::new(),
        };
        for child in children {
            if value.is_none() {
                return;
            }
            replace(child, n, value);
        }
    }
    let mut tree: serde_json::Value = serde_json::from_str(sample).expect("a JSON sample");
    let mut n = at.index(count(&tree));
    replace(&mut tree, &mut n, &mut Some(value));
    tree.to_string()
}

fn all_parsers(text: &str) {
    let _ = domain_xml::parse_disks(text);
    let _ = checkpoint_xml::creation_time(text);
    let _ = qmp::parse_query_block(text);
    let _ = qemu_img::parse_info(text);
    for line in text.lines() {
        if let Some(l) = parse_line(line) {
            let _ = event(&l);
        }
    }
    let _ = ToolVersion::parse(text);
    let _ = backup_dir::checkpoint_index(text);
    for g in [
        GroupBy::Month,
        GroupBy::Quarter,
        GroupBy::BiAnnual,
        GroupBy::Year,
    ] {
        let _ = Period::parse_folder(text, g);
    }
}

/// Every decoder of what libvirtd sends.
fn all_wire_decoders(body: &[u8]) {
    let _ = reply::domain_names(body);
    let _ = reply::domain(body);
    let _ = reply::state(body);
    let _ = reply::checkpoint_names(body);
    let _ = reply::string(body);
    let _ = parse_header(body);
    let _ = parse_error(body);
}

fn a_domain(name: &str) -> DomainRef {
    DomainRef {
        name: name.into(),
        uuid: [7; 16],
        id: -1,
    }
}

/// Replies as libvirtd encodes them: two domains, two checkpoints, a state, an XML string.
fn well_formed_replies() -> Vec<Vec<u8>> {
    let mut domains = Encoder::new();
    domains.u32(2);
    a_domain("vm-a").encode(&mut domains);
    a_domain("vm-bb").encode(&mut domains);
    domains.u32(2);
    let mut checkpoints = Encoder::new();
    checkpoints.u32(2);
    for name in ["virtnbdbackup.0", "virtnbdbackup.1"] {
        checkpoints.string(name);
        a_domain("vm-a").encode(&mut checkpoints);
    }
    checkpoints.i32(2);
    let mut lookup = Encoder::new();
    a_domain("vm-a").encode(&mut lookup);
    vec![
        domains.finish(),
        checkpoints.finish(),
        lookup.finish(),
        Encoder::new().i32(1).i32(5).finish(),
        Encoder::new().string(DOMAIN_XML).finish(),
    ]
}

#[test]
fn libvirt_replies_decode() {
    let r = well_formed_replies();
    assert_eq!(reply::domain_names(&r[0]).unwrap(), ["vm-a", "vm-bb"]);
    assert_eq!(
        reply::checkpoint_names(&r[1]).unwrap(),
        ["virtnbdbackup.0", "virtnbdbackup.1"]
    );
    assert_eq!(reply::domain(&r[2]).unwrap(), a_domain("vm-a"));
    assert_eq!(reply::state(&r[3]).unwrap(), 1);
    assert_eq!(reply::string(&r[4]).unwrap(), DOMAIN_XML);
    // A reply of another shape is an error, not a misreading.
    assert!(reply::state(&r[2]).is_err());
    assert!(reply::domain_names(&r[1]).is_err());
}

#[test]
fn the_samples_parse() {
    let disks = domain_xml::parse_disks(DOMAIN_XML).unwrap();
    assert_eq!(disks[0].target, "vda");
    assert!(checkpoint_xml::creation_time(CHECKPOINT_XML).unwrap() > 0);
    let blocks = qmp::parse_query_block(QUERY_BLOCK).unwrap();
    assert!(blocks.iter().any(|b| !b.bitmaps.is_empty()));
    // The open image's format and sizes, which spare a running domain's status a qemu-img.
    let image = blocks.iter().find_map(|b| b.image.clone()).unwrap();
    assert_eq!(
        (image.format.as_str(), image.virtual_size),
        ("qcow2", 64 << 20)
    );
    assert!(image.actual_size > 0);
    assert!(!qemu_img::parse_info(QEMU_IMG_INFO)
        .unwrap()
        .bitmaps
        .is_empty());
    assert!(
        LOG.lines()
            .filter_map(parse_line)
            .filter_map(|l| event(&l))
            .count()
            > 0
    );
}

proptest! {
    #[test]
    fn mutated_domain_xml(edits in prop::collection::vec(edit(), 1..8)) {
        let _ = domain_xml::parse_disks(&mutate(DOMAIN_XML, &edits));
    }

    #[test]
    fn mutated_checkpoint_xml(edits in prop::collection::vec(edit(), 1..8)) {
        let _ = checkpoint_xml::creation_time(&mutate(CHECKPOINT_XML, &edits));
    }

    #[test]
    fn mutated_query_block(edits in prop::collection::vec(edit(), 1..8)) {
        let _ = qmp::parse_query_block(&mutate(QUERY_BLOCK, &edits));
    }

    #[test]
    fn query_block_with_any_json_grafted(at in any::<Index>(), value in json()) {
        let _ = qmp::parse_query_block(&graft(QUERY_BLOCK, at, value));
    }

    #[test]
    fn mutated_qemu_img_info(edits in prop::collection::vec(edit(), 1..8)) {
        let _ = qemu_img::parse_info(&mutate(QEMU_IMG_INFO, &edits));
    }

    #[test]
    fn qemu_img_info_with_any_json_grafted(at in any::<Index>(), value in json()) {
        let _ = qemu_img::parse_info(&graft(QEMU_IMG_INFO, at, value));
    }

    #[test]
    fn mutated_virtnbdbackup_log(edits in prop::collection::vec(edit(), 1..8)) {
        for line in mutate(LOG, &edits).lines() {
            if let Some(l) = parse_line(line) {
                let _ = event(&l);
            }
        }
    }

    #[test]
    fn any_text_to_every_parser(text in ".{0,400}") {
        all_parsers(&text);
    }

    #[test]
    fn any_json_to_every_parser(value in json()) {
        all_parsers(&value.to_string());
    }

    #[test]
    fn any_bytes_to_every_libvirt_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_wire_decoders(&bytes);
    }

    #[test]
    fn corrupted_libvirt_replies(
        which in any::<Index>(),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
        cut in any::<Index>(),
    ) {
        let replies = well_formed_replies();
        let mut body = which.get(&replies).clone();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        all_wire_decoders(&body);
        body.truncate(cut.index(body.len() + 1));
        all_wire_decoders(&body);
    }
}
