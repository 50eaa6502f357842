//! What to do about an error: one hint per kind, printed under the error's own message.
//!
//! The service's messages say what went wrong; how a person gets past it depends on how they
//! run things (root or not, in the `libvirt` group or not, under systemd or not), which only
//! the client side can speak to.

use vmsnap_dbus::actions;
use vmsnap_dbus::Error;

/// The hint for `e`, if there is one worth giving.
pub fn for_error(e: &Error) -> Option<String> {
    match e {
        Error::ZBus(zbus::Error::MethodError(name, message, _))
            if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied"
                || name.as_str()
                    == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" =>
        {
            Some(not_allowed(message.as_deref().unwrap_or("")))
        }
        Error::MissingDependency(message) => Some(install(message)),
        Error::HostUnavailable(_) => Some(
            "is libvirtd running? `systemctl status libvirtd` (the service talks to \
             qemu:///system)"
                .into(),
        ),
        Error::TargetExists(_) => {
            Some("restore into an empty directory, or add --overwrite to replace files".into())
        }
        Error::Busy(_) => {
            Some("wait for running jobs to end (`vmsnapctl jobs`), then retry".into())
        }
        _ => None,
    }
}

/// The polkit action named in an AccessDenied message, and the ways to be allowed it.
fn not_allowed(message: &str) -> String {
    let action = message
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
        .find(|w| w.starts_with("org.vmsnap."))
        .unwrap_or("the action");
    let rule = format!(
        "or have an administrator grant {action} with a polkit rule in /etc/polkit-1/rules.d/ \
         (README: Authorization)"
    );
    if [actions::READ, actions::BACKUP, actions::CANCEL].contains(&action) {
        format!(
            "run it as root (sudo vmsnapctl …), join the `libvirt` group (whose members may \
             read, back up and cancel), {rule}"
        )
    } else {
        format!(
            "{action} is for administrators: run it as root (sudo vmsnapctl …), authenticate \
             as an administrator when asked (in a session with a polkit agent, without \
             --no-ask-password), {rule}"
        )
    }
}

/// The Debian packages that bring the missing programs.
fn install(message: &str) -> String {
    let mut packages: Vec<&str> = Vec::new();
    for (program, package) in [
        ("qemu-img", "qemu-utils"),
        ("virtnbdbackup", "virtnbdbackup"),
        ("virtnbdrestore", "virtnbdbackup"),
    ] {
        if message.contains(program) && !packages.contains(&package) {
            packages.push(package);
        }
    }
    if packages.is_empty() {
        return "install the missing programs on the host running vmsnapd".into();
    }
    format!(
        "install them on the host running vmsnapd: apt install {}",
        packages.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(message: &str) -> Error {
        Error::ZBus(zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from("org.freedesktop.DBus.Error.AccessDenied")
                .unwrap(),
            Some(message.into()),
            zbus::message::Message::method_call("/", "Ping")
                .unwrap()
                .build(&())
                .unwrap(),
        ))
    }

    #[test]
    fn refusals_name_the_action_and_the_ways_in() {
        let backup = for_error(&denied("not authorized for org.vmsnap.backup")).unwrap();
        assert!(backup.contains("libvirt"), "{backup}");
        assert!(backup.contains("org.vmsnap.backup"), "{backup}");
        let prune = for_error(&denied("not authorized for org.vmsnap.prune")).unwrap();
        assert!(
            prune.contains("org.vmsnap.prune is for administrators"),
            "{prune}"
        );
        assert!(!prune.contains("libvirt"), "{prune}");
    }

    #[test]
    fn missing_programs_name_their_packages() {
        let hint = for_error(&Error::MissingDependency(
            "Missing dependencies (qemu-img, virtnbdbackup, virtnbdrestore)".into(),
        ))
        .unwrap();
        assert!(
            hint.ends_with("apt install qemu-utils virtnbdbackup"),
            "{hint}"
        );
    }
}
