//! A fake libvirtd on one end of a socket pair, for the client's fault tests: it answers the
//! handshake like libvirtd, every other call as the test says, and can cut the stream after
//! any number of bytes in either direction.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::procedures::{Procedure, Program};
use super::wire::{self, Header, HEADER_LEN, MESSAGE, REPLY, STATUS_ERROR, STATUS_OK};
use crate::host::xdr::Encoder;

/// How the fake answers one call.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok(Vec<u8>),
    Error {
        code: i32,
        domain: i32,
        message: String,
    },
    /// No answer at all.
    Never,
    /// These bytes instead of a reply.
    Raw(Vec<u8>),
}

type Script = dyn Fn(&Header, &[u8]) -> Answer + Send + Sync;

/// What the fake saw, for the tests' assertions.
#[derive(Debug, Default)]
pub struct Seen {
    /// Procedure numbers of the calls, in order.
    pub calls: Vec<i32>,
    pub pongs: usize,
    /// Set when a request was not the protocol (half a frame, a wrong length).
    pub garbage: Option<String>,
}

pub struct Fake {
    /// Whether it agrees to keepalive; `None` answers as a libvirt without the procedure.
    pub keepalive: Option<bool>,
    /// Pings sent right after the handshake.
    pub pings: usize,
    /// Bytes it writes before it closes the connection.
    pub write_budget: usize,
    /// Bytes of requests it reads before it closes the connection.
    pub read_budget: usize,
    pub script: Arc<Script>,
}

impl Fake {
    pub fn new(script: impl Fn(&Header, &[u8]) -> Answer + Send + Sync + 'static) -> Self {
        Fake {
            keepalive: Some(true),
            pings: 0,
            write_budget: usize::MAX,
            read_budget: usize::MAX,
            script: Arc::new(script),
        }
    }

    /// Starts it; returns the client's end and what the fake saw.
    pub fn spawn(self) -> (UnixStream, Arc<Mutex<Seen>>) {
        let (client, server) = UnixStream::pair().expect("socket pair");
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(self.serve(server, seen.clone()));
        (client, seen)
    }

    async fn serve(mut self, mut stream: UnixStream, seen: Arc<Mutex<Seen>>) {
        let mut read_left = self.read_budget;
        loop {
            let mut len = [0u8; 4];
            if read_left < 4 || stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes(len) as usize;
            if !(4 + HEADER_LEN..=wire::MESSAGE_MAX).contains(&len) {
                seen.lock().unwrap().garbage = Some(format!("a length of {len}"));
                return;
            }
            let mut message = vec![0u8; len - 4];
            if read_left < len || stream.read_exact(&mut message).await.is_err() {
                return;
            }
            read_left -= len;
            let header = match wire::parse_header(&message) {
                Ok(h)
                    if [Program::Remote, Program::Qemu, Program::Keepalive]
                        .iter()
                        .any(|p| p.number() == h.prog) =>
                {
                    h
                }
                _ => {
                    seen.lock().unwrap().garbage = Some("a header of no program".into());
                    return;
                }
            };
            let body = &message[HEADER_LEN..];
            if header.prog == Program::Keepalive.number() {
                seen.lock().unwrap().pongs += 1;
                continue;
            }
            seen.lock().unwrap().calls.push(header.procedure);
            let answer = self.answer(&header, body);
            let bytes = match answer {
                Answer::Never => continue,
                Answer::Raw(bytes) => bytes,
                Answer::Ok(body) => reply(&header, STATUS_OK, &body),
                Answer::Error {
                    code,
                    domain,
                    message,
                } => {
                    let body = Encoder::new()
                        .i32(code)
                        .i32(domain)
                        .opt_string(Some(&message))
                        .finish();
                    reply(&header, STATUS_ERROR, &body)
                }
            };
            if !self.write(&mut stream, &bytes).await {
                return;
            }
            if header.procedure == Procedure::ConnectOpen.spec().number {
                for _ in 0..self.pings {
                    let ping = Procedure::KeepalivePing.spec().number;
                    let frame = wire::frame(Program::Keepalive, ping, MESSAGE, 0, &[]).unwrap();
                    if !self.write(&mut stream, &frame).await {
                        return;
                    }
                }
            }
        }
    }

    /// Writes within the budget; false once the budget is spent (the stream is then cut).
    async fn write(&mut self, stream: &mut UnixStream, bytes: &[u8]) -> bool {
        let n = bytes.len().min(self.write_budget);
        let ok = stream.write_all(&bytes[..n]).await.is_ok();
        self.write_budget -= n;
        ok && n == bytes.len()
    }

    fn answer(&self, header: &Header, body: &[u8]) -> Answer {
        let p = |x: Procedure| x.spec().number;
        match header.procedure {
            n if n == p(Procedure::AuthList) && header.prog == Program::Remote.number() => {
                Answer::Ok(Encoder::new().u32(1).i32(0).finish())
            }
            n if n == p(Procedure::ConnectSupportsFeature) => match self.keepalive {
                Some(yes) => Answer::Ok(Encoder::new().i32(yes as i32).finish()),
                None => unknown_procedure(n),
            },
            n if n == p(Procedure::ConnectOpen) && header.prog == Program::Remote.number() => {
                Answer::Ok(Vec::new())
            }
            _ => (self.script)(header, body),
        }
    }
}

/// libvirtd's answer to a procedure it does not know.
pub fn unknown_procedure(number: i32) -> Answer {
    Answer::Error {
        code: 39,
        domain: 7,
        message: format!("unknown procedure: {number}"),
    }
}

/// A reply to `call` with its status and body.
pub fn reply(call: &Header, status: i32, body: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u32((4 + HEADER_LEN + body.len()) as u32)
        .u32(call.prog)
        .u32(1)
        .i32(call.procedure)
        .i32(REPLY)
        .u32(call.serial)
        .i32(status);
    let mut m = e.finish();
    m.extend_from_slice(body);
    m
}
