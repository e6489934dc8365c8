//! The data path's tuning (issue #6): every node's OVS runs with userspace
//! TSO and the veths keep their checksum and segmentation offloads, and bulk
//! TCP and UDP still arrive intact — across nodes, routed by the network
//! node, and through the router's NAT.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ovslab_integration_tests::{Lab, require_root, run, wait_until};

const NODES: [&str; 3] = ["network", "compute1", "compute2"];

fn tso_option(lab: &Lab, node: &str) -> String {
    lab.vsctl(node, &["get", "Open_vSwitch", ".", "other_config"])
}

fn tso_enabled_in_log(lab: &Lab, node: &str) -> usize {
    std::fs::read_to_string(lab.rundir(node).join("ovs-vswitchd.log"))
        .unwrap_or_default()
        .matches("Userspace TCP Segmentation Offloading support enabled")
        .count()
}

#[test]
#[ignore = "needs root"]
fn every_node_runs_userspace_tso_with_offloads_on() {
    require_root("every_node_runs_userspace_tso_with_offloads_on");
    let lab = Lab::seed();
    for node in NODES {
        let config = tso_option(&lab, node);
        assert!(
            config.contains("userspace-tso-enable=\"true\""),
            "{node}: other_config {config}"
        );
        assert_eq!(tso_enabled_in_log(&lab, node), 1, "{node}'s vswitchd log");
    }
    for (object, dev) in [
        ("instance1", "eth0"),
        ("compute1", "eth1"),
        ("network", "eth1"),
    ] {
        let k =
            String::from_utf8_lossy(&lab.in_ns(object, &["ethtool", "-k", dev]).stdout).to_string();
        assert!(k.contains("tx-checksumming: on"), "{object} {dev}: {k}");
        assert!(
            k.contains("tcp-segmentation-offload: on"),
            "{object} {dev}: {k}"
        );
    }

    // Lost behind the daemon's back: the next `up` puts it back and
    // restarts the vswitchd, which reads it only at start.
    lab.vsctl(
        "compute1",
        &[
            "remove",
            "Open_vSwitch",
            ".",
            "other_config",
            "userspace-tso-enable",
        ],
    );
    let out = lab.up();
    assert!(
        out.contains("compute1: set other_config userspace-tso-enable=true"),
        "{out}"
    );
    assert!(out.contains("start ovs-vswitchd on compute1"), "{out}");
    assert!(tso_option(&lab, "compute1").contains("userspace-tso-enable=\"true\""));
    wait_until(
        Duration::from_secs(5),
        "vswitchd enabling TSO again",
        || tso_enabled_in_log(&lab, "compute1") == 2,
    );
    assert!(lab.ping("instance1", "192.168.1.12", 1));
    assert!(lab.up().contains("no changes"));
}

/// A payload no two offsets of which look alike for long.
fn payload(bytes: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Sends `data` with `nc` from `from` to `addr:port`, where `server` listens;
/// returns what the server received.
fn tcp_transfer(
    lab: &Lab,
    from: &str,
    server: &str,
    addr: &str,
    port: &str,
    data: &[u8],
) -> Vec<u8> {
    let ns = lab.ns(server);
    // Into a file, not a pipe: a pipe nobody reads until the end would fill
    // up and stall the transfer.
    // In the daemon's directory, which goes with it, pass or fail.
    let out = lab.daemon.dir.join(format!("{from}-{server}.bin"));
    let listener = Command::new("ip")
        // -d: the server never reads its stdin, so it never closes its
        // side first (an nc client stops sending when the server does).
        .args(["netns", "exec", &ns, "nc", "-l", "-d", port])
        .stdout(std::fs::File::create(&out).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), "nc listening", || {
        run("ip", &["netns", "exec", &ns, "ss", "-ltn"]).contains(&format!(":{port}"))
    });
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns(from),
            "nc",
            "-N",
            "-w",
            "10",
            addr,
            port,
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(data)
        .unwrap_or_else(|e| panic!("nc {from} → {addr}: {e}"));
    assert!(
        client.wait().unwrap().success(),
        "nc {from} → {addr} failed"
    );
    assert!(listener.wait_with_output().unwrap().status.success());
    let got = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    got
}

#[test]
#[ignore = "needs root"]
fn bulk_tcp_arrives_intact_across_nodes_routed_and_through_nat() {
    require_root("bulk_tcp_arrives_intact_across_nodes_routed_and_through_nat");
    let lab = Lab::seed();
    let data = payload(16 << 20);
    for (what, from, server, addr) in [
        (
            "same network, across nodes",
            "instance1",
            "instance3",
            "192.168.1.12",
        ),
        (
            "routed by the network node",
            "instance1",
            "instance2",
            "192.168.2.11",
        ),
        ("out through SNAT", "instance3", "internet", "203.0.113.1"),
        (
            "out through the floating IP",
            "instance1",
            "internet",
            "203.0.113.1",
        ),
    ] {
        let got = tcp_transfer(&lab, from, server, addr, "5001", &data);
        assert!(
            got == data,
            "{what}: {} of {} bytes arrived, or corrupted",
            got.len(),
            data.len()
        );
    }
}

#[test]
#[ignore = "needs root"]
fn udp_datagrams_arrive_intact_across_nodes_and_routed() {
    require_root("udp_datagrams_arrive_intact_across_nodes_and_routed");
    let lab = Lab::seed();
    let data = payload(1400);
    for (what, server, addr) in [
        ("same network, across nodes", "instance3", "192.168.1.12"),
        ("routed by the network node", "instance2", "192.168.2.11"),
        ("out through the floating IP", "internet", "203.0.113.1"),
    ] {
        let ns = lab.ns(server);
        let listener = Command::new("ip")
            .args(["netns", "exec", &ns, "nc", "-u", "-l", "-W", "1", "5002"])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(5), "nc listening", || {
            run("ip", &["netns", "exec", &ns, "ss", "-lun"]).contains(":5002")
        });
        let mut client = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("instance1"),
                "nc",
                "-u",
                "-w",
                "1",
                addr,
                "5002",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        client.stdin.take().unwrap().write_all(&data).unwrap();
        client.wait().unwrap();
        let got = listener.wait_with_output().unwrap().stdout;
        assert!(got == data, "{what}: got {} bytes, or corrupted", got.len());
    }
}
