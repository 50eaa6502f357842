//! What backups a domain has: its chains as listed, which one a restore or a file session
//! reads by default, and which of them is live (its points are the domain's checkpoints).
//! Chains are read from disk, so a domain that no longer exists still has its backups.

use super::chains::catalog::{self, Chain};
use super::{Engine, Error};
use crate::host::backup_dir::checkpoint_index;
use crate::host::libvirt::CheckpointFact;
use crate::paths::BackupRoot;
use crate::selection::{DomainName, Selector};

/// A chain as listed, with whether it is the domain's live one.
pub struct Listed {
    pub domain: String,
    pub chain: Chain,
    pub live: bool,
}

/// The VMSnap-owned ones among libvirt's checkpoints, with their creation times (a chain
/// folder records both; one without a time cannot be matched and is left out).
pub(super) fn vmsnap_checkpoints(all: &[CheckpointFact]) -> Vec<(String, u64)> {
    all.iter()
        .filter(|c| checkpoint_index(&c.name).is_some())
        .filter_map(|c| Some((c.name.clone(), c.created?)))
        .collect()
}

impl Engine {
    /// libvirt's VMSnap checkpoints of a domain with their times (empty if it has none or is gone).
    pub(super) async fn live_checkpoints(&self, domain: &str) -> Vec<(String, u64)> {
        match self.libvirt.domain(domain).await {
            Ok(facts) => vmsnap_checkpoints(&facts.checkpoints),
            Err(_) => Vec::new(),
        }
    }

    pub async fn list_backups(
        &self,
        selectors: &[Selector],
        root: &BackupRoot,
    ) -> Result<Vec<Listed>, Error> {
        let domains = self.resolve_domains(&self.reads, selectors).await?;
        let mut out = Vec::new();
        for d in domains {
            let live = match self.reads.domain(d.as_str()).await {
                Ok(facts) => vmsnap_checkpoints(&facts.checkpoints),
                Err(_) => Vec::new(),
            };
            for chain in catalog::chains_of(root.as_path().join(d.as_str())).await? {
                out.push(Listed {
                    domain: d.to_string(),
                    live: chain.is_live(&live),
                    chain,
                });
            }
        }
        Ok(out)
    }

    /// The chain `folder` of `domain` under `root`, or by default its live chain (else its
    /// newest); never one without a point.
    pub(super) async fn chosen_chain(
        &self,
        domain: &DomainName,
        root: &BackupRoot,
        folder: Option<&str>,
    ) -> Result<Chain, Error> {
        let chains = catalog::chains_of(root.as_path().join(domain.as_str())).await?;
        let chosen = match folder {
            Some(f) => chains.into_iter().find(|c| c.folder == f),
            None => {
                let live = self.live_checkpoints(domain.as_str()).await;
                let live_chain = chains.iter().position(|c| c.is_live(&live));
                match live_chain {
                    Some(i) => chains.into_iter().nth(i),
                    None => chains
                        .into_iter()
                        .filter(|c| !c.points.is_empty())
                        .max_by_key(|c| c.points.iter().filter_map(|p| p.time).max().unwrap_or(0)),
                }
            }
        };
        chosen.filter(|c| !c.points.is_empty()).ok_or_else(|| {
            Error::NoSuchBackup(format!(
                "no backup chain{} for {} under {}",
                folder.map(|f| format!(" {f}")).unwrap_or_default(),
                domain,
                root.as_path().display()
            ))
        })
    }
}
