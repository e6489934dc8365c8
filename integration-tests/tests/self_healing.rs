//! Self-healing, end to end: parts of a running seed lab are killed or
//! removed behind the daemon's back, and connectivity comes back by itself;
//! `ovslab status` lists the repair. The daemon's full audits are a minute
//! apart here ([`ONLY_NOTICES`]): what it watches (link, address, route and
//! nf_tables notices, namespace deletions, OVSDB and flow monitors, process
//! exits) must tell it. And the daemon itself is killed with `kill -9`, between and
//! during applies: the next one adopts the lab without recreating a link.

use std::process::{Command, Stdio};
use std::time::Duration;

use ovslab_integration_tests::{Lab, dead, recreated, require_root, run, wait_until};

const INSTANCE3: &str = "192.168.1.12";
const INTERNET: &str = "203.0.113.1";
const BACK: Duration = Duration::from_secs(20);

/// Full audits every minute: within [`BACK`] only a notice of what changed
/// can start the audit that repairs it.
const ONLY_NOTICES: &str = "60";

/// One echo request with a short wait: true when answered.
/// Deletes namespace `ns` as a person would (`ip netns del`). The
/// daemon may see it gone and make it again between `ip`'s unmount and its
/// removal of the file (under load, `ip` can be descheduled there): `ip`
/// then finds the file gone, or the daemon's new namespace mounted on
/// it, and fails; the namespace was deleted all the same.
fn delete_namespace(ns: &str) {
    let out = ovslab_integration_tests::run_raw("ip", &["netns", "del", ns]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.starts_with("Cannot remove namespace file"),
        "`ip netns del {ns}` failed ({}): {stderr}",
        out.status
    );
}

fn reaches(lab: &Lab, from: &str, to: &str) -> bool {
    lab.in_ns(from, &["ping", "-c", "1", "-W", "1", to])
        .status
        .success()
}

