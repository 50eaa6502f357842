//! Everything the service asks of libvirt, on one long-lived connection.
//!
//! Status is what monitoring asks for every minute, on hosts with hundreds of domains. Through
//! virsh every fact costs a process and a fresh connection to libvirtd (about 20 ms each); on
//! an open connection it costs one RPC, well under a millisecond (BENCHMARKS.md). So every
//! interaction goes through here — reads, starting paused, destroying, libvirt's job control,
//! checkpoint deletes — and the service runs no `virsh` at all.
//!
//! **No read taints a guest.** libvirt marks a domain "tainted: custom monitor control
//! commands issued" for good once anyone uses QEMU's monitor pass-through on it. Status and a
//! backup's plan therefore use only libvirt's API: checkpoint XML with the size flag (bytes
//! dirtied since each checkpoint, and whether its bitmap is usable), block info for sizes.
//! The monitor ([`Libvirt::monitor_query_block`], [`Libvirt::monitor_remove_bitmap`]) is
//! used only where libvirt has no API and the guest is being changed anyway (removing an
//! orphaned bitmap before a new chain, scrubbing one) or the caller asked for it (Status's
//! `deep` option, which says so).
//!
//! The connection speaks libvirt's wire protocol itself ([`super::libvirt_rpc`]) on the
//! local socket of the configured `qemu:///system` URI. A read that failed because the
//! connection broke (libvirtd restarted) is tried once more on a new connection, so the first
//! call after libvirtd is back works; a change is never sent twice.

pub mod reply;
mod uri;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;

pub use self::reply::{BlockInfo, DomainRef};
pub use self::uri::LocalLibvirt;
use super::checkpoint_xml::{self, CheckpointDisk};
use super::libvirt_rpc::{Client, Options, Procedure, RpcError};
use super::xdr::Encoder;
use super::{Error, Result};

/// A domain's run state, in virsh's words (what status shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShutOff,
    /// Any other libvirt state (`crashed`, `in shutdown`, `pmsuspended`, …), verbatim.
    Other(String),
}

impl DomainState {
    pub fn as_str(&self) -> &str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::ShutOff => "shut off",
            DomainState::Other(s) => s,
        }
    }

    /// Whether a QEMU process exists for the domain, so that QEMU (not the image file) holds
    /// the truth about its bitmaps.
    pub fn has_qemu(&self) -> bool {
        matches!(
            self,
            DomainState::Running | DomainState::Paused | DomainState::Other(_)
        )
    }
}

/// What status and a backup's plan need to know of one domain.
#[derive(Debug, Clone)]
pub struct DomainFacts {
    pub state: DomainState,
    pub xml: String,
    /// Checkpoints, parents before children.
    pub checkpoints: Vec<CheckpointFact>,
}

/// A checkpoint as libvirt knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFact {
    pub name: String,
    /// `creationTime` from its XML: with the name, it tells this checkpoint from an older
    /// one of the same name (a chain folder records both).
    pub created: Option<u64>,
    /// Its disks; for a domain QEMU runs, with the bytes dirtied since it where the disk's
    /// bitmap is usable.
    pub disks: Vec<CheckpointDisk>,
}

/// libvirt's job on a domain, as far as the service acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveJob {
    None,
    Backup,
    /// Any other (`virDomainJobOperation` number): migration, dump, …
    Other(i64),
}

/// `virDomainState`, `VIR_DOMAIN_START_PAUSED`, checkpoint and job flags.
const START_PAUSED: u32 = 1;
const CHECKPOINTS_TOPOLOGICAL: u32 = 1 << 1;
const CHECKPOINT_DELETE_METADATA_ONLY: u32 = 1 << 1;
const CHECKPOINT_XML_SIZE: u32 = 1 << 2;
const JOB_OPERATION_BACKUP: i64 = 9;
/// `virterror.h`.
const ERR_NO_DOMAIN: i32 = 42;
const ERR_OPERATION_INVALID: i32 = 55;

