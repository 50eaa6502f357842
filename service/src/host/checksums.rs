//! VMSnap's own checksums of backup data files (`<chain>/vmsnap.sha256`, sha256sum format),
//! and virtnbdbackup's.
//!
//! virtnbdbackup 1.9 (Debian 12) writes no checksums at all, and 2.x's adler32
//! (`<file>.chksum`) is rewritten together with the file it describes. The service therefore
//! records a SHA-256 of every data file right after the backup that wrote it succeeded; Verify
//! recomputes them, and where 2.x left a `.chksum` it checks that too, in the same pass over
//! the file: a second check that does not depend on VMSnap's record (a `vmsnap.sha256` lost or
//! edited along with the data still leaves virtnbdbackup's own sum).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::safe_fs::{cap, Dir, Kind};
use super::{Error, Result};

pub const FILE: &str = "vmsnap.sha256";

/// Recorded checksums of a chain folder: file name → hex digest.
pub fn read(folder: &Path) -> Result<BTreeMap<String, String>> {
    let dir = Dir::open(folder).map_err(|e| Error::at(folder, e))?;
    read_in(&dir)
}

fn read_in(dir: &Dir) -> Result<BTreeMap<String, String>> {
    let text = match dir.read_text(FILE, cap::MEDIUM) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect())
}

/// Opens the regular file `path` by handle (no symlink anywhere, no FIFO).
fn open_regular(path: &Path) -> Result<std::fs::File> {
    let (parent, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(Error::Rejected(format!("{} is not a file", path.display()))),
    };
    let dir = Dir::open(parent).map_err(|e| Error::at(parent, e))?;
    Ok(dir.open_file(name)?.0)
}

/// Both sums of a file, from one read of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// SHA-256, lowercase hex: what `vmsnap.sha256` records.
    pub sha256: String,
    /// adler32 of the whole file, as virtnbdbackup 2.x computes it for `<file>.chksum`, when
    /// it was asked for.
    pub adler32: Option<u32>,
}

/// SHA-256 of a file, as lowercase hex.
pub fn digest(path: &Path) -> Result<String> {
    digest_unless(path, false, &|| false).map(|d| d.map(|d| d.sha256).unwrap_or_default())
}

/// The size of one read while hashing, and how many reads may be ahead of the hashing.
const DIGEST_CHUNK: usize = 4 << 20;
const DIGEST_AHEAD: usize = 3;

/// The SHA-256 of a file, and its adler32 `with_adler32` (only 2.x's `.chksum` needs it), or
/// `None` as soon as `stop` says so (it is asked between reads of 4 MiB): whole-image hashing
/// runs on a blocking thread, and a cancelled job must not leave that thread reading a large
/// file to the end.
///
/// Reading and hashing overlap: a second thread reads ahead (a few chunks, bounded) while this
/// one computes the SHA-256, and a third the adler32 when asked, so that a cold file costs
/// about the longest of the three, not their sum — what keeps Verify near the speed of reading
/// what is stored (the SHA-256 alone, with the CPU's SHA extensions, is 1.7 GB/s here).
pub fn digest_unless(
    path: &Path,
    with_adler32: bool,
    stop: &dyn Fn() -> bool,
) -> Result<Option<FileDigests>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_regular(path)?;
    // SAFETY: a valid descriptor; the advice only sizes the kernel's readahead.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
    let mut hasher = Sha256::new();
    // The adler32, when asked for, on a thread of its own beside the SHA-256.
    let (adler_tx, adler_rx) = sync_channel::<Arc<Vec<u8>>>(DIGEST_AHEAD);
    let (full_tx, full_rx) = sync_channel::<std::io::Result<Vec<u8>>>(DIGEST_AHEAD);
    let hashed = std::thread::scope(|scope| {
        scope.spawn(move || read_ahead(&mut file, &full_tx));
        // Owned here, so that returning early drops it and the reader, blocked on sending,
        // ends before the scope waits for it.
        let full_rx = full_rx;
        let adler = with_adler32.then(|| scope.spawn(move || adler_of(&adler_rx)));
        let adler_tx = adler_tx;
        let hashed = loop {
            if stop() {
                // Dropping the receiver ends the reader at its next send.
                break Ok(false);
            }
            let chunk = match full_rx.recv() {
                Ok(Ok(chunk)) => Arc::new(chunk),
                Ok(Err(e)) => break Err(e),
                Err(_) => break Ok(true),
            };
            if chunk.is_empty() {
                break Ok(true);
            }
            hasher.update(&chunk[..]);
            let last = chunk.len() < DIGEST_CHUNK;
            if with_adler32 && adler_tx.send(chunk).is_err() {
                break Ok(true);
            }
            if last {
                break Ok(true);
            }
        };
        drop(adler_tx);
        hashed.map(|done| (done, adler.and_then(|a| a.join().ok())))
    });
    let adler = match hashed {
        Ok((true, adler)) => adler,
        Ok((false, _)) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    Ok(Some(FileDigests {
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        adler32: adler,
    }))
}

