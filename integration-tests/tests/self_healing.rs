//! Self-healing, end to end: parts of a running seed lab are killed or
//! removed behind the daemon's back, and connectivity comes back by itself
//! (the daemon audits its labs every 0.2 s here); `ovslab status` lists the
//! repair. And the daemon itself is killed with `kill -9`, between and
//! during applies: the next one adopts the lab without recreating a link.

use std::process::{Command, Stdio};
use std::time::Duration;

use ovslab_integration_tests::{Lab, require_root, run, run_raw, wait_until};

const INSTANCE3: &str = "192.168.1.12";
const INTERNET: &str = "203.0.113.1";
const BACK: Duration = Duration::from_secs(20);

/// One echo request with a short wait: true when answered.
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

fn pid_of(lab: &Lab, node: &str, program: &str) -> u32 {
    let file = lab.rundir(node).join(format!("{program}.pid"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

fn kill9(pid: u32) {
    // SAFETY: a pid read from this test lab's own pidfile, checked to be
    // the program it names before (see `pid_of` callers).
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
    let lab = Lab::seed_audited("0.2");
    assert!(reaches(&lab, "instance1", INSTANCE3));
    let pid = pid_of(&lab, node, program);
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
    let text = repairs(&lab);
    assert!(
        text.contains(&format!("start {program} on {node}")),
        "{text}"
    );
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
        Some(u64::from(pid_of(&lab, node, program))),
        "{process}"
    );
    assert!(status["audits"]["count"].as_u64().unwrap() > 0, "{status}");
    let table = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(table.contains("restarted 1×"), "{table}");
}

#[test]
fn a_killed_vswitchd_is_restarted_with_its_flows() {
    if !require_root("a_killed_vswitchd_is_restarted_with_its_flows") {
        return;
    }
    ovs_process_comes_back("ovs-vswitchd", "compute1");
}

#[test]
fn a_killed_ovsdb_server_is_restarted() {
    if !require_root("a_killed_ovsdb_server_is_restarted") {
        return;
    }
    ovs_process_comes_back("ovsdb-server", "compute2");
}

#[test]
fn a_deleted_qvo_is_put_back() {
    if !require_root("a_deleted_qvo_is_put_back") {
        return;
    }
    let lab = Lab::seed_audited("0.2");
    assert!(reaches(&lab, "instance1", INSTANCE3));
    let qvo = ovslab_topology::naming::HybridPlug::new(&lab.name, "instance3").qvo;
    run(
        "ip",
        &["-n", &lab.ns("compute2"), "link", "del", qvo.as_str()],
    );
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    let text = repairs(&lab);
    assert!(text.contains(&qvo), "{text}");
}

#[test]
fn a_flushed_nat_table_is_restored() {
    if !require_root("a_flushed_nat_table_is_restored") {
        return;
    }
    let lab = Lab::seed_audited("0.2");
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
    assert!(repairs(&lab).contains("iptables"), "{}", repairs(&lab));
}

#[test]
fn a_deleted_flow_is_put_back() {
    if !require_root("a_deleted_flow_is_put_back") {
        return;
    }
    let lab = Lab::seed_audited("0.2");
    let mgmt = format!(
        "unix:{}",
        lab.rundir("compute1").join("br-vlan.mgmt").display()
    );
    let dump = || lab.flows("compute1", "br-vlan");
    assert!(dump().contains("dl_vlan=1"), "{}", dump());
    run(
        "ovs-ofctl",
        &[
            "-O",
            "OpenFlow13",
            "del-flows",
            &mgmt,
            "in_port=phy-br-vlan,dl_vlan=1",
        ],
    );
    wait_until(BACK, "the translation flow back", || {
        dump().contains("dl_vlan=1")
    });
    wait_until(BACK, "instance1 → instance3", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    assert!(repairs(&lab).contains("add flow"), "{}", repairs(&lab));
}

#[test]
fn a_deleted_instance_namespace_is_rebuilt() {
    if !require_root("a_deleted_instance_namespace_is_rebuilt") {
        return;
    }
    let lab = Lab::seed_audited("0.2");
    run("ip", &["netns", "del", &lab.ns("instance3")]);
    wait_until(BACK, "instance1 → instance3 again", || {
        reaches(&lab, "instance1", INSTANCE3)
    });
    assert!(
        repairs(&lab).contains(&format!("create namespace {}", lab.ns("instance3"))),
        "{}",
        repairs(&lab)
    );
}

/// `ip -j link` of a namespace: name → ifindex.
fn ifindexes(lab: &Lab, object: &str) -> Vec<(String, u64)> {
    let out = run("ip", &["-n", &lab.ns(object), "-j", "link"]);
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut v: Vec<(String, u64)> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["ifindex"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_daemon_killed_between_applies_is_replaced_without_a_lost_packet() {
    if !require_root("a_daemon_killed_between_applies_is_replaced_without_a_lost_packet") {
        return;
    }
    let mut lab = Lab::seed_audited("0.2");
    let before = ifindexes(&lab, "compute1");
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
    lab.daemon.kill9();
    std::thread::sleep(Duration::from_millis(500));
    lab.daemon.restart(&["--audit-interval", "0.2"]);
    let out = lab.daemon.ovslab_ok(&["up", lab.file.to_str().unwrap()]);
    assert!(
        out.contains("no changes"),
        "the new daemon changed things: {out}"
    );
    let ping = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("80 packets transmitted, 80 received"),
        "packets were lost: {text}"
    );
    assert_eq!(before, ifindexes(&lab, "compute1"), "a link was recreated");
    assert!(status(&lab)["healthy"].as_bool().unwrap());
}

#[test]
fn a_daemon_killed_during_an_up_leaves_nothing_the_next_up_or_down_does_not_finish() {
    if !require_root(
        "a_daemon_killed_during_an_up_leaves_nothing_the_next_up_or_down_does_not_finish",
    ) {
        return;
    }
    let mut lab = Lab::create_with(ovslab_topology::SEED_YAML, &["--audit-interval", "0"]);
    // Start an up and kill the daemon while it works.
    let up = Command::new(ovslab_integration_tests::bin("ovslab"))
        .args(["--socket", lab.daemon.socket.to_str().unwrap()])
        .args(["up", lab.file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(BACK, "the up to have begun", || {
        !lab.namespaces().is_empty()
    });
    std::thread::sleep(Duration::from_millis(60));
    lab.daemon.kill9();
    let _ = up.wait_with_output();
    lab.daemon.restart(&["--audit-interval", "0"]);
    // The next up finishes it: a working lab.
    lab.up();
    assert!(reaches(&lab, "instance1", INSTANCE3));
    assert!(reaches(&lab, "instance3", INTERNET));
    // And down removes everything, processes included.
    let pids: Vec<u32> = ["network", "compute1", "compute2"]
        .iter()
        .flat_map(|n| {
            [
                pid_of(&lab, n, "ovs-vswitchd"),
                pid_of(&lab, n, "ovsdb-server"),
            ]
        })
        .collect();
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie that PID 1 of this machine never reaps.
        assert!(
            state.is_empty() || state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')),
            "pid {pid} still runs: {state}"
        );
    }
    let _ = run_raw("true", &[]);
}
