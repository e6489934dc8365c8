//! One module per verb; each has its `Args` and one `exec()`.

use crate::BadInput;
use crate::client::Client;

pub mod capture;
pub mod check;
pub mod complete;
pub mod completions;
pub mod down;
pub mod exec;
pub mod generate;
pub mod graph;
pub mod man;
pub mod node;
pub mod schema;
pub mod status;
pub mod trace;
pub mod ui;
pub mod up;
pub mod validate;

/// Percent-encodes one path segment (lab and target names are plain words,
/// but a typo must not change the route).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The lab a command means when it names none: the only one running.
/// With no lab running that is a failure (exit 1); with several it is the
/// user's to say which (exit 2), and the message lists them and shows how
/// (`usage`, e.g. `ovslab check LAB`).
pub fn lab_or_only(client: &Client, given: Option<String>, usage: &str) -> anyhow::Result<String> {
    if let Some(lab) = given {
        return Ok(lab);
    }
    let labs: Vec<String> = client.get("/v1/labs")?;
    only_lab(&labs, usage)
}

/// No lab runs, and the command named none.
#[derive(Debug)]
pub struct NoLabRunning;

impl std::fmt::Display for NoLabRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no lab is running: bring one up with `ovslab up [TOPOLOGY]`, or name one")
    }
}

impl std::error::Error for NoLabRunning {}

/// [`lab_or_only`] over the daemon's list of labs.
pub fn only_lab(labs: &[String], usage: &str) -> anyhow::Result<String> {
    match labs {
        [one] => Ok(one.clone()),
        [] => Err(NoLabRunning.into()),
        several => Err(BadInput(format!(
            "{} labs are running ({}): say which, as in `{usage}`",
            several.len(),
            ovslab_topology::printable(&several.join(", "))
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_only_lab_is_meant_and_several_are_listed() {
        use super::only_lab;
        assert_eq!(only_lab(&["a".into()], "x").unwrap(), "a");
        let none = only_lab(&[], "ovslab check LAB").unwrap_err();
        assert!(none.to_string().starts_with("no lab is running"), "{none}");
        assert!(!none.is::<crate::BadInput>());
        let several = only_lab(&["a".into(), "b".into()], "ovslab check LAB").unwrap_err();
        assert!(several.is::<crate::BadInput>(), "exit status 2");
        assert_eq!(
            several.to_string(),
            "2 labs are running (a, b): say which, as in `ovslab check LAB`"
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("seed-2.x_y"), "seed-2.x_y");
        assert_eq!(super::segment("a/b c"), "a%2Fb%20c");
    }
}