fn status(lab: &Lab) -> serde_json::Value {
    let out = lab.daemon.ovslab_ok(&["status", &lab.name, "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn repairs(lab: &Lab) -> String {
    status(lab)["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The repairs once one names `needle` (an audit records its repairs when
/// it ends, which can be after connectivity is back).
fn repaired(lab: &Lab, needle: &str) -> String {
    let deadline = std::time::Instant::now() + BACK;
    loop {
        let text = repairs(lab);
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no repair names {needle}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(pid: u32) {
    // SAFETY: a pid read from this test lab's own pidfile, checked to be
    // the program it names before (see `Lab::pid` callers).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Kills a node's OVS daemon; connectivity through that node comes back.
fn ovs_process_comes_back(program: &str, node: &str) {
    let lab = Lab::seed_audited(ONLY_NOTICES);
    assert!(reaches(&lab, "instance1", INSTANCE3));
    let pid = lab.pid(node, program);
    assert_eq!(comm(pid), program);
    kill9(pid);
    wait_until(BACK, "a new process", || {
        lab.rundir(node).join(format!("{program}.pid")).exists()
            && std::fs::read_to_string(lab.rundir(node).join(format!("{program}.pid")))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|p| p != pid && comm(p) == program)
    });
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    let text = repaired(&lab, &format!("start {program} on {node}"));
    if program == "ovs-vswitchd" {
        // Its flows come back in the same audit that restarted it.
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("start {program} on {node}"))
                    && l.contains(": add flow ")),
            "{text}"
        );
    }
    let status = status(&lab);
    assert!(status["healthy"].as_bool().unwrap());
    // The node's processes: this one running under its new pid, restarted once.
    let node_status = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap();
    let process = node_status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["program"] == program)
        .unwrap_or_else(|| panic!("{node_status}"));
    assert_eq!(process["running"], true, "{process}");
    assert_eq!(process["restarts"], 1, "{process}");
    assert_eq!(
        process["pid"].as_u64(),
        Some(u64::from(lab.pid(node, program))),
        "{process}"
    );
    assert!(status["audits"]["count"].as_u64().unwrap() > 0, "{status}");
    let table = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(table.contains("restarted 1×"), "{table}");
}

#[test]
#[ignore = "needs root"]
fn a_killed_vswitchd_is_restarted_with_its_flows() {
    require_root("a_killed_vswitchd_is_restarted_with_its_flows");
    ovs_process_comes_back("ovs-vswitchd", "compute1");
}

#[test]
#[ignore = "needs root"]
fn a_killed_ovsdb_server_is_restarted() {
    require_root("a_killed_ovsdb_server_is_restarted");
    ovs_process_comes_back("ovsdb-server", "compute2");
}

#[test]
#[ignore = "needs root"]
fn a_deleted_qvo_is_put_back() {
    require_root("a_deleted_qvo_is_put_back");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    assert!(reaches(&lab, "instance1", INSTANCE3));
    let qvo = lab.plug("instance3").qvo;
    run(
        "ip",
        &["-n", &lab.ns("compute2"), "link", "del", qvo.as_str()],
    );
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    repaired(&lab, &qvo);
}

#[test]
#[ignore = "needs root"]
fn a_flushed_nat_table_is_restored() {
    require_root("a_flushed_nat_table_is_restored");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    assert!(reaches(&lab, "instance3", INTERNET));
    let ns = lab.router_ns("router1");
    run("ip", &["netns", "exec", &ns, "iptables", "-t", "nat", "-F"]);
    wait_until(BACK, "the SNAT rule back", || {
        run("ip", &["netns", "exec", &ns, "iptables-save", "-t", "nat"])
            .contains("-j SNAT --to-source 203.0.113.101")
    });
    wait_until(BACK, "instance3 → internet again", || {
        reaches(&lab, "instance3", INTERNET)
    });
    repaired(&lab, "iptables");
}

#[test]
#[ignore = "needs root"]
fn a_deleted_flow_is_put_back() {
    require_root("a_deleted_flow_is_put_back");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    let dump = || lab.flows("compute1", "br-vlan");
    assert!(dump().contains("dl_vlan=1"), "{}", dump());
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    wait_until(BACK, "the translation flow back", || {
        dump().contains("dl_vlan=1")
    });
    wait_until(BACK, "instance1 → instance3", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    repaired(&lab, "add flow");
}

#[test]
#[ignore = "needs root"]
fn a_deleted_instance_namespace_is_rebuilt() {
    require_root("a_deleted_instance_namespace_is_rebuilt");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    delete_namespace(&lab.ns("instance3"));
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    repaired(&lab, &format!("create namespace {}", lab.ns("instance3")));
}

/// A node's namespace deleted lives on, unnamed, while its Open vSwitch
/// runs in it: the daemons there are stopped and started again in the
/// namespace made under the name, and the links to its instances and to
/// the physical network (whose other ends outlived the old namespace) are
/// made again with their routes.
#[test]
#[ignore = "needs root"]
fn a_deleted_node_namespace_is_rebuilt_with_its_open_vswitch() {
    use std::os::unix::fs::MetadataExt;
    require_root("a_deleted_node_namespace_is_rebuilt_with_its_open_vswitch");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    let old = lab.pid("compute1", "ovs-vswitchd");
    assert_eq!(comm(old), "ovs-vswitchd");
    delete_namespace(&lab.ns("compute1"));
    wait_until(
        BACK,
        "instance1 (compute1) → instance3 (compute2) again",
        || reaches(&lab, "instance1", INSTANCE3),
    );
    wait_until(BACK, "instance4 (compute1) → the internet again", || {
        reaches(&lab, "instance4", INTERNET)
    });
    let new = lab.pid("compute1", "ovs-vswitchd");
    assert_ne!(new, old, "compute1's vswitchd was not started again");
    assert!(
        dead(old),
        "the vswitchd in the deleted namespace still runs"
    );
    let inode = |path: String| std::fs::metadata(&path).unwrap().ino();
    assert_eq!(
        inode(format!("/proc/{new}/ns/net")),
        inode(format!("/run/netns/{}", lab.ns("compute1"))),
        "compute1's vswitchd runs outside compute1's namespace"
    );
    repaired(&lab, "it ran in a namespace no longer the node's");
}

#[test]
#[ignore = "needs root"]
fn a_port_retagged_in_ovsdb_is_set_back() {
    require_root("a_port_retagged_in_ovsdb_is_set_back");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    let qvo = lab.plug("instance1").qvo;
    let tag = || lab.vsctl("compute1", &["get", "Port", &qvo, "tag"]);
    let planned = tag();
    lab.vsctl("compute1", &["set", "Port", &qvo, "tag=99"]);
    wait_until(BACK, "the local VLAN tag back", || tag() == planned);
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    repaired(&lab, &qvo);
}

#[test]
#[ignore = "needs root"]
fn an_address_deleted_in_an_instance_is_put_back() {
    require_root("an_address_deleted_in_an_instance_is_put_back");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    let addresses = || {
        String::from_utf8_lossy(&lab.in_ns("instance3", &["ip", "-4", "-br", "addr"]).stdout)
            .into_owned()
    };
    assert!(addresses().contains(INSTANCE3), "{}", addresses());
    run(
        "ip",
        &["-n", &lab.ns("instance3"), "addr", "flush", "dev", "eth0"],
    );
    wait_until(BACK, "instance3's address back", || {
        addresses().contains(INSTANCE3)
    });
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    repaired(&lab, INSTANCE3);
}

/// The routing notices of every lab namespace come on one socket in an
/// unnamed namespace of the daemon's: none of the lab's holds an rtnetlink socket
/// bound to notification groups. (One in each made every notification on
/// the host walk all of them: in a 10,000-instance lab the first ARP
/// between two instances took seconds.) An instance's namespace runs no
/// process, so any such socket there would be the daemon's; its notices
/// still reach the daemon, as `an_address_deleted_in_an_instance_is_put_back`
/// shows.
#[test]
#[ignore = "needs root"]
fn no_lab_namespace_holds_a_notice_socket_of_the_daemon() {
    require_root("no_lab_namespace_holds_a_notice_socket_of_the_daemon");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    for instance in ["instance1", "instance3"] {
        let out = lab.in_ns(instance, &["cat", "/proc/net/netlink"]);
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(table.starts_with("sk"), "{table}");
        // sk Eth Pid Groups …: NETLINK_ROUTE is 0, Groups a hex mask.
        let bound: Vec<&str> = table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&"0") && fields.get(3).is_some_and(|g| *g != "00000000")
            })
            .collect();
        assert!(bound.is_empty(), "{instance}: {bound:?}");
    }
    // Their ids live in the daemon's own unnamed namespace: the host's
    // namespace gives the lab's none.
    let listed = run("ip", &["netns", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&lab.ns("instance3")))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(!line.contains("(id: "), "{listed}");
}

