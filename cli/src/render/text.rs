//! The original VMSnap's text layout, plus the state and the reasons when something is wrong.

use std::io::Write;

use anstyle::{AnsiColor, Color, Style};
use vmsnap_dbus::{DomainStatus, OverallStatus};

use super::size;

const NAME: Style = Style::new()
    .bold()
    .fg_color(Some(Color::Ansi(AnsiColor::BrightMagenta)));
const GOOD: Style = Style::new()
    .bold()
    .fg_color(Some(Color::Ansi(AnsiColor::BrightGreen)));
const BAD: Style = Style::new()
    .bold()
    .fg_color(Some(Color::Ansi(AnsiColor::BrightYellow)));

/// Writes the report; colours are stripped by the caller's stream when it is not a terminal.
pub fn write_status(
    out: &mut dyn Write,
    report: &[DomainStatus],
    pretty: bool,
    verbose: bool,
) -> std::io::Result<()> {
    let size = |b: u64| {
        if pretty {
            size::pretty(b)
        } else {
            b.to_string()
        }
    };
    for d in report {
        let n = &d.name;
        writeln!(out, "Status for {NAME}{n}{NAME:#}:")?;
        let overall = d.overall();
        let style = if overall == OverallStatus::Ok {
            GOOD
        } else {
            BAD
        };
        writeln!(out, "  Overall status: {style}{}{style:#}", overall.word())?;
        writeln!(out, "  State: {}", d.state)?;
        if let Some(error) = &d.error {
            writeln!(out, "  Error: {error}")?;
        }
        if !d.problems.is_empty() {
            writeln!(out, "  Problems:")?;
            for p in &d.problems {
                writeln!(out, "    {p}")?;
            }
        }
        if d.checkpoints.is_empty() {
            writeln!(out, "  No checkpoints found for {n}")?;
        } else {
            writeln!(out, "  Checkpoints found for {n}:")?;
            for c in &d.checkpoints {
                writeln!(out, "    {c}")?;
            }
        }
        if d.disks.is_empty() {
            writeln!(out, "  No eligible disks found for {n}")?;
        } else {
            writeln!(out, "  Eligible disks found for {n}:")?;
        }
        for disk in &d.disks {
            writeln!(out, "    {}", disk.disk)?;
            if verbose {
                writeln!(out, "      Path: {}", disk.path)?;
            }
            writeln!(out, "      Virtual size: {}", size(disk.virtual_size))?;
            writeln!(out, "      Actual size: {}", size(disk.actual_size))?;
            if let Some(changed) = disk.changed_since_checkpoint {
                writeln!(
                    out,
                    "      Changed since latest checkpoint: {}",
                    size(changed)
                )?;
            }
            if disk.bitmaps.is_empty() {
                writeln!(out, "      No bitmaps found for {}", disk.disk)?;
                continue;
            }
            writeln!(out, "      Bitmaps found for {}:", disk.disk)?;
            for b in &disk.bitmap_details {
                let mut line = format!("          {}", b.name);
                if verbose {
                    if let Some(dirty) = b.dirty_bytes {
                        line.push_str(&format!(" (dirty: {})", size(dirty)));
                    }
                    if b.inconsistent {
                        line.push_str(" (inconsistent)");
                    }
                }
                writeln!(out, "{line}")?;
            }
        }
        if verbose && !d.skipped_disks.is_empty() {
            writeln!(out, "  Skipped disks for {n}:")?;
            for s in &d.skipped_disks {
                writeln!(out, "    {}: {}", s.disk, s.reason)?;
            }
        }
        if let Some(stats) = &d.backup_dir_stats {
            writeln!(out, "  Backup directory stats for {n}:")?;
            writeln!(out, "    Path: {}", stats.path)?;
            writeln!(out, "    Total files: {}", stats.total_files)?;
            writeln!(out, "    Total size: {}", size(stats.total_size))?;
            writeln!(out, "    Checkpoints: {}", stats.checkpoints)?;
        }
    }
    Ok(())
}
