//! Reads through libvirt, on one long-lived connection.
//!
//! Status is what monitoring asks for every minute, on hosts with hundreds of domains. Through
//! virsh every fact costs a process and a fresh connection to libvirtd (about 20 ms each); on
//! an open connection it costs one RPC, well under a millisecond (BENCHMARKS.md). So every
//! read comes from here (status, a backup's plan, scrub, verify, restore, recovery), and the
//! checkpoint deletes before every new chain; the rarer changes (starting, stopping, aborting
//! jobs) still go through virsh.
//!
//! The connection speaks libvirt's wire protocol itself ([`super::libvirt_rpc`]) on the
//! local socket of the configured `qemu:///system` URI. A call that fails because the
//! connection broke (libvirtd restarted or went away) drops the connection and is tried once
//! more on a new one, so the first call after libvirtd is back works, and a libvirtd that is
//! really gone is reported as `HostUnavailable` at once.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;

use super::checkpoint_xml;
use super::libvirt_rpc::{procedure, Client, Program, RpcError, STRING_MAX};
use super::xdr::{Decoder, Encoder, XdrError};
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

/// What status needs to know of one domain from libvirt and QEMU.
#[derive(Debug, Clone)]
pub struct DomainFacts {
    pub state: DomainState,
    pub xml: String,
    /// Checkpoints, parents before children.
    pub checkpoints: Vec<CheckpointFact>,
    /// QEMU's `query-block` reply, for a running or paused domain.
    pub query_block: Option<String>,
}

/// A checkpoint as libvirt knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFact {
    pub name: String,
    /// `creationTime` from its XML: with the name, it tells this checkpoint from an older
    /// one of the same name (a chain folder records both).
    pub created: Option<u64>,
}

/// Where the service's libvirt URI leads: a local socket and the driver to open on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLibvirt {
    pub socket: PathBuf,
    /// The URI libvirtd is asked to open, without the client-side parameters.
    pub driver: String,
}

impl LocalLibvirt {
    /// Accepts the URIs of the local system QEMU driver, as virsh does: `qemu:///system`,
    /// `qemu+unix:///system`, with `socket=` (an absolute path) or `mode=legacy|direct`.
    /// vmsnapd backs up the machine it runs on (qemu-img and virtnbdbackup read its disks),
    /// so a remote or session URI is a configuration error, reported at start.
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            Err(format!(
                "libvirt URI {uri:?} {why}; vmsnapd works on this machine's qemu:///system"
            ))
        };
        let Some(rest) = uri
            .strip_prefix("qemu:///system")
            .or_else(|| uri.strip_prefix("qemu+unix:///system"))
        else {
            return refuse("is not the local system QEMU driver");
        };
        let mut socket = None;
        let mut mode = "auto";
        match rest {
            "" => {}
            _ => {
                let Some(query) = rest.strip_prefix('?') else {
                    return refuse("is not the local system QEMU driver");
                };
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some(("socket", path)) if path.starts_with('/') && !path.contains("..") => {
                            socket = Some(PathBuf::from(path))
                        }
                        Some(("mode", m @ ("auto" | "legacy" | "direct"))) => mode = m,
                        _ => {
                            return refuse(&format!(
                                "has a parameter vmsnapd does not know ({pair:?})"
                            ))
                        }
                    }
                }
            }
        }
        let socket = socket.unwrap_or_else(|| {
            // Where libvirt's own client looks: the modular daemon's socket when it runs there
            // (or is asked for), the monolithic libvirtd's otherwise.
            let direct = PathBuf::from("/run/libvirt/virtqemud-sock");
            match mode {
                "direct" => direct,
                "auto" if direct.exists() => direct,
                _ => PathBuf::from("/run/libvirt/libvirt-sock"),
            }
        });
        Ok(LocalLibvirt {
            socket,
            driver: "qemu:///system".into(),
        })
    }
}

