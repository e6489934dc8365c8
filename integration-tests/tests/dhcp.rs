//! DHCP as Neutron serves it, end to end: the seed lab with DHCP on both
//! networks (its `dhcp: false` lines taken out). Each network's dnsmasq
//! runs in its qdhcp namespace with the DHCP agent's command line and
//! files, each instance's busybox udhcpc gets its reservation, and
//! independent observers (`ip`, `ovs-vsctl`, `iptables-save`, `tcpdump`,
//! `/proc`) check what the daemon built.

use std::time::{Duration, Instant};

use ovslab_integration_tests::{Lab, dead, recreated, rename_lab, require_root};
use ovslab_topology::dhcp::{DhcpPort, namespace as qdhcp_namespace};

/// The seed lab with DHCP on both networks.
fn dhcp_seed() -> String {
    ovslab_topology::SEED_YAML.replace("    dhcp: false\n", "")
}

/// The address (with its prefix) an instance's eth0 holds, if any.
fn address_of(lab: &Lab, instance: &str) -> Vec<String> {
    let out = lab.in_ns(instance, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_string)
        })
        .collect()
}

/// The run directory of a network's dnsmasq.
fn server_dir(lab: &Lab, network: &str) -> std::path::PathBuf {
    let ns = qdhcp_namespace(&lab.name, network);
    let (_, dir) = ns.split_once('.').unwrap();
    lab.daemon.run_dir.join(&lab.name).join(dir)
}

