//! A text authentication agent for administrator passwords, like systemd's command-line tools.
//!
//! When vmsnapctl runs on a terminal as a user other than root, it starts `pkttyagent`, waits
//! until the agent has registered, and then marks its calls as allowing interactive
//! authorization: polkit can ask for a password right there. Root needs no agent (polkit
//! always allows root), and `--no-ask-password` or a missing terminal turns it off.

use std::io::{IsTerminal, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

/// A running agent; it stops when this is dropped.
pub struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pkttyagent` when a password could be asked for, returning it once registered.
pub fn start(no_ask_password: bool) -> Option<Agent> {
    if no_ask_password || nix::unistd::getuid().is_root() || !std::io::stdin().is_terminal() {
        return None;
    }
    // The agent closes the write end once it is registered with polkit.
    let (read_end, write_end) = nix::unistd::pipe().ok()?;
    let child = Command::new("pkttyagent")
        .args([
            "--notify-fd",
            &write_end.as_raw_fd().to_string(),
            "--fallback",
        ])
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    drop(write_end);
    let mut file = std::fs::File::from(read_end);
    let mut sink = Vec::new();
    let _ = file.read_to_end(&mut sink);
    Some(Agent { child })
}

/// Whether a call may ask for a password: only when an agent of ours is there to ask.
pub fn interaction(agent: &Option<Agent>) -> vmsnap_dbus::Interaction {
    match agent {
        Some(_) => vmsnap_dbus::Interaction::Allowed,
        None => vmsnap_dbus::Interaction::Denied,
    }
}
