//! Undoing what a backup run began in libvirt, after it failed, was cancelled, or — found at
//! the next start — died with the service. The folder's side is [`super::rollback`].

use crate::host::backup_dir::checkpoint_index;
use crate::host::libvirt::Libvirt;

/// Undoes in libvirt what a run that failed or was cancelled began, so that the domain is
/// as the last good point left it:
/// - libvirt's job on the domain is aborted if it is a backup (ours: the domain is locked): a
///   virtnbdbackup that died (killed, out of memory) leaves it running, and the next backup of
///   a running domain could not start;
/// - the checkpoint the run created, which no point records, is deleted with its bitmap.
///   libvirt merges that bitmap into its parent's, so no write of the guest is forgotten, and
///   the next backup continues the chain rather than start a new one over a checkpoint it
///   cannot account for. A delete that fails is only logged: the next backup then finds the
///   mismatch and starts a new chain, which is safe.
pub(crate) async fn undo_run(libvirt: &Libvirt, d: &str, kept: &[String]) {
    if let Err(e) = libvirt.abort_backup_job(d).await {
        tracing::warn!(error = %e, "could not abort libvirt's backup job");
    }
    delete_unfinished_checkpoints(libvirt, d, kept).await;
}

/// Deletes, with their bitmaps, the VMSnap checkpoints of `d` that are not in `kept` (the
/// ones before a run that did not finish). Also used at start-up for runs a killed instance
/// left ([`super::recovery`]).
pub(crate) async fn delete_unfinished_checkpoints(libvirt: &Libvirt, d: &str, kept: &[String]) {
    let checkpoints = match libvirt.domain(d).await {
        Ok(facts) => facts.checkpoints,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the checkpoints after the run");
            return;
        }
    };
    let unfinished = checkpoints
        .iter()
        .rev()
        .filter(|cp| checkpoint_index(&cp.name).is_some() && !kept.contains(&cp.name));
    for cp in unfinished {
        match libvirt.delete_checkpoint(d, &cp.name, false).await {
            Ok(()) => {
                tracing::info!(checkpoint = %cp.name, "deleted the unfinished run's checkpoint")
            }
            Err(e) => {
                tracing::warn!(checkpoint = %cp.name, error = %e, "could not delete the unfinished run's checkpoint")
            }
        }
    }
}
