//! Command line: vmsnapctl's own subcommands, each with only its own options, and the original
//! VMSnap's flat switches as a compatibility form.
//!
//! `vmsnapctl status vm1 vm2` and `vmsnapctl --domains=vm1,vm2 --status` are one request: the
//! compatibility form is turned into the subcommand it means ([`Legacy::into_command`]) and
//! runs the same code. Output and session switches are global, so they may stand before or
//! after the subcommand; everything else belongs to one subcommand, and an unknown option is
//! clap's usual error (exit 2) — a typo must never let a command go ahead without it.

use clap::{ArgAction, Args, Parser, Subcommand};

/// The exit-code table of `exit.rs`, for the help and the man page.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success, 1 selection error, 2 usage error, 3 failure, \
         4 missing host program, 5 incomplete, 7 more than one action, 8 invalid scrub type, \
         9 service unreachable, 10 job failed, 11 job cancelled, 12 not authorized, \
         13 target not empty, 14 not writable for the service, 15 untrusted path, 16 busy, \
         17 job not cancelable, 18 no such file, 19 unreadable volume, \
         20 corrupt file system, 21 no space, 22 corrupt backup."
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "vmsnapctl",
    version,
    about = "Incremental backups of libvirt/KVM domains, through the vmsnapd service",
    after_help = concat!(
        "Examples:\n  vmsnapctl list --output /var/lib/vmsnap\n  \
         vmsnapctl backup 'web*' --output /var/lib/vmsnap\n  \
         vmsnapctl --domains=web1 --status     (the original VMSnap's form)\n\n",
        exit_codes!()
    ),
    after_long_help = concat!(
        "Examples:\n  \
         vmsnapctl list --output /var/lib/vmsnap             one line per domain\n  \
         vmsnapctl status web1 --output /var/lib/vmsnap      the original's full report\n  \
         vmsnapctl backup 'web*' --output /var/lib/vmsnap    back up, following progress\n  \
         vmsnapctl backup '*' --output /var/lib/vmsnap --compress --no-wait\n  \
         vmsnapctl wait 7                                     follow job 7 to its end\n  \
         vmsnapctl jobs --watch                               follow every running job\n  \
         vmsnapctl backups web1 --output /var/lib/vmsnap     chains and points\n  \
         vmsnapctl verify web1 --output /var/lib/vmsnap\n  \
         vmsnapctl restore web1 --output /var/lib/vmsnap --target /var/tmp/web1 \
         --until virtnbdbackup.2\n  \
         vmsnapctl prune web1 --output /var/lib/vmsnap --keep 1 --dry-run\n  \
         vmsnapctl scrub web1 --type both --dry-run\n\n\
         The original VMSnap's form, kept for its scripts:\n  \
         vmsnapctl --domains=web1,web2 --status --output=/var/lib/vmsnap\n  \
         vmsnapctl --domains='*' --backup --output=/var/lib/vmsnap --prune\n\
         There, an unknown switch stops --backup and --scrub (exit 2) and is only a warning for \
         --status; subcommands refuse every unknown option.\n\n",
        exit_codes!()
    )
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub legacy: Legacy,

    #[command(flatten)]
    pub format: FormatArgs,

    #[command(flatten)]
    pub session: SessionArgs,

    /// Print a man page or a shell completion script generated from these definitions (for
    /// packagers), and exit.
    #[arg(long, value_enum, value_name = "KIND", hide_short_help = true)]
    pub generate: Option<Generate>,
}