/// Sends `file` in whole chunks (the last one shorter, perhaps empty) until its end, a read
/// error, or the receiver is gone.
fn read_ahead(file: &mut std::fs::File, chunks: &SyncSender<std::io::Result<Vec<u8>>>) {
    loop {
        // A fresh buffer each time (the allocator hands back the one just freed): measured
        // faster here than passing buffers back and forth.
        let mut buf = vec![0u8; DIGEST_CHUNK];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = chunks.send(Err(e));
                    return;
                }
            }
        }
        let end = filled < buf.len();
        buf.truncate(filled);
        if chunks.send(Ok(buf)).is_err() || end {
            return;
        }
    }
}

/// The adler32 of the chunks received until the sender is gone.
fn adler_of(chunks: &Receiver<Arc<Vec<u8>>>) -> u32 {
    let mut adler = adler2::Adler32::new();
    while let Ok(chunk) = chunks.recv() {
        adler.write_slice(&chunk);
    }
    adler.checksum()
}

/// virtnbdbackup's own checksum of `file` in the chain folder `dir` (2.x: `<file>.chksum`,
/// the decimal adler32), `None` where there is none (1.9 writes none).
pub fn tool_checksum(dir: &Dir, file: &str) -> Result<Option<u32>> {
    let name = format!("{file}.chksum");
    let text = match dir.read_text(&name, 64) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    text.trim().parse().map(Some).map_err(|_| Error::Parse {
        what: name,
        detail: format!("{:?} is not a decimal adler32", text.trim()),
    })
}

/// Hashes a file while another process appends to it, so that its checksum is ready the
/// moment the writer is done instead of costing a second pass over the data (a quarter of a
/// second per 512 MiB here, a tenth of a backup's time).
///
/// Only for files written strictly in sequence — virtnbdbackup's stream format (`.full.data`,
/// `.inc.<checkpoint>.data`), which writes frame after frame and never seeks. [`finish`]
/// checks that the finished file is the one read, and exactly as long as what was hashed; if
/// not it gives no digest and the caller hashes the file again.
///
/// [`finish`]: TailHasher::finish
pub struct TailHasher {
    /// The file while it is written (`….data.partial`).
    partial: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    hashed: u64,
}

impl TailHasher {
    pub fn new(partial: PathBuf) -> Self {
        TailHasher {
            partial,
            file: None,
            hasher: Sha256::new(),
            hashed: 0,
        }
    }

    /// Whether `path` is written in sequence, so that hashing it as it grows is sound.
    pub fn suits(path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.ends_with(".data.partial") && !name.ends_with(".copy.data.partial")
    }

    /// Hashes what was appended since the last call, through `buf`; opens the file once it
    /// exists.
    pub fn catch_up(&mut self, buf: &mut [u8]) {
        if self.file.is_none() {
            self.file = open_regular(&self.partial).ok();
        }
        if let Some(file) = self.file.as_mut() {
            while let Ok(n) = file.read(buf) {
                if n == 0 {
                    break;
                }
                self.hasher.update(&buf[..n]);
                self.hashed += n as u64;
            }
        }
    }

