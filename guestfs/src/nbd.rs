//! A point as a read-only NBD export, spoken on one connection (the helper's stdin/stdout).
//!
//! vmsnapd owns the unix socket and accepts; each connection gets a helper of its own, so the
//! server here needs no socket calls (the sandbox allows none) and serves exactly one client.
//! It speaks the fixed-newstyle handshake (`NBD_OPT_GO`, `INFO`, `EXPORT_NAME`, `LIST`,
//! `ABORT`; everything else is unsupported) and simple replies; in transmission it reads,
//! flushes (a no-op) and disconnects, and refuses every write with `EPERM`. Every length a
//! client sends is bounded before it is read.

use std::io::{self, Read, Write};

use crate::point::Point;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags: has flags, read-only.
const EXPORT_FLAGS: u16 = 1 | 2;

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// The longest option a client may send (an export name and a few info requests).
const MAX_OPTION: u32 = 4096;
/// The largest read (and the largest write payload skipped) per request: QEMU's own limit.
pub const MAX_REQUEST: u32 = 32 << 20;

fn u16_of(input: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    input.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn u32_of(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn u64_of(input: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn refuse(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NBD client: {what}"))
}

fn option_reply(out: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    out.write_all(&OPTION_REPLY_MAGIC.to_be_bytes())?;
    out.write_all(&option.to_be_bytes())?;
    out.write_all(&kind.to_be_bytes())?;
    out.write_all(&(data.len() as u32).to_be_bytes())?;
    out.write_all(data)
}

/// Serves `point` to the client on `input`/`out` until it disconnects.
pub fn serve(point: &Point, mut input: impl Read, out: &mut impl Write) -> io::Result<()> {
    out.write_all(&NBDMAGIC.to_be_bytes())?;
    out.write_all(&IHAVEOPT.to_be_bytes())?;
    out.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
    out.flush()?;
    let client_flags = u32_of(&mut input)?;
    if negotiate(point.size(), client_flags, &mut input, out)? {
        transmit(point, &mut input, out)?;
    }
    out.flush()
}

/// The option haggling; true when the client goes on to transmission.
fn negotiate(
    size: u64,
    client_flags: u32,
    input: &mut impl Read,
    out: &mut impl Write,
) -> io::Result<bool> {
    loop {
        if u64_of(input)? != IHAVEOPT {
            return Err(refuse("an option without its magic"));
        }
        let option = u32_of(input)?;
        let length = u32_of(input)?;
        if length > MAX_OPTION {
            return Err(refuse("an option too long"));
        }
        let mut data = vec![0u8; length as usize];
        input.read_exact(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                out.write_all(&size.to_be_bytes())?;
                out.write_all(&EXPORT_FLAGS.to_be_bytes())?;
                if client_flags & CLIENT_NO_ZEROES == 0 {
                    out.write_all(&[0u8; 124])?;
                }
                out.flush()?;
                return Ok(true);
            }
            OPT_ABORT => {
                option_reply(out, option, REP_ACK, &[])?;
                return Ok(false);
            }
            OPT_LIST => {
                // One export, with the empty (default) name.
                option_reply(out, option, REP_SERVER, &0u32.to_be_bytes())?;
                option_reply(out, option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                if !info_request_is_sound(&data) {
                    option_reply(out, option, REP_ERR_INVALID, &[])?;
                    out.flush()?;
                    continue;
                }
                let mut export = INFO_EXPORT.to_be_bytes().to_vec();
                export.extend_from_slice(&size.to_be_bytes());
                export.extend_from_slice(&EXPORT_FLAGS.to_be_bytes());
                option_reply(out, option, REP_INFO, &export)?;
                let mut block = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                for n in [1u32, 4096, MAX_REQUEST] {
                    block.extend_from_slice(&n.to_be_bytes());
                }
                option_reply(out, option, REP_INFO, &block)?;
                option_reply(out, option, REP_ACK, &[])?;
                out.flush()?;
                if option == OPT_GO {
                    return Ok(true);
                }
            }
            _ => option_reply(out, option, REP_ERR_UNSUP, &[])?,
        }
        out.flush()?;
    }
}

/// `INFO`/`GO` data: a name length, the name, a count of info requests, the requests.
fn info_request_is_sound(data: &[u8]) -> bool {
    let Some(name_len) = data
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    else {
        return false;
    };
    let rest = data.len().checked_sub(4 + name_len as usize);
    let Some(count_at) = rest.filter(|r| *r >= 2).map(|_| 4 + name_len as usize) else {
        return false;
    };
    let count = u16::from_be_bytes([data[count_at], data[count_at + 1]]) as usize;
    data.len() == count_at + 2 + 2 * count
}

fn simple_reply(out: &mut impl Write, error: u32, handle: u64) -> io::Result<()> {
    out.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    out.write_all(&error.to_be_bytes())?;
    out.write_all(&handle.to_be_bytes())
}

fn transmit(point: &Point, input: &mut impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        if u32_of(input)? != REQUEST_MAGIC {
            return Err(refuse("a request without its magic"));
        }
        let _flags = u16_of(input)?;
        let command = u16_of(input)?;
        let handle = u64_of(input)?;
        let offset = u64_of(input)?;
        let length = u32_of(input)?;
        match command {
            CMD_READ => {
                let inside = offset
                    .checked_add(u64::from(length))
                    .is_some_and(|end| end <= point.size());
                if !inside || length > MAX_REQUEST {
                    simple_reply(out, EINVAL, handle)?;
                } else {
                    buf.resize(length as usize, 0);
                    match point.read_exact_at(&mut buf, offset) {
                        Ok(()) => {
                            simple_reply(out, 0, handle)?;
                            out.write_all(&buf)?;
                        }
                        Err(_) => simple_reply(out, EIO, handle)?,
                    }
                }
            }
            CMD_WRITE => {
                // Its payload follows and is skipped, so that the stream stays in step.
                if length > MAX_REQUEST {
                    return Err(refuse("a write larger than any request"));
                }
                io::copy(&mut input.take(u64::from(length)), &mut io::sink())?;
                simple_reply(out, EPERM, handle)?;
            }
            CMD_DISC => return Ok(()),
            CMD_FLUSH => simple_reply(out, 0, handle)?,
            // Trim, write-zeroes and the like change the disk: refused.
            4..=6 => simple_reply(out, EPERM, handle)?,
            _ => simple_reply(out, EINVAL, handle)?,
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::tests::{temp, write_point};

    /// A point of its own per call: the tests run at once, and one writing the file another
    /// reads would make both fail.
    fn point() -> Point {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = temp(&format!("nbd-point-{n}.data"));
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        write_point(&path, 1 << 20, &[(4096, 8192, Some(bytes))], false, false);
        let file = std::fs::File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        Point::open(vec![(file, size)]).unwrap()
    }

    fn option(kind: u32, data: &[u8]) -> Vec<u8> {
        let mut o = IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&kind.to_be_bytes());
        o.extend_from_slice(&(data.len() as u32).to_be_bytes());
        o.extend_from_slice(data);
        o
    }

    fn request(command: u16, handle: u64, offset: u64, length: u32) -> Vec<u8> {
        let mut r = REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&command.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&length.to_be_bytes());
        r
    }

    /// A client's whole conversation, sent at once; the server's side, returned.
    fn converse(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut input = CLIENT_NO_ZEROES.to_be_bytes().to_vec();
        for p in parts {
            input.extend_from_slice(p);
        }
        let mut out = Vec::new();
        serve(&point(), input.as_slice(), &mut out).unwrap();
        out
    }

    fn go() -> Vec<u8> {
        // No name, no info requests.
        option(OPT_GO, &[0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn a_read_after_go_returns_the_points_bytes() {
        let out = converse(&[
            go(),
            request(CMD_READ, 7, 4096, 16),
            request(CMD_DISC, 8, 0, 0),
        ]);
        // The greeting (18), three option replies (20 + 12, 20 + 14, 20), then the read.
        let reply = &out[18 + 32 + 34 + 20..];
        assert_eq!(&reply[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&reply[4..8], &0u32.to_be_bytes());
        assert_eq!(&reply[8..16], &7u64.to_be_bytes());
        let want: Vec<u8> = (0..16u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(&reply[16..], want.as_slice());
        // The size the export announced.
        assert_eq!(&out[18 + 20 + 2..18 + 20 + 10], &(1u64 << 20).to_be_bytes());
    }

    #[test]
    fn writes_are_refused_and_reads_past_the_end_are_invalid() {
        let mut write = request(CMD_WRITE, 1, 0, 4);
        write.extend_from_slice(b"evil");
        let out = converse(&[
            go(),
            write,
            request(CMD_READ, 2, (1 << 20) - 2, 4),
            request(4, 3, 0, 512),
            request(CMD_DISC, 4, 0, 0),
        ]);
        let replies = &out[18 + 32 + 34 + 20..];
        let errors: Vec<u32> = replies
            .chunks(16)
            .map(|r| u32::from_be_bytes(r[4..8].try_into().unwrap()))
            .collect();
        assert_eq!(errors, vec![EPERM, EINVAL, EPERM]);
    }

    #[test]
    fn hostile_options_end_the_connection_or_are_refused() {
        let mut input = 0u32.to_be_bytes().to_vec();
        input.extend_from_slice(&IHAVEOPT.to_be_bytes());
        input.extend_from_slice(&OPT_GO.to_be_bytes());
        input.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut out = Vec::new();
        assert!(serve(&point(), input.as_slice(), &mut out).is_err());
        // A GO whose name length lies is answered as invalid, and the client may go on.
        let out = converse(&[
            option(OPT_GO, &[0, 0, 1, 0, 0, 0]),
            option(99, &[]),
            option(OPT_ABORT, &[]),
        ]);
        let kinds: Vec<u32> = out[18..]
            .chunks(20)
            .map(|r| u32::from_be_bytes(r[12..16].try_into().unwrap()))
            .collect();
        assert_eq!(kinds, vec![REP_ERR_INVALID, REP_ERR_UNSUP, REP_ACK]);
    }
}
