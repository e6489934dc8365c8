//! The short summaries of `up` and `down`: what the lab has, and what
//! changed by kind, counted from the daemon's change lines.
//!
//! The daemon reports each change as one line of text (`UpReport::changes`,
//! `DownReport::removed`), written by the reconciler: `create namespace
//! seed.network`, `seed.compute1: set eth1 up`, `compute1: br-int: add
//! flow …`, `network: ovsdb: add port …`, `seed.compute1: iptables: …`,
//! `start ovs-vswitchd on compute1`. [`kind`] sorts them by their words;
//! a line it does not recognise counts as `other`, so a new kind of change
//! is never lost from the total, only from its own column.

use std::collections::BTreeMap;

use ovslab_topology::Topology;

/// The kinds of change, in the order a summary lists them, with how one
/// and several are called.
const KINDS: &[(&str, &str, &str)] = &[
    ("namespaces", "namespace", "namespaces"),
    ("links", "link", "links"),
    ("link settings", "link setting", "link settings"),
    (
        "addresses and routes",
        "address or route",
        "addresses and routes",
    ),
    ("sysctls", "sysctl", "sysctls"),
    ("OVSDB", "OVSDB change", "OVSDB changes"),
    ("flows", "flow", "flows"),
    (
        "iptables and ipsets",
        "iptables or ipset change",
        "iptables and ipset changes",
    ),
    ("processes", "process", "processes"),
    ("files", "file or directory", "files and directories"),
    ("other", "other", "other"),
];

/// The kind of one change line (the first name of one of [`KINDS`]).
pub fn kind(line: &str) -> &'static str {
    // `<namespace>: `, `<node>: ` and `<node>: <bridge>: ` prefixes name
    // where; the words after them say what.
    let mut rest = line;
    loop {
        match rest.split_once(": ") {
            Some((place, after)) if !place.contains(' ') => {
                match place {
                    "ovsdb" => return "OVSDB",
                    "iptables" => return "iptables and ipsets",
                    _ => {}
                }
                rest = after;
            }
            _ => break,
        }
    }
    let words: Vec<&str> = rest.split_whitespace().take(3).collect();
    match words.as_slice() {
        [_, "namespace", ..] | ["remove" | "removed", "stale", "namespace", ..] => "namespaces",
        ["create", "veth" | "bridge", ..] | ["delete", "link", ..] => "links",
        ["set", _, ..] => "link settings",
        ["add" | "delete", "address" | "route", ..] => "addresses and routes",
        ["sysctl", ..] => "sysctls",
        [_, "flow", ..] | [_, "flows", ..] => "flows",
        [
            "start" | "stopped" | "stop" | "restart" | "started" | "killed",
            ..,
        ] => "processes",
        ["metadata", "service", ..] => "processes",
        ["removed", ..] => "files",
        _ => "other",
    }
}

/// `277 changes: 11 namespaces, 16 links, …`, the kinds in a fixed order.
pub fn by_kind<'a>(lines: impl IntoIterator<Item = &'a String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = 0;
    for line in lines {
        *counts.entry(kind(line)).or_default() += 1;
        total += 1;
    }
    let parts: Vec<String> = KINDS
        .iter()
        .filter_map(|(k, one, many)| {
            counts
                .get(k)
                .map(|&n| format!("{n} {}", if n == 1 { one } else { many }))
        })
        .collect();
    format!(
        "{total} change{}: {}",
        if total == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// `3 nodes, 4 instances, 1 router, 2 networks, 1 external network` (what
/// the topology has; nothing that it has none of).
pub fn contents(t: &Topology) -> String {
    let counts = [
        (t.nodes.len(), "node", "nodes"),
        (t.instances.len(), "instance", "instances"),
        (t.routers.len(), "router", "routers"),
        (t.networks.len(), "network", "networks"),
        (
            t.external_networks.len(),
            "external network",
            "external networks",
        ),
        (t.external_hosts.len(), "external host", "external hosts"),
        (
            t.physical_routers.len(),
            "physical router",
            "physical routers",
        ),
        (t.checks.len(), "check", "checks"),
    ];
    counts
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `341 ms`, or `5.2 s` from ten seconds on.
pub fn duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_lines_are_sorted_by_kind() {
        for (line, want) in [
            ("create namespace seed.network", "namespaces"),
            ("deleted namespace seed.network", "namespaces"),
            ("removed stale namespace file seed.x", "namespaces"),
            (
                "seed.compute1: create veth eth1 <-> compute1 (in seed.physnet1)",
                "links",
            ),
            ("seed.physnet1: create bridge physnet1", "links"),
            ("seed.compute1: delete link qvo1", "links"),
            ("seed.compute1: set eth1 up", "link settings"),
            ("seed.compute1: set qvb1 master qbr1", "link settings"),
            (
                "seed.instance1: add address 192.168.1.11/24 to eth0",
                "addresses and routes",
            ),
            (
                "seed.instance1: add route 0.0.0.0/0 via 192.168.1.1",
                "addresses and routes",
            ),
            ("seed.network: sysctl net/ipv4/ip_forward=1", "sysctls"),
            ("network: ovsdb: add port tap1 to br-int", "OVSDB"),
            ("compute1: br-int: add flow table=0, priority=1", "flows"),
            ("compute1: br-int: delete flow table=0", "flows"),
            (
                "seed.compute1: iptables: filter: chain neutron-openvswi-INPUT created",
                "iptables and ipsets",
            ),
            (
                "seed.compute1: iptables: create ipset NIPv4x",
                "iptables and ipsets",
            ),
            ("start ovs-vswitchd on compute1", "processes"),
            ("stopped ovsdb-server of compute1 (pid 4)", "processes"),
            ("killed ovs-vswitchd of compute1 (pid 4)", "processes"),
            (
                "seed.qrouter-x: metadata service on 0.0.0.0:9697",
                "processes",
            ),
            ("removed /run/ovslab/seed", "files"),
            ("something new", "other"),
        ] {
            assert_eq!(kind(line), want, "{line}");
        }
    }

    #[test]
    fn kinds_are_counted_in_order() {
        let lines: Vec<String> = [
            "compute1: br-int: add flow a",
            "create namespace seed.x",
            "compute1: br-int: add flow b",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(by_kind(&lines), "3 changes: 1 namespace, 2 flows");
    }

    #[test]
    fn the_seed_lab_is_summed_up() {
        assert_eq!(
            contents(&ovslab_topology::seed()),
            "3 nodes, 4 instances, 1 router, 2 networks, 1 external network, 1 external host, 12 checks"
        );
    }
}