fn pid_in(dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (up to 20 s) until `ok` holds.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root"]
fn every_instance_gets_its_reservation_from_dnsmasq() {
    require_root("every_instance_gets_its_reservation_from_dnsmasq");
    let lab = Lab::from_yaml(&dhcp_seed());
    let topo = ovslab_topology::parse("t", &rename_lab(&dhcp_seed(), &lab.name)).unwrap();
    for inst in &topo.instances {
        let want = format!("{}/24", inst.address);
        assert_eq!(address_of(&lab, &inst.name), [want], "{}", inst.name);
        // The lease, as dnsmasq recorded it.
        let leases =
            std::fs::read_to_string(server_dir(&lab, &inst.network).join("leases")).unwrap();
        let mac = ovslab_topology::format_mac(&inst.mac);
        assert!(
            leases
                .lines()
                .any(|l| l.contains(&mac) && l.contains(&format!(" {} ", inst.address))),
            "{} not leased to {mac}:\n{leases}",
            inst.address
        );
        // The routes came from option 121: the metadata route too.
        let routes = lab.in_ns(&inst.name, &["ip", "-4", "route"]);
        let routes = String::from_utf8_lossy(&routes.stdout);
        let gw = topo.network(&inst.network).unwrap().gateway;
        for want in [
            format!("default via {gw}"),
            format!("169.254.169.254 via {gw}"),
        ] {
            assert!(
                routes.contains(&want),
                "{}: no `{want}`:\n{routes}",
                inst.name
            );
        }
    }
    let out = lab.daemon.ovslab(&["check", &lab.name]);
    assert!(
        out.status.success(),
        "checks failed with DHCP addresses:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs root"]
fn dnsmasq_runs_as_the_dhcp_agent_runs_it() {
    require_root("dnsmasq_runs_as_the_dhcp_agent_runs_it");
    let lab = Lab::from_yaml(&dhcp_seed());
    let dir = server_dir(&lab, "net1");
    let d = dir.display();
    let port = DhcpPort::of(lab.topology().network("net1").unwrap());
    // Its command line, read from /proc.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid_in(&dir))).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let expected = format!(
        "dnsmasq --no-hosts --no-resolv --strict-order --except-interface=lo \
         --pid-file={d}/pid --dhcp-hostsfile={d}/host --addn-hosts={d}/addn_hosts \
         --dhcp-optsfile={d}/opts --dhcp-leasefile={d}/leases --dhcp-match=set:ipxe,175 \
         --bind-interfaces --interface={} --dhcp-range=set:tag0,192.168.1.0,static,86400s \
         --dhcp-lease-max=256 --conf-file= --domain=openstacklocal --keep-in-foreground",
        port.device
    );
    assert_eq!(args.join(" "), expected);
    // `status` names the server, its process and its leases.
    let status: serde_json::Value =
        serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
    let net1 = status["dhcp"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["network"] == "net1")
        .expect("net1 in status");
    assert_eq!(net1["node"], "network");
    assert_eq!(net1["address"], "192.168.1.2/24");
    assert_eq!(net1["dnsmasq_pid"], pid_in(&dir));
    assert_eq!(net1["leases"].as_array().unwrap().len(), 3, "{net1}");
    assert!(
        status["metadata"][0]
            .as_str()
            .unwrap()
            .starts_with("router router1 on 0.0.0.0:9697 in "),
        "{status}"
    );
    // Its files: every port of net1 with a fixed address, the router's
    // and its own included, and the agent's options.
    let topo = ovslab_topology::parse("t", &rename_lab(&dhcp_seed(), &lab.name)).unwrap();
    let host = std::fs::read_to_string(dir.join("host")).unwrap();
    let mac = |i: &str| ovslab_topology::format_mac(&topo.instance(i).unwrap().mac);
    let router =
        ovslab_topology::plan::RouterPort::internal(topo.router("router1").unwrap(), "net1");
    let expected_host = format!(
        "{},host-192-168-1-1.openstacklocal,192.168.1.1\n\
         {},host-192-168-1-2.openstacklocal,192.168.1.2\n\
         {},host-192-168-1-11.openstacklocal,192.168.1.11\n\
         {},host-192-168-1-12.openstacklocal,192.168.1.12\n\
         {},host-192-168-1-13.openstacklocal,192.168.1.13\n",
        ovslab_topology::format_mac(&router.mac),
        ovslab_topology::format_mac(&port.mac),
        mac("instance1"),
        mac("instance3"),
        mac("instance4"),
    );
    assert_eq!(host, expected_host);
    assert_eq!(
        std::fs::read_to_string(dir.join("opts")).unwrap(),
        "tag:tag0,option:classless-static-route,169.254.169.254/32,192.168.1.1,0.0.0.0/0,192.168.1.1\n\
         tag:tag0,249,169.254.169.254/32,192.168.1.1,0.0.0.0/0,192.168.1.1\n\
         tag:tag0,option:router,192.168.1.1\n"
    );
    let addn = std::fs::read_to_string(dir.join("addn_hosts")).unwrap();
    assert!(addn.contains("192.168.1.11\thost-192-168-1-11.openstacklocal host-192-168-1-11\n"));
    // Its port: tap… on the network node's br-int with net1's local tag
    // and the agent's external_ids; ns-… holds the port's address.
    let get = |what: &[&str]| lab.vsctl("network", what).trim().to_string();
    assert_eq!(get(&["get", "Port", &port.tap, "tag"]), "1");
    assert_eq!(
        get(&["get", "Interface", &port.tap, "external_ids:iface-id"]),
        format!("\"{}\"", port.port)
    );
    let qdhcp = qdhcp_namespace(&lab.name, "net1");
    let (_, object) = qdhcp.split_once('.').unwrap();
    let addr = lab.in_ns(object, &["ip", "-4", "-o", "addr", "show", &port.device]);
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("inet 192.168.1.2/24"), "{addr}");
    // And, net1 being behind router1 or not, the metadata address
    // (`enable_isolated_metadata`: DeviceManager.setup gives it to every
    // DHCP port).
    assert!(addr.contains("inet 169.254.169.254/16"), "{addr}");
    // On the compute node, the DHCP server's replies are let into an
    // instance right after RELATED,ESTABLISHED, before the group's rules
    // (a provider rule of the port's own, which Liberty puts first).
    let chain = format!(
        "neutron-openvswi-i{}",
        &topo.instance("instance1").unwrap().plug().tap[3..13]
    );
    let filter = lab.in_ns("compute1", &["iptables-save", "-t", "filter"]);
    let filter = String::from_utf8_lossy(&filter.stdout);
    let ingress: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")))
        .collect();
    assert!(
        ingress.len() > 2 && ingress[0].contains("--state RELATED,ESTABLISHED"),
        "{filter}"
    );
    assert_eq!(
        ingress[1],
        format!("-A {chain} -s 192.168.1.2/32 -p udp -m udp --sport 67 --dport 68 -j RETURN"),
        "{filter}"
    );
    // The mangle rule that fills in the answers' checksums.
    let mangle = lab.in_ns(object, &["iptables-save", "-t", "mangle"]);
    let mangle = String::from_utf8_lossy(&mangle.stdout);
    assert!(
        mangle.contains("-A POSTROUTING -j neutron-dhcp-age-POSTROUTING")
            && mangle.contains(
                "-A neutron-dhcp-age-POSTROUTING -p udp -m udp --dport 68 -j CHECKSUM --checksum-fill"
            ),
        "{mangle}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_dhcp_exchange_crosses_the_wire_tagged_and_is_answered_by_the_network_node() {
    require_root("a_dhcp_exchange_crosses_the_wire_tagged_and_is_answered_by_the_network_node");
    let lab = Lab::create_with(&dhcp_seed(), &["--audit-interval", "0.5"]);
    lab.up();
    // compute2's cable and the network node's, seen from the switch.
    let compute2 = lab.capture("physnet1", "compute2", "vlan and (port 67 or port 68)");
    let network = lab.capture("physnet1", "network", "vlan and (port 67 or port 68)");
    // instance3 (net1, on compute2) asks again: its client is killed, and
    // the audit starts it again.
    let dir = lab.daemon.run_dir.join(&lab.name).join("udhcpc.instance3");
    let pid = pid_in(&dir);
    // SAFETY: the lab's own udhcpc, by the pid its pidfile names.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    eventually("a new client", || {
        std::fs::read_to_string(dir.join("pid")).is_ok_and(|p| p.trim() != pid.to_string())
    });
    eventually("instance3's lease", || {
        address_of(&lab, "instance3") == ["192.168.1.12/24"]
    });
    let compute2 = compute2.finish();
    let network = network.finish();
    let mac = ovslab_topology::format_mac(&lab_topology(&lab).instance("instance3").unwrap().mac);
    for (wire, lines) in [("compute2", &compute2), ("network", &network)] {
        let request = lines
            .iter()
            .any(|l| l.contains("vlan 101") && l.contains(&format!("Request from {mac}")));
        let reply = lines
            .iter()
            .any(|l| l.contains("vlan 101") && l.contains("192.168.1.2.67 > 192.168.1.12.68"));
        assert!(
            request && reply,
            "{wire}'s cable: no tagged request and answer: {lines:#?}"
        );
    }
}

