//! What must change to turn what is installed into the desired ruleset,
//! as one `iptables-restore --noflush` batch.
//!
//! Per table, in this order (each table is one atomic `COMMIT`):
//! 1. declare every chain of ours that is missing, or whose rules differ
//!    from the wanted ones with nothing in common at either end —
//!    declaring an existing chain under `--noflush` flushes it — and every
//!    stale chain of ours, so nothing references what is about to go;
//! 2. in a built-in chain whose jumps to our chains differ from the wanted
//!    ones, delete those jumps (`-D`) and insert the wanted ones at the top
//!    (`-I <chain> 1`, last first), where Neutron keeps them;
//! 3. append the rules of the chains declared in step 1, and edit the
//!    other differing chains in place: the rules between their common
//!    first and last rules are deleted by position (`-D <chain> N`) and the
//!    wanted ones inserted there (`-I <chain> N`, or `-A` at the end) — a
//!    port added to or removed from a node touches its own rules only,
//!    which is far cheaper for iptables-nft than rewriting a long chain;
//! 4. delete the stale chains (`-X`).
//!
//! Rules and chains that already match are not rewritten, so their
//! counters survive; with nothing to change there is no batch at all.
//!
//! Only built-in chains are searched for jumps to stale chains: a chain of
//! someone else's that jumps into ours makes `-X` fail, and the error
//! says so rather than us editing rules we do not own.

use std::fmt::Write as _;

use crate::ruleset::{Ruleset, Table, TableRules};
use crate::save::{Saved, SavedTable};

/// The batch that converges a namespace, and what it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Input for `iptables-restore --noflush -w`; `None` when nothing differs.
    pub restore: Option<String>,
    /// One human line per change, e.g.
    /// `nat: chain neutron-l3-agent-float-snat rewritten`.
    pub changes: Vec<String>,
}

/// Compares our part of `saved` with `desired` (pure; see the module doc).
pub fn diff(saved: &Saved, desired: &Ruleset) -> Plan {
    let mut plan = Plan::default();
    let mut batch = String::new();
    for table in Table::ALL {
        let name = table.name();
        let wanted = desired.table(table);
        let builtins: Vec<&str> = table.builtin_chains().to_vec();
        diff_table(
            name,
            &builtins,
            wanted,
            saved.table(name),
            &mut batch,
            &mut plan.changes,
        );
    }
    // Tables we never write to can still hold stale chains of ours.
    for saved_table in &saved.tables {
        if Table::from_name(&saved_table.name).is_none() {
            let builtins: Vec<&str> = saved_table
                .chains
                .iter()
                .filter(|c| c.is_builtin())
                .map(|c| c.name.as_str())
                .collect();
            diff_table(
                &saved_table.name,
                &builtins,
                None,
                Some(saved_table),
                &mut batch,
                &mut plan.changes,
            );
        }
    }
    if !batch.is_empty() {
        plan.restore = Some(batch);
    }
    plan
}

fn diff_table(
    name: &str,
    builtins: &[&str],
    wanted: Option<&TableRules>,
    saved: Option<&SavedTable>,
    batch: &mut String,
    changes: &mut Vec<String>,
) {
    let empty = TableRules::default();
    let wanted = wanted.unwrap_or(&empty);

    // Our chains to (re)write: missing, or with other rules and nothing in
    // common at either end; the others with other rules are edited.
    let mut rewrite = Vec::new();
    let mut edits = String::new();
    for chain in wanted.chains() {
        match saved.and_then(|t| t.chain(&chain.name)) {
            None => {
                changes.push(format!("{name}: chain {} created", chain.name));
                rewrite.push(chain);
            }
            Some(have) if !have.specs().eq(chain.rules.iter().map(String::as_str)) => {
                let have: Vec<&str> = have.specs().collect();
                match edit(&chain.name, &have, &chain.rules, &mut edits) {
                    Some((deleted, inserted)) => changes.push(format!(
                        "{name}: chain {} edited ({deleted} rules deleted, {inserted} inserted)",
                        chain.name
                    )),
                    None => {
                        changes.push(format!("{name}: chain {} rewritten", chain.name));
                        rewrite.push(chain);
                    }
                }
            }
            Some(_) => {}
        }
    }

    // Our chains nobody wants any more.
    let stale: Vec<&str> = saved
        .map(|t| {
            t.chains
                .iter()
                .filter(|c| c.is_ours() && wanted.chain(&c.name).is_none())
                .map(|c| c.name.as_str())
                .collect()
        })
        .unwrap_or_default();

    // Built-in chains whose jumps to our chains differ.
    let mut builtin_ops = String::new();
    for builtin in builtins {
        let have: Vec<&str> = saved
            .and_then(|t| t.chain(builtin))
            .map(|c| c.our_jumps().collect())
            .unwrap_or_default();
        let want: Vec<&str> = wanted.builtin_rules_of(builtin).collect();
        if have == want {
            continue;
        }
        changes.push(format!("{name}: built-in chain {builtin} jumps rewritten"));
        for rule in &have {
            let _ = writeln!(builtin_ops, "-D {builtin} {rule}");
        }
        for rule in want.iter().rev() {
            let _ = writeln!(builtin_ops, "-I {builtin} 1 {rule}");
        }
    }

    if rewrite.is_empty() && edits.is_empty() && stale.is_empty() && builtin_ops.is_empty() {
        return;
    }
    let _ = writeln!(batch, "*{name}");
    for chain in &rewrite {
        let _ = writeln!(batch, ":{} - [0:0]", chain.name);
    }
    for chain in &stale {
        let _ = writeln!(batch, ":{chain} - [0:0]");
    }
    batch.push_str(&builtin_ops);
    for chain in &rewrite {
        for rule in &chain.rules {
            let _ = writeln!(batch, "-A {} {rule}", chain.name);
        }
    }
    batch.push_str(&edits);
    for chain in &stale {
        let _ = writeln!(batch, "-X {chain}");
        changes.push(format!("{name}: chain {chain} removed"));
    }
    batch.push_str("COMMIT\n");
}

