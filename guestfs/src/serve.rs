//! The helper's request loop: one request line in, one reply out (plus frames for a read).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::rc::Rc;

use crate::image::{Disk, Window};
use crate::protocol::{Failure, FailureKind, Reply, Request, Volume, FRAME_FAILED, MAX_FRAME};
use crate::tree::Tree;

/// The longest request line read (requests are a path and a number).
const MAX_REQUEST: u64 = 64 * 1024;

pub struct Session {
    image: Rc<Disk>,
    size: u64,
    volumes: Option<Vec<Volume>>,
    trees: HashMap<u32, Result<Rc<Tree>, Failure>>,
}

impl Session {
    pub fn new(disk: Disk) -> Session {
        Session {
            size: disk.size(),
            image: Rc::new(disk),
            volumes: None,
            trees: HashMap::new(),
        }
    }

    fn volumes(&mut self) -> Result<&[Volume], Failure> {
        if self.volumes.is_none() {
            let found = crate::volumes::volumes(&self.image, self.size)
                .map_err(|e| Failure::new(FailureKind::Corrupt, format!("the disk: {e}")))?;
            self.volumes = Some(found);
        }
        Ok(self.volumes.as_deref().unwrap_or_default())
    }

    fn tree(&mut self, number: u32) -> Result<Rc<Tree>, Failure> {
        if let Some(t) = self.trees.get(&number) {
            return t.clone();
        }
        let volume = self
            .volumes()?
            .iter()
            .find(|v| v.number == number)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    FailureKind::NotFound,
                    format!("the disk has no volume {number}"),
                )
            })?;
        let opened = match volume.filesystem.as_str() {
            "luks" | "bitlocker" => Err(Failure::new(
                FailureKind::Encrypted,
                format!("volume {number}: {}: encrypted", volume.filesystem),
            )),
            fs => Tree::open(
                fs,
                Window::new(self.image.clone(), volume.start, volume.size),
            )
            .map(Rc::new),
        };
        self.trees.insert(number, opened.clone());
        opened
    }

    /// Answers one request on `out`.
    pub fn answer(&mut self, request: Request, out: &mut impl Write) -> std::io::Result<()> {
        let reply = match request {
            Request::Volumes => self.volumes().map(|v| Reply::Volumes(v.to_vec())),
            Request::List { volume, path } => self
                .tree(volume)
                .and_then(|t| t.list(&path))
                .map(|(entries, truncated)| Reply::Entries { entries, truncated }),
            Request::Stat { volume, path } => self
                .tree(volume)
                .and_then(|t| t.stat(&path))
                .map(Reply::Entry),
            Request::Read { volume, path } => {
                return match self.tree(volume) {
                    Ok(tree) => send_file(&tree, &path, out),
                    Err(f) => line(out, &Reply::Failed(f)),
                };
            }
        };
        line(out, &reply.unwrap_or_else(Reply::Failed))
    }
}

fn line(out: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)?;
    out.flush()
}

/// A file's header line, then its bytes in frames; a read that fails mid-file ends with
/// [`FRAME_FAILED`] and the failure, and never sends more than the size announced.
fn send_file(tree: &Tree, path: &str, out: &mut impl Write) -> std::io::Result<()> {
    let (mut reader, size) = match tree.open_file(path) {
        Ok(r) => r,
        Err(f) => return line(out, &Reply::Failed(f)),
    };
    line(out, &Reply::File { size })?;
    let mut buf = vec![0u8; MAX_FRAME as usize];
    let mut left = size;
    while left > 0 {
        let want = left.min(MAX_FRAME as u64) as usize;
        match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&(n as u32).to_be_bytes())?;
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Err(e) => {
                out.write_all(&FRAME_FAILED.to_be_bytes())?;
                return line(
                    out,
                    &Reply::Failed(Failure::new(FailureKind::Corrupt, format!("{path}: {e}"))),
                );
            }
        }
    }
    if left > 0 {
        out.write_all(&FRAME_FAILED.to_be_bytes())?;
        return line(
            out,
            &Reply::Failed(Failure::new(
                FailureKind::Corrupt,
                format!("{path}: ends {left} bytes before its recorded size"),
            )),
        );
    }
    out.write_all(&0u32.to_be_bytes())?;
    out.flush()
}

/// Serves requests from `input` until it ends. A request that makes a parser panic is
/// answered as a corrupt file system; the helper goes on (its state is read-only).
pub fn serve(
    session: &mut Session,
    input: impl BufRead,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut input = input.take(MAX_REQUEST);
    loop {
        let mut text = Vec::new();
        input.set_limit(MAX_REQUEST);
        if input.read_until(b'\n', &mut text)? == 0 {
            return Ok(());
        }
        if !text.ends_with(b"\n") {
            return line(
                out,
                &Reply::Failed(Failure::new(FailureKind::BadRequest, "request too long")),
            );
        }
        let request: Request = match serde_json::from_slice(&text) {
            Ok(r) => r,
            Err(e) => {
                line(
                    out,
                    &Reply::Failed(Failure::new(FailureKind::BadRequest, e.to_string())),
                )?;
                continue;
            }
        };
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.answer(request, out)
        }));
        match answered {
            Ok(result) => result?,
            Err(_) => line(
                out,
                &Reply::Failed(Failure::new(
                    FailureKind::Corrupt,
                    "the file system's structures made the reader fail",
                )),
            )?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(image: &[u8], request: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "vmsnap-guestfs-test-{}-{}",
            std::process::id(),
            request.len()
        ));
        std::fs::write(&path, image).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut session = Session::new(Disk::Raw {
            file,
            size: image.len() as u64,
        });
        let mut out = Vec::new();
        serve(&mut session, format!("{request}\n").as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_encrypted_volume_is_named_and_refused() {
        let mut disk = vec![0u8; 1 << 20];
        disk[..6].copy_from_slice(b"LUKS\xba\xbe");
        let volumes = ask(&disk, r#"{"op":"volumes"}"#);
        assert!(volumes.contains(r#""filesystem":"luks""#), "{volumes}");
        assert!(volumes.contains(r#""readable":false"#), "{volumes}");
        let listed = ask(&disk, r#"{"op":"list","volume":0,"path":"/"}"#);
        assert!(listed.contains(r#""kind":"encrypted""#), "{listed}");
    }

    #[test]
    fn junk_requests_are_answered_not_fatal() {
        let disk = vec![0u8; 4096];
        let out = ask(&disk, r#"{"op":"list","volume":7,"path":"relative"}"#);
        assert!(out.contains(r#""failed""#), "{out}");
        let out = ask(&disk, "not json at all");
        assert!(out.contains(r#""kind":"badRequest""#), "{out}");
    }
}
