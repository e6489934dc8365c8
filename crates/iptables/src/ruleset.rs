//! The rules we own in one namespace, as plain data.
//!
//! A [`Ruleset`] holds, per table, our own chains with their rules and the
//! jumps we need in built-in chains. Rules are kept as the exact text
//! `iptables-save` prints after `-A <chain> `: the diff compares text, so a
//! rule written in any other spelling would look changed on every pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::IptablesError;
use crate::tokens;

/// Every chain whose name starts with this is ours: created, rewritten and
/// deleted by [`apply`](fn@crate::apply); everything else is left alone.
/// Neutron's agents share it (`neutron-l3-agent-*`, `neutron-openvswi-*`,
/// the unwrapped `neutron-filter-top` and `neutron-postrouting-bottom`).
pub const OWNED_PREFIX: &str = "neutron-";

/// The longest chain name iptables accepts (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_LEN: usize = 28;

/// An iptables table we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Nat,
    Mangle,
    Raw,
}

impl Table {
    /// The order tables are rendered in.
    pub const ALL: [Table; 4] = [Table::Filter, Table::Nat, Table::Mangle, Table::Raw];

    /// The name `iptables -t` and `*table` use.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
        }
    }

    /// The table with this name, if it is one we write to.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Built-in chains in the order `iptables-save` prints them.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            Table::Raw => &["PREROUTING", "OUTPUT"],
        }
    }

    /// True for one of this table's built-in chains.
    pub fn is_builtin(self, chain: &str) -> bool {
        self.builtin_chains().contains(&chain)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One of our chains and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    /// Rule texts as `iptables-save` prints them after `-A <name> `.
    pub rules: Vec<String>,
}

/// A rule we need in a built-in chain (always a jump to one of our chains).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuiltinRule {
    pub chain: String,
    pub rule: String,
}

/// Our part of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TableRules {
    chains: Vec<Chain>,
    builtin: Vec<BuiltinRule>,
}

impl TableRules {
    /// Our chains in the order they were declared.
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    /// Our rules in built-in chains, in the order they must appear.
    pub fn builtin_rules(&self) -> &[BuiltinRule] {
        &self.builtin
    }

    /// Our rules in built-in chain `chain`, in order.
    pub fn builtin_rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.builtin
            .iter()
            .filter(move |b| b.chain == chain)
            .map(|b| b.rule.as_str())
    }

    /// The chain named `name`, if it is one of ours here.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.builtin.is_empty()
    }

    /// Our chains sorted by name, the order `iptables-save` lists them in
    /// (it sorts user chains with `strcmp`, which is Rust's `str` order).
    fn sorted_chains(&self) -> Vec<&Chain> {
        let mut chains: Vec<&Chain> = self.chains.iter().collect();
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        chains
    }
}

/// Everything we own in one namespace's iptables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Ruleset {
    tables: BTreeMap<Table, TableRules>,
}

impl Ruleset {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares our chain `chain` in `table` (a no-op when it exists), so
    /// that it exists even without rules.
    pub fn add_chain(&mut self, table: Table, chain: &str) {
        let t = self.tables.entry(table).or_default();
        if t.chain(chain).is_none() {
            t.chains.push(Chain {
                name: chain.to_string(),
                rules: Vec::new(),
            });
        }
    }

    /// Appends `rule` to `chain`: to our jumps when `chain` is built-in,
    /// otherwise to our chain of that name, declaring it if needed.
    pub fn append(&mut self, table: Table, chain: &str, rule: impl Into<String>) {
        let rule = rule.into();
        if table.is_builtin(chain) {
            self.tables
                .entry(table)
                .or_default()
                .builtin
                .push(BuiltinRule {
                    chain: chain.to_string(),
                    rule,
                });
            return;
        }
        self.add_chain(table, chain);
        let t = self.tables.entry(table).or_default();
        if let Some(c) = t.chains.iter_mut().find(|c| c.name == chain) {
            c.rules.push(rule);
        }
    }

    /// Our part of `table`, if we have anything there.
    pub fn table(&self, table: Table) -> Option<&TableRules> {
        self.tables.get(&table).filter(|t| !t.is_empty())
    }

    /// The tables we have something in, in [`Table::ALL`] order.
    pub fn tables(&self) -> impl Iterator<Item = (Table, &TableRules)> {
        Table::ALL
            .into_iter()
            .filter_map(|t| self.table(t).map(|rules| (t, rules)))
    }

    /// The rules of our chain `chain` in `table`.
    pub fn chain(&self, table: Table, chain: &str) -> Option<&[String]> {
        self.table(table)?.chain(chain).map(|c| c.rules.as_slice())
    }

