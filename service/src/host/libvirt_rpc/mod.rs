//! A client of libvirtd's own RPC protocol, on its local socket.
//!
//! libvirt's C library would answer the same questions, but it brings GLib, GnuTLS, libxml2,
//! libssh, libcurl and Kerberos into the service: 9–14 MiB resident in a process that is
//! otherwise 7 MiB (BENCHMARKS.md). The wire protocol is stable by design: libvirt keeps old
//! clients working, procedure numbers never change ([`procedures`] is checked against
//! libvirt's own protocol files).
//!
//! One connection carries many calls at once, pipelined the way the C library does it: each
//! request gets a serial number and one reader task hands every reply to the call that waits
//! for it. The rules that keep one call's trouble from becoming everyone's:
//! - **One writer.** Callers hand whole frames to a writer task, so a caller that gives up
//!   (its deadline, a cancelled job) can never leave half a frame on the stream.
//! - **Only a broken stream closes the connection**: end of file, a length or header that is
//!   not the protocol, a reply to a call of another procedure. A reply body that does not
//!   decode is that call's [`RpcError::Decode`]; libvirt's error for a call, an unknown
//!   procedure included, is that call's error.
//! - **Keepalive.** The client announces it (`CONNECT_SUPPORTS_FEATURE`), so libvirtd pings
//!   an idle connection every 5 s; pings are answered, and a peer that sends nothing for
//!   [`Options::dead_peer`] is taken for dead (a stopped libvirtd holds its socket open).
//! - **A call that times out** closes the connection only when nothing at all came from the
//!   peer meanwhile; a slow call on a lively connection costs only itself.
//! - **No replay.** When a connection breaks after a call that changes something was sent,
//!   its outcome is unknown ([`RpcError::Interrupted`]); only reads are tried again.

pub mod procedures;
pub mod wire;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use procedures::{Procedure, Program};
use wire::{Header, RemoteError, CALL, HEADER_LEN, MESSAGE, MESSAGE_MAX, REPLY};
pub use wire::{STATUS_ERROR, STATUS_OK, STRING_MAX};

use super::xdr::{Decoder, Encoder, XdrError};

/// `VIR_DRV_FEATURE_PROGRAM_KEEPALIVE`.
const FEATURE_KEEPALIVE: i32 = 10;
/// `virterror.h` codes and areas this client gives a type of its own.
const ERR_NO_SUPPORT: i32 = 3;
const ERR_RPC: i32 = 39;
const FROM_RPC: i32 = 7;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The socket could not be reached, or the connection broke before the call was sent
    /// (or, for a read, before its reply came): libvirtd is gone or restarting.
    #[error("{0}")]
    Connection(String),
    /// The connection broke after a call that changes something was sent and before its
    /// reply came: whether libvirt did it is unknown, so it is not sent again.
    #[error("the connection to libvirt broke during {procedure}; whether it was done is unknown")]
    Interrupted { procedure: &'static str },
    /// libvirtd sent something that is not its protocol; the connection is dropped.
    #[error("libvirt sent a malformed message: {0}")]
    Protocol(String),
    /// A reply whose body is not the shape of its procedure's reply; the connection stays.
    #[error("libvirt's reply to {procedure} is not what that call returns: {detail}")]
    Decode {
        procedure: &'static str,
        detail: &'static str,
    },
    /// This libvirt does not know the procedure or the driver does not support it.
    #[error("libvirt does not support {procedure}: {message}")]
    Unsupported {
        procedure: &'static str,
        message: String,
    },
    /// No reply within the call's deadline.
    #[error("libvirt did not answer {procedure} within {seconds} s")]
    Timeout {
        procedure: &'static str,
        seconds: u64,
    },
    /// libvirt's own error for this call (`virterror.h` codes).
    #[error("{message}")]
    Remote {
        code: i32,
        domain: i32,
        message: String,
    },
}

impl RpcError {
    /// Whether the call may be tried again on a new connection.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RpcError::Connection(_))
    }

    /// Whether the connection is gone (libvirt unreachable), as opposed to one call failing.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            RpcError::Connection(_) | RpcError::Interrupted { .. } | RpcError::Protocol(_)
        )
    }

    /// The error a decoder's failure is for `procedure`.
    pub fn decode(procedure: Procedure) -> impl FnOnce(XdrError) -> RpcError {
        move |e| RpcError::Decode {
            procedure: procedure.spec().name,
            detail: e.0,
        }
    }
}

/// Tunables; the defaults are libvirt's own keepalive settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long one call may wait for its reply.
    pub call_timeout: Duration,
    /// Silence after which a peer that promised keepalive pings is taken for dead:
    /// libvirtd pings every 5 s and gives up on a client after 5 missed pongs.
    pub dead_peer: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            call_timeout: Duration::from_secs(60),
            dead_peer: Duration::from_secs(30),
        }
    }
}

/// The call a serial belongs to.
struct Waiter {
    procedure: Procedure,
    reply: oneshot::Sender<Result<Vec<u8>, RpcError>>,
}

