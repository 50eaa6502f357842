//! polkit rules a test installs for the run's polkitd, and waiting for it to load them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Run;

/// A polkit rule file granting `user` the given actions, removed when dropped. `tag` keeps
/// the files of tests that run at the same time apart.
pub struct Rule(PathBuf);

impl Rule {
    pub fn grant(tag: &str, user: &str, actions: &[&str]) -> Rule {
        let path = PathBuf::from(format!(
            "/etc/polkit-1/rules.d/10-vmsnaptest-{tag}-{}.rules",
            std::process::id()
        ));
        let ids: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::create_dir_all("/etc/polkit-1/rules.d").unwrap();
        std::fs::write(
            &path,
            format!(
                "polkit.addRule(function (action, subject) {{\n  if ([{}].indexOf(action.id) >= 0 && subject.user == \"{user}\") {{ return polkit.Result.YES; }}\n}});\n",
                ids.join(", ")
            ),
        )
        .unwrap();
        Rule(path)
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Retries `f` while polkitd has not yet reloaded its rules (it does so within a second or
/// two), until it exits with `code` or 30 s have passed.
pub fn eventually(mut f: impl FnMut() -> Run, code: i32) -> Run {
    let start = Instant::now();
    loop {
        let r = f();
        if r.code == code || start.elapsed() > Duration::from_secs(30) {
            return r.expect_code(code);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