fn lab_topology(lab: &Lab) -> ovslab_topology::Topology {
    ovslab_topology::parse("t", &rename_lab(&dhcp_seed(), &lab.name)).unwrap()
}

#[test]
#[ignore = "needs root"]
fn an_edited_reservation_is_the_instances_new_address_and_nothing_else_changes() {
    require_root("an_edited_reservation_is_the_instances_new_address_and_nothing_else_changes");
    let lab = Lab::from_yaml(&dhcp_seed());
    let before = lab.links();
    let edited = dhcp_seed().replace("address: 192.168.1.11", "address: 192.168.1.21");
    std::fs::write(&lab.file, rename_lab(&edited, &lab.name)).unwrap();
    let out = lab.up();
    assert!(
        !out.contains("holds no DHCP lease"),
        "no lease after the edit:\n{out}"
    );
    assert_eq!(address_of(&lab, "instance1"), ["192.168.1.21/24"]);
    assert_eq!(address_of(&lab, "instance3"), ["192.168.1.12/24"]);
    let again = recreated(&before, &lab.links());
    assert!(again.is_empty(), "links made again: {again:?}");
    assert!(
        lab.ping("instance3", "192.168.1.21", 1),
        "instance3 → instance1"
    );
}

/// An instance's `dhcp_lease` in a `status --json`.
fn lease_in(status: &serde_json::Value, instance: &str) -> serde_json::Value {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == instance)
        .unwrap_or_else(|| panic!("{instance} not in {status}"))["dhcp_lease"]
        .clone()
}

