//! Text meant for a terminal, built line by line.
//!
//! Names come from manifests, from an agent's JSON and from the wire; a name
//! holding a newline or an escape sequence could forge a line or rewrite the
//! screen. Whatever a line holds is data, so its control characters (and the
//! bidirectional-text controls that reorder what is shown) are written as
//! visible escapes (`\n`, `\u{1b}`); only [`TerminalText::line`] ends a line.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

#[derive(Debug, Default)]
pub struct TerminalText {
    text: String,
}

impl TerminalText {
    /// One line: `args` with its control characters escaped, then a newline.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        let start = self.text.len();
        let _ = self.text.write_fmt(args);
        if let Cow::Owned(escaped) = escape(&self.text[start..]) {
            self.text.truncate(start);
            self.text.push_str(&escaped);
        }
        self.text.push('\n');
    }

    pub fn blank(&mut self) {
        self.text.push('\n');
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

/// `text` with control and bidirectional-override characters escaped;
/// borrowed when there are none.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.extend(c.escape_default()),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        let table = [
            ("plain name-1.default", "plain name-1.default"),
            ("two\nlines", "two\\nlines"),
            ("back\rover", "back\\rover"),
            ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
            ("bell\u{7}", "bell\\u{7}"),
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("rtl\u{202e}txt", "rtl\\u{202e}txt"),
            ("unicode ünïcødé ✓", "unicode ünïcødé ✓"),
        ];
        for (text, shown) in table {
            assert_eq!(escape(text), shown, "{text:?}");
        }
    }

    #[test]
    fn only_line_ends_a_line() {
        let mut out = TerminalText::default();
        out.line(format_args!("pod {}", "evil\nerror [IST0101] forged"));
        out.blank();
        out.line(format_args!("next"));
        assert_eq!(
            out.into_string(),
            "pod evil\\nerror [IST0101] forged\n\nnext\n"
        );
    }
}
