//! Who is calling: the uid the bus daemon vouches for. Used by the Manager, the Job objects
//! and the polkit check alike, so it lives apart from all three.

use zbus::message::Header;
use zbus::Connection;

/// The caller's uid as the bus daemon vouches for it, for logs (`u32::MAX` if unknown).
pub async fn caller_uid(connection: &Connection, header: &Header<'_>) -> u32 {
    let Some(sender) = header.sender() else {
        return u32::MAX;
    };
    let bus = match zbus::fdo::DBusProxy::new(connection).await {
        Ok(bus) => bus,
        Err(_) => return u32::MAX,
    };
    bus.get_connection_unix_user(sender.clone().into())
        .await
        .unwrap_or(u32::MAX)
}
