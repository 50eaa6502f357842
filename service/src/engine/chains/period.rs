//! Backup periods and their folder names.
//!
//! Backups are grouped into one folder per period, named exactly as the original VMSnap names
//! them, so existing backup trees keep working. Periods are calendar periods of the host's
//! local date (not "N days ago"), so daylight-saving shifts never move a boundary, and the
//! bi-annual halves are January–June and July–December (the original switched at day 180).

use chrono::{Datelike, NaiveDate};

/// How backups are grouped into folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    Month,
    Quarter,
    BiAnnual,
    Year,
}

impl GroupBy {
    /// The accepted spellings, exactly the original's.
    pub const NAMES: &'static [&'static str] = &["month", "quarter", "bi-annual", "year"];

    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "month" => Some(GroupBy::Month),
            "quarter" => Some(GroupBy::Quarter),
            "bi-annual" => Some(GroupBy::BiAnnual),
            "year" => Some(GroupBy::Year),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Month => "month",
            GroupBy::Quarter => "quarter",
            GroupBy::BiAnnual => "bi-annual",
            GroupBy::Year => "year",
        }
    }
}

/// One calendar period: its kind, year and index within the year (month 1–12, quarter 1–4,
/// half 1–2, or 1 for a year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub group_by: GroupBy,
    pub year: i32,
    pub index: u32,
}

impl Period {
    /// The period that contains `date`.
    pub fn containing(date: NaiveDate, group_by: GroupBy) -> Self {
        let month = date.month();
        let index = match group_by {
            GroupBy::Month => month,
            GroupBy::Quarter => (month - 1) / 3 + 1,
            GroupBy::BiAnnual => {
                if month <= 6 {
                    1
                } else {
                    2
                }
            }
            GroupBy::Year => 1,
        };
        Period {
            group_by,
            year: date.year(),
            index,
        }
    }

    /// The period that contains today's local date.
    pub fn current(group_by: GroupBy) -> Self {
        Period::containing(chrono::Local::now().date_naive(), group_by)
    }

    /// Periods of this grouping per year.
    fn per_year(group_by: GroupBy) -> i64 {
        match group_by {
            GroupBy::Month => 12,
            GroupBy::Quarter => 4,
            GroupBy::BiAnnual => 2,
            GroupBy::Year => 1,
        }
    }

    /// A running number, so that `a.ordinal() - b.ordinal()` counts periods between them.
    pub fn ordinal(&self) -> i64 {
        i64::from(self.year) * Self::per_year(self.group_by) + i64::from(self.index) - 1
    }

    /// The first day of the period.
    pub fn start(&self) -> NaiveDate {
        let month = match self.group_by {
            GroupBy::Month => self.index,
            GroupBy::Quarter => (self.index - 1) * 3 + 1,
            GroupBy::BiAnnual => (self.index - 1) * 6 + 1,
            GroupBy::Year => 1,
        };
        NaiveDate::from_ymd_opt(self.year, month, 1).expect("a valid first day")
    }

    /// Days after the start when the period counts as half over and the previous one may go:
    /// the original's 15, 45, 90 and 180.
    pub fn middle_days(&self) -> i64 {
        match self.group_by {
            GroupBy::Month => 15,
            GroupBy::Quarter => 45,
            GroupBy::BiAnnual => 90,
            GroupBy::Year => 180,
        }
    }

    /// Parses a folder name of this grouping (`vmsnap-backup-monthly-2024-03`, optionally with
    /// a chain suffix `.N`), `None` for anything else.
    pub fn parse_folder(name: &str, group_by: GroupBy) -> Option<Period> {
        let base = match name.rsplit_once('.') {
            Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => name,
        };
        let rest = base.strip_prefix("vmsnap-backup-")?;
        let (year, index) = match group_by {
            GroupBy::Month => {
                let (y, m) = rest.strip_prefix("monthly-")?.split_once('-')?;
                (y, m.parse::<u32>().ok().filter(|m| (1..=12).contains(m))?)
            }
            GroupBy::Quarter => {
                let (y, q) = rest.strip_prefix("quarterly-")?.split_once("-Q")?;
                (y, q.parse::<u32>().ok().filter(|q| (1..=4).contains(q))?)
            }
            GroupBy::BiAnnual => {
                let (y, p) = rest.strip_prefix("bi-annually-")?.split_once("-p")?;
                (y, p.parse::<u32>().ok().filter(|p| (1..=2).contains(p))?)
            }
            GroupBy::Year => (rest.strip_prefix("yearly-")?, 1),
        };
        if year.len() != 4 || !year.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let period = Period {
            group_by,
            year: year.parse().ok()?,
            index,
        };
        // Only the exact canonical spelling counts.
        (period.folder_name() == base).then_some(period)
    }

