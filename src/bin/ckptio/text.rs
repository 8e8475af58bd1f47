//! Text fit for a terminal: names and messages come from files and servers, and a control
//! character in them (an escape sequence, a carriage return) must not rewrite what the user
//! sees. JSON output escapes its own strings and does not go through here.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1) shown as an escape: `\x1b`, `\r`.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `n` and `noun`, the noun plural unless `n` is one: `1 tensor`, `3 tensors`, `0 objects`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `println!` of one line made printable, returning an error instead of panicking when
/// stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        writeln!(std::io::stdout().lock(), "{}", $crate::text::printable(&line))?
    }};
}

/// `println!` of JSON, whose strings escape their own control characters.
macro_rules! out_json {
    ($value:expr) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), "{}", $value)?
    }};
}

/// `eprintln!` of one line made printable.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        eprintln!("{}", $crate::text::printable(&line));
    }};
}

pub(crate) use {out, out_json, say};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_of_one_is_singular_and_any_other_plural() {
        assert_eq!(count(1, "tensor"), "1 tensor");
        assert_eq!(count(0, "object"), "0 objects");
        assert_eq!(count(21, "tensor"), "21 tensors");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain.weight"), "plain.weight");
        assert_eq!(
            printable("w\u{1b}[2K\rforged\u{7f}\u{9b}"),
            "w\\u{1b}[2K\\rforged\\u{7f}\\u{9b}"
        );
        assert_eq!(printable("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable("naïve ✓"), "naïve ✓", "printable Unicode stays");
    }
}
