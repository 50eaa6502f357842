//! vmsnapctl as a new user meets it: a typo stops a command before it changes anything, every
//! job can be left running and followed later (by anyone who may see it), the one-line overview
//! agrees with Status and ListBackups, colour only on a terminal, refusals say what to do.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmsnap_integration::bus::ScratchBus;
use vmsnap_integration::chain::{backup, backup_under_way, fingerprint, result, root, snapshot};
use vmsnap_integration::guest::{virsh, Guest};
use vmsnap_integration::{
    backup_root_for_users, host, tool, vmsnapctl, vmsnapctl_as, vmsnapctl_as_user, vmsnapctl_on,
    Run,
};

fn checkpoints(g: &Guest) -> String {
    virsh(&["checkpoint-list", "--domain", &g.name, "--name"])
}

/// The service's jobs for `g` (other tests' jobs run at the same time).
fn job_count(g: &Guest) -> usize {
    let jobs = vmsnapctl(&["jobs", "--json"]).expect_code(0).json();
    jobs.as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["domains"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == g.name.as_str())
        })
        .count()
}

#[test]
fn a_typo_stops_every_changing_command_and_changes_nothing() {
    let g = Guest::qcow2("cli-typo", 16);
    let root = root("cli-typo");
    g.write("vda", 0x21, 0, 2);
    g.start();
    backup(&g, &root, &[]).expect_code(0);
    let target = host().images.join("cli-typo-target");
    let (t, d) = (target.to_str().unwrap(), format!("--domains={}", g.name));
    let output = format!("--output={root}");
    let (before, files, jobs) = (
        checkpoints(&g),
        fingerprint(Path::new(&root)),
        job_count(&g),
    );
    let n = g.name.as_str();
    for (line, says) in [
        (
            &["backup", n, "--output", &root, "--compresss"][..],
            "'--compresss'",
        ),
        (&["prune", n, "--output", &root, "--keeep=3"], "'--keeep'"),
        (&["scrub", n, "--type", "both", "--dryrun"], "'--dryrun'"),
        (&["verify", n, "--output", &root, "--raw"], "'--raw'"),
        (
            &["restore", n, "--output", &root, "--target", t, "--overwrit"],
            "'--overwrit'",
        ),
        (
            &["backups", n, "--output", &root, "--no-wait"],
            "'--no-wait'",
        ),
        (&[&d, "--backup", &output, "--keeep=3"], "'--keeep'"),
        (
            &[&d, "--scrub", "--scrubType=both", "--bitmapName=*"],
            "'--bitmapName'",
        ),
        (
            &[&d, "--backup", &output, "--dry-run"],
            "--dry-run does not apply to --backup",
        ),
        (
            &[&d, "--scrub", "--scrubType=both", "--keep=1"],
            "--keep does not apply to --scrub",
        ),
        (
            &["--output", &root, "backup", n],
            "stand without a subcommand",
        ),
        // The commands that only read or follow are as strict.
        (&["status", n, "--outptu", &root], "'--outptu'"),
        (&["list", n, "--deep"], "'--deep'"),
        (&["jobs", "--wacth"], "'--wacth'"),
        (&["wait", "1", "--no-wait"], "'--no-wait'"),
        (&["cancel", "1", "--force"], "'--force'"),
    ] {
        let run = vmsnapctl(line).expect_code(2);
        assert!(run.stderr.contains(says), "{line:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{line:?}: {}", run.stdout);
    }
    // clap's suggestion for the near miss.
    let run = vmsnapctl(&["prune", n, "--output", &root, "--keeep=3"]);
    assert!(
        run.stderr.contains("a similar argument exists: '--keep'"),
        "{}",
        run.stderr
    );
    assert_eq!(checkpoints(&g), before, "a checkpoint changed");
    assert_eq!(
        fingerprint(Path::new(&root)),
        files,
        "the backup root changed"
    );
    assert_eq!(job_count(&g), jobs, "a job was started");
    assert!(!target.exists(), "a restore target was made");

    // A status report only warns: it changes nothing either way.
    let run = vmsnapctl(&[&d, "--status", "--bitmapName=*", "--json"]).expect_code(0);
    assert!(run
        .stderr
        .contains("ignoring unknown switch --bitmapName=*"));
    assert!(run.json()[n].is_object());
    g.destroy();
}

