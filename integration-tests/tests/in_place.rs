//! In-place changes, end to end: the seed lab is edited step by step — an
//! instance, a floating IP, a security-group rule, a network and a router
//! interface added, an instance removed, then each addition removed again —
//! and each `ovslab up` of the edited file changes only what changed: no
//! link of the lab that stays is recreated (every ifindex is kept),
//! compute1's flows other than the removed instance's stay, instance3's
//! port flows stay, instance1's and instance3's firewall chains stay, and
//! three continuous pings (same network across nodes, routed, through NAT)
//! lose nothing across all of it.

use std::process::{Command, Stdio};

use ovslab_integration_tests::{Lab, recreated, require_root, run};

/// The seed lab with a second group `web` on instance2.
fn base() -> String {
    ovslab_topology::SEED_YAML
        .replace(
            "security_groups:\n  - name: default\n",
            "security_groups:\n  - name: web\n    rules:\n      - { direction: ingress, protocol: tcp, port_range_min: 80, port_range_max: 80 }\n  - name: default\n",
        )
        .replacen(
            "    address: 192.168.2.11\n    security_groups: [default]",
            "    address: 192.168.2.11\n    security_groups: [default, web]",
            1,
        )
}

fn edits(base: &str) -> Vec<(&'static str, String)> {
    let add_instance = base.replace(
        "\n# What must hold",
        "  - name: instance5\n    node: compute2\n    network: net1\n    address: 192.168.1.14\n    security_groups: [default]\n\n# What must hold",
    );
    let add_fip = add_instance.replacen(
        "    address: 192.168.1.12\n",
        "    address: 192.168.1.12\n    floating_ip: 203.0.113.103\n",
        1,
    );
    let add_rule = add_fip.replace(
        "port_range_min: 80, port_range_max: 80 }\n",
        "port_range_min: 80, port_range_max: 80 }\n      - { direction: ingress, protocol: tcp, port_range_min: 443, port_range_max: 443 }\n",
    );
    let add_network = add_rule
        .replace(
            "\n# Reached through the network node",
            "  - name: net3\n    physical_network: physnet1\n    segmentation_id: 103\n    cidr: 192.168.3.0/24\n    gateway: 192.168.3.1\n\n# Reached through the network node",
        )
        .replace(
            "\n# What must hold",
            "  - name: instance6\n    node: compute2\n    network: net3\n    address: 192.168.3.11\n    security_groups: [default]\n\n# What must hold",
        );
    let add_interface =
        add_network.replace("interfaces: [net1, net2]", "interfaces: [net1, net2, net3]");
    let remove_instance = add_interface
        .replace(
            "  - name: instance4\n    node: compute1\n    network: net1\n    address: 192.168.1.13\n    security_groups: [default]\n",
            "",
        )
        .replace(
            "  - name: same-node-stays-on-br-int\n    from: instance1\n    to: instance4\n    avoids: [compute1, compute2, network]\n",
            "",
        );
    // And back: each addition undone, one at a time.
    let remove_rule = remove_instance.replace(
        "      - { direction: ingress, protocol: tcp, port_range_min: 443, port_range_max: 443 }\n",
        "",
    );
    let remove_fip = remove_rule.replace("    floating_ip: 203.0.113.103\n", "");
    let remove_interface =
        remove_fip.replace("interfaces: [net1, net2, net3]", "interfaces: [net1, net2]");
    let remove_network = remove_interface
        .replace(
            "  - name: net3\n    physical_network: physnet1\n    segmentation_id: 103\n    cidr: 192.168.3.0/24\n    gateway: 192.168.3.1\n",
            "",
        )
        .replace(
            "  - name: instance6\n    node: compute2\n    network: net3\n    address: 192.168.3.11\n    security_groups: [default]\n",
            "",
        );
    let steps = vec![
        ("add an instance", add_instance),
        ("add a floating IP", add_fip),
        ("add a security-group rule", add_rule),
        ("add a network (with an instance on it)", add_network),
        ("add a router interface", add_interface),
        ("remove an instance", remove_instance),
        ("remove the security-group rule", remove_rule),
        ("remove the floating IP", remove_fip),
        ("remove the router interface", remove_interface),
        ("remove the network (and its instance)", remove_network),
    ];
    // Each step really is an edit of the previous one.
    for pair in steps.windows(2) {
        assert_ne!(pair[0].1, pair[1].1, "{} edits nothing", pair[1].0);
    }
    steps
}

/// instance1's devices on compute1 and in its namespace, with ifindexes.
fn instance1_links(lab: &Lab) -> Vec<String> {
    let plug = lab.plug("instance1");
    let mut out = Vec::new();
    for dev in [
        &plug.tap,
        &plug.qbr,
        &plug.qvb,
        &plug.qvo,
        &"eth1".to_string(),
    ] {
        let line = run(
            "ip",
            &["-n", &lab.ns("compute1"), "-o", "link", "show", dev],
        );
        out.push(line.split(':').next().unwrap().to_string() + " " + dev);
    }
    let line = run(
        "ip",
        &["-n", &lab.ns("instance1"), "-o", "link", "show", "eth0"],
    );
    out.push(line.split(':').next().unwrap().to_string() + " eth0");
    out
}

