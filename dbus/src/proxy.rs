//! Client proxies for the service's interfaces.
//!
//! Methods return [`crate::Error`], so a client matches on `Error::NoSuchDomain` and friends
//! directly; standard D-Bus errors (AccessDenied, ServiceUnknown, NoReply) arrive as
//! [`crate::Error::ZBus`].

use std::collections::HashMap;

use zbus::proxy;
use zvariant::Value;

use crate::status::DomainStatus;
use crate::Error;

/// `org.vmsnap.VMSnap1.Manager` at `/org/vmsnap/VMSnap1`.
#[proxy(
    interface = "org.vmsnap.VMSnap1.Manager",
    default_service = "org.vmsnap.VMSnap1",
    default_path = "/org/vmsnap/VMSnap1",
    gen_blocking = false
)]
pub trait Manager {
    /// Status of the selected domains (names, `*`, globs with `*` and `?`; empty = all), in the
    /// order selected. Options: see [`crate::options`].
    fn status(
        &self,
        domains: &[&str],
        options: HashMap<&str, Value<'_>>,
    ) -> Result<Vec<DomainStatus>, Error>;

    /// Version of the running service.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    /// The libvirt URI the service is configured to use.
    #[zbus(property)]
    fn libvirt_uri(&self) -> zbus::Result<String>;

    /// Version of the virtnbdbackup found on the host, empty when it is missing.
    #[zbus(property)]
    fn virtnbdbackup_version(&self) -> zbus::Result<String>;
}
