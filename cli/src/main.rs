//! `vmsnapctl`: VMSnap's unprivileged client. It only speaks D-Bus to vmsnapd.

mod admin;
mod agent;
mod args;
mod backup;
mod client;
mod compat;
mod completion;
mod escape;
mod exit;
mod files;
mod hint;
mod jobs;
mod overview;
mod render;
mod restore;
mod status;
mod watch;

use std::process::ExitCode;

use args::{Command, FormatArgs, Selection, SessionArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = compat::parse(std::env::args().collect());
    if let Some(kind) = cli.generate {
        return match completion::generate(kind) {
            Ok(()) => exit::code(exit::OK),
            Err(e) => {
                eprintln!("vmsnapctl: {e}");
                exit::code(exit::FAILURE)
            }
        };
    }
    let context = Context {
        format: cli.format,
        session: cli.session,
    };
    let outcome = match cli.command {
        Some(command) => run(&context, command).await,
        None => match cli.legacy.into_command() {
            Ok(command) => run(&context, command).await,
            Err(failure) => Err(failure),
        },
    };
    match outcome {
        Ok(code) => exit::code(code),
        Err(Failure { code, message }) => {
            // Service messages may quote a guest's names and paths.
            eprintln!("vmsnapctl: {}", escape::shown(&message));
            if context.format.verbose {
                eprintln!("vmsnapctl: exit code {code}");
            }
            exit::code(code)
        }
    }
}

/// Why a command failed: its exit code (see `exit`) and the message for stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The switches every command shares: how to print, how to talk to the service.
pub struct Context {
    pub format: FormatArgs,
    pub session: SessionArgs,
}

impl Context {
    /// Whether stdout gets a JSON document (`--json`, `--machine`).
    pub fn json(&self) -> bool {
        self.format.json || self.format.machine
    }
}

async fn run(context: &Context, command: Command) -> Result<u8, Failure> {
    match command {
        Command::Status(a) => status::status(context, &a).await,
        Command::List(a) => overview::list(context, &a).await,
        Command::Backup(a) => backup::backup(context, &a).await,
        Command::Scrub(a) => admin::scrub(context, &a).await,
        Command::Prune(a) => admin::prune(context, &a).await,
        Command::Backups(a) => restore::list(context, &a).await,
        Command::Verify(a) => restore::verify(context, &a).await,
        Command::Restore(a) => restore::restore(context, &a).await,
        Command::Files(a) => files::run(context, &a).await,
        Command::Jobs(a) => jobs::list(context, &a).await,
        Command::Wait { job } => jobs::wait(context, &job).await,
        Command::Cancel { job } => jobs::cancel(context, &job).await,
        Command::CompleteDomains => status::complete_domains(context).await,
    }
}

/// The selected domain names, comma lists split and trimmed. A selection that was given but
/// is empty (`--domains=`), or none at all for a command that changes things, is refused with
/// the original's exit code 1 rather than taken as "all domains".
pub fn domains(selection: &Selection, changes: bool) -> Result<Vec<String>, Failure> {
    let explicit = !selection.names.is_empty();
    let names: Vec<String> = selection
        .names
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if (explicit || changes) && names.is_empty() {
        return Err(Failure::new(exit::SELECTION, "No domains specified"));
    }
    Ok(names)
}

/// The backup root a command needs (exit code 2 without it, as the original's).
pub fn need_output(output: &Option<String>) -> Result<String, Failure> {
    output
        .clone()
        .ok_or_else(|| Failure::new(exit::USAGE, "No output directory specified"))
}

/// `true` as an option that is only sent when set (the service's default is `false`).
pub(crate) fn flag(set: bool) -> Option<bool> {
    set.then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn definition_is_consistent() {
        args::Cli::command().debug_assert();
    }

    #[test]
    fn comma_lists_are_split_and_trimmed() {
        let selection = |v: &[&str]| Selection {
            names: v.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            domains(&selection(&["vm1, vm2", ",vm3,,", " "]), false).unwrap(),
            ["vm1", "vm2", "vm3"]
        );
        assert_eq!(domains(&selection(&[" , "]), false).unwrap_err().code, 1);
        assert_eq!(domains(&selection(&[]), true).unwrap_err().code, 1);
        assert!(domains(&selection(&[]), false).unwrap().is_empty());
    }

    #[test]
    fn each_subcommand_has_only_its_own_options() {
        let cli = args::Cli::command();
        let longs = |name: &str| -> Vec<String> {
            cli.find_subcommand(name)
                .unwrap()
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .filter_map(|a| a.get_long().map(String::from))
                .collect()
        };
        assert_eq!(
            longs("verify"),
            ["output", "folder", "deep", "no-wait", "connect"]
        );
        assert_eq!(
            longs("prune"),
            ["output", "group-by", "keep", "dry-run", "connect"]
        );
        assert!(!longs("status").contains(&"raw".to_string()));
    }

    #[test]
    fn output_switches_go_anywhere() {
        let before = args::Cli::try_parse_from(["vmsnapctl", "--json", "status", "vm1"]).unwrap();
        let after = args::Cli::try_parse_from(["vmsnapctl", "status", "vm1", "--yml"]).unwrap();
        assert!(before.format.json && after.format.yaml);
    }
}
