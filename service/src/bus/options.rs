//! From a method's typed options to the engine's request.
//!
//! The contract's option structs (`vmsnap_dbus::options`) have already refused unknown keys and
//! wrongly typed values; this judges what the values mean — names and paths a caller gives, a
//! period word, the URI — before anything reaches the engine. Each refusal is
//! `InvalidArgument` naming the option. It runs after the caller's authorization, because
//! resolving a path already looks at the host's file system.

use vmsnap_dbus::options::{
    BackupOptions, ListOptions, PruneOptions, RestoreOptions, ScrubOptions, StatusOptions,
    VerifyOptions,
};
use vmsnap_dbus::Error;

use crate::engine::backup::BackupRequest;
use crate::engine::prune::PruneRequest;
use crate::engine::restore::RestoreRequest;
use crate::engine::scrub::{ScrubRequest, ScrubType};
use crate::engine::status::StatusRequest;
use crate::engine::verify::VerifyRequest;
use crate::engine::vocabulary::{is_point_name, GroupBy};
use crate::engine::Config;
use crate::paths::BackupRoot;
use crate::selection::{self, DomainName, Selector};

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(e.to_string())
}

fn selectors(domains: &[String]) -> Result<Vec<Selector>, Error> {
    selection::parse_all(domains).map_err(invalid)
}

/// An absolute directory the caller names (`output`, `target`), its symlinks resolved once.
fn directory(path: &str, key: &str) -> Result<BackupRoot, Error> {
    BackupRoot::resolved(path).map_err(|e| Error::InvalidArgument(format!("{key}: {e}")))
}

fn required_output(output: Option<String>) -> Result<BackupRoot, Error> {
    let output = output.ok_or_else(|| {
        Error::InvalidArgument("No output directory specified (option output)".into())
    })?;
    directory(&output, "output")
}

fn group_by(word: Option<String>) -> Result<GroupBy, Error> {
    match word {
        None => Ok(GroupBy::default()),
        Some(word) => GroupBy::parse(&word).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "group_by {word:.64?} is not one of {}",
                GroupBy::NAMES.join(", ")
            ))
        }),
    }
}

/// The service never connects where a caller says; a call meant for another URI is refused.
fn check_connect(uri: Option<String>, config: &Config) -> Result<(), Error> {
    match uri {
        Some(uri) if uri != config.libvirt_uri => Err(Error::InvalidArgument(format!(
            "connect {uri:.256?} differs from the service's libvirt URI {:?}; \
             the URI is set in the service's configuration",
            config.libvirt_uri
        ))),
        _ => Ok(()),
    }
}

pub fn status_request(
    domains: &[String],
    options: StatusOptions,
    config: &Config,
) -> Result<StatusRequest, Error> {
    let selectors = selectors(domains)?;
    let backup_root = options
        .output
        .map(|p| directory(&p, "output"))
        .transpose()?;
    let group_by = group_by(options.group_by)?;
    check_connect(options.connect, config)?;
    Ok(StatusRequest {
        deep: options.deep.unwrap_or(false),
        selectors,
        backup_root,
        group_by,
    })
}

pub fn backup_request(
    domains: &[String],
    options: BackupOptions,
    config: &Config,
) -> Result<BackupRequest, Error> {
    let prune = options.prune.unwrap_or(false);
    if options.keep.is_some() && !prune {
        return Err(Error::InvalidArgument(
            "keep is only meaningful with prune".into(),
        ));
    }
    let selectors = selectors(domains)?;
    let root = required_output(options.output)?;
    let group_by = group_by(options.group_by)?;
    check_connect(options.connect, config)?;
    Ok(BackupRequest {
        selectors,
        root,
        group_by,
        raw: options.raw.unwrap_or(false),
        compress: options.compress.unwrap_or(false),
        prune_keep: prune.then(|| options.keep.unwrap_or(0)),
    })
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
    options: ScrubOptions,
    config: &Config,
) -> Result<ScrubRequest, Error> {
    explicit_selection(domains, "scrub")?;
    let word = options
        .scrub_type
        .ok_or_else(|| Error::InvalidArgument("Invalid scrub type: (none)".into()))?;
    let kind = ScrubType::parse(&word).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "Invalid scrub type: {word:.64} (one of {})",
            ScrubType::NAMES.join(", ")
        ))
    })?;
    if let Some(n) = &options.checkpoint {
        if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {n:.64?} is not a valid name"
            )));
        }
    }
    let selectors = selectors(domains)?;
    check_connect(options.connect, config)?;
    Ok(ScrubRequest {
        selectors,
        kind,
        name: options.checkpoint,
        dry_run: options.dry_run.unwrap_or(false),
    })
}

pub fn prune_request(
    domains: &[String],
    options: PruneOptions,
    config: &Config,
) -> Result<PruneRequest, Error> {
    explicit_selection(domains, "prune")?;
    let selectors = selectors(domains)?;
    let root = required_output(options.output)?;
    let group_by = group_by(options.group_by)?;
    check_connect(options.connect, config)?;
    Ok(PruneRequest {
        selectors,
        root,
        group_by,
        keep: options.keep.unwrap_or(0),
        dry_run: options.dry_run.unwrap_or(false),
    })
}

