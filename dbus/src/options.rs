//! The `a{sv}` option dictionaries the methods accept, as typed structs.
//!
//! Options travel as a dictionary rather than as positional arguments so that new options can be
//! added without changing a method signature (which would break every existing client). Each
//! method's dictionary is one struct here: the client builds it and sends [`to_dict`]; the
//! service reads it with [`from_dict`], which refuses unknown keys and wrongly typed values with
//! [`Error::InvalidArgument`] naming the key, so a typo never silently changes what happens.
//! What a value *means* (a path that must be absolute, a period word) is the service's to judge.
//!
//! [`to_dict`]: BackupOptions::to_dict
//! [`from_dict`]: BackupOptions::from_dict

use std::collections::HashMap;

use zvariant::{OwnedValue, Value};

use crate::Error;

/// `s`: absolute path of the backup root. With it, Status adds the statistics of the current
/// period's backup folder `<output>/<domain>/vmsnap-backup-<period>`.
pub const OUTPUT: &str = "output";

/// `s`: how backups are grouped into period folders: `month` (default), `quarter`,
/// `bi-annual` or `year`.
pub const GROUP_BY: &str = "group_by";

/// `s`: libvirt URI the caller expects the service to use. The service never connects where a
/// caller says (it runs as root); it only refuses the call when this differs from its own
/// configured URI, so a script written for another host fails loudly instead of reporting on the
/// wrong one.
pub const CONNECT: &str = "connect";

/// `b`: Verify also rebuilds each chain's newest point with virtnbdrestore and compares it
/// with the chain index's reading (and with a shut-off domain's disk).
///
/// `b`: Status also asks QEMU's monitor for the bitmaps of running domains, which shows
/// bitmaps without a checkpoint (orphans) that libvirt's API cannot. libvirt then marks those
/// domains "tainted: custom monitor control commands issued" for as long as they run, so it
/// needs the right to back up (`org.vmsnap.backup`), and is off by default.
pub const DEEP: &str = "deep";

/// `b`: after a domain's backup succeeded, prune its older period folders (see Prune).
pub const PRUNE: &str = "prune";

/// `b`: include raw disks (full or copy only; they never take part in incrementals).
pub const RAW: &str = "raw";

/// `b`: compress the backup with virtnbdbackup's lz4 (`--compress`). A chain is compressed or
/// not from its full on: a backup asking otherwise than the live chain starts a new chain, and
/// `newChainReason` says why.
pub const COMPRESS: &str = "compress";

/// `u`: with pruning, how many past periods survive besides the rule's own (default 0: the
/// original's behaviour).
pub const KEEP: &str = "keep";

/// `b`: report what would be removed, remove nothing.
pub const DRY_RUN: &str = "dry_run";

/// `s`: what Scrub removes: `checkpoint`, `bitmap`, `both` or `all`.
pub const TYPE: &str = "type";

/// `s`: Scrub only these VMSnap names: one name, or a glob with `*` and `?`.
pub const CHECKPOINT: &str = "checkpoint";

/// `s`: a chain folder's name under `<output>/<domain>/` (default: the live or latest chain).
pub const FOLDER: &str = "folder";

/// `s`: restore up to this checkpoint (default: the chain's last).
pub const UNTIL: &str = "until";

/// `s`: restore only this disk (target name, `vda`).
pub const DISK: &str = "disk";

/// `s`: absolute directory to restore into.
pub const TARGET: &str = "target";

/// `b`: replace files that already exist in the target.
pub const OVERWRITE: &str = "overwrite";

/// `s`: define a new domain of this name from the backed-up configuration.
pub const DEFINE_AS: &str = "define_as";

/// Option dictionaries larger than this are refused outright, before any key is looked at.
pub const MAX_OPTIONS: usize = 64;

/// A type an option can have, with its D-Bus signature.
pub trait OptionValue: Sized {
    /// The signature on the wire, and how an error message calls it.
    const SIGNATURE: &'static str;
    const KIND: &'static str;

