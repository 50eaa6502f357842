//! `vmsnapd`: the VMSnap system service. See the crate documentation of [`vmsnapd`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use std::path::{Path, PathBuf};

use vmsnapd::config::{self, FileConfig};
use vmsnapd::engine::{Config, Engine};

/// VMSnap's privileged D-Bus service (org.vmsnap.VMSnap1 on the system bus).
///
/// Settings come from the configuration file; switches given here override it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// libvirt URI for every host call.
    #[arg(long, env = "VMSNAP_LIBVIRT_URI")]
    connect: Option<String>,

    /// A directory where callers other than root may put backups (repeatable).
    #[arg(long = "backup-root", value_name = "DIR")]
    backup_roots: Vec<PathBuf>,

    /// Seconds one libvirt call or qemu-img run may take before it counts as hung.
    #[arg(long)]
    command_timeout: Option<u64>,

    /// How many domains are backed up at the same time.
    #[arg(long)]
    parallel_backups: Option<usize>,

    /// Directory where QEMU creates the backups' NBD sockets (QEMU must be able to write
    /// there; never a private /tmp).
    #[arg(long)]
    socket_dir: Option<PathBuf>,

    /// The service's own state directory (what to undo after a crash).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Seconds virtnbdbackup gets to stop after a cancel before it is killed.
    #[arg(long)]
    cancel_grace: Option<u64>,

    /// Seconds a finished job stays on the bus for late readers.
    #[arg(long)]
    job_retention: Option<u64>,

    /// node_exporter's textfile-collector directory: backup health goes there as vmsnap.prom.
    #[arg(long, value_name = "DIR")]
    metrics_dir: Option<PathBuf>,

    /// The user that reads guest file systems (default from the configuration: vmsnap-files).
    #[arg(long, value_name = "USER")]
    files_user: Option<String>,

    /// Where file sessions' NBD exports get their sockets (default /run/vmsnapd/exports).
    #[arg(long, value_name = "DIR")]
    export_dir: Option<PathBuf>,

    /// Seconds without a call after which a file-browsing session is closed.
    #[arg(long, value_name = "SECONDS")]
    files_idle_timeout: Option<u64>,

    /// Log to stderr even when the journal is available.
    #[arg(long)]
    log_to_stderr: bool,

    /// Print the man page (generated from these definitions, for packagers) and exit.
    #[arg(long, value_name = "KIND", value_parser = ["man"], hide_short_help = true)]
    generate: Option<String>,
}

