//! Colour, only where it helps and is wanted: on a terminal, and never
//! when `NO_COLOR` is set to anything but the empty string
//! (<https://no-color.org>). Piped or redirected output is plain text.

use std::io::IsTerminal;

/// Whether to colour, decided once per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    colour: bool,
}

impl Style {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset
    /// or empty.
    pub fn for_stdout() -> Self {
        Style {
            colour: wants_colour(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        }
    }

    /// No colour at all.
    #[cfg(test)]
    pub fn plain() -> Self {
        Style { colour: false }
    }

    /// Green: a check that passed, a healthy lab.
    pub fn good(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Bold red: a failure.
    pub fn bad(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    fn paint(&self, sgr: &str, text: &str) -> String {
        if self.colour {
            format!("\u{1b}[{sgr}m{text}\u{1b}[0m")
        } else {
            text.to_string()
        }
    }
}

/// Whether standard output gets colour.
fn wants_colour(terminal: bool, no_colour: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_colour.is_none_or(|v| v.is_empty())
}

/// Whether a person watches standard error (progress goes there).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some("".as_ref())));
        assert!(!wants_colour(true, Some("1".as_ref())));
        assert!(!wants_colour(false, None));
        assert_eq!(Style::plain().bad("FAIL"), "FAIL");
        assert_eq!(
            Style { colour: true }.good("PASS"),
            "\u{1b}[32mPASS\u{1b}[0m"
        );
    }
}