#[test]
fn help_shows_each_command_its_own_options_with_examples() {
    let verify = vmsnapctl(&["verify", "--help"]).expect_code(0).stdout;
    for own in ["--output", "--folder", "--no-wait", "Examples:"] {
        assert!(verify.contains(own), "{own} missing:\n{verify}");
    }
    for foreign in [
        "--raw",
        "--prune",
        "--keep",
        "--dry-run",
        "--checkpoint-name",
    ] {
        assert!(!verify.contains(foreign), "{foreign} offered:\n{verify}");
    }
    let man = vmsnapctl(&["--generate", "man"]).expect_code(0).stdout;
    assert!(man.contains("COMPATIBILITY FORM") && man.contains("vmsnapctl list"));
}

/// The job number of a job path.
fn number(path: &str) -> &str {
    path.trim().rsplit('/').next().unwrap()
}

#[test]
fn no_wait_hands_back_every_kind_of_job_and_wait_follows_it() {
    let g = Guest::qcow2("cli-nowait", 16);
    let root = root("cli-nowait");
    g.write("vda", 0x31, 0, 2);
    let expected = snapshot(&g, "vda", "cli-nowait");
    g.start();
    let target = host().images.join("cli-nowait-target");
    let t = target.to_str().unwrap();
    for (line, done) in [
        (vec!["backup", &g.name, "--output", &root], "Backup of"),
        (vec!["verify", &g.name, "--output", &root], "Verify of"),
        (
            vec!["restore", &g.name, "--output", &root, "--target", t],
            "Restore of",
        ),
    ] {
        let started = vmsnapctl(&[&line[..], &["--no-wait"]].concat()).expect_code(0);
        let path = started.stdout.trim();
        assert!(
            path.starts_with(vmsnap_dbus::names::JOB_PATH_PREFIX) && !path.contains('\n'),
            "--no-wait printed {:?}",
            started.stdout
        );
        let waited = vmsnapctl(&["wait", number(path)]).expect_code(0);
        assert!(
            waited
                .stdout
                .contains(&format!("{done} {}: succeeded", g.name)),
            "{}",
            waited.stdout
        );
        let json = vmsnapctl(&["wait", path, "--json"]).expect_code(0).json();
        assert_eq!(json["state"], "succeeded", "{json}");
    }
    vmsnap_integration::chain::assert_identical(&target.join("vda.qcow2"), &expected, "restore");
    vmsnapctl(&["wait", "99999"]).expect_code(1);
    g.destroy();
}

#[test]
fn a_job_started_by_another_user_is_followed_by_wait_and_jobs_watch() {
    let g = Guest::qcow2("cli-watch", 1024);
    let root = backup_root_for_users().join("cli-watch");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.to_str().unwrap();
    g.write("vda", 0x41, 0, 700);
    g.start();
    // vmsnaplv (the libvirt group) starts it; root follows it.
    let started = vmsnapctl_as(
        "vmsnaplv",
        &[
            "--no-ask-password",
            "backup",
            &g.name,
            "--output",
            root,
            "--no-wait",
        ],
    )
    .expect_code(0);
    let job = started.stdout.trim().to_string();
    let waited = vmsnapctl(&["wait", number(&job)]).expect_code(0);
    assert!(waited
        .stdout
        .contains(&format!("Backup of {}: succeeded", g.name)));

    // The next one (an incremental of new data) is watched while it copies.
    g.destroy();
    g.write("vda", 0x42, 0, 700);
    g.start();
    let job = backup_under_way(&host().bus_address, &g, root);
    let watched = vmsnapctl(&["jobs", "--watch"]).expect_code(0);
    assert!(
        watched
            .stdout
            .contains(&format!("Backup of {}: succeeded (inc", g.name)),
        "{}",
        watched.stdout
    );
    // Not a terminal: plain progress lines on stderr.
    assert!(
        watched.stderr.contains(&format!("{} vda:", g.name)),
        "{}",
        watched.stderr
    );
    let entry = vmsnap_integration::chain::job_entry(&host().bus_address, &job);
    assert_eq!(entry["state"], "succeeded");

    // With --json: one document on stdout, every watched job's end in it.
    g.destroy();
    g.write("vda", 0x43, 0, 700);
    g.start();
    let job = backup_under_way(&host().bus_address, &g, root);
    let watched = vmsnapctl(&["jobs", "--watch", "--json"])
        .expect_code(0)
        .json();
    let end = watched
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["job"] == job.as_str())
        .unwrap_or_else(|| panic!("{job} not in {watched}"));
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(end["domains"][0]["domain"], g.name.as_str());
    g.destroy();
}