/// The service's read connection to libvirt.
#[derive(Clone)]
pub struct Libvirt {
    target: std::result::Result<LocalLibvirt, String>,
    timeout: Duration,
    /// Opened on first use; a tokio mutex so that concurrent first calls wait for one open.
    slot: Arc<tokio::sync::Mutex<Option<Arc<Client>>>>,
}

impl Libvirt {
    pub fn new(uri: &str, timeout: Duration) -> Self {
        Libvirt {
            target: LocalLibvirt::from_uri(uri),
            timeout,
            slot: Arc::default(),
        }
    }

    /// Names of all domains, running or not.
    pub async fn list_all(&self) -> Result<Vec<String>> {
        self.call(None, |c| async move {
            let args = Encoder::new().i32(1).u32(0).finish();
            let reply = c
                .call(Program::Remote, procedure::CONNECT_LIST_ALL_DOMAINS, args)
                .await?;
            Ok(reply::domain_names(&reply)?)
        })
        .await
    }

    /// State, definition and checkpoints of `name`, and QEMU's block devices when it runs.
    pub async fn domain(&self, name: &str) -> Result<DomainFacts> {
        self.call(Some(name), |c| async move {
            let dom = lookup(&c, name).await?;
            let (state, xml, checkpoints) =
                tokio::try_join!(state(&c, &dom), xml(&c, &dom), checkpoints(&c, &dom))?;
            let (state, query_block) = match state.has_qemu() {
                true => match query_block(&c, &dom).await {
                    Ok(reply) => (state, Some(reply)),
                    // It stopped between the two questions: report it as it is now.
                    Err(e) => match self::state(&c, &dom).await? {
                        now if !now.has_qemu() => (now, None),
                        _ => return Err(e),
                    },
                },
                false => (state, None),
            };
            Ok(DomainFacts {
                state,
                xml,
                checkpoints,
                query_block,
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
            checkpoint_call(
                &c,
                procedure::DOMAIN_CHECKPOINT_DELETE,
                checkpoint,
                &dom,
                flags,
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on the connection under the command deadline, reconnecting once if it broke.
    async fn call<'a, T, F, Fut>(&self, domain: Option<&'a str>, f: F) -> Result<T>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, RpcError>> + 'a,
    {
        let attempts = async {
            let mut last = None;
            for _ in 0..2 {
                let client = self.client().await?;
                match f(client.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) if is_broken_connection(&e) => {
                        self.forget(&client).await;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.expect("two failed attempts"))
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Err(_) => Err(Error::HostUnavailable(format!(
                "libvirt did not answer within {} s",
                self.timeout.as_secs()
            ))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(e, domain)),
        }
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
        let client = Arc::new(Client::open(&target.socket, &target.driver).await?);
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

/// `REMOTE_DOMAIN_LIST_MAX` and `REMOTE_DOMAIN_CHECKPOINT_LIST_MAX`.
const DOMAIN_LIST_MAX: usize = 16384;
const CHECKPOINT_LIST_MAX: usize = 16384;
/// `VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL`: parents before children.
const CHECKPOINTS_TOPOLOGICAL: u32 = 1 << 1;
/// `VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY`.
const CHECKPOINT_DELETE_METADATA_ONLY: u32 = 1 << 1;

/// `remote_nonnull_domain`: how every call names its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRef {
    pub name: String,
    pub uuid: [u8; 16],
    pub id: i32,
}

impl DomainRef {
    /// An empty name, the UUID and the id.
    pub const MIN_LEN: usize = 4 + 16 + 4;

    pub fn encode(&self, e: &mut Encoder) {
        e.string(&self.name).fixed(&self.uuid).i32(self.id);
    }

    fn decode(d: &mut Decoder) -> std::result::Result<Self, XdrError> {
        let name = d.string(STRING_MAX)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(d.fixed(16)?);
        Ok(DomainRef {
            name,
            uuid,
            id: d.i32()?,
        })
    }
}

async fn lookup(c: &Client, name: &str) -> std::result::Result<DomainRef, RpcError> {
    let args = Encoder::new().string(name).finish();
    let reply = c
        .call(Program::Remote, procedure::DOMAIN_LOOKUP_BY_NAME, args)
        .await?;
    Ok(reply::domain(&reply)?)
}

/// A call whose arguments are the domain and a flags word.
async fn domain_call(
    c: &Client,
    program: Program,
    procedure: i32,
    dom: &DomainRef,
    extra: impl FnOnce(&mut Encoder),
) -> std::result::Result<Vec<u8>, RpcError> {
    let mut e = Encoder::new();
    dom.encode(&mut e);
    extra(&mut e);
    c.call(program, procedure, e.finish()).await
}

/// A call whose arguments are one checkpoint (`remote_nonnull_domain_checkpoint`: its name,
/// then its domain) and a flags word.
async fn checkpoint_call(
    c: &Client,
    procedure: i32,
    name: &str,
    dom: &DomainRef,
    flags: u32,
) -> std::result::Result<Vec<u8>, RpcError> {
    let mut e = Encoder::new();
    e.string(name);
    dom.encode(&mut e);
    e.u32(flags);
    c.call(Program::Remote, procedure, e.finish()).await
}

async fn state(c: &Client, dom: &DomainRef) -> std::result::Result<DomainState, RpcError> {
    let reply = domain_call(c, Program::Remote, procedure::DOMAIN_GET_STATE, dom, |e| {
        e.u32(0);
    })
    .await?;
    Ok(state_of(reply::state(&reply)?))
}

async fn xml(c: &Client, dom: &DomainRef) -> std::result::Result<String, RpcError> {
    let reply = domain_call(
        c,
        Program::Remote,
        procedure::DOMAIN_GET_XML_DESC,
        dom,
        |e| {
            e.u32(0);
        },
    )
    .await?;
    Ok(reply::string(&reply)?)
}

async fn query_block(c: &Client, dom: &DomainRef) -> std::result::Result<String, RpcError> {
    let reply = domain_call(
        c,
        Program::Qemu,
        procedure::QEMU_MONITOR_COMMAND,
        dom,
        |e| {
            e.string(r#"{"execute":"query-block"}"#).u32(0);
        },
    )
    .await?;
    Ok(reply::string(&reply)?)
}

/// The domain's checkpoints in topological order, with each one's creation time (its XML is
/// asked for all of them at once).
async fn checkpoints(
    c: &Client,
    dom: &DomainRef,
) -> std::result::Result<Vec<CheckpointFact>, RpcError> {
    let reply = domain_call(
        c,
        Program::Remote,
        procedure::DOMAIN_LIST_ALL_CHECKPOINTS,
        dom,
        |e| {
            e.i32(1).u32(CHECKPOINTS_TOPOLOGICAL);
        },
    )
    .await?;
    let names = reply::checkpoint_names(&reply)?;
    try_join_all(names.into_iter().map(|name| async move {
        let reply =
            checkpoint_call(c, procedure::DOMAIN_CHECKPOINT_GET_XML_DESC, &name, dom, 0).await?;
        let created = checkpoint_xml::creation_time(&reply::string(&reply)?).ok();
        Ok(CheckpointFact { name, created })
    }))
    .await
}

/// The decoders of the replies used here, public for the property tests: each checks every
/// length and that nothing is left over.
pub mod reply {
    use super::{DomainRef, CHECKPOINT_LIST_MAX, DOMAIN_LIST_MAX, STRING_MAX};
    use crate::host::xdr::{Decoder, XdrError};

    /// `remote_connect_list_all_domains_ret`: the domains, then their count.
    pub fn domain_names(body: &[u8]) -> Result<Vec<String>, XdrError> {
        let mut d = Decoder::new(body);
        let n = d.array_len(DOMAIN_LIST_MAX, DomainRef::MIN_LEN)?;
        let names = (0..n)
            .map(|_| DomainRef::decode(&mut d).map(|r| r.name))
            .collect::<Result<Vec<_>, _>>()?;
        let _count = d.u32()?;
        d.finish()?;
        Ok(names)
    }

    /// `remote_domain_lookup_by_name_ret`.
    pub fn domain(body: &[u8]) -> Result<DomainRef, XdrError> {
        let mut d = Decoder::new(body);
        let dom = DomainRef::decode(&mut d)?;
        d.finish()?;
        Ok(dom)
    }

    /// `remote_domain_get_state_ret`: the state (the reason is not needed).
    pub fn state(body: &[u8]) -> Result<i32, XdrError> {
        let mut d = Decoder::new(body);
        let state = d.i32()?;
        let _reason = d.i32()?;
        d.finish()?;
        Ok(state)
    }

    /// `remote_domain_list_all_checkpoints_ret`: each checkpoint's name and domain, then
    /// their count.
    pub fn checkpoint_names(body: &[u8]) -> Result<Vec<String>, XdrError> {
        let mut d = Decoder::new(body);
        let n = d.array_len(CHECKPOINT_LIST_MAX, 4 + DomainRef::MIN_LEN)?;
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            names.push(d.string(STRING_MAX)?);
            DomainRef::decode(&mut d)?;
        }
        let _count = d.i32()?;
        d.finish()?;
        Ok(names)
    }

    /// A reply that is one string (XML descriptions, QEMU's answer).
    pub fn string(body: &[u8]) -> Result<String, XdrError> {
        let mut d = Decoder::new(body);
        let s = d.string(STRING_MAX)?;
        d.finish()?;
        Ok(s)
    }
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

/// `virterror.h`: the error areas and codes that say the connection itself is unusable.
const FROM_RPC: i32 = 7;
const FROM_REMOTE: i32 = 13;
const ERR_NO_CONNECT: i32 = 5;
const ERR_INVALID_CONN: i32 = 6;
const ERR_NO_DOMAIN: i32 = 42;

/// Whether the connection to libvirtd itself is unusable. An error of another part (QEMU's
/// monitor of a domain that is stopping) is that domain's problem.
fn is_broken_connection(e: &RpcError) -> bool {
    match e {
        RpcError::Connection(_) | RpcError::Protocol(_) => true,
        RpcError::Remote { code, domain, .. } => {
            matches!(*domain, FROM_RPC | FROM_REMOTE)
                || matches!(*code, ERR_NO_CONNECT | ERR_INVALID_CONN)
        }
    }
}

fn classify(e: RpcError, domain: Option<&str>) -> Error {
    if let (
        RpcError::Remote {
            code: ERR_NO_DOMAIN,
            ..
        },
        Some(d),
    ) = (&e, domain)
    {
        return Error::NoSuchDomain(d.to_string());
    }
    if is_broken_connection(&e) {
        return Error::HostUnavailable(match e {
            RpcError::Connection(why) => why,
            other => format!("the connection to libvirt broke: {other}"),
        });
    }
    Error::CommandFailed {
        program: "libvirt".into(),
        message: e.to_string(),
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
    fn the_local_system_driver_is_accepted_with_its_socket() {
        let l = LocalLibvirt::from_uri("qemu:///system?socket=/run/x/libvirt-sock").unwrap();
        assert_eq!(l.socket, PathBuf::from("/run/x/libvirt-sock"));
        assert_eq!(l.driver, "qemu:///system");
        let l = LocalLibvirt::from_uri("qemu+unix:///system?mode=legacy").unwrap();
        assert_eq!(l.socket, PathBuf::from("/run/libvirt/libvirt-sock"));
        assert!(LocalLibvirt::from_uri("qemu:///system").is_ok());
    }

    #[test]
    fn other_hosts_drivers_and_parameters_are_refused() {
        for uri in [
            "qemu+ssh://elsewhere/system",
            "qemu:///session",
            "qemu:///systemd",
            "xen:///system",
            "qemu:///system?socket=relative",
            "qemu:///system?socket=/run/../etc/x",
            "qemu:///system?keyfile=/x",
        ] {
            assert!(LocalLibvirt::from_uri(uri).is_err(), "{uri}");
        }
    }
}
