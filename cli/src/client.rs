//! The connection to vmsnapd, and error messages a person can act on.

use std::time::Duration;

use vmsnap_dbus::names::BUS_NAME;
use vmsnap_dbus::{Error, ManagerProxy};
use zbus::Connection;

use crate::agent::{self, Agent};
use crate::args::SessionArgs;
use crate::exit;
use crate::Failure;

/// One conversation with vmsnapd: the connection, the Manager, how long a call may take and,
/// for calls that change something, the password agent (a call may only ask for a password
/// while an agent of ours is there to ask).
pub struct Service {
    pub connection: Connection,
    pub manager: ManagerProxy<'static>,
    pub timeout: Duration,
    agent: Option<Agent>,
}

impl Service {
    /// For calls that only read: no agent.
    pub async fn reading(session: &SessionArgs) -> Result<Self, Failure> {
        Service::open(session.call_timeout(), None).await
    }

    /// For calls polkit may ask a password for: the agent is started (and registered) first.
    pub async fn asking(session: &SessionArgs) -> Result<Self, Failure> {
        Service::asking_for(session, session.call_timeout()).await
    }

    /// The same, for calls allowed to take `timeout`.
    pub async fn asking_for(session: &SessionArgs, timeout: Duration) -> Result<Self, Failure> {
        let agent = agent::start(session.no_ask_password);
        Service::open(timeout, agent).await
    }

    async fn open(timeout: Duration, agent: Option<Agent>) -> Result<Self, Failure> {
        let (connection, manager) = connect(timeout).await?;
        Ok(Service {
            connection,
            manager,
            timeout,
            agent,
        })
    }

    /// Whether this conversation's calls may ask for a password.
    pub fn interaction(&self) -> vmsnap_dbus::Interaction {
        agent::interaction(&self.agent)
    }

    /// One call, within the timeout, its error made readable.
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Failure> {
        answer(self.timeout, call).await
    }

    /// No more passwords will be asked for (a started job runs on its own): the agent stops.
    pub fn done_asking(&mut self) {
        self.agent = None;
    }
}

/// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when set). Every method call gives up
/// after `timeout`, so a wedged service cannot hang a script forever. A bus that cannot be
/// reached at all is reported here, with exit code [`exit::UNREACHABLE`].
async fn connect(timeout: Duration) -> Result<(Connection, ManagerProxy<'static>), Failure> {
    let unreachable = |e: zbus::Error| {
        Failure::new(
            exit::UNREACHABLE,
            format!("cannot connect to {}: {e}", bus_address()),
        )
    };
    let connection = zbus::connection::Builder::system()
        .map_err(unreachable)?
        .method_timeout(timeout)
        .build()
        .await
        .map_err(unreachable)?;
    let manager = ManagerProxy::new(&connection)
        .await
        .map_err(|e| failure(&Error::ZBus(e)))?;
    Ok((connection, manager))
}

/// Awaits one call to the service, for at most `timeout`. zbus bounds a call by the
/// connection's method timeout, but a call whose connection the bus closed under it (as
/// dbus-daemon does to a client that sent a malformed message) was seen to wait forever with
/// no timer left; this bound holds whatever happens to the connection.
pub async fn answer<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| failure(&e)),
        Err(_) => Err(failure(&Error::ZBus(zbus::Error::InputOutput(
            std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        )))),
    }
}

/// The exit code and message for an error of a call, with what to do about it.
pub fn failure(e: &Error) -> Failure {
    let message = match crate::hint::for_error(e) {
        Some(hint) => format!("{}\nvmsnapctl: hint: {hint}", describe(e)),
        None => describe(e),
    };
    Failure::new(exit::for_error(e), message)
}

fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| "the system bus".to_string())
}

/// One line for stderr that says what went wrong and what to do about it.
pub fn describe(e: &Error) -> String {
    match e {
        Error::ZBus(z) => describe_bus(z),
        other => format!("{}: {}", other.short_name(), other.message()),
    }
}

fn describe_bus(e: &zbus::Error) -> String {
    let bus =
        std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| "the system bus".to_string());
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = msg.as_deref().unwrap_or("");
            match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound" => format!(
                    "vmsnapd is not running: nobody owns {BUS_NAME} on {bus} and it could not \
                     be activated (start it with `systemctl start vmsnapd`)"
                ),
                "org.freedesktop.DBus.Error.NoReply" => format!(
                    "vmsnapd did not answer in time ({msg}); raise --timeout or check the \
                     service's log"
                ),
                "org.freedesktop.DBus.Error.AccessDenied" => {
                    format!("not allowed: {msg}")
                }
                "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.freedesktop.DBus.Error.UnknownObject" => format!(
                    "the running vmsnapd does not offer this ({msg}); is it older than \
                     vmsnapctl {}?",
                    env!("CARGO_PKG_VERSION")
                ),
                other => format!("{other}: {msg}"),
            }
        }
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            "vmsnapd did not answer in time; raise --timeout or check the service's log".to_string()
        }
        zbus::Error::InputOutput(io) => format!("cannot connect to {bus}: {io}"),
        other => format!("D-Bus error talking to vmsnapd on {bus}: {other}"),
    }
}