#[test]
fn jobs_says_when_there_are_none() {
    let bus = ScratchBus::start("cli-nojobs");
    let _service = bus.start_service(&[]);
    let none = vmsnapctl_on(&bus.address, &["jobs"]).expect_code(0);
    assert_eq!(
        none.stdout.trim(),
        "No jobs: none running, none finished recently."
    );
    assert_eq!(
        vmsnapctl_on(&bus.address, &["jobs", "--json"])
            .expect_code(0)
            .stdout
            .trim(),
        "[]"
    );
    let watch = vmsnapctl_on(&bus.address, &["jobs", "--watch"]).expect_code(0);
    assert!(
        watch.stderr.contains("No job is running."),
        "{}",
        watch.stderr
    );
}

#[test]
fn the_overview_agrees_with_status_and_list_backups() {
    let running = Guest::qcow2("cli-list-run", 16);
    let off = Guest::qcow2("cli-list-off", 16);
    let root = root("cli-list");
    running.write("vda", 0x51, 0, 2);
    running.start();
    let full = result(&backup(&running, &root, &[]).expect_code(0));
    let pattern = format!("{}cli-list-*", host().prefix);
    let list = vmsnapctl(&["list", &pattern, "--output", &root, "--json"])
        .expect_code(0)
        .json();
    let status = vmsnapctl(&["status", &pattern, "--json"])
        .expect_code(0)
        .json();
    let chains = vmsnapctl(&["backups", &pattern, "--output", &root, "--json"])
        .expect_code(0)
        .json();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    for row in rows {
        let name = row["domain"].as_str().unwrap();
        let s = &status[name];
        assert_eq!(row["state"], s["state"], "{name}");
        assert_eq!(row["overallStatus"], s["overallStatus"], "{name}");
        assert_eq!(
            row["status"],
            if s["overallStatus"] == 0 {
                "OK"
            } else {
                "INCONSISTENT"
            }
        );
        assert_eq!(
            row["checkpoints"],
            s["checkpoints"].as_array().unwrap().len()
        );
        let changed: Vec<u64> = s["disks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["changedSinceCheckpoint"].as_u64())
            .collect();
        let expected = if changed.is_empty() {
            Value::Null
        } else {
            changed.iter().sum::<u64>().into()
        };
        assert_eq!(row["changedBytes"], expected, "{name}: {s}");
        let live = chains
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["domain"] == name && c["live"] == true);
        match live {
            Some(c) => {
                assert_eq!(row["liveChain"]["folder"], c["folder"]);
                assert_eq!(
                    row["liveChain"]["points"],
                    c["points"].as_array().unwrap().len()
                );
                assert_eq!(row["liveChain"]["bytes"], c["bytes"]);
            }
            None => assert!(row["liveChain"].is_null(), "{row}"),
        }
    }
    let backed_up = rows
        .iter()
        .find(|r| r["domain"] == running.name.as_str())
        .unwrap();
    assert_eq!(backed_up["state"], "running");
    assert_eq!(backed_up["liveChain"]["points"], 1);
    assert!(full["folder"]
        .as_str()
        .unwrap()
        .ends_with(backed_up["liveChain"]["folder"].as_str().unwrap()));
    let shut = rows
        .iter()
        .find(|r| r["domain"] == off.name.as_str())
        .unwrap();
    assert_eq!(shut["state"], "shut off");
    assert!(shut["liveChain"].is_null());

    // The table: a header and one aligned line per domain, nothing else on stdout.
    let text = vmsnapctl(&["list", &pattern, "--output", &root])
        .expect_code(0)
        .stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("DOMAIN") && lines[0].contains("LAST BACKUP"),
        "{text}"
    );
    let column = lines[0].find("STATE").unwrap();
    for (g, state) in [(&off, "shut off"), (&running, "running")] {
        let line = lines[1..]
            .iter()
            .find(|l| l.starts_with(&format!("{} ", g.name)))
            .unwrap_or_else(|| panic!("no line for {}:\n{text}", g.name));
        assert_eq!(&line[column..column + state.len()], state, "{text}");
    }
    assert!(!text.contains('\x1b'), "colour in a pipe: {text:?}");
    running.destroy();
}