/// A root-relative chain folder name: one path component starting `vmsnap-backup-`.
fn folder_name(folder: Option<String>) -> Result<Option<String>, Error> {
    if let Some(f) = &folder {
        if !f.starts_with("vmsnap-backup-") || f.contains('/') || f.len() > 255 {
            return Err(Error::InvalidArgument(format!(
                "folder {f:.64?} is not a chain folder name (vmsnap-backup-…)"
            )));
        }
    }
    Ok(folder)
}

/// What ListBackups reads: the selected domains' folders under a root.
pub struct ListRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
}

pub fn list_request(
    domains: &[String],
    options: ListOptions,
    config: &Config,
) -> Result<ListRequest, Error> {
    let selectors = selectors(domains)?;
    let root = required_output(options.output)?;
    check_connect(options.connect, config)?;
    Ok(ListRequest { selectors, root })
}

pub fn verify_request(
    domains: &[String],
    options: VerifyOptions,
    config: &Config,
) -> Result<VerifyRequest, Error> {
    let folder = folder_name(options.folder)?;
    let selectors = selectors(domains)?;
    let root = required_output(options.output)?;
    check_connect(options.connect, config)?;
    Ok(VerifyRequest {
        selectors,
        root,
        folder,
        deep: options.deep.unwrap_or(false),
    })
}

/// A disk option: a target name like `vda` (it reaches virtnbdrestore's command line).
fn check_disk(disk: Option<&str>) -> Result<(), Error> {
    match disk {
        Some(d)
            if d.is_empty() || d.len() > 64 || !d.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            Err(Error::InvalidArgument(format!(
                "disk {d:.64?} is not a target name like vda"
            )))
        }
        _ => Ok(()),
    }
}

pub fn restore_request(
    domain: &str,
    options: RestoreOptions,
    config: &Config,
) -> Result<RestoreRequest, Error> {
    let domain = DomainName::new(domain).map_err(invalid)?;
    let folder = folder_name(options.folder)?;
    check_disk(options.disk.as_deref())?;
    let target = options.target.ok_or_else(|| {
        Error::InvalidArgument("No restore target specified (option target)".into())
    })?;
    let target = directory(&target, "target")?;
    let define_as = options
        .define_as
        .map(|n| DomainName::new(&n).map_err(invalid))
        .transpose()?;
    let root = required_output(options.output)?;
    check_connect(options.connect, config)?;
    Ok(RestoreRequest {
        domain,
        root,
        folder,
        until: options.until,
        disk: options.disk,
        target,
        overwrite: options.overwrite.unwrap_or(false),
        define_as,
    })
}

/// An `OpenFiles` call as an engine request.
pub fn files_request(
    domain: &str,
    options: vmsnap_dbus::options::FilesOptions,
    config: &Config,
) -> Result<crate::engine::files::FilesRequest, Error> {
    let domain = DomainName::new(domain).map_err(invalid)?;
    let folder = folder_name(options.folder)?;
    check_disk(options.disk.as_deref())?;
    if let Some(p) = &options.point {
        if !is_point_name(p) {
            return Err(Error::InvalidArgument(format!(
                "point {p:.64?} is not a point name like virtnbdbackup.2"
            )));
        }
    }
    let root = required_output(options.output)?;
    check_connect(options.connect, config)?;
    Ok(crate::engine::files::FilesRequest {
        domain,
        root,
        folder,
        point: options.point,
        disk: options.disk,
    })
}

/// An extraction's target directory.
pub fn extract_target(target: &str) -> Result<BackupRoot, Error> {
    directory(target, "target")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn status(options: StatusOptions) -> Result<StatusRequest, Error> {
        status_request(&[], options, &Config::default())
    }

    #[test]
    fn good_options_parse() {
        let req = status_request(
            &["vm*".into()],
            StatusOptions {
                output: Some("/backups".into()),
                group_by: Some("quarter".into()),
                connect: Some("qemu:///system".into()),
                deep: None,
            },
            &Config::default(),
        )
        .unwrap();
        assert_eq!(req.group_by, GroupBy::Quarter);
        assert!(req.backup_root.is_some());
    }

    #[test]
    fn bad_values_name_the_problem() {
        let c = Config::default();
        assert!(err(status(StatusOptions {
            output: Some("rel".into()),
            ..Default::default()
        }))
        .contains("not absolute"));
        assert!(err(status(StatusOptions {
            group_by: Some("monthly".into()),
            ..Default::default()
        }))
        .contains("monthly"));
        assert!(err(status(StatusOptions {
            connect: Some("qemu+ssh://x/system".into()),
            ..Default::default()
        }))
        .contains("differs"));
        assert!(err(status_request(
            &["a/b".into()],
            StatusOptions::default(),
            &c
        ))
        .contains("'/'"));
        let keep_alone = BackupOptions {
            output: Some("/b".into()),
            keep: Some(2),
            ..Default::default()
        };
        assert!(err(backup_request(&["vm".into()], keep_alone, &c)).contains("only meaningful"));
        assert!(err(prune_request(&[], PruneOptions::default(), &c)).contains("no domains"));
        assert!(err(verify_request(
            &[],
            VerifyOptions {
                output: Some("/b".into()),
                folder: Some("../etc".into()),
                ..Default::default()
            },
            &c
        ))
        .contains("not a chain folder"));
        assert!(err(restore_request(
            "vm",
            RestoreOptions {
                output: Some("/b".into()),
                target: Some("/t".into()),
                disk: Some("vda/../x".into()),
                ..Default::default()
            },
            &c
        ))
        .contains("not a target name"));
    }
}
