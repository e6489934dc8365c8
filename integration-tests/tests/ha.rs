//! HA routers with VRRP, end to end: the real daemon builds
//! `lab-topologies/ha-vrrp.yaml` — one router with a copy on each of two
//! network nodes, real keepalived in each — and independent observers
//! (`ip` in the copies' namespaces, `ping`, the keepalived processes and
//! their files) check the election, a failover when the master's node is
//! failed on purpose or its keepalived is killed, that a recovered node
//! does not take the router back, that an edit reloads keepalived without
//! a failover, and that `down` leaves nothing.

use std::time::{Duration, Instant};

use ovslab_integration_tests::{Lab, dead, rename_lab, require_root, wait_until};
use ovslab_topology::keepalived::{HaPort, copy_dir_name};
use ovslab_topology::naming;
use ovslab_topology::plan::RouterPort;

const HA: &str = include_str!("../../lab-topologies/ha-vrrp.yaml");
const NODES: [&str; 2] = ["network1", "network2"];

/// Waits until the daemon has audited the lab `n` more times: what the
/// audits do to a failed node is then done (a fixed sleep proved less on
/// a slow machine, where no audit may have run yet).
fn after_audits(lab: &Lab, n: u64) {
    let count = || -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
        status["audits"]["count"].as_u64().unwrap_or(0)
    };
    let from = count();
    wait_until(Duration::from_secs(30), "audits of the lab", || {
        count() >= from + n
    });
}

/// The namespace of router1's copy on `node`.
fn copy_ns(lab: &Lab, node: &str) -> String {
    naming::ha_router_namespace(&lab.name, node, "router1")
}

/// `ip -4 -o addr` (or any `ip` command) in a namespace, as text.
fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns, "ip"];
    full.extend_from_slice(args);
    let out = std::process::Command::new("ip")
        .args(&full)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each copy's `ha_state` as `ovslab status --json` reports it.