    fn from_value(value: OwnedValue) -> Option<Self>;
    fn to_value(&self) -> Value<'_>;
}

impl OptionValue for String {
    const SIGNATURE: &'static str = "s";
    const KIND: &'static str = "a string";

    fn from_value(value: OwnedValue) -> Option<Self> {
        String::try_from(value).ok()
    }

    fn to_value(&self) -> Value<'_> {
        Value::from(self.as_str())
    }
}

impl OptionValue for bool {
    const SIGNATURE: &'static str = "b";
    const KIND: &'static str = "a boolean";

    fn from_value(value: OwnedValue) -> Option<Self> {
        bool::try_from(value).ok()
    }

    fn to_value(&self) -> Value<'_> {
        Value::from(*self)
    }
}

impl OptionValue for u32 {
    const SIGNATURE: &'static str = "u";
    const KIND: &'static str = "a number";

    fn from_value(value: OwnedValue) -> Option<Self> {
        u32::try_from(value).ok()
    }

    fn to_value(&self) -> Value<'_> {
        Value::from(*self)
    }
}

/// Takes `key` out of a dictionary as a `T`: absent is `None`, another type is an error naming
/// the key, the expected and the given signature.
fn take<T: OptionValue>(
    dict: &mut HashMap<String, OwnedValue>,
    key: &str,
) -> Result<Option<T>, Error> {
    let Some(value) = dict.remove(key) else {
        return Ok(None);
    };
    let given = value.value_signature().to_string();
    T::from_value(value).map(Some).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "option {key} must be {} ({}), not {given}",
            T::KIND,
            T::SIGNATURE
        ))
    })
}

/// Refuses oversized dictionaries and names (at most five) unknown keys with the accepted ones.
fn check_keys(dict: &HashMap<String, OwnedValue>, accepted: &[&str]) -> Result<(), Error> {
    if dict.len() > MAX_OPTIONS {
        return Err(Error::InvalidArgument(format!(
            "{} options given; at most {MAX_OPTIONS} are accepted",
            dict.len()
        )));
    }
    let mut unknown: Vec<&str> = dict
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

/// Declares one method's option struct: every field optional (absent keys are absent fields,
/// so the service alone decides defaults), with its key, and the two conversions.
macro_rules! option_dict {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$field_meta:meta])* $field:ident: $ty:ty = $key:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: Option<$ty>, )*
        }

        impl $name {
            /// The keys this dictionary accepts.
            pub const KEYS: &'static [&'static str] = &[$($key),*];

            /// Reads a dictionary received on the bus. Unknown keys and wrongly typed values
            /// are [`Error::InvalidArgument`] naming the key.
            pub fn from_dict(mut dict: HashMap<String, OwnedValue>) -> Result<Self, Error> {
                check_keys(&dict, Self::KEYS)?;
                Ok($name { $( $field: take(&mut dict, $key)?, )* })
            }

            /// The dictionary to send: only the options that are set. (The struct itself is not
            /// `Serialize`: zvariant 5.15 pads a dictionary serialized through a wrapper type
            /// wrongly for some key orders, and dbus-daemon drops a client that sends one.)
            pub fn to_dict(&self) -> HashMap<&'static str, Value<'_>> {
                let mut dict = HashMap::new();
                $( if let Some(value) = &self.$field {
                    dict.insert($key, value.to_value());
                } )*
                dict
            }
        }

    };
}

option_dict! {
    /// Options of `Status`.
    StatusOptions {
        output: String = OUTPUT,
        group_by: String = GROUP_BY,
        connect: String = CONNECT,
        deep: bool = DEEP,
    }
}

option_dict! {
    /// Options of `Backup` (`output` is required).
    BackupOptions {
        output: String = OUTPUT,
        group_by: String = GROUP_BY,
        connect: String = CONNECT,
        prune: bool = PRUNE,
        keep: u32 = KEEP,
        raw: bool = RAW,
        compress: bool = COMPRESS,
    }
}