/// The service's connection to libvirt.
#[derive(Clone)]
pub struct Libvirt {
    target: std::result::Result<LocalLibvirt, String>,
    options: Options,
    /// Opened on first use; a tokio mutex so that concurrent first calls wait for one open.
    slot: Arc<tokio::sync::Mutex<Option<Arc<Client>>>>,
}

impl Libvirt {
    pub fn new(uri: &str, timeout: Duration) -> Self {
        Libvirt {
            target: LocalLibvirt::from_uri(uri),
            options: Options {
                call_timeout: timeout,
                ..Options::default()
            },
            slot: Arc::default(),
        }
    }

    /// Names of all domains, running or not.
    pub async fn list_all(&self) -> Result<Vec<String>> {
        self.call(None, |c| async move {
            let args = Encoder::new().i32(1).u32(0).finish();
            let p = Procedure::ConnectListAllDomains;
            let reply = c.call(p, args).await?;
            reply::domain_names(&reply).map_err(RpcError::decode(p))
        })
        .await
    }

    /// State, definition and checkpoints of `name`; for a domain QEMU runs, each checkpoint
    /// with the bytes dirtied since it (libvirt's own query: no taint).
    pub async fn domain(&self, name: &str) -> Result<DomainFacts> {
        self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            let (state, xml) = tokio::try_join!(state(&c, &dom), xml(&c, &dom))?;
            let sized = state.has_qemu();
            let checkpoints = match checkpoints(&c, &dom, sized).await {
                // It stopped between the two questions: without sizes, as it is now.
                Err(RpcError::Remote {
                    code: ERR_OPERATION_INVALID,
                    ..
                }) if sized => checkpoints(&c, &dom, false).await?,
                other => other?,
            };
            Ok(DomainFacts {
                state,
                xml,
                checkpoints,
            })
        })
        .await
    }

    /// The state of `name` alone.
    pub async fn state(&self, name: &str) -> Result<DomainState> {
        self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            state(&c, &dom).await
        })
        .await
    }

    /// Sizes of one disk (`vda` or its source path) of a running domain, as QEMU sees them.
    pub async fn block_info(&self, name: &str, disk: &str) -> Result<BlockInfo> {
        self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            let p = Procedure::DomainGetBlockInfo;
            let mut e = Encoder::new();
            dom.encode(&mut e);
            e.string(disk).u32(0);
            let reply = c.call(p, e.finish()).await?;
            reply::block_info(&reply).map_err(RpcError::decode(p))
        })
        .await
    }

    /// Starts a shut-off domain with its CPUs stopped: QEMU then owns the disks and their
    /// bitmaps, so a backup is an online one and the guest never runs.
    pub async fn start_paused(&self, name: &str) -> Result<()> {
        self.domain_change(name, Procedure::DomainCreateWithFlags, START_PAUSED, |b| {
            reply::domain(b).map(drop)
        })
        .await
    }

    /// Stops the domain's QEMU. QEMU still closes the images, so bitmaps are stored.
    pub async fn destroy(&self, name: &str) -> Result<()> {
        self.domain_change(name, Procedure::DomainDestroyFlags, 0, reply::void)
            .await
    }

    /// libvirt's active job on the domain.
    /// libvirt's active job on the domain. A domain that is not running has none (libvirt
    /// says "domain is not running", `OPERATION_INVALID`).
    pub async fn active_job(&self, name: &str) -> Result<ActiveJob> {
        let job = self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            let p = Procedure::DomainGetJobStats;
            let mut e = Encoder::new();
            dom.encode(&mut e);
            e.u32(0);
            let reply = c.call(p, e.finish()).await?;
            let (kind, params) = reply::job_stats(&reply).map_err(RpcError::decode(p))?;
            if kind == 0 {
                return Ok(ActiveJob::None);
            }
            let operation = params.iter().find_map(|(k, v)| match (k.as_str(), v) {
                ("operation", reply::TypedValue::Int(op)) => Some(*op),
                _ => None,
            });
            Ok(match operation {
                Some(JOB_OPERATION_BACKUP) => ActiveJob::Backup,
                Some(other) => ActiveJob::Other(other),
                None => ActiveJob::Other(0),
            })
        });
        match job.await {
            Err(Error::Libvirt { code, .. }) if code == ERR_OPERATION_INVALID => {
                Ok(ActiveJob::None)
            }
            other => other,
        }
    }

    /// Aborts libvirt's job on the domain; no job at all is not an error.
    pub async fn abort_job(&self, name: &str) -> Result<()> {
        let outcome = self
            .call(Some(name), |c| async move {
                let dom = lookup(&c, name).await?;
                let mut e = Encoder::new();
                dom.encode(&mut e);
                let p = Procedure::DomainAbortJob;
                let reply = c.call(p, e.finish()).await?;
                reply::void(&reply).map_err(RpcError::decode(p))
            })
            .await;
        match outcome {
            Err(Error::Libvirt { code, .. }) if code == ERR_OPERATION_INVALID => Ok(()),
            other => other,
        }
    }

    /// Aborts libvirt's job on the domain if it is a backup (a migration someone else started
    /// is left alone); whether there was one.
    pub async fn abort_backup_job(&self, name: &str) -> Result<bool> {
        match self.active_job(name).await? {
            ActiveJob::Backup => self.abort_job(name).await.map(|_| true),
            ActiveJob::None | ActiveJob::Other(_) => Ok(false),
        }
    }

    /// Deletes one checkpoint: with its bitmaps (a running domain), or only libvirt's record
    /// of it (`metadata_only`; what libvirt 9 can do for a shut-off domain, or when the bitmap
    /// is already gone).
    pub async fn delete_checkpoint(
        &self,
        domain: &str,
        checkpoint: &str,
        metadata_only: bool,
    ) -> Result<()> {
        self.call(Some(domain), |c| async move {
            let dom = lookup(&c, domain).await?;
            let flags = match metadata_only {
                true => CHECKPOINT_DELETE_METADATA_ONLY,
                false => 0,
            };
            let p = Procedure::DomainCheckpointDelete;
            let reply = checkpoint_call(&c, p, checkpoint, &dom, flags).await?;
            reply::void(&reply).map_err(RpcError::decode(p))
        })
        .await
    }

    /// QEMU's `query-block`, through the monitor pass-through. **Taints the domain**: only
    /// for callers that said so, or on a path that changes the domain anyway.
    pub async fn monitor_query_block(&self, name: &str) -> Result<String> {
        tracing::info!(
            domain = name,
            "asking QEMU's monitor directly (taints the domain)"
        );
        self.monitor(name, r#"{"execute":"query-block"}"#.to_string())
            .await
    }

    /// Removes a dirty bitmap from a format node through QEMU's monitor (libvirt has no API
    /// for a bitmap without a checkpoint). **Taints the domain**.
    pub async fn monitor_remove_bitmap(&self, name: &str, node: &str, bitmap: &str) -> Result<()> {
        let cmd = serde_json::json!({
            "execute": "block-dirty-bitmap-remove",
            "arguments": {"node": node, "name": bitmap},
        });
        tracing::info!(
            domain = name,
            node,
            bitmap,
            "removing a bitmap through QEMU's monitor"
        );
        let answer = self.monitor(name, cmd.to_string()).await?;
        match serde_json::from_str::<serde_json::Value>(&answer) {
            Ok(v) if v.get("return").is_some() => Ok(()),
            _ => Err(Error::CommandFailed {
                program: "QEMU's monitor".into(),
                message: answer.trim().to_string(),
            }),
        }
    }

    async fn monitor(&self, name: &str, cmd: String) -> Result<String> {
        self.call(Some(name), |c| {
            let cmd = cmd.clone();
            async move {
                let dom = lookup(&c, name).await?;
                let mut e = Encoder::new();
                dom.encode(&mut e);
                e.string(&cmd).u32(0);
                let p = Procedure::QemuMonitorCommand;
                let reply = c.call(p, e.finish()).await?;
                reply::string(&reply).map_err(RpcError::decode(p))
            }
        })
        .await
    }

    /// A call whose arguments are the domain and a flags word.
    async fn domain_change(
        &self,
        name: &str,
        p: Procedure,
        flags: u32,
        decode: fn(&[u8]) -> std::result::Result<(), crate::host::xdr::XdrError>,
    ) -> Result<()> {
        self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            let mut e = Encoder::new();
            dom.encode(&mut e);
            e.u32(flags);
            let reply = c.call(p, e.finish()).await?;
            decode(&reply).map_err(RpcError::decode(p))
        })
        .await
    }

    /// Runs `f` on the connection; once more on a new connection when the old one broke
    /// before anything that changes state was sent (reads only, never a replay).
    async fn call<'a, T, F, Fut>(&self, domain: Option<&'a str>, f: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, RpcError>> + 'a,
    {
        let mut last = None;
        for _ in 0..2 {
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) => return Err(classify(e, domain)),
            };
            match f(client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if client.is_closed() {
                        self.forget(&client).await;
                    }
                    if !e.is_retryable() {
                        return Err(classify(e, domain));
                    }
                    last = Some(e);
                }
            }
        }
        Err(classify(last.expect("two failed attempts"), domain))
    }

    /// The shared connection, opened when there is none or the last one broke.
    async fn client(&self) -> std::result::Result<Arc<Client>, RpcError> {
        let target = self
            .target
            .as_ref()
            .map_err(|e| RpcError::Connection(e.clone()))?;
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let open = Client::open(&target.socket, &target.driver, self.options);
        let client = match tokio::time::timeout(self.options.call_timeout, open).await {
            Ok(c) => Arc::new(c?),
            Err(_) => {
                return Err(RpcError::Connection(format!(
                    "libvirt at {} did not complete the handshake within {} s",
                    target.socket.display(),
                    self.options.call_timeout.as_secs()
                )))
            }
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Drops the shared connection if it is still `broken`; calls still using it finish
    /// with their own reference, and the socket closes with the last of them.
    async fn forget(&self, broken: &Arc<Client>) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            slot.take();
        }
    }
}