fn ha_states(lab: &Lab) -> Vec<(String, String)> {
    let status: serde_json::Value =
        serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
    let router = &status["routers"][0];
    router["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["node"].as_str().unwrap().to_string(),
                c["ha_state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The node whose copy is active, once exactly one is (waiting up to
/// `within`).
fn master(lab: &Lab, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let states = ha_states(lab);
        let active: Vec<&String> = states
            .iter()
            .filter(|(_, s)| s == "active")
            .map(|(n, _)| n)
            .collect();
        if active.len() == 1 {
            return active[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no single master within {within:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn other(node: &str) -> &'static str {
    if node == NODES[0] { NODES[1] } else { NODES[0] }
}

/// Every address and route the master holds, seen with `ip` in a copy.
fn router_addresses(ns: &str) -> (String, String) {
    (
        ip_in(ns, &["-4", "-o", "addr"]),
        ip_in(ns, &["-4", "route"]),
    )
}

/// The router's addresses as keepalived gives them to the master.
const HELD: [&str; 5] = [
    "192.168.1.1/24",
    "192.168.2.1/24",
    "203.0.113.101/24",
    "203.0.113.102/32",
    "169.254.0.1/24",
];

fn assert_holds(ns: &str, holds: bool) {
    let (addresses, routes) = router_addresses(ns);
    for address in HELD {
        assert_eq!(
            addresses.contains(address),
            holds,
            "{ns}: {address} {}:\n{addresses}",
            if holds { "missing" } else { "held by a backup" }
        );
    }
    assert_eq!(
        routes.contains("default via 203.0.113.1"),
        holds,
        "{ns}: default route:\n{routes}"
    );
}

/// `ovslab check`: whether every check passed, and the report.
fn check(lab: &Lab) -> (bool, String) {
    let out = lab.daemon.ovslab(&["check", &lab.name]);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

/// The pid of the keepalived of router1's copy on `node`.
fn keepalived_pid(lab: &Lab, node: &str) -> Option<u32> {
    let dir = lab
        .daemon
        .run_dir
        .join(&lab.name)
        .join(copy_dir_name(&lab.name, "router1", node));
    std::fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Pings `to` from `from` every 100 ms until `stop`, and returns how long
/// the longest run without an answer lasted.
fn longest_gap(lab: &Lab, from: &str, to: &str, stop: Instant) -> Duration {
    let mut last_answer = Instant::now();
    let mut longest = Duration::ZERO;
    while Instant::now() < stop {
        let answered = lab
            .in_ns(from, &["ping", "-c", "1", "-W", "0.3", to])
            .status
            .success();
        let now = Instant::now();
        if answered {
            longest = longest.max(now - last_answer);
            last_answer = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    longest.max(Instant::now() - last_answer)
}

#[test]
#[ignore = "needs root"]
fn one_copy_is_master_with_the_agents_configuration() {
    require_root("one_copy_is_master_with_the_agents_configuration");
    let lab = Lab::from_yaml(HA);
    let active = master(&lab, Duration::from_secs(1));
    assert_eq!(ha_states(&lab).len(), 2);
    assert_holds(&copy_ns(&lab, &active), true);
    let backup = copy_ns(&lab, other(&active));
    assert_holds(&backup, false);
    // Both copies have their own address on the HA network, the backup's
    // qr-/qg- devices are up without addresses.
    for (node, own) in [
        ("network1", "169.254.192.1/18"),
        ("network2", "169.254.192.2/18"),
    ] {
        let port = HaPort::of(lab.topology().router("router1").unwrap(), node);
        let addresses = ip_in(
            &copy_ns(&lab, node),
            &["-4", "-o", "addr", "show", &port.device],
        );
        assert!(addresses.contains(own), "{node}: {addresses}");
    }
    let topo = lab.topology();
    let router = topo.router("router1").unwrap();
    let qg = RouterPort::gateway(router).device;
    let link = ip_in(&backup, &["-o", "link", "show", &qg]);
    assert!(link.contains("state UP"), "{link}");

    // keepalived.conf as the L3 agent writes it, in both copies.
    for node in NODES {
        let dir = lab
            .daemon
            .run_dir
            .join(&lab.name)
            .join(copy_dir_name(&lab.name, "router1", node));
        let conf = std::fs::read_to_string(dir.join("keepalived.conf")).unwrap();
        let ha = HaPort::of(router, node).device;
        let qr1 = RouterPort::internal(router, "selfservice1").device;
        let qr2 = RouterPort::internal(router, "selfservice2").device;
        let expected = format!(
            "vrrp_instance VR_1 {{
    state BACKUP
    interface {ha}
    virtual_router_id 1
    priority 50
    garp_master_delay 60
    nopreempt
    advert_int 2
    track_interface {{
        {ha}
    }}
    virtual_ipaddress {{
        169.254.0.1/24 dev {ha}
    }}
    virtual_ipaddress_excluded {{
        192.168.1.1/24 dev {qr1}
        192.168.2.1/24 dev {qr2}
        203.0.113.101/24 dev {qg}
        203.0.113.102/32 dev {qg}
    }}
    virtual_routes {{
        0.0.0.0/0 via 203.0.113.1 dev {qg}
    }}
}}"
        );
        assert_eq!(conf, expected, "{node}");
        // Run as the agent runs it, in the copy's namespace.
        let pid = keepalived_pid(&lab, node).expect("keepalived runs");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let conf_path = dir.join("keepalived.conf").display().to_string();
        assert!(
            args.windows(2).any(|w| w[0] == "-f" && w[1] == conf_path)
                && args.contains(&"-P".to_string()),
            "{args:?}"
        );
        let ns_of = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
        let copy = std::fs::metadata(format!("/run/netns/{}", copy_ns(&lab, node))).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            ns_of(pid)
                .to_string_lossy()
                .contains(&copy.ino().to_string()),
            "keepalived of {node} runs outside its copy's namespace"
        );
    }
    // The L3 agent's NAT in every copy.
    for node in NODES {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &copy_ns(&lab, node),
                "iptables-save",
                "-t",
                "nat",
            ])
            .output()
            .unwrap();
        let nat = String::from_utf8_lossy(&out.stdout);
        assert!(
            nat.contains("-A neutron-l3-agent-snat -o")
                && nat.contains("-d 203.0.113.102/32 -j DNAT --to-destination 192.168.1.11"),
            "{node}:\n{nat}"
        );
    }
    let (ok, report) = check(&lab);
    assert!(ok, "{report}");
}

#[test]
#[ignore = "needs root"]
fn failing_the_master_node_moves_the_router_and_recovery_does_not_take_it_back() {
    require_root("failing_the_master_node_moves_the_router_and_recovery_does_not_take_it_back");
    // Audits on: they must leave the failed node alone.
    let lab = Lab::create_with(HA, &["--audit-interval", "0.2"]);
    lab.up();
    let first = master(&lab, Duration::from_secs(1));
    let second = other(&first);

    let stop = Instant::now() + Duration::from_secs(14);
    let gap = std::thread::scope(|s| {
        let pinger = s.spawn(|| longest_gap(&lab, "instance2", "203.0.113.1", stop));
        std::thread::sleep(Duration::from_secs(1));
        let out = lab
            .daemon
            .ovslab_ok(&["node", "fail", "--lab", &lab.name, &first]);
        assert!(out.contains("set ") && out.contains(" down"), "{out}");
        pinger.join().unwrap()
    });
    // About three advertisement intervals, as keepalived detects it.
    assert!(
        gap < Duration::from_secs(10),
        "no answers for {gap:?} across the failover"
    );
    assert_eq!(master(&lab, Duration::from_secs(2)), second);
    assert_holds(&copy_ns(&lab, second), true);
    let states = ha_states(&lab);
    assert!(
        states.contains(&(first.clone(), "unknown".to_string())),
        "{states:?}"
    );
    // Traffic resumed: north-south with SNAT and a floating IP, east-west
    // through the router — and a check can say through which node.
    let (ok, report) = check(&lab);
    assert!(ok, "{report}");
    let through = |node: &str| {
        HA.replace(
            "    crosses: [compute2]\n    wire_vni: 102",
            &format!("    crosses: [compute2, {node}]\n    wire_vni: 102"),
        )
    };
    std::fs::write(&lab.file, rename_lab(&through(second), &lab.name)).unwrap();
    lab.up();
    let (ok, report) = check(&lab);
    assert!(ok, "the traffic does not cross {second}:\n{report}");

    // The audits leave the failed node dead: no Open vSwitch, its port
    // on the overlay down.
    after_audits(&lab, 2);
    let status: serde_json::Value =
        serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
    let node = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == first.as_str())
        .unwrap();
    assert_eq!(node["failed"], true, "{node}");
    assert!(node["ovs_vswitchd_pid"].is_null(), "{node}");
    assert_eq!(status["healthy"], true, "a failed node is as it should be");
    let overlay = lab.in_ns("overlay", &["ip", "-o", "link", "show", &first]);
    assert!(
        String::from_utf8_lossy(&overlay.stdout).contains("state DOWN"),
        "{}",
        String::from_utf8_lossy(&overlay.stdout)
    );

    // Recovered, it boots as a backup and stays one (nopreempt).
    lab.daemon
        .ovslab_ok(&["node", "recover", "--lab", &lab.name, &first]);
    let deadline = Instant::now() + Duration::from_secs(9);
    while Instant::now() < deadline {
        let states = ha_states(&lab);
        assert!(
            states.contains(&(first.clone(), "standby".to_string()))
                || states.contains(&(first.clone(), "unknown".to_string())),
            "{first} took the router back: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(master(&lab, Duration::from_secs(1)), second);
    assert_holds(&copy_ns(&lab, &first), false);
    let (ok, report) = check(&lab);
    assert!(ok, "{report}");

    // `down` leaves no namespace and no keepalived behind.
    let pids: Vec<u32> = NODES
        .iter()
        .filter_map(|n| keepalived_pid(&lab, n))
        .collect();
    assert_eq!(pids.len(), 2);
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    for pid in pids {
        assert!(dead(pid), "keepalived {pid} outlived its lab");
    }
}

#[test]
#[ignore = "needs root"]
fn killing_keepalived_fails_over_and_the_audit_starts_it_again() {
    require_root("killing_keepalived_fails_over_and_the_audit_starts_it_again");
    let lab = Lab::create_with(HA, &["--audit-interval", "0.2"]);
    lab.up();
    let first = master(&lab, Duration::from_secs(1));
    let killed = keepalived_pid(&lab, &first).unwrap();
    // SAFETY: kill(2) on the pid of a keepalived this test's daemon started.
    assert_eq!(unsafe { libc::kill(killed as i32, libc::SIGKILL) }, 0);
    // Its VRRP process leaves with it: the other copy takes over.
    assert_eq!(master(&lab, Duration::from_secs(10)), other(&first));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = keepalived_pid(&lab, &first)
            && pid != killed
            && !dead(pid)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keepalived was not started again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let states = ha_states(&lab);
    assert!(
        states.contains(&(first.clone(), "standby".to_string())),
        "{states:?}"
    );
    assert!(
        lab.daemon
            .log()
            .contains("start keepalived of router router1"),
        "the repair is not logged"
    );
    let (ok, report) = check(&lab);
    assert!(ok, "{report}");
}

#[test]
#[ignore = "needs root"]
fn an_edit_reloads_every_copy_without_a_failover() {
    require_root("an_edit_reloads_every_copy_without_a_failover");
    let lab = Lab::from_yaml(HA);
    let active = master(&lab, Duration::from_secs(1));
    let pids: Vec<Option<u32>> = NODES.iter().map(|n| keepalived_pid(&lab, n)).collect();
    // A new network on the router, and a floating IP for instance2.
    let edited = HA
        .replace(
            "\nexternal_networks:",
            "  - name: selfservice3
    type: vxlan
    segmentation_id: 103
    cidr: 192.168.3.0/24
    gateway: 192.168.3.1

external_networks:",
        )
        .replace(
            "interfaces: [selfservice1, selfservice2]",
            "interfaces: [selfservice1, selfservice2, selfservice3]",
        )
        .replace(
            "    address: 192.168.2.11\n",
            "    address: 192.168.2.11\n    floating_ip: 203.0.113.103\n",
        );
    std::fs::write(&lab.file, rename_lab(&edited, &lab.name)).unwrap();
    let out = lab.up();
    assert!(out.contains("reloaded (SIGHUP)"), "{out}");
    let topo = lab.topology();
    let qr3 = RouterPort::internal(topo.router("router1").unwrap(), "selfservice3").device;
    for node in NODES {
        let dir = lab
            .daemon
            .run_dir
            .join(&lab.name)
            .join(copy_dir_name(&lab.name, "router1", node));
        let conf = std::fs::read_to_string(dir.join("keepalived.conf")).unwrap();
        assert!(
            conf.contains(&format!("192.168.3.1/24 dev {qr3}"))
                && conf.contains("203.0.113.103/32 dev "),
            "{node}:\n{conf}"
        );
    }
    // The same processes, the same master, now holding the new addresses.
    let after: Vec<Option<u32>> = NODES.iter().map(|n| keepalived_pid(&lab, n)).collect();
    assert_eq!(pids, after, "keepalived was restarted, not reloaded");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (addresses, _) = router_addresses(&copy_ns(&lab, &active));
        if addresses.contains("192.168.3.1/24") && addresses.contains("203.0.113.103/32") {
            break;
        }
        assert!(Instant::now() < deadline, "not added:\n{addresses}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(master(&lab, Duration::from_secs(1)), active);
    let (addresses, _) = router_addresses(&copy_ns(&lab, other(&active)));
    assert!(!addresses.contains("192.168.3.1"), "{addresses}");
    assert!(lab.ping("internet", "203.0.113.103", 1));
}

#[test]
#[ignore = "needs root"]
fn a_failed_compute_node_cuts_its_instances_off_until_it_recovers() {
    require_root("a_failed_compute_node_cuts_its_instances_off_until_it_recovers");
    let lab = Lab::seed_audited("0.2");
    assert!(lab.ping("instance1", "192.168.1.12", 1));
    let out = lab
        .daemon
        .ovslab_ok(&["node", "fail", "--lab", &lab.name, "compute1"]);
    assert!(out.contains("stopped ovs-vswitchd of compute1"), "{out}");
    // Failing it again changes nothing.
    let again = lab
        .daemon
        .ovslab_ok(&["node", "fail", "--lab", &lab.name, "compute1"]);
    assert!(again.contains("already failed"), "{again}");
    // Audits run, and leave it dead.
    after_audits(&lab, 2);
    assert!(!lab.ping("instance1", "192.168.1.12", 1));
    assert_eq!(lab.ovs_pids().len(), 4, "compute1's Open vSwitch came back");
    let link = lab.in_ns("physnet1", &["ip", "-o", "link", "show", "compute1"]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("state DOWN"));
    // An unknown node is refused, and changes nothing.
    let out = lab
        .daemon
        .ovslab(&["node", "fail", "--lab", &lab.name, "compute9"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node named `compute9`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A restarted daemon keeps it failed.
    let mut lab = lab;
    lab.daemon.stop();
    lab.daemon.restart(&["--audit-interval", "0.2"]);
    after_audits(&lab, 2);
    assert!(!lab.ping("instance1", "192.168.1.12", 1));
    lab.daemon
        .ovslab_ok(&["node", "recover", "--lab", &lab.name, "compute1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.ping("instance1", "192.168.1.12", 1) {
        assert!(Instant::now() < deadline, "instance1 did not come back");
    }
    let (ok, report) = check(&lab);
    assert!(ok, "{report}");
}