    /// Checks that applying this ruleset converges and stays within what
    /// we own: chain names carry [`OWNED_PREFIX`] and fit iptables' limit,
    /// rules are single non-empty lines, and every rule in a built-in chain
    /// jumps to one of our chains in the same table (that is how
    /// [`apply`](fn@crate::apply) recognises them later).
    pub fn validate(&self) -> Result<(), IptablesError> {
        for (table, rules) in self.tables() {
            let invalid = |chain: &str, reason: String| IptablesError::Invalid {
                table: table.name(),
                chain: chain.to_string(),
                reason,
            };
            for chain in &rules.chains {
                if !chain.name.starts_with(OWNED_PREFIX) {
                    return Err(invalid(
                        &chain.name,
                        format!("not ours: chain names must start with `{OWNED_PREFIX}`"),
                    ));
                }
                if chain.name.len() > MAX_CHAIN_LEN
                    || chain.name.chars().any(|c| c.is_whitespace() || c == '"')
                {
                    return Err(invalid(
                        &chain.name,
                        format!(
                            "not a valid chain name (at most {MAX_CHAIN_LEN} characters, no blanks)"
                        ),
                    ));
                }
                for rule in &chain.rules {
                    check_rule_text(rule).map_err(|r| invalid(&chain.name, r))?;
                }
            }
            for b in &rules.builtin {
                check_rule_text(&b.rule).map_err(|r| invalid(&b.chain, r))?;
                match tokens::target(&b.rule) {
                    Some(t) if rules.chain(&t).is_some() => {}
                    _ => {
                        return Err(invalid(
                            &b.chain,
                            format!(
                                "rule `{}` in a built-in chain must jump to one of our chains",
                                b.rule
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// What `iptables-save` shows for our part: per table our chain
    /// declarations and rules sorted by chain name, our jumps in built-in
    /// chains first (in the table's built-in order). Built-in chain
    /// declarations and the `#` lines are left out, as they are not ours.
    pub fn render_save_like(&self) -> String {
        let mut out = String::new();
        for (table, rules) in self.tables() {
            let _ = writeln!(out, "*{}", table.name());
            let sorted = rules.sorted_chains();
            for chain in &sorted {
                let _ = writeln!(out, ":{} - [0:0]", chain.name);
            }
            for builtin in table.builtin_chains() {
                for rule in rules.builtin_rules_of(builtin) {
                    let _ = writeln!(out, "-A {builtin} {rule}");
                }
            }
            for chain in &sorted {
                for rule in &chain.rules {
                    let _ = writeln!(out, "-A {} {rule}", chain.name);
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Input for `iptables-restore --noflush -w` that installs this
    /// ruleset in a namespace holding none of it yet. [`apply`](fn@crate::apply)
    /// sends a smaller batch computed against what is there.
    pub fn render_restore(&self) -> String {
        crate::diff(&crate::Saved::default(), self)
            .restore
            .unwrap_or_default()
    }
}

/// A rule must be one non-empty line: it is pasted into `iptables-restore`
/// input, where a newline would start another command.
fn check_rule_text(rule: &str) -> Result<(), String> {
    if rule.trim().is_empty() {
        return Err("empty rule".to_string());
    }
    if rule.contains(['\n', '\r']) {
        return Err(format!(
            "rule `{}` spans several lines",
            rule.escape_debug()
        ));
    }
    if rule != rule.trim() {
        return Err(format!(
            "rule `{rule}` has leading or trailing blanks, which iptables-save would not print"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ruleset {
        let mut r = Ruleset::new();
        r.append(Table::Nat, "POSTROUTING", "-j neutron-b");
        r.append(Table::Nat, "PREROUTING", "-j neutron-a");
        r.append(Table::Nat, "neutron-b", "-j ACCEPT");
        r.add_chain(Table::Nat, "neutron-a");
        r
    }

    #[test]
    fn save_like_sorts_chains_and_puts_builtins_first_in_table_order() {
        assert_eq!(
            sample().render_save_like(),
            "*nat\n\
             :neutron-a - [0:0]\n\
             :neutron-b - [0:0]\n\
             -A PREROUTING -j neutron-a\n\
             -A POSTROUTING -j neutron-b\n\
             -A neutron-b -j ACCEPT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn validate_accepts_sample() {
        sample().validate().expect("valid");
    }

    #[test]
    fn validate_refuses_foreign_chain() {
        let mut r = Ruleset::new();
        r.append(Table::Filter, "mine", "-j DROP");
        let err = r.validate().expect_err("foreign chain");
        assert!(err.to_string().contains("not ours"), "{err}");
    }

    #[test]
    fn validate_refuses_builtin_rule_not_jumping_to_ours() {
        let mut r = Ruleset::new();
        r.append(Table::Filter, "FORWARD", "-j ACCEPT");
        let err = r.validate().expect_err("builtin accept");
        assert!(err.to_string().contains("FORWARD"), "{err}");
    }

    #[test]
    fn validate_refuses_multi_line_rule() {
        let mut r = Ruleset::new();
        r.append(Table::Filter, "neutron-x", "-j DROP\n-A INPUT -j ACCEPT");
        assert!(r.validate().is_err());
    }

    #[test]
    fn validate_refuses_long_chain_name() {
        let mut r = Ruleset::new();
        r.add_chain(Table::Raw, "neutron-openvswi-abcdefghijklm");
        assert!(r.validate().is_err());
    }
}
