//! The error type of interface methods: the contract's typed errors, or a standard D-Bus
//! error (`org.freedesktop.DBus.Error.AccessDenied` …) under its own name.
//!
//! The contract's enum can only produce `org.vmsnap.VMSnap1.Error.*` names, and clients must
//! see authorization failures as the standard `AccessDenied`, so both are carried here.

use zbus::message::Header;
use zbus::names::ErrorName;
use zbus::{DBusError, Message};

#[derive(Debug)]
pub enum CallError {
    Contract(vmsnap_dbus::Error),
    Standard(zbus::fdo::Error),
}

impl CallError {
    pub fn access_denied(message: impl Into<String>) -> Self {
        CallError::Standard(zbus::fdo::Error::AccessDenied(message.into()))
    }
}

impl From<vmsnap_dbus::Error> for CallError {
    fn from(e: vmsnap_dbus::Error) -> Self {
        CallError::Contract(e)
    }
}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> Self {
        CallError::Contract(vmsnap_dbus::Error::ZBus(e))
    }
}

impl DBusError for CallError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        match self {
            CallError::Contract(e) => e.create_reply(call),
            CallError::Standard(e) => e.create_reply(call),
        }
    }

    fn name(&self) -> ErrorName<'_> {
        match self {
            CallError::Contract(e) => e.name(),
            CallError::Standard(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            CallError::Contract(e) => e.description(),
            CallError::Standard(e) => e.description(),
        }
    }
}

impl From<crate::engine::Error> for CallError {
    fn from(e: crate::engine::Error) -> Self {
        CallError::Contract(super::convert::error(e))
    }
}
