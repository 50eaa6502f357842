//! The D-Bus layer: a thin translation between the bus and the [`crate::engine`].
//!
//! It parses and validates wire arguments ([`options`]), calls the engine, and converts results
//! and errors into the contract's records ([`convert`]). It decides nothing else.

pub mod authority;
pub mod bounded;
pub mod caller;
pub mod convert;
pub mod details;
pub mod error;
pub mod files;
pub mod job;
pub mod limits;
pub mod manager;
pub mod options;
pub mod shelf;
pub mod start;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use vmsnap_dbus::names::{BUS_NAME, MANAGER_PATH};
use zbus::connection::Connection;

use crate::engine::jobs::Job;
use crate::engine::Engine;

/// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set), exports the objects and
/// only then takes the well-known name, so that the first call after activation finds them.
/// `interrupted` are the jobs a previous instance left unfinished: they are exported (as
/// failed) like any finished job, so their callers can read how they ended.
pub async fn serve(
    engine: Arc<Engine>,
    job_retention: Duration,
    interrupted: Vec<Arc<Job>>,
) -> Result<Connection, String> {
    let builder = zbus::connection::Builder::system()
        .map_err(|e| format!("cannot reach the system bus: {e}"))?;
    let manager = manager::Manager::new(engine, job_retention);
    let builder = builder
        .serve_at(MANAGER_PATH, manager)
        .and_then(|b| b.serve_at(MANAGER_PATH, zbus::fdo::ObjectManager))
        .and_then(|b| b.name(BUS_NAME))
        .map_err(|e| format!("cannot set up the bus objects: {e}"))?;
    let connection = builder.build().await.map_err(|e| match e {
        zbus::Error::NameTaken => {
            format!("{BUS_NAME} is already owned: is vmsnapd already running?")
        }
        zbus::Error::MethodError(name, _, _) if name.as_str().ends_with("AccessDenied") => format!(
            "the bus refused to let this process own {BUS_NAME}: run vmsnapd as root and install \
             the bus policy file org.vmsnap.VMSnap1.conf"
        ),
        other => format!("cannot connect to the system bus: {other}"),
    })?;
    let manager = connection
        .object_server()
        .interface::<_, manager::Manager>(MANAGER_PATH)
        .await
        .map_err(|e| format!("cannot find the manager object: {e}"))?;
    // File sessions end when their opener leaves the bus or stays idle.
    tokio::spawn(files::watch_clients(
        connection.clone(),
        manager.get().await.engine(),
    ));
    tokio::spawn(files::reap_idle(manager.get().await.engine()));
    for job in interrupted {
        manager
            .get()
            .await
            .adopt(&connection, job)
            .await
            .map_err(|e| format!("cannot export an interrupted job: {e}"))?;
    }
    Ok(connection)
}
