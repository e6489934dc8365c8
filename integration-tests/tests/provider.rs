//! Provider networks, end to end: the real daemon builds
//! `lab-topologies/provider.yaml` — instances straight on a flat and a VLAN
//! provider network, routed by a physical router outside OpenStack — and
//! `ovslab check` proves the Networking Guide's walkthroughs on the wire,
//! while independent observers (`tcpdump` on the physical switch,
//! `ovs-vsctl`, `ip`, `ping`) check the router's trunk and routes.

use std::time::{Duration, Instant};

use ovslab_integration_tests::{Lab, dead, recreated, rename_lab, require_root};

const PROVIDER: &str = include_str!("../../lab-topologies/provider.yaml");
const SERVER: &str = "198.51.100.10";

/// `ovslab check`: whether every check passed, and the report.
fn check(lab: &Lab) -> (bool, String) {
    let out = lab.daemon.ovslab(&["check", &lab.name]);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

/// The report line of one check.
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("{check} not reported:\n{report}"))
}

/// The provider lab without its physical router's interface on `network`.
fn without_interface(network: &str) -> String {
    PROVIDER
        .lines()
        .filter(|l| !l.contains(&format!("{{ network: {network}, address:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The provider lab without the physical router (and the checks through it).
fn without_router() -> String {
    let text = PROVIDER.split("\nchecks:").next().unwrap();
    let (head, rest) = text.split_once("\nphysical_routers:").unwrap();
    let (_, tail) = rest.split_once("\nsecurity_groups:").unwrap();
    format!("{head}\nsecurity_groups:{tail}")
}

/// Whether `from` reaches the server within a few seconds: a gateway
/// that was missing is still being resolved (ARP gives up after 3 s).
fn reaches_server(lab: &Lab, from: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if lab.ping(from, SERVER, 1) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write(lab: &Lab, text: &str) {
    std::fs::write(&lab.file, rename_lab(text, &lab.name)).unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_provider_walkthroughs_hold_on_the_wire() {
    require_root("the_provider_walkthroughs_hold_on_the_wire");
    let lab = Lab::from_yaml(PROVIDER);
    let (ok, report) = check(&lab);
    assert!(ok, "ovslab check failed:\n{report}");
    // The flat network is untagged on both ends of the wire, the VLAN
    // network tagged with its segmentation id.
    let flat = line(&report, "north-south-flat");
    assert!(
        flat.contains("compute1 eth1 (untagged)") && flat.contains("physrouter eth1 (untagged)"),
        "{flat}"
    );
    let vlan = line(&report, "north-south-vlan");
    assert!(
        vlan.contains("compute2 eth1 (vlan 101)") && vlan.contains("physrouter eth1 (vlan 101)"),
        "{vlan}"
    );
    // Between the networks, the router takes it in on one and out on the
    // other.
    let between = line(&report, "east-west-between-networks");
    assert!(
        between.contains("physrouter eth1 (vlan 101, untagged)"),
        "{between}"
    );
    for name in [
        "south-north-flat",
        "east-west-same-network",
        "provider-networks-isolated-at-layer-2",
        "tcp-to-the-internet",
    ] {
        line(&report, name);
    }
}

#[test]
#[ignore = "needs root"]
fn the_physical_router_trunks_its_networks_and_routes_without_nat() {
    require_root("the_physical_router_trunks_its_networks_and_routes_without_nat");
    let lab = Lab::from_yaml(PROVIDER);
    // Its sub-interfaces: internal ports of br-eth1, tagged as the networks.
    let get = |what: &[&str]| lab.vsctl("physrouter", what).trim().to_string();
    assert_eq!(get(&["get", "Port", "eth1.101", "tag"]), "101");
    assert_eq!(get(&["get", "Port", "eth1.flat", "tag"]), "[]");
    assert_eq!(get(&["get", "Interface", "eth1.101", "type"]), "internal");
    let ports = lab.vsctl("physrouter", &["list-ports", "br-eth1"]);
    assert_eq!(
        ports.split_whitespace().collect::<Vec<_>>(),
        ["eth1", "eth1.101", "eth1.flat"]
    );
    let addresses = lab.in_ns("physrouter", &["ip", "-4", "-o", "addr"]);
    let addresses = String::from_utf8_lossy(&addresses.stdout);
    for want in [
        "eth1.101    inet 192.0.2.1/24",
        "eth1.flat    inet 203.0.113.1/24",
        "eth2    inet 198.51.100.1/24",
    ] {
        let (dev, inet) = want.split_once("    ").unwrap();
        assert!(
            addresses
                .lines()
                .any(|l| l.contains(&format!(" {dev} ")) && l.contains(inet)),
            "{want} missing:\n{addresses}"
        );
    }
    // The internet's host knows both networks are behind the router.
    let routes = lab.in_ns("server", &["ip", "-4", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    for net in ["192.0.2.0/24", "203.0.113.0/24"] {
        assert!(
            routes.contains(&format!("{net} via 198.51.100.1")),
            "no route to {net}:\n{routes}"
        );
    }
    // The router's trunk, seen from the physical switch: the VLAN
    // network's echo tagged 101, the flat network's untagged; and the
    // server sees the instances' own addresses.
    let trunk = lab.capture("provider", "physrouter", "icmp or vlan");
    let server = lab.capture("server", "eth0", "icmp");
    assert!(lab.ping("instance3", SERVER, 2), "instance3 → server");
    assert!(lab.ping("instance1", SERVER, 2), "instance1 → server");
    let trunk = trunk.finish();
    let server = server.finish();
    let echo = |from: &str| {
        trunk
            .iter()
            .filter(|l| l.contains(&format!("{from} > {SERVER}")) && l.contains("echo request"))
            .collect::<Vec<_>>()
    };
    let tagged = echo("192.0.2.11");
    assert!(
        !tagged.is_empty() && tagged.iter().all(|l| l.contains("vlan 101")),
        "instance3's echo not tagged 101 on the trunk: {trunk:#?}"
    );
    let untagged = echo("203.0.113.11");
    assert!(
        !untagged.is_empty() && untagged.iter().all(|l| !l.contains("vlan")),
        "instance1's echo not untagged on the trunk: {trunk:#?}"
    );
    for from in ["192.0.2.11", "203.0.113.11"] {
        assert!(
            server
                .iter()
                .any(|l| l.contains(&format!("{from} > {SERVER}: ICMP echo request"))),
            "the server did not see {from} (no NAT): {server:#?}"
        );
    }
    // The network node has no br-ex: no Neutron router needs one here.
    let bridges = lab.vsctl("network", &["list-br"]);
    assert!(!bridges.contains("br-ex"), "{bridges}");
}

#[test]
#[ignore = "needs root"]
fn the_physical_router_is_repaired_and_leaves_nothing_behind() {
    require_root("the_physical_router_is_repaired_and_leaves_nothing_behind");
    let lab = Lab::create_with(PROVIDER, &["--audit-interval", "0.5"]);
    lab.up();
    assert!(lab.ping("instance3", SERVER, 1));
    let status = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("physrouter") && l.contains("physical-router")),
        "{status}"
    );
    // A deleted sub-interface, then a killed vswitchd, come back.
    lab.vsctl("physrouter", &["del-port", "br-eth1", "eth1.101"]);
    let repaired = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lab.ping("instance3", SERVER, 1) {
            assert!(Instant::now() < deadline, "{what}: not repaired in 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    repaired("deleted eth1.101");
    let vswitchd: u32 = std::fs::read_to_string(lab.rundir("physrouter").join("ovs-vswitchd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the lab's own vswitchd, by the pid its pidfile names.
    unsafe { libc::kill(vswitchd as i32, libc::SIGKILL) };
    repaired("killed vswitchd");
    let now = std::fs::read_to_string(lab.rundir("physrouter").join("ovs-vswitchd.pid")).unwrap();
    assert_ne!(now.trim(), vswitchd.to_string(), "vswitchd not restarted");
    let pids = lab.ovs_pids();
    assert_eq!(pids.len(), 8, "four Open vSwitch instances: {pids:?}");
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    assert!(!lab.rundir("physrouter").exists(), "run directory left");
    for pid in pids {
        assert!(dead(pid), "pid {pid} left running");
    }
}

#[test]
#[ignore = "needs root"]
fn a_physical_router_and_its_interfaces_come_and_go_in_place() {
    require_root("a_physical_router_and_its_interfaces_come_and_go_in_place");
    let lab = Lab::from_yaml(&without_router());
    assert!(!lab.ping("instance1", SERVER, 1), "reached with no router");
    let before = lab.links();
    write(&lab, PROVIDER);
    lab.up();
    assert!(reaches_server(&lab, "instance1"), "instance1 → server");
    assert!(reaches_server(&lab, "instance3"), "instance3 → server");
    let again = recreated(&before, &lab.links());
    assert!(again.is_empty(), "links made again: {again:?}");
    // Its VLAN interface goes: the VLAN network is cut off, the flat one
    // is not.
    write(&lab, &without_interface("provider2"));
    lab.up();
    let ports = lab.vsctl("physrouter", &["list-ports", "br-eth1"]);
    assert!(!ports.contains("eth1.101"), "{ports}");
    assert!(!lab.ping("instance3", SERVER, 1), "instance3 still routed");
    assert!(lab.ping("instance1", SERVER, 1), "instance1 cut off");
    // And the router goes: its namespace, switch and run directory.
    let pids = lab.ovs_pids();
    write(&lab, &without_router());
    lab.up();
    assert!(
        !lab.namespaces().contains(&lab.ns("physrouter")),
        "namespace left"
    );
    assert!(!lab.rundir("physrouter").exists(), "run directory left");
    assert_eq!(lab.ovs_pids().len(), 6, "three Open vSwitch instances left");
    let gone: Vec<u32> = pids.into_iter().filter(|p| dead(*p)).collect();
    assert_eq!(gone.len(), 2, "the router's two daemons stopped: {gone:?}");
}
