//! In-place changes, end to end: the seed lab is edited step by step — an
//! instance added, a floating IP added, a security-group rule added, a
//! network with a router interface added, an instance removed — and each
//! `ovslab up` of the edited file changes only what changed: instance1's
//! devices keep their ifindexes, compute1's flows other than the removed
//! instance's stay, instance1's firewall chains stay, and a continuous
//! ping from instance1 to instance3 loses nothing across all of it.

use std::process::{Command, Stdio};

use ovslab_integration_tests::{Lab, require_root, run};
use ovslab_topology::naming::HybridPlug;

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
        .replace("interfaces: [net1, net2]", "interfaces: [net1, net2, net3]")
        .replace(
            "\n# What must hold",
            "  - name: instance6\n    node: compute2\n    network: net3\n    address: 192.168.3.11\n    security_groups: [default]\n\n# What must hold",
        );
    let remove_instance = add_network
        .replace(
            "  - name: instance4\n    node: compute1\n    network: net1\n    address: 192.168.1.13\n    security_groups: [default]\n",
            "",
        )
        .replace(
            "  - name: same-node-stays-on-br-int\n    from: instance1\n    to: instance4\n    avoids: [compute1, compute2, network]\n",
            "",
        );
    vec![
        ("add an instance", add_instance),
        ("add a floating IP", add_fip),
        ("add a security-group rule", add_rule),
        ("add a network and a router interface", add_network),
        ("remove an instance", remove_instance),
    ]
}

/// instance1's devices on compute1 and in its namespace, with ifindexes.
fn instance1_links(lab: &Lab) -> Vec<String> {
    let plug = HybridPlug::new(&lab.name, "instance1");
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

/// compute1's flows, without the lines of `except` (a removed port).
fn compute1_flows(lab: &Lab, except: &str) -> Vec<String> {
    let mut out = Vec::new();
    for bridge in ["br-int", "br-vlan"] {
        out.extend(
            lab.flows("compute1", bridge)
                .lines()
                .filter(|l| !l.contains(except))
                .map(|l| format!("{bridge} {l}")),
        );
    }
    out.sort();
    out
}

/// instance1's firewall chains on compute1 (rules without counters).
fn instance1_rules(lab: &Lab) -> Vec<String> {
    let plug = HybridPlug::new(&lab.name, "instance1");
    let id: String = plug.tap.chars().skip(3).take(10).collect();
    run(
        "ip",
        &["netns", "exec", &lab.ns("compute1"), "iptables-save"],
    )
    .lines()
    .filter(|l| l.contains(&id))
    .map(str::to_string)
    .collect()
}

/// A background ping, killed if the test fails before it is finished.
struct Pinger(std::process::Child);

impl Pinger {
    fn finish(mut self) -> std::process::Output {
        let mut stdout = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        let status = self.0.wait().unwrap();
        std::process::Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        // SAFETY: the ping this test started, by its pid (a no-op if done).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[test]
fn edits_change_only_what_changed_and_lose_no_packet() {
    if !require_root("edits_change_only_what_changed_and_lose_no_packet") {
        return;
    }
    let lab = Lab::from_yaml(&base());
    let instance4_qvo = HybridPlug::new(&lab.name, "instance4").qvo;
    let links = instance1_links(&lab);
    let flows = compute1_flows(&lab, &instance4_qvo);
    let rules = instance1_rules(&lab);
    assert!(rules.len() > 5, "{rules:?}");

    let ns = lab.ns("instance1");
    let ping = Pinger(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "ping",
                "-i",
                "0.05",
                "-W",
                "1",
                "-w",
                "60",
                "192.168.1.12",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let text = ovslab_integration_tests::rename_lab(&base(), &lab.name);
    for (what, edited) in edits(&text) {
        std::fs::write(&lab.file, &edited).unwrap();
        let out = lab.up();
        assert!(
            !out.contains("no changes"),
            "{what}: nothing changed:\n{out}"
        );
        assert_eq!(
            instance1_links(&lab),
            links,
            "{what}: instance1's links changed"
        );
        assert_eq!(
            compute1_flows(&lab, &instance4_qvo),
            flows,
            "{what}: compute1's flows changed"
        );
        assert_eq!(
            instance1_rules(&lab),
            rules,
            "{what}: instance1's rules changed"
        );
    }
    // The changes took effect.
    assert!(lab.ping("instance1", "192.168.1.14", 1), "instance5");
    assert!(
        lab.ping("instance1", "192.168.3.11", 1),
        "instance6 on net3"
    );
    assert!(!lab.namespaces().contains(&lab.ns("instance4")));
    let save = run(
        "ip",
        &["netns", "exec", &lab.ns("compute2"), "iptables-save"],
    );
    assert!(save.contains("--dport 443"), "the new rule");
    let nat = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.router_ns("router1"),
            "iptables-save",
            "-t",
            "nat",
        ],
    );
    assert!(nat.contains("203.0.113.103"), "the new floating IP");

    // SIGINT ends the ping, which then prints its count.
    // SAFETY: signalling the ping this test started, by its pid.
    unsafe { libc::kill(ping.0.id() as i32, libc::SIGINT) };
    let out = ping.finish();
    let summary = String::from_utf8_lossy(&out.stdout);
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary: {summary}"));
    assert!(line.contains(" 0% packet loss"), "packets lost: {line}");
}
