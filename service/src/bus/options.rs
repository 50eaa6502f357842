//! Parsing of the `a{sv}` option dictionaries.
//!
//! Unknown keys and wrongly typed values are refused with `InvalidArgument` naming the key, so
//! a typo in a script fails loudly instead of silently doing the default.

use std::collections::HashMap;

use vmsnap_dbus::{options as keys, Error};
use zvariant::OwnedValue;

use crate::engine::backup::BackupRequest;
use crate::engine::prune::PruneRequest;
use crate::engine::restore::RestoreRequest;
use crate::engine::scrub::{ScrubRequest, ScrubType};
use crate::engine::status::StatusRequest;
use crate::engine::verify::VerifyRequest;
use crate::engine::Config;
use crate::host::period::GroupBy;
use crate::paths::BackupRoot;
use crate::selection;

/// Option dictionaries larger than this are refused outright.
const MAX_OPTIONS: usize = 64;

pub fn status_request(
    domains: &[String],
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<StatusRequest, Error> {
    check_keys(&options, keys::STATUS_KEYS)?;
    let selectors =
        selection::parse_all(domains).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let backup_root = take_string(&mut options, keys::OUTPUT)?
        .map(|p| {
            BackupRoot::resolved(&p).map_err(|e| Error::InvalidArgument(format!("output: {e}")))
        })
        .transpose()?;
    let group_by = match take_string(&mut options, keys::GROUP_BY)? {
        None => GroupBy::default(),
        Some(word) => GroupBy::parse(&word).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "group_by {word:?} is not one of {}",
                GroupBy::NAMES.join(", ")
            ))
        })?,
    };
    if let Some(uri) = take_string(&mut options, keys::CONNECT)? {
        if uri != config.libvirt_uri {
            return Err(Error::InvalidArgument(format!(
                "connect {uri:?} differs from the service's libvirt URI {:?}; \
                 the URI is set in the service's configuration",
                config.libvirt_uri
            )));
        }
    }
    let deep = take_bool(&mut options, keys::DEEP)?.unwrap_or(false);
    Ok(StatusRequest {
        deep,
        selectors,
        backup_root,
        group_by,
    })
}

pub fn backup_request(
    domains: &[String],
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<BackupRequest, Error> {
    check_keys(&options, keys::BACKUP_KEYS)?;
    let raw = take_bool(&mut options, keys::RAW)?.unwrap_or(false);
    let prune = take_bool(&mut options, keys::PRUNE)?.unwrap_or(false);
    let keep = take_u32(&mut options, keys::KEEP)?;
    if keep.is_some() && !prune {
        return Err(Error::InvalidArgument(
            "keep is only meaningful with prune".into(),
        ));
    }
    let output = take_string(&mut options, keys::OUTPUT)?.ok_or_else(|| {
        Error::InvalidArgument("No output directory specified (option output)".into())
    })?;
    options.insert(
        keys::OUTPUT.into(),
        OwnedValue::from(zvariant::Str::from(output)),
    );
    let status = status_request(domains, options, config)?;
    Ok(BackupRequest {
        selectors: status.selectors,
        root: status.backup_root.expect("output was given"),
        group_by: status.group_by,
        raw,
        prune_keep: prune.then(|| keep.unwrap_or(0)),
    })
}

/// Whether a Backup call asks for pruning (which needs its own authorization).
pub fn wants_prune(options: &HashMap<String, OwnedValue>) -> bool {
    flag(options, keys::PRUNE)
}

/// Whether a Status asks for the deep check (QEMU's own view of the bitmaps, through the
/// monitor): that marks the domain tainted, so it needs the backup action, asked before
/// anything else is looked at.
pub fn wants_deep(options: &HashMap<String, OwnedValue>) -> bool {
    flag(options, keys::DEEP)
}

fn flag(options: &HashMap<String, OwnedValue>, key: &str) -> bool {
    options
        .get(key)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

/// Destructive operations never take an empty list for "all": a client that lost its list
/// must not scrub or prune every domain on the host. `*` still selects all, on purpose.
fn explicit_selection(domains: &[String], operation: &str) -> Result<(), Error> {
    if domains.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no domains given to {operation}; name them, or pass \"*\" for all"
        )));
    }
    Ok(())
}

