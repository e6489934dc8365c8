//! Root tests: rulesets applied with the real `iptables-restore` inside
//! private namespaces, observed with `iptables-save` run through `ip netns
//! exec` (not through this crate's reader).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ovslab_iptables::{
    Direction, FloatingIp, IpSet, IptablesError, PortFirewall, Protocol, Remote, RouterNat,
    Ruleset, SgRule, Table, apply, converge_ipsets, firewall_ruleset, read, remove_stale_ipsets,
    router_ruleset,
};
use ovslab_testkit::{TestNetns, require_root};

fn seed_router() -> RouterNat {
    RouterNat {
        qg: "qg-aaaaaaaa-aa".into(),
        gateway_ip: Some(Ipv4Addr::new(203, 0, 113, 101)),
        snat: true,
        floating_ips: vec![FloatingIp {
            fixed: Ipv4Addr::new(192, 168, 1, 11),
            floating: Ipv4Addr::new(203, 0, 113, 102),
        }],
        internal_cidrs: vec!["192.168.1.0/24".parse().expect("cidr")],
    }
}

fn sg(
    direction: Direction,
    protocol: Option<Protocol>,
    port_range: Option<(u16, u16)>,
    remote: Option<&[&str]>,
) -> SgRule {
    SgRule {
        direction,
        protocol,
        port_range,
        remote: remote
            .map(|r| Remote::Prefixes(r.iter().map(|n| n.parse().expect("cidr")).collect())),
    }
}

fn default_group() -> Vec<SgRule> {
    vec![
        sg(Direction::Egress, None, None, None),
        sg(Direction::Ingress, Some(Protocol::Icmp), None, None),
        sg(
            Direction::Ingress,
            None,
            None,
            Some(&["192.168.1.12/32", "192.168.1.13/32"]),
        ),
    ]
}

fn port(device_id: &str, last: u8, zone: u16, rules: Vec<SgRule>) -> PortFirewall {
    PortFirewall {
        device: format!("tap{device_id}"),
        qvb: format!("qvb{device_id}"),
        mac: [0xfa, 0x16, 0x3e, 0xAB, 0x00, last],
        ip: Ipv4Addr::new(192, 168, zone as u8, last),
        zone,
        rules,
        dhcp_servers: vec![],
    }
}

fn two_ports() -> Vec<PortFirewall> {
    vec![
        port("28298c0d-08", 11, 1, default_group()),
        port("d5a1e2b3-c4", 11, 2, default_group()),
    ]
}

/// Our lines of an `iptables-save` text, per table: declarations of
/// `neutron-*` chains, their rules, and rules jumping to them.
fn ours(save: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut table = String::new();
    for line in save.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
        } else if line.starts_with(":neutron-")
            || line.starts_with("-A neutron-")
            || (line.starts_with("-A ") && line.contains(" -j neutron-"))
        {
            out.entry(table.clone()).or_default().push(line.to_string());
        }
    }
    out
}

/// `iptables-save` as people run it, inside the namespace.
fn save(ns: &TestNetns) -> String {
    ns.exec(&["iptables-save"])
}

