//! Showing guest text on a terminal. Everything the guest writes (console
//! output, agent error messages) is hostile: an escape sequence in it could
//! move the cursor, rewrite what the operator sees, set the window title or
//! answer back into the terminal. [`Escaped`] displays such text with its
//! control characters spelled out (`\x1b`, `\r`, `\u{9b}`), so it can be
//! printed as it is.
//!
//! Escaped: C0 controls (tab and carriage return included), DEL, C1 controls,
//! and the Unicode bidirectional overrides and isolates (which reorder what a
//! terminal shows). Newlines stay in [`Escaped::text`] (multi-line tails) and
//! are escaped in [`Escaped::line`] (one-line messages).

use std::fmt::{self, Write as _};

/// Guest text, displayed with its control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    keep_newlines: bool,
}

impl<'a> Escaped<'a> {
    /// Multi-line text: newlines are kept, every other control character is
    /// escaped.
    pub fn text(text: &'a str) -> Self {
        Escaped {
            text,
            keep_newlines: true,
        }
    }

    /// A one-line message: newlines are escaped too.
    pub fn line(text: &'a str) -> Self {
        Escaped {
            text,
            keep_newlines: false,
        }
    }
}

/// Whether `c` must not reach a terminal as it is.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.text;
        while let Some(at) =
            rest.find(|c: char| is_unsafe_char(c) && !(self.keep_newlines && c == '\n'))
        {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` with its control characters escaped, newlines kept.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let _ = write!(out, "{}", Escaped::text(text));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_spelled_out() {
        let hostile = "ok\x1b[2J\x1b]0;title\x07\rover\tx\x7f\u{9b}31m\u{202e}txt\n2nd line\n";
        assert_eq!(
            escape_text(hostile),
            "ok\\x1b[2J\\x1b]0;title\\x07\\rover\\tx\\x7f\\u{9b}31m\\u{202e}txt\n2nd line\n"
        );
        assert_eq!(
            Escaped::line("a\nb\x00").to_string(),
            "a\\nb\\x00",
            "one-line messages lose their newlines"
        );
        // Printable text, accents and backslashes pass unchanged.
        let plain = "café \\x1b 日本 [ok]";
        assert_eq!(escape_text(plain), plain);
        assert_eq!(escape_text(""), "");
        // Nothing unsafe survives, whatever the input.
        let all: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        assert!(!escape_text(&all)
            .chars()
            .any(|c| is_unsafe_char(c) && c != '\n'));
    }
}
