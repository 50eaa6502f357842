//! The changes to domains that go through `virsh`, one argument vector per call: starting
//! paused, destroying, removing a bitmap through QEMU, and libvirt's job control. Every read
//! (and the checkpoint deletes) use the service's open connection ([`super::libvirt`]); these
//! few run seldom, and virsh's behaviour for them is what the rest of the code was built on.
//!
//! Domain names are always passed as the value of an explicit `--domain` option, so that a
//! name that starts with `-` can never be read as an option of virsh itself.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::command::{self, Output};
use super::{Error, Result};

/// A `virsh` binary bound to one libvirt URI.
#[derive(Debug, Clone)]
pub struct Virsh {
    program: PathBuf,
    uri: String,
    timeout: Duration,
}

/// `--domain=NAME`: one argument, so a name starting with `-` is never read as an option.
fn domain_arg(domain: &str) -> String {
    format!("--domain={domain}")
}

impl Virsh {
    pub fn new(program: PathBuf, uri: impl Into<String>, timeout: Duration) -> Self {
        Virsh {
            program,
            uri: uri.into(),
            timeout,
        }
    }

    /// Starts a shut-off domain with its CPUs stopped: QEMU then owns the disks and their
    /// bitmaps, so a backup is an online one and the guest never runs.
    pub async fn start_paused(&self, domain: &str) -> Result<()> {
        self.call(Some(domain), &["start", &domain_arg(domain), "--paused"])
            .await
            .map(drop)
    }

    /// Stops the domain's QEMU. QEMU still closes the images, so bitmaps are stored.
    pub async fn destroy(&self, domain: &str) -> Result<()> {
        self.call(Some(domain), &["destroy", &domain_arg(domain)])
            .await
            .map(drop)
    }

    /// Removes a dirty bitmap from a running domain's format node through QEMU.
    pub async fn remove_live_bitmap(&self, domain: &str, node: &str, bitmap: &str) -> Result<()> {
        let cmd = serde_json::json!({
            "execute": "block-dirty-bitmap-remove",
            "arguments": {"node": node, "name": bitmap},
        })
        .to_string();
        let out = self
            .call(
                Some(domain),
                &[
                    "qemu-monitor-command",
                    &domain_arg(domain),
                    &format!("--cmd={cmd}"),
                ],
            )
            .await?;
        if out.stdout.contains("\"error\"") {
            return Err(Error::CommandFailed {
                program: "virsh qemu-monitor-command".into(),
                message: out.stdout.trim().to_string(),
            });
        }
        Ok(())
    }

    /// The operation of libvirt's active job on the domain (`Backup`, `Outgoing migration`, …),
    /// `None` when no job is active.
    pub async fn active_job_operation(&self, domain: &str) -> Result<Option<String>> {
        let out = self
            .call(Some(domain), &["domjobinfo", &domain_arg(domain)])
            .await?;
        Ok(job_operation(&out.stdout))
    }

    /// Aborts libvirt's running job on the domain, if there is one.
    pub async fn abort_job(&self, domain: &str) -> Result<()> {
        match self
            .call(Some(domain), &["domjobabort", &domain_arg(domain)])
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::CommandFailed { message, .. }) if message.contains("no job") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn call(&self, domain: Option<&str>, args: &[&str]) -> Result<Output> {
        let mut argv: Vec<OsString> = vec![format!("--connect={}", self.uri).into()];
        argv.extend(args.iter().map(OsString::from));
        let out = command::run(&self.program, &argv, self.timeout)
            .await
            .map_err(|e| match e {
                Error::Timeout { program, seconds } => {
                    Error::HostUnavailable(format!("{program} did not answer within {seconds} s"))
                }
                other => other,
            })?;
        if out.success {
            if !out.stderr.trim().is_empty() {
                // A successful call is judged by its exit status; chatter is only a warning.
                tracing::warn!(command = args[0], stderr = %out.stderr.trim(), "virsh warning");
            }
            return Ok(out);
        }
        Err(classify(&out, domain))
    }
}

/// Reads `domjobinfo`'s output: `Job type: None` means no job; otherwise its `Operation:`.
fn job_operation(text: &str) -> Option<String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    match field("Job type:") {
        None => None,
        Some(t) if t.eq_ignore_ascii_case("none") => None,
        Some(_) => Some(field("Operation:").unwrap_or_default()),
    }
}

/// Turns a failed virsh run into the error the caller can act on.
fn classify(out: &Output, domain: Option<&str>) -> Error {
    let line = out.error_line();
    let text = out.stderr.as_str();
    const UNREACHABLE: &[&str] = &[
        "failed to connect to the hypervisor",
        "Failed to connect socket",
        "Cannot recv data",
        "End of file while reading data",
        "no connection driver available",
    ];
    // "Connection reset by peer" alone is no sign: QEMU's monitor says it too when a domain
    // stops while it is being asked ("Unable to read from monitor: …"), which is that
    // domain's problem, not libvirtd's.
    if UNREACHABLE.iter().any(|needle| text.contains(needle)) {
        return Error::HostUnavailable(line);
    }
    if let Some(domain) = domain {
        if text.contains("failed to get domain") || text.contains("Domain not found") {
            return Error::NoSuchDomain(domain.to_string());
        }
    }
    Error::CommandFailed {
        program: "virsh".into(),
        message: line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_that_went_away_is_the_domains_problem_not_libvirts() {
        let out = failed("error: Unable to read from monitor: Connection reset by peer\n");
        assert!(matches!(
            classify(&out, Some("vm1")),
            Error::CommandFailed { .. }
        ));
        let out = failed("error: Cannot recv data: Connection reset by peer\n");
        assert!(matches!(
            classify(&out, Some("vm1")),
            Error::HostUnavailable(_)
        ));
    }

    #[test]
    fn domjobinfo_names_the_operation_or_no_job() {
        let backup =
            "Job type:         Unbounded\nOperation:        Backup\nTime elapsed:     12 ms\n";
        assert_eq!(job_operation(backup).as_deref(), Some("Backup"));
        assert_eq!(job_operation("Job type:         None        \n"), None);
        assert_eq!(job_operation(""), None);
    }

    fn failed(stderr: &str) -> Output {
        Output {
            stdout: String::new(),
            stderr: stderr.into(),
            success: false,
            code: Some(1),
        }
    }

    #[test]
    fn failures_are_classified() {
        let down = failed("error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n");
        assert!(matches!(
            classify(&down, Some("vm")),
            Error::HostUnavailable(_)
        ));
        let missing = failed("error: failed to get domain 'vm'\n");
        assert!(matches!(classify(&missing, Some("vm")), Error::NoSuchDomain(d) if d == "vm"));
        let other = failed("error: Requested operation is not valid: domain is not running\n");
        match classify(&other, Some("vm")) {
            Error::CommandFailed { message, .. } => {
                assert_eq!(
                    message,
                    "error: Requested operation is not valid: domain is not running"
                )
            }
            e => panic!("{e:?}"),
        }
    }
}