async fn lookup(c: &Client, name: &str) -> std::result::Result<DomainRef, RpcError> {
    let args = Encoder::new().string(name).finish();
    let p = Procedure::DomainLookupByName;
    let reply = c.call(p, args).await?;
    reply::domain(&reply).map_err(RpcError::decode(p))
}

/// A read whose arguments are the domain and a flags word.
async fn domain_read(
    c: &Client,
    p: Procedure,
    dom: &DomainRef,
    extra: impl FnOnce(&mut Encoder),
) -> std::result::Result<Vec<u8>, RpcError> {
    let mut e = Encoder::new();
    dom.encode(&mut e);
    extra(&mut e);
    c.call(p, e.finish()).await
}

/// A call whose arguments are one checkpoint (`remote_nonnull_domain_checkpoint`: its name,
/// then its domain) and a flags word.
async fn checkpoint_call(
    c: &Client,
    p: Procedure,
    name: &str,
    dom: &DomainRef,
    flags: u32,
) -> std::result::Result<Vec<u8>, RpcError> {
    let mut e = Encoder::new();
    e.string(name);
    dom.encode(&mut e);
    e.u32(flags);
    c.call(p, e.finish()).await
}

async fn state(c: &Client, dom: &DomainRef) -> std::result::Result<DomainState, RpcError> {
    let p = Procedure::DomainGetState;
    let reply = domain_read(c, p, dom, |e| {
        e.u32(0);
    })
    .await?;
    Ok(state_of(reply::state(&reply).map_err(RpcError::decode(p))?))
}

