//! The original VMSnap's command line, `--domains=… --status | --backup | --scrub …`, kept as a
//! compatibility form: it is turned into the subcommand it means, so both forms run one code.
//!
//! The original ignored switches it did not know. VMSnap does so only where that cannot change
//! what happens — a status report warns and goes on — and refuses them where something is
//! changed: a mistyped `--keeep=3` must not let a backup prune with the default.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::args::{
    BackupArgs, Cli, Command, DryRun, Legacy, Root, ScrubArgs, Selection, StatusArgs, Wait,
};
use crate::{exit, Failure};

/// Parses the command line; a usage error ends the process with clap's message (exit 2).
pub fn parse(argv: Vec<String>) -> Cli {
    let error = match Cli::try_parse_from(&argv) {
        Ok(cli) => return mixed_forms_refused(cli),
        Err(e) => e,
    };
    if error.kind() == ErrorKind::UnknownArgument {
        let (kept, dropped) = drop_unknown_switches(&argv);
        if let Ok(cli) = Cli::try_parse_from(&kept) {
            if cli.command.is_none() && !cli.legacy.backup && !cli.legacy.scrub {
                for switch in &dropped {
                    eprintln!("vmsnapctl: warning: ignoring unknown switch {switch}");
                }
                return cli;
            }
        }
    }
    error.exit()
}

/// A subcommand with the compatibility form's switches before it (`vmsnapctl --output X
/// backup vm1`) is refused: which of the two forms' meaning was wanted is a guess.
fn mixed_forms_refused(cli: Cli) -> Cli {
    if cli.command.is_some() && cli.legacy != Legacy::default() {
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                "the original VMSnap's switches (--domains, --status, --backup, --scrub, \
                 --output, …) stand without a subcommand; give a subcommand's options after it \
                 (`vmsnapctl backup DOMAIN --output DIR`)",
            )
            .exit()
    }
    cli
}

/// Splits `argv` into what the compatibility form knows and the unknown `--switches` that can
/// be left out without changing what the rest means: `--unknown value` (where `value` would be
/// read as something else) stays in, for clap to refuse.
fn drop_unknown_switches(argv: &[String]) -> (Vec<String>, Vec<String>) {
    let root = Cli::command();
    let mut known: Vec<String> = vec!["help".into(), "version".into()];
    for arg in root.get_arguments() {
        known.extend(arg.get_long().map(String::from));
        known.extend(
            arg.get_all_aliases()
                .into_iter()
                .flatten()
                .map(String::from),
        );
    }
    let mut kept = Vec::with_capacity(argv.len());
    let mut dropped = Vec::new();
    let mut rest_is_positional = false;
    for (i, a) in argv.iter().enumerate() {
        if rest_is_positional || i == 0 || !a.starts_with("--") || a == "--" {
            rest_is_positional |= a == "--";
            kept.push(a.clone());
            continue;
        }
        let name = a[2..].split('=').next().unwrap_or_default();
        let takes_next =
            !a.contains('=') && argv.get(i + 1).is_some_and(|next| !next.starts_with('-'));
        if known.iter().any(|k| k == name) || takes_next {
            kept.push(a.clone());
        } else {
            dropped.push(a.clone());
        }
    }
    (kept, dropped)
}

