//! Retention: which period folders of a domain may go.
//!
//! The original's rule, kept: once the middle of the current period is reached (15 days into a
//! month, 45 into a quarter, 90 into a half, 180 into a year) the previous period's folder is
//! deleted. Its defects, not kept: it pruned unasked, after failed backups, with wrong
//! bi-annual dates, and only ever the one previous folder. Here `keep` more past periods may
//! survive, every older folder of the same grouping goes (a missed window leaves nothing
//! behind forever), the current period is never touched, and only real directories named
//! `vmsnap-backup-*` directly inside `<root>/<domain>/` are ever deleted.

use chrono::NaiveDate;

use super::{Engine, Error};
use crate::engine::chains::period::{GroupBy, Period};
use crate::host;
use crate::host::safe_fs::{Dir, Kind};
use crate::paths::{self, BackupRoot};
use crate::selection::{DomainName, Selector};

#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub selectors: Vec<Selector>,
    pub root: BackupRoot,
    pub group_by: GroupBy,
    /// Past periods that survive besides the rule's own.
    pub keep: u32,
    pub dry_run: bool,
}

/// What was (or, in a dry run, would be) deleted for one domain.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub domain: String,
    pub deleted: Vec<String>,
    pub problems: Vec<String>,
}

/// The folder names among `names` that retention deletes on `today`.
pub fn doomed(names: &[String], group_by: GroupBy, today: NaiveDate, keep: u32) -> Vec<String> {
    let current = Period::containing(today, group_by);
    let past_middle = (today - current.start()).num_days() >= current.middle_days();
    // Past periods that stay: `keep`, plus the previous one until the middle is reached.
    let surviving = i64::from(keep) + if past_middle { 0 } else { 1 };
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| {
            Period::parse_folder(n, group_by)
                .map(|p| current.ordinal() - p.ordinal() > surviving)
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    out.sort();
    out
}

impl Engine {
    pub async fn prune(&self, request: &PruneRequest, uid: u32) -> Result<Vec<PruneReport>, Error> {
        if uid != 0 {
            paths::check_inside(request.root.as_path(), &self.config.backup_roots)?;
        }
        let domains = self
            .resolve_domains(&self.libvirt, &request.selectors)
            .await?;
        let _job = self
            .jobs
            .create(super::jobs::Operation::Prune, domains.clone(), uid)?;
        let today = chrono::Local::now().date_naive();
        let mut reports = Vec::new();
        for domain in &domains {
            reports.push(self.prune_domain(request, domain, today, uid));
        }
        Ok(reports)
    }

    /// Prunes one domain's folders under `root`; used by Prune and by Backup's `prune` option.
    pub fn prune_domain(
        &self,
        request: &PruneRequest,
        domain: &DomainName,
        today: NaiveDate,
        uid: u32,
    ) -> PruneReport {
        let dir = request.root.as_path().join(domain.as_str());
        let mut report = PruneReport {
            domain: domain.to_string(),
            ..Default::default()
        };
        if uid != 0 {
            if let Err(e) = paths::check_inside(&dir, &self.config.backup_roots) {
                report.problems.push(e.to_string());
                return report;
            }
        }
        // By handle: the domain folder is opened once without following links, and every
        // doomed folder is removed through it (a link inside is removed, never followed).
        let handle = match Dir::open_if_exists(&dir) {
            Ok(Some(h)) => h,
            Ok(None) => return report,
            Err(e) => {
                report.problems.push(host::Error::at(&dir, e).to_string());
                return report;
            }
        };
        let names: Vec<String> = match handle.entries() {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| e.kind == Kind::Dir)
                .map(|e| e.name)
                .collect(),
            Err(e) => {
                report.problems.push(format!("{}: {e}", dir.display()));
                return report;
            }
        };
        for name in doomed(&names, request.group_by, today, request.keep) {
            let path = dir.join(&name);
            if !request.dry_run {
                if let Err(e) = handle.remove_tree(&name, None) {
                    report.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
                tracing::info!(domain = %domain, folder = %path.display(), "pruned");
            }
            report.deleted.push(path.display().to_string());
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    const MONTHS: &[&str] = &[
        "vmsnap-backup-monthly-2024-01",
        "vmsnap-backup-monthly-2024-02",
        "vmsnap-backup-monthly-2024-02.1",
        "vmsnap-backup-monthly-2024-03",
        "vmsnap-backup-quarterly-2023-Q4",
        "notes",
    ];

    #[test]
    fn before_the_middle_the_previous_period_stays() {
        // The original: no prune on 03-10 or 03-14 …
        for day in [1, 10, 14, 15] {
            assert_eq!(
                doomed(&names(MONTHS), GroupBy::Month, date(2024, 3, day), 0),
                ["vmsnap-backup-monthly-2024-01"],
                "day {day}"
            );
        }
    }

    #[test]
    fn after_the_middle_only_the_current_period_remains() {
        // … and a prune from the 16th on, of every older folder of the grouping.
        assert_eq!(
            doomed(&names(MONTHS), GroupBy::Month, date(2024, 3, 16), 0),
            [
                "vmsnap-backup-monthly-2024-01",
                "vmsnap-backup-monthly-2024-02",
                "vmsnap-backup-monthly-2024-02.1"
            ]
        );
        assert_eq!(
            doomed(&names(MONTHS), GroupBy::Month, date(2024, 3, 20), 1),
            ["vmsnap-backup-monthly-2024-01"]
        );
    }

    #[test]
    fn other_groupings_and_strangers_are_never_touched() {
        let d = doomed(&names(MONTHS), GroupBy::Quarter, date(2024, 6, 30), 0);
        assert_eq!(d, ["vmsnap-backup-quarterly-2023-Q4"]);
        let none = doomed(
            &names(&["vmsnap-backup-monthly-2099-01"]),
            GroupBy::Month,
            date(2024, 3, 20),
            0,
        );
        assert!(none.is_empty(), "future folders are kept");
    }

    #[test]
    fn bi_annual_uses_calendar_halves() {
        let halves = names(&[
            "vmsnap-backup-bi-annually-2023-p2",
            "vmsnap-backup-bi-annually-2024-p1",
        ]);
        // 2024-06-29 is in p1: the previous half is 2023-p2, kept until 90 days into p1.
        assert!(doomed(&halves, GroupBy::BiAnnual, date(2024, 3, 30), 0).is_empty());
        assert_eq!(
            doomed(&halves, GroupBy::BiAnnual, date(2024, 3, 31), 0),
            ["vmsnap-backup-bi-annually-2023-p2"]
        );
        assert!(doomed(&halves, GroupBy::BiAnnual, date(2024, 6, 29), 1).is_empty());
    }
}
