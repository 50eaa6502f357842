//! Reads through libvirt's own API, on one long-lived connection.
//!
//! Status is what monitoring asks for every minute, on hosts with hundreds of domains. Through
//! virsh every fact costs a process and a fresh connection to libvirtd (about 20 ms each); on
//! an open connection it costs one RPC, well under a millisecond (BENCHMARKS.md). So the reads
//! of status and of a backup's plan come from here; whatever changes something still goes
//! through virsh, whose behaviour the rest of the code knows.
//!
//! The API blocks, so every call runs on tokio's blocking pool under the command deadline.
//! A call that fails because the connection broke (libvirtd restarted or went away) drops the
//! connection and is tried once more on a new one, so the first call after libvirtd is back
//! works, and a libvirtd that is really gone is reported as `HostUnavailable` at once.

use std::ffi::CStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{ErrorDomain, ErrorNumber};
use virt::sys;

use super::checkpoint_xml;
use super::virsh::DomainState;
use super::{Error, Result};

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

/// The service's read connection to libvirt.
#[derive(Clone)]
pub struct Libvirt {
    uri: String,
    timeout: Duration,
    slot: Arc<Mutex<Option<Connect>>>,
}

/// A reference to the shared connection for one call; released when dropped.
struct Borrowed(Connect);

impl Drop for Borrowed {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

impl Libvirt {
    pub fn new(uri: impl Into<String>, timeout: Duration) -> Self {
        Libvirt {
            uri: uri.into(),
            timeout,
            slot: Arc::default(),
        }
    }

    /// Names of all domains, running or not.
    pub async fn list_all(&self) -> Result<Vec<String>> {
        self.call(None, |conn| {
            conn.list_all_domains(0)?
                .iter()
                .map(Domain::get_name)
                .collect()
        })
        .await
    }

    /// State, definition and checkpoints of `name`, and QEMU's block devices when it runs.
    pub async fn domain(&self, name: &str) -> Result<DomainFacts> {
        let owned = name.to_string();
        self.call(Some(name), move |conn| {
            let dom = Domain::lookup_by_name(conn, &owned)?;
            let (state, _) = dom.get_state()?;
            let state = state_of(state);
            let xml = dom.get_xml_desc(0)?;
            let checkpoints = checkpoints_of(&dom)?;
            let (state, query_block) = match state.has_qemu() {
                true => match dom.qemu_monitor_command(r#"{"execute":"query-block"}"#, 0) {
                    Ok(reply) => (state, Some(reply)),
                    // It stopped between the two questions: report it as it is now.
                    Err(e) => match state_of(dom.get_state()?.0) {
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

    /// Runs `f` on the connection in the blocking pool, reconnecting once if it broke.
    async fn call<T: Send + 'static>(
        &self,
        domain: Option<&str>,
        f: impl Fn(&Connect) -> std::result::Result<T, virt::error::Error> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut last = None;
            for _ in 0..2 {
                let conn = this.connection()?;
                match f(&conn.0) {
                    Ok(v) => return Ok(v),
                    Err(e) if is_broken_connection(&e) => {
                        this.forget(&conn.0);
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.expect("two failed attempts"))
        });
        let seconds = self.timeout.as_secs();
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(Error::HostUnavailable(format!(
                "libvirt did not answer within {seconds} s"
            ))),
            Ok(Err(join)) => Err(Error::HostUnavailable(format!(
                "libvirt call failed: {join}"
            ))),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(classify(&e, domain)),
        }
    }

    /// The shared connection, opened when there is none.
    fn connection(&self) -> std::result::Result<Borrowed, virt::error::Error> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Connect::open(Some(&self.uri))?);
        }
        let shared = slot.as_ref().expect("just opened");
        // virConnectRef: each call holds its own reference, so a forget() while another call
        // still uses the connection only drops the shared one.
        Ok(Borrowed(shared.clone()))
    }

    /// Drops the shared connection if it is still `broken`.
    fn forget(&self, broken: &Connect) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().map(Connect::as_ptr) == Some(broken.as_ptr()) {
            if let Some(mut conn) = slot.take() {
                let _ = conn.close();
            }
        }
    }
}

fn state_of(state: sys::virDomainState) -> DomainState {
    match state {
        sys::VIR_DOMAIN_RUNNING => DomainState::Running,
        sys::VIR_DOMAIN_PAUSED => DomainState::Paused,
        sys::VIR_DOMAIN_SHUTOFF => DomainState::ShutOff,
        sys::VIR_DOMAIN_BLOCKED => DomainState::Other("idle".into()),
        sys::VIR_DOMAIN_SHUTDOWN => DomainState::Other("in shutdown".into()),
        sys::VIR_DOMAIN_CRASHED => DomainState::Other("crashed".into()),
        sys::VIR_DOMAIN_PMSUSPENDED => DomainState::Other("pmsuspended".into()),
        _ => DomainState::Other("no state".into()),
    }
}

/// `virDomainListAllCheckpoints` in topological order, with each one's creation time. The
/// `virt` crate has no checkpoint API yet, so this goes through its raw bindings.
fn checkpoints_of(dom: &Domain) -> std::result::Result<Vec<CheckpointFact>, virt::error::Error> {
    let mut list: *mut sys::virDomainCheckpointPtr = std::ptr::null_mut();
    // SAFETY: `dom` holds a valid domain pointer for the whole call; libvirt allocates `list`
    // (an array of `n` checkpoint pointers we own) only when it returns n >= 0.
    let n = unsafe {
        sys::virDomainListAllCheckpoints(
            dom.as_ptr(),
            &mut list,
            sys::VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL,
        )
    };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut found = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: i < n, so the slot holds a checkpoint pointer. Its name is a C string owned
        // by the checkpoint, copied before the checkpoint is freed; the XML is a string the
        // caller owns, copied and freed once; each checkpoint is freed once.
        unsafe {
            let cp = *list.add(i);
            let name = sys::virDomainCheckpointGetName(cp);
            let xml = sys::virDomainCheckpointGetXMLDesc(cp, 0);
            if !name.is_null() {
                let created = (!xml.is_null())
                    .then(|| CStr::from_ptr(xml).to_string_lossy().into_owned())
                    .and_then(|x| checkpoint_xml::creation_time(&x).ok());
                found.push(CheckpointFact {
                    name: CStr::from_ptr(name).to_string_lossy().into_owned(),
                    created,
                });
            }
            if !xml.is_null() {
                libc::free(xml.cast());
            }
            sys::virDomainCheckpointFree(cp);
        }
    }
    // SAFETY: the array itself was allocated by libvirt with malloc and is freed once.
    unsafe { libc::free(list.cast()) };
    Ok(found)
}

/// Whether the error says the connection to libvirtd itself is unusable. A system error from
/// another part (QEMU's monitor of a domain that is stopping) is that domain's problem.
fn is_broken_connection(e: &virt::error::Error) -> bool {
    matches!(e.domain(), ErrorDomain::Rpc | ErrorDomain::Remote)
        || matches!(e.code(), ErrorNumber::NoConnect | ErrorNumber::InvalidConn)
}

fn classify(e: &virt::error::Error, domain: Option<&str>) -> Error {
    if e.code() == ErrorNumber::NoDomain {
        if let Some(d) = domain {
            return Error::NoSuchDomain(d.to_string());
        }
    }
    if is_broken_connection(e) {
        return Error::HostUnavailable(format!("failed to connect to libvirt: {}", e.message()));
    }
    Error::CommandFailed {
        program: "libvirt".into(),
        message: e.message().to_string(),
    }
}
