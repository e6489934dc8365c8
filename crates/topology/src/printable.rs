//! Text from a topology file or a client, made safe to show: a name or a
//! `source` may hold ESC, CR, BEL or a bidirectional override, and printed
//! as it is, it would drive root's terminal or forge lines in the journal.
//! Such characters are shown as escapes (`\x1b`, `\u{202e}`) instead.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1, and the Unicode
/// controls that reorder or hide text) escaped, newlines and tabs too:
/// for one value shown on one line.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// Like [`printable`], but newlines and tabs are kept: for a whole message
/// or report whose lines were laid out on purpose.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !keep(c);
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if c.is_ascii() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// `text` cut to at most `max` bytes (not less than 64): the start and the
/// end are kept, and the middle gives way to `… (N bytes left out) …`. For
/// a message that quotes a value from a file or a client, which may be
/// megabytes long: what the message says of it (`… is not an IPv4
/// address`) is usually at its end.
pub fn shortened(text: &str, max: usize) -> Cow<'_, str> {
    let max = max.max(64);
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    // The marker takes at most 40 bytes (20 digits).
    let keep = max - 40;
    let mut head = keep * 2 / 3;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (keep - keep * 2 / 3);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes left out) …{}",
        &text[..head],
        tail - head,
        &text[tail..]
    ))
}

/// Whether showing `c` raw could act on a terminal or change how the
/// text around it reads.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators.
            | '\u{2028}' | '\u{2029}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(printable("seed.compute1 → ok"), Cow::Borrowed(_)));
        assert!(matches!(printable_lines("a\n\tb"), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("x\u{1b}[2Jy"), "x\\x1b[2Jy");
        assert_eq!(printable("a\rb\u{7}\u{7f}"), "a\\x0db\\x07\\x7f");
        assert_eq!(printable("a\nb\tc"), "a\\x0ab\\x09c");
        assert_eq!(printable("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn long_text_keeps_its_start_and_end() {
        assert!(matches!(shortened("short", 100), Cow::Borrowed("short")));
        let long = format!("address `{}` is not an IPv4 address", "é".repeat(500_000));
        let short = shortened(&long, 1024);
        assert!(short.len() <= 1024, "{}", short.len());
        assert!(short.starts_with("address `éé"), "{short}");
        assert!(short.ends_with("éé` is not an IPv4 address"), "{short}");
        assert!(short.contains("… (999"), "{short}");
        let (head, rest) = short.split_once("… (").unwrap();
        let left_out: usize = rest.split(' ').next().unwrap().parse().unwrap();
        let tail = rest.split_once(") …").unwrap().1;
        assert_eq!(head.len() + left_out + tail.len(), long.len());
    }

    #[test]
    fn lines_keep_newlines_and_tabs_only() {
        assert_eq!(
            printable_lines("one\n\ttwo\u{1b}]0;title\u{7}\r\n"),
            "one\n\ttwo\\x1b]0;title\\x07\\x0d\n"
        );
    }
}
