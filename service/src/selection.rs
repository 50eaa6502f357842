//! Which domains a caller means: validated names, `*`, and globs with `*` and `?`.
//!
//! Every caller-supplied name is checked here before it reaches any host program, and every
//! literal name must exist in libvirt's list: a selection that leaves something unmatched is an
//! error naming all of it, never a silent partial run.

use std::fmt;

use wildmatch::WildMatch;

/// Longest name or pattern accepted. libvirt names become folder names under the backup
/// root, and a path component holds at most 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Most items accepted in one selection.
pub const MAX_ITEMS: usize = 1024;

/// Why a selection item was refused before anything ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("empty domain name")]
    Empty,
    #[error("domain name of {0} bytes is longer than {MAX_NAME_BYTES}")]
    TooLong(usize),
    #[error("domain name {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("domain name {0:?} contains '/'")]
    Slash(String),
    #[error("domain name {0:?} is a relative path component")]
    DotName(String),
    #[error("{0} domains selected; at most {MAX_ITEMS} are accepted")]
    TooMany(usize),
}

/// A domain name that is safe to pass to host programs and to use as one path component.
/// It does not prove the domain exists; [`resolve`] does that.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        check_text(name)?;
        Ok(DomainName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_text(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(InvalidName::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidName::ControlCharacter(
            name.escape_debug().to_string(),
        ));
    }
    if name.contains('/') {
        return Err(InvalidName::Slash(name.to_string()));
    }
    if name == "." || name == ".." {
        return Err(InvalidName::DotName(name.to_string()));
    }
    Ok(())
}

/// One item of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `*`, or no items at all: every domain.
    All,
    Name(DomainName),
    Glob(String),
}

impl Selector {
    pub fn parse(item: &str) -> Result<Self, InvalidName> {
        if item == "*" {
            return Ok(Selector::All);
        }
        check_text(item)?;
        if item.contains(['*', '?']) {
            Ok(Selector::Glob(item.to_string()))
        } else {
            Ok(Selector::Name(DomainName(item.to_string())))
        }
    }
}

/// Parses every item, refusing the whole selection if one is invalid. An empty list means
/// all domains.
pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Vec<Selector>, InvalidName> {
    if items.len() > MAX_ITEMS {
        return Err(InvalidName::TooMany(items.len()));
    }
    if items.is_empty() {
        return Ok(vec![Selector::All]);
    }
    items.iter().map(|i| Selector::parse(i.as_ref())).collect()
}

/// The outcome of matching a selection against libvirt's domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Every item matched; the domains in selection order, without duplicates.
    Domains(Vec<DomainName>),
    /// These names do not exist and these patterns matched nothing.
    NotFound(Vec<String>),
}

/// Matches `selectors` against `existing` (libvirt's list). `*` and globs keep libvirt's order;
/// names keep the caller's order; the first occurrence of a domain wins.
pub fn resolve(selectors: &[Selector], existing: &[String]) -> Resolved {
    let mut chosen: Vec<DomainName> = Vec::new();
    let mut not_found = Vec::new();
    let push = |name: &str, chosen: &mut Vec<DomainName>| {
        if !chosen.iter().any(|c| c.as_str() == name) {
            chosen.push(DomainName(name.to_string()));
        }
    };
    for selector in selectors {
        match selector {
            Selector::All => {
                if existing.is_empty() {
                    not_found.push("*".to_string());
                }
                for name in existing {
                    push(name, &mut chosen);
                }
            }
            Selector::Name(name) => {
                if existing.iter().any(|e| e == name.as_str()) {
                    push(name.as_str(), &mut chosen);
                } else {
                    not_found.push(name.to_string());
                }
            }
            Selector::Glob(pattern) => {
                let glob = WildMatch::new(pattern);
                let mut matched_any = false;
                for name in existing.iter().filter(|n| glob.matches(n)) {
                    matched_any = true;
                    push(name, &mut chosen);
                }
                if !matched_any {
                    not_found.push(pattern.clone());
                }
            }
        }
    }
    if not_found.is_empty() {
        Resolved::Domains(chosen)
    } else {
        Resolved::NotFound(not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing() -> Vec<String> {
        ["web1", "web2", "db", "a.b[1]", "vm;rm -rf x"]
            .map(String::from)
            .to_vec()
    }

    fn names(r: Resolved) -> Vec<String> {
        match r {
            Resolved::Domains(d) => d.into_iter().map(|n| n.0).collect(),
            Resolved::NotFound(n) => panic!("not found: {n:?}"),
        }
    }

    #[test]
    fn globs_names_and_all() {
        let sel = parse_all(&["db", "web?", "db"]).unwrap();
        assert_eq!(names(resolve(&sel, &existing())), ["db", "web1", "web2"]);
        assert_eq!(
            names(resolve(&parse_all::<&str>(&[]).unwrap(), &existing())).len(),
            5
        );
        assert_eq!(
            names(resolve(&parse_all(&["*"]).unwrap(), &existing())).len(),
            5
        );
        // Only * and ? are special: brackets and dots are literal.
        assert_eq!(
            names(resolve(&parse_all(&["a.b[1]*"]).unwrap(), &existing())),
            ["a.b[1]"]
        );
        assert_eq!(
            names(resolve(&parse_all(&["vm;rm -rf x"]).unwrap(), &existing())),
            ["vm;rm -rf x"]
        );
    }

    #[test]
    fn everything_not_found_is_named() {
        let sel = parse_all(&["db", "nope", "zz*"]).unwrap();
        assert_eq!(
            resolve(&sel, &existing()),
            Resolved::NotFound(vec!["nope".into(), "zz*".into()])
        );
        assert_eq!(
            resolve(&parse_all(&["*"]).unwrap(), &[]),
            Resolved::NotFound(vec!["*".into()])
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(Selector::parse(""), Err(InvalidName::Empty));
        assert!(matches!(
            Selector::parse(&"a".repeat(10_000)),
            Err(InvalidName::TooLong(10_000))
        ));
        assert!(matches!(
            Selector::parse("a\nb"),
            Err(InvalidName::ControlCharacter(_))
        ));
        assert!(matches!(
            Selector::parse("../etc"),
            Err(InvalidName::Slash(_))
        ));
        assert!(matches!(
            Selector::parse(".."),
            Err(InvalidName::DotName(_))
        ));
        assert!(matches!(
            parse_all(&vec!["a"; 2000]),
            Err(InvalidName::TooMany(2000))
        ));
        assert!(Selector::parse("vm1;touch x&&$(id)`id`|>").is_ok());
    }
}
