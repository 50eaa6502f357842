//! A client of libvirtd's own RPC protocol, on its local socket.
//!
//! libvirt's C library would answer the same questions, but it brings GLib, GnuTLS, libxml2,
//! libssh, libcurl and Kerberos into the service: 9–14 MiB resident in a process that is
//! otherwise 7 MiB, for the handful of calls status and a backup's plan need (BENCHMARKS.md). The wire protocol
//! is stable by design: libvirt keeps old clients working, procedure numbers never change.
//!
//! One connection carries many calls at once: each request gets a serial number, a reader
//! task hands every reply to the call that waits for it, so the reads of many domains are
//! pipelined the way the C library does it. A connection whose stream breaks or goes out of
//! step fails every waiting call and is never used again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::xdr::{Decoder, Encoder, XdrError};

/// The programs on libvirt's socket (`remote_protocol.x`, `qemu_protocol.x`,
/// `virkeepaliveprotocol.x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Remote,
    Qemu,
}

const REMOTE_PROGRAM: u32 = 0x2000_8086;
const QEMU_PROGRAM: u32 = 0x2000_8087;
const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
const KEEPALIVE_PING: i32 = 1;
const KEEPALIVE_PONG: i32 = 2;

/// Procedure numbers of the calls used here.
pub mod procedure {
    pub const CONNECT_OPEN: i32 = 1;
    pub const DOMAIN_GET_XML_DESC: i32 = 14;
    pub const DOMAIN_LOOKUP_BY_NAME: i32 = 23;
    pub const AUTH_LIST: i32 = 66;
    pub const DOMAIN_GET_STATE: i32 = 212;
    pub const CONNECT_LIST_ALL_DOMAINS: i32 = 273;
    pub const DOMAIN_CHECKPOINT_GET_XML_DESC: i32 = 412;
    pub const DOMAIN_LIST_ALL_CHECKPOINTS: i32 = 413;
    pub const DOMAIN_CHECKPOINT_DELETE: i32 = 417;
    /// In the QEMU program.
    pub const QEMU_MONITOR_COMMAND: i32 = 1;
}

/// `virNetMessageType` and `virNetMessageStatus`.
const CALL: i32 = 0;
const REPLY: i32 = 1;
const MESSAGE: i32 = 2;
const STATUS_OK: i32 = 0;
const STATUS_ERROR: i32 = 1;

const HEADER_LEN: usize = 24;
/// `VIR_NET_MESSAGE_MAX` of current libvirt (32 MiB): the largest message either side sends.
const MESSAGE_MAX: usize = 32 << 20;
/// `REMOTE_STRING_MAX`.
pub const STRING_MAX: usize = 4 << 20;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The socket could not be reached, or the connection broke: libvirtd is gone or
    /// restarting.
    #[error("{0}")]
    Connection(String),
    /// libvirtd sent something that is not its protocol; the connection is dropped.
    #[error("libvirt sent a malformed message: {0}")]
    Protocol(String),
    /// libvirt's own error for this call (`virterror.h` codes).
    #[error("{message}")]
    Remote {
        code: i32,
        domain: i32,
        message: String,
    },
}

impl From<XdrError> for RpcError {
    fn from(e: XdrError) -> Self {
        RpcError::Protocol(e.0.to_string())
    }
}

type Waiter = oneshot::Sender<Result<Vec<u8>, RpcError>>;

/// What the callers and the reader task share.
struct Shared {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiting: Mutex<HashMap<u32, Waiter>>,
    closed: AtomicBool,
}

impl Shared {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection dead and fails every call still waiting.
    fn close(&self, why: RpcError) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, waiter) in self.waiting().drain() {
            let _ = waiter.send(Err(why.clone()));
        }
    }

    async fn send(&self, message: &[u8]) -> Result<(), RpcError> {
        let mut writer = self.writer.lock().await;
        writer
            .write_all(message)
            .await
            .map_err(|e| RpcError::Connection(format!("writing to libvirt: {e}")))
    }
}

