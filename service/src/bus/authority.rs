//! Authorization of method calls through polkit, after systemd's `bus-polkit.c`.
//!
//! The subject is always the *caller*: its unique bus name from the message header, as a
//! `system-bus-name` subject. Never the service's own process — that is root, and polkit
//! allows root everything. Interaction is allowed only when the caller said so in the message
//! flags. A challenge becomes `InteractiveAuthorizationRequired` (the caller allowed
//! interaction, but nobody could answer) or `AccessDenied`; when polkit cannot be asked, only
//! root is let in. Every decision is logged with the action, the uid and the result.

use std::collections::HashMap;

use enumflags2::BitFlags;
use tokio::sync::OnceCell;
use zbus::message::{Flags, Header};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::error::CallError;
use super::manager::caller_uid;

/// The service's polkit client, created on first use and reused for every check.
#[derive(Default)]
pub struct Authority {
    proxy: OnceCell<AuthorityProxy<'static>>,
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
        details: &[(&str, &str)],
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
        }
    }

    async fn ask(
        &self,
        connection: &Connection,
        header: &Header<'_>,
        action: &str,
        details: &[(&str, &str)],
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
        let details: HashMap<&str, &str> = details.iter().copied().collect();
        match proxy
            .check_authorization(&subject, action, &details, flags, "")
            .await
        {
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
}
