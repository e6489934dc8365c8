//! `iptables-save` output, parsed.
//!
//! The format: `*table`, then `:chain POLICY [packets:bytes]` lines (policy
//! `-` for user chains), then `-A chain spec` lines (prefixed with
//! `[packets:bytes]` under `-c`), then `COMMIT`; `#` lines are comments.

use crate::ruleset::{OWNED_PREFIX, Ruleset, Table};
use crate::{IptablesError, tokens};

/// All tables of one namespace as `iptables-save` printed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub tables: Vec<SavedTable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTable {
    pub name: String,
    /// In the order printed (built-in chains first, then user chains sorted).
    pub chains: Vec<SavedChain>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedChain {
    pub name: String,
    /// `Some("ACCEPT")` etc. for a built-in chain, `None` for a user chain.
    pub policy: Option<String>,
    pub rules: Vec<SavedRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// Everything after `-A <chain> `.
    pub spec: String,
    /// `(packets, bytes)` when saved with `-c`.
    pub counters: Option<(u64, u64)>,
}

impl Saved {
    /// Parses `iptables-save` (or `iptables-save -c`) output; `origin` goes
    /// into error messages (e.g. "namespace qrouter-…").
    pub fn parse(text: &str, origin: &str) -> Result<Saved, IptablesError> {
        let mut saved = Saved::default();
        let mut current: Option<SavedTable> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            let err = |reason: &'static str| IptablesError::Parse {
                origin: origin.to_string(),
                line: index + 1,
                reason,
                text: line.to_string(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if current.is_some() {
                    return Err(err("table starts before the previous one's COMMIT"));
                }
                current = Some(SavedTable {
                    name: name.to_string(),
                    chains: Vec::new(),
                });
                continue;
            }
            let Some(table) = current.as_mut() else {
                return Err(err("line outside a table"));
            };
            if line == "COMMIT" {
                saved.tables.extend(current.take());
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                    return Err(err("chain declaration without a policy"));
                };
                table.chains.push(SavedChain {
                    name: name.to_string(),
                    policy: (policy != "-").then(|| policy.to_string()),
                    rules: Vec::new(),
                });
                continue;
            }
            let (counters, rest) = split_counters(line).ok_or_else(|| err("bad counters"))?;
            let Some(rest) = rest.strip_prefix("-A ") else {
                return Err(err("expected `-A <chain> …`"));
            };
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(c) = table.chains.iter_mut().find(|c| c.name == chain) else {
                return Err(err("rule for a chain that was not declared"));
            };
            c.rules.push(SavedRule {
                spec: spec.trim().to_string(),
                counters,
            });
        }
        if current.is_some() {
            return Err(IptablesError::Parse {
                origin: origin.to_string(),
                line: text.lines().count(),
                reason: "missing COMMIT at the end",
                text: String::new(),
            });
        }
        Ok(saved)
    }

    /// The table named `name`, if it exists.
    pub fn table(&self, name: &str) -> Option<&SavedTable> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Our part of what is installed, as a [`Ruleset`]: chains named
    /// [`OWNED_PREFIX`]`*` and the rules of built-in chains that jump to
    /// them, in the tables this crate writes to. Comparing its
    /// [`Ruleset::render_save_like`] with the desired one shows the
    /// difference as people read it.
    pub fn ours(&self) -> Ruleset {
        let mut ruleset = Ruleset::new();
        for saved in &self.tables {
            let Some(table) = Table::from_name(&saved.name) else {
                continue;
            };
            for chain in &saved.chains {
                if chain.is_builtin() {
                    for rule in chain.our_jumps() {
                        ruleset.append(table, &chain.name, rule);
                    }
                } else if chain.is_ours() {
                    ruleset.add_chain(table, &chain.name);
                    for rule in &chain.rules {
                        ruleset.append(table, &chain.name, rule.spec.clone());
                    }
                }
            }
        }
        ruleset
    }
}

impl SavedTable {
    /// The chain named `name`, if it exists.
    pub fn chain(&self, name: &str) -> Option<&SavedChain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

impl SavedChain {
    /// Built-in chains carry a policy; user chains print `-`.
    pub fn is_builtin(&self) -> bool {
        self.policy.is_some()
    }

    /// A user chain named with [`OWNED_PREFIX`].
    pub fn is_ours(&self) -> bool {
        !self.is_builtin() && self.name.starts_with(OWNED_PREFIX)
    }

    /// The rule texts, in order.
    pub fn specs(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.spec.as_str())
    }

    /// Rules that jump to one of our chains: in a built-in chain, these
    /// are ours.
    pub fn our_jumps(&self) -> impl Iterator<Item = &str> {
        self.specs()
            .filter(|spec| tokens::target(spec).is_some_and(|t| t.starts_with(OWNED_PREFIX)))
    }
}