/// A tmux session running bash without start-up files (no coloured prompt) on the run's bus.
struct Terminal(String, std::cell::Cell<u32>);

impl Terminal {
    fn open(name: &str) -> Terminal {
        let session = format!("vmsnap-{name}-{}", std::process::id());
        let bus = format!("DBUS_SYSTEM_BUS_ADDRESS={}", host().bus_address);
        tool(
            "tmux",
            &[
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "200",
                "-y",
                "50",
                "-e",
                &bus,
                "bash",
                "--norc",
                "--noprofile",
            ],
        );
        Terminal(session, std::cell::Cell::new(0))
    }

    /// Types `line`, waits for it to end, and returns the screen with its escape sequences and
    /// `ended-N-CODE` last (N counts the lines typed, so an earlier screen is never taken).
    fn run(&self, line: &str) -> String {
        self.1.set(self.1.get() + 1);
        let marker = format!("ended-{}-", self.1.get());
        tool(
            "tmux",
            &[
                "send-keys",
                "-t",
                &self.0,
                "clear; tmux clear-history",
                "Enter",
            ],
        );
        tool(
            "tmux",
            &[
                "send-keys",
                "-t",
                &self.0,
                &format!("{line}; echo \"{marker}$?\""),
                "Enter",
            ],
        );
        let start = Instant::now();
        loop {
            let screen = tool("tmux", &["capture-pane", "-p", "-e", "-t", &self.0]);
            if screen.lines().any(|l| l.starts_with(&marker)) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{line} did not end:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn colour_and_progress_bars_only_on_a_terminal_and_never_with_no_color() {
    let g = Guest::qcow2("cli-tty", 512);
    let root = root("cli-tty");
    g.write("vda", 0x61, 0, 400);
    g.start();
    let ctl = host().bin_dir.join("vmsnapctl");
    let ctl = ctl.display();
    let terminal = Terminal::open("tty");
    let coloured = terminal.run(&format!("{ctl} list {}", g.name));
    assert!(coloured.contains("ended-1-0"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal:\n{coloured}"
    );
    let plain = terminal.run(&format!("NO_COLOR=1 {ctl} list {}", g.name));
    assert!(
        plain.contains("ended-2-0") && plain.contains(&g.name),
        "{plain}"
    );
    assert!(!plain.contains("\x1b["), "colour with NO_COLOR:\n{plain:?}");

    let progress = terminal.run(&format!(
        "NO_COLOR=1 {ctl} backup {} --output {root}",
        g.name
    ));
    assert!(progress.contains("ended-3-0"), "{progress}");
    assert!(
        progress.contains(&format!("Backup of {}: succeeded", g.name)),
        "{progress}"
    );
    // indicatif's bar for the disk, drawn full when it ended.
    assert!(
        progress
            .lines()
            .any(|l| l.contains(&format!("{} vda", g.name)) && l.contains("[====")),
        "no progress bar:\n{progress}"
    );
    g.destroy();
}

#[test]
fn a_refusal_says_what_to_do() {
    let g = Guest::qcow2("cli-hint", 16);
    let root = backup_root_for_users().display().to_string();
    let refused: Run =
        vmsnapctl_as_user(&["--no-ask-password", "backup", &g.name, "--output", &root])
            .expect_code(12);
    assert!(
        refused.stderr.contains("org.vmsnap.backup"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("vmsnapctl: hint:") && refused.stderr.contains("`libvirt` group"),
        "{}",
        refused.stderr
    );
    let scrub = vmsnapctl_as(
        "vmsnaplv",
        &["--no-ask-password", "scrub", &g.name, "--type", "both"],
    )
    .expect_code(12);
    assert!(
        scrub
            .stderr
            .contains("org.vmsnap.scrub is for administrators"),
        "{}",
        scrub.stderr
    );
}

#[test]
fn domain_names_complete_from_the_service() {
    let g = Guest::qcow2("cli-complete", 16);
    let names = vmsnapctl(&["complete-domains"]).expect_code(0).stdout;
    assert!(names.lines().any(|l| l == g.name), "{names}");
    let script = host().images.join("vmsnapctl.bash");
    std::fs::write(
        &script,
        vmsnapctl(&["--generate", "complete-bash"])
            .expect_code(0)
            .stdout,
    )
    .unwrap();
    // bash's completion machinery, as a shell runs it for `vmsnapctl backup <prefix><TAB>`.
    let prefix = format!("{}cli-compl", host().prefix);
    let program = format!(
        "source {}; COMP_WORDS=(vmsnapctl backup {prefix}); COMP_CWORD=2; \
         _vmsnapctl_with_domains vmsnapctl {prefix} backup; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let mut bash = std::process::Command::new("bash");
    bash.args(["--norc", "-c", &program])
        .env("PATH", path_with_binaries());
    let completed = vmsnap_integration::run(&mut bash, Duration::from_secs(30)).expect_code(0);
    assert_eq!(completed.stdout.trim(), g.name, "{}", completed.stderr);

    // fish completes a command line on request (`complete -C`), as it does on TAB.
    let fish_script = host().images.join("vmsnapctl.fish");
    std::fs::write(
        &fish_script,
        vmsnapctl(&["--generate", "complete-fish"])
            .expect_code(0)
            .stdout,
    )
    .unwrap();
    let mut fish = std::process::Command::new("fish");
    fish.args([
        "--no-config",
        "-c",
        &format!(
            "source {}; complete -C 'vmsnapctl backup {prefix}'",
            fish_script.display()
        ),
    ])
    .env("PATH", path_with_binaries());
    let completed = vmsnap_integration::run(&mut fish, Duration::from_secs(30)).expect_code(0);
    assert_eq!(completed.stdout.trim(), g.name, "{}", completed.stderr);

    // zsh: the script loads into compinit and defines the function that asks the service.
    let zsh_script = host().images.join("_vmsnapctl");
    std::fs::write(
        &zsh_script,
        vmsnapctl(&["--generate", "complete-zsh"])
            .expect_code(0)
            .stdout,
    )
    .unwrap();
    let mut zsh = std::process::Command::new("zsh");
    zsh.args([
        "-f",
        "-c",
        &format!(
            "autoload -U compinit && compinit -u && source {} && whence -w _vmsnapctl_domains",
            zsh_script.display()
        ),
    ]);
    let loaded = vmsnap_integration::run(&mut zsh, Duration::from_secs(30)).expect_code(0);
    assert_eq!(
        loaded.stdout.trim(),
        "_vmsnapctl_domains: function",
        "{}",
        loaded.stderr
    );
}

/// `PATH` with the run's vmsnapctl first, as an installed one would be found.
fn path_with_binaries() -> String {
    format!(
        "{}:{}",
        host().bin_dir.display(),
        std::env::var("PATH").unwrap()
    )
}