#[test]
#[ignore = "needs root"]
fn status_names_an_instance_without_its_lease_and_the_lab_is_not_healthy() {
    require_root("status_names_an_instance_without_its_lease_and_the_lab_is_not_healthy");
    // Audits off: the lab stays as each `up` leaves it.
    let lab = Lab::create_with(&dhcp_seed(), &["--audit-interval", "0"]);
    lab.up();
    let status = || -> serde_json::Value {
        serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap()
    };
    let before = status();
    assert_eq!(before["healthy"], true, "{before}");
    for i in 1..=4 {
        assert_eq!(lease_in(&before, &format!("instance{i}")), true, "{before}");
    }
    // net1's dnsmasq hears nothing (its namespace's firewall drops it),
    // and instance1 loses its address and its client.
    let ns = qdhcp_namespace(&lab.name, "net1");
    let (_, qdhcp) = ns.split_once('.').unwrap();
    let drop = ["INPUT", "-p", "udp", "--dport", "67", "-j", "DROP"];
    let firewall = |op: &str| {
        let mut args = vec!["iptables", op];
        args.extend(drop);
        assert!(lab.in_ns(qdhcp, &args).status.success(), "iptables {op}");
    };
    firewall("-I");
    let client = lab.daemon.run_dir.join(&lab.name).join("udhcpc.instance1");
    let pid = pid_in(&client);
    // SAFETY: the lab's own udhcpc, by the pid its pidfile names.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    lab.in_ns(
        "instance1",
        &["ip", "addr", "del", "192.168.1.11/24", "dev", "eth0"],
    );
    let out = lab.up();
    assert!(
        out.contains("instance instance1 holds no DHCP lease"),
        "{out}"
    );
    let without = status();
    assert_eq!(without["healthy"], false, "{without}");
    assert_eq!(lease_in(&without, "instance1"), false, "{without}");
    assert_eq!(lease_in(&without, "instance3"), true, "{without}");
    let text = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(text.contains("192.168.1.11 (NO DHCP LEASE)"), "{text}");
    assert!(text.contains("NOT healthy"), "{text}");
    // Heard again, its client gets the lease by itself, and the next
    // converge says so.
    firewall("-D");
    eventually("instance1's lease", || {
        address_of(&lab, "instance1") == ["192.168.1.11/24"]
    });
    lab.up();
    let after = status();
    assert_eq!(after["healthy"], true, "{after}");
    assert_eq!(lease_in(&after, "instance1"), true, "{after}");
}

#[test]
#[ignore = "needs root"]
fn dnsmasq_its_namespace_and_a_lost_lease_come_back_and_down_leaves_nothing() {
    require_root("dnsmasq_its_namespace_and_a_lost_lease_come_back_and_down_leaves_nothing");
    let lab = Lab::create_with(&dhcp_seed(), &["--audit-interval", "0.5"]);
    lab.up();
    let dir = server_dir(&lab, "net2");
    // A killed dnsmasq comes back with the same files.
    let host = std::fs::read_to_string(dir.join("host")).unwrap();
    let pid = pid_in(&dir);
    // SAFETY: the lab's own dnsmasq, by the pid its pidfile names.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    eventually("dnsmasq started again", || {
        std::fs::read_to_string(dir.join("pid")).is_ok_and(|p| p.trim() != pid.to_string())
    });
    assert_eq!(std::fs::read_to_string(dir.join("host")).unwrap(), host);
    // A lost lease: the address taken away.
    lab.in_ns(
        "instance1",
        &["ip", "addr", "del", "192.168.1.11/24", "dev", "eth0"],
    );
    eventually("instance1's lease back", || {
        address_of(&lab, "instance1") == ["192.168.1.11/24"]
    });
    // The qdhcp namespace deleted: made again, with its dnsmasq.
    let ns = qdhcp_namespace(&lab.name, "net2");
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    let (_, object) = ns.split_once('.').unwrap();
    eventually("net2's dnsmasq in its namespace again", || {
        let out = lab.in_ns(object, &["ss", "-lun"]);
        String::from_utf8_lossy(&out.stdout).contains(":67 ")
    });
    // instance2 (net2) can get its lease from it: its client starts over.
    let client = lab.daemon.run_dir.join(&lab.name).join("udhcpc.instance2");
    let old = pid_in(&client);
    // SAFETY: as above.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    eventually("instance2's lease", || {
        std::fs::read_to_string(client.join("pid")).is_ok_and(|p| p.trim() != old.to_string())
            && address_of(&lab, "instance2") == ["192.168.2.11/24"]
    });
    // net1's DHCP port deleted on the network node: made again, and a
    // client that starts over gets its lease through it.
    let tap = DhcpPort::of(lab.topology().network("net1").unwrap()).tap;
    lab.in_ns("network", &["ip", "link", "del", &tap]);
    eventually("net1's DHCP port back", || {
        lab.in_ns("network", &["ip", "link", "show", &tap])
            .status
            .success()
    });
    lab.in_ns(
        "instance3",
        &["ip", "addr", "del", "192.168.1.12/24", "dev", "eth0"],
    );
    eventually("instance3's lease through the new port", || {
        address_of(&lab, "instance3") == ["192.168.1.12/24"]
    });
    // down: no dnsmasq, no client left.
    let mut pids = vec![pid_in(&server_dir(&lab, "net1")), pid_in(&dir)];
    for i in 1..=4 {
        pids.push(pid_in(
            &lab.daemon
                .run_dir
                .join(&lab.name)
                .join(format!("udhcpc.instance{i}")),
        ));
    }
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    for pid in pids {
        assert!(dead(pid), "pid {pid} left running");
    }
    assert!(lab.namespaces().is_empty());
    assert!(!lab.daemon.run_dir.join(&lab.name).exists());
}