/// Splits an optional leading `[packets:bytes] ` off a rule line.
fn split_counters(line: &str) -> Option<(Option<(u64, u64)>, &str)> {
    let Some(rest) = line.strip_prefix('[') else {
        return Some((None, line));
    };
    let (counters, rest) = rest.split_once(']')?;
    let (packets, bytes) = counters.split_once(':')?;
    Some((
        Some((packets.parse().ok()?, bytes.parse().ok()?)),
        rest.trim_start(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `iptables-save -c` (v1.8.9, nf_tables) inside a
    /// router namespace of this project.
    const ROUTER_SAVE: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 23:18:38 2026
*mangle
:PREROUTING ACCEPT [12:1008]
:INPUT ACCEPT [12:1008]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [12:1008]
:POSTROUTING ACCEPT [12:1008]
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-mark - [0:0]
[12:1008] -A PREROUTING -j neutron-l3-agent-PREROUTING
[12:1008] -A neutron-l3-agent-PREROUTING -j neutron-l3-agent-mark
[0:0] -A neutron-l3-agent-mark -i qg-aaaaaaaa-aa -j MARK --set-xmark 0x2/0xffff
COMMIT
# Completed on Tue Nov 24 23:18:38 2026
# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 23:18:38 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [1:84]
:POSTROUTING ACCEPT [1:84]
:DOCKER - [0:0]
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-postrouting-bottom - [0:0]
[0:0] -A PREROUTING -j DOCKER
[0:0] -A PREROUTING -j neutron-l3-agent-PREROUTING
[1:84] -A OUTPUT -j neutron-l3-agent-OUTPUT
[0:0] -A neutron-postrouting-bottom -m comment --comment \"Perform source NAT on outgoing traffic.\" -j neutron-l3-agent-snat
COMMIT
# Completed on Tue Nov 24 23:18:38 2026
";

    #[test]
    fn parses_tables_chains_rules_and_counters() {
        let saved = Saved::parse(ROUTER_SAVE, "test").expect("parse");
        assert_eq!(saved.tables.len(), 2);
        let mangle = saved.table("mangle").expect("mangle");
        assert_eq!(mangle.chains.len(), 7);
        let pre = mangle.chain("PREROUTING").expect("PREROUTING");
        assert_eq!(pre.policy.as_deref(), Some("ACCEPT"));
        assert_eq!(
            pre.rules,
            [SavedRule {
                spec: "-j neutron-l3-agent-PREROUTING".into(),
                counters: Some((12, 1008)),
            }]
        );
        let mark = mangle.chain("neutron-l3-agent-mark").expect("mark");
        assert!(mark.is_ours());
        assert_eq!(
            mark.specs().collect::<Vec<_>>(),
            ["-i qg-aaaaaaaa-aa -j MARK --set-xmark 0x2/0xffff"]
        );
        let nat = saved.table("nat").expect("nat");
        assert!(!nat.chain("DOCKER").expect("docker").is_ours());
        assert_eq!(
            nat.chain("PREROUTING")
                .expect("pre")
                .our_jumps()
                .collect::<Vec<_>>(),
            ["-j neutron-l3-agent-PREROUTING"]
        );
    }

    #[test]
    fn parses_without_counters() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:neutron-x - [0:0]\n-A neutron-x -j DROP\n-A INPUT -j neutron-x\nCOMMIT\n";
        let saved = Saved::parse(text, "test").expect("parse");
        let input = saved.table("filter").and_then(|t| t.chain("INPUT"));
        assert_eq!(input.expect("INPUT").rules[0].counters, None);
        assert_eq!(input.expect("INPUT").rules[0].spec, "-j neutron-x");
    }

    #[test]
    fn ours_keeps_only_our_chains_and_jumps() {
        let saved = Saved::parse(ROUTER_SAVE, "test").expect("parse");
        assert_eq!(
            saved.ours().render_save_like(),
            "\
*nat
:neutron-l3-agent-OUTPUT - [0:0]
:neutron-postrouting-bottom - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A OUTPUT -j neutron-l3-agent-OUTPUT
-A neutron-postrouting-bottom -m comment --comment \"Perform source NAT on outgoing traffic.\" -j neutron-l3-agent-snat
COMMIT
*mangle
:neutron-l3-agent-PREROUTING - [0:0]
:neutron-l3-agent-mark - [0:0]
-A PREROUTING -j neutron-l3-agent-PREROUTING
-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-mark
-A neutron-l3-agent-mark -i qg-aaaaaaaa-aa -j MARK --set-xmark 0x2/0xffff
COMMIT
"
        );
    }

    #[test]
    fn empty_output_is_no_tables() {
        assert_eq!(Saved::parse("", "test").expect("parse"), Saved::default());
    }

    #[test]
    fn errors_name_the_line() {
        let err = Saved::parse("*nat\n-A neutron-x -j DROP\nCOMMIT\n", "namespace t")
            .expect_err("undeclared chain");
        let msg = err.to_string();
        assert!(
            msg.contains("namespace t") && msg.contains("line 2"),
            "{msg}"
        );
        assert!(Saved::parse("*nat\n:X ACCEPT [0:0]\n", "t").is_err());
        assert!(Saved::parse("-A X -j DROP\n", "t").is_err());
        assert!(Saved::parse("*nat\n[1:x] -A X\nCOMMIT\n", "t").is_err());
    }
}
