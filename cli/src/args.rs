//! Command line: vmsnapctl's own subcommands plus the original VMSnap's switches.
//!
//! Both spellings reach the same request: `vmsnapctl status vm1 vm2` and
//! `vmsnapctl --domains=vm1,vm2 --status` are one thing. Output switches are global, so they
//! may stand before or after the subcommand.

use clap::{ArgAction, Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vmsnapctl",
    version,
    about = "Incremental backups of libvirt/KVM domains, through the vmsnapd service",
    after_help = "Without a subcommand, the original VMSnap switches apply: \
                  --domains=LIST [--status].\n\
                  Exit codes: 0 success, 1 selection error, 2 usage error, 3 failure, \
                  4 missing host program, 9 service unreachable."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Domains: names, `*`, or globs with `*` and `?`; comma lists allowed, repeatable.
    #[arg(long, value_name = "LIST", action = ArgAction::Append, global = true)]
    pub domains: Vec<String>,

    /// Show the status (the default action; kept from the original VMSnap).
    #[arg(long)]
    pub status: bool,

    /// Back up the --domains into --output (the original VMSnap's form of `backup`).
    #[arg(long)]
    pub backup: bool,

    /// Remove checkpoints and/or bitmaps of the --domains (the original's form of `scrub`).
    #[arg(long)]
    pub scrub: bool,

    /// With --scrub: checkpoint, bitmap, both, or * (all).
    #[arg(long = "scrub-type", visible_alias = "scrubType", value_name = "TYPE")]
    pub scrub_type: Option<String>,

    /// With --scrub: only this checkpoint name (a glob with * and ? is allowed).
    #[arg(
        long = "checkpoint-name",
        visible_alias = "checkpointName",
        value_name = "NAME",
        global = true
    )]
    pub checkpoint_name: Option<String>,

    /// Report what would be removed, remove nothing (scrub, prune).
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Never ask for a password (no authentication agent, no interactive authorization).
    #[arg(long, global = true)]
    pub no_ask_password: bool,

    #[command(flatten)]
    pub backup_opts: BackupArgs,

    #[command(flatten)]
    pub format: FormatArgs,

    /// Print a man page or a shell completion script generated from these definitions (for
    /// packagers), and exit.
    #[arg(long, value_enum, value_name = "KIND", hide_short_help = true)]
    pub generate: Option<Generate>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `--generate` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Generate {
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

/// Writes the man page or completion script to stdout.
pub fn generate(kind: Generate) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let shell = match kind {
        Generate::Man => return clap_mangen::Man::new(cmd).render(&mut out),
        Generate::CompleteBash => clap_complete::Shell::Bash,
        Generate::CompleteZsh => clap_complete::Shell::Zsh,
        Generate::CompleteFish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "vmsnapctl", &mut out);
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show checkpoints, disks, bitmaps and backup-folder statistics of domains.
    Status {
        /// Domains (names, `*`, globs; comma lists allowed). None: all domains.
        #[arg(value_name = "DOMAIN")]
        names: Vec<String>,
        /// Also ask QEMU itself for every bitmap. libvirt then marks running domains
        /// "tainted: custom monitor control commands issued"; needs the backup right.
        #[arg(long)]
        deep: bool,
    },
    /// Back up domains: a full backup starts the period's chain, later ones are incremental.
    Backup {
        /// Domains (names, `*`, globs; comma lists allowed).
        #[arg(value_name = "DOMAIN")]
        names: Vec<String>,
    },
    /// Remove VMSnap checkpoints and bitmaps (administrators only).
    Scrub {
        /// Domains (names, `*`, globs; comma lists allowed).
        #[arg(value_name = "DOMAIN", required = true)]
        names: Vec<String>,
        /// checkpoint, bitmap, both, or all (`*`).
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
    },
    /// Delete old period folders under --output (administrators only).
    Prune {
        /// Domains (names, `*`, globs; comma lists allowed).
        #[arg(value_name = "DOMAIN", required = true)]
        names: Vec<String>,
    },
    /// List the backup chains under --output and their points.
    Backups {
        #[arg(value_name = "DOMAIN")]
        names: Vec<String>,
    },
    /// Verify every point of the chains under --output (checksums, rebuild, qemu-img check).
    Verify {
        #[arg(value_name = "DOMAIN")]
        names: Vec<String>,
        /// Only this chain folder.
        #[arg(long, value_name = "NAME")]
        folder: Option<String>,
    },
    /// Restore a domain's backup into a directory (administrators only).
    Restore {
        #[arg(value_name = "DOMAIN")]
        domain: String,
        /// Directory to restore into.
        #[arg(long, value_name = "DIR")]
        target: String,
        /// Chain folder (default: the live chain, else the newest).
        #[arg(long, value_name = "NAME")]
        folder: Option<String>,
        /// Restore up to this checkpoint (default: the last).
        #[arg(long, value_name = "CHECKPOINT")]
        until: Option<String>,
        /// Only this disk (vda).
        #[arg(long, value_name = "DISK")]
        disk: Option<String>,
        /// Replace files that already exist in the target.
        #[arg(long)]
        overwrite: bool,
        /// Define a new domain of this name from the backed-up configuration.
        #[arg(long, value_name = "NAME")]
        define_as: Option<String>,
    },
    /// List the service's jobs (running and recently finished).
    Jobs,
    /// Cancel a job (its number or object path).
    Cancel {
        #[arg(value_name = "JOB")]
        job: String,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct BackupArgs {
    /// Also back up raw disks (in full backups; they cannot take part in incrementals).
    #[arg(long, global = true)]
    pub raw: bool,

    /// Compress the backup with virtnbdbackup's lz4. A chain is compressed or not from its full
    /// on: asking otherwise than the live chain starts a new chain (the result says why).
    #[arg(long, global = true)]
    pub compress: bool,

    /// Prune old period folders after each successful backup (see `prune`).
    #[arg(long, global = true, overrides_with = "no_prune")]
    pub prune: bool,

    /// With pruning: how many past periods survive besides the rule's own (default 0).
    #[arg(long, global = true, value_name = "N")]
    pub keep: Option<u32>,

    /// Do not prune (the default).
    #[arg(long, global = true, overrides_with = "prune")]
    pub no_prune: bool,

    /// Print the job's path and return instead of waiting for the end.
    #[arg(long, global = true)]
    pub no_wait: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FormatArgs {
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print YAML.
    #[arg(long, visible_alias = "yml", global = true)]
    pub yaml: bool,

    /// One compact document and nothing else on stdout (JSON unless --yaml).
    #[arg(long, global = true)]
    pub machine: bool,

    /// Human-readable sizes (1.07 GB).
    #[arg(long, global = true)]
    pub pretty: bool,

    /// More detail in text output, and debug messages on stderr.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// Backup root; with status, adds statistics of the current period's folder.
    #[arg(long, value_name = "DIR", global = true)]
    pub output: Option<String>,

    /// Period grouping of backup folders: month, quarter, bi-annual, year.
    #[arg(
        long = "group-by",
        visible_alias = "groupBy",
        value_name = "PERIOD",
        global = true
    )]
    pub group_by: Option<String>,

    /// libvirt URI the service must be using (it refuses the call otherwise).
    #[arg(long, value_name = "URI", global = true)]
    pub connect: Option<String>,

    /// Seconds to wait for the service's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, global = true)]
    pub timeout: u64,
}

/// The original VMSnap accepted unknown switches silently (scripts pass `--bitmapName=*`).
/// VMSnap warns about them and goes on without them, as long as that cannot change what the
/// command means: `--unknown value` (where `value` would be read as a domain) stays an error.
pub fn drop_unknown_switches(argv: Vec<String>) -> (Vec<String>, Vec<String>) {
    use clap::CommandFactory;
    let mut known: Vec<String> = Vec::new();
    let mut collect = |cmd: &clap::Command| {
        for arg in cmd.get_arguments() {
            known.extend(arg.get_long().map(String::from));
            known.extend(
                arg.get_all_aliases()
                    .into_iter()
                    .flatten()
                    .map(String::from),
            );
        }
    };
    let root = Cli::command();
    collect(&root);
    for sub in root.get_subcommands() {
        collect(sub);
    }
    known.extend(["help".to_string(), "version".to_string()]);
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
        let name = name
            .strip_prefix("no-")
            .filter(|n| known.iter().any(|k| k == n))
            .unwrap_or(name);
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

/// Splits comma lists, trims every item and drops empty ones.
pub fn split_domains<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| i.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl CommonArgs {
    /// How long one call to the service may take (`--timeout`, at least a second).
    pub fn call_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_switches_are_dropped_only_when_harmless() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (kept, dropped) = drop_unknown_switches(argv(&[
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
        let (kept, dropped) =
            drop_unknown_switches(argv(&["vmsnapctl", "status", "--bogus", "vm1"]));
        assert_eq!(kept.len(), 4);
        assert!(dropped.is_empty());
    }

    #[test]
    fn comma_lists_are_split_and_trimmed() {
        assert_eq!(
            split_domains(&["vm1, vm2", ",vm3,,", " "]),
            ["vm1", "vm2", "vm3"]
        );
    }

    #[test]
    fn both_forms_parse() {
        let legacy = Cli::try_parse_from([
            "vmsnapctl",
            "--domains=vm1,vm2",
            "--status",
            "--json",
            "--machine",
            "--groupBy=year",
        ])
        .unwrap();
        assert!(legacy.command.is_none() && legacy.status && legacy.format.json);
        assert_eq!(legacy.common.group_by.as_deref(), Some("year"));
        let backup = Cli::try_parse_from([
            "vmsnapctl",
            "--domains=vm1",
            "--output=/b",
            "--backup",
            "--prune",
            "--no-prune",
            "--raw",
        ])
        .unwrap();
        assert!(backup.backup && backup.backup_opts.raw && !backup.backup_opts.prune);
        let modern = Cli::try_parse_from(["vmsnapctl", "status", "vm1", "vm2", "--yml"]).unwrap();
        assert!(
            matches!(modern.command, Some(Command::Status { ref names, .. }) if names.len() == 2)
        );
        assert!(modern.format.yaml);
    }
}
