//! The network node of the seed lab, end to end: the legacy router routes
//! east–west, SNATs to its gateway address, DNATs floating IPs, and the
//! compute nodes' hybrid firewall filters on qbr. Observed with `ping`,
//! `nc`, `tcpdump -e` in the external host, on the wire and in instances,
//! and `iptables-save` in the router.

use std::process::{Command, Stdio};
use std::time::Duration;

use ovslab_integration_tests::{Lab, require_root, run, run_raw, wait_until};

const INTERNET: &str = "203.0.113.1";
const GATEWAY: &str = "203.0.113.101";
const FIP1: &str = "203.0.113.102";

fn icmp(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains("ICMP")).collect()
}

fn icmp_with<'a>(lines: &'a [String], what: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.contains("ICMP") && l.contains(what))
        .collect()
}

fn iptables_save(lab: &Lab, router: &str, counters: bool) -> String {
    let ns = lab.router_ns(router);
    let mut args = vec!["netns", "exec", ns.as_str(), "iptables-save"];
    if counters {
        args.push("-c");
    }
    // Drop the timestamped comment lines.
    run("ip", &args)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a TCP connection from `from` to `to:port` is answered by an
/// `nc -l` started (and seen listening) in `server`. A connection that
/// fails must have been filtered (timed out): a refusal means nothing
/// listened, and proves nothing about a firewall.
fn tcp_connects(lab: &Lab, server: &str, port: u16, from: &str, to: &str) -> bool {
    let port = port.to_string();
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &lab.ns(server), "nc", "-l", "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening = || {
        run("ip", &["netns", "exec", &lab.ns(server), "ss", "-ltn"]).contains(&format!(":{port} "))
    };
    wait_until(Duration::from_secs(5), "nc listening", listening);
    // A router's namespace is given whole (`Lab::router_ns`).
    let ns = if from.starts_with(&lab.ns("")) {
        from.to_string()
    } else {
        lab.ns(from)
    };
    let out = run_raw(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "sh",
            "-c",
            &format!("echo hello | nc -v -N -w 2 {to} {port}"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        assert!(listening(), "{to}:{port}: the listener went away");
        assert!(
            stderr.contains("timed out"),
            "{from} → {to}:{port} failed without being filtered: {stderr}"
        );
    }
    // SAFETY: the nc this test started, by its pid.
    unsafe { libc::kill(listener.id() as i32, libc::SIGKILL) };
    let _ = listener.wait();
    out.status.success()
}

#[test]
#[ignore = "needs root"]
fn east_west_crosses_the_network_node_with_both_tags() {
    require_root("east_west_crosses_the_network_node_with_both_tags");
    let lab = Lab::seed();
    assert!(
        lab.ping("instance1", "192.168.2.11", 1),
        "instance1 → instance2 through router1"
    );
    let wire = lab.capture("network", "eth1", "vlan and icmp");
    assert!(lab.ping("instance1", "192.168.2.11", 3));
    let wire = wire.finish();
    let requests: Vec<&String> = icmp_with(&wire, "echo request");
    let replies: Vec<&String> = icmp_with(&wire, "echo reply");
    assert!(
        requests.iter().any(|l| l.contains("vlan 101")),
        "request on 101: {wire:#?}"
    );
    assert!(
        requests.iter().any(|l| l.contains("vlan 102")),
        "request on 102: {wire:#?}"
    );
    assert!(
        replies.iter().any(|l| l.contains("vlan 102")),
        "reply on 102: {wire:#?}"
    );
    assert!(
        replies.iter().any(|l| l.contains("vlan 101")),
        "reply on 101: {wire:#?}"
    );
    // The order on the network node's wire: in on 101 before out on 102.
    let first_101 = wire
        .iter()
        .position(|l| l.contains("echo request") && l.contains("vlan 101"));
    let first_102 = wire
        .iter()
        .position(|l| l.contains("echo request") && l.contains("vlan 102"));
    assert!(first_101 < first_102, "{wire:#?}");
    for local in ["vlan 1,", "vlan 2,"] {
        assert!(
            !wire.iter().any(|l| l.contains(local)),
            "a local tag on the wire: {wire:#?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn snat_hides_instances_behind_the_gateway_address() {
    require_root("snat_hides_instances_behind_the_gateway_address");
    let lab = Lab::seed();
    let outside = lab.capture("internet", "eth0", "icmp");
    assert!(lab.ping("instance3", INTERNET, 3), "instance3 → internet");
    let seen = outside.finish();
    let requests: Vec<&String> = icmp_with(&seen, "echo request");
    assert!(requests.len() >= 3, "{seen:#?}");
    for l in &requests {
        assert!(
            l.contains(&format!("{GATEWAY} > {INTERNET}")),
            "not SNATed to the gateway: {l}"
        );
    }
    assert!(
        !seen.iter().any(|l| l.contains("192.168.")),
        "a private address got out: {seen:#?}"
    );
}

#[test]
#[ignore = "needs root"]
fn floating_ip_is_the_instances_face_both_ways() {
    require_root("floating_ip_is_the_instances_face_both_ways");
    let lab = Lab::seed();
    // Outbound: instance1 appears as its floating IP.
    let outside = lab.capture("internet", "eth0", "icmp");
    assert!(lab.ping("instance1", INTERNET, 2), "instance1 → internet");
    let seen = outside.finish();
    let requests: Vec<&String> = icmp_with(&seen, "echo request");
    assert!(!requests.is_empty(), "{seen:#?}");
    for l in &requests {
        assert!(
            l.contains(&format!("{FIP1} > {INTERNET}")),
            "not from the floating IP: {l}"
        );
    }
    // Inbound: the floating IP reaches instance1, from the real source.
    let inside = lab.capture("instance1", "eth0", "icmp");
    assert!(lab.ping("internet", FIP1, 2), "internet → floating IP");
    let seen = inside.finish();
    assert!(
        icmp(&seen).iter().any(
            |l| l.contains(&format!("{INTERNET} > 192.168.1.11")) && l.contains("echo request")
        ),
        "instance1 did not see the DNATed request: {seen:#?}"
    );
}

#[test]
#[ignore = "needs root"]
fn the_router_namespace_looks_like_a_liberty_router() {
    require_root("the_router_namespace_looks_like_a_liberty_router");
    let lab = Lab::seed();
    let ns = lab.router_ns("router1");
    assert!(ns.contains(".qrouter-"), "{ns}");
    let addrs = run("ip", &["-n", &ns, "-br", "addr"]);
    for expected in [
        "qr-",
        "192.168.1.1/24",
        "192.168.2.1/24",
        "qg-",
        "203.0.113.101/24",
        "203.0.113.102/32",
    ] {
        assert!(
            addrs.contains(expected),
            "router lacks {expected}:\n{addrs}"
        );
    }
    assert!(run("ip", &["-n", &ns, "route"]).contains("default via 203.0.113.1"));
    let out = lab.daemon.ovslab_ok(&[
        "exec", "--lab", &lab.name, "router1", "--", "ip", "netns", "identify",
    ]);
    assert_eq!(out.trim(), ns);
    let status: serde_json::Value =
        serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
    let router = &status["routers"][0];
    assert_eq!(router["name"], "router1", "{status}");
    assert_eq!(router["namespace"], ns.as_str(), "{status}");
    assert_eq!(router["namespace_exists"], true, "{status}");
    assert_eq!(status["healthy"], true, "{status}");

    let save = iptables_save(&lab, "router1", false);
    let qg = addrs
        .split_whitespace()
        .find(|w| w.starts_with("qg-"))
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    for rule in [
        "-A PREROUTING -j neutron-l3-agent-PREROUTING".to_string(),
        format!(
            "-A neutron-l3-agent-PREROUTING -d {FIP1}/32 -j DNAT --to-destination 192.168.1.11"
        ),
        format!("-A neutron-l3-agent-OUTPUT -d {FIP1}/32 -j DNAT --to-destination 192.168.1.11"),
        format!("-A neutron-l3-agent-float-snat -s 192.168.1.11/32 -j SNAT --to-source {FIP1}"),
        "-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat".to_string(),
        format!("-A neutron-l3-agent-snat -o {qg} -j SNAT --to-source {GATEWAY}"),
        format!("-A neutron-l3-agent-mark -i {qg} -j MARK --set-xmark 0x2/0xffff"),
    ] {
        assert!(
            save.contains(&rule),
            "iptables-save lacks `{rule}`:\n{save}"
        );
    }
    // Re-applying an unchanged router changes nothing, counters included:
    // a ruleset written again would start every counter from zero. Packets
    // the lab sends by itself meanwhile (an IGMP report, say) may only raise
    // them.
    assert!(lab.ping("instance3", INTERNET, 1));
    let before = counted_rules(&iptables_save(&lab, "router1", true));
    assert!(
        before.iter().any(|(_, packets, _)| *packets > 0),
        "the ping counted nowhere: {before:#?}"
    );
    let out = lab.up();
    assert!(out.contains("no changes"), "{out}");
    let after = counted_rules(&iptables_save(&lab, "router1", true));
    let rules = |v: &[(String, u64, u64)]| v.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(rules(&after), rules(&before), "the ruleset changed");
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a.1 >= b.1 && a.2 >= b.2,
            "counters went back, so the rules were written again: {b:?} -> {a:?}"
        );
    }
}

/// The rules of an `iptables-save -c` with their packet and byte counters,
/// in order.
fn counted_rules(save: &str) -> Vec<(String, u64, u64)> {
    save.lines()
        .filter_map(|line| {
            let (counters, rule) = line.strip_prefix('[')?.split_once("] ")?;
            let (packets, bytes) = counters.split_once(':')?;
            Some((rule.to_string(), packets.parse().ok()?, bytes.parse().ok()?))
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn the_security_group_filters_inbound_and_lets_answers_back() {
    require_root("the_security_group_filters_inbound_and_lets_answers_back");
    let lab = Lab::seed();
    // Members of the same group may connect (remote group rule)…
    assert!(
        tcp_connects(&lab, "instance1", 5001, "instance3", "192.168.1.11"),
        "instance3 → instance1 TCP"
    );
    // …but not the router (on the network node, not a member), nor the outside via the floating IP.
    let router = lab.router_ns("router1");
    assert!(
        !tcp_connects(&lab, "instance1", 5002, &router, "192.168.1.11"),
        "router → instance1 TCP got in"
    );
    assert!(
        !tcp_connects(&lab, "instance1", 5003, "internet", FIP1),
        "internet → floating IP TCP got in"
    );
    // ICMP is allowed in.
    assert!(lab.ping("internet", FIP1, 1));
    // Outbound TCP through NAT gets its answer.
    assert!(
        tcp_connects(&lab, "internet", 5004, "instance1", INTERNET),
        "instance1 → internet TCP"
    );
    // The firewall is Neutron's hybrid one, on the compute node.
    let save = run(
        "ip",
        &["netns", "exec", &lab.ns("compute1"), "iptables-save"],
    );
    for expected in [
        "neutron-openvswi-sg-chain",
        "--physdev-is-bridged",
        "neutron-openvswi-sg-fallback",
        "CT --zone",
    ] {
        assert!(
            save.contains(expected),
            "compute1 lacks {expected}:\n{save}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn a_spoofed_source_goes_nowhere() {
    require_root("a_spoofed_source_goes_nowhere");
    let lab = Lab::seed();
    assert!(lab.ping("instance1", "192.168.1.13", 1));
    let at_instance4 = lab.capture("instance4", "eth0", "icmp or arp");
    let ok = |args: &[&str]| assert!(lab.in_ns("instance1", args).status.success(), "{args:?}");
    ok(&["ip", "addr", "add", "192.168.1.99/24", "dev", "eth0"]);
    let out = lab.in_ns(
        "instance1",
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "192.168.1.99",
            "192.168.1.13",
        ],
    );
    assert!(!out.status.success(), "a spoofed source got an answer");
    let seen = at_instance4.finish();
    assert!(
        !seen.iter().any(|l| l.contains("192.168.1.99")),
        "instance4 saw the spoofed source: {seen:#?}"
    );
}

#[test]
#[ignore = "needs root"]
fn full_size_packets_cross_fabric_and_router() {
    require_root("full_size_packets_cross_fabric_and_router");
    let lab = Lab::seed();
    for (from, to) in [
        ("instance1", "192.168.1.12"),
        ("instance1", "192.168.2.11"),
        ("instance3", INTERNET),
    ] {
        let out = lab.in_ns(
            from,
            &["ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", to],
        );
        assert!(
            out.status.success(),
            "1500-byte DF ping {from} → {to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `ovslab check` on the seed lab; returns (success, stdout).
fn check(lab: &Lab) -> (bool, String) {
    let out = lab.daemon.ovslab(&["check", &lab.name]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line_of<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name}:\n{report}"))
}

#[test]
#[ignore = "needs root"]
fn every_declared_check_passes_and_can_fail() {
    require_root("every_declared_check_passes_and_can_fail");
    let lab = Lab::seed();
    let (ok, report) = check(&lab);
    assert!(ok, "ovslab check failed on a healthy lab:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("PASS")).count(),
        12,
        "{report}"
    );

    // Remove the router's SNAT to the gateway by hand: the snat check fails.
    let ns = lab.router_ns("router1");
    let save = run("ip", &["netns", "exec", &ns, "iptables-save", "-t", "nat"]);
    let rule = save
        .lines()
        .find(|l| l.starts_with("-A neutron-l3-agent-snat -o qg-"))
        .unwrap_or_else(|| panic!("no SNAT rule:\n{save}"))
        .trim_start_matches("-A ")
        .to_string();
    let mut args = vec!["netns", "exec", ns.as_str(), "iptables", "-t", "nat", "-D"];
    args.extend(rule.split_whitespace());
    run("ip", &args);
    let (ok, report) = check(&lab);
    assert!(!ok, "check passed without SNAT:\n{report}");
    assert!(line_of(&report, "snat").starts_with("FAIL"), "{report}");
    assert!(
        line_of(&report, "floating-ip-out").starts_with("PASS"),
        "{report}"
    );

    // `up` repairs it; then delete compute1's VLAN translation flow.
    lab.up();
    let (ok, report) = check(&lab);
    assert!(ok, "up did not repair the NAT:\n{report}");
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    let (ok, report) = check(&lab);
    assert!(!ok, "check passed without the translation flow:\n{report}");
    assert!(
        line_of(&report, "same-network-across-nodes").starts_with("FAIL"),
        "{report}"
    );
    assert!(
        line_of(&report, "same-node-stays-on-br-int").starts_with("PASS"),
        "{report}"
    );

    // Put instance2's port on net1's local VLAN by hand: the layer-2
    // isolation check sees its frames arrive and fails.
    lab.up();
    let ports = lab.vsctl(
        "compute2",
        &[
            "--format=csv",
            "--no-headings",
            "--columns=name,tag",
            "list",
            "Port",
        ],
    );
    let qvo = ports
        .lines()
        .find(|l| l.starts_with("qvo") && l.ends_with(",2"))
        .unwrap_or_else(|| panic!("no qvo with tag 2:\n{ports}"))
        .split(',')
        .next()
        .unwrap()
        .to_string();
    lab.vsctl("compute2", &["set", "Port", &qvo, "tag=1"]);
    let (ok, report) = check(&lab);
    assert!(
        !ok,
        "check passed with net2's port on net1's VLAN:\n{report}"
    );
    assert!(
        line_of(&report, "net1-and-net2-isolated-at-layer-2").starts_with("FAIL"),
        "{report}"
    );
}
