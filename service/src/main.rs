//! `vmsnapd`: the VMSnap system service. See the crate documentation of [`vmsnapd`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use vmsnapd::engine::{Config, Engine};

/// VMSnap's privileged D-Bus service (org.vmsnap.VMSnap1 on the system bus).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// libvirt URI for every host call.
    #[arg(long, env = "VMSNAP_LIBVIRT_URI", default_value = "qemu:///system")]
    connect: String,

    /// Seconds one virsh or qemu-img call may take before libvirt counts as unreachable.
    #[arg(long, default_value_t = 60)]
    command_timeout: u64,

    /// How many domains are backed up at the same time.
    #[arg(long, default_value_t = 2)]
    parallel_backups: usize,

    /// Directory where QEMU creates the backups' NBD sockets (QEMU must be able to write
    /// there; never a private /tmp).
    #[arg(long, default_value = "/var/lib/libvirt/qemu")]
    socket_dir: std::path::PathBuf,

    /// Seconds virtnbdbackup gets to stop after a cancel before it is killed.
    #[arg(long, default_value_t = 60)]
    cancel_grace: u64,

    /// Seconds a finished job stays on the bus for late readers.
    #[arg(long, default_value_t = 600)]
    job_retention: u64,

    /// Log to stderr even when the journal is available.
    #[arg(long)]
    log_to_stderr: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_to_stderr);
    let engine = Arc::new(Engine::new(Config {
        libvirt_uri: args.connect,
        command_timeout: Duration::from_secs(args.command_timeout.max(1)),
        parallel_backups: args.parallel_backups.max(1),
        socket_dir: args.socket_dir,
        cancel_grace: Duration::from_secs(args.cancel_grace),
    }));
    let retention = Duration::from_secs(args.job_retention);
    let connection = match vmsnapd::bus::serve(engine, retention).await {
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
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
    }
    ExitCode::SUCCESS
}

/// The journal when it is there (the service runs under systemd), stderr otherwise.
fn init_logging(force_stderr: bool) {
    let filter = EnvFilter::try_from_env("VMSNAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = if force_stderr || !std::path::Path::new("/run/systemd/journal/socket").exists()
    {
        None
    } else {
        tracing_journald::layer().ok()
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}