async fn xml(c: &Client, dom: &DomainRef) -> std::result::Result<String, RpcError> {
    let p = Procedure::DomainGetXmlDesc;
    let reply = domain_read(c, p, dom, |e| {
        e.u32(0);
    })
    .await?;
    reply::string(&reply).map_err(RpcError::decode(p))
}

/// The domain's checkpoints in topological order, each with its creation time and disks
/// (their XML is asked for all at once; `sized` adds the dirtied bytes, for a domain QEMU
/// runs).
async fn checkpoints(
    c: &Client,
    dom: &DomainRef,
    sized: bool,
) -> std::result::Result<Vec<CheckpointFact>, RpcError> {
    let p = Procedure::DomainListAllCheckpoints;
    let reply = domain_read(c, p, dom, |e| {
        e.i32(1).u32(CHECKPOINTS_TOPOLOGICAL);
    })
    .await?;
    let names = reply::checkpoint_names(&reply).map_err(RpcError::decode(p))?;
    let flags = if sized { CHECKPOINT_XML_SIZE } else { 0 };
    try_join_all(names.into_iter().map(|name| async move {
        let p = Procedure::DomainCheckpointGetXmlDesc;
        let reply = checkpoint_call(c, p, &name, dom, flags).await?;
        let xml = reply::string(&reply).map_err(RpcError::decode(p))?;
        let created = checkpoint_xml::creation_time(&xml).ok();
        let disks = checkpoint_xml::disks(&xml).unwrap_or_default();
        Ok(CheckpointFact {
            name,
            created,
            disks,
        })
    }))
    .await
}

