//! Strings from a guest, made safe for a terminal.
//!
//! A guest names its own files, labels and link targets, and a name with an escape sequence
//! in it would retitle the window, clear the screen or recolour what follows when printed
//! raw; a newline in a name would print as two entries. Every such string is shown through
//! [`shown`] in text output: control characters (C0, DEL, C1) become visible escapes (`\n`,
//! `\t`, `\x1b`, `\u{9b}`), as do the Unicode characters that reorder text (bidi overrides
//! and isolates), so what is printed never acts on the terminal. Guest names already come in
//! the service's wire form (`\xNN` for bytes that are not text, `\\` for a backslash), which
//! has no control characters: it is printed as it is, so that what a user sees is what they
//! type back to `ls` or `get`. Machine output (JSON) carries the exact strings: its encoder
//! escapes control characters.

use std::borrow::Cow;
use std::fmt::Write;

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character that could act on a terminal written as an escape.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_guest_names_reaches_the_terminal_raw() {
        assert!(matches!(shown("report.odt"), Cow::Borrowed(_)));
        assert_eq!(shown("ünïcode ok"), "ünïcode ok");
        assert_eq!(shown("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(shown("two\nlines"), "two\\nlines");
        assert_eq!(shown("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(shown("a\u{202e}fdp.exe"), "a\\u{202e}fdp.exe");
        // The wire form passes as it is.
        assert_eq!(shown("\\xff\\xfe-dir"), "\\xff\\xfe-dir");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = shown(&c.to_string()).into_owned();
            assert!(!out.chars().any(|o| o.is_control()), "{c:?} -> {out:?}");
        }
    }
}