/// A node's flows on both bridges (ports by name, no counters), without
/// the lines mentioning `except` (a removed port).
fn node_flows(lab: &Lab, node: &str, except: &str) -> Vec<String> {
    let mut out = Vec::new();
    for bridge in ["br-int", "br-vlan"] {
        out.extend(
            lab.flows(node, bridge)
                .lines()
                .filter(|l| !l.contains(except))
                .map(|l| format!("{bridge} {l}")),
        );
    }
    out.sort();
    out
}

/// The flows of one port (those naming it) on a node's br-int.
fn port_flows(lab: &Lab, node: &str, port: &str) -> Vec<String> {
    let mut out: Vec<String> = lab
        .flows(node, "br-int")
        .lines()
        .filter(|l| l.contains(port))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

/// An instance's firewall chains on its node (rules without counters).
fn instance_rules(lab: &Lab, instance: &str, node: &str) -> Vec<String> {
    let plug = lab.plug(instance);
    let id: String = plug.tap.chars().skip(3).take(10).collect();
    run("ip", &["netns", "exec", &lab.ns(node), "iptables-save"])
        .lines()
        .filter(|l| l.contains(&id))
        .map(str::to_string)
        .collect()
}

/// A continuous ping (every 50 ms) from an object's namespace, killed if
/// the test fails before it is finished.
struct Pinger {
    what: String,
    child: std::process::Child,
    started: std::time::Instant,
}

/// How long a ping runs at least, so that a change that is over quickly
/// still has answers after it to judge by.
const PING_AT_LEAST: std::time::Duration = std::time::Duration::from_millis(1500);

impl Pinger {
    fn start(lab: &Lab, from: &str, to: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(from)])
            .args(["ping", "-n", "-i", "0.05", "-W", "1", "-w", "120", to])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Pinger {
            what: format!("{from} → {to}"),
            child,
            started: std::time::Instant::now(),
        }
    }

    /// Stops the ping (SIGINT, so it prints its count); panics if a
    /// request went unanswered while a later one was answered (the last
    /// few may still be on their way when the ping stops: not a loss).
    fn assert_no_loss(self) {
        // Pinging on after the change for longer than the unanswered tail
        // allowed below (20 requests, 1 s): an outage the change caused
        // shows as lost requests before the tail, or as a longer tail.
        let after_the_change = std::time::Duration::from_millis(1500);
        std::thread::sleep(
            PING_AT_LEAST
                .saturating_sub(self.started.elapsed())
                .max(after_the_change),
        );
        let what = self.what.clone();
        let out = self.finish();
        let answered: std::collections::BTreeSet<u64> = out
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        let summary = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no summary: {out}"))
            .to_string();
        let sent: u64 = summary
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap();
        let last = answered.last().copied().unwrap_or(0);
        let lost: Vec<u64> = (1..=last).filter(|s| !answered.contains(s)).collect();
        assert!(lost.is_empty(), "{what}: requests {lost:?} lost: {summary}");
        // What was not answered at the end was in flight, not an outage.
        assert!(
            sent - last <= 20,
            "{what}: no answer to the last {} requests: {summary}",
            sent - last
        );
        assert!(last > 10, "{what}: hardly any answers: {summary}");
    }

    /// Stops the ping (SIGINT, so it prints its count); returns its output.
    fn finish(mut self) -> String {
        // SAFETY: signalling the ping this test started, by its pid (not
        // reaped yet, so not reused).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        let _ = self.child.wait();
        format!("{}:\n{stdout}", self.what)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        // SAFETY: the ping this test started, by its pid (a no-op if done).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn edits_change_only_what_changed_and_lose_no_packet() {
    require_root("edits_change_only_what_changed_and_lose_no_packet");
    let lab = Lab::from_yaml(&base());
    let instance4_qvo = lab.plug("instance4").qvo;
    let instance3_qvo = lab.plug("instance3").qvo;
    let links = instance1_links(&lab);
    let compute1_flows = node_flows(&lab, "compute1", &instance4_qvo);
    let instance3_flows = port_flows(&lab, "compute2", &instance3_qvo);
    assert!(!instance3_flows.is_empty(), "no flows name {instance3_qvo}");
    let rules = [
        instance_rules(&lab, "instance1", "compute1"),
        instance_rules(&lab, "instance3", "compute2"),
    ];
    assert!(rules.iter().all(|r| r.len() > 5), "{rules:?}");

    // Untouched instances keep talking: on the same network across nodes,
    // routed by router1 (which gains and loses an interface), and out
    // through router1's NAT as a floating IP (while another is added and
    // removed).
    let pings = [
        Pinger::start(&lab, "instance1", "192.168.1.12"),
        Pinger::start(&lab, "instance2", "192.168.1.11"),
        Pinger::start(&lab, "instance1", "203.0.113.1"),
    ];

    let text = ovslab_integration_tests::rename_lab(&base(), &lab.name);
    for (what, edited) in edits(&text) {
        let before = lab.links();
        std::fs::write(&lab.file, &edited).unwrap();
        let out = lab.up();
        assert!(
            !out.contains("no changes"),
            "{what}: nothing changed:\n{out}"
        );
        let after = lab.links();
        assert_eq!(
            recreated(&before, &after),
            Vec::<String>::new(),
            "{what}: links were recreated:\n{out}"
        );
        assert_eq!(
            instance1_links(&lab),
            links,
            "{what}: instance1's links changed"
        );
        assert_eq!(
            node_flows(&lab, "compute1", &instance4_qvo),
            compute1_flows,
            "{what}: compute1's flows changed"
        );
        assert_eq!(
            port_flows(&lab, "compute2", &instance3_qvo),
            instance3_flows,
            "{what}: instance3's flows changed"
        );
        assert_eq!(
            [
                instance_rules(&lab, "instance1", "compute1"),
                instance_rules(&lab, "instance3", "compute2"),
            ],
            rules,
            "{what}: instance1's or instance3's rules changed"
        );
        check_step(&lab, what);
    }
    // Back to the base lab (less instance4): a second up changes nothing.
    assert!(lab.up().contains("no changes"));

    for ping in pings {
        ping.assert_no_loss();
    }
}

