//! Splitting a rule the way `iptables-save` quotes it.
//!
//! Only the jump target is ever needed (to tell our jumps in built-in chains
//! from other people's rules), but a comment such as `"… -j x"` must not be
//! mistaken for it, so the split honours `iptables-save`'s double quotes and
//! backslash escapes (xtables `xtables_save_string`).

/// The words of a rule specification, quotes removed.
pub(crate) fn words(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(current);
    }
    out
}

/// The chain or target a rule jumps or goes to (`-j X` / `-g X`).
pub(crate) fn target(rule: &str) -> Option<String> {
    let words = words(rule);
    words
        .iter()
        .position(|w| w == "-j" || w == "-g" || w == "--jump" || w == "--goto")
        .and_then(|i| words.get(i + 1).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            words("-s 1.2.3.4/32  -j RETURN"),
            ["-s", "1.2.3.4/32", "-j", "RETURN"]
        );
    }

    #[test]
    fn quoted_comment_is_one_word() {
        let rule = r#"-m comment --comment "say \"hi\" -j x" -j neutron-a"#;
        assert_eq!(
            words(rule),
            [
                "-m",
                "comment",
                "--comment",
                r#"say "hi" -j x"#,
                "-j",
                "neutron-a"
            ]
        );
        assert_eq!(target(rule).as_deref(), Some("neutron-a"));
    }

    #[test]
    fn target_of_goto_and_none() {
        assert_eq!(target("-g neutron-b").as_deref(), Some("neutron-b"));
        assert_eq!(target("-p tcp -m tcp --dport 22"), None);
    }
}
