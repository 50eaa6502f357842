//! Verify: is every point of a chain intact and restorable?
//!
//! By default one read of every stored byte ([`structure`]): per point the data files against
//! the checksums recorded at backup time, and the structure of every data file and the index
//! of every point, checked by the sandboxed reader. `deep` adds a rebuild of each chain's
//! newest point with virtnbdrestore, compared with the index's reading ([`deep`]). A point
//! that fails makes every later point of its chain fail too: they cannot be restored without
//! it.

mod deep;
mod structure;

use std::path::PathBuf;

use super::access::Use;
use super::chains::catalog::{self, Chain};
use super::jobs::runner::{DomainRun, JobKind, Prepared};
use super::jobs::{Job, Operation};
use super::list::vmsnap_checkpoints;
use super::{Engine, Error};
use crate::host::tools::{self, Tool};
use crate::paths::BackupRoot;
use crate::selection::{DomainName, Selector};
use deep::LiveDisk;

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
    pub folder: Option<String>,
    /// Also rebuild each chain's newest point and compare it with the index's reading.
    pub deep: bool,
}

/// The verify job kind.
pub struct Verify {
    request: VerifyRequest,
}

impl JobKind for Verify {
    const NAME: &'static str = "verify";

    async fn run_domain(&self, engine: &Engine, run: &DomainRun<'_>) -> Result<(), Error> {
        match engine
            .verify_domain(run.job, run.index, run.domain, &self.request)
            .await?
        {
            true => Ok(()),
            false => Err(Error::Failed(
                "some points failed verification (see checks)".into(),
            )),
        }
    }
}

impl Engine {
    /// Validates a verify request and creates its (queued) job.
    pub async fn prepare_verify(
        &self,
        request: VerifyRequest,
        uid: u32,
    ) -> Result<Prepared<Verify>, Error> {
        self.require_reader()?;
        if request.deep {
            tools::require(&[Tool::QemuImg, Tool::Virtnbdrestore])?;
        }
        let domains = self
            .resolve_domains(&self.libvirt, &request.selectors)
            .await?;
        for domain in &domains {
            // Each chain is checked again before it is read (verify_domain).
            self.require_trusted(
                uid,
                &request.root.as_path().join(domain.as_str()),
                Use::Destination,
            )?;
        }
        let job = self.jobs.create(Operation::Verify, domains, uid)?;
        Ok(Prepared::new(job, Verify { request }))
    }

    /// Verifies every chain of one domain; `Err(Cancelled)` when the job was cancelled.
    async fn verify_domain(
        &self,
        job: &Job,
        index: usize,
        domain: &DomainName,
        request: &VerifyRequest,
    ) -> Result<bool, Error> {
        let chains: Vec<Chain> = catalog::chains_of(request.root.as_path().join(domain.as_str()))
            .await?
            .into_iter()
            .filter(|c| request.folder.as_deref().is_none_or(|f| f == c.folder))
            .collect();
        if chains.is_empty() {
            job.update(index, |d| d.checks.push("no backup chain found".into()));
            return Ok(false);
        }
        let total: u64 = chains.iter().map(Chain::bytes).sum();
        let mut done = 0u64;
        let mut all_ok = true;
        let live = match request.deep {
            true => self.live_disks_if_shut_off(domain.as_str()).await,
            false => None,
        };
        for chain in &chains {
            if let Err(e) = self.require_trusted(job.uid, &chain.path, Use::Source) {
                all_ok = false;
                job.update(index, |d| {
                    d.checks.push(format!("{}: refused: {e}", chain.folder))
                });
                continue;
            }
            let mut verdicts = self
                .check_chain_once(chain, job, index, (&mut done, total))
                .await?;
            if request.deep && verdicts.iter().all(Result::is_ok) {
                // The live chain's last point of a shut-off domain is also compared with the
                // domain's disks.
                let compare: &[LiveDisk] = match &live {
                    Some((checkpoints, disks)) if chain.is_live(checkpoints) => disks,
                    _ => &[],
                };
                let deep = self.deep_check(chain, job, compare).await;
                if job.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                if let Some(last) = verdicts.last_mut() {
                    *last = deep.map(|note| format!("{}{note}", last.clone().unwrap_or_default()));
                }
            }
            let mut broken: Option<&str> = None;
            for (point, verdict) in chain.points.iter().zip(verdicts) {
                let verdict = match broken {
                    Some(first) => Err(format!("follows the failed point {first}")),
                    None => verdict,
                };
                let line = match &verdict {
                    Ok(note) => format!("{} {}: ok{note}", chain.folder, point.checkpoint),
                    Err(reason) => {
                        format!("{} {}: failed: {reason}", chain.folder, point.checkpoint)
                    }
                };
                tracing::info!(domain = %domain, "{line}");
                if verdict.is_err() {
                    all_ok = false;
                    broken.get_or_insert(point.checkpoint.as_str());
                }
                job.update(index, |d| d.checks.push(line));
            }
            for checkpoint in &chain.lost {
                all_ok = false;
                let line = format!(
                    "{} {checkpoint}: failed: a data file of this point or one before it is \
                     missing",
                    chain.folder
                );
                tracing::info!(domain = %domain, "{line}");
                job.update(index, |d| d.checks.push(line));
            }
        }
        Ok(all_ok)
    }

    /// For a shut-off domain: its VMSnap checkpoints and its qcow2 disks (target, image).
    async fn live_disks_if_shut_off(
        &self,
        domain: &str,
    ) -> Option<(Vec<(String, u64)>, Vec<LiveDisk>)> {
        let facts = self.libvirt.domain(domain).await.ok()?;
        if facts.state != crate::host::libvirt::DomainState::ShutOff {
            return None;
        }
        let disks = crate::host::domain_xml::parse_disks(&facts.xml)
            .ok()?
            .into_iter()
            .filter(|d| d.device == "disk" && d.format.as_deref() == Some("qcow2"))
            .filter_map(|d| Some((d.target, PathBuf::from(d.source?))))
            .collect();
        Some((vmsnap_checkpoints(&facts.checkpoints), disks))
    }
}
