//! The service's one rule for a lock whose holder panicked: take it anyway.
//!
//! Every mutex in the service guards plain data that each writer leaves consistent before it
//! could panic (a record, a list, a timestamp). A panicking task is caught at its boundary
//! (`engine::jobs::spawn_guarded`) and the service goes on serving, so a poisoned lock must
//! not make every later call panic in turn.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, through poisoning.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
