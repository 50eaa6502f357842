//! The argument vector of virtnbdrestore, the one place it is built.
//!
//! `--option=value` throughout, so that a value starting with `-` (a checkpoint, disk or
//! domain name, a folder) stays a value. The long names are the same in 1.9 and 2.x.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// One virtnbdrestore run.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    /// The chain folder to read.
    pub input: PathBuf,
    /// Where the disks are written (exists, empty or the staging directory).
    pub output: PathBuf,
    pub log: PathBuf,
    pub uri: String,
    /// Restore up to this checkpoint; all points when `None`.
    pub until: Option<String>,
    /// Only this disk.
    pub disk: Option<String>,
    /// Adjust the configuration to the new paths and define it as a domain of this name.
    pub define_as: Option<String>,
}

fn with(option: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut arg = OsString::from(option);
    arg.push("=");
    arg.push(value);
    arg
}

impl RestoreSpec {
    pub fn argv(&self) -> Vec<OsString> {
        let mut argv = vec![
            with("--input", &self.input),
            with("--output", &self.output),
            "--noprogress".into(),
            with("--logfile", &self.log),
            with("--uri", &self.uri),
        ];
        if let Some(cp) = &self.until {
            argv.push(with("--until", cp));
        }
        if let Some(d) = &self.disk {
            argv.push(with("--disk", d));
        }
        if let Some(name) = &self.define_as {
            argv.extend([
                "--adjust-config".into(),
                "--define".into(),
                with("--name", name),
            ]);
        }
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_look_like_options_stay_values() {
        let spec = RestoreSpec {
            input: "/b/vm/-x".into(),
            output: "/t".into(),
            log: "/t/virtnbdrestore.log".into(),
            uri: "qemu:///system".into(),
            until: Some("-virtnbdbackup.1".into()),
            disk: Some("-vda".into()),
            define_as: Some("-new".into()),
        };
        let argv: Vec<String> = spec
            .argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for expected in [
            "--input=/b/vm/-x",
            "--until=-virtnbdbackup.1",
            "--disk=-vda",
            "--name=-new",
        ] {
            assert!(argv.iter().any(|a| a == expected), "{expected} in {argv:?}");
        }
        assert!(argv.iter().all(|a| a.starts_with("--")), "{argv:?}");
    }
}
