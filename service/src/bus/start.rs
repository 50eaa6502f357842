//! Starting a job from a method call: the same steps for every job kind.
//!
//! polkit first, with the details the caller named (nothing is read or prepared for a caller
//! who may not), then the engine checks and prepares the request as the authorized uid, the
//! job goes on the bus, and only then does its work start — so a client that subscribes to
//! the returned path has missed nothing.

use std::future::Future;
use std::sync::Arc;

use zbus::message::Header;
use zbus::Connection;
use zvariant::OwnedObjectPath;

use super::authority::Authority;
use super::details::Details;
use super::error::CallError;
use super::shelf::JobShelf;
use crate::engine::jobs::runner::{JobKind, Prepared};
use crate::engine::Engine;

/// What a job-starting interface holds.
pub struct JobStarter<'a> {
    pub engine: &'a Arc<Engine>,
    pub authority: &'a Authority,
    pub shelf: &'a JobShelf,
}

/// One polkit question: the action and the details shown with it.
pub type Ask<'a> = (&'a str, &'a Details);

impl JobStarter<'_> {
    /// Asks polkit every question in `asks` in order (all must pass), then runs `prepare`
    /// with the caller's uid, announces the job and starts it.
    pub async fn start<K, Fut>(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        asks: &[Ask<'_>],
        prepare: impl FnOnce(u32) -> Fut,
    ) -> Result<OwnedObjectPath, CallError>
    where
        K: JobKind,
        Fut: Future<Output = Result<Prepared<K>, CallError>>,
    {
        let mut uid = None;
        for (action, details) in asks {
            let caller = self
                .authority
                .check(connection, header, action, details)
                .await?;
            uid = Some(caller.uid);
        }
        let Some(uid) = uid else {
            return Err(CallError::access_denied("no action named for this call"));
        };
        let prepared = prepare(uid).await?;
        let path = self.shelf.announce(connection, &prepared.job).await?;
        self.engine.start(prepared);
        Ok(path)
    }
}