/// Each kind of drift made while the audit of another is under way: a qvo
/// deleted, then a few milliseconds apart a flow deleted on another node,
/// the router's NAT flushed, an instance namespace deleted and a route
/// deleted in the router. Every one is repaired without the full audit.
#[test]
#[ignore = "needs root"]
fn drift_made_while_another_is_repaired_is_repaired_too() {
    require_root("drift_made_while_another_is_repaired_is_repaired_too");
    let lab = Lab::seed_audited(ONLY_NOTICES);
    let router = lab.router_ns("router1");
    let qvo = lab.plug("instance3").qvo;
    let pause = || std::thread::sleep(Duration::from_millis(3));
    run(
        "ip",
        &["-n", &lab.ns("compute2"), "link", "del", qvo.as_str()],
    );
    pause();
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    pause();
    run(
        "ip",
        &["netns", "exec", &router, "iptables", "-t", "nat", "-F"],
    );
    pause();
    delete_namespace(&lab.ns("instance2"));
    pause();
    run("ip", &["-n", &router, "route", "del", "default"]);
    wait_until(BACK, "every drift repaired", || {
        run(
            "ip",
            &["netns", "exec", &router, "iptables-save", "-t", "nat"],
        )
        .contains("-j SNAT --to-source 203.0.113.101")
            && run("ip", &["-n", &router, "route"]).contains("default via")
            && lab.flows("compute1", "br-vlan").contains("dl_vlan=1")
    });
    for (from, to) in [
        ("instance1", INSTANCE3),
        ("instance1", "192.168.2.11"),
        ("instance3", INTERNET),
    ] {
        wait_until(BACK, &format!("{from} → {to}"), || {
            reaches(&lab, from, to)
        });
    }
    // Status keeps the first few repairs of an audit; the log has them all.
    let text = lab.daemon.log();
    for needle in [
        qvo.as_str(),
        "add flow",
        "iptables",
        &format!("create namespace {}", lab.ns("instance2")),
    ] {
        assert!(text.contains(needle), "no repair names {needle}: {text}");
    }
}

