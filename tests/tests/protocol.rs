//! The service's table of libvirt procedures against libvirt's own protocol definitions:
//! `remote_protocol.x`, `qemu_protocol.x` and `virkeepaliveprotocol.x` from Debian's libvirt
//! source package, which `tests/run` fetches from the package registry (nothing of libvirt is
//! copied into the project). A wrong number or a wrong field is a call libvirtd would misread.

use std::collections::HashMap;
use std::path::PathBuf;

use vmsnapd::host::libvirt_rpc::procedures::{Program, TABLE};

/// One `.x` file, reduced to what the table states: its program number, its procedure
/// numbers and the fields of its structs.
struct Protocol {
    program: Option<u32>,
    procedures: HashMap<String, i32>,
    structs: HashMap<String, String>,
}

fn source_dir() -> PathBuf {
    PathBuf::from(std::env::var("VMSNAP_LIBVIRT_PROTOCOL").expect(
        "VMSNAP_LIBVIRT_PROTOCOL is not set: tests/run fetches libvirt's protocol files \
         from Debian's source package; run the tests through it",
    ))
}

fn file_of(program: Program) -> &'static str {
    match program {
        Program::Remote => "remote_protocol.x",
        Program::Qemu => "qemu_protocol.x",
        Program::Keepalive => "virkeepaliveprotocol.x",
    }
}

/// Removes `/* … */` comments (they span lines in libvirt's files).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("*/") {
            Some(end) => &rest[start + end + 2..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

fn parse(program: Program) -> Protocol {
    let path = source_dir().join(file_of(program));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (tests/run fetches it)", path.display()));
    let text = without_comments(&text);
    let prefix = program.prefix();
    let mut protocol = Protocol {
        program: None,
        procedures: HashMap::new(),
        structs: HashMap::new(),
    };
    let program_constant = format!("const {prefix}_PROGRAM");
    let procedure_prefix = format!("{prefix}_PROC_");
    let mut open_struct: Option<(String, Vec<String>)> = None;
    for line in text.lines().map(str::trim) {
        if let Some((name, fields)) = open_struct.as_mut() {
            if line.starts_with('}') {
                protocol.structs.insert(name.clone(), fields.join("; "));
                open_struct = None;
            } else if let Some(field) = line.strip_suffix(';') {
                fields.push(field.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            continue;
        }
        if let Some(value) = line.strip_prefix(&program_constant) {
            let hex = value.trim_matches(|c: char| c == '=' || c == ';' || c.is_whitespace());
            let hex = hex.trim_start_matches("0x");
            protocol.program = Some(u32::from_str_radix(hex, 16).expect("a hex program number"));
        } else if let Some(rest) = line.strip_prefix(&procedure_prefix) {
            let (name, number) = rest.split_once('=').expect("NAME = number");
            let number = number.trim().trim_end_matches(',').trim();
            protocol
                .procedures
                .insert(name.trim().to_string(), number.parse().expect("a number"));
        } else if let Some(rest) = line.strip_prefix("struct ") {
            if let Some(name) = rest.strip_suffix('{') {
                open_struct = Some((name.trim().to_string(), Vec::new()));
            }
        }
    }
    protocol
}

#[test]
fn every_procedure_the_service_calls_matches_libvirts_protocol_files() {
    let mut protocols: HashMap<&str, Protocol> = HashMap::new();
    let mut mismatches = Vec::new();
    for spec in TABLE {
        let protocol = protocols
            .entry(spec.program.prefix())
            .or_insert_with(|| parse(spec.program));
        let prefix = spec.program.prefix();
        assert!(
            !protocol.procedures.is_empty(),
            "{}: no {prefix}_PROC_ constants found",
            file_of(spec.program)
        );
        if protocol.program != Some(spec.program.number()) {
            mismatches.push(format!(
                "{prefix}_PROGRAM: libvirt {:?}, table {:#x}",
                protocol.program,
                spec.program.number()
            ));
        }
        match protocol.procedures.get(spec.name) {
            Some(&n) if n == spec.number => {}
            other => mismatches.push(format!(
                "{prefix}_PROC_{}: libvirt {other:?}, table {}",
                spec.name, spec.number
            )),
        }
        for (suffix, ours) in [("args", spec.args), ("ret", spec.ret)] {
            let name = format!(
                "{}_{}_{suffix}",
                prefix.to_lowercase(),
                spec.name.to_lowercase()
            );
            let theirs = protocol
                .structs
                .get(&name)
                .map(String::as_str)
                .unwrap_or("void");
            if theirs != ours {
                mismatches.push(format!(
                    "{name}: libvirt {{ {theirs} }}, table {{ {ours} }}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "the table differs from libvirt's protocol ({}):\n{}",
        std::fs::read_to_string(source_dir().join("SOURCE"))
            .unwrap_or_default()
            .trim(),
        mismatches.join("\n")
    );
}

#[test]
fn the_parser_sees_what_it_compares() {
    // A parser that finds nothing would make the test above pass on "void" everywhere.
    let remote = parse(Program::Remote);
    assert!(remote.procedures.len() > 400, "{}", remote.procedures.len());
    assert_eq!(remote.procedures.get("DOMAIN_GET_STATE"), Some(&212));
    assert_eq!(
        remote
            .structs
            .get("remote_domain_get_state_ret")
            .map(String::as_str),
        Some("int state; int reason")
    );
}