/// What `--generate` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Generate {
    Man,
    CompleteBash,
    CompleteZsh,
    CompleteFish,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show checkpoints, disks, bitmaps and backup-folder statistics of domains.
    #[command(after_help = "Examples:\n  vmsnapctl status\n  \
        vmsnapctl status web1 --output /var/lib/vmsnap --json")]
    Status(StatusArgs),
    /// One line per domain: state, verdict, checkpoints, changes since the last checkpoint,
    /// and with --output its live chain.
    #[command(after_help = "Examples:\n  vmsnapctl list\n  \
        vmsnapctl list 'web*' --output /var/lib/vmsnap")]
    List(ListArgs),
    /// Back up domains: a full backup starts the period's chain, later ones are incremental.
    #[command(
        after_help = "Examples:\n  vmsnapctl backup web1 --output /var/lib/vmsnap\n  \
        vmsnapctl backup '*' --output /var/lib/vmsnap --compress --prune --keep 1 --no-wait"
    )]
    Backup(BackupArgs),
    /// Remove VMSnap checkpoints and bitmaps (administrators only).
    #[command(
        after_help = "Examples:\n  vmsnapctl scrub web1 --type both --dry-run\n  \
        vmsnapctl scrub web1 --type checkpoint --checkpoint-name 'virtnbdbackup.*'"
    )]
    Scrub(ScrubArgs),
    /// Delete old period folders under --output (administrators only).
    #[command(
        after_help = "Examples:\n  vmsnapctl prune web1 --output /var/lib/vmsnap --dry-run\n  \
        vmsnapctl prune '*' --output /var/lib/vmsnap --keep 2"
    )]
    Prune(PruneArgs),
    /// List the backup chains under --output and their points.
    #[command(after_help = "Example:\n  vmsnapctl backups web1 --output /var/lib/vmsnap")]
    Backups(BackupsArgs),
    /// Verify every point of the chains under --output: checksums, every frame, every point's
    /// index, in one read; --deep adds a rebuild of the newest point.
    #[command(
        after_help = "Examples:\n  vmsnapctl verify web1 --output /var/lib/vmsnap\n  \
        vmsnapctl verify web1 --output /var/lib/vmsnap --folder vmsnap-backup-monthly-2026-12\n  \
        vmsnapctl verify web1 --output /var/lib/vmsnap --deep"
    )]
    Verify(VerifyArgs),
    /// Restore a domain's backup into a directory (administrators only).
    #[command(after_help = "Examples:\n  \
        vmsnapctl restore web1 --output /var/lib/vmsnap --target /var/tmp/web1\n  \
        vmsnapctl restore web1 --output /var/lib/vmsnap --target /var/lib/libvirt/images/web1-old \
        --until virtnbdbackup.3 --define-as web1-old")]
    Restore(RestoreArgs),
    /// Browse the files inside a backup point and copy some out, or serve the whole disk over
    /// NBD (browsing needs the org.vmsnap.browse right, copying out and serving the restore
    /// right).
    #[command(after_help = "Examples:\n  \
        vmsnapctl files web1 --output /var/lib/vmsnap ls\n  \
        vmsnapctl files web1 --output /var/lib/vmsnap --point virtnbdbackup.2 ls --volume 1 /etc\n  \
        vmsnapctl files web1 --output /var/lib/vmsnap --point virtnbdbackup.2 get --volume 1 \
        /etc/hosts /home/alice --target /var/lib/vmsnap/restored\n  \
        vmsnapctl files web1 --output /var/lib/vmsnap --point virtnbdbackup.2 export")]
    Files(FilesArgs),
    /// List the service's jobs (running and recently finished).
    #[command(after_help = "Examples:\n  vmsnapctl jobs\n  vmsnapctl jobs --watch")]
    Jobs(JobsArgs),
    /// Follow a job started elsewhere (the timer, another user, a Cockpit page) to its end.
    /// Ctrl-C stops following; the job goes on.
    #[command(after_help = "Example:\n  vmsnapctl wait 7")]
    Wait {
        /// The job: its number or object path.
        #[arg(value_name = "JOB")]
        job: String,
    },
    /// Cancel a job (its number or object path).
    #[command(after_help = "Example:\n  vmsnapctl cancel 7")]
    Cancel {
        /// The job: its number or object path.
        #[arg(value_name = "JOB")]
        job: String,
    },
    /// Domain names for shell completion, one per line (from the service; nothing when it
    /// cannot be asked).
    #[command(hide = true, name = "complete-domains")]
    CompleteDomains,
}

/// The domains a command applies to.
#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Domains: names, `*`, or globs with `*` and `?`; comma lists allowed.
    #[arg(value_name = "DOMAIN")]
    pub names: Vec<String>,
}