/// Drift made while no daemon ran is repaired by the next one at start,
/// not at its first periodic audit: the start audit converges every lab it
/// adopted (also when a status query holds the lab at that moment), and
/// from then on watches it.
#[test]
#[ignore = "needs root"]
fn drift_made_while_the_daemon_was_away_is_repaired_at_start() {
    require_root("drift_made_while_the_daemon_was_away_is_repaired_at_start");
    let mut lab = Lab::seed_audited(ONLY_NOTICES);
    lab.daemon.kill9();
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    lab.daemon.restart(&["--audit-interval", ONLY_NOTICES]);
    wait_until(BACK, "the translation flow back", || {
        lab.flows("compute1", "br-vlan").contains("dl_vlan=1")
    });
    // And it is watched: a qvo deleted now is back long before the next
    // full audit.
    let qvo = lab.plug("instance3").qvo;
    run(
        "ip",
        &["-n", &lab.ns("compute2"), "link", "del", qvo.as_str()],
    );
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
}

/// A vswitchd the daemon did not start (adopted from the previous daemon,
/// so no child exit tells of its death) is restarted too: its bridges'
/// devices vanish with it, and the node's link notices wake the audit.
#[test]
#[ignore = "needs root"]
fn an_adopted_vswitchd_killed_is_restarted() {
    require_root("an_adopted_vswitchd_killed_is_restarted");
    let mut lab = Lab::seed_audited(ONLY_NOTICES);
    lab.daemon.kill9();
    lab.daemon.restart(&["--audit-interval", ONLY_NOTICES]);
    // The new daemon watches the lab once it has seen it (an up does).
    assert!(lab.up().contains("no changes"));
    let pid = lab.pid("compute1", "ovs-vswitchd");
    assert_eq!(comm(pid), "ovs-vswitchd");
    kill9(pid);
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    assert_ne!(lab.pid("compute1", "ovs-vswitchd"), pid);
    repaired(&lab, "start ovs-vswitchd on compute1");
}

/// How the first daemon goes away.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill9,
    /// SIGTERM with `--on-exit keep` (the default when run by hand).
    CleanKeep,
}

/// The daemon goes away and a new one starts while instance1 pings
/// instance3 every 50 ms: the new daemon adopts the lab without recreating
/// a link, an `up` changes nothing, no packet is lost.
fn daemon_replaced_without_a_lost_packet(stop: Stop) {
    let mut lab = Lab::seed_audited("0.2");
    let before = lab.links();
    let pids = lab.ovs_pids();
    assert_eq!(pids.len(), 6, "{pids:?}");
    // A continuous ping across the whole restart.
    let ns = lab.ns("instance1");
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &ns, "ping", "-i", "0.05", "-c", "80", "-W", "1", INSTANCE3,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    match stop {
        Stop::Kill9 => lab.daemon.kill9(),
        Stop::CleanKeep => assert!(lab.daemon.stop().success()),
    }
    std::thread::sleep(Duration::from_millis(500));
    lab.daemon.restart(&["--audit-interval", "0.2"]);
    let out = lab.daemon.ovslab_ok(&["up", lab.file.to_str().unwrap()]);
    assert!(
        out.contains("no changes"),
        "{stop:?}: the new daemon changed things: {out}"
    );
    let ping = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("80 packets transmitted, 80 received"),
        "{stop:?}: packets were lost: {text}"
    );
    let after = lab.links();
    assert_eq!(after.len(), before.len(), "{stop:?}: links came or went");
    assert_eq!(
        recreated(&before, &after),
        Vec::<String>::new(),
        "{stop:?}: links were recreated"
    );
    // The same OVS processes: adopted, not restarted.
    assert_eq!(lab.ovs_pids(), pids, "{stop:?}");
    let status = status(&lab);
    assert!(status["healthy"].as_bool().unwrap(), "{status}");
    assert_eq!(status["repair_count"], 0, "{stop:?}: {status}");
}