    /// After the writer exited successfully: hashes the rest and returns the finished file's
    /// name and digest, or `None` when the result cannot be trusted.
    pub fn finish(mut self) -> Option<(String, String)> {
        self.catch_up(&mut vec![0u8; 1 << 20]);
        let final_path = PathBuf::from(self.partial.to_str()?.strip_suffix(".partial")?);
        let read = self.file.as_ref()?.metadata().ok()?;
        let finished = std::fs::metadata(&final_path).ok()?;
        use std::os::unix::fs::MetadataExt;
        let same_file = read.dev() == finished.dev() && read.ino() == finished.ino();
        if !same_file || finished.len() != self.hashed {
            return None;
        }
        let name = final_path.file_name()?.to_str()?.to_string();
        let digest = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some((name, digest))
    }
}

/// The tail hashers of one backup run, driven by a thread of their own so that reading never
/// holds up the async runtime. Stops when finished or dropped.
pub struct Concurrent {
    files: Arc<Mutex<Vec<PathBuf>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<TailHasher>>>,
}

impl Concurrent {
    pub fn start() -> Self {
        let files: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (files.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tail-hash".into())
            .spawn(move || {
                let mut hashers: Vec<TailHasher> = Vec::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let done = s.load(Ordering::Acquire);
                    let wanted = f.lock().map(|v| v.clone()).unwrap_or_default();
                    for path in wanted.into_iter().skip(hashers.len()) {
                        hashers.push(TailHasher::new(path));
                    }
                    hashers.iter_mut().for_each(|h| h.catch_up(&mut buf));
                    if done {
                        return hashers;
                    }
                    // Woken at once by `finish`, so the end of a run never waits out a nap;
                    // short naps keep what is left to hash at the end small (virtnbdbackup
                    // writes several hundred MB/s here).
                    std::thread::park_timeout(Duration::from_millis(20));
                }
            })
            .ok();
        Concurrent {
            files,
            stop,
            thread,
        }
    }

    /// Starts hashing `partial` if it is a file written in sequence (once per file).
    pub fn track(&self, partial: &Path) {
        if !TailHasher::suits(partial) {
            return;
        }
        if let Ok(mut files) = self.files.lock() {
            if !files.iter().any(|f| f == partial) {
                files.push(partial.to_path_buf());
            }
        }
    }

    /// After a successful run: the digests of the finished files (name → digest). Files it
    /// could not vouch for are left out, for the caller to hash. Blocks while it reads the
    /// rest of each file.
    pub fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Release);
        let hashers = self
            .thread
            .take()
            .and_then(|t| {
                t.thread().unpark();
                t.join().ok()
            })
            .unwrap_or_default();
        hashers.into_iter().filter_map(TailHasher::finish).collect()
    }
}

impl Drop for Concurrent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Records the checksum of every `*.data` file in `folder` that has none yet.
pub fn record_new(folder: &Path) -> Result<Vec<String>> {
    record_new_with(folder, &BTreeMap::new())
}