    /// The folder name, e.g. `vmsnap-backup-monthly-2024-03`.
    pub fn folder_name(&self) -> String {
        let y = self.year;
        let i = self.index;
        match self.group_by {
            GroupBy::Month => format!("vmsnap-backup-monthly-{y:04}-{i:02}"),
            GroupBy::Quarter => format!("vmsnap-backup-quarterly-{y:04}-Q{i}"),
            GroupBy::BiAnnual => format!("vmsnap-backup-bi-annually-{y:04}-p{i}"),
            GroupBy::Year => format!("vmsnap-backup-yearly-{y:04}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn folder_names_match_the_original() {
        let d = date(2024, 3, 15);
        let name = |g| Period::containing(d, g).folder_name();
        assert_eq!(name(GroupBy::Month), "vmsnap-backup-monthly-2024-03");
        assert_eq!(name(GroupBy::Quarter), "vmsnap-backup-quarterly-2024-Q1");
        assert_eq!(name(GroupBy::BiAnnual), "vmsnap-backup-bi-annually-2024-p1");
        assert_eq!(name(GroupBy::Year), "vmsnap-backup-yearly-2024");
    }

    #[test]
    fn halves_follow_the_calendar_not_day_180() {
        // Day 180 of 2024 is June 28: the original already called that p2.
        let half = |d| Period::containing(d, GroupBy::BiAnnual).index;
        assert_eq!(half(date(2024, 6, 28)), 1);
        assert_eq!(half(date(2024, 6, 30)), 1);
        assert_eq!(half(date(2024, 7, 1)), 2);
        assert_eq!(half(date(2024, 12, 31)), 2);
    }

    #[test]
    fn folder_names_parse_back_and_nothing_else_does() {
        for g in [
            GroupBy::Month,
            GroupBy::Quarter,
            GroupBy::BiAnnual,
            GroupBy::Year,
        ] {
            let p = Period::containing(date(2024, 8, 3), g);
            assert_eq!(Period::parse_folder(&p.folder_name(), g), Some(p));
            assert_eq!(
                Period::parse_folder(&format!("{}.2", p.folder_name()), g),
                Some(p)
            );
        }
        for bad in [
            "vmsnap-backup-monthly-2024-13",
            "vmsnap-backup-monthly-2024-3",
            "vmsnap-backup-quarterly-2024-Q1",
            "undefined",
            "vmsnap-backup-monthly-2024-03.x",
            "vmsnap-backup-monthly-24-03",
            "../vmsnap-backup-monthly-2024-03",
        ] {
            assert_eq!(Period::parse_folder(bad, GroupBy::Month), None, "{bad}");
        }
    }

    #[test]
    fn starts_and_ordinals() {
        let p = Period::containing(date(2024, 8, 3), GroupBy::BiAnnual);
        assert_eq!(p.start(), date(2024, 7, 1));
        let q = Period::containing(date(2025, 1, 3), GroupBy::BiAnnual);
        assert_eq!(q.ordinal() - p.ordinal(), 1);
        let m = Period::containing(date(2025, 1, 3), GroupBy::Month);
        assert_eq!(
            m.ordinal() - Period::containing(date(2024, 11, 30), GroupBy::Month).ordinal(),
            2
        );
    }

    #[test]
    fn quarter_boundaries() {
        let q = |m| Period::containing(date(2025, m, 1), GroupBy::Quarter).index;
        assert_eq!(
            (1..=12).map(q).collect::<Vec<_>>(),
            [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        );
    }

    #[test]
    fn group_by_accepts_only_the_original_words() {
        for w in GroupBy::NAMES {
            assert_eq!(GroupBy::parse(w).unwrap().as_str(), *w);
        }
        for bad in ["monthly", "Month", "", "undefined", "bi-annually"] {
            assert_eq!(GroupBy::parse(bad), None, "{bad}");
        }
    }
}