impl Legacy {
    /// The subcommand the switches mean. Switches that do not apply to the chosen action are
    /// refused when it changes things (a `--dry-run` given to `--backup` must not back up) and
    /// ignored with a warning for a status report.
    pub fn into_command(self) -> Result<Command, Failure> {
        let actions = [self.status, self.backup, self.scrub];
        if actions.iter().filter(|a| **a).count() > 1 {
            return Err(Failure::new(
                exit::TOO_MANY_COMMANDS,
                "Only one command can be run at a time",
            ));
        }
        let o = &self.backup_options;
        let backup_only = [
            ("--raw", o.raw),
            ("--compress", o.compress),
            ("--prune", o.prune),
            ("--keep", o.keep.is_some()),
        ];
        let scrub_only = [
            ("--scrubType", self.scrub_type.is_some()),
            ("--checkpointName", self.checkpoint_name.is_some()),
            ("--dry-run", self.dry_run),
        ];
        let selection = Selection {
            names: self.domains,
        };
        if self.backup {
            refuse("--backup", &scrub_only)?;
            return Ok(Command::Backup(BackupArgs {
                selection,
                root: Root {
                    output: self.output,
                },
                period: self.period,
                options: self.backup_options,
                wait: Wait::default(),
                libvirt: self.libvirt,
            }));
        }
        if self.scrub {
            refuse("--scrub", &backup_only)?;
            return Ok(Command::Scrub(ScrubArgs {
                selection,
                kind: self.scrub_type.unwrap_or_default(),
                checkpoint_name: self.checkpoint_name,
                dry_run: DryRun {
                    dry_run: self.dry_run,
                },
                libvirt: self.libvirt,
            }));
        }
        for (switch, _) in backup_only.iter().chain(&scrub_only).filter(|(_, s)| *s) {
            eprintln!("vmsnapctl: warning: {switch} does not apply to --status; ignored");
        }
        Ok(Command::Status(StatusArgs {
            selection,
            deep: false,
            output: self.output,
            period: self.period,
            libvirt: self.libvirt,
        }))
    }
}

fn refuse(action: &str, given: &[(&str, bool)]) -> Result<(), Failure> {
    match given.iter().find(|(_, set)| *set) {
        Some((switch, _)) => Err(Failure::new(
            exit::USAGE,
            format!("{switch} does not apply to {action}; nothing was done"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_switches_are_dropped_only_when_harmless() {
        let (kept, dropped) = drop_unknown_switches(&argv(&[
            "vmsnapctl",
            "--domains=vm1",
            "--scrub",
            "--scrubType=bitmap",
            "--bitmapName=*",
            "--frobnicate",
        ]));
        assert_eq!(
            kept,
            argv(&[
                "vmsnapctl",
                "--domains=vm1",
                "--scrub",
                "--scrubType=bitmap"
            ])
        );
        assert_eq!(dropped, argv(&["--bitmapName=*", "--frobnicate"]));
        // `--unknown value` is left for clap to refuse: `value` must not become a domain.
        let (kept, dropped) = drop_unknown_switches(&argv(&["vmsnapctl", "--bogus", "vm1"]));
        assert_eq!(kept.len(), 3);
        assert!(dropped.is_empty());
    }

    #[test]
    fn the_compatibility_form_becomes_the_subcommand_it_means() {
        let cli = parse(argv(&[
            "vmsnapctl",
            "--domains=vm1,vm2",
            "--output=/b",
            "--backup",
            "--prune",
            "--no-prune",
            "--raw",
        ]));
        let Ok(Command::Backup(b)) = cli.legacy.into_command() else {
            panic!("not a backup")
        };
        assert_eq!(b.selection.names, ["vm1,vm2"]);
        assert_eq!(b.root.output.as_deref(), Some("/b"));
        assert!(b.options.raw && !b.options.prune);

        let cli = parse(argv(&[
            "vmsnapctl",
            "--domains=vm1",
            "--backup",
            "--dry-run",
        ]));
        let refused = cli.legacy.into_command().unwrap_err();
        assert_eq!(refused.code, exit::USAGE);
        assert!(refused
            .message
            .contains("--dry-run does not apply to --backup"));

        let cli = parse(argv(&["vmsnapctl", "--domains=vm1", "--status", "--scrub"]));
        assert_eq!(
            cli.legacy.into_command().unwrap_err().code,
            exit::TOO_MANY_COMMANDS
        );
    }

    #[test]
    fn a_typo_stops_the_changing_forms_and_every_subcommand() {
        for line in [
            &[
                "vmsnapctl",
                "--domains=vm1",
                "--backup",
                "--output=/b",
                "--keeep=3",
            ][..],
            &[
                "vmsnapctl",
                "--domains=vm1",
                "--scrub",
                "--scrubType=both",
                "--dryrun",
            ],
            &["vmsnapctl", "prune", "vm1", "--output", "/b", "--keeep=3"],
            &[
                "vmsnapctl",
                "backup",
                "vm1",
                "--output",
                "/b",
                "--compresss",
            ],
            &["vmsnapctl", "verify", "vm1", "--output", "/b", "--raw"],
        ] {
            let e = Cli::try_parse_from(line).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnknownArgument, "{line:?}");
        }
    }
}