#[test]
#[ignore = "needs root"]
fn a_daemon_killed_between_applies_is_replaced_without_a_lost_packet() {
    require_root("a_daemon_killed_between_applies_is_replaced_without_a_lost_packet");
    daemon_replaced_without_a_lost_packet(Stop::Kill9);
}

#[test]
#[ignore = "needs root"]
fn a_daemon_stopped_with_keep_is_replaced_without_a_lost_packet() {
    require_root("a_daemon_stopped_with_keep_is_replaced_without_a_lost_packet");
    daemon_replaced_without_a_lost_packet(Stop::CleanKeep);
}

/// When, during an `up`, the daemon is killed.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// Once the first namespaces exist (nothing else yet).
    Namespaces,
    /// Once a node's ovs-vswitchd runs (after the links, before OVSDB
    /// rows, flows and rules).
    Vswitchd,
}

/// What follows the killed `up`, under a new daemon.
#[derive(Clone, Copy, Debug)]
enum Next {
    Up,
    Down,
    /// Nothing: the new daemon's audit finishes the lab by itself.
    Audit,
}

/// A lab of 3 computes × 4 instances (an `up` long enough to be killed in
/// the middle).
fn generated_lab(audit: &str) -> Lab {
    let out = run(
        ovslab_integration_tests::bin("ovslab").to_str().unwrap(),
        &["generate", "--computes", "3", "--instances-per-node", "4"],
    );
    Lab::create_with(&out, &["--audit-interval", audit])
}

