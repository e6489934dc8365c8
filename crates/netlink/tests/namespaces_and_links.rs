//! Root tests: namespaces and links made through the crate, observed with
//! `ip -j` and `ethtool` as independent witnesses.

use ovslab_netlink::{Netlink, netns};
use ovslab_testkit::{require_root, run, run_raw, unique_name};

/// A namespace created by the crate, deleted (by the crate) on drop.
struct Ns(String);

impl Ns {
    fn new() -> Self {
        let name = unique_name("ovslab-nl-");
        netns::create(&name).expect("create namespace");
        Ns(name)
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.0];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
        let _ = run_raw("ip", &["netns", "del", &self.0]);
    }
}

#[test]
#[ignore = "needs root"]
fn create_and_delete_namespace_seen_by_ip_netns() {
    require_root("create_and_delete_namespace_seen_by_ip_netns");
    let ns = Ns::new();
    assert!(run("ip", &["netns", "list"]).contains(&ns.0));
    assert!(netns::exists(&ns.0));
    assert!(netns::list().unwrap().contains(&ns.0));
    // Loopback comes up with the namespace.
    assert!(ns.ip(&["-j", "link", "show", "lo"]).contains("\"UP\""));
    // Creating it twice fails and leaves the first alone.
    assert!(netns::create(&ns.0).is_err());
    assert!(netns::exists(&ns.0));

    netns::delete(&ns.0).unwrap();
    assert!(!run("ip", &["netns", "list"]).contains(&ns.0));
    assert!(!netns::exists(&ns.0));
    // Deleting what is gone is fine.
    netns::delete(&ns.0).unwrap();
}

/// A renamed namespace is the same one (its links stay), under the new
/// name only; a rename onto a name in use changes nothing.
#[test]
#[ignore = "needs root"]
fn a_renamed_namespace_keeps_its_links_under_its_new_name() {
    use std::os::unix::fs::MetadataExt;
    require_root("a_renamed_namespace_keeps_its_links_under_its_new_name");
    let from = Ns::new();
    let taken = Ns::new();
    let inode = std::fs::metadata(netns::path(&from.0)).unwrap().ino();
    from.ip(&[
        "link", "add", "kept0", "type", "veth", "peer", "name", "kept1",
    ]);
    assert!(netns::rename(&from.0, &taken.0).is_err());
    assert!(netns::exists(&from.0) && netns::exists(&taken.0));
    let to = Ns(unique_name("ovslab-nl-"));
    netns::rename(&from.0, &to.0).unwrap();
    assert!(!netns::exists(&from.0));
    assert!(
        !netns::path(&from.0).exists(),
        "the old name's file is gone"
    );
    assert_eq!(std::fs::metadata(netns::path(&to.0)).unwrap().ino(), inode);
    assert!(to.ip(&["-j", "link", "show", "kept0"]).contains("kept0"));
    let listed = run("ip", &["netns", "list"]);
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&to.0.as_str()) && !names.contains(&from.0.as_str()));
}

/// What is at a namespace's path is told without a descriptor (so not
/// taken for a stale file when the process has none left) and without
/// following a symbolic link, which `delete` does not follow either.
#[test]
#[ignore = "needs root"]
fn what_is_at_a_namespace_s_path_is_told_without_opening_it() {
    use std::os::unix::fs::MetadataExt;
    require_root("what_is_at_a_namespace_s_path_is_told_without_opening_it");
    let ns = Ns::new();
    let inode = std::fs::metadata(netns::path(&ns.0)).unwrap().ino();
    assert_eq!(netns::mounted_inode(&ns.0).unwrap(), Some(inode));

    // No descriptor left: opening fails, looking does not.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct; nextest runs this
    // test in a process of its own, and the limit is put back below.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let tight = libc::rlimit {
        rlim_cur: 0,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
    let opened = netns::open(&ns.0).is_ok();
    let looked = netns::mounted_inode(&ns.0);
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert!(!opened, "the descriptor limit did not bite");
    assert_eq!(looked.unwrap(), Some(inode));

    // A plain empty file (an interrupted create's) and nothing at all.
    let plain = unique_name("ovslab-nl-");
    std::fs::write(netns::path(&plain), b"").unwrap();
    assert_eq!(netns::mounted_inode(&plain).unwrap(), None);
    std::fs::remove_file(netns::path(&plain)).unwrap();
    assert_eq!(netns::mounted_inode(&plain).unwrap(), None);

    // A symbolic link to the namespace: neither, and deleting it leaves
    // the namespace mounted.
    let link = unique_name("ovslab-nl-");
    std::os::unix::fs::symlink(netns::path(&ns.0), netns::path(&link)).unwrap();
    let told = netns::mounted_inode(&link);
    netns::delete(&link).unwrap();
    let _ = std::fs::remove_file(netns::path(&link));
    assert!(told.is_err(), "a symbolic link was taken for {told:?}");
    assert!(netns::exists(&ns.0), "deleting a link unmounted its target");
}