/// Like [`record_new`], taking the digests in `known_digests` (file name → digest, from a
/// [`TailHasher`]) instead of reading those files again.
pub fn record_new_with(
    folder: &Path,
    known_digests: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let dir = Dir::open(folder).map_err(|e| Error::at(folder, e))?;
    let known = read_in(&dir)?;
    let mut added = Vec::new();
    let mut lines = String::new();
    let mut names: Vec<String> = dir
        .entries()
        .map_err(|e| Error::at(folder, e))?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.name)
        .filter(|n| n.ends_with(".data") && !known.contains_key(n))
        .collect();
    names.sort();
    for name in names {
        let sum = match known_digests.get(&name) {
            Some(sum) => sum.clone(),
            None => digest(&folder.join(&name))?,
        };
        lines.push_str(&format!("{sum}  {name}\n"));
        added.push(name);
    }
    if !lines.is_empty() {
        dir.append(FILE, lines.as_bytes(), 0o644)
            .map_err(|e| Error::at(&folder.join(FILE), e))?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_ahead_hashes_every_byte_once_and_stops_when_asked() {
        let dir = std::env::temp_dir().join(format!("vmsnap-ahead-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Chunks whole and cut, and exactly one chunk.
        for len in [0, 17, DIGEST_CHUNK, 3 * DIGEST_CHUNK + 12345] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let path = dir.join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let got = digest_unless(&path, true, &|| false).unwrap().unwrap();
            let want: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got.sha256, want, "{len} bytes");
            assert_eq!(
                got.adler32,
                Some(adler2::adler32_slice(&bytes)),
                "{len} bytes"
            );
            // A stop after the first chunk returns at once, reader and all.
            let asked = std::sync::atomic::AtomicUsize::new(0);
            let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0;
            if len > DIGEST_CHUNK {
                assert!(digest_unless(&path, false, &stop).unwrap().is_none());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn adler32_is_zlibs_and_chksum_files_are_read_as_2x_writes_them() {
        let dir = std::env::temp_dir().join(format!("vmsnap-adler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vda.full.data"), b"Wikipedia").unwrap();
        let sums = digest_unless(&dir.join("vda.full.data"), true, &|| false)
            .unwrap()
            .unwrap();
        // zlib.adler32(b"Wikipedia") == 0x11e60398, as virtnbdbackup computes it.
        assert_eq!(sums.adler32, Some(0x11e6_0398));
        let handle = Dir::open(&dir).unwrap();
        assert_eq!(tool_checksum(&handle, "vda.full.data").unwrap(), None);
        std::fs::write(dir.join("vda.full.data.chksum"), "300286872").unwrap();
        assert_eq!(
            tool_checksum(&handle, "vda.full.data").unwrap(),
            Some(300286872)
        );
        std::fs::write(dir.join("vda.full.data.chksum"), "0x11e60398").unwrap();
        assert!(tool_checksum(&handle, "vda.full.data").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_hashed_while_it_grows_has_the_digest_of_the_finished_file() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("vmsnap-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let partial = dir.join("vda.full.data.partial");
        assert!(TailHasher::suits(&partial));
        assert!(!TailHasher::suits(&dir.join("vdb.copy.data.partial")));
        let mut tail = TailHasher::new(partial.clone());
        let mut buf = [0u8; 4];
        tail.catch_up(&mut buf); // not there yet
        let mut w = std::fs::File::create(&partial).unwrap();
        for chunk in [&b"frame one "[..], b"frame two ", b"end"] {
            w.write_all(chunk).unwrap();
            tail.catch_up(&mut buf);
        }
        w.write_all(b" trailer").unwrap();
        drop(w);
        std::fs::rename(&partial, dir.join("vda.full.data")).unwrap();
        let (name, sum) = tail.finish().unwrap();
        assert_eq!(name, "vda.full.data");
        assert_eq!(sum, digest(&dir.join("vda.full.data")).unwrap());
        // A file rewritten to another length after it was read is not trusted.
        let partial = dir.join("vdb.full.data.partial");
        std::fs::write(&partial, b"long content").unwrap();
        let mut tail = TailHasher::new(partial.clone());
        tail.catch_up(&mut buf);
        std::fs::write(&partial, b"short").unwrap();
        std::fs::rename(&partial, dir.join("vdb.full.data")).unwrap();
        assert!(tail.finish().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_files_are_recorded_once_and_corruption_shows() {
        let dir = std::env::temp_dir().join(format!("vmsnap-sums-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vda.full.data"), b"abc").unwrap();
        std::fs::write(dir.join("vm.cpt"), b"[]").unwrap();
        assert_eq!(record_new(&dir).unwrap(), ["vda.full.data"]);
        std::fs::write(dir.join("vda.inc.virtnbdbackup.1.data"), b"def").unwrap();
        assert_eq!(record_new(&dir).unwrap(), ["vda.inc.virtnbdbackup.1.data"]);
        let sums = read(&dir).unwrap();
        assert_eq!(
            sums["vda.full.data"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(dir.join("vda.full.data"), b"abd").unwrap();
        assert_ne!(
            digest(&dir.join("vda.full.data")).unwrap(),
            sums["vda.full.data"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
