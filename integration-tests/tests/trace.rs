//! `ovslab trace` and `ovslab capture` on the seed lab, end to end: the
//! walkthrough's paths as the trace measures them, a probe lost to a
//! deleted translation flow, and a pcap that tcpdump reads with its tags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ovslab_capture::PacketSocket;
use ovslab_integration_tests::{Lab, require_root, run};
use serde_json::Value;

fn trace(lab: &Lab, args: &[&str]) -> Value {
    let mut full = vec!["trace", "--lab", lab.name.as_str(), "--json"];
    full.extend_from_slice(args);
    let out = lab.daemon.ovslab(&full);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "trace {args:?}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The hops of one leg that are on the way (not flooded copies).
fn way<'a>(t: &'a Value, leg: &str) -> Vec<&'a Value> {
    t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["leg"] == leg && h["flooded"] == false)
        .collect()
}

fn places(hops: &[&Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in hops {
        let p = h["place"].as_str().unwrap().to_string();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

fn conclusions(t: &Value) -> Vec<String> {
    t["conclusions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn hop<'a>(hops: &[&'a Value], place: &str, device_prefix: &str, dir: &str) -> &'a Value {
    hops.iter()
        .find(|h| {
            h["place"] == place
                && h["device"].as_str().unwrap().starts_with(device_prefix)
                && h["direction"] == dir
        })
        .unwrap_or_else(|| panic!("no hop {place} {device_prefix}* {dir} in {hops:#?}"))
}

fn notes(h: &Value) -> String {
    h["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An `ovslab capture` running, past its "listening on" line.
struct Capture {
    child: std::process::Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl Capture {
    /// Waits for its end: its status and the rest of what it said.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        (self.child.wait().unwrap(), rest)
    }
}

/// Starts `ovslab capture --lab LAB ARGS…` and returns once it says it
/// listens: what is sent from then on is captured.
fn start_capture(lab: &Lab, args: &[&str]) -> Capture {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(ovslab_integration_tests::bin("ovslab"));
    cmd.args(["--socket", lab.daemon.socket.to_str().unwrap()]);
    cmd.args(["capture", "--lab", &lab.name]).args(args);
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on "), "capture: {line}");
    Capture { child, stderr }
}

#[test]
#[ignore = "needs root"]
fn traces_follow_the_walkthrough_paths() {
    require_root("traces_follow_the_walkthrough_paths");
    let lab = Lab::seed();
    // Let every switch learn where everyone is: the paths below are then
    // unicast, as in the walkthrough (floods are reported apart anyway).
    for (from, to) in [
        ("instance1", "192.168.1.13"),
        ("instance1", "192.168.1.12"),
        ("instance1", "192.168.2.11"),
        ("instance3", "203.0.113.1"),
    ] {
        assert!(lab.ping(from, to, 2), "{from} → {to}");
    }
    let links_before = lab.in_ns("compute1", &["ip", "-o", "link"]).stdout;

    // Same node: br-int only.
    let t = trace(&lab, &["instance1", "instance4"]);
    assert_eq!(t["answered"], true, "{t:#}");
    let request = way(&t, "request");
    assert_eq!(
        places(&request),
        ["instance1", "compute1", "instance4"],
        "{t:#}"
    );
    assert!(request.iter().all(|h| h["device"] != "eth1"), "{t:#}");
    let qvo = hop(&request, "compute1", "qvo", "in");
    let mut bridges: Vec<&str> = qvo["bridge"]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bridge"].as_str().unwrap())
        .collect();
    // Table 0, then the MAC-spoof table 25: br-int only.
    bridges.dedup();
    assert_eq!(bridges, ["br-int"], "{t:#}");
    assert!(conclusions(&t).contains(&"crossed the network node: no".to_string()));
    for device in ["tap", "qbr", "qvb", "qvo"] {
        hop(
            &request,
            "compute1",
            device,
            if device == "qvb" { "out" } else { "in" },
        );
    }

    // Same network, other node: VLAN 101 on the wire, local tags on br-int.
    let t = trace(&lab, &["instance1", "instance3"]);
    assert_eq!(t["answered"], true, "{t:#}");
    let request = way(&t, "request");
    assert_eq!(
        places(&request),
        ["instance1", "compute1", "physnet1", "compute2", "instance3"],
        "{t:#}"
    );
    assert_eq!(hop(&request, "compute1", "eth1", "out")["vlan"], 101);
    assert_eq!(hop(&request, "physnet1", "compute1", "in")["vlan"], 101);
    assert_eq!(hop(&request, "compute2", "eth1", "in")["vlan"], 101);
    assert!(hop(&request, "compute2", "qvo", "out")["vlan"].is_null());
    let out_note = notes(hop(&request, "compute1", "qvo", "in"));
    assert!(
        out_note.contains("br-vlan rewrites VLAN ") && out_note.contains(" → 101"),
        "{out_note}"
    );
    let in_note = notes(hop(&request, "compute2", "eth1", "in"));
    assert!(in_note.contains("br-int rewrites VLAN 101 → "), "{in_note}");
    let c = conclusions(&t);
    assert!(
        c.contains(&"crossed the network node: no".to_string()),
        "{c:?}"
    );
    assert!(
        c.contains(&"physical network: VLAN 101".to_string()),
        "{c:?}"
    );

    // UDP and TCP probes take the same way, answered by the trace's own
    // responder at the destination.
    for proto in ["--udp", "--tcp"] {
        let t = trace(&lab, &["instance1", "instance3", proto, "5353"]);
        assert_eq!(t["answered"], true, "{t:#}");
        assert_eq!(
            places(&way(&t, "request")),
            ["instance1", "compute1", "physnet1", "compute2", "instance3"],
            "{t:#}"
        );
    }

    // Other network: through the network node, 101 in, routed, 102 out.
    let t = trace(&lab, &["instance1", "instance2"]);
    assert_eq!(t["answered"], true, "{t:#}");
    let request = way(&t, "request");
    assert_eq!(
        places(&request),
        [
            "instance1",
            "compute1",
            "physnet1",
            "network",
            "router1",
            "network",
            "physnet1",
            "compute2",
            "instance2"
        ],
        "{t:#}"
    );
    assert_eq!(hop(&request, "network", "eth1", "in")["vlan"], 101);
    assert_eq!(hop(&request, "network", "eth1", "out")["vlan"], 102);
    assert_eq!(hop(&request, "compute2", "eth1", "in")["vlan"], 102);
    let qr_out = hop(&request, "router1", "qr-", "out");
    assert!(notes(qr_out).contains("routed"), "{qr_out:#}");
    let c = conclusions(&t);
    assert!(
        c.contains(&"crossed the network node: yes".to_string()),
        "{c:?}"
    );
    assert!(
        c.contains(&"physical network: VLAN 101, VLAN 102".to_string()),
        "{c:?}"
    );

    // To the internet: SNAT to the router's gateway address.
    let t = trace(&lab, &["instance3", "internet"]);
    assert_eq!(t["answered"], true, "{t:#}");
    let request = way(&t, "request");
    assert_eq!(
        hop(&request, "internet", "eth0", "in")["src_ip"],
        "203.0.113.101"
    );
    let c = conclusions(&t);
    assert!(
        c.contains(&"SNAT 192.168.1.12 → 203.0.113.101 in router1".to_string()),
        "{c:?}"
    );

    // From the internet to a floating IP: DNAT to the instance.
    let t = trace(&lab, &["internet", "203.0.113.102"]);
    assert_eq!(t["answered"], true, "{t:#}");
    let request = way(&t, "request");
    assert_eq!(
        hop(&request, "instance1", "eth0", "in")["dst_ip"],
        "192.168.1.11"
    );
    let c = conclusions(&t);
    assert!(
        c.contains(&"DNAT 203.0.113.102 → 192.168.1.11 in router1".to_string()),
        "{c:?}"
    );

    // TCP from the internet is dropped by the security group, on qbr.
    let t = trace(&lab, &["internet", "203.0.113.102", "--tcp", "22"]);
    assert_eq!(t["answered"], false, "{t:#}");
    let lost = &t["lost"];
    assert!(
        lost["last_seen"]
            .as_str()
            .unwrap()
            .starts_with("compute1 qbr"),
        "{t:#}"
    );
    assert!(
        lost["next_expected"]
            .as_str()
            .unwrap()
            .starts_with("compute1 tap"),
        "{t:#}"
    );

    // The lab is as it was: no device left promiscuous or changed.
    let links_after = lab.in_ns("compute1", &["ip", "-o", "link"]).stdout;
    assert_eq!(
        String::from_utf8_lossy(&links_before),
        String::from_utf8_lossy(&links_after)
    );
}

#[test]
#[ignore = "needs root"]
fn a_deleted_translation_flow_shows_where_the_probe_was_lost() {
    require_root("a_deleted_translation_flow_shows_where_the_probe_was_lost");
    let lab = Lab::seed();
    assert!(lab.ping("instance1", "192.168.1.12", 2));
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    let t = trace(&lab, &["instance1", "instance3"]);
    assert_eq!(t["answered"], false, "{t:#}");
    let request = way(&t, "request");
    assert!(request.iter().all(|h| h["place"] != "compute2"), "{t:#}");
    let qvo = hop(&request, "compute1", "qvo", "in");
    assert_eq!(qvo["bridge"]["datapath_actions"], "drop", "{qvo:#}");
    let lost = &t["lost"];
    assert!(
        lost["last_seen"]
            .as_str()
            .unwrap()
            .starts_with("compute1 qvo"),
        "{lost:#}"
    );
    assert_eq!(lost["next_expected"], "compute1 eth1 (out)", "{lost:#}");

    // The words say the same.
    let text = lab
        .daemon
        .ovslab(&["trace", "--lab", &lab.name, "instance1", "instance3"]);
    assert!(!text.status.success(), "a lost probe exits 1");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("LOST: last seen at compute1 qvo")
            && text.contains("next on the expected path: compute1 eth1 (out)"),
        "{text}"
    );
}

/// A trace through a wire an instance floods says where it may have
/// missed the probe: the kernel dropped frames for its socket there.
#[test]
#[ignore = "needs root"]
fn a_trace_through_a_flooded_wire_says_it_may_have_missed_hops() {
    require_root("a_trace_through_a_flooded_wire_says_it_may_have_missed_hops");
    let lab = Lab::seed();
    assert!(lab.ping("instance1", "192.168.1.13", 2));
    let quiet = trace(&lab, &["instance1", "instance4"]);
    assert!(
        !conclusions(&quiet)
            .iter()
            .any(|c| c.contains("frames unseen")),
        "{quiet:#}"
    );

    // instance1 sends frames of no protocol to nobody, as fast as it can.
    let ns = lab.ns("instance1");
    let flooding = AtomicBool::new(true);
    let flooded = std::thread::scope(|s| {
        s.spawn(|| {
            let nic = PacketSocket::open(&ns, "eth0", false).unwrap();
            let mut frame = vec![0x02, 0, 0, 0, 0, 0x98, 0x02, 0, 0, 0, 0, 0x99, 0x88, 0xb5];
            frame.resize(60, 0);
            let until = Instant::now() + Duration::from_secs(60);
            while flooding.load(Ordering::Relaxed) && Instant::now() < until {
                let _ = nic.send(&frame);
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let t = trace(&lab, &["instance1", "instance4"]);
        flooding.store(false, Ordering::Relaxed);
        t
    });
    let note = conclusions(&flooded)
        .into_iter()
        .find(|c| c.contains("frames unseen"))
        .unwrap_or_else(|| panic!("no word of the flood: {flooded:#}"));
    assert!(note.contains(&format!("eth0 in {ns}")), "{note}");
    assert!(note.contains("hops there may be missing"), "{note}");
}

#[test]
#[ignore = "needs root"]
fn unknown_trace_ends_are_refused_by_name() {
    require_root("unknown_trace_ends_are_refused_by_name");
    let lab = Lab::seed();
    let out = lab
        .daemon
        .ovslab(&["trace", "--lab", &lab.name, "nobody", "instance1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`nobody` is not an instance or external host"),
        "{err}"
    );
    let out = lab
        .daemon
        .ovslab(&["trace", "--lab", &lab.name, "instance1", "nowhere"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`nowhere` is not an instance"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn capture_writes_a_pcap_that_keeps_vlan_tags() {
    require_root("capture_writes_a_pcap_that_keeps_vlan_tags");
    let lab = Lab::seed();
    assert!(lab.ping("instance1", "192.168.1.12", 1));
    let pcap = lab.daemon.dir.join("eth1.pcap");
    let pcap_arg = pcap.to_str().unwrap().to_string();
    let capture = start_capture(
        &lab,
        &["compute1", "eth1", "-w", &pcap_arg, "--seconds", "4"],
    );
    assert!(lab.ping("instance1", "192.168.1.12", 3));
    let (status, stderr) = capture.wait();
    assert!(status.success(), "{stderr}");
    // tcpdump, an independent reader, sees the tags in both directions.
    let text = run("tcpdump", &["-r", &pcap_arg, "-e", "-n"]);
    let tagged: Vec<&str> = text.lines().filter(|l| l.contains("vlan 101")).collect();
    assert!(
        tagged.iter().filter(|l| l.contains("echo request")).count() >= 3
            && tagged.iter().filter(|l| l.contains("echo reply")).count() >= 3,
        "{text}"
    );

    // Without -w: one line per frame, with the tag.
    let capture = start_capture(&lab, &["compute2", "eth1", "-c", "200", "--seconds", "3"]);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.ns("instance1"),
            "ping",
            "-c",
            "4",
            "-i",
            "0.2",
            "192.168.1.12",
        ],
    );
    let out = capture.child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains(" in ")
            && l.contains("vlan 101")
            && l.contains("192.168.1.11 > 192.168.1.12: ICMP echo request")),
        "{text}"
    );
    let out = lab.daemon.ovslab(&[
        "capture", "--lab", &lab.name, "compute1", "nope0", "-c", "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope0"));
}