/// An open, authenticated connection to one libvirt driver.
pub struct Client {
    shared: Arc<Shared>,
    serial: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects to `socket`, authenticates (a root client needs nothing more than asking for
    /// the list: libvirtd lets it through without polkit) and opens the driver `name`.
    pub async fn open(socket: &Path, name: &str) -> Result<Client, RpcError> {
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            RpcError::Connection(format!("failed to connect to {}: {e}", socket.display()))
        })?;
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(write),
            waiting: Mutex::default(),
            closed: AtomicBool::new(false),
        });
        let reader = tokio::spawn(read_replies(read, shared.clone()));
        let client = Client {
            shared,
            serial: AtomicU32::new(1),
            reader,
        };
        let auth = client
            .call(Program::Remote, procedure::AUTH_LIST, Vec::new())
            .await?;
        let mut d = Decoder::new(&auth);
        let n = d.array_len(20, 4)?;
        let types = (0..n).map(|_| d.i32()).collect::<Result<Vec<_>, _>>()?;
        // REMOTE_AUTH_NONE = 0; SASL and polkit are for other users than root.
        if !types.is_empty() && !types.contains(&0) {
            return Err(RpcError::Connection(format!(
                "libvirt at {} asks for authentication ({types:?}) that vmsnapd, running as \
                 root, does not do",
                socket.display()
            )));
        }
        let args = Encoder::new().opt_string(Some(name)).u32(0).finish();
        client
            .call(Program::Remote, procedure::CONNECT_OPEN, args)
            .await?;
        Ok(client)
    }

    /// Whether the connection broke; a broken one never recovers.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Sends one call and waits for its reply body.
    pub async fn call(
        &self,
        program: Program,
        procedure: i32,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, RpcError> {
        if self.is_closed() {
            return Err(RpcError::Connection(
                "the connection to libvirt broke".into(),
            ));
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let prog = match program {
            Program::Remote => REMOTE_PROGRAM,
            Program::Qemu => QEMU_PROGRAM,
        };
        let message = frame(prog, procedure, CALL, serial, &args)?;
        let (tx, rx) = oneshot::channel();
        self.shared.waiting().insert(serial, tx);
        // A caller that gives up (deadline) must not leave its slot behind.
        let guard = Forget {
            shared: &self.shared,
            serial,
        };
        // The reader may have closed the connection after the check above and before this
        // call was registered; then no one would ever answer it.
        if self.is_closed() {
            return Err(RpcError::Connection(
                "the connection to libvirt broke".into(),
            ));
        }
        if let Err(e) = self.shared.send(&message).await {
            self.shared.close(e.clone());
            return Err(e);
        }
        let reply = rx.await.unwrap_or_else(|_| {
            Err(RpcError::Connection(
                "the connection to libvirt broke".into(),
            ))
        });
        drop(guard);
        reply
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

/// One message: length word (counting itself), header, body.
fn frame(
    prog: u32,
    procedure: i32,
    kind: i32,
    serial: u32,
    body: &[u8],
) -> Result<Vec<u8>, RpcError> {
    let len = 4 + HEADER_LEN + body.len();
    if len > MESSAGE_MAX {
        return Err(RpcError::Protocol(
            "a request larger than libvirt accepts".into(),
        ));
    }
    let mut e = Encoder::new();
    e.u32(len as u32)
        .u32(prog)
        .u32(1)
        .i32(procedure)
        .i32(kind)
        .u32(serial)
        .i32(STATUS_OK);
    let mut message = e.finish();
    message.extend_from_slice(body);
    Ok(message)
}

/// Hands each reply to its caller until the stream ends or breaks.
async fn read_replies(mut read: tokio::net::unix::OwnedReadHalf, shared: Arc<Shared>) {
    let why = loop {
        let mut len = [0u8; 4];
        if let Err(e) = read.read_exact(&mut len).await {
            break RpcError::Connection(format!("libvirt closed the connection: {e}"));
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(4 + HEADER_LEN..=MESSAGE_MAX).contains(&len) {
            break RpcError::Protocol(format!("a message of {len} bytes"));
        }
        let mut message = vec![0u8; len - 4];
        if let Err(e) = read.read_exact(&mut message).await {
            break RpcError::Connection(format!("libvirt closed the connection: {e}"));
        }
        match dispatch(&message, &shared).await {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    shared.close(why);
}

/// Routes one message: a reply to its waiting call, a keepalive ping answered, anything
/// else (events we never asked for) ignored.
async fn dispatch(message: &[u8], shared: &Shared) -> Result<(), RpcError> {
    let header = parse_header(message)?;
    let body = &message[HEADER_LEN..];
    if header.prog == KEEPALIVE_PROGRAM {
        if header.procedure == KEEPALIVE_PING && header.kind == MESSAGE {
            let pong = frame(KEEPALIVE_PROGRAM, KEEPALIVE_PONG, MESSAGE, 0, &[])?;
            shared.send(&pong).await?;
        }
        return Ok(());
    }
    if header.kind != REPLY {
        return Ok(());
    }
    let outcome = match header.status {
        STATUS_OK => Ok(body.to_vec()),
        STATUS_ERROR => Err(parse_error(body)?),
        other => return Err(RpcError::Protocol(format!("a reply with status {other}"))),
    };
    // No waiter: its caller gave up (deadline) and the reply is dropped.
    if let Some(waiter) = shared.waiting().remove(&header.serial) {
        let _ = waiter.send(outcome);
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub prog: u32,
    pub procedure: i32,
    pub kind: i32,
    pub serial: u32,
    pub status: i32,
}

/// The header of a message without its length word.
pub fn parse_header(message: &[u8]) -> Result<Header, RpcError> {
    let mut d = Decoder::new(message);
    let prog = d.u32()?;
    let _version = d.u32()?;
    Ok(Header {
        prog,
        procedure: d.i32()?,
        kind: d.i32()?,
        serial: d.u32()?,
        status: d.i32()?,
    })
}

/// The code, area and message of a `remote_error`; the rest of it is not needed.
pub fn parse_error(body: &[u8]) -> Result<RpcError, RpcError> {
    let mut d = Decoder::new(body);
    let code = d.i32()?;
    let domain = d.i32()?;
    let message = d
        .opt_string(STRING_MAX)?
        .unwrap_or_else(|| format!("libvirt error {code}"));
    Ok(RpcError::Remote {
        code,
        domain,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_framed_with_its_length_and_header() {
        let m = frame(REMOTE_PROGRAM, 23, CALL, 9, &[0, 0, 0, 1]).unwrap();
        assert_eq!(m.len(), 32);
        assert_eq!(&m[..4], &32u32.to_be_bytes());
        let h = parse_header(&m[4..]).unwrap();
        assert_eq!(
            h,
            Header {
                prog: REMOTE_PROGRAM,
                procedure: 23,
                kind: CALL,
                serial: 9,
                status: STATUS_OK
            }
        );
    }

    #[test]
    fn an_error_reply_keeps_libvirts_code_and_words() {
        let body = Encoder::new()
            .i32(42)
            .i32(10)
            .opt_string(Some("Domain not found: no domain with matching name 'x'"))
            .finish();
        match parse_error(&body).unwrap() {
            RpcError::Remote {
                code,
                domain,
                message,
            } => {
                assert_eq!((code, domain), (42, 10));
                assert!(message.contains("matching name"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_error(&[0, 0]).is_err());
    }
}