#[test]
#[ignore = "needs root"]
fn sysctls_are_per_namespace() {
    require_root("sysctls_are_per_namespace");
    let ns = Ns::new();
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    netns::write_sysctl(&ns.0, "net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        netns::read_sysctl(&ns.0, "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert_eq!(
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns.0,
                "sysctl",
                "-n",
                "net.ipv4.ip_forward"
            ]
        )
        .trim(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host
    );
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_connection_reads_the_namespaces_sysctls_on_the_way() {
    require_root("a_connection_reads_the_namespaces_sysctls_on_the_way");
    let (on, off) = (Ns::new(), Ns::new());
    netns::write_sysctl(&on.0, "net.ipv4.ip_forward", "1").unwrap();
    netns::write_sysctl(&off.0, "net.ipv4.ip_forward", "0").unwrap();
    let keys = [
        "net.ipv4.ip_forward".to_string(),
        "net/ipv4/no_such_sysctl".to_string(),
    ];
    for (ns, want) in [(&on, "1"), (&off, "0")] {
        let (nl, values) = Netlink::connect_reading_sysctls(&ns.0, &keys)
            .await
            .unwrap();
        assert_eq!(values, [Some(want.to_string()), None]);
        assert!(nl.links().await.unwrap().iter().any(|l| l.name == "lo"));
    }
}

#[test]
#[ignore = "needs root"]
fn spawned_children_run_inside_the_namespace() {
    require_root("spawned_children_run_inside_the_namespace");
    let ns = Ns::new();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "identify"])
        .stdout(std::process::Stdio::piped());
    let child = netns::spawn_in(&mut cmd, &ns.0).unwrap().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ns.0);
    let mut missing = std::process::Command::new("/nonexistent/ovslab-program");
    assert!(
        netns::spawn_in(&mut missing, &ns.0).unwrap().is_err(),
        "a missing program is the inner error"
    );
}

/// Runs `iptables ARGS` in namespace `ns`; panics unless it succeeds.
fn iptables_in(ns: &Ns, args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "iptables"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "iptables {args:?}");
}

#[test]
#[ignore = "needs root"]
fn the_firewall_generation_moves_with_every_change_and_only_then() {
    require_root("the_firewall_generation_moves_with_every_change_and_only_then");
    let (a, b) = (Ns::new(), Ns::new());
    let first = ovslab_netlink::generation(&a.0).unwrap();
    assert_eq!(
        ovslab_netlink::generation(&a.0).unwrap(),
        first,
        "nothing changed"
    );
    assert_ne!(
        ovslab_netlink::generation(&b.0).unwrap().cookie,
        first.cookie,
        "two namespaces, one cookie"
    );
    let iptables = |args: &[&str]| iptables_in(&a, args);
    iptables(&["-N", "ovslab-test"]);
    let added = ovslab_netlink::generation(&a.0).unwrap();
    assert_eq!(added.cookie, first.cookie);
    assert_ne!(
        added.id, first.id,
        "a new chain did not move the generation"
    );
    iptables(&["-A", "ovslab-test", "-j", "ACCEPT"]);
    let appended = ovslab_netlink::generation(&a.0).unwrap();
    assert_ne!(
        appended.id, added.id,
        "a new rule did not move the generation"
    );
    // Reading the rules (counters and all) is not a change.
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &a.0, "iptables-save", "-c"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(ovslab_netlink::generation(&a.0).unwrap(), appended);
    // iptables-restore commits each table of its input on its own: the
    // generation moves by one per table (what ovslab relies on to know that
    // its own write was the only change).
    let mut restore = std::process::Command::new("ip")
        .args(["netns", "exec", &a.0, "iptables-restore", "--noflush", "-w"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    restore
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"*filter\n:neutron-x - [0:0]\n-A neutron-x -j ACCEPT\n-A neutron-x -s 192.0.2.1/32 -j DROP\nCOMMIT\n\
              *nat\n:neutron-y - [0:0]\n-A neutron-y -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
    assert!(restore.wait().unwrap().success());
    let restored = ovslab_netlink::generation(&a.0).unwrap();
    assert_eq!(
        restored.id,
        appended.id.wrapping_add(2),
        "{appended:?} -> {restored:?}"
    );
}

/// Whether `fd` (non-blocking) holds a notification; empties it.
fn notified(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8192];
    let mut any = false;
    // SAFETY: recv(2) into a buffer of ours, on a socket we own.
    while unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } > 0 {
        any = true;
    }
    any
}