fn main() -> ExitCode {
    vmsnapd::memory::limit_arenas();
    // Work from `/`: a caller's path never means anything relative to where the service was
    // started (`/proc/self/cwd` named the start directory).
    if let Err(e) = std::env::set_current_dir("/") {
        eprintln!("vmsnapd: cannot change to /: {e}");
        return ExitCode::FAILURE;
    }
    // Blocking work (folder walks for status and listings) gets at most 64 threads, well
    // inside the unit's TasksMax= (README, "Installation"): tokio's default is 512.
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .build()
    {
        Ok(runtime) => runtime.block_on(serve()),
        Err(e) => {
            eprintln!("vmsnapd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// File sessions hold their chain's data files open (one per point of the disk, for their
/// exports), up to 8 sessions: a yearly chain is hundreds of files each, past systemd's soft
/// limit of 1024. The soft limit goes up to the hard one (systemd's 524288), at most 65536.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a struct of ours.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max.min(65536).max(soft);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "the descriptor limit stays at {soft}");
        }
    }
}

async fn serve() -> ExitCode {
    let args = Args::parse();
    if args.generate.is_some() {
        use clap::CommandFactory;
        let man = clap_mangen::Man::new(Args::command().name("vmsnapd")).section("8");
        return match man.render(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    init_logging(args.log_to_stderr);
    // A panic is a bug: it goes to the journal with where it happened. Job tasks catch theirs
    // and fail only their job (`engine::jobs::spawn_guarded`).
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error (a bug in vmsnapd)");
    }));
    // Backups hold whole disks: nothing the service creates is readable by others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    raise_descriptor_limit();
    let (config, retention) = match settings(args) {
        Ok(settings) => settings,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let engine = Arc::new(Engine::new(config));
    // Before taking calls: undo what a killed predecessor left (domains left paused).
    let interrupted = engine.recover().await;
    engine.remove_stale_file_scratch();
    // Backup health: counted from the jobs as they end, written for Prometheus if configured.
    tokio::spawn(engine.clone().keep_health());
    let connection = match vmsnapd::bus::serve(engine.clone(), retention, interrupted).await {
        Ok(c) => c,
        Err(message) => {
            tracing::error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        unique_name = connection
            .unique_name()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        "vmsnapd serving org.vmsnap.VMSnap1"
    );
    let code = until_stopped(&connection).await;
    // Inside systemd's TimeoutStopSec=120 with virtnbdbackup's own grace to spare.
    engine
        .shutdown(engine.config().cancel_grace + Duration::from_secs(30))
        .await;
    drop(connection);
    code
}

/// The engine's settings and the jobs' retention on the bus: switches over the file over the
/// defaults.
fn settings(args: Args) -> Result<(Config, Duration), String> {
    let file = FileConfig::load(
        args.config
            .as_deref()
            .unwrap_or(Path::new(config::DEFAULT_PATH)),
        args.config.is_some(),
    )?;
    let roots = if args.backup_roots.is_empty() {
        file.backup_roots
    } else {
        args.backup_roots
    };
    let libvirt_uri = args.connect.unwrap_or(file.libvirt_uri);
    vmsnapd::host::libvirt::LocalLibvirt::from_uri(&libvirt_uri)?;
    let state_dir = args.state_dir.unwrap_or(file.state_dir);
    // Verify's rebuilds go in private directories with random names in here (never a
    // predictable name in a shared /var/tmp); created on first use.
    let scratch_dir = state_dir.join("scratch");
    let config = Config {
        libvirt_uri,
        command_timeout: Duration::from_secs(
            args.command_timeout
                .unwrap_or(file.command_timeout_seconds)
                .max(1),
        ),
        parallel_backups: args
            .parallel_backups
            .unwrap_or(file.parallel_backups)
            .max(1),
        socket_dir: args.socket_dir.unwrap_or(file.socket_dir),
        cancel_grace: Duration::from_secs(args.cancel_grace.unwrap_or(file.cancel_grace_seconds)),
        backup_roots: roots,
        scratch_dir,
        state_dir,
        metrics_dir: args.metrics_dir.or(file.metrics_dir),
        metrics_backup_max_age: Duration::from_secs(file.metrics_backup_max_age_seconds),
        files_user: args.files_user.unwrap_or(file.files_user),
        // Installed side by side (/usr/libexec); the tests run both from target/.
        files_helper: std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("vmsnap-guestfs")))
            .unwrap_or_else(|| "/usr/libexec/vmsnap-guestfs".into()),
        export_dir: args.export_dir.unwrap_or(file.export_dir),
        files_idle_timeout: Duration::from_secs(
            args.files_idle_timeout
                .unwrap_or(file.files_idle_timeout_seconds)
                .max(1),
        ),
        extract_max_bytes: file.extract_max_bytes,
    };
    let retention = Duration::from_secs(args.job_retention.unwrap_or(file.job_retention_seconds));
    Ok((config, retention))
}

/// Waits for SIGTERM, SIGINT or the loss of the bus; the exit code says which.
async fn until_stopped(connection: &zbus::Connection) -> ExitCode {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
        e = bus_lost(connection) => {
            // Never keep running deaf: exit, and let systemd (Restart=on-failure) or bus
            // activation start a fresh instance on the new bus.
            tracing::error!(error = %e, "lost the system bus, stopping");
            code = ExitCode::FAILURE;
        }
    }
    code
}

/// Returns when the bus no longer answers a ping.
async fn bus_lost(connection: &zbus::Connection) -> zbus::Error {
    let bus = match zbus::fdo::DBusProxy::new(connection).await {
        Ok(b) => b,
        Err(e) => return e,
    };
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match tokio::time::timeout(Duration::from_secs(10), bus.get_id()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return e.into(),
            Err(_) => return zbus::Error::Failure("the bus did not answer a ping".into()),
        }
    }
}

/// The journal when it is there (the service runs under systemd), stderr otherwise.
fn init_logging(force_stderr: bool) {
    // `VMSNAP_LOG=debug` or `VMSNAP_LOG=vmsnapd::engine=debug,info`: per-target levels without
    // EnvFilter's regex engine, which would double the service's resident code.
    let filter: Targets = std::env::var("VMSNAP_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let journald = if force_stderr || !std::path::Path::new("/run/systemd/journal/socket").exists()
    {
        None
    } else {
        // Fields under their own names (`journalctl -u vmsnapd JOB=12 DOMAIN=web1`), not the
        // crate's default `F_JOB`; none of ours collides with a journal field.
        tracing_journald::layer()
            .ok()
            .map(|layer| layer.with_field_prefix(None))
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}
