//! Which libvirt the service talks to: the local system QEMU driver's socket.

use std::path::PathBuf;

/// Where the service's libvirt URI leads: a local socket and the driver to open on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLibvirt {
    pub socket: PathBuf,
    /// The URI libvirtd is asked to open, without the client-side parameters.
    pub driver: String,
}

impl LocalLibvirt {
    /// Accepts the URIs of the local system QEMU driver, as virsh does: `qemu:///system`,
    /// `qemu+unix:///system`, with `socket=` (an absolute path) or `mode=legacy|direct`.
    /// vmsnapd backs up the machine it runs on (qemu-img and virtnbdbackup read its disks),
    /// so a remote or session URI is a configuration error, reported at start.
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            Err(format!(
                "libvirt URI {uri:?} {why}; vmsnapd works on this machine's qemu:///system"
            ))
        };
        let Some(rest) = uri
            .strip_prefix("qemu:///system")
            .or_else(|| uri.strip_prefix("qemu+unix:///system"))
        else {
            return refuse("is not the local system QEMU driver");
        };
        let mut socket = None;
        let mut mode = "auto";
        match rest {
            "" => {}
            _ => {
                let Some(query) = rest.strip_prefix('?') else {
                    return refuse("is not the local system QEMU driver");
                };
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some(("socket", path)) if path.starts_with('/') && !path.contains("..") => {
                            socket = Some(PathBuf::from(path))
                        }
                        Some(("mode", m @ ("auto" | "legacy" | "direct"))) => mode = m,
                        _ => {
                            return refuse(&format!(
                                "has a parameter vmsnapd does not know ({pair:?})"
                            ))
                        }
                    }
                }
            }
        }
        let socket = socket.unwrap_or_else(|| {
            // Where libvirt's own client looks: the modular daemon's socket when it runs there
            // (or is asked for), the monolithic libvirtd's otherwise.
            let direct = PathBuf::from("/run/libvirt/virtqemud-sock");
            match mode {
                "direct" => direct,
                "auto" if direct.exists() => direct,
                _ => PathBuf::from("/run/libvirt/libvirt-sock"),
            }
        });
        Ok(LocalLibvirt {
            socket,
            driver: "qemu:///system".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_system_driver_is_accepted_with_its_socket() {
        let l = LocalLibvirt::from_uri("qemu:///system?socket=/run/x/libvirt-sock").unwrap();
        assert_eq!(l.socket, PathBuf::from("/run/x/libvirt-sock"));
        assert_eq!(l.driver, "qemu:///system");
        let l = LocalLibvirt::from_uri("qemu+unix:///system?mode=legacy").unwrap();
        assert_eq!(l.socket, PathBuf::from("/run/libvirt/libvirt-sock"));
        assert!(LocalLibvirt::from_uri("qemu:///system").is_ok());
    }

    #[test]
    fn other_hosts_drivers_and_parameters_are_refused() {
        for uri in [
            "qemu+ssh://elsewhere/system",
            "qemu:///session",
            "qemu:///systemd",
            "xen:///system",
            "qemu:///system?socket=relative",
            "qemu:///system?socket=/run/../etc/x",
            "qemu:///system?keyfile=/x",
        ] {
            assert!(LocalLibvirt::from_uri(uri).is_err(), "{uri}");
        }
    }
}