option_dict! {
    /// Options of `Scrub` (`type` is required).
    ScrubOptions {
        scrub_type: String = TYPE,
        checkpoint: String = CHECKPOINT,
        dry_run: bool = DRY_RUN,
        connect: String = CONNECT,
    }
}

option_dict! {
    /// Options of `Prune` (`output` is required).
    PruneOptions {
        output: String = OUTPUT,
        group_by: String = GROUP_BY,
        keep: u32 = KEEP,
        dry_run: bool = DRY_RUN,
        connect: String = CONNECT,
    }
}

option_dict! {
    /// Options of `ListBackups` (`output` is required).
    ListOptions {
        output: String = OUTPUT,
        connect: String = CONNECT,
    }
}

option_dict! {
    /// Options of `Verify` (`output` is required).
    VerifyOptions {
        output: String = OUTPUT,
        folder: String = FOLDER,
        deep: bool = DEEP,
        connect: String = CONNECT,
    }
}

option_dict! {
    /// Options of `Restore` (`output` and `target` are required).
    RestoreOptions {
        output: String = OUTPUT,
        folder: String = FOLDER,
        until: String = UNTIL,
        disk: String = DISK,
        target: String = TARGET,
        overwrite: bool = OVERWRITE,
        define_as: String = DEFINE_AS,
        connect: String = CONNECT,
    }
}

/// `s`: OpenFiles: the point to browse (`virtnbdbackup.N`); the chain's last one by default.
pub const POINT: &str = "point";

option_dict! {
    /// Options of `OpenFiles` (`output` is required; the other keys pick the chain, the point
    /// and the disk, like Restore's).
    FilesOptions {
        output: String = OUTPUT,
        folder: String = FOLDER,
        point: String = POINT,
        disk: String = DISK,
        connect: String = CONNECT,
    }
}

option_dict! {
    /// Options of `Files.Extract` (`target` is the method's argument).
    ExtractOptions {
        overwrite: bool = OVERWRITE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client sends is what the service reads, value for value.
    fn over_the_wire(dict: HashMap<&'static str, Value<'_>>) -> HashMap<String, OwnedValue> {
        dict.into_iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    fn invalid(r: Result<BackupOptions, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_dictionary_round_trips_and_leaves_unset_options_out() {
        let sent = BackupOptions {
            output: Some("/srv/backups".into()),
            prune: Some(true),
            keep: Some(3),
            ..Default::default()
        };
        let dict = sent.to_dict();
        assert_eq!(dict.len(), 3, "{dict:?}");
        assert_eq!(BackupOptions::from_dict(over_the_wire(dict)).unwrap(), sent);
        let restore = RestoreOptions {
            target: Some("/t".into()),
            overwrite: Some(false),
            ..Default::default()
        };
        let back = RestoreOptions::from_dict(over_the_wire(restore.to_dict())).unwrap();
        assert_eq!(back, restore);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let mut dict = over_the_wire(HashMap::from([
            ("outptu", Value::from("/b")),
            ("zz", Value::from(1u32)),
        ]));
        let msg = invalid(BackupOptions::from_dict(dict.clone()));
        assert!(msg.contains("\"outptu\", \"zz\""), "{msg}");
        assert!(msg.contains("accepted: output, group_by"), "{msg}");
        dict.clear();
        dict.insert(KEEP.into(), Value::from("3").try_to_owned().unwrap());
        let msg = invalid(BackupOptions::from_dict(dict));
        assert_eq!(msg, "option keep must be a number (u), not s");
        // A key another method accepts is still unknown here.
        let dict = over_the_wire(HashMap::from([(TARGET, Value::from("/t"))]));
        assert!(invalid(BackupOptions::from_dict(dict)).contains("\"target\""));
    }

    #[test]
    fn oversized_dictionaries_are_refused_whole() {
        let dict: HashMap<String, OwnedValue> = (0..=MAX_OPTIONS)
            .map(|i| (format!("k{i}"), Value::from(true).try_to_owned().unwrap()))
            .collect();
        assert!(invalid(BackupOptions::from_dict(dict)).contains("at most 64"));
    }
}