/// `virDomainState`, in virsh's words for the states the engine does not act on.
fn state_of(state: i32) -> DomainState {
    match state {
        1 => DomainState::Running,
        3 => DomainState::Paused,
        5 => DomainState::ShutOff,
        2 => DomainState::Other("idle".into()),
        4 => DomainState::Other("in shutdown".into()),
        6 => DomainState::Other("crashed".into()),
        7 => DomainState::Other("pmsuspended".into()),
        _ => DomainState::Other("no state".into()),
    }
}

fn classify(e: RpcError, domain: Option<&str>) -> Error {
    match e {
        RpcError::Remote {
            code: ERR_NO_DOMAIN,
            ..
        } if domain.is_some() => Error::NoSuchDomain(domain.unwrap_or_default().to_string()),
        RpcError::Remote { code, message, .. } => Error::Libvirt { code, message },
        e @ (RpcError::Connection(_) | RpcError::Protocol(_) | RpcError::Timeout { .. }) => {
            Error::HostUnavailable(e.to_string())
        }
        e @ (RpcError::Interrupted { .. }
        | RpcError::Decode { .. }
        | RpcError::Unsupported { .. }) => Error::CommandFailed {
            program: "libvirt".into(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirts_states_in_virshs_words() {
        assert_eq!(state_of(5), DomainState::ShutOff);
        assert_eq!(state_of(1), DomainState::Running);
        assert!(state_of(3).has_qemu() && state_of(6).has_qemu());
        assert!(!state_of(5).has_qemu());
        assert_eq!(state_of(6).as_str(), "crashed");
        assert_eq!(state_of(99).as_str(), "no state");
    }

    #[test]
    fn only_a_lost_connection_is_libvirt_unreachable() {
        let unsupported = RpcError::Unsupported {
            procedure: "DOMAIN_GET_JOB_STATS",
            message: "unknown procedure: 298".into(),
        };
        assert!(matches!(
            classify(unsupported, Some("vm")),
            Error::CommandFailed { .. }
        ));
        let gone = RpcError::Remote {
            code: ERR_NO_DOMAIN,
            domain: 10,
            message: "Domain not found".into(),
        };
        assert!(matches!(classify(gone, Some("vm")), Error::NoSuchDomain(d) if d == "vm"));
        let broke = RpcError::Connection("eof".into());
        assert!(matches!(classify(broke, None), Error::HostUnavailable(_)));
        let rpc_area = RpcError::Remote {
            code: 39,
            domain: 7,
            message: "some RPC error".into(),
        };
        assert!(matches!(classify(rpc_area, None), Error::Libvirt { .. }));
    }
}
