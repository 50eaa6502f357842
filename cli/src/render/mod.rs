//! Turning results into what the user asked to see. Only the result goes to stdout.

pub mod document;
pub mod size;
pub mod table;
pub mod text;

use std::io::Write;

use vmsnap_dbus::DomainStatus;

use crate::args::FormatArgs;

/// Prints a status report in the requested format.
pub fn status(report: &[DomainStatus], format: &FormatArgs) -> std::io::Result<()> {
    let machine_doc = format.json || format.yaml || format.machine;
    if !machine_doc {
        let mut out = anstream::stdout().lock();
        text::write_status(&mut out, report, format.pretty, format.verbose)?;
        return out.flush();
    }
    print_document(&document::status_document(report, format.pretty), format)
}

/// Prints one JSON document (compact with `--machine`) or YAML document (`--yaml`) on stdout.
pub fn print_document(doc: &serde_json::Value, format: &FormatArgs) -> std::io::Result<()> {
    let text = if format.yaml {
        serde_yaml_ng::to_string(doc).map_err(std::io::Error::other)?
    } else if format.machine {
        serde_json::to_string(doc)? + "\n"
    } else {
        serde_json::to_string_pretty(doc)? + "\n"
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
