//! Verify's default pass: every stored byte read once.
//!
//! First the service hashes every data file, reading it from end to end (VMSnap's SHA-256
//! records and virtnbdbackup 2.x's adler32 `.chksum`); then the sandboxed reader checks every
//! disk's data files for their structure (frames, extents inside the disk, offsets, each
//! incremental continuing the point before it, every lz4 frame decoding to its extent's size)
//! and builds the index of every point, from the page cache the hashing filled. Hashing is no
//! parsing; the structure is checked where untrusted bytes are parsed, never in the service.
//! One after the other, the check costs milliseconds (its frame headers are in the cache) —
//! for a chain larger than the page cache it reads the headers, and a compressed chain's
//! payloads, a second time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::super::chains::catalog::Chain;
use super::super::files::{data_files, disk_of};
use super::super::jobs::Job;
use super::super::{Engine, Error};
use crate::host::checksums;
use crate::host::guestfs::{check_chain, AskError, Sandbox};
use crate::host::safe_fs::Dir;

/// How long the structural check of one disk's chain may take (a chain of terabytes).
const CHECK_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// A point's verdict: passed (with a note, perhaps empty) or failed (why).
pub(super) type Verdict = Result<String, String>;

/// Per point of a chain, why its structure failed (`None`: it passed).
type Shapes = Vec<Option<String>>;

impl Engine {
    /// Checksums and structure of every point of `chain`, in one read of each stored byte.
    pub(super) async fn check_chain_once(
        &self,
        chain: &Chain,
        job: &Job,
        index: usize,
        progress: (&mut u64, u64),
    ) -> Result<Vec<Verdict>, Error> {
        let sandbox = Sandbox::for_user(&self.config.files_user).map_err(Error::MissingSetup)?;
        self.require_reader()?;
        let started = std::time::Instant::now();
        let sums = self.hash_points(chain, job, index, progress).await?;
        let hashed = started.elapsed();
        let structure = tokio::select! {
            checked = self.check_structure(chain, sandbox) => checked?,
            // Dropping the check kills its reader.
            () = job.cancelled() => return Err(Error::Cancelled),
        };
        tracing::info!(
            folder = %chain.folder,
            bytes = chain.bytes(),
            hashed_s = hashed.as_secs_f64(),
            checked_s = (started.elapsed() - hashed).as_secs_f64(),
            "chain read"
        );
        Ok(sums
            .into_iter()
            .zip(structure)
            .map(|(sum, shape)| match shape {
                Some(why) if sum.is_ok() => Err(why),
                _ => sum,
            })
            .collect())
    }

    /// Every disk's data files through the reader's `check`.
    async fn check_structure(&self, chain: &Chain, sandbox: Sandbox) -> Result<Shapes, Error> {
        let disks = chain_disks(chain);
        // Every point holds a data file of every disk: one that does not lost it.
        let mut verdicts: Shapes = chain
            .points
            .iter()
            .map(|p| {
                let missing: Vec<&str> = disks
                    .iter()
                    .filter(|d| {
                        !p.files
                            .iter()
                            .any(|f| disk_of(f) == *d && f.ends_with(".data"))
                    })
                    .map(String::as_str)
                    .collect();
                (!missing.is_empty())
                    .then(|| format!("the data file of {} is missing", missing.join(", ")))
            })
            .collect();
        let last = chain.points.len().saturating_sub(1);
        for disk in disks {
            // Which point each of the disk's files belongs to, and its name.
            let owners: Vec<(usize, &str)> = chain
                .points
                .iter()
                .enumerate()
                .flat_map(|(n, p)| p.files.iter().map(move |f| (n, f.as_str())))
                .filter(|(_, f)| disk_of(f) == disk && f.ends_with(".data"))
                .collect();
            let files = data_files(chain, last, &disk)?;
            let found =
                check_chain(&self.config.files_helper, &files, sandbox, CHECK_DEADLINE).await;
            let (at, why) = match found {
                Ok(c) if c.failure.is_none() => continue,
                Ok(c) => (c.good as usize, c.failure.unwrap_or_default()),
                // A reader that died on the data failed the first file: nothing says more.
                Err(AskError::Failed(f)) => (0, f.message),
                Err(e) => (0, super::super::files::failure(e).to_string()),
            };
            let (point, name) = owners.get(at).copied().unwrap_or((last, ""));
            let slot = &mut verdicts[point];
            if slot.is_none() {
                *slot = Some(format!("{name}: {why}"));
            }
        }
        Ok(verdicts)
    }

    /// Every point's files against their recorded sums.
    async fn hash_points(
        &self,
        chain: &Chain,
        job: &Job,
        index: usize,
        (done, total): (&mut u64, u64),
    ) -> Result<Vec<Verdict>, Error> {
        let sums = checksums::read(&chain.path)?;
        let folder = Dir::open(&chain.path).map_err(|e| crate::host::Error::at(&chain.path, e))?;
        let mut verdicts = Vec::new();
        for point in &chain.points {
            let verdict = hash_point(&chain.path, &folder, &point.files, &sums, job).await;
            if job.is_cancelled() {
                return Err(Error::Cancelled);
            }
            verdicts.push(verdict);
            *done += point.bytes;
            job.progress(index, &chain.folder, *done, total);
        }
        Ok(verdicts)
    }
}

/// The disks of a chain, by the full's data files.
pub(super) fn chain_disks(chain: &Chain) -> Vec<String> {
    chain
        .points
        .first()
        .map(|p| {
            p.files
                .iter()
                .filter(|f| f.ends_with(".data"))
                .map(|f| disk_of(f).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One point's files against VMSnap's SHA-256 and virtnbdbackup's adler32, where recorded.
async fn hash_point(
    path: &std::path::Path,
    folder: &Dir,
    files: &[String],
    sums: &BTreeMap<String, String>,
    job: &Job,
) -> Verdict {
    let mut note = String::new();
    for file in files {
        let recorded = sums.get(file);
        let tool = checksums::tool_checksum(folder, file).map_err(|e| e.to_string())?;
        if recorded.is_none() && tool.is_none() {
            note = " (no checksum recorded)".into();
            continue;
        }
        let actual = digest(path.join(file), tool.is_some(), job).await?;
        if recorded.is_some_and(|r| *r != actual.sha256) {
            return Err(format!("checksum mismatch in {file}"));
        }
        if tool.is_some_and(|t| Some(t) != actual.adler32) {
            return Err(format!(
                "virtnbdbackup's own checksum ({file}.chksum) does not match {file}"
            ));
        }
    }
    Ok(note)
}

/// The sums of a chain file on a blocking thread (a whole image takes seconds, and the
/// runtime's workers serve every other call meanwhile), stopped within one read when the job
/// is cancelled.
async fn digest(
    path: PathBuf,
    with_adler32: bool,
    job: &Job,
) -> Result<checksums::FileDigests, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reading = stop.clone();
    let hashing = tokio::task::spawn_blocking(move || {
        checksums::digest_unless(&path, with_adler32, &|| {
            stop_reading.load(Ordering::Relaxed)
        })
    });
    tokio::select! {
        hashed = hashing => match hashed {
            Ok(Ok(Some(digest))) => Ok(digest),
            Ok(Ok(None)) => Err("cancelled".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("hashing failed: {e}")),
        },
        () = job.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            Err("cancelled".into())
        }
    }
}