/// `curl http://169.254.169.254<path>` from an instance: the body, or
/// `None` when the request failed.
fn metadata(lab: &Lab, instance: &str, path: &str) -> Option<String> {
    let url = format!("http://169.254.169.254{path}");
    let out = lab.in_ns(instance, &["curl", "-sf", "-m", "5", &url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
#[ignore = "needs root"]
fn metadata_answers_each_instance_for_itself_through_its_router() {
    require_root("metadata_answers_each_instance_for_itself_through_its_router");
    let text = dhcp_seed().replacen(
        "    floating_ip: 203.0.113.102\n",
        "    floating_ip: 203.0.113.102\n    user_data: \"#cloud-config\\nhostname: one\\n\"\n    ssh_keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 demo@lab\"]\n",
        1,
    );
    let lab = Lab::from_yaml(&text);
    let topo = lab_topology(&lab);
    for name in ["instance1", "instance2"] {
        let inst = topo.instance(name).unwrap();
        assert_eq!(
            metadata(&lab, name, "/latest/meta-data/local-ipv4").as_deref(),
            Some(inst.address.to_string().as_str()),
            "{name}"
        );
        let json = metadata(&lab, name, "/openstack/latest/meta_data.json").unwrap();
        let uuid = naming_uuid(&lab, name);
        assert!(
            json.contains(&format!("\"uuid\":\"{uuid}\"")),
            "{name}: {json}"
        );
        assert!(
            json.contains(&format!("\"name\":\"{name}\"")),
            "{name}: {json}"
        );
    }
    assert_eq!(
        metadata(&lab, "instance1", "/latest/meta-data/public-ipv4").as_deref(),
        Some("203.0.113.102")
    );
    assert_eq!(
        metadata(&lab, "instance1", "/latest/user-data").as_deref(),
        Some("#cloud-config\nhostname: one\n")
    );
    assert_eq!(
        metadata(
            &lab,
            "instance1",
            "/latest/meta-data/public-keys/0/openssh-key"
        )
        .as_deref(),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 demo@lab")
    );
    // instance2 has no user data: 404.
    assert_eq!(metadata(&lab, "instance2", "/latest/user-data"), None);
    // The L3 agent's rules carry it: the redirect, the mark, the filter.
    let rules = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.router_ns("router1"), "iptables-save"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for rule in [
        "-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697",
        "-A neutron-l3-agent-PREROUTING -d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x1/0xffff",
        "-A neutron-l3-agent-INPUT -m mark --mark 0x1/0xffff -j ACCEPT",
        "-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP",
    ] {
        assert!(rules.contains(rule), "missing `{rule}`:\n{rules}");
    }
}

fn naming_uuid(lab: &Lab, instance: &str) -> String {
    ovslab_topology::naming::instance_uuid(&lab.name, instance).to_string()
}

#[test]
#[ignore = "needs root"]
fn an_instance_without_a_router_reads_metadata_through_its_dhcp_server() {
    require_root("an_instance_without_a_router_reads_metadata_through_its_dhcp_server");
    let lab = Lab::from_yaml(include_str!("../../lab-topologies/provider.yaml"));
    // The metadata route points at the DHCP port, which holds
    // 169.254.169.254 too.
    let routes = lab.in_ns("instance1", &["ip", "-4", "route"]);
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("169.254.169.254 via 203.0.113.2"),
        "{routes}"
    );
    assert_eq!(
        metadata(&lab, "instance1", "/latest/meta-data/local-ipv4").as_deref(),
        Some("203.0.113.11")
    );
    assert_eq!(
        metadata(&lab, "instance3", "/latest/meta-data/hostname").as_deref(),
        Some("instance3.novalocal")
    );
}

#[test]
#[ignore = "needs root"]
fn a_silent_or_hostile_metadata_client_holds_no_one_up() {
    require_root("a_silent_or_hostile_metadata_client_holds_no_one_up");
    let lab = Lab::from_yaml(&dhcp_seed());
    // Connections that never send a request…
    let ns = lab.ns("instance1");
    let mut idle: Vec<std::process::Child> = (0..8)
        .map(|_| {
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns, "nc", "169.254.169.254", "80"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // All eight connected (else the test would prove nothing).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = lab.in_ns(
            "instance1",
            &["ss", "-Htn", "state", "established", "( dport = :80 )"],
        );
        let connected = String::from_utf8_lossy(&out.stdout).lines().count();
        if connected == 8 {
            break;
        }
        assert!(Instant::now() < deadline, "{connected} of 8 connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    // …do not keep another instance from its answer; nor does a request
    // that is not a GET, or another instance's address.
    assert_eq!(
        metadata(&lab, "instance2", "/latest/meta-data/local-ipv4").as_deref(),
        Some("192.168.2.11")
    );
    let post = lab.in_ns(
        "instance2",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
            "-X",
            "POST",
            "http://169.254.169.254/latest/meta-data/local-ipv4",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&post.stdout), "400");
    for child in &mut idle {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
#[ignore = "needs root"]
fn trace_follows_a_dhcp_exchange_and_a_metadata_request() {
    require_root("trace_follows_a_dhcp_exchange_and_a_metadata_request");
    let lab = Lab::from_yaml(&dhcp_seed());
    let trace = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["trace", "--lab", lab.name.as_str(), "--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&lab.daemon.ovslab_ok(&all)).unwrap()
    };
    let devices = |report: &serde_json::Value| -> Vec<String> {
        report["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["device"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // DISCOVER from compute2 to the network node's dnsmasq, tagged 101 on
    // the wire; the OFFER back.
    let dhcp = trace(&["instance3", "--dhcp"]);
    assert_eq!(dhcp["answered"], true, "{dhcp:#}");
    let topo = lab.topology();
    let port = DhcpPort::of(topo.network("net1").unwrap());
    let hops = devices(&dhcp);
    assert!(
        hops.contains(&port.device),
        "not at {}: {hops:?}",
        port.device
    );
    assert!(hops.contains(&port.tap), "not at {}: {hops:?}", port.tap);
    let text = dhcp.to_string();
    assert!(
        text.contains("mod_vlan_vid:101"),
        "no VLAN 101 on the wire: {dhcp:#}"
    );
    // A metadata request goes in through the router's qr- port.
    let http = trace(&["instance3", "169.254.169.254", "--http", "80"]);
    assert_eq!(http["answered"], true, "{http:#}");
    let qr = ovslab_topology::plan::RouterPort::internal(topo.router("router1").unwrap(), "net1");
    assert!(devices(&http).contains(&qr.device), "{http:#}");
}