#[test]
#[ignore = "needs root"]
fn each_namespace_s_rule_socket_hears_its_own_commits_only() {
    require_root("each_namespace_s_rule_socket_hears_its_own_commits_only");
    let (a, b) = (Ns::new(), Ns::new());
    let files: Vec<std::fs::File> = [&a, &b]
        .iter()
        .map(|ns| std::fs::File::open(netns::path(&ns.0)).unwrap())
        .collect();
    let sockets: Vec<std::os::fd::OwnedFd> =
        ovslab_netlink::events::rules(&files.iter().collect::<Vec<_>>())
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(sockets.len(), 2);
    assert!(!notified(&sockets[0]) && !notified(&sockets[1]));
    iptables_in(&b, &["-N", "ovslab-test"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!notified(&sockets[0]), "a heard b's commit");
    assert!(notified(&sockets[1]), "b did not hear its own commit");
    iptables_in(&a, &["-t", "nat", "-N", "ovslab-test"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(notified(&sockets[0]), "a did not hear its own commit");
    assert!(!notified(&sockets[1]), "b heard a's commit");
}

#[test]
#[ignore = "needs root"]
fn ipset_members_are_listed_added_and_deleted_over_netlink() {
    require_root("ipset_members_are_listed_added_and_deleted_over_netlink");
    let ns = Ns::new();
    let ipset = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "ipset"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ipset {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ipset(&["create", "NIPv4test", "hash:net", "family", "inet"]);
    ipset(&["add", "NIPv4test", "10.0.0.1"]);
    ipset(&["add", "NIPv4test", "10.1.0.0/16"]);
    ipset(&["create", "other", "hash:ip", "family", "inet"]);
    // Enough members that the kernel splits the set over several messages.
    let many: Vec<std::net::Ipv4Addr> = (0..3000u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a64_0000 + i))
        .collect();

    let sets = ovslab_netlink::ipsets(&ns.0).unwrap();
    let net = |s: &str| s.parse::<ipnet::Ipv4Net>().unwrap();
    assert_eq!(
        sets["NIPv4test"],
        [net("10.0.0.1/32"), net("10.1.0.0/16")]
            .into_iter()
            .collect()
    );
    assert!(sets["other"].is_empty());

    let one = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let two = std::net::Ipv4Addr::new(10, 0, 0, 2);
    ovslab_netlink::change_ipset(&ns.0, "NIPv4test", &[two, two], &[one]).unwrap();
    let saved = ipset(&["save", "NIPv4test"]);
    assert!(saved.contains("add NIPv4test 10.0.0.2\n"), "{saved}");
    assert!(!saved.contains("10.0.0.1\n"), "{saved}");
    // Deleting what is gone is no error either.
    ovslab_netlink::change_ipset(&ns.0, "NIPv4test", &many, &[one]).unwrap();
    let sets = ovslab_netlink::ipsets(&ns.0).unwrap();
    assert_eq!(sets["NIPv4test"].len(), 3002);
    assert!(
        ovslab_netlink::change_ipset(&ns.0, "NIPv4missing", &[one], &[]).is_err(),
        "a missing set is an error"
    );
    // A name longer than ipset's 31 bytes is the kernel's EINVAL, however
    // long (even past what one attribute can hold).
    for len in [32, 70_000] {
        let err = ovslab_netlink::change_ipset(&ns.0, &"N".repeat(len), &[one], &[]).unwrap_err();
        let errno = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(errno, Some(libc::EINVAL), "{len}: {err}");
    }
}

/// A veth end whose other end is in another namespace names that end's
/// ifindex (what tells a lab's link wired to the host); one whose other end
/// is beside it names none.
#[tokio::test]
#[ignore = "needs root"]
async fn a_veth_end_names_its_other_end_only_when_that_is_elsewhere() {
    require_root("a_veth_end_names_its_other_end_only_when_that_is_elsewhere");
    let (a, b) = (Ns::new(), Ns::new());
    a.ip(&[
        "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", &b.0,
    ]);
    a.ip(&["link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
    let links = |ns: &Ns| {
        let ns = ns.0.clone();
        async move { Netlink::connect(&ns).await.unwrap().links().await.unwrap() }
    };
    let (in_a, in_b) = (links(&a).await, links(&b).await);
    let find = |links: &[ovslab_netlink::LinkInfo], name: &str| {
        links.iter().find(|l| l.name == name).unwrap().clone()
    };
    let (a0, b0) = (find(&in_a, "a0"), find(&in_b, "b0"));
    assert_eq!(a0.peer_elsewhere, Some(b0.index));
    assert_eq!(b0.peer_elsewhere, Some(a0.index));
    assert_eq!(find(&in_a, "x0").peer_elsewhere, None);
    assert_eq!(find(&in_a, "x1").peer_elsewhere, None);
    assert_eq!(find(&in_a, "lo").peer_elsewhere, None);
}

#[tokio::test]
#[ignore = "needs root"]
async fn hybrid_plug_wiring_across_namespaces() {
    require_root("hybrid_plug_wiring_across_namespaces");
    let node = Ns::new();
    let instance = Ns::new();
    let nl = Netlink::connect(&node.0).await.unwrap();
    let inl = Netlink::connect(&instance.0).await.unwrap();

    nl.add_bridge("qbrtest").await.unwrap();
    nl.add_veth("taptest", "eth0", &instance.0).await.unwrap();
    nl.add_veth("qvbtest", "qvotest", &node.0).await.unwrap();
    nl.set_master("taptest", Some("qbrtest")).await.unwrap();
    nl.set_master("qvbtest", Some("qbrtest")).await.unwrap();
    for l in ["qbrtest", "taptest", "qvbtest", "qvotest"] {
        nl.set_up(l).await.unwrap();
    }
    let mac = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x01];
    inl.set_mac("eth0", mac).await.unwrap();
    inl.add_address("eth0", "192.168.1.11/24".parse().unwrap())
        .await
        .unwrap();
    inl.set_up("eth0").await.unwrap();
    inl.add_route("0.0.0.0/0".parse().unwrap(), "192.168.1.1".parse().unwrap())
        .await
        .unwrap();
    inl.set_tx_checksum("eth0", false).unwrap();

    // ip's view of the node.
    let tap = node.ip(&["-d", "-j", "link", "show", "taptest"]);
    assert!(tap.contains("\"master\":\"qbrtest\""), "{tap}");
    // Made with one queue each way, both ends (not one per CPU, cut to
    // one after an RCU grace period under the RTNL lock).
    for (ns, link) in [(&node, "taptest"), (&instance, "eth0"), (&node, "qvotest")] {
        let shown = ns.ip(&["-d", "-j", "link", "show", link]);
        assert!(
            shown.contains("\"num_tx_queues\":1,") && shown.contains("\"num_rx_queues\":1,"),
            "{link}: {shown}"
        );
    }
    let qbr = node.ip(&["-d", "-j", "link", "show", "qbrtest"]);
    assert!(qbr.contains("\"stp_state\":0"), "{qbr}");
    assert!(qbr.contains("\"forward_delay\":0"), "{qbr}");
    // ip's view of the instance.
    let eth0 = instance.ip(&["-j", "addr", "show", "eth0"]);
    assert!(eth0.contains("fa:16:3e:00:00:01"), "{eth0}");
    assert!(eth0.contains("\"local\":\"192.168.1.11\""), "{eth0}");
    assert!(
        instance
            .ip(&["route", "show"])
            .contains("default via 192.168.1.1 dev eth0")
    );
    let k = run(
        "ip",
        &["netns", "exec", &instance.0, "ethtool", "-k", "eth0"],
    );
    assert!(k.contains("tx-checksumming: off"), "{k}");

    // The crate's own view agrees.
    let links = nl.links().await.unwrap();
    let qbr_index = links.iter().find(|l| l.name == "qbrtest").unwrap().index;
    let tap = links.iter().find(|l| l.name == "taptest").unwrap();
    assert_eq!(
        (tap.kind.as_str(), tap.master, tap.up),
        ("veth", Some(qbr_index), true)
    );
    assert_eq!(
        links.iter().find(|l| l.name == "qbrtest").unwrap().kind,
        "bridge"
    );
    let eth0 = inl.link("eth0").await.unwrap();
    assert_eq!(eth0.mac, Some(mac));
    assert_eq!(eth0.addresses, vec!["192.168.1.11/24".parse().unwrap()]);
    assert!(!inl.tx_checksum("eth0").unwrap());
    let routes = inl.routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].gateway.to_string(), "192.168.1.1");

    // Undo, piece by piece.
    inl.del_address("eth0", "192.168.1.11/24".parse().unwrap())
        .await
        .unwrap();
    assert!(inl.link("eth0").await.unwrap().addresses.is_empty());
    nl.set_master("taptest", None).await.unwrap();
    assert_eq!(nl.link("taptest").await.unwrap().master, None);
    nl.del_link("taptest").await.unwrap();
    assert!(!node.ip(&["link"]).contains("taptest"));
    assert!(
        !instance.ip(&["link"]).contains("eth0"),
        "the peer goes with it"
    );
    nl.del_link("taptest").await.unwrap();
    assert!(matches!(
        nl.link("nosuch").await,
        Err(ovslab_netlink::NetlinkError::NoSuchLink { .. })
    ));
    // An existing name is reported as such.
    let err = nl.add_bridge("qbrtest").await.unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("create bridge qbrtest"), "{err}");
}

#[test]
fn connect_to_a_missing_namespace_names_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(Netlink::connect("ovslab-no-such-ns"))
        .unwrap_err();
    assert!(err.to_string().contains("ovslab-no-such-ns"), "{err}");
}

