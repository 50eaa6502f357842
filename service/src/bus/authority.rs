//! Authorization of method calls through polkit, after systemd's `bus-polkit.c`.
//!
//! The subject is always the *caller*: its unique bus name from the message header, as a
//! `system-bus-name` subject. Never the service's own process — that is root, and polkit
//! allows root everything. Interaction is allowed only when the caller said so in the message
//! flags. A challenge becomes `InteractiveAuthorizationRequired` (the caller allowed
//! interaction, but nobody could answer) or `AccessDenied`; when polkit cannot be asked, only
//! root is let in. Every decision is logged with the action, the uid and the result.
//!
//! A check can wait on a person typing a password. It is abandoned — and polkit told to drop
//! its dialog through `CancelCheckAuthorization` — when the caller leaves the bus or the wait
//! exceeds a limit, so a vanished client never leaves a task (or a polkit dialog) behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use enumflags2::BitFlags;
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::caller::caller_uid;
use super::details::Details;
use super::error::CallError;

/// How long polkit may take to decide without a person involved (D-Bus's default timeout).
const DECISION_LIMIT: Duration = Duration::from_secs(25);
/// How long a person may take to answer a password prompt.
const INTERACTIVE_LIMIT: Duration = Duration::from_secs(300);

/// The service's polkit client, created on first use and reused for every check.
#[derive(Default)]
pub struct Authority {
    proxy: OnceCell<AuthorityProxy<'static>>,
    /// Makes the cancellation ids of interactive checks unique.
    checks: AtomicU64,
}

/// The caller, once authorized.
pub struct Caller {
    pub uid: u32,
}

impl Authority {
    /// Checks `action` for the sender of `header`. Must run before anything is validated or
    /// touched; it awaits polkit (possibly a password prompt) without blocking other calls.
    pub async fn check(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
        details: &Details,
    ) -> Result<Caller, CallError> {
        let uid = caller_uid(connection, header).await;
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let interactive = header
            .primary()
            .flags()
            .contains(Flags::AllowInteractiveAuth);
        let decision = self
            .ask(connection, header, action, details, interactive)
            .await;
        let outcome = match &decision {
            Decision::Allowed => "allowed",
            Decision::Challenge => "challenge",
            Decision::Denied => "denied",
            Decision::Unreachable(_) if uid == 0 => "allowed (polkit unreachable, caller is root)",
            Decision::Unreachable(_) => "denied (polkit unreachable)",
            Decision::Abandoned(why) => why,
        };
        tracing::info!(
            action,
            uid,
            sender,
            interactive,
            result = outcome,
            "authorization"
        );
        match decision {
            Decision::Allowed => Ok(Caller { uid }),
            Decision::Unreachable(_) if uid == 0 => Ok(Caller { uid }),
            Decision::Unreachable(e) => Err(CallError::access_denied(format!(
                "{action}: polkit cannot be asked ({e}); only root is allowed"
            ))),
            Decision::Challenge if interactive => Err(CallError::Standard(
                zbus::fdo::Error::InteractiveAuthorizationRequired(format!(
                    "{action}: interactive authentication required, and no authentication \
                     agent answered"
                )),
            )),
            Decision::Challenge | Decision::Denied => Err(CallError::access_denied(format!(
                "not authorized for {action}"
            ))),
            Decision::Abandoned(why) => Err(CallError::access_denied(format!(
                "{action}: authorization abandoned ({why})"
            ))),
        }
    }

    async fn ask(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
        details: &Details,
        interactive: bool,
    ) -> Decision {
        let proxy = match self
            .proxy
            .get_or_try_init(|| AuthorityProxy::new(connection))
            .await
        {
            Ok(p) => p,
            Err(e) => return Decision::Unreachable(e.to_string()),
        };
        let subject = match Subject::new_for_message_header(header) {
            Ok(s) => s,
            Err(e) => return Decision::Unreachable(e.to_string()),
        };
        let flags: BitFlags<CheckAuthorizationFlags> = if interactive {
            CheckAuthorizationFlags::AllowUserInteraction.into()
        } else {
            BitFlags::empty()
        };
        let pairs = details.for_polkit();
        let details: HashMap<&str, &str> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cancellation_id = match interactive {
            true => format!("vmsnapd-{}", self.checks.fetch_add(1, Ordering::Relaxed)),
            false => String::new(),
        };
        let limit = match interactive {
            true => INTERACTIVE_LIMIT,
            false => DECISION_LIMIT,
        };
        let sender = header.sender().map(|s| s.to_owned());
        let check = proxy.check_authorization(&subject, action, &details, flags, &cancellation_id);
        let abandoned = tokio::select! {
            reply = check => Ok(reply),
            () = caller_gone(connection, sender) => Err("the caller left the bus"),
            () = tokio::time::sleep(limit) => Err("no decision in time"),
        };
        let reply = match abandoned {
            Ok(reply) => reply,
            Err(why) => {
                if !cancellation_id.is_empty() {
                    // Best effort: polkit drops the password dialog it may still show.
                    let _ = proxy.cancel_check_authorization(&cancellation_id).await;
                }
                return Decision::Abandoned(why);
            }
        };
        match reply {
            Ok(r) if r.is_authorized => Decision::Allowed,
            Ok(r) if r.is_challenge => Decision::Challenge,
            Ok(_) => Decision::Denied,
            Err(zbus::Error::MethodError(name, msg, _))
                if name.as_str() != "org.freedesktop.DBus.Error.ServiceUnknown"
                    && name.as_str() != "org.freedesktop.DBus.Error.NameHasNoOwner" =>
            {
                // polkit answered, but not with a decision (unknown action, bad subject): deny.
                tracing::warn!(action, error = %name, message = ?msg, "polkit refused the check");
                Decision::Denied
            }
            Err(e) => Decision::Unreachable(e.to_string()),
        }
    }
}

enum Decision {
    Allowed,
    Challenge,
    Denied,
    Unreachable(String),
    Abandoned(&'static str),
}

/// Returns when `sender` no longer has an owner on the bus; never when it cannot tell.
async fn caller_gone(connection: &Connection, sender: Option<zbus::names::UniqueName<'static>>) {
    let Some(sender) = sender else {
        return std::future::pending().await;
    };
    let Ok(bus) = zbus::fdo::DBusProxy::new(connection).await else {
        return std::future::pending().await;
    };
    // Subscribe first, then ask, so that a departure between the two is not missed.
    let Ok(mut changes) = bus
        .receive_name_owner_changed_with_args(&[(0, sender.as_str())])
        .await
    else {
        return std::future::pending().await;
    };
    if let Ok(false) = bus.name_has_owner(sender.clone().into()).await {
        return;
    }
    while let Some(change) = changes.next().await {
        if change.args().is_ok_and(|a| a.new_owner().is_none()) {
            return;
        }
    }
    std::future::pending().await
}