/// What the callers and the connection's tasks share.
struct Shared {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Mutex<HashMap<u32, Waiter>>,
    closed: AtomicBool,
    /// When the peer last sent anything (replies, events, pings).
    last_heard: Mutex<Instant>,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        crate::sync::lock(&self.waiting)
    }

    fn heard(&self) {
        *crate::sync::lock(&self.last_heard) = Instant::now();
    }

    fn last_heard(&self) -> Instant {
        *crate::sync::lock(&self.last_heard)
    }

    /// Marks the connection dead and fails every call still waiting: reads can be tried
    /// again, changes are reported as interrupted.
    fn close(&self, why: &str) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::debug!(reason = why, "libvirt connection closed");
        for (_, waiter) in self.waiting().drain() {
            let spec = waiter.procedure.spec();
            let e = match spec.idempotent {
                true => RpcError::Connection(format!("the connection to libvirt broke: {why}")),
                false => RpcError::Interrupted {
                    procedure: spec.name,
                },
            };
            let _ = waiter.reply.send(Err(e));
        }
    }
}

/// An open connection to one libvirt driver.
pub struct Client {
    shared: Arc<Shared>,
    serial: AtomicU32,
    options: Options,
    keepalive: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Client {
    /// Connects to `socket`, authenticates (a root client needs nothing more than asking for
    /// the list: libvirtd lets it through without polkit), announces keepalive and opens the
    /// driver `name`.
    pub async fn open(socket: &Path, name: &str, options: Options) -> Result<Client, RpcError> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            RpcError::Connection(format!("failed to connect to {}: {e}", socket.display()))
        })?;
        Client::over(stream, name, options).await
    }

    /// The same on a stream that is already connected (a socket pair in the tests).
    pub async fn over<S>(stream: S, name: &str, options: Options) -> Result<Client, RpcError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let (outgoing, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            outgoing,
            waiting: Mutex::default(),
            closed: AtomicBool::new(false),
            last_heard: Mutex::new(Instant::now()),
        });
        let tasks = vec![
            tokio::spawn(write_frames(write, queue, shared.clone())),
            tokio::spawn(read_messages(read, shared.clone())),
        ];
        let mut client = Client {
            shared,
            serial: AtomicU32::new(1),
            options,
            keepalive: false,
            tasks,
        };
        let auth = client.call(Procedure::AuthList, Vec::new()).await?;
        let types = decode_auth_list(&auth).map_err(RpcError::decode(Procedure::AuthList))?;
        // REMOTE_AUTH_NONE = 0; SASL and polkit are for other users than root.
        if !types.is_empty() && !types.contains(&0) {
            return Err(RpcError::Connection(format!(
                "libvirt asks for authentication ({types:?}) that vmsnapd, running as root, \
                 does not do"
            )));
        }
        client.keepalive = client.announce_keepalive().await?;
        if client.keepalive {
            let watchdog = tokio::spawn(watch_peer(client.shared.clone(), options.dead_peer));
            client.tasks.push(watchdog);
        }
        let args = Encoder::new().opt_string(Some(name)).u32(0).finish();
        client.call(Procedure::ConnectOpen, args).await?;
        Ok(client)
    }

    /// Asks libvirtd to ping this connection; an old one without the feature is fine.
    async fn announce_keepalive(&self) -> Result<bool, RpcError> {
        let args = Encoder::new().i32(FEATURE_KEEPALIVE).finish();
        match self.call(Procedure::ConnectSupportsFeature, args).await {
            Ok(reply) => {
                let mut d = Decoder::new(&reply);
                let supported = d
                    .i32()
                    .and_then(|v| d.finish().map(|_| v))
                    .map_err(RpcError::decode(Procedure::ConnectSupportsFeature))?;
                Ok(supported == 1)
            }
            Err(RpcError::Unsupported { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the connection broke; a broken one never recovers.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Whether libvirtd agreed to keepalive pings on this connection.
    pub fn has_keepalive(&self) -> bool {
        self.keepalive
    }

    /// Sends one call and waits for its reply body, at most the call deadline.
    pub async fn call(&self, procedure: Procedure, args: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let spec = procedure.spec();
        let broken = || RpcError::Connection("the connection to libvirt broke".into());
        if self.is_closed() {
            return Err(broken());
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let message = wire::frame(spec.program, spec.number, CALL, serial, &args)?;
        let (tx, rx) = oneshot::channel();
        self.shared.waiting().insert(
            serial,
            Waiter {
                procedure,
                reply: tx,
            },
        );
        // A caller that gives up must not leave its slot behind.
        let _forget = Forget {
            shared: &self.shared,
            serial,
        };
        // Closed after the check above and before the call was registered: no one would
        // ever answer it, and nothing was sent.
        if self.is_closed() || self.shared.outgoing.send(message).is_err() {
            return Err(broken());
        }
        let sent = Instant::now();
        match tokio::time::timeout(self.options.call_timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(broken()),
            Err(_) => {
                // Nothing at all from the peer since the call went out: it hangs, and the
                // next call must not wait on it too.
                if self.shared.last_heard() < sent {
                    self.shared
                        .close("no answer from libvirt within the call deadline");
                }
                Err(RpcError::Timeout {
                    procedure: spec.name,
                    seconds: self.options.call_timeout.as_secs(),
                })
            }
        }
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    serial: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.waiting().remove(&self.serial);
    }
}

fn decode_auth_list(body: &[u8]) -> Result<Vec<i32>, XdrError> {
    let mut d = Decoder::new(body);
    let n = d.array_len(20, 4)?;
    let types = (0..n).map(|_| d.i32()).collect::<Result<Vec<_>, _>>()?;
    d.finish()?;
    Ok(types)
}

/// The only task that writes: whole frames, in the order they were queued.
async fn write_frames<W: AsyncWrite>(
    write: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    tokio::pin!(write);
    while let Some(frame) = queue.recv().await {
        if let Err(e) = write.write_all(&frame).await {
            shared.close(&format!("writing to libvirt: {e}"));
            return;
        }
    }
}

/// Hands each reply to its caller until the stream ends or breaks.
async fn read_messages<R: AsyncRead>(read: R, shared: Arc<Shared>) {
    tokio::pin!(read);
    let why = loop {
        let mut len = [0u8; 4];
        if let Err(e) = read.read_exact(&mut len).await {
            break format!("libvirt closed the connection: {e}");
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(4 + HEADER_LEN..=MESSAGE_MAX).contains(&len) {
            break format!("libvirt sent a message of {len} bytes");
        }
        let mut message = vec![0u8; len - 4];
        if let Err(e) = read.read_exact(&mut message).await {
            break format!("libvirt closed the connection: {e}");
        }
        shared.heard();
        if let Err(e) = dispatch(&message, &shared) {
            break e.to_string();
        }
    };
    shared.close(&why);
}

/// Routes one message: a reply to its waiting call, a keepalive ping answered, anything
/// else (events never asked for) ignored. An error means the stream is out of step.
fn dispatch(message: &[u8], shared: &Shared) -> Result<(), RpcError> {
    let header = wire::parse_header(message)?;
    let body = &message[HEADER_LEN..];
    if header.prog == Program::Keepalive.number() {
        let ping = Procedure::KeepalivePing.spec().number;
        if header.procedure == ping && header.kind == MESSAGE {
            let pong = Procedure::KeepalivePong.spec();
            let frame = wire::frame(Program::Keepalive, pong.number, MESSAGE, 0, &[])?;
            let _ = shared.outgoing.send(frame);
        }
        return Ok(());
    }
    if header.kind != REPLY {
        return Ok(());
    }
    // No waiter: its caller gave up and the reply is dropped.
    let Some(waiter) = shared.waiting().remove(&header.serial) else {
        return Ok(());
    };
    let spec = waiter.procedure.spec();
    if header.prog != spec.program.number() || header.procedure != spec.number {
        let _ = waiter.reply.send(Err(RpcError::Protocol(
            "a reply to another call than the one sent".into(),
        )));
        return Err(RpcError::Protocol(format!(
            "the reply to serial {} is for procedure {}, not {}",
            header.serial, header.procedure, spec.name
        )));
    }
    let _ = waiter.reply.send(outcome(&header, body, waiter.procedure));
    Ok(())
}

/// What a well-framed reply means for its call.
fn outcome(header: &Header, body: &[u8], procedure: Procedure) -> Result<Vec<u8>, RpcError> {
    match header.status {
        STATUS_OK => Ok(body.to_vec()),
        STATUS_ERROR => {
            let e = wire::parse_error(body).map_err(RpcError::decode(procedure))?;
            Err(typed(e, procedure))
        }
        other => Err(RpcError::Decode {
            procedure: procedure.spec().name,
            detail: match other {
                2 => "a stream continuation where a reply was expected",
                _ => "a reply status that is neither OK nor error",
            },
        }),
    }
}

/// libvirt's errors that have a type of their own here.
fn typed(e: RemoteError, procedure: Procedure) -> RpcError {
    let unknown_procedure =
        e.code == ERR_RPC && e.domain == FROM_RPC && e.message.starts_with("unknown procedure");
    if unknown_procedure || e.code == ERR_NO_SUPPORT {
        return RpcError::Unsupported {
            procedure: procedure.spec().name,
            message: e.message,
        };
    }
    RpcError::Remote {
        code: e.code,
        domain: e.domain,
        message: e.message,
    }
}

/// Closes a connection whose peer went silent beyond `dead_peer` although it promised pings.
async fn watch_peer(shared: Arc<Shared>, dead_peer: Duration) {
    let tick = (dead_peer / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        if shared.last_heard().elapsed() > dead_peer {
            shared.close(&format!(
                "libvirt sent nothing, not even a keepalive ping, for {} s",
                dead_peer.as_secs()
            ));
            return;
        }
    }
}