/// The two ends of a veth never share an ifindex: when they do, the kernel
/// delays the carrier change by up to a second, and a Linux bridge keeps
/// the port disabled (dropping what it should forward) until then.
#[tokio::test]
#[ignore = "needs root"]
async fn a_bridge_port_forwards_as_soon_as_its_veth_is_up() {
    require_root("a_bridge_port_forwards_as_soon_as_its_veth_is_up");
    let switch = Ns::new();
    let node = Ns::new();
    let nl = Netlink::connect(&switch.0).await.unwrap();
    let node_nl = Netlink::connect(&node.0).await.unwrap();
    // Fresh namespaces number their links alike: without chosen indexes
    // both ends would be 2 here.
    nl.add_veth("node1", "eth1", &node.0).await.unwrap();
    nl.add_bridge("physnet").await.unwrap();
    nl.set_up("physnet").await.unwrap();
    let port = nl.link("node1").await.unwrap();
    let peer = node_nl.link("eth1").await.unwrap();
    assert_ne!(port.index, peer.index);
    nl.set_master("node1", Some("physnet")).await.unwrap();
    nl.set_up("node1").await.unwrap();
    node_nl.set_up("eth1").await.unwrap();
    // Well under link watch's one-second delay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    loop {
        let state = switch.ip(&["-j", "link", "show", "node1"]);
        if state.contains("\"operstate\":\"UP\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the port is still not up: {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let bridge = run("bridge", &["-n", &switch.0, "link", "show", "dev", "node1"]);
    assert!(bridge.contains("state forwarding"), "{bridge}");
}

/// One socket hears the link changes of each namespace given an id in
/// the socket's namespace, each with its id, and none of a namespace
/// without one.
#[test]
#[ignore = "needs root"]
fn one_socket_hears_the_links_of_every_namespace_with_an_id() {
    use ovslab_netlink::events::{AllNamespaces, read_notice};
    require_root("one_socket_hears_the_links_of_every_namespace_with_an_id");
    let (a, b, unwatched) = (Ns::new(), Ns::new(), Ns::new());
    let all = AllNamespaces::subscribe().unwrap();
    let open = |ns: &Ns| std::fs::File::open(netns::path(&ns.0)).unwrap();
    let id_a = all.id_of(open(&a)).unwrap();
    let id_b = all.id_of(open(&b)).unwrap();
    assert_ne!(id_a, id_b);
    assert_eq!(all.id_of(open(&a)).unwrap(), id_a, "an id is kept");
    // Given in the socket's own namespace: the host's has no id for them.
    let listed = run("ip", &["netns", "list"]);
    assert!(listed.contains(&a.0), "{listed}");
    assert!(!listed.contains(&format!("{} (id:", a.0)), "{listed}");

    let heard = |want: i32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        while std::time::Instant::now() < deadline {
            match read_notice(all.notices(), &mut buf) {
                Ok((_, id)) => {
                    ids.push(id);
                    if id == Some(want) {
                        return ids;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no notice from namespace id {want}; heard {ids:?}")
    };
    unwatched.ip(&["link", "add", "x0", "type", "veth", "peer", "x1"]);
    b.ip(&["link", "add", "v0", "type", "veth", "peer", "v1"]);
    let ids = heard(id_b);
    a.ip(&["link", "set", "lo", "mtu", "9000"]);
    let ids: Vec<_> = ids.into_iter().chain(heard(id_a)).collect();
    assert!(
        ids.iter()
            .all(|id| *id == Some(id_a) || *id == Some(id_b) || id.is_none()),
        "a namespace without an id was heard: {ids:?}"
    );
}