/// `iptables-save -c` without the timestamped `#` lines.
fn save_counters(ns: &TestNetns) -> String {
    ns.exec(&["iptables-save", "-c"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Exact textual equality of our part: proves the generated rules are in
/// iptables-save's canonical spelling and nothing else of ours is left.
fn assert_installed_exactly(ns: &TestNetns, ruleset: &Ruleset) {
    let have = ours(&save(ns));
    let want = ours(&ruleset.render_save_like());
    assert_eq!(have, want, "iptables-save differs from the generated rules");
    // Our own reader agrees.
    let read_back = read(&ns.name).expect("read");
    assert_eq!(
        read_back.ours().render_save_like(),
        ruleset.render_save_like()
    );
}

/// Sends traffic through nat/filter OUTPUT and mangle PREROUTING on `lo`.
fn some_traffic(ns: &TestNetns) {
    for _ in 0..2 {
        ns.exec(&["ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    }
}

/// The packet counter of the `-A <chain> <spec>` line in `iptables-save -c`.
fn packets(save_c: &str, table: &str, line: &str) -> u64 {
    let mut current = "";
    for l in save_c.lines() {
        if let Some(t) = l.strip_prefix('*') {
            current = t;
        } else if current == table
            && let Some((counters, rest)) = l.split_once("] ")
            && rest == line
        {
            let (p, _) = counters
                .trim_start_matches('[')
                .split_once(':')
                .expect("counters");
            return p.parse().expect("packets");
        }
    }
    panic!("no `{line}` in table {table}:\n{save_c}");
}

#[test]
#[ignore = "needs root"]
fn router_rules_are_canonical_idempotent_and_keep_counters() {
    require_root("router_rules_are_canonical_idempotent_and_keep_counters");
    let ns = TestNetns::new();
    let ruleset = router_ruleset(&seed_router());

    let generation = ovslab_netlink::generation(&ns.name).expect("generation");
    let first = apply(&ns.name, &ruleset).expect("first apply");
    assert!(first.changed);
    // One nf_tables transaction per table written, nothing more: the
    // reconciler trusts rules it wrote only when the generation says so.
    assert_eq!(first.tables_written, 4, "filter, nat, mangle and raw");
    assert_eq!(
        ovslab_netlink::generation(&ns.name).expect("generation").id,
        generation.id + first.tables_written
    );
    assert!(
        first
            .changes
            .contains(&"nat: chain neutron-l3-agent-float-snat created".to_string()),
        "{:?}",
        first.changes
    );
    assert_installed_exactly(&ns, &ruleset);

    some_traffic(&ns);
    let before = save_counters(&ns);
    assert!(packets(&before, "nat", "-A OUTPUT -j neutron-l3-agent-OUTPUT") > 0);
    assert!(
        packets(
            &before,
            "mangle",
            "-A PREROUTING -j neutron-l3-agent-PREROUTING"
        ) > 0
    );

    let second = apply(&ns.name, &ruleset).expect("second apply");
    assert!(!second.changed, "{:?}", second.changes);
    assert!(second.changes.is_empty());
    assert_eq!(
        save_counters(&ns),
        before,
        "a no-op apply must keep counters"
    );

    // Move the floating IP to another address: only its three chains change.
    let mut moved = seed_router();
    moved.floating_ips[0].floating = Ipv4Addr::new(203, 0, 113, 110);
    let moved_rules = router_ruleset(&moved);
    let generation = ovslab_netlink::generation(&ns.name).expect("generation");
    let third = apply(&ns.name, &moved_rules).expect("third apply");
    assert!(third.changed);
    assert_eq!(third.tables_written, 1, "nat only");
    assert_eq!(
        ovslab_netlink::generation(&ns.name).expect("generation").id,
        generation.id + 1
    );
    assert_eq!(
        third.changes,
        [
            // The metadata redirect before the DNAT stays.
            "nat: chain neutron-l3-agent-PREROUTING edited (1 rules deleted, 1 inserted)",
            "nat: chain neutron-l3-agent-OUTPUT rewritten",
            "nat: chain neutron-l3-agent-float-snat rewritten",
        ]
    );
    assert_installed_exactly(&ns, &moved_rules);
    let after = save_counters(&ns);
    // Untouched rules keep their counters.
    for (table, line) in [
        ("nat", "-A OUTPUT -j neutron-l3-agent-OUTPUT"),
        ("mangle", "-A PREROUTING -j neutron-l3-agent-PREROUTING"),
        (
            "mangle",
            "-A neutron-l3-agent-PREROUTING -j neutron-l3-agent-mark",
        ),
    ] {
        assert_eq!(
            packets(&after, table, line),
            packets(&before, table, line),
            "{table}: {line}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn firewall_rules_are_canonical_idempotent_and_remove_ports() {
    require_root("firewall_rules_are_canonical_idempotent_and_remove_ports");
    let ns = TestNetns::new();
    let ports = two_ports();
    let ruleset = firewall_ruleset(&ports);

    assert!(apply(&ns.name, &ruleset).expect("first apply").changed);
    assert_installed_exactly(&ns, &ruleset);

    some_traffic(&ns);
    let before = save_counters(&ns);
    assert!(packets(&before, "filter", "-A OUTPUT -j neutron-filter-top") > 0);

    let second = apply(&ns.name, &ruleset).expect("second apply");
    assert!(!second.changed, "{:?}", second.changes);
    assert_eq!(
        save_counters(&ns),
        before,
        "a no-op apply must keep counters"
    );

    // Remove the second port: its chains go, and so do the jumps to them.
    let fewer = firewall_ruleset(&ports[..1]);
    let third = apply(&ns.name, &fewer).expect("third apply");
    assert_eq!(
        third.changes,
        [
            "filter: chain neutron-openvswi-INPUT edited (1 rules deleted, 0 inserted)",
            "filter: chain neutron-openvswi-FORWARD edited (2 rules deleted, 0 inserted)",
            "filter: chain neutron-openvswi-sg-chain edited (2 rules deleted, 0 inserted)",
            "filter: chain neutron-openvswi-id5a1e2b3-c removed",
            "filter: chain neutron-openvswi-od5a1e2b3-c removed",
            "filter: chain neutron-openvswi-sd5a1e2b3-c removed",
            "raw: chain neutron-openvswi-PREROUTING edited (2 rules deleted, 0 inserted)",
        ]
    );
    assert_installed_exactly(&ns, &fewer);
    assert!(!save(&ns).contains("d5a1e2b3"));
    let after = save_counters(&ns);
    assert_eq!(
        packets(&after, "filter", "-A OUTPUT -j neutron-filter-top"),
        packets(&before, "filter", "-A OUTPUT -j neutron-filter-top")
    );
}

/// A port added between two others: the shared chains are edited in place
/// (`-I <chain> N` through the real iptables-restore), not rewritten.
#[test]
#[ignore = "needs root"]
fn a_port_added_in_the_middle_is_inserted_in_place() {
    require_root("a_port_added_in_the_middle_is_inserted_in_place");
    let ns = TestNetns::new();
    let a = port("11111111-11", 11, 1, default_group());
    let b = port("22222222-22", 12, 1, default_group());
    let c = port("33333333-33", 13, 1, default_group());
    let outer = firewall_ruleset(&[a.clone(), c.clone()]);
    assert!(apply(&ns.name, &outer).expect("first apply").changed);
    let all = firewall_ruleset(&[a, b, c]);
    let second = apply(&ns.name, &all).expect("second apply");
    assert!(
        second.changes.contains(
            &"filter: chain neutron-openvswi-FORWARD edited (0 rules deleted, 2 inserted)"
                .to_string()
        ),
        "{:?}",
        second.changes
    );
    assert!(
        !second.changes.iter().any(|c| c.contains("rewritten")),
        "{:?}",
        second.changes
    );
    assert_installed_exactly(&ns, &all);
    assert!(!apply(&ns.name, &all).expect("third apply").changed);
    // And back: the middle port's rules are deleted by position.
    let third = apply(&ns.name, &outer).expect("fourth apply");
    assert!(third.changed);
    assert_installed_exactly(&ns, &outer);
}

/// Every kind of rule the generator can write, through the real tools.
#[test]
#[ignore = "needs root"]
fn every_rule_shape_is_canonical() {
    require_root("every_rule_shape_is_canonical");
    let ns = TestNetns::new();
    let rules = vec![
        sg(
            Direction::Ingress,
            Some(Protocol::Tcp),
            Some((22, 22)),
            None,
        ),
        sg(
            Direction::Ingress,
            Some(Protocol::Tcp),
            Some((1000, 2000)),
            None,
        ),
        sg(
            Direction::Ingress,
            Some(Protocol::Udp),
            Some((53, 53)),
            Some(&["10.1.2.3/8"]),
        ),
        sg(
            Direction::Ingress,
            Some(Protocol::Udp),
            Some((1, 65535)),
            None,
        ),
        sg(Direction::Ingress, Some(Protocol::Tcp), None, None),
        sg(
            Direction::Egress,
            Some(Protocol::Icmp),
            None,
            Some(&["203.0.113.0/24"]),
        ),
        sg(
            Direction::Egress,
            Some(Protocol::Udp),
            None,
            Some(&["0.0.0.0/0"]),
        ),
        sg(
            Direction::Egress,
            Some(Protocol::Tcp),
            Some((80, 80)),
            Some(&["192.168.9.9/32"]),
        ),
        sg(Direction::Ingress, None, None, Some(&[])),
    ];
    let ports = vec![
        port("0123456789a", 5, 0, rules.clone()),
        PortFirewall {
            dhcp_servers: vec![Ipv4Addr::new(192, 168, 1, 2)],
            ..port("fedcba98-76", 6, 4095, rules)
        },
    ];
    let ruleset = firewall_ruleset(&ports);
    // A TCP or UDP rule without ports has no `-m tcp` (Liberty's
    // `_port_arg`), and iptables-save gives it back so.
    let ingress = ruleset
        .chain(
            ovslab_iptables::Table::Filter,
            "neutron-openvswi-i0123456789",
        )
        .expect("the ingress chain");
    assert!(
        ingress.contains(&"-p tcp -j RETURN".to_string()),
        "{ingress:#?}"
    );
    apply(&ns.name, &ruleset).expect("apply");
    assert_installed_exactly(&ns, &ruleset);
    assert!(!apply(&ns.name, &ruleset).expect("again").changed);

    let mut no_gateway = seed_router();
    no_gateway.gateway_ip = None;
    let mut no_snat = seed_router();
    no_snat.snat = false;
    for router in [no_gateway, no_snat] {
        let ns = TestNetns::new();
        let ruleset = router_ruleset(&router);
        apply(&ns.name, &ruleset).expect("apply");
        assert_installed_exactly(&ns, &ruleset);
        assert!(!apply(&ns.name, &ruleset).expect("again").changed);
    }
}

#[test]
#[ignore = "needs root"]
fn stale_chains_of_another_ruleset_are_removed() {
    require_root("stale_chains_of_another_ruleset_are_removed");
    let ns = TestNetns::new();
    apply(&ns.name, &firewall_ruleset(&two_ports())).expect("firewall");
    let router = router_ruleset(&seed_router());
    let applied = apply(&ns.name, &router).expect("router");
    assert!(
        applied
            .changes
            .contains(&"filter: chain neutron-openvswi-sg-chain removed".to_string()),
        "{:?}",
        applied.changes
    );
    assert_installed_exactly(&ns, &router);
    let text = save(&ns);
    // `neutron-filter-top` is every agent's: it stays, jumping to the
    // router's chain now.
    assert!(!text.contains("neutron-openvswi"), "{text}");
    assert!(
        text.contains("-A neutron-filter-top -j neutron-l3-agent-local"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root"]
fn invalid_rule_errors_and_leaves_previous_rules() {
    require_root("invalid_rule_errors_and_leaves_previous_rules");
    let ns = TestNetns::new();
    let good = router_ruleset(&seed_router());
    apply(&ns.name, &good).expect("good apply");

    let mut bad = good.clone();
    bad.append(
        Table::Nat,
        "neutron-l3-agent-float-snat",
        "-s 192.168.1.99/32 -j SNAT --to-source 203.0.113.300",
    );
    let err = apply(&ns.name, &bad).expect_err("bad --to-source");
    assert!(matches!(err, IptablesError::Restore { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&ns.name), "{msg}");
    assert!(msg.contains("203.0.113.300"), "{msg}");
    assert!(msg.contains("Bad IP address"), "{msg}");
    assert!(
        msg.contains("(input: `-A neutron-l3-agent-float-snat -s 192.168.1.99/32"),
        "{msg}"
    );

    // The nat table's batch was refused as a whole.
    assert_installed_exactly(&ns, &good);
    assert!(!apply(&ns.name, &good).expect("good again").changed);
}

#[test]
#[ignore = "needs root"]
fn missing_namespace_is_named() {
    require_root("missing_namespace_is_named");
    let err = read("ovslab-no-such-namespace").expect_err("no namespace");
    assert!(
        err.to_string().contains("ovslab-no-such-namespace"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root"]
fn remote_groups_match_an_ipset_that_is_kept_in_step() {
    require_root("remote_groups_match_an_ipset_that_is_kept_in_step");
    let ns = TestNetns::new();
    let set = |members: &[&str]| IpSet {
        name: "NIPv4default".into(),
        members: members.iter().map(|m| m.parse().unwrap()).collect(),
    };
    let group = vec![
        sg(Direction::Egress, None, None, None),
        SgRule {
            direction: Direction::Ingress,
            protocol: Some(Protocol::Tcp),
            port_range: Some((22, 22)),
            remote: Some(Remote::IpSet("NIPv4default".into())),
        },
    ];
    let ruleset = firewall_ruleset(&[port("28298c0d-08", 11, 1, group)]);

    let (made, _) = converge_ipsets(&ns.name, &[set(&["192.168.1.11", "192.168.1.12"])]).unwrap();
    assert_eq!(made, ["create ipset NIPv4default (2 members)"]);
    assert!(apply(&ns.name, &ruleset).unwrap().changed);
    assert_installed_exactly(&ns, &ruleset);
    assert!(
        save(&ns)
            .contains("-p tcp -m tcp --dport 22 -m set --match-set NIPv4default src -j RETURN")
    );
    // Converged: nothing runs, nothing changes.
    assert!(
        converge_ipsets(&ns.name, &[set(&["192.168.1.11", "192.168.1.12"])])
            .unwrap()
            .0
            .is_empty()
    );
    assert!(!apply(&ns.name, &ruleset).unwrap().changed);

    // A member leaves, another joins: the set changes, the rules do not.
    let (changes, _) =
        converge_ipsets(&ns.name, &[set(&["192.168.1.11", "192.168.1.13"])]).unwrap();
    assert_eq!(
        changes,
        [
            "ipset NIPv4default: add 192.168.1.13",
            "ipset NIPv4default: delete 192.168.1.12"
        ]
    );
    let listed = ns.exec(&["ipset", "list", "NIPv4default"]);
    assert!(
        listed.contains("192.168.1.13") && !listed.contains("192.168.1.12"),
        "{listed}"
    );
    assert!(!apply(&ns.name, &ruleset).unwrap().changed);

    // Stale sets go once no rule uses them; other sets are not ours.
    ns.exec(&["ipset", "create", "someone-else", "hash:ip"]);
    let empty = firewall_ruleset(&[]);
    apply(&ns.name, &empty).unwrap();
    let (_, actual) = converge_ipsets(&ns.name, &[]).unwrap();
    assert_eq!(
        remove_stale_ipsets(&ns.name, &actual, &[]).unwrap(),
        ["destroy ipset NIPv4default"]
    );
    let names = ns.exec(&["ipset", "list", "-n"]);
    assert_eq!(names.trim(), "someone-else");
}
