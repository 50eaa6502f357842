//! What a polkit check is about: details for the prompt and for administrators' rules.
//!
//! Every check passes the domains and the folders a call names (`domains`, `output`,
//! `target`, `folder`, `define_as`, …) as polkit details, and a `polkit.message` that names
//! them, so the password prompt says what it authorizes and a rule can decide on them
//! (`action.lookup("output")`; README, "Authorization"). polkit honours `polkit.message`
//! only from a root mechanism, which vmsnapd is. Values come from the caller: they are
//! shortened and stripped of control characters, so a crafted name cannot reshape a prompt.

/// Longest value passed on (a path is at most 4096 bytes; a domain list can be long).
const MAX_VALUE: usize = 512;

/// Details of one polkit check.
#[derive(Debug, Default, Clone)]
pub struct Details {
    /// The method's operation (`backup`, `verify`, …): what the prompt says is authorized.
    operation: &'static str,
    pairs: Vec<(&'static str, String)>,
}

fn clean(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX_VALUE)
        .collect();
    if value.chars().count() > MAX_VALUE {
        out.push('…');
    }
    out
}

impl Details {
    /// Details of `operation` on `domains` (as given: names, patterns, or all when empty).
    pub fn new(operation: &'static str, domains: &[String]) -> Self {
        let listed = if domains.is_empty() {
            "all domains".to_string()
        } else {
            domains.join(", ")
        };
        Details {
            operation,
            pairs: vec![
                ("operation", operation.to_string()),
                ("domains", clean(&listed)),
            ],
        }
    }

    /// Adds the string option `key` of the call, when it has one.
    pub fn option(mut self, key: &'static str, value: &Option<String>) -> Self {
        if let Some(v) = value {
            self.pairs.push((key, clean(v)));
        }
        self
    }

    /// Adds a detail the service computed.
    pub fn with(mut self, key: &'static str, value: &str) -> Self {
        self.pairs.push((key, clean(value)));
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The prompt's text, naming what the details name.
    pub fn message(&self) -> String {
        let domains = self.get("domains").unwrap_or("the selected domains");
        let at = |key: &str, word: &str| {
            self.get(key)
                .map(|v| format!(" {word} {v}"))
                .unwrap_or_default()
        };
        match self.operation {
            "backup" => {
                format!(
                    "Authentication is required to back up {domains}{}",
                    at("output", "into")
                )
            }
            "backup-prune" => format!(
                "Authentication is required to back up {domains}{} and delete its old backups",
                at("output", "into")
            ),
            "verify" => {
                format!(
                    "Authentication is required to verify the backups of {domains}{}",
                    at("output", "in")
                )
            }
            "restore" => format!(
                "Authentication is required to restore {domains}{}{}{}",
                at("output", "from"),
                at("target", "into"),
                at("define_as", "and define it as the new domain")
            ),
            "scrub" => format!(
                "Authentication is required to remove the checkpoints and bitmaps of {domains}"
            ),
            "prune" => format!(
                "Authentication is required to delete old backups of {domains}{}",
                at("output", "in")
            ),
            "read" => format!(
                "Authentication is required to read the backups of {domains}{}",
                at("output", "in")
            ),
            "cancel" => format!("Authentication is required to cancel a job of {domains}"),
            other => format!("Authentication is required to {other} {domains}"),
        }
    }

    /// The same details for another operation (Backup's prune check).
    pub fn as_operation(&self, operation: &'static str) -> Self {
        let mut d = self.clone();
        d.operation = operation;
        d.pairs[0].1 = operation.to_string();
        d
    }

    /// The pairs polkit receives, with `polkit.message`.
    pub fn for_polkit(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.pairs.clone();
        pairs.push(("polkit.message", self.message()));
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_names_what_it_authorizes_and_junk_cannot_reshape_it() {
        let d = Details::new("backup", &["web\nPassword:".into(), "db".into()])
            .option("output", &Some("/srv/backups/alice".into()));
        let message = d.message();
        assert_eq!(
            message,
            "Authentication is required to back up web?Password:, db into /srv/backups/alice"
        );
        let pairs = d.for_polkit();
        assert!(pairs.contains(&("output", "/srv/backups/alice".to_string())));
        assert!(pairs.iter().any(|(k, _)| *k == "polkit.message"));
        let long = Details::new("backup", &["x".repeat(5000)]);
        assert!(long.get("domains").unwrap().chars().count() <= MAX_VALUE + 1);
    }
}