/// Where the backups are.
#[derive(Args, Debug, Clone, Default)]
pub struct Root {
    /// Backup root: one folder per domain below it, one chain folder per period in those.
    #[arg(long, value_name = "DIR")]
    pub output: Option<String>,
}

/// How chain folders are grouped in time.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Period {
    /// Period grouping of backup folders: month, quarter, bi-annual, year.
    #[arg(long = "group-by", visible_alias = "groupBy", value_name = "PERIOD")]
    pub group_by: Option<String>,
}

/// The libvirt the service must be using.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Libvirt {
    /// libvirt URI the service must be using (it refuses the call otherwise).
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
}

/// Whether to follow a job the command starts.
#[derive(Args, Debug, Clone, Default)]
pub struct Wait {
    /// Print the job's path and return at once instead of following it (`vmsnapctl wait`
    /// follows it later).
    #[arg(long)]
    pub no_wait: bool,
}

/// Look, don't touch.
#[derive(Args, Debug, Clone, Default)]
pub struct DryRun {
    /// Report what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Also ask QEMU itself for every bitmap. libvirt then marks running domains
    /// "tainted: custom monitor control commands issued"; needs the backup right.
    #[arg(long)]
    pub deep: bool,
    /// Backup root; adds statistics of the current period's folder.
    #[arg(long, value_name = "DIR")]
    pub output: Option<String>,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ListArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Backup root; adds each domain's live chain (last backup, points, size).
    #[arg(long, value_name = "DIR")]
    pub output: Option<String>,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BackupArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub root: Root,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub options: BackupOptionArgs,
    #[command(flatten)]
    pub wait: Wait,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

/// The options of a backup, shared by `backup` and the compatibility form's `--backup`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupOptionArgs {
    /// Also back up raw disks (in full backups; they cannot take part in incrementals).
    #[arg(long)]
    pub raw: bool,

    /// Compress the backup with virtnbdbackup's lz4. A chain is compressed or not from its full
    /// on: asking otherwise than the live chain starts a new chain (the result says why).
    #[arg(long)]
    pub compress: bool,

    /// Prune old period folders after each successful backup (see `prune`).
    #[arg(long, overrides_with = "no_prune")]
    pub prune: bool,

    /// With --prune: how many past periods survive besides the rule's own (default 0).
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,

    /// Do not prune (the default).
    #[arg(long, overrides_with = "prune")]
    pub no_prune: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ScrubArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// checkpoint, bitmap, both, or all (`*`).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Only this checkpoint name (a glob with * and ? is allowed).
    #[arg(long = "checkpoint-name", value_name = "NAME")]
    pub checkpoint_name: Option<String>,
    #[command(flatten)]
    pub dry_run: DryRun,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct PruneArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub root: Root,
    #[command(flatten)]
    pub period: Period,
    /// How many past periods survive besides the rule's own (default 0).
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    #[command(flatten)]
    pub dry_run: DryRun,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub root: Root,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub root: Root,
    /// Only this chain folder.
    #[arg(long, value_name = "NAME")]
    pub folder: Option<String>,
    /// Also rebuild each chain's newest point with virtnbdrestore (a whole disk of scratch
    /// space per disk), check it, and compare it with the in-place reading.
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub wait: Wait,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RestoreArgs {
    /// The domain whose backup is restored.
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    #[command(flatten)]
    pub root: Root,
    /// Directory to restore into.
    #[arg(long, value_name = "DIR")]
    pub target: String,
    /// Chain folder (default: the live chain, else the newest).
    #[arg(long, value_name = "NAME")]
    pub folder: Option<String>,
    /// Restore up to this checkpoint (default: the last).
    #[arg(long, value_name = "CHECKPOINT")]
    pub until: Option<String>,
    /// Only this disk (vda).
    #[arg(long, value_name = "DISK")]
    pub disk: Option<String>,
    /// Replace files that already exist in the target.
    #[arg(long)]
    pub overwrite: bool,
    /// Define a new domain of this name from the backed-up configuration.
    #[arg(long, value_name = "NAME")]
    pub define_as: Option<String>,
    #[command(flatten)]
    pub wait: Wait,
    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone)]