fn killed_during_up(point: KillPoint, next: Next) {
    let mut lab = generated_lab("0");
    let mut up = Command::new(ovslab_integration_tests::bin("ovslab"))
        .args(["--socket", lab.daemon.socket.to_str().unwrap()])
        .args(["up", lab.file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reached = || match point {
        KillPoint::Namespaces => !lab.namespaces().is_empty(),
        KillPoint::Vswitchd => ["network", "compute1", "compute2", "compute3"]
            .iter()
            .any(|n| lab.rundir(n).join("ovs-vswitchd.pid").exists()),
    };
    // Polled closely: the up takes a few hundred milliseconds.
    let deadline = std::time::Instant::now() + BACK;
    while !reached() {
        assert!(std::time::Instant::now() < deadline, "{point:?} never came");
        assert!(
            up.try_wait().unwrap().is_none(),
            "{point:?}: the up ended before it was seen"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        up.try_wait().unwrap().is_none(),
        "{point:?}: the up ended before the kill"
    );
    lab.daemon.kill9();
    let status = up.wait().unwrap();
    assert!(
        !status.success(),
        "{point:?}: the killed up says it succeeded"
    );
    let orphans = lab.ovs_pids();

    match next {
        Next::Up => {
            lab.daemon.restart(&["--audit-interval", "0"]);
            lab.up();
        }
        Next::Audit => {
            lab.daemon.restart(&["--audit-interval", "0.2"]);
            wait_until(BACK, "the audit to finish the lab", || {
                lab.daemon.ovslab(&["check", &lab.name]).status.success()
            });
            let out = lab.up();
            assert!(out.contains("no changes"), "{point:?}: {out}");
        }
        Next::Down => lab.daemon.restart(&["--audit-interval", "0"]),
    }
    if !matches!(next, Next::Down) {
        // A working lab: every declared check passes.
        let out = lab.daemon.ovslab(&["check", &lab.name]);
        assert!(
            out.status.success(),
            "{point:?} {next:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // And down leaves nothing: namespaces, processes, run directory.
    let pids: Vec<u32> = orphans.into_iter().chain(lab.ovs_pids()).collect();
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    for pid in pids {
        assert!(dead(pid), "{point:?} {next:?}: pid {pid} still runs");
    }
    assert!(!lab.daemon.run_dir.join(&lab.name).exists());
}

#[test]
#[ignore = "needs root"]
fn a_daemon_killed_once_namespaces_exist_is_finished_by_the_next_up() {
    require_root("a_daemon_killed_once_namespaces_exist_is_finished_by_the_next_up");
    killed_during_up(KillPoint::Namespaces, Next::Up);
}

#[test]
#[ignore = "needs root"]
fn a_daemon_killed_once_vswitchd_runs_is_finished_by_the_next_up() {
    require_root("a_daemon_killed_once_vswitchd_runs_is_finished_by_the_next_up");
    killed_during_up(KillPoint::Vswitchd, Next::Up);
}

#[test]
#[ignore = "needs root"]
fn a_daemon_killed_during_an_up_is_cleaned_up_by_the_next_down() {
    require_root("a_daemon_killed_during_an_up_is_cleaned_up_by_the_next_down");
    killed_during_up(KillPoint::Vswitchd, Next::Down);
}

#[test]
#[ignore = "needs root"]
fn a_daemon_killed_during_an_up_is_finished_by_the_next_daemons_audit() {
    require_root("a_daemon_killed_during_an_up_is_finished_by_the_next_daemons_audit");
    killed_during_up(KillPoint::Namespaces, Next::Audit);
}

/// The file a namespace create makes before it mounts the namespace on it:
/// a daemon killed between the two leaves it, and the next `up` replaces it.
#[test]
#[ignore = "needs root"]
fn a_stale_namespace_file_left_by_a_killed_up_is_replaced() {
    require_root("a_stale_namespace_file_left_by_a_killed_up_is_replaced");
    let mut lab = Lab::create(ovslab_topology::SEED_YAML);
    let compute1 = lab.ns("compute1");
    let stale = std::path::Path::new("/run/netns").join(&compute1);
    // A plain file the lab never promised is not the lab's: up refuses.
    std::fs::create_dir_all("/run/netns").unwrap();
    std::fs::write(&stale, "").unwrap();
    let out = lab.daemon.ovslab(&["up", lab.file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stale.exists());
    std::fs::remove_file(&stale).unwrap();

    // A daemon killed in an up between promising compute1 in the manifest
    // and making the file, and mounting the namespace on it.
    lab.up();
    lab.daemon.kill9();
    // Gone with its processes, so that the namespace and its links go too.
    for program in ["ovs-vswitchd", "ovsdb-server"] {
        let pid = lab.pid("compute1", program);
        // SAFETY: a pid from the test lab's own pidfile.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_until(BACK, "the killed OVS process", || dead(pid));
    }
    delete_namespace(&compute1);
    wait_until(BACK, "compute1's links gone", || {
        !run("ip", &["-n", &lab.ns("physnet1"), "link"]).contains("compute1@")
    });
    std::fs::write(&stale, "").unwrap();
    let manifest = lab.daemon.run_dir.join(&lab.name).join("manifest.json");
    let mut recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    recorded["namespaces"][&compute1] = serde_json::Value::Null;
    std::fs::write(&manifest, recorded.to_string()).unwrap();
    lab.daemon.restart(&["--audit-interval", "0"]);
    let out = lab.up();
    assert!(
        out.contains(&format!("remove stale namespace file {compute1}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("create namespace {compute1}")),
        "{out}"
    );
    assert!(reaches(&lab, "instance1", INSTANCE3));
}
