//! `list`: one line per domain, the overview `status` is too long for on a host with fifty
//! guests. Status gives state, verdict, checkpoints and changes; with `--output`, ListBackups
//! gives each domain's live chain.

use anstyle::{AnsiColor, Color, Style};
use serde_json::{json, Value};
use vmsnap_dbus::{BackupChain, DomainStatus, ListOptions, OverallStatus, StatusOptions};

use crate::args::ListArgs;
use crate::render::size::pretty;
use crate::render::table::{self, Cell};
use crate::{domains, exit, render, restore, status, Context, Failure};

const GOOD: Style = Style::new().fg_color(Some(Color::Ansi(AnsiColor::Green)));
const BAD: Style = Style::new()
    .bold()
    .fg_color(Some(Color::Ansi(AnsiColor::Red)));

/// One domain's line.
struct Line<'a> {
    status: &'a DomainStatus,
    /// The live chain, when a backup root was given and the domain has one.
    live: Option<&'a BackupChain>,
}

impl Line<'_> {
    /// Bytes written since the latest checkpoint over all disks; `None` when no disk says.
    fn changed(&self) -> Option<u64> {
        let known: Vec<u64> = self
            .status
            .disks
            .iter()
            .filter_map(|d| d.changed_since_checkpoint)
            .collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }

    fn last_backup(&self) -> Option<u64> {
        self.live?.points.iter().filter_map(|p| p.time).max()
    }

    fn verdict(&self) -> &'static str {
        if self.status.error.is_some() {
            "ERROR"
        } else {
            self.status.overall().word()
        }
    }
}

pub async fn list(context: &Context, args: &ListArgs) -> Result<u8, Failure> {
    let names = domains(&args.selection, false)?;
    let options = StatusOptions {
        output: None,
        group_by: args.period.group_by.clone(),
        connect: args.libvirt.connect.clone(),
        deep: None,
    };
    let report = status::ask(context, &names, &options).await?;
    let chains = match &args.output {
        Some(output) => {
            let options = ListOptions {
                output: Some(output.clone()),
                connect: args.libvirt.connect.clone(),
            };
            // The domains Status found, so a glob means the same set in both answers.
            let found: Vec<String> = report.iter().map(|d| d.name.clone()).collect();
            if found.is_empty() {
                Vec::new()
            } else {
                restore::chains(context, &found, &options).await?
            }
        }
        None => Vec::new(),
    };
    let lines: Vec<Line> = report
        .iter()
        .map(|status| Line {
            status,
            live: chains.iter().find(|c| c.live && c.domain == status.name),
        })
        .collect();
    let with_chains = args.output.is_some();
    let printed = if context.format.json || context.format.yaml || context.format.machine {
        render::print_document(&document(&lines, with_chains), &context.format)
    } else {
        write_table(&lines, with_chains, context.format.verbose)
    };
    printed.map_err(|e| Failure::new(exit::FAILURE, format!("cannot write the overview: {e}")))?;
    status::unqueried(&report)
}

fn document(lines: &[Line], with_chains: bool) -> Value {
    Value::Array(
        lines
            .iter()
            .map(|l| {
                let s = l.status;
                let mut doc = json!({
                    "domain": s.name, "state": s.state, "status": l.verdict(),
                    "overallStatus": s.overall_status, "checkpoints": s.checkpoints.len(),
                    "changedBytes": l.changed(), "problems": s.problems, "error": s.error,
                });
                if with_chains {
                    doc["liveChain"] = match l.live {
                        Some(c) => json!({"folder": c.folder, "lastBackup": l.last_backup(),
                            "points": c.points.len(), "bytes": c.bytes,
                            "compressed": c.compressed}),
                        None => Value::Null,
                    };
                }
                doc
            })
            .collect(),
    )
}

fn write_table(lines: &[Line], with_chains: bool, verbose: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = anstream::stdout().lock();
    if lines.is_empty() {
        writeln!(out, "No domains.")?;
        return out.flush();
    }
    let mut header = vec!["DOMAIN", "STATE", "STATUS", "CHECKPOINTS", "CHANGED"];
    if with_chains {
        header.extend(["LAST BACKUP", "POINTS", "CHAIN SIZE"]);
    }
    let rows: Vec<Vec<Cell>> = lines
        .iter()
        .map(|l| {
            let good = l.status.error.is_none() && l.status.overall() == OverallStatus::Ok;
            let mut row = vec![
                Cell::plain(&l.status.name),
                Cell::plain(&l.status.state),
                Cell::styled(l.verdict(), if good { GOOD } else { BAD }),
                Cell::plain(l.status.checkpoints.len().to_string()),
                Cell::plain(l.changed().map(pretty).unwrap_or_else(|| "-".into())),
            ];
            if with_chains {
                let when = l
                    .last_backup()
                    .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                    .map(|t| {
                        t.with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M")
                            .to_string()
                    });
                row.extend([
                    Cell::plain(when.unwrap_or_else(|| "-".into())),
                    Cell::plain(l.live.map_or("-".into(), |c| c.points.len().to_string())),
                    Cell::plain(l.live.map_or("-".into(), |c| pretty(c.bytes))),
                ]);
            }
            row
        })
        .collect();
    let right = if with_chains {
        vec![3, 4, 6, 7]
    } else {
        vec![3, 4]
    };
    table::write(&mut out, &header, &rows, &right)?;
    // The reasons behind a verdict that is not OK: all of them with -v, a pointer otherwise.
    let troubled: Vec<&Line> = lines
        .iter()
        .filter(|l| l.status.error.is_some() || !l.status.problems.is_empty())
        .collect();
    if verbose {
        for l in &troubled {
            for p in l.status.error.iter().chain(&l.status.problems) {
                writeln!(out, "{}: {p}", l.status.name)?;
            }
        }
    } else if !troubled.is_empty() {
        writeln!(
            out,
            "\n{} of {} not OK: `vmsnapctl list -v` or `vmsnapctl status DOMAIN` says why.",
            troubled.len(),
            lines.len()
        )?;
    }
    out.flush()
}