pub fn scrub_request(
    domains: &[String],
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<ScrubRequest, Error> {
    check_keys(&options, keys::SCRUB_KEYS)?;
    explicit_selection(domains, "scrub")?;
    let word = take_string(&mut options, keys::TYPE)?
        .ok_or_else(|| Error::InvalidArgument("Invalid scrub type: (none)".into()))?;
    let kind = ScrubType::parse(&word).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "Invalid scrub type: {word:.64} (one of {})",
            ScrubType::NAMES.join(", ")
        ))
    })?;
    let name = take_string(&mut options, keys::CHECKPOINT)?;
    if let Some(n) = &name {
        if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {n:.64?} is not a valid name"
            )));
        }
    }
    let dry_run = take_bool(&mut options, keys::DRY_RUN)?.unwrap_or(false);
    let status = status_request(domains, options, config)?;
    Ok(ScrubRequest {
        selectors: status.selectors,
        kind,
        name,
        dry_run,
    })
}

pub fn prune_request(
    domains: &[String],
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<PruneRequest, Error> {
    check_keys(&options, keys::PRUNE_KEYS)?;
    explicit_selection(domains, "prune")?;
    let keep = take_u32(&mut options, keys::KEEP)?.unwrap_or(0);
    let dry_run = take_bool(&mut options, keys::DRY_RUN)?.unwrap_or(false);
    if !options.contains_key(keys::OUTPUT) {
        return Err(Error::InvalidArgument(
            "No output directory specified (option output)".into(),
        ));
    }
    let status = status_request(domains, options, config)?;
    Ok(PruneRequest {
        selectors: status.selectors,
        root: status.backup_root.expect("output was given"),
        group_by: status.group_by,
        keep,
        dry_run,
    })
}

fn take_u32(options: &mut HashMap<String, OwnedValue>, key: &str) -> Result<Option<u32>, Error> {
    let Some(value) = options.remove(key) else {
        return Ok(None);
    };
    let signature = value.value_signature().to_string();
    u32::try_from(value).map(Some).map_err(|_| {
        Error::InvalidArgument(format!(
            "option {key} must be a number (u), not {signature}"
        ))
    })
}

fn take_bool(options: &mut HashMap<String, OwnedValue>, key: &str) -> Result<Option<bool>, Error> {
    let Some(value) = options.remove(key) else {
        return Ok(None);
    };
    let signature = value.value_signature().to_string();
    bool::try_from(value).map(Some).map_err(|_| {
        Error::InvalidArgument(format!(
            "option {key} must be a boolean (b), not {signature}"
        ))
    })
}

fn check_keys(options: &HashMap<String, OwnedValue>, accepted: &[&str]) -> Result<(), Error> {
    if options.len() > MAX_OPTIONS {
        return Err(Error::InvalidArgument(format!(
            "{} options given; at most {MAX_OPTIONS} are accepted",
            options.len()
        )));
    }
    let mut unknown: Vec<&str> = options
        .keys()
        .map(String::as_str)
        .filter(|k| !accepted.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let shown: Vec<String> = unknown
        .iter()
        .take(5)
        .map(|k| format!("{k:.64?}"))
        .collect();
    Err(Error::InvalidArgument(format!(
        "unknown option {} (accepted: {})",
        shown.join(", "),
        accepted.join(", ")
    )))
}

fn take_string(
    options: &mut HashMap<String, OwnedValue>,
    key: &str,
) -> Result<Option<String>, Error> {
    let Some(value) = options.remove(key) else {
        return Ok(None);
    };
    let signature = value.value_signature().to_string();
    String::try_from(value).map(Some).map_err(|_| {
        Error::InvalidArgument(format!(
            "option {key} must be a string (s), not {signature}"
        ))
    })
}

/// A root-relative chain folder name: one path component starting `vmsnap-backup-`.
fn folder_name(options: &mut HashMap<String, OwnedValue>) -> Result<Option<String>, Error> {
    let folder = take_string(options, keys::FOLDER)?;
    if let Some(f) = &folder {
        if !f.starts_with("vmsnap-backup-") || f.contains('/') || f.len() > 255 {
            return Err(Error::InvalidArgument(format!(
                "folder {f:.64?} is not a chain folder name (vmsnap-backup-…)"
            )));
        }
    }
    Ok(folder)
}

pub fn list_request(
    domains: &[String],
    options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<StatusRequest, Error> {
    check_keys(&options, keys::LIST_KEYS)?;
    if !options.contains_key(keys::OUTPUT) {
        return Err(Error::InvalidArgument(
            "No output directory specified (option output)".into(),
        ));
    }
    status_request(domains, options, config)
}

pub fn verify_request(
    domains: &[String],
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<VerifyRequest, Error> {
    check_keys(&options, keys::VERIFY_KEYS)?;
    let folder = folder_name(&mut options)?;
    let status = list_request(domains, options, config)?;
    Ok(VerifyRequest {
        selectors: status.selectors,
        root: status.backup_root.expect("output was given"),
        folder,
    })
}

pub fn restore_request(
    domain: &str,
    mut options: HashMap<String, OwnedValue>,
    config: &Config,
) -> Result<RestoreRequest, Error> {
    check_keys(&options, keys::RESTORE_KEYS)?;
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidArgument(e.to_string());
    let domain = crate::selection::DomainName::new(domain).map_err(|e| invalid(&e))?;
    let folder = folder_name(&mut options)?;
    let until = take_string(&mut options, keys::UNTIL)?;
    let disk = take_string(&mut options, keys::DISK)?;
    if let Some(d) = &disk {
        if d.is_empty() || d.len() > 64 || !d.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::InvalidArgument(format!(
                "disk {d:.64?} is not a target name like vda"
            )));
        }
    }
    let target = take_string(&mut options, keys::TARGET)?.ok_or_else(|| {
        Error::InvalidArgument("No restore target specified (option target)".into())
    })?;
    let target = BackupRoot::resolved(&target)
        .map_err(|e| Error::InvalidArgument(format!("target: {e}")))?;
    let overwrite = take_bool(&mut options, keys::OVERWRITE)?.unwrap_or(false);
    let define_as = take_string(&mut options, keys::DEFINE_AS)?
        .map(|n| crate::selection::DomainName::new(&n).map_err(|e| invalid(&e)))
        .transpose()?;
    let status = list_request(&[], options, config)?;
    Ok(RestoreRequest {
        domain,
        root: status.backup_root.expect("output was given"),
        folder,
        until,
        disk,
        target,
        overwrite,
        define_as,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvariant::Value;

    fn opts(pairs: &[(&str, Value<'_>)]) -> HashMap<String, OwnedValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    fn err(r: Result<StatusRequest, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn good_options_parse() {
        let req = status_request(
            &["vm*".into()],
            opts(&[
                ("output", Value::from("/backups")),
                ("group_by", Value::from("quarter")),
                ("connect", Value::from("qemu:///system")),
            ]),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(req.group_by, GroupBy::Quarter);
        assert!(req.backup_root.is_some());
    }

    #[test]
    fn bad_options_name_the_problem() {
        let c = Config::default();
        assert!(err(status_request(
            &[],
            opts(&[("outptu", Value::from("/b"))]),
            &c
        ))
        .contains("\"outptu\""));
        assert!(err(status_request(
            &[],
            opts(&[("output", Value::from(5u32))]),
            &c
        ))
        .contains("output must be a string"));
        assert!(err(status_request(
            &[],
            opts(&[("output", Value::from("rel"))]),
            &c
        ))
        .contains("not absolute"));
        assert!(err(status_request(
            &[],
            opts(&[("group_by", Value::from("monthly"))]),
            &c
        ))
        .contains("monthly"));
        assert!(err(status_request(
            &[],
            opts(&[("connect", Value::from("qemu+ssh://x/system"))]),
            &c
        ))
        .contains("differs"));
        assert!(err(status_request(&["a/b".into()], HashMap::new(), &c)).contains("'/'"));
    }
}