/// The lines that turn chain `chain`'s rules `have` into `want` in place:
/// the rules between the common first and last ones are deleted by
/// position and the wanted ones inserted there. `None` when the two share
/// no rule at either end (then the chain is better rewritten). Returns how
/// many rules were deleted and inserted.
fn edit(chain: &str, have: &[&str], want: &[String], out: &mut String) -> Option<(usize, usize)> {
    let prefix = have
        .iter()
        .zip(want)
        .take_while(|(h, w)| **h == w.as_str())
        .count();
    let room = have.len().min(want.len()) - prefix;
    let suffix = have
        .iter()
        .rev()
        .zip(want.iter().rev())
        .take(room)
        .take_while(|(h, w)| **h == w.as_str())
        .count();
    if prefix + suffix == 0 {
        return None;
    }
    let deleted = have.len() - prefix - suffix;
    let inserted = &want[prefix..want.len() - suffix];
    for _ in 0..deleted {
        let _ = writeln!(out, "-D {chain} {}", prefix + 1);
    }
    for (k, rule) in inserted.iter().enumerate() {
        if suffix == 0 {
            let _ = writeln!(out, "-A {chain} {rule}");
        } else {
            let _ = writeln!(out, "-I {chain} {} {rule}", prefix + 1 + k);
        }
    }
    Some((deleted, inserted.len()))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::firewall::tests::two_ports;
    use crate::router::tests::seed_router;
    use crate::{FloatingIp, firewall_ruleset, router_ruleset};

    /// What `iptables-save` prints once `ruleset` is installed in an
    /// otherwise empty namespace: our part plus the built-in chain lines.
    fn installed(ruleset: &Ruleset) -> Saved {
        let mut text = String::new();
        for line in ruleset.render_save_like().lines() {
            text.push_str(line);
            text.push('\n');
            if let Some(name) = line.strip_prefix('*') {
                let table = Table::from_name(name).expect("known table");
                for builtin in table.builtin_chains() {
                    let _ = writeln!(text, ":{builtin} ACCEPT [0:0]");
                }
            }
        }
        Saved::parse(&text, "test").expect("parse our own rendering")
    }

    #[test]
    fn unchanged_router_needs_nothing() {
        let ruleset = router_ruleset(&seed_router());
        assert_eq!(diff(&installed(&ruleset), &ruleset), Plan::default());
    }

    #[test]
    fn unchanged_firewall_needs_nothing() {
        let ruleset = firewall_ruleset(&two_ports());
        assert_eq!(diff(&installed(&ruleset), &ruleset), Plan::default());
    }

    #[test]
    fn fresh_namespace_gets_everything() {
        let ruleset = router_ruleset(&seed_router());
        let plan = diff(&Saved::default(), &ruleset);
        assert_eq!(
            plan.restore.as_deref(),
            Some(ruleset.render_restore().as_str())
        );
        assert!(
            plan.changes
                .contains(&"nat: chain neutron-l3-agent-float-snat created".to_string())
        );
        assert!(
            plan.changes
                .contains(&"nat: built-in chain POSTROUTING jumps rewritten".to_string())
        );
        let restore = plan.restore.expect("batch");
        assert!(restore.contains(
            "-I POSTROUTING 1 -j neutron-postrouting-bottom\n\
             -I POSTROUTING 1 -j neutron-l3-agent-POSTROUTING\n"
        ));
    }

    #[test]
    fn removing_one_floating_ip_edits_only_its_chains() {
        let mut two = seed_router();
        two.floating_ips.push(FloatingIp {
            fixed: Ipv4Addr::new(192, 168, 2, 11),
            floating: Ipv4Addr::new(203, 0, 113, 103),
        });
        let before = router_ruleset(&two);
        let after = router_ruleset(&seed_router());
        let plan = diff(&installed(&before), &after);
        assert_eq!(
            plan.changes,
            [
                "nat: chain neutron-l3-agent-PREROUTING edited (1 rules deleted, 0 inserted)",
                "nat: chain neutron-l3-agent-OUTPUT edited (1 rules deleted, 0 inserted)",
                "nat: chain neutron-l3-agent-float-snat edited (1 rules deleted, 0 inserted)",
            ]
        );
        // The remaining floating IP's rules stay (with their counters).
        assert_eq!(
            plan.restore.as_deref(),
            Some(
                "*nat\n\
                 -D neutron-l3-agent-PREROUTING 3\n\
                 -D neutron-l3-agent-OUTPUT 2\n\
                 -D neutron-l3-agent-float-snat 2\n\
                 COMMIT\n"
            )
        );
    }

    #[test]
    fn a_chain_is_edited_between_its_common_ends() {
        let want = |rules: &[&str]| rules.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let mut out = String::new();
        // A rule in the middle replaced by two.
        assert_eq!(
            edit(
                "c",
                &["-j A", "-j B", "-j C"],
                &want(&["-j A", "-j X", "-j Y", "-j C"]),
                &mut out
            ),
            Some((1, 2))
        );
        assert_eq!(out, "-D c 2\n-I c 2 -j X\n-I c 3 -j Y\n");
        // Appended at the end.
        out.clear();
        assert_eq!(
            edit("c", &["-j A"], &want(&["-j A", "-j B"]), &mut out),
            Some((0, 1))
        );
        assert_eq!(out, "-A c -j B\n");
        // A repeated rule is not counted twice as common.
        out.clear();
        assert_eq!(
            edit("c", &["-j A"], &want(&["-j A", "-j A"]), &mut out),
            Some((0, 1))
        );
        assert_eq!(out, "-A c -j A\n");
        // Nothing in common at either end: rewritten instead.
        assert_eq!(
            edit("c", &["-j A", "-j B"], &want(&["-j B", "-j A"]), &mut out),
            None
        );
    }

    #[test]
    fn removing_a_port_deletes_its_chains_and_jumps() {
        let ports = two_ports();
        let before = firewall_ruleset(&ports);
        let after = firewall_ruleset(&ports[..1]);
        let plan = diff(&installed(&before), &after);
        let gone = &ports[1];
        let id = &gone.device[3..13];
        assert_eq!(
            plan.changes,
            [
                "filter: chain neutron-openvswi-INPUT edited (1 rules deleted, 0 inserted)"
                    .to_string(),
                "filter: chain neutron-openvswi-FORWARD edited (2 rules deleted, 0 inserted)"
                    .to_string(),
                "filter: chain neutron-openvswi-sg-chain edited (2 rules deleted, 0 inserted)"
                    .to_string(),
                format!("filter: chain neutron-openvswi-i{id} removed"),
                format!("filter: chain neutron-openvswi-o{id} removed"),
                format!("filter: chain neutron-openvswi-s{id} removed"),
                "raw: chain neutron-openvswi-PREROUTING edited (2 rules deleted, 0 inserted)"
                    .to_string(),
            ]
        );
        let restore = plan.restore.expect("batch");
        assert!(!restore.contains(&format!("--physdev-in {}", gone.device)));
        assert!(!restore.contains(&format!("--physdev-out {}", gone.device)));
        assert!(restore.contains(&format!("-X neutron-openvswi-o{id}\n")));
        // Stale chains are flushed before they are deleted.
        let flush = restore
            .find(&format!(":neutron-openvswi-o{id} - [0:0]"))
            .expect("flush");
        let delete = restore
            .find(&format!("-X neutron-openvswi-o{id}"))
            .expect("delete");
        assert!(flush < delete);
    }

    #[test]
    fn stale_chain_in_builtin_is_unhooked_and_removed() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                    :DOCKER - [0:0]\n:neutron-old - [0:0]\n\
                    -A PREROUTING -j DOCKER\n-A PREROUTING -j neutron-old\n\
                    -A neutron-old -j ACCEPT\nCOMMIT\n";
        let saved = Saved::parse(text, "test").expect("parse");
        let plan = diff(&saved, &Ruleset::new());
        assert_eq!(
            plan.changes,
            [
                "nat: built-in chain PREROUTING jumps rewritten",
                "nat: chain neutron-old removed",
            ]
        );
        assert_eq!(
            plan.restore.as_deref(),
            Some(
                "*nat\n:neutron-old - [0:0]\n-D PREROUTING -j neutron-old\n\
                 -X neutron-old\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn foreign_rules_in_builtins_are_ignored() {
        let ruleset = router_ruleset(&seed_router());
        let mut saved = installed(&ruleset);
        let nat = saved
            .tables
            .iter_mut()
            .find(|t| t.name == "nat")
            .expect("nat");
        let pre = nat
            .chains
            .iter_mut()
            .find(|c| c.name == "PREROUTING")
            .expect("PREROUTING");
        pre.rules.insert(
            0,
            crate::SavedRule {
                spec: "-j DOCKER".into(),
                counters: None,
            },
        );
        assert_eq!(diff(&saved, &ruleset), Plan::default());
    }

    /// Plays a batch the way `iptables-restore --noflush` does, on parsed
    /// state, for the convergence property below.
    fn play(saved: &mut Saved, batch: &str) {
        let mut table_name = String::new();
        for line in batch.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table_name = name.to_string();
                if saved.table(name).is_none() {
                    let table = Table::from_name(name).expect("known table");
                    saved.tables.push(SavedTable {
                        name: name.to_string(),
                        chains: table
                            .builtin_chains()
                            .iter()
                            .map(|b| crate::SavedChain {
                                name: b.to_string(),
                                policy: Some("ACCEPT".into()),
                                rules: Vec::new(),
                            })
                            .collect(),
                    });
                }
                continue;
            }
            if line == "COMMIT" {
                continue;
            }
            let table = saved
                .tables
                .iter_mut()
                .find(|t| t.name == table_name)
                .expect("table");
            let rule = |spec: &str| crate::SavedRule {
                spec: spec.to_string(),
                counters: None,
            };
            let chain_mut = |table: &mut SavedTable, name: &str| -> usize {
                table
                    .chains
                    .iter()
                    .position(|c| c.name == name)
                    .unwrap_or_else(|| panic!("no chain {name}"))
            };
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().expect("name");
                match table.chains.iter_mut().find(|c| c.name == name) {
                    Some(c) => c.rules.clear(),
                    None => table.chains.push(crate::SavedChain {
                        name: name.to_string(),
                        policy: None,
                        rules: Vec::new(),
                    }),
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').expect("spec");
                let i = chain_mut(table, chain);
                table.chains[i].rules.push(rule(spec));
            } else if let Some(rest) = line.strip_prefix("-I ") {
                let (chain, rest) = rest.split_once(' ').expect("position");
                let (position, spec) = rest.split_once(' ').expect("spec");
                let position: usize = position.parse().expect("a position");
                let i = chain_mut(table, chain);
                assert!(position >= 1 && position <= table.chains[i].rules.len() + 1);
                table.chains[i].rules.insert(position - 1, rule(spec));
            } else if let Some((chain, position)) = line
                .strip_prefix("-D ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(chain, n)| Some((chain, n.parse::<usize>().ok()?)))
            {
                let i = chain_mut(table, chain);
                assert!(position >= 1 && position <= table.chains[i].rules.len());
                table.chains[i].rules.remove(position - 1);
            } else if let Some(rest) = line.strip_prefix("-D ") {
                let (chain, spec) = rest.split_once(' ').expect("spec");
                let i = chain_mut(table, chain);
                let at = table.chains[i]
                    .rules
                    .iter()
                    .position(|r| r.spec == spec)
                    .expect("rule to delete exists");
                table.chains[i].rules.remove(at);
            } else if let Some(name) = line.strip_prefix("-X ") {
                for c in &table.chains {
                    assert!(
                        c.specs()
                            .all(|s| crate::tokens::target(s).as_deref() != Some(name)),
                        "{name} still referenced from {}",
                        c.name
                    );
                }
                let i = chain_mut(table, name);
                table.chains.remove(i);
            } else {
                panic!("unexpected batch line {line}");
            }
        }
        // iptables-save lists user chains sorted.
        for t in &mut saved.tables {
            t.chains
                .sort_by(|a, b| (a.policy.is_none(), &a.name).cmp(&(b.policy.is_none(), &b.name)));
        }
    }

    fn arb_ports() -> impl Strategy<Value = Vec<crate::PortFirewall>> {
        use crate::{Direction, Protocol, SgRule};
        let rule = (
            prop::bool::ANY,
            prop::option::of(prop::sample::select(vec![
                Protocol::Icmp,
                Protocol::Tcp,
                Protocol::Udp,
            ])),
            prop::option::of((1u16..100, 0u16..3)),
            prop::option::of(prop::collection::vec(0u8..4, 0..3)),
        )
            .prop_map(|(ingress, protocol, ports, remote)| SgRule {
                direction: if ingress {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                protocol,
                port_range: ports.map(|(lo, span)| (lo, lo + span)),
                remote: remote.map(|hosts| {
                    crate::Remote::Prefixes(
                        hosts
                            .into_iter()
                            .map(|h| ipnet::Ipv4Net::from(Ipv4Addr::new(192, 168, 1, 10 + h)))
                            .collect(),
                    )
                }),
            });
        let port =
            (0u8..5, 0u16..3, prop::collection::vec(rule, 0..4)).prop_map(|(n, zone, rules)| {
                crate::PortFirewall {
                    device: format!("tap{n}aaaaaaa-bb"),
                    qvb: format!("qvb{n}aaaaaaa-bb"),
                    mac: [0xfa, 0x16, 0x3e, 0, 0, n],
                    ip: Ipv4Addr::new(192, 168, 1, 10 + n),
                    zone,
                    rules,
                    dhcp_servers: vec![],
                }
            });
        prop::collection::vec(port, 0..4).prop_map(|mut ports| {
            ports.sort_by(|a, b| a.device.cmp(&b.device));
            ports.dedup_by(|a, b| a.device == b.device);
            ports
        })
    }

    fn arb_router() -> impl Strategy<Value = crate::RouterNat> {
        (
            prop::bool::ANY,
            prop::bool::ANY,
            prop::collection::vec((1u8..5, 100u8..104), 0..4),
        )
            .prop_map(|(gateway, snat, fips)| crate::RouterNat {
                qg: "qg-aaaaaaaa-aa".into(),
                gateway_ip: gateway.then_some(Ipv4Addr::new(203, 0, 113, 101)),
                snat,
                floating_ips: fips
                    .into_iter()
                    .map(|(fixed, floating)| FloatingIp {
                        fixed: Ipv4Addr::new(192, 168, 1, fixed),
                        floating: Ipv4Addr::new(203, 0, 113, floating),
                    })
                    .collect(),
                internal_cidrs: Vec::new(),
            })
    }

    /// Whatever was there, one batch converges, and a second diff is empty.
    fn converges(before: &Ruleset, after: &Ruleset) {
        let mut saved = installed(before);
        if let Some(batch) = diff(&saved, after).restore {
            play(&mut saved, &batch);
        }
        assert_eq!(diff(&saved, after), Plan::default());
        assert_eq!(saved.ours().render_save_like(), after.render_save_like());
    }

    proptest! {
        #[test]
        fn firewall_converges_from_any_previous(a in arb_ports(), b in arb_ports()) {
            converges(&firewall_ruleset(&a), &firewall_ruleset(&b));
        }

        #[test]
        fn router_converges_from_any_previous(a in arb_router(), b in arb_router()) {
            converges(&router_ruleset(&a), &router_ruleset(&b));
        }

        #[test]
        fn router_and_firewall_replace_each_other(a in arb_router(), b in arb_ports()) {
            converges(&router_ruleset(&a), &firewall_ruleset(&b));
            converges(&firewall_ruleset(&b), &router_ruleset(&a));
        }
    }

    #[test]
    fn stale_chain_in_unknown_table_is_removed() {
        let text = "*security\n:INPUT ACCEPT [0:0]\n:neutron-x - [0:0]\n\
                    -A INPUT -j neutron-x\nCOMMIT\n";
        let saved = Saved::parse(text, "test").expect("parse");
        let plan = diff(&saved, &Ruleset::new());
        assert_eq!(
            plan.restore.as_deref(),
            Some("*security\n:neutron-x - [0:0]\n-D INPUT -j neutron-x\n-X neutron-x\nCOMMIT\n")
        );
    }
}
