//! Self-service networks over VXLAN and GRE, end to end: the real daemon
//! builds `lab-topologies/selfservice-vxlan.yaml` (and variants), `ovslab
//! check` proves the Networking Guide's walkthroughs on the wire, and
//! independent observers (`tcpdump` on the overlay switch, `ovs-ofctl`,
//! `ovs-vsctl`, `ping`) check br-tun, the tunnels and the encapsulation.

use ovslab_integration_tests::{Lab, require_root};

const SELFSERVICE: &str = include_str!("../../lab-topologies/selfservice-vxlan.yaml");
const INSTANCE3: &str = "192.168.1.12";

/// The self-service lab as GRE: the file's documented one-line changes.
fn gre() -> String {
    SELFSERVICE
        .replace("    type: vxlan", "    type: gre")
        .replace("tunnel_types: [vxlan]", "tunnel_types: [gre]")
}

/// `ovslab check`: whether every check passed, and the report.
fn check(lab: &Lab) -> (bool, String) {
    let out = lab.daemon.ovslab(&["check", &lab.name]);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

/// A flow line of `ovs-ofctl --names --no-stats dump-flows` without its
/// cookie (each lab has its own) and with `reset_counts` and spacing
/// normalised.
fn normalised(line: &str) -> String {
    line.split(", ")
        .filter(|part| !part.trim_start().starts_with("cookie="))
        .collect::<Vec<_>>()
        .join(", ")
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root"]
fn the_selfservice_walkthroughs_hold_on_the_wire() {
    require_root("the_selfservice_walkthroughs_hold_on_the_wire");
    let lab = Lab::from_yaml(SELFSERVICE);
    let (ok, report) = check(&lab);
    assert!(ok, "ovslab check failed:\n{report}");
    for name in [
        "north-south-snat",
        "north-south-floating-ip-out",
        "north-south-floating-ip-in",
        "east-west-same-network",
        "east-west-different-networks",
        "networks-isolated-at-layer-2",
        "tcp-through-the-tunnel",
    ] {
        assert!(report.contains(name), "{name} not reported:\n{report}");
    }
}

#[test]
#[ignore = "needs root"]
fn same_network_across_compute_nodes_is_vxlan_with_its_vni() {
    require_root("same_network_across_compute_nodes_is_vxlan_with_its_vni");
    let lab = Lab::from_yaml(SELFSERVICE);
    assert!(lab.ping("instance1", INSTANCE3, 1), "first ping");
    // compute1's overlay cable, seen from the overlay switch, and the
    // network node's.
    let wire = lab.capture("overlay", "compute1", "udp port 4789");
    let network = lab.capture("overlay", "network", "udp port 4789");
    assert!(lab.ping("instance1", INSTANCE3, 3), "instance1 → instance3");
    let wire = wire.finish();
    let network = network.finish();
    // tcpdump prints the outer packet, then the frame inside on the next
    // line.
    let inner = |what: &str| {
        wire.windows(2)
            .any(|w| w[0].contains("VXLAN") && w[1].contains(what))
    };
    assert!(
        inner("ICMP echo request") && inner("ICMP echo reply"),
        "no encapsulated echo on compute1's overlay cable: {wire:#?}"
    );
    // The echoes' outer headers (other frames, such as a broadcast ARP
    // flooded to the router's node, may cross too).
    for pair in wire
        .windows(2)
        .filter(|w| w[0].contains("VXLAN") && w[1].contains("ICMP"))
    {
        let line = &pair[0];
        assert!(line.contains("vni 101"), "not VNI 101: {line}");
        // Outer addresses: the tunnel endpoints of compute1 and compute2.
        assert!(
            line.contains("10.0.1.2.") && line.contains("10.0.1.3."),
            "not between the compute nodes' endpoints: {line}"
        );
    }
    assert!(
        !network.iter().any(|l| l.contains("ICMP")),
        "the network node saw same-network traffic: {network:#?}"
    );
    // The instance's MTU leaves room for the encapsulation.
    let mtu = lab.in_ns("instance1", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1450");
}

#[test]
#[ignore = "needs root"]
fn br_tun_holds_liberty_flows_and_learns_from_tunnels() {
    require_root("br_tun_holds_liberty_flows_and_learns_from_tunnels");
    let lab = Lab::from_yaml(SELFSERVICE);
    // The node resolved its tunnel endpoints when the lab came up, not on
    // the first packet (which the userspace datapath would drop); the
    // kernel's answers may take a moment to reach vswitchd.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let neighbours = lab.appctl("compute1", &["tnl/neigh/show"]);
        if ["10.0.1.1", "10.0.1.3"]
            .iter()
            .all(|e| neighbours.contains(e))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "endpoints not resolved: {neighbours}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Tunnel ports named and configured as the agent does.
    let port = "vxlan-0a000103";
    assert_eq!(
        lab.vsctl("compute1", &["get", "Interface", port, "type"])
            .trim(),
        "vxlan"
    );
    let options = lab.vsctl("compute1", &["get", "Interface", port, "options"]);
    for option in [
        "df_default=\"true\"",
        "in_key=flow",
        "local_ip=\"10.0.1.2\"",
        "out_key=flow",
        "remote_ip=\"10.0.1.3\"",
    ] {
        assert!(options.contains(option), "{option} missing: {options}");
    }
    let flows: Vec<String> = lab
        .flows("compute1", "br-tun")
        .lines()
        .filter(|l| l.contains("actions="))
        .map(normalised)
        .collect();
    // Liberty's br_tun.py, as OVS prints it over OpenFlow 1.3 (the local
    // VLAN of selfservice1 on compute1 is 1; table 0 goes unnamed).
    for expected in [
        "priority=1,in_port=\"patch-int\" actions=resubmit(,2)",
        "priority=1,in_port=\"vxlan-0a000101\" actions=resubmit(,4)",
        "priority=1,in_port=\"vxlan-0a000103\" actions=resubmit(,4)",
        "priority=0 actions=drop",
        "table=2, priority=0,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,20)",
        "table=2, priority=0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)",
        "table=3, priority=0 actions=drop",
        "table=4, priority=1,tun_id=0x65 actions=push_vlan:0x8100,set_field:4097->vlan_vid,resubmit(,10)",
        "table=4, priority=0 actions=drop",
        "table=6, priority=0 actions=drop",
        "table=20, priority=0 actions=resubmit(,22)",
        "table=22, priority=0 actions=drop",
    ] {
        assert!(
            flows.iter().any(|f| f == expected),
            "missing `{expected}` in br-tun:\n{}",
            flows.join("\n")
        );
    }
    // The learn spec carries the agent's cookie (`setup_default_table`'s
    // `cookie=%(cookie)s`), which learned flows then carry.
    let agent = ovslab_topology::naming::agent_cookie(&lab.name, "compute1");
    let learn = format!(
        "table=10, priority=1 actions=learn(table=20,hard_timeout=300,priority=1,cookie={agent:#x},\
         NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
         load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:"
    );
    assert!(
        flows.iter().any(|f| f.starts_with(&learn)),
        "no learn flow:\n{}",
        flows.join("\n")
    );
    assert!(
        // Written with mod-flows, so at the default priority (not printed);
        // with l2population, to the nodes with ports on the network.
        flows.iter().any(|f| f
            == "table=22, dl_vlan=1 actions=pop_vlan,set_field:0x65->tun_id,\
            output:\"vxlan-0a000101\",output:\"vxlan-0a000103\""),
        "no flood flow for VLAN 1:\n{}",
        flows.join("\n")
    );
    // Traffic from compute2 teaches compute1's br-tun where instance3 is.
    assert!(lab.ping("instance1", INSTANCE3, 2));
    let learned = lab.flows("compute1", "br-tun");
    // It carries the agent's cookie, as Liberty's learned flows do.
    assert!(
        learned.lines().any(|l| l.contains("table=20")
            && l.contains("hard_timeout=300")
            && l.contains(&format!("cookie={agent:#x},"))
            && l.contains("output:")),
        "no learned flow in table 20 with the agent's cookie:\n{learned}"
    );
    // The daemon leaves learned flows alone: a converge changes nothing.
    let again = lab.up();
    assert!(
        !again.contains("br-tun"),
        "a converge touched br-tun after learning:\n{again}"
    );
}

#[test]
#[ignore = "needs root"]
fn the_gre_variant_carries_the_key() {
    require_root("the_gre_variant_carries_the_key");
    let lab = Lab::from_yaml(&gre());
    assert!(lab.ping("instance1", INSTANCE3, 1), "first ping");
    let wire = lab.capture("overlay", "compute1", "proto gre");
    assert!(lab.ping("instance1", INSTANCE3, 3), "instance1 → instance3");
    let wire = wire.finish();
    assert!(
        wire.iter()
            .any(|l| l.contains("GRE") && l.contains("key=0x65") && l.contains("ICMP")),
        "no GRE with key 101 on compute1's overlay cable: {wire:#?}"
    );
    assert_eq!(
        lab.vsctl("compute1", &["get", "Interface", "gre-0a000103", "type"])
            .trim(),
        "gre"
    );
    let (ok, report) = check(&lab);
    assert!(ok, "ovslab check failed on GRE:\n{report}");
}

/// The self-service lab with a third compute node holding only a port on
/// selfservice2, which compute1 does not have; `l2pop` sets
/// `l2_population`.
fn with_compute3(l2pop: bool) -> String {
    SELFSERVICE
        .replace(
            "  - name: compute2\n    role: compute\n",
            "  - name: compute2\n    role: compute\n  - name: compute3\n    role: compute\n",
        )
        .replace(
            "\n# The Guide's four walkthroughs",
            "  - name: instance5\n    node: compute3\n    network: selfservice2\n    address: 192.168.2.15\n    security_groups: [default]\n\n# The Guide's four walkthroughs",
        )
        .replace(
            "l2_population: true",
            &format!("l2_population: {l2pop}"),
        )
}

/// Whether a broadcast on selfservice1 from compute1 (instance1's ARP
/// for instance3) reaches compute3's overlay cable.
fn broadcast_reaches_compute3(l2pop: bool) -> bool {
    let lab = Lab::from_yaml(&with_compute3(l2pop));
    let wire = lab.capture("overlay", "compute3", "udp port 4789");
    lab.in_ns("instance1", &["ip", "neigh", "flush", "all"]);
    assert!(lab.ping("instance1", INSTANCE3, 2), "instance1 → instance3");
    let wire = wire.finish();
    wire.iter()
        .any(|l| l.contains("vni 101") || l.contains("ARP, Request who-has 192.168.1.12"))
}

#[test]
#[ignore = "needs root"]
fn with_l2population_no_flood_reaches_a_node_without_ports_on_the_network() {
    require_root("with_l2population_no_flood_reaches_a_node_without_ports_on_the_network");
    assert!(
        !broadcast_reaches_compute3(true),
        "with l2population, selfservice1's broadcast reached compute3"
    );
}

#[test]
#[ignore = "needs root"]
fn without_l2population_a_broadcast_floods_every_tunnel() {
    require_root("without_l2population_a_broadcast_floods_every_tunnel");
    assert!(
        broadcast_reaches_compute3(false),
        "without l2population, selfservice1's broadcast should reach compute3 too"
    );
}

#[test]
#[ignore = "needs root"]
fn vlan_and_vxlan_networks_mix_in_one_lab() {
    require_root("vlan_and_vxlan_networks_mix_in_one_lab");
    // selfservice2 becomes a VLAN network on physnet1.
    let yaml = SELFSERVICE
        .replace(
            "\nnetworks:\n",
            "\nphysical_networks:\n  - name: physnet1\n\nnetworks:\n",
        )
        .replace(
            "    type: vxlan\n    segmentation_id: 102",
            "    type: vlan\n    physical_network: physnet1\n    segmentation_id: 102",
        );
    let lab = Lab::from_yaml(&yaml);
    assert!(lab.ping("instance1", "192.168.2.11", 1), "first ping");
    let overlay = lab.capture("overlay", "compute2", "udp port 4789");
    let physnet = lab.capture("physnet1", "compute2", "vlan");
    assert!(
        lab.ping("instance1", "192.168.2.11", 3),
        "instance1 (VXLAN) → instance2 (VLAN), through the router"
    );
    let overlay = overlay.finish();
    let physnet = physnet.finish();
    assert!(
        physnet
            .iter()
            .any(|l| l.contains("vlan 102") && l.contains("ICMP echo request")),
        "the routed request did not reach compute2 on VLAN 102: {physnet:#?}"
    );
    assert!(
        !overlay.iter().any(|l| l.contains("vni 102")),
        "VNI 102 does not exist any more: {overlay:#?}"
    );
    let (ok, report) = check(&lab);
    // The file's checks still name wire_vni 101 on selfservice1 only.
    assert!(ok, "ovslab check failed on the mixed lab:\n{report}");
}

#[test]
#[ignore = "needs root"]
fn nodes_networks_and_ports_added_in_place_bring_their_tunnels_and_flows() {
    require_root("nodes_networks_and_ports_added_in_place_bring_their_tunnels_and_flows");
    let lab = Lab::from_yaml(SELFSERVICE);
    let before = lab.flows("compute1", "br-tun");
    let learn_before: Vec<String> = before
        .lines()
        .filter(|l| l.contains("table=10"))
        .map(str::to_string)
        .collect();
    // A node with a port on selfservice1: every node gets a tunnel to it,
    // and compute1 floods selfservice1 to it and knows its port.
    std::fs::write(
        &lab.file,
        ovslab_integration_tests::rename_lab(
            &with_compute3(true).replace(
                "network: selfservice2\n    address: 192.168.2.15",
                "network: selfservice1\n    address: 192.168.1.15",
            ),
            &lab.name,
        ),
    )
    .unwrap();
    lab.up();
    let ports = lab.vsctl("compute1", &["list-ports", "br-tun"]);
    assert!(
        ports.contains("vxlan-0a000104"),
        "no tunnel to compute3: {ports}"
    );
    let after = lab.flows("compute1", "br-tun");
    assert!(
        after
            .lines()
            .any(|l| l.contains("table=22") && l.contains("output:\"vxlan-0a000104\"")),
        "compute1 does not flood to compute3:\n{after}"
    );
    assert!(
        lab.ping("instance1", "192.168.1.15", 2),
        "instance1 → instance5"
    );
    // Untouched flows keep their counters: the learn flow was not replaced.
    let learn_after: Vec<String> = lab
        .flows("compute1", "br-tun")
        .lines()
        .filter(|l| l.contains("table=10"))
        .map(str::to_string)
        .collect();
    assert_eq!(learn_before.len(), 1);
    assert_eq!(learn_after, learn_before, "the learn flow was replaced");
    // And taken away again: the tunnel and its flows go.
    std::fs::write(
        &lab.file,
        ovslab_integration_tests::rename_lab(SELFSERVICE, &lab.name),
    )
    .unwrap();
    lab.up();
    let ports = lab.vsctl("compute1", &["list-ports", "br-tun"]);
    assert!(
        !ports.contains("vxlan-0a000104"),
        "tunnel to compute3 left: {ports}"
    );
    assert!(
        !lab.flows("compute1", "br-tun").contains("vxlan-0a000104"),
        "flows to compute3 left"
    );
}

#[test]
#[ignore = "needs root"]
fn a_deleted_tunnel_port_and_br_tun_flows_are_repaired() {
    require_root("a_deleted_tunnel_port_and_br_tun_flows_are_repaired");
    let lab = Lab::create_with(SELFSERVICE, &["--audit-interval", "0.5"]);
    lab.up();
    assert!(lab.ping("instance1", INSTANCE3, 1));
    lab.vsctl("compute1", &["del-port", "br-tun", "vxlan-0a000103"]);
    lab.del_flows("compute2", "br-tun", "table=4");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ports = lab.vsctl("compute1", &["list-ports", "br-tun"]);
        let flows = lab.flows("compute2", "br-tun");
        if ports.contains("vxlan-0a000103") && flows.contains("tun_id=0x65") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not repaired in 20 s:\n{ports}\n{flows}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        lab.ping("instance1", INSTANCE3, 2),
        "instance1 → instance3 after repair"
    );
}

#[test]
#[ignore = "needs root"]
fn trace_shows_the_encapsulation_and_br_tun_on_both_ends() {
    require_root("trace_shows_the_encapsulation_and_br_tun_on_both_ends");
    let lab = Lab::from_yaml(SELFSERVICE);
    let out = lab.daemon.ovslab_ok(&[
        "trace",
        "--lab",
        &lab.name,
        "instance1",
        "instance3",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["answered"], true, "{out}");
    let hops = report["hops"].as_array().unwrap();
    let on_eth3: Vec<&serde_json::Value> = hops
        .iter()
        .filter(|h| h["device"] == "eth3" && h["leg"] == "request")
        .collect();
    assert_eq!(on_eth3.len(), 2, "out of compute1, into compute2: {out}");
    for hop in &on_eth3 {
        let e = &hop["encapsulation"];
        assert_eq!(e["kind"], "vxlan", "{hop}");
        assert_eq!(e["key"], 101, "{hop}");
        assert_eq!(e["src_ip"], "10.0.1.2", "{hop}");
        assert_eq!(e["dst_ip"], "10.0.1.3", "{hop}");
        // The probe's own addresses, inside the tunnel.
        assert_eq!(hop["src_ip"], "192.168.1.11", "{hop}");
    }
    // Into compute2: br-tun takes it from the tunnel port to the network's
    // local VLAN (table 4) and learns where instance1 is (table 10).
    let arriving = on_eth3.iter().find(|h| h["direction"] == "in").unwrap();
    let tables: Vec<(String, u64)> = arriving["bridge"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["bridge"].as_str().unwrap().to_string(),
                f["table"].as_u64().unwrap(),
            )
        })
        .collect();
    for want in [("br-tun", 0), ("br-tun", 4), ("br-tun", 10), ("br-int", 0)] {
        assert!(
            tables.contains(&(want.0.to_string(), want.1)),
            "no {want:?} on the way in: {arriving}"
        );
    }
    // Out of compute1: l2population's unicast flow (table 20) into the tunnel.
    let leaving = hops
        .iter()
        .find(|h| {
            h["leg"] == "request"
                && h["bridge"]["flows"].as_array().is_some_and(|f| {
                    f.iter()
                        .any(|s| s["bridge"] == "br-tun" && s["table"] == 20)
                })
        })
        .expect("a hop through compute1's br-tun table 20");
    assert!(
        leaving["bridge"]["flows"]
            .to_string()
            .contains("set_tunnel:0x65"),
        "{leaving}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_flat_network_is_untagged_on_the_wire_and_routed_like_any_other() {
    require_root("a_flat_network_is_untagged_on_the_wire_and_routed_like_any_other");
    // The seed lab with net1 flat on physnet1 (net2 stays VLAN 102).
    let yaml = ovslab_topology::SEED_YAML
        .replacen(
            "    physical_network: physnet1\n    segmentation_id: 101",
            "    type: flat\n    physical_network: physnet1",
            1,
        )
        .replace("    wire_vlan: 101\n", "");
    let lab = Lab::from_yaml(&yaml);
    assert!(lab.ping("instance1", INSTANCE3, 1), "first ping");
    let wire = lab.capture("physnet1", "compute1", "icmp or (vlan and icmp)");
    assert!(
        lab.ping("instance1", INSTANCE3, 3),
        "instance1 → instance3 on the flat network"
    );
    let wire = wire.finish();
    let icmp: Vec<&String> = wire.iter().filter(|l| l.contains("ICMP")).collect();
    assert!(
        icmp.iter().any(|l| l.contains("echo request")),
        "no echo on compute1's cable: {wire:#?}"
    );
    for line in &icmp {
        assert!(!line.contains("vlan"), "tagged on a flat network: {line}");
    }
    // br-int tags it with the local VLAN coming in, br-vlan strips it going out.
    let br_int = lab.flows("compute1", "br-int");
    assert!(
        br_int.contains("priority=3,in_port=\"int-br-vlan\",vlan_tci=0x0000/0x1fff actions=push_vlan:0x8100,set_field:4097->vlan_vid,NORMAL")
            || br_int.contains("priority=3,in_port=\"int-br-vlan\",vlan_tci=0x0000 actions=push_vlan:0x8100,set_field:4097->vlan_vid,NORMAL"),
        "no flat flow on br-int:\n{br_int}"
    );
    let br_vlan = lab.flows("compute1", "br-vlan");
    assert!(
        br_vlan.contains("priority=4,in_port=\"phy-br-vlan\",dl_vlan=1 actions=pop_vlan,NORMAL"),
        "no flat flow on br-vlan:\n{br_vlan}"
    );
    let (ok, report) = check(&lab);
    assert!(ok, "ovslab check failed with a flat net1:\n{report}");
}

/// When `up` returns, every node's vswitchd knows the MAC of every tunnel
/// endpoint it has a tunnel to (`tnl/neigh/show`), so the lab's first
/// packets are not dropped. The nodes' kernels resolve each other at the
/// same moment, and a kernel that learned an endpoint from that endpoint's
/// own ARP request sends no request of its own for 5 s, so no reply passes
/// its vswitchd to be snooped: the converge makes the kernel ask again.
#[test]
#[ignore = "needs root"]
fn up_returns_with_every_tunnel_endpoint_resolved() {
    require_root("up_returns_with_every_tunnel_endpoint_resolved");
    let yaml = ovslab_topology::generate::scale_topology_of(
        6,
        2,
        Some(ovslab_topology::TunnelType::Vxlan),
    );
    let lab = Lab::from_yaml(&yaml);
    let topo = lab.topology();
    let overlay = topo.overlay.as_ref().expect("an overlay");
    for node in &topo.nodes {
        let known = lab.appctl(&node.name, &["tnl/neigh/show"]);
        for other in topo.nodes.iter().filter(|n| n.name != node.name) {
            let endpoint = overlay.endpoint(&other.name).unwrap().to_string();
            assert!(
                known
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(endpoint.as_str())),
                "{}'s vswitchd does not know {} ({endpoint}):\n{known}",
                node.name,
                other.name
            );
        }
    }
}