pub struct FilesArgs {
    /// The domain whose backup is browsed.
    #[arg(value_name = "DOMAIN")]
    pub domain: String,
    #[command(flatten)]
    pub root: Root,
    /// Chain folder (default: the live chain, else the newest).
    #[arg(long, value_name = "NAME")]
    pub folder: Option<String>,
    /// The point (default: the chain's last).
    #[arg(long, value_name = "virtnbdbackup.N")]
    pub point: Option<String>,
    /// The disk (default: the first).
    #[arg(long, value_name = "DISK")]
    pub disk: Option<String>,
    #[command(flatten)]
    pub libvirt: Libvirt,
    #[command(subcommand)]
    pub action: FilesAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FilesAction {
    /// Without --volume: the disk's partitions and their file systems. With it: the entries
    /// of PATH (default /) in that volume.
    Ls {
        /// The partition number (0: a disk without a partition table).
        #[arg(long, value_name = "N")]
        volume: Option<u32>,
        /// A directory inside the volume, from its root.
        #[arg(value_name = "PATH", default_value = "/")]
        path: String,
    },
    /// Serve the whole disk at the point read-only over NBD (needs the restore right): prints
    /// its URI (nbd+unix:///?socket=…) for qemu-img, nbdfuse or guestfish, and serves until
    /// interrupted.
    Export,
    /// Copy files or directories out of the volume into --target.
    Get {
        /// The partition number (default: the only readable one).
        #[arg(long, value_name = "N")]
        volume: Option<u32>,
        /// Files or directories inside the volume, from its root.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<String>,
        /// The directory to copy into.
        #[arg(long, value_name = "DIR")]
        target: String,
        /// Replace what already exists in the target under the same names.
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct JobsArgs {
    /// Follow every running job to its end with live progress (Ctrl-C stops following).
    #[arg(long)]
    pub watch: bool,
}

/// The original VMSnap's switches, kept so that its scripts and cron lines go on working.
/// Only without a subcommand.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_help_heading = "The original VMSnap's switches (compatibility form)")]
pub struct Legacy {
    /// Domains: names, `*`, or globs with `*` and `?`; comma lists allowed, repeatable.
    #[arg(long, value_name = "LIST", action = ArgAction::Append)]
    pub domains: Vec<String>,

    /// Show the status (the default action).
    #[arg(long)]
    pub status: bool,

    /// Back up the --domains into --output (`vmsnapctl backup`).
    #[arg(long)]
    pub backup: bool,

    /// Remove checkpoints and/or bitmaps of the --domains (`vmsnapctl scrub`).
    #[arg(long)]
    pub scrub: bool,

    /// With --scrub: checkpoint, bitmap, both, or * (all).
    #[arg(long = "scrub-type", visible_alias = "scrubType", value_name = "TYPE")]
    pub scrub_type: Option<String>,

    /// With --scrub: only this checkpoint name (a glob with * and ? is allowed).
    #[arg(
        long = "checkpoint-name",
        visible_alias = "checkpointName",
        value_name = "NAME"
    )]
    pub checkpoint_name: Option<String>,

    /// With --scrub: report what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Backup root; with --status, adds statistics of the current period's folder.
    #[arg(long, value_name = "DIR")]
    pub output: Option<String>,

    #[command(flatten)]
    pub period: Period,

    #[command(flatten)]
    pub backup_options: BackupOptionArgs,

    #[command(flatten)]
    pub libvirt: Libvirt,
}

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
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

#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// Never ask for a password (no authentication agent, no interactive authorization).
    #[arg(long, global = true)]
    pub no_ask_password: bool,

    /// Seconds to wait for the service's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, global = true)]
    pub timeout: u64,
}

impl SessionArgs {
    /// How long one call to the service may take (`--timeout`, at least a second).
    pub fn call_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout.max(1))
    }
}
