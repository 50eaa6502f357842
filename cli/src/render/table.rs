//! Aligned columns for overviews, like `virsh list` and `systemctl list-units`.
//!
//! Cells are measured without their styling, so colour never shifts a column; the styles
//! themselves are stripped by anstream when stdout is not a terminal or `NO_COLOR` is set.

use std::io::Write;

use anstyle::Style;

/// One cell: its text and how it is drawn on a terminal.
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            style: Style::new(),
        }
    }

    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell {
            text: text.into(),
            style,
        }
    }
}

/// Writes `header` and `rows` with every column as wide as its widest cell, two spaces apart.
/// Columns listed in `right` are right-aligned (numbers and sizes).
pub fn write(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<Cell>],
    right: &[usize],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let bold = Style::new().bold();
    let header: Vec<Cell> = header.iter().map(|h| Cell::styled(*h, bold)).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.text.chars().count());
            let last = i + 1 == row.len();
            let (style, text) = (cell.style, &cell.text);
            if right.contains(&i) {
                line.push_str(&format!("{pad}{style}{text}{style:#}"));
            } else if last {
                line.push_str(&format!("{style}{text}{style:#}"));
            } else {
                line.push_str(&format!("{style}{text}{style:#}{pad}"));
            }
            if !last {
                line.push_str("  ");
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_whatever_the_styles() {
        let red = Style::new().fg_color(Some(anstyle::AnsiColor::Red.into()));
        let rows = vec![
            vec![
                Cell::plain("web1"),
                Cell::styled("OK", red),
                Cell::plain("3"),
            ],
            vec![
                Cell::plain("database"),
                Cell::plain("INCONSISTENT"),
                Cell::plain("12"),
            ],
        ];
        let mut out = Vec::new();
        write(&mut out, &["DOMAIN", "STATUS", "N"], &rows, &[2]).unwrap();
        let text = anstream::adapter::strip_str(std::str::from_utf8(&out).unwrap()).to_string();
        assert_eq!(
            text,
            "DOMAIN    STATUS         N\n\
             web1      OK             3\n\
             database  INCONSISTENT  12\n"
        );
    }
}
