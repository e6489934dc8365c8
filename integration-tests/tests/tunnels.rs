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
    let vxlan: Vec<&String> = wire.iter().filter(|l| l.contains("VXLAN")).collect();
    let inner = |what: &str| {
        wire.windows(2)
            .any(|w| w[0].contains("VXLAN") && w[1].contains(what))
    };
    assert!(
        inner("ICMP echo request") && inner("ICMP echo reply"),
        "no encapsulated echo on compute1's overlay cable: {wire:#?}"
    );
    for line in &vxlan {
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
    assert!(
        flows.iter().any(|f| f.starts_with("table=10, priority=1 actions=learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:")),
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
    assert!(
        learned.lines().any(|l| l.contains("table=20")
            && l.contains("hard_timeout=300")
            && l.contains("output:")),
        "no learned flow in table 20:\n{learned}"
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