/// What a step must have done, seen from outside.
fn check_step(lab: &Lab, what: &str) {
    let compute2_rules = || {
        run(
            "ip",
            &["netns", "exec", &lab.ns("compute2"), "iptables-save"],
        )
    };
    let nat = || {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.router_ns("router1"),
                "iptables-save",
                "-t",
                "nat",
            ],
        )
    };
    let router_links = || run("ip", &["-n", &lab.router_ns("router1"), "-o", "addr"]);
    match what {
        "add an instance" => assert!(lab.ping("instance1", "192.168.1.14", 1), "instance5"),
        "add a floating IP" => assert!(nat().contains("203.0.113.103"), "{what}"),
        "add a security-group rule" => assert!(compute2_rules().contains("--dport 443"), "{what}"),
        "add a network (with an instance on it)" => {
            assert!(lab.namespaces().contains(&lab.ns("instance6")), "{what}")
        }
        "add a router interface" => {
            assert!(router_links().contains("192.168.3.1/24"), "{what}");
            assert!(
                lab.ping("instance1", "192.168.3.11", 1),
                "instance6 on net3"
            );
        }
        "remove an instance" => {
            assert!(!lab.namespaces().contains(&lab.ns("instance4")), "{what}")
        }
        "remove the security-group rule" => {
            assert!(!compute2_rules().contains("--dport 443"), "{what}")
        }
        "remove the floating IP" => assert!(!nat().contains("203.0.113.103"), "{what}"),
        "remove the router interface" => {
            assert!(!router_links().contains("192.168.3.1/24"), "{what}")
        }
        "remove the network (and its instance)" => {
            assert!(!lab.namespaces().contains(&lab.ns("instance6")), "{what}")
        }
        other => panic!("no check for step {other}"),
    }
}

/// The same through the daemon's labs directory: the lab's file edited
/// there (an instance added) and SIGHUP; the daemon applies the edit in
/// place — no link recreated, instance1's ping loses nothing.
#[test]
#[ignore = "needs root"]
fn a_reload_applies_an_edit_in_place() {
    require_root("a_reload_applies_an_edit_in_place");
    let lab = Lab::seed();
    let before = lab.links();
    let ping = Pinger::start(&lab, "instance1", "192.168.1.12");
    let edited = ovslab_integration_tests::rename_lab(ovslab_topology::SEED_YAML, &lab.name)
        .replace(
            "\n# What must hold",
            "  - name: instance5\n    node: compute2\n    network: net1\n    address: 192.168.1.14\n    security_groups: [default]\n\n# What must hold",
        )
        // The new member is admitted by the group's rule on compute1: the
        // remote group's ipset there gained its address.
        + "  - name: tcp-from-the-new-member\n    from: instance5\n    to: instance1\n    protocol: tcp\n    port: 5001\n";
    let dir = lab.daemon.labs_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.yaml", lab.name)), &edited).unwrap();
    lab.daemon.reload();
    ovslab_integration_tests::wait_until(
        std::time::Duration::from_secs(20),
        "instance5 reachable after the reload",
        || {
            lab.namespaces().contains(&lab.ns("instance5"))
                && lab.ping("instance1", "192.168.1.14", 1)
        },
    );
    assert_eq!(
        recreated(&before, &lab.links()),
        Vec::<String>::new(),
        "the reload recreated links"
    );
    ping.assert_no_loss();
    let report = lab.daemon.ovslab_ok(&["check", &lab.name]);
    assert!(
        report.contains("PASS")
            && report.contains("tcp-from-the-new-member")
            && !report.contains("FAIL"),
        "{report}"
    );
}
