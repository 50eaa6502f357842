//! Shell completion scripts: clap's static scripts, plus domain names asked from the service.
//!
//! clap_complete's dynamic completion is still unstable, so the static scripts are generated
//! and taught one thing more: where a DOMAIN goes, they run `vmsnapctl complete-domains`
//! (hidden; names from Status, nothing when the service cannot be asked within 3 s). Where the
//! service is unreachable, completion is what the static script offers.

use clap::CommandFactory;

use crate::args::{Cli, Generate};

/// The subcommands whose positional arguments are domains.
const TAKE_DOMAINS: &str = "status list backup scrub prune backups verify restore files";

/// Options whose value is not a domain (completion offers files or nothing after them).
const TAKE_VALUES: &str = "--output|--group-by|--groupBy|--connect|--target|--folder|--until|\
    --disk|--define-as|--type|--checkpoint-name|--checkpointName|--scrub-type|--scrubType|\
    --keep|--timeout|--generate";

/// Writes the man page or completion script to stdout.
pub fn generate(kind: Generate) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let shell = match kind {
        Generate::Man => return clap_mangen::Man::new(Cli::command()).render(&mut out),
        Generate::CompleteBash => clap_complete::Shell::Bash,
        Generate::CompleteZsh => clap_complete::Shell::Zsh,
        Generate::CompleteFish => clap_complete::Shell::Fish,
    };
    out.write_all(script(shell).as_bytes())
}

pub fn script(shell: clap_complete::Shell) -> String {
    let mut buffer = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vmsnapctl", &mut buffer);
    let generated = String::from_utf8(buffer).expect("clap writes UTF-8");
    match shell {
        clap_complete::Shell::Bash => bash(&generated),
        clap_complete::Shell::Zsh => zsh(&generated),
        clap_complete::Shell::Fish => fish(&generated),
        _ => generated,
    }
}

fn bash(generated: &str) -> String {
    // clap's own `complete -F _vmsnapctl` lines are replaced by one for the wrapper.
    let body: String = generated
        .lines()
        .take_while(|l| !l.starts_with("if [[ \"${BASH_VERSINFO[0]}\""))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        r#"{body}
# Domain names from the service where a DOMAIN goes (vmsnapctl complete-domains).
_vmsnapctl_with_domains() {{
    _vmsnapctl "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" word sub=""
    # clap's placeholders ([DOMAIN]...) are not something to type.
    local kept=() c
    for c in "${{COMPREPLY[@]}}"; do [[ "$c" == \[* || "$c" == \<* ]] || kept+=("$c"); done
    COMPREPLY=("${{kept[@]}}")
    [[ "$cur" == -* ]] && return 0
    case "$prev" in {TAKE_VALUES}) return 0 ;; esac
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) sub="$word"; break ;; esac
    done
    case " {TAKE_DOMAINS} " in
        *" $sub "*) [ -n "$sub" ] || return 0
            local IFS=$'\n'
            COMPREPLY+=($(compgen -W "$(vmsnapctl complete-domains 2>/dev/null)" -- "$cur")) ;;
    esac
    return 0
}}
complete -F _vmsnapctl_with_domains -o bashdefault -o default vmsnapctl
"#
    )
}

fn zsh(generated: &str) -> String {
    let mut out = String::new();
    for line in generated.lines() {
        let domain_arg = line.starts_with("'*::names -- ")
            || line.starts_with("':domain -- ")
            || line.starts_with("'*--domains=[");
        if domain_arg && line.contains(":_default'") {
            out.push_str(&line.replace(":_default'", ":_vmsnapctl_domains'"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if line == "autoload -U is-at-least" {
            out.push_str(
                "\n# Domain names from the service (vmsnapctl complete-domains).\n\
                 _vmsnapctl_domains() {\n    \
                 local -a domains\n    \
                 domains=(${(f)\"$(vmsnapctl complete-domains 2>/dev/null)\"})\n    \
                 compadd -a domains\n\
                 }\n",
            );
        }
    }
    out
}

fn fish(generated: &str) -> String {
    format!(
        "{generated}\n# Domain names from the service (vmsnapctl complete-domains).\n\
         complete -c vmsnapctl -n \"__fish_vmsnapctl_using_subcommand {TAKE_DOMAINS}\" -f \
         -a \"(vmsnapctl complete-domains 2>/dev/null)\"\n\
         complete -c vmsnapctl -n \"__fish_vmsnapctl_needs_command\" -l domains -x \
         -a \"(vmsnapctl complete-domains 2>/dev/null)\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_asks_the_service_for_domains() {
        let bash = script(clap_complete::Shell::Bash);
        assert!(bash.contains("complete -F _vmsnapctl_with_domains"));
        assert!(!bash.contains("complete -F _vmsnapctl -o"));
        let zsh = script(clap_complete::Shell::Zsh);
        // Status, list, backup, scrub, prune, backups, verify, restore, files and --domains.
        assert_eq!(zsh.matches(":_vmsnapctl_domains'").count(), 10, "{zsh}");
        assert!(zsh.contains("_vmsnapctl_domains() {"));
        let fish = script(clap_complete::Shell::Fish);
        assert!(fish.contains("__fish_vmsnapctl_using_subcommand status list backup"));
    }
}
