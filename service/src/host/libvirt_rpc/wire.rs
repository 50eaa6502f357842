//! The framing of libvirt's RPC (`virnetprotocol.x`): a length word that counts itself, a
//! six-word header, then the body.

use super::procedures::Program;
use super::RpcError;
use crate::host::xdr::{Decoder, Encoder};

/// `virNetMessageType`.
pub const CALL: i32 = 0;
pub const REPLY: i32 = 1;
pub const MESSAGE: i32 = 2;
/// `virNetMessageStatus`.
pub const STATUS_OK: i32 = 0;
pub const STATUS_ERROR: i32 = 1;

pub const HEADER_LEN: usize = 24;
/// `VIR_NET_MESSAGE_MAX` of current libvirt (32 MiB): the largest message either side sends.
pub const MESSAGE_MAX: usize = 32 << 20;
/// `REMOTE_STRING_MAX`.
pub const STRING_MAX: usize = 4 << 20;

/// One message: length word, header, body.
pub fn frame(
    program: Program,
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
        .u32(program.number())
        .u32(1)
        .i32(procedure)
        .i32(kind)
        .u32(serial)
        .i32(STATUS_OK);
    let mut message = e.finish();
    message.extend_from_slice(body);
    Ok(message)
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
    let mut word = || {
        d.u32()
            .map_err(|_| RpcError::Protocol("a message shorter than its header".into()))
    };
    let prog = word()?;
    let _version = word()?;
    Ok(Header {
        prog,
        procedure: word()? as i32,
        kind: word()? as i32,
        serial: word()?,
        status: word()? as i32,
    })
}

/// libvirt's error for one call: the code, area and words of a `remote_error` (the rest of
/// it is not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub code: i32,
    pub domain: i32,
    pub message: String,
}

/// Decodes a `remote_error`.
pub fn parse_error(body: &[u8]) -> Result<RemoteError, crate::host::xdr::XdrError> {
    let mut d = Decoder::new(body);
    let code = d.i32()?;
    let domain = d.i32()?;
    let message = d
        .opt_string(STRING_MAX)?
        .unwrap_or_else(|| format!("libvirt error {code}"));
    Ok(RemoteError {
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
        let m = frame(Program::Remote, 23, CALL, 9, &[0, 0, 0, 1]).unwrap();
        assert_eq!(m.len(), 32);
        assert_eq!(&m[..4], &32u32.to_be_bytes());
        let h = parse_header(&m[4..]).unwrap();
        assert_eq!(
            h,
            Header {
                prog: Program::Remote.number(),
                procedure: 23,
                kind: CALL,
                serial: 9,
                status: STATUS_OK
            }
        );
        assert!(parse_header(&m[4..20]).is_err());
    }

    #[test]
    fn an_error_reply_keeps_libvirts_code_and_words() {
        let body = Encoder::new()
            .i32(42)
            .i32(10)
            .opt_string(Some("Domain not found: no domain with matching name 'x'"))
            .finish();
        let e = parse_error(&body).unwrap();
        assert_eq!((e.code, e.domain), (42, 10));
        assert!(e.message.contains("matching name"));
        assert!(parse_error(&[0, 0]).is_err());
    }
}
