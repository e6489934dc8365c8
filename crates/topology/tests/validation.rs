//! One bad file per validation rule: each is the seed lab with one edit, and
//! each must be refused with a message naming the object, the value and the
//! line.

use std::path::Path;

use ovslab_topology::{
    MESSAGE_MAX, PROBLEMS_SHOWN, PROBLEMS_TEXT, SEED_YAML, TopologyError, parse,
};

/// The seed with `from` replaced by `to` (exactly once).
fn seed_with(from: &str, to: &str) -> String {
    assert_eq!(
        SEED_YAML.matches(from).count(),
        1,
        "`{from}` must occur once in the seed"
    );
    SEED_YAML.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> u32 {
    line_of_nth(text, needle, 0)
}

/// The line of the `n`th (from 0) line containing `needle`.
fn line_of_nth(text: &str, needle: &str, n: usize) -> u32 {
    let (i, _) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(n)
        .expect("needle present");
    i as u32 + 1
}

/// Asserts the file is refused with a problem on `line` whose message
/// contains every fragment.
fn refused(text: &str, line: u32, fragments: &[&str]) {
    let err = parse("bad.yaml", text).expect_err("the file must be refused");
    let rendered = err.to_string();
    let problems = match &err {
        TopologyError::Invalid { problems, .. } => problems.clone(),
        TopologyError::Syntax { .. } => panic!("expected a validation error, got: {rendered}"),
    };
    let hit = problems
        .iter()
        .find(|p| p.line == line && fragments.iter().all(|f| p.message.contains(f)));
    assert!(
        hit.is_some(),
        "no problem on line {line} containing {fragments:?}; got:\n{rendered}"
    );
    assert!(
        rendered.contains(&format!("bad.yaml:{line}:")),
        "{rendered}"
    );
}

#[test]
fn the_seed_is_valid() {
    let topo = parse("seed.yaml", SEED_YAML).unwrap();
    assert_eq!(topo.lab, "seed");
    assert_eq!(topo.nodes.len(), 3);
    assert_eq!(topo.instances.len(), 4);
    assert_eq!(topo.routers.len(), 1);
    assert_eq!(topo.security_groups[0].rules.len(), 3);
}

#[test]
fn syntax_errors_carry_file_line_and_column() {
    let text = seed_with(
        "    role: compute\n  - name: compute2",
        "    role: compute\n    colour: blue\n  - name: compute2",
    );
    let err = parse("bad.yaml", &text).unwrap_err();
    let TopologyError::Syntax { line, column, .. } = err else {
        panic!("expected a syntax error: {err}");
    };
    assert_eq!(line, line_of(&text, "colour"));
    assert!(column > 0);
    let text = err.to_string();
    assert!(text.starts_with(&format!("bad.yaml:{line}:")), "{err}");
    // The place once, from us: not again from the YAML parser.
    assert!(
        !text.contains(" line ") && !text.contains("error:"),
        "{err}"
    );
    assert!(text.contains("unknown field `colour`"), "{err}");
}

/// A file of aliases repeating one long value is refused before the parse
/// holds much more text than the file: a 1 MB file could take it to 64 MB.
#[test]
fn aliases_cannot_multiply_a_file_s_text() {
    let long = "x".repeat(1 << 20);
    let mut text = format!("lab: &a {long}\nnodes: []\nchecks:\n");
    for _ in 0..20 {
        text.push_str("  - {name: *a, from: *a, to: *a}\n");
    }
    let err = parse("bad.yaml", &text).unwrap_err();
    let TopologyError::Syntax { line, message, .. } = &err else {
        panic!("expected a refusal of the file's size: {err}");
    };
    assert!(*line > 3, "{err}");
    assert!(
        message.contains("more than 8 MiB of text (aliases expanded)"),
        "{err}"
    );
    // Under the limit, aliases are as good as ever.
    let seed = SEED_YAML
        .replacen("role: compute", "role: &role compute", 1)
        .replacen("role: compute", "role: *role", 1);
    assert_eq!(parse("seed.yaml", &seed).unwrap().nodes.len(), 3);
}

#[test]
fn duplicate_names() {
    let text = seed_with("  - name: instance4", "  - name: instance3");
    refused(
        &text,
        line_of_nth(&text, "name: instance3", 1),
        &["instance3", "duplicate", "line"],
    );
}

#[test]
fn duplicate_names_across_kinds() {
    let text = seed_with("  - name: router1", "  - name: net1");
    refused(
        &text,
        line_of_nth(&text, "name: net1", 1),
        &["router `net1`", "duplicate"],
    );
}

#[test]
fn unknown_node() {
    let text = seed_with(
        "    node: compute1
    network: net1
    address: 192.168.1.13",
        "    node: compute9
    network: net1
    address: 192.168.1.13",
    );
    refused(
        &text,
        line_of(&text, "compute9"),
        &["instance4", "unknown node `compute9`"],
    );
}

#[test]
fn unknown_network() {
    let text = seed_with(
        "    network: net2
    address: 192.168.2.11",
        "    network: net7
    address: 192.168.2.11",
    );
    refused(
        &text,
        line_of(&text, "net7"),
        &["instance2", "unknown network `net7`"],
    );
}

#[test]
fn unknown_router_network() {
    let text = seed_with("interfaces: [net1, net2]", "interfaces: [net1, net9]");
    refused(
        &text,
        line_of(&text, "net9"),
        &["router1", "unknown network `net9`"],
    );
}

#[test]
fn unknown_security_group() {
    let text = seed_with(
        "    address: 192.168.1.12
    security_groups: [default]",
        "    address: 192.168.1.12
    security_groups: [web]",
    );
    refused(
        &text,
        line_of(&text, "[web]"),
        &["instance3", "unknown security group `web`"],
    );
}

#[test]
fn unknown_remote_group() {
    let text = seed_with("remote_group: default", "remote_group: nope");
    refused(
        &text,
        line_of(&text, "nope"),
        &["default", "unknown remote group `nope`"],
    );
}

#[test]
fn unknown_physical_network() {
    let text = seed_with(
        "    physical_network: physnet1
    segmentation_id: 102",
        "    physical_network: physnet2
    segmentation_id: 102",
    );
    refused(
        &text,
        line_of(&text, "physnet2"),
        &["net2", "unknown physical network `physnet2`"],
    );
}

#[test]
fn unknown_external_network() {
    let text = seed_with(
        "external_gateway: { network: ext-net",
        "external_gateway: { network: ext-nope",
    );
    refused(
        &text,
        line_of(&text, "ext-nope"),
        &["router1", "unknown external network `ext-nope`"],
    );
}

#[test]
fn instance_on_a_network_node() {
    let text = seed_with(
        "    node: compute2
    network: net2",
        "    node: network
    network: net2",
    );
    refused(
        &text,
        line_of_nth(&text, "node: network", 1),
        &["instance2", "network node"],
    );
}

#[test]
fn router_on_a_compute_node() {
    let text = seed_with(
        "    node: network\n    interfaces",
        "    node: compute1\n    interfaces",
    );
    refused(
        &text,
        line_of(&text, "node: compute1"),
        &["router1", "compute node"],
    );
}

#[test]
fn unknown_role() {
    let text = seed_with("    role: network", "    role: storage");
    refused(
        &text,
        line_of(&text, "storage"),
        &["node `network`", "storage"],
    );
}

#[test]
fn overlapping_project_subnets() {
    let text = seed_with("cidr: 192.168.2.0/24", "cidr: 192.168.0.0/16");
    refused(
        &text,
        line_of(&text, "192.168.0.0/16"),
        &["net2", "overlaps", "net1"],
    );
}

#[test]
fn subnet_with_host_bits() {
    let text = seed_with("cidr: 192.168.2.0/24", "cidr: 192.168.2.5/24");
    refused(
        &text,
        line_of(&text, "192.168.2.5/24"),
        &["net2", "host bits"],
    );
}

#[test]
fn address_outside_its_subnet() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.3.11");
    refused(
        &text,
        line_of(&text, "192.168.3.11"),
        &["instance2", "192.168.3.11", "outside", "192.168.2.0/24"],
    );
}

#[test]
fn address_equal_to_network_address() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.2.0");
    refused(
        &text,
        line_of(&text, "address: 192.168.2.0"),
        &["instance2", "network address"],
    );
}

#[test]
fn address_equal_to_broadcast_address() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.2.255");
    refused(
        &text,
        line_of(&text, "192.168.2.255"),
        &["instance2", "broadcast"],
    );
}

#[test]
fn address_equal_to_gateway() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.2.1");
    refused(
        &text,
        line_of(&text, "address: 192.168.2.1"),
        &["instance2", "gateway"],
    );
}

#[test]
fn address_used_twice() {
    let text = seed_with("address: 192.168.1.13", "address: 192.168.1.12");
    refused(
        &text,
        line_of_nth(&text, "address: 192.168.1.12", 1),
        &[
            "instance4",
            "192.168.1.12",
            "already used by instance `instance3`",
        ],
    );
}

#[test]
fn not_an_address() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.2.300");
    refused(
        &text,
        line_of(&text, "192.168.2.300"),
        &["instance2", "not an IPv4 address"],
    );
}

#[test]
fn duplicate_macs() {
    let text = seed_with(
        "    address: 192.168.1.12\n",
        "    address: 192.168.1.12\n    mac: fa:16:3e:00:00:01\n",
    )
    .replacen(
        "    address: 192.168.1.13\n",
        "    address: 192.168.1.13\n    mac: fa:16:3e:00:00:01\n",
        1,
    );
    refused(
        &text,
        line_of_nth(&text, "mac: fa:16:3e:00:00:01", 1),
        &["instance4", "fa:16:3e:00:00:01", "instance3"],
    );
}

#[test]
fn malformed_mac() {
    let text = seed_with(
        "    address: 192.168.1.12\n",
        "    address: 192.168.1.12\n    mac: fa:16:3e:00:01\n",
    );
    refused(
        &text,
        line_of(&text, "mac: fa"),
        &["instance3", "not a MAC"],
    );
}

#[test]
fn the_zero_mac_is_refused() {
    let text = seed_with(
        "    address: 192.168.1.12\n",
        "    address: 192.168.1.12\n    mac: \"00:00:00:00:00:00\"\n",
    );
    refused(
        &text,
        line_of(&text, "mac: \"00"),
        &["instance3", "00:00:00:00:00:00", "all zeroes"],
    );
}

/// dnsmasq reads a network's options in lines of 1024 bytes: a hundred DNS
/// servers once made the end of the line another option.
#[test]
fn a_network_lists_at_most_five_dns_servers_each_once() {
    let servers: Vec<String> = (1..=7).map(|i| format!("10.0.0.{i}")).collect();
    let text = seed_with(
        "    cidr: 192.168.1.0/24\n",
        &format!(
            "    cidr: 192.168.1.0/24\n    dns_nameservers: [{}]\n",
            servers.join(", ")
        ),
    );
    let line = line_of(&text, "dns_nameservers");
    refused(&text, line, &["network `net1`", "more than 5 DNS servers"]);
    let TopologyError::Invalid { problems, .. } = parse("bad.yaml", &text).unwrap_err() else {
        panic!("a validation error");
    };
    assert_eq!(problems.len(), 1, "said once: {problems:?}");

    let text = seed_with(
        "    cidr: 192.168.1.0/24\n",
        "    cidr: 192.168.1.0/24\n    dns_nameservers: [10.0.0.1, 10.0.0.2, 10.0.0.1]\n",
    );
    refused(
        &text,
        line_of(&text, "dns_nameservers"),
        &["network `net1`", "DNS server 10.0.0.1 is listed twice"],
    );

    let text = seed_with(
        "    cidr: 192.168.1.0/24\n",
        "    cidr: 192.168.1.0/24\n    dns_nameservers: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, 10.0.0.5]\n",
    );
    assert_eq!(
        parse("ok.yaml", &text).unwrap().networks[0]
            .dns_nameservers
            .len(),
        5
    );
}

#[test]
fn vlan_id_out_of_range() {
    for bad in ["0", "4095", "-3"] {
        let text = seed_with("segmentation_id: 102", &format!("segmentation_id: {bad}"));
        refused(
            &text,
            line_of(&text, &format!("segmentation_id: {bad}")),
            &["net2", "outside 1–4094"],
        );
    }
}

#[test]
fn vlan_id_reused_on_one_physical_network() {
    let text = seed_with("segmentation_id: 102", "segmentation_id: 101");
    refused(
        &text,
        line_of_nth(&text, "segmentation_id: 101", 1),
        &["net2", "VLAN id 101", "net1"],
    );
}

#[test]
fn floating_ip_outside_the_external_subnet() {
    let text = seed_with("floating_ip: 203.0.113.102", "floating_ip: 198.51.100.7");
    refused(
        &text,
        line_of(&text, "198.51.100.7"),
        &["instance1", "198.51.100.7", "outside every external subnet"],
    );
}

#[test]
fn floating_ip_outside_the_pool() {
    let text = seed_with("floating_ip: 203.0.113.102", "floating_ip: 203.0.113.50");
    refused(
        &text,
        line_of(&text, "203.0.113.50"),
        &["instance1", "outside ext-net's pool"],
    );
}

#[test]
fn floating_ip_used_twice() {
    let text = seed_with(
        "    address: 192.168.1.13\n",
        "    address: 192.168.1.13\n    floating_ip: 203.0.113.102\n",
    );
    refused(
        &text,
        line_of_nth(&text, "floating_ip: 203.0.113.102", 1),
        &["instance4", "203.0.113.102", "instance1"],
    );
}

#[test]
fn floating_ip_equal_to_router_gateway() {
    let text = seed_with("floating_ip: 203.0.113.102", "floating_ip: 203.0.113.101");
    refused(
        &text,
        line_of(&text, "floating_ip: 203.0.113.101"),
        &["instance1", "router `router1`"],
    );
}

#[test]
fn names_too_long_for_an_interface() {
    let text = seed_with(
        "  - name: compute2\n",
        "  - name: compute-with-a-long-name\n",
    )
    .replace("node: compute2", "node: compute-with-a-long-name");
    refused(
        &text,
        line_of(&text, "  - name: compute-with-a-long-name"),
        &["node `compute-with-a-long-name`", "limited to 15"],
    );
}

#[test]
fn bad_names() {
    let text = seed_with("  - name: instance4", "  - name: 4instance");
    refused(
        &text,
        line_of(&text, "4instance"),
        &["instance `4instance`", "starts with a letter"],
    );
}

#[test]
fn pool_outside_its_subnet() {
    let text = seed_with("end: 203.0.113.200", "end: 203.0.114.200");
    refused(
        &text,
        line_of(&text, "203.0.114.200"),
        &["ext-net", "pool end", "outside"],
    );
}

#[test]
fn port_range_without_protocol() {
    let text = seed_with(
        "{ direction: ingress, protocol: icmp }",
        "{ direction: ingress, port_range_min: 22 }",
    );
    refused(
        &text,
        line_of(&text, "port_range_min"),
        &["default", "needs protocol tcp or udp"],
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = seed_with("address: 192.168.2.11", "address: 192.168.3.11")
        .replace("segmentation_id: 102", "segmentation_id: 5000");
    let err = parse("bad.yaml", &text).unwrap_err();
    let TopologyError::Invalid { problems, .. } = err else {
        panic!()
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
}

/// The seed with `checks` appended to its checks.
fn seed_with_checks(checks: &str) -> String {
    seed_with("checks:\n", &format!("checks:\n{checks}"))
}

/// A refused file's text lists the first problems only, and says how many
/// it left out: it is what the daemon answers, and a request of 117 KB with
/// 2000 bad checks was answered with 131 MB.
#[test]
fn thousands_of_problems_are_listed_in_part() {
    let checks: String = (0..2000)
        .map(|i| format!("  - {{name: c{i}, from: nowhere{i}, to: internet}}\n"))
        .collect();
    let source = "s".repeat(256);
    let err = parse(&source, &seed_with_checks(&checks)).unwrap_err();
    let text = err.to_string();
    let TopologyError::Invalid { problems, .. } = err else {
        panic!("{text}")
    };
    assert_eq!(problems.len(), 2000, "all kept in the list");
    assert!(
        text.len() <= PROBLEMS_TEXT + 100,
        "{} bytes of text",
        text.len()
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= PROBLEMS_SHOWN + 1, "{} lines", lines.len());
    assert!(lines[0].starts_with(&format!("{source}:")), "{}", lines[0]);
    let last = lines.last().unwrap();
    let shown = lines.len() - 1;
    assert_eq!(
        *last,
        format!("… and {} more problems (2000 in all)", 2000 - shown)
    );

    // A hundred short problems are all there, and nothing is added.
    let checks: String = (0..PROBLEMS_SHOWN)
        .map(|i| format!("  - {{name: c{i}, from: nowhere{i}, to: internet}}\n"))
        .collect();
    let text = parse("bad.yaml", &seed_with_checks(&checks))
        .unwrap_err()
        .to_string();
    assert_eq!(text.lines().count(), PROBLEMS_SHOWN, "{text}");
    assert!(!text.contains("more problem"), "{text}");
}

/// A value of a megabyte, repeated by YAML aliases, is quoted in part in
/// each problem: before, a 1 MB request was answered with 64 MB.
#[test]
fn aliases_of_a_long_value_do_not_multiply_the_text() {
    // 7 × 1 MB: within the parser's budget of 8 MiB of text.
    let long = "x".repeat(1_000_000);
    let mut checks = format!("  - {{name: c0, from: &far {long}, to: internet}}\n");
    for i in 1..7 {
        checks.push_str(&format!("  - {{name: c{i}, from: *far, to: internet}}\n"));
    }
    let err = parse("bad.yaml", &seed_with_checks(&checks)).unwrap_err();
    let text = err.to_string();
    let TopologyError::Invalid { problems, .. } = err else {
        panic!("{}", text.chars().take(1000).collect::<String>())
    };
    assert!(problems.len() >= 7, "{}", problems.len());
    for p in &problems {
        assert!(p.message.len() <= MESSAGE_MAX, "{}", p.message.len());
    }
    assert!(text.len() <= PROBLEMS_TEXT + 100, "{} bytes", text.len());
    let first = text.lines().next().unwrap();
    assert!(first.contains("bytes left out"), "{first}");
    assert!(first.starts_with("bad.yaml:"), "{first}");
}

#[test]
fn check_names_are_unique() {
    let text = seed_with("  - name: floating-ip-out\n", "  - name: snat\n");
    refused(
        &text,
        line_of_nth(&text, "- name: snat", 1),
        &["check `snat`", "declared twice"],
    );
}

#[test]
fn check_endpoints_must_exist() {
    let text = seed_with(
        "    from: instance3\n    to: internet\n",
        "    from: instance9\n    to: internet\n",
    );
    refused(
        &text,
        line_of(&text, "from: instance9"),
        &["check `snat`", "`instance9`"],
    );
    let text = seed_with(
        "    to: instance2\n    crosses",
        "    to: nowhere\n    crosses",
    );
    refused(
        &text,
        line_of(&text, "to: nowhere"),
        &["check `east-west-via-network-node`", "`nowhere`"],
    );
}

#[test]
fn check_nodes_must_exist() {
    let text = seed_with("    avoids: [network]\n", "    avoids: [compute7]\n");
    refused(
        &text,
        line_of(&text, "compute7"),
        &[
            "check `same-network-across-nodes`",
            "unknown node or physical router `compute7`",
        ],
    );
}

#[test]
fn tcp_checks_need_a_port_in_range() {
    let text = seed_with("    port: 5001\n", "    port: 70000\n");
    refused(
        &text,
        line_of(&text, "port: 70000"),
        &["check `tcp-within-the-group`", "70000", "1–65535"],
    );
}

#[test]
fn check_protocol_and_expectation_are_known_words() {
    let text = seed_with("    port: 80\n", "    port: 80\n    expect: maybe\n");
    refused(
        &text,
        line_of(&text, "expect: maybe"),
        &["check `outbound-tcp-through-nat`", "`maybe`"],
    );
    let text = seed_with("    wire_vlan: 101\n", "    wire_vlan: 5000\n");
    refused(
        &text,
        line_of(&text, "wire_vlan: 5000"),
        &["check `same-network-across-nodes`", "5000"],
    );
}

#[test]
fn layer2_checks_need_instances_and_icmp() {
    let text = seed_with(
        "    from: instance1\n    to: instance3\n    layer2: true\n",
        "    from: instance1\n    to: internet\n    layer2: true\n",
    );
    let line = line_of_nth(&text, "layer2: true", 1);
    refused(
        &text,
        line,
        &[
            "check `same-network-at-layer-2`",
            "needs an instance on both ends",
        ],
    );
}

// Names that would break a lab (issue #11).

use ovslab_topology::naming::{self, RESERVED_NAMES};
use ovslab_topology::plan::{self, LocalVlans, RouterPort};
use ovslab_topology::{format_mac, lab_name_problem, object_name_problem, socket_paths_problem};

/// The seed with every `from` replaced by `to`: a rename.
fn seed_renamed(from: &str, to: &str) -> String {
    assert!(SEED_YAML.contains(from), "`{from}` is not in the seed");
    SEED_YAML.replace(from, to)
}

#[test]
fn lo_is_reserved() {
    let text = seed_renamed("compute2", "lo");
    refused(
        &text,
        line_of(&text, "  - name: lo"),
        &["node `lo`", "reserved", "loopback"],
    );
    assert!(object_name_problem("lo").is_some());
}

#[test]
fn interface_names_the_lab_makes_are_reserved() {
    for name in RESERVED_NAMES.iter().filter(|n| **n != "lo") {
        let text = seed_renamed("physnet1", name);
        refused(
            &text,
            line_of(&text, &format!("  - name: {name}")),
            &[&format!("physical network `{name}`"), "reserved"],
        );
        assert!(object_name_problem(name).is_some(), "{name}");
    }
    for name in [
        "br-int",
        "eth0",
        "eth1",
        "eth2",
        "int-br-vlan",
        "ovs-netdev",
    ] {
        assert!(RESERVED_NAMES.contains(&name), "{name}");
    }
}

/// Names the kernel refuses for a link (`ip link add all …` is "Invalid
/// argument"), or already gives one in every namespace, are refused before
/// anything is built; so is the name of the lab's record of failed nodes,
/// which would take a node's directory.
#[test]
fn names_the_kernel_or_the_run_directory_keep_are_reserved() {
    for name in [
        "all",
        "default",
        "gre0",
        "tunl0",
        "sit0",
        "ip6_vti0",
        "bonding_masters",
    ] {
        let text = seed_renamed("compute2", name);
        refused(
            &text,
            line_of(&text, &format!("  - name: {name}")),
            &[&format!("node `{name}`"), "reserved", "kernel"],
        );
    }
    // A name that becomes no link is free: Neutron's security group.
    assert!(SEED_YAML.contains("  - name: default\n"));
    let text = seed_renamed("compute2", "failed-nodes");
    refused(
        &text,
        line_of(&text, "  - name: failed-nodes"),
        &["node `failed-nodes`", "reserved", "run directory"],
    );
}

#[test]
fn names_of_generated_namespaces_are_reserved() {
    // The very name of router1's namespace, without the lab.
    let router_ns = plan::router_namespace("seed", "router1");
    let object = router_ns.strip_prefix("seed.").unwrap();
    let text = seed_renamed("instance4", object);
    refused(
        &text,
        line_of(&text, &format!("  - name: {object}")),
        &[&format!("instance `{object}`"), "`qrouter-`", "reserved"],
    );
    for (name, fragment) in [("qdhcp-a", "DHCP"), ("snat-a", "DVR"), ("fip-a", "DVR")] {
        let text = seed_renamed("instance4", name);
        refused(
            &text,
            line_of(&text, &format!("  - name: {name}")),
            &[&format!("instance `{name}`"), "reserved", fragment],
        );
        assert!(object_name_problem(name).is_some(), "{name}");
    }
}

#[test]
fn names_of_generated_devices_are_reserved() {
    for name in ["qr-a", "qg-a", "ha-a"] {
        let text = seed_renamed("internet", name);
        refused(
            &text,
            line_of(&text, &format!("  - name: {name}")),
            &[&format!("external host `{name}`"), "router devices"],
        );
    }
    let tap = first_plug("instance1").tap;
    let text = seed_renamed("instance4", &tap);
    refused(
        &text,
        line_of(&text, &format!("  - name: {tap}")),
        &[&format!("instance `{tap}`"), "generated device name"],
    );
    // Only the generated spelling: other names with those prefixes are fine.
    for name in ["tapestry", "qbr", "qvo-uplink", "taproom-1234"] {
        assert_eq!(object_name_problem(name), None, "{name}");
    }
}

#[test]
fn a_lab_may_not_take_a_name_of_the_daemons_records() {
    let text = seed_with("lab: seed", "lab: from-labs-dir");
    refused(
        &text,
        line_of(&text, "lab: from-labs-dir"),
        &["lab `from-labs-dir`", "reserved", "run directory"],
    );
    assert!(lab_name_problem(naming::LABS_DIR_RECORD).is_some());
    assert_eq!(lab_name_problem("seed"), None);
}

/// The seed under a lab name of `len` characters.
fn seed_with_lab_of_length(len: usize) -> String {
    let lab = format!("l{}", "a".repeat(len - 1));
    seed_with("lab: seed", &format!("lab: {lab}"))
}

#[test]
fn socket_paths_must_fit_sun_path() {
    // /run/ovslab/<lab>/compute1/ovs-vswitchd.<7-digit pid>.ctl: 46 bytes
    // besides the lab's name; 107 fit.
    parse("ok.yaml", &seed_with_lab_of_length(61)).expect("107 bytes fit");
    let text = seed_with_lab_of_length(62);
    refused(
        &text,
        line_of(&text, "  - name: compute1"),
        &["node `compute1`", "unix socket path", "108 bytes", "107"],
    );
    let TopologyError::Invalid { problems, .. } = parse("bad.yaml", &text).unwrap_err() else {
        panic!("expected a validation error")
    };
    // `network` is one character shorter: its sockets still fit.
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(!problems.iter().any(|p| p.message.contains("`network`")));
}

#[test]
fn socket_paths_are_checked_against_the_real_run_directory() {
    let seed = ovslab_topology::seed();
    assert_eq!(socket_paths_problem(Path::new("/run/ovslab"), &seed), None);
    let long = format!("/var/lib/{}", "x".repeat(70));
    let problem = socket_paths_problem(Path::new(&long), &seed).expect("too long");
    for fragment in ["compute1", "compute2", "network", "107", &long] {
        assert!(problem.contains(fragment), "{fragment}: {problem}");
    }
    let problem = socket_paths_problem(Path::new("run/ovslab"), &seed).expect("relative");
    assert!(problem.contains("absolute"), "{problem}");
}

/// The seed with two more instances on `node1` and `node2`.
fn seed_with_instances(a: &str, node1: &str, b: &str, node2: &str) -> String {
    seed_with(
        "\n# What must hold",
        &format!(
            "  - name: {a}\n    node: {node1}\n    network: net1\n    address: 192.168.1.21\n  \
             - name: {b}\n    node: {node2}\n    network: net1\n    address: 192.168.1.22\n\
             \n# What must hold"
        ),
    )
}

/// The plug an instance of lab `seed` derives first (its port's first
/// candidate).
fn first_plug(instance: &str) -> naming::HybridPlug {
    naming::HybridPlug::new(naming::object_uuid("seed", "port", instance))
}

/// The chain names' part of a plug's devices: 10 characters of the port.
fn chain_part(plug: &naming::HybridPlug) -> &str {
    &plug.tap[3..3 + naming::CHAIN_PORT_CHARS]
}

// Found by search: in lab `seed`, the ports of vm250223 and vm340589 share
// their first ten hex digits (6a964ee8-78…), so all four devices of their
// hybrid plugs would have the same names; vm203926 and vm227883 share nine
// (e374ff74-b…), so their devices differ but their firewall chains do not.
#[test]
fn device_names_that_would_collide_are_derived_again() {
    let (a, b) = (first_plug("vm250223"), first_plug("vm340589"));
    assert_eq!((&a.tap, &a.qvo), (&b.tap, &b.qvo), "the search's result");
    // On one node or two: device names differ lab-wide.
    for node2 in ["compute1", "compute2"] {
        let text = seed_with_instances("vm250223", "compute1", "vm340589", node2);
        let topo = parse("ok.yaml", &text).expect("settled, not refused");
        let (first, second) = (
            topo.instance("vm250223").unwrap(),
            topo.instance("vm340589").unwrap(),
        );
        // The earlier in the file keeps its port; the other gets another,
        // and a MAC from it.
        assert_eq!(first.plug(), a);
        assert_ne!(second.port, b.port);
        assert_ne!(chain_part(&second.plug()), chain_part(&a));
        assert_eq!(second.mac, naming::derived_mac(&second.port));
    }
    // Declared the other way round, the other one keeps its port.
    let text = seed_with_instances("vm340589", "compute1", "vm250223", "compute1");
    let topo = parse("ok.yaml", &text).unwrap();
    assert_eq!(topo.instance("vm340589").unwrap().plug(), b);
    assert_ne!(topo.instance("vm250223").unwrap().port, a.port);
}

#[test]
fn firewall_chains_that_would_collide_are_derived_again() {
    let (a, b) = (first_plug("vm203926"), first_plug("vm227883"));
    assert_ne!(a.tap, b.tap);
    assert_eq!(chain_part(&a), chain_part(&b), "the search's result");
    let text = seed_with_instances("vm203926", "compute2", "vm227883", "compute2");
    let topo = parse("ok.yaml", &text).expect("settled, not refused");
    assert_eq!(topo.instance("vm203926").unwrap().plug(), a);
    let second = topo.instance("vm227883").unwrap().plug();
    assert_ne!(chain_part(&second), chain_part(&a));
}

#[test]
fn the_seed_and_a_large_generated_lab_have_no_collisions() {
    for (name, text) in [
        ("seed", SEED_YAML.to_string()),
        ("20x50", ovslab_topology::generate::scale_topology(20, 50)),
    ] {
        let topo = parse(name, &text).unwrap_or_else(|e| panic!("{e}"));
        // What validation promises, seen in the plan: names unique in each
        // namespace, MACs unique in the lab.
        let state = plan::plan(&topo, &LocalVlans::new());
        let mut macs = std::collections::HashSet::new();
        for ns in &state.namespaces {
            let mut names = std::collections::HashSet::new();
            for link in &ns.links {
                assert!(
                    names.insert(&link.name),
                    "{name}: {} twice in {}",
                    link.name,
                    ns.name
                );
                if let Some(mac) = link.mac {
                    assert!(macs.insert(mac), "{name}: MAC {} twice", format_mac(&mac));
                }
            }
        }
        for switch in &state.switches {
            let mut names = std::collections::HashSet::new();
            for bridge in &switch.bridges {
                assert!(names.insert(&bridge.name), "{name}: {}", bridge.name);
                for port in &bridge.ports {
                    assert!(names.insert(&port.name), "{name}: {}", port.name);
                }
            }
        }
    }
}

/// The seed with instance3 given `mac`.
fn seed_with_instance3_mac(mac: &str) -> String {
    seed_with(
        "    address: 192.168.1.12\n",
        &format!("    address: 192.168.1.12\n    mac: {mac}\n"),
    )
}

#[test]
fn a_given_mac_is_kept_and_a_derived_one_equal_to_it_is_derived_again() {
    let seed = ovslab_topology::seed();
    let router = seed.router("router1").unwrap();
    let internet = &seed.external_hosts[0];
    let taken = [
        ("router1's gateway port", RouterPort::gateway(router).mac),
        (
            "router1's port on net2",
            RouterPort::internal(router, "net2").mac,
        ),
        ("internet", internet.mac),
    ];
    for (whose, mac) in taken {
        let text = seed_with_instance3_mac(&format_mac(&mac));
        let topo = parse("ok.yaml", &text).unwrap_or_else(|e| panic!("{whose}: {e}"));
        assert_eq!(topo.instance("instance3").unwrap().mac, mac, "{whose}");
        let router = topo.router("router1").unwrap();
        let now = [
            RouterPort::gateway(router).mac,
            RouterPort::internal(router, "net2").mac,
            topo.external_hosts[0].mac,
        ];
        assert_eq!(
            now.iter().filter(|m| **m == mac).count(),
            0,
            "{whose} got another MAC"
        );
        // Only the one that met the given MAC changed.
        let before = taken.map(|(_, m)| m);
        assert_eq!(
            now.iter().zip(&before).filter(|(n, b)| n != b).count(),
            1,
            "{whose}"
        );
        // Its port, and so its devices, stay.
        assert_eq!(
            router.gateway_port.unwrap().uuid,
            seed.routers[0].gateway_port.unwrap().uuid
        );
    }
}

// Found by search: in lab `seed`, vm148567's derived MAC is router1's
// gateway port's (both are fa:16:3e + 24 bits of a hash).
#[test]
fn a_derived_mac_equal_to_a_router_s_is_the_instance_s_to_give_up() {
    let seed = ovslab_topology::seed();
    let gateway = RouterPort::gateway(seed.router("router1").unwrap()).mac;
    let vm = naming::object_uuid("seed", "port", "vm148567");
    assert_eq!(naming::derived_mac(&vm), gateway, "the search's result");
    let text = seed_with(
        "\n# What must hold",
        "  - name: vm148567\n    node: compute1\n    network: net1\n    address: 192.168.1.21\n\
         \n# What must hold",
    );
    let topo = parse("ok.yaml", &text).expect("settled, not refused");
    assert_eq!(
        RouterPort::gateway(topo.router("router1").unwrap()).mac,
        gateway
    );
    let instance = topo.instance("vm148567").unwrap();
    // Its port stays (no device collides); only its MAC is derived again.
    assert_eq!(instance.port, vm);
    assert_ne!(instance.mac, gateway);
    assert_eq!(&instance.mac[..3], &[0xfa, 0x16, 0x3e]);
}

#[test]
fn check_names_may_not_hold_control_characters() {
    let text = seed_with("  - name: snat\n", "  - name: \"snat\\e[2J\\r\"\n");
    refused(
        &text,
        line_of(&text, "name: \"snat"),
        &["check `snat\\x1b[2J\\x0d`", "control character"],
    );
}

#[test]
fn problems_never_carry_control_characters() {
    // A value with escapes, and a file name with one.
    let text = seed_renamed("instance4", "\"inst\\e]0;owned\\a\"");
    let err = parse("bad\u{1b}[1m.yaml", &text).unwrap_err();
    let rendered = err.to_string();
    assert!(
        rendered.contains("instance `inst\\x1b]0;owned\\x07`"),
        "{rendered}"
    );
    assert!(rendered.contains("bad\\x1b[1m.yaml:"), "{rendered}");
    assert!(
        !rendered.chars().any(|c| c.is_control() && c != '\n'),
        "{rendered:?}"
    );
    // A raw ESC in the file is a syntax error, shown escaped too.
    let err = parse("raw\u{7}.yaml", "lab: seed\u{1b}[2J\nnodes: []\n").unwrap_err();
    let rendered = err.to_string();
    assert!(matches!(err, TopologyError::Syntax { .. }), "{rendered}");
    assert!(!rendered.chars().any(|c| c.is_control()), "{rendered:?}");
}

// Found by search: in lab `seed`, router r563994's port on net2 would have
// the external host `internet`'s MAC.
#[test]
fn a_router_port_equal_to_an_external_host_s_mac_is_derived_again() {
    let internet = ovslab_topology::seed().external_hosts[0].mac;
    let topo = parse("ok.yaml", &seed_renamed("router1", "r563994")).expect("settled");
    assert_eq!(topo.external_hosts[0].mac, internet);
    let router = topo.router("r563994").unwrap();
    let port = RouterPort::internal(router, "net2");
    assert_eq!(
        naming::derived_mac(&port.port),
        internet,
        "the search's result"
    );
    assert_ne!(port.mac, internet);
}

#[test]
fn a_router_s_network_named_gateway_gets_its_own_port() {
    // Interfaces and the gateway port were both derived from
    // `router1:gateway`: one tap on br-int and br-ex.
    let text = seed_renamed("net2", "gateway");
    let topo = parse("ok.yaml", &text).unwrap();
    let router = topo.router("router1").unwrap();
    let (qr, qg) = (
        RouterPort::internal(router, "gateway"),
        RouterPort::gateway(router),
    );
    assert_ne!(qr.tap, qg.tap);
    assert_ne!(qr.mac, qg.mac);
}

// Tunnel and provider networks, from the self-service lab.

const SELFSERVICE: &str = include_str!("../../../lab-topologies/selfservice-vxlan.yaml");

/// The self-service lab with `from` replaced by `to` (exactly once).
fn selfservice_with(from: &str, to: &str) -> String {
    assert_eq!(
        SELFSERVICE.matches(from).count(),
        1,
        "`{from}` must occur once in the self-service lab"
    );
    SELFSERVICE.replacen(from, to, 1)
}

#[test]
fn the_selfservice_lab_is_valid() {
    let topo = parse("selfservice-vxlan.yaml", SELFSERVICE).unwrap();
    let overlay = topo.overlay.as_ref().unwrap();
    assert_eq!(
        overlay.endpoint("compute2"),
        Some("10.0.1.3".parse().unwrap())
    );
    assert_eq!(
        topo.agent.tunnel_types,
        vec![ovslab_topology::TunnelType::Vxlan]
    );
    let net = topo.network("selfservice1").unwrap();
    assert_eq!(net.segmentation_id(), Some(101));
    assert_eq!(net.mtu(), 1450);
}

#[test]
fn a_vni_out_of_range() {
    let text = selfservice_with("segmentation_id: 101", "segmentation_id: 16777216");
    refused(
        &text,
        line_of(&text, "16777216"),
        &["selfservice1", "VNI 16777216", "1–16777215"],
    );
}

#[test]
fn a_vni_reused() {
    let text = selfservice_with("segmentation_id: 102", "segmentation_id: 101");
    refused(
        &text,
        line_of_nth(&text, "segmentation_id: 101", 1),
        &["selfservice2", "VNI 101", "selfservice1"],
    );
}

#[test]
fn a_gre_key_of_zero() {
    let text = selfservice_with("segmentation_id: 101", "segmentation_id: 0")
        .replace("type: vxlan", "type: gre")
        .replace("[vxlan]", "[gre]");
    refused(&text, line_of(&text, "segmentation_id: 0"), &["GRE key 0"]);
}

#[test]
fn a_tunnel_network_without_an_overlay() {
    let text = selfservice_with("overlay:\n  cidr: 10.0.1.0/24\n", "");
    refused(
        &text,
        line_of(&text, "    type: vxlan"),
        &["selfservice1", "needs an `overlay:`"],
    );
}

#[test]
fn a_tunnel_type_the_agents_do_not_serve() {
    let text = selfservice_with("tunnel_types: [vxlan]", "tunnel_types: [gre]");
    refused(
        &text,
        line_of(&text, "    type: vxlan"),
        &["selfservice1", "`tunnel_types` do not include vxlan"],
    );
}

#[test]
fn an_unknown_network_type() {
    let text = selfservice_with(
        "    type: vxlan\n    segmentation_id: 102",
        "    type: geneve\n    segmentation_id: 102",
    );
    refused(
        &text,
        line_of(&text, "geneve"),
        &["selfservice2", "type `geneve`"],
    );
}

#[test]
fn the_arp_responder_without_l2_population() {
    let text = selfservice_with("l2_population: true", "l2_population: false")
        .replace("arp_responder: false", "arp_responder: true");
    refused(
        &text,
        line_of(&text, "arp_responder: true"),
        &["arp_responder", "l2_population"],
    );
}

#[test]
fn an_overlay_overlapping_a_network() {
    let text = selfservice_with("cidr: 10.0.1.0/24", "cidr: 192.168.0.0/16");
    refused(
        &text,
        line_of(&text, "192.168.0.0/16"),
        &["overlay", "overlaps network `selfservice1`"],
    );
}

#[test]
fn a_local_ip_outside_the_overlay() {
    let text = selfservice_with(
        "  - name: compute1\n    role: compute\n",
        "  - name: compute1\n    role: compute\n    local_ip: 10.0.2.5\n",
    );
    refused(
        &text,
        line_of(&text, "10.0.2.5"),
        &["compute1", "local_ip", "10.0.2.5"],
    );
}

#[test]
fn two_nodes_on_one_tunnel_endpoint() {
    let text = selfservice_with(
        "  - name: compute1\n    role: compute\n",
        "  - name: compute1\n    role: compute\n    local_ip: 10.0.1.7\n",
    )
    .replacen(
        "  - name: compute2\n    role: compute\n",
        "  - name: compute2\n    role: compute\n    local_ip: 10.0.1.7\n",
        1,
    );
    refused(
        &text,
        line_of_nth(&text, "local_ip: 10.0.1.7", 1),
        &["compute2", "10.0.1.7", "`compute1`"],
    );
}

#[test]
fn a_default_tunnel_endpoint_makes_way_for_a_given_one() {
    // `network` would have 10.0.1.1 by default, compute2 10.0.1.3.
    let text = selfservice_with(
        "  - name: compute1\n    role: compute\n",
        "  - name: compute1\n    role: compute\n    local_ip: 10.0.1.1\n",
    );
    let topo = parse("ok.yaml", &text).expect("the default moves, not refused");
    let overlay = topo.overlay.unwrap();
    let endpoint = |n| overlay.endpoint(n).unwrap().to_string();
    assert_eq!(
        [
            endpoint("network"),
            endpoint("compute1"),
            endpoint("compute2")
        ],
        ["10.0.1.2", "10.0.1.1", "10.0.1.3"]
    );
}

#[test]
fn a_tunnel_network_on_a_physical_network() {
    let text = selfservice_with(
        "    type: vxlan\n    segmentation_id: 102",
        "    type: vxlan\n    physical_network: physnet1\n    segmentation_id: 102",
    );
    refused(
        &text,
        line_of(&text, "physical_network: physnet1"),
        &["selfservice2", "has no physical network"],
    );
}

#[test]
fn two_flat_networks_on_one_physical_network() {
    let text = seed_with(
        "    physical_network: physnet1\n    segmentation_id: 101",
        "    type: flat\n    physical_network: physnet1",
    );
    let text = text.replacen(
        "    physical_network: physnet1\n    segmentation_id: 102",
        "    type: flat\n    physical_network: physnet1",
        1,
    );
    refused(
        &text,
        line_of(&text, "- name: net2"),
        &["net2", "already carries flat network `net1`"],
    );
}

#[test]
fn a_flat_network_with_a_segmentation_id() {
    let text = seed_with(
        "    physical_network: physnet1\n    segmentation_id: 101",
        "    type: flat\n    physical_network: physnet1\n    segmentation_id: 101",
    );
    refused(
        &text,
        line_of(&text, "segmentation_id: 101"),
        &["net1", "flat network has no segmentation_id"],
    );
}

#[test]
fn a_wire_vni_out_of_range() {
    let text = selfservice_with(
        "    avoids: [compute1]\n    wire_vni: 101",
        "    avoids: [compute1]\n    wire_vni: 0",
    );
    refused(&text, line_of(&text, "wire_vni: 0"), &["wire_vni 0"]);
}

// --- provider networks and physical routers ------------------------------

const PROVIDER: &str = include_str!("../../../lab-topologies/provider.yaml");

/// The provider lab with `from` replaced by `to` (exactly once).
fn provider_with(from: &str, to: &str) -> String {
    assert_eq!(
        PROVIDER.matches(from).count(),
        1,
        "`{from}` must occur once in the provider lab"
    );
    PROVIDER.replacen(from, to, 1)
}

#[test]
fn the_provider_lab_is_valid() {
    let topo = parse("provider.yaml", PROVIDER).unwrap();
    let router = topo.physical_router("physrouter").unwrap();
    let networks: Vec<&str> = router
        .interfaces
        .iter()
        .map(|i| i.network.as_str())
        .collect();
    assert_eq!(networks, ["provider1", "provider2", "internet"]);
    assert!(router.on_physical_network(&topo));
    assert_eq!(
        topo.switch_hosts().collect::<Vec<_>>(),
        ["network", "compute1", "compute2", "physrouter"]
    );
    assert_eq!(topo.external_networks[0].pool, None);
    // A check may cross (or avoid) the physical router, as a node.
    let check = topo
        .checks
        .iter()
        .find(|c| c.name == "north-south-vlan")
        .unwrap();
    assert_eq!(check.crosses, ["compute2", "physrouter"]);
}

#[test]
fn a_physical_router_on_a_tunnel_network_is_refused() {
    let text = provider_with(
        "    type: vlan\n    physical_network: provider\n    segmentation_id: 101",
        "    type: vxlan\n    segmentation_id: 101",
    )
    .replace(
        "networks:\n  - name: provider1",
        "overlay:\n  cidr: 10.0.1.0/24\n\nnetworks:\n  - name: provider1",
    );
    refused(
        &text,
        line_of(&text, "{ network: provider2"),
        &[
            "physical router `physrouter`",
            "`provider2` is a vxlan network",
            "flat and VLAN",
        ],
    );
}

#[test]
fn a_physical_router_on_an_unknown_network_is_refused() {
    let text = provider_with("{ network: provider2,", "{ network: provider9,");
    refused(
        &text,
        line_of(&text, "provider9"),
        &[
            "physical router `physrouter`",
            "unknown network `provider9`",
        ],
    );
}

#[test]
fn a_physical_router_with_two_interfaces_on_one_network_is_refused() {
    let text = provider_with(
        "{ network: provider2, address: 192.0.2.1 }",
        "{ network: provider1, address: 203.0.113.2 }",
    );
    refused(
        &text,
        line_of(&text, "203.0.113.2"),
        &[
            "physical router `physrouter`",
            "a second interface on `provider1`",
        ],
    );
}

#[test]
fn a_physical_router_address_outside_its_network_or_taken_is_refused() {
    let text = provider_with("address: 192.0.2.1 }", "address: 192.0.3.1 }");
    refused(
        &text,
        line_of(&text, "192.0.3.1"),
        &[
            "physical router `physrouter`",
            "192.0.3.1 is outside provider2's subnet",
        ],
    );
    let text = provider_with("address: 198.51.100.1 }", "address: 198.51.100.10 }");
    refused(
        &text,
        line_of(&text, "address: 198.51.100.10 }"),
        &[
            "physical router `physrouter`",
            "198.51.100.10",
            "external host `server`",
        ],
    );
}

#[test]
fn a_gateway_held_by_a_neutron_router_cannot_be_the_physical_routers() {
    let text = provider_with(
        "\nsecurity_groups:",
        "\nrouters:\n  - name: router1\n    node: network\n    interfaces: [provider2]\n\nsecurity_groups:",
    );
    refused(
        &text,
        line_of(&text, "address: 192.0.2.1 }"),
        &[
            "192.0.2.1 is `provider2`'s gateway",
            "router `router1` holds",
        ],
    );
}

#[test]
fn a_physical_router_without_interfaces_is_refused() {
    let text = provider_with(
        "    interfaces:\n      - { network: provider1, address: 203.0.113.1 }\n      - { network: provider2, address: 192.0.2.1 }\n      - { network: internet, address: 198.51.100.1 }",
        "    interfaces: []",
    );
    refused(
        &text,
        line_of(&text, "- name: physrouter"),
        &["physical router `physrouter`: no interfaces"],
    );
}

#[test]
fn a_check_through_an_unknown_node_or_router_is_refused() {
    let text = provider_with(
        "crosses: [compute1, physrouter]",
        "crosses: [compute1, physrouter2]",
    );
    refused(
        &text,
        line_of(&text, "physrouter2"),
        &["unknown node or physical router `physrouter2`"],
    );
}

#[test]
fn a_floating_ip_needs_a_pool() {
    let text = seed_with(
        "    pool: { start: 203.0.113.101, end: 203.0.113.200 }\n",
        "",
    );
    refused(
        &text,
        line_of(&text, "floating_ip: 203.0.113.102"),
        &["instance `instance1`", "ext-net has no `pool`"],
    );
}

// --- DHCP and metadata ---------------------------------------------------------

/// The seed with DHCP on both networks.
fn dhcp_seed() -> String {
    SEED_YAML.replace("    dhcp: false\n", "")
}

#[test]
fn dhcp_is_on_by_default_and_its_port_takes_the_lowest_free_address() {
    let topo = parse("dhcp.yaml", &dhcp_seed()).unwrap();
    assert_eq!(topo.dhcp_agents, ["network"]);
    let net1 = topo.network("net1").unwrap();
    assert!(net1.dhcp);
    assert_eq!(net1.dhcp_address, Some("192.168.1.2".parse().unwrap()));
    assert_eq!(topo.dhcp_node("net1"), Some("network"));
    // The seed itself keeps static addresses.
    let seed = parse("seed.yaml", SEED_YAML).unwrap();
    assert!(
        seed.networks
            .iter()
            .all(|n| !n.dhcp && n.dhcp_address.is_none())
    );
    // An instance on .2 pushes the DHCP port to .3.
    let text = dhcp_seed().replace("address: 192.168.1.12", "address: 192.168.1.2");
    let topo = parse("dhcp.yaml", &text).unwrap();
    assert_eq!(
        topo.network("net1").unwrap().dhcp_address,
        Some("192.168.1.3".parse().unwrap())
    );
}

#[test]
fn dhcp_without_a_dhcp_agent_is_refused() {
    let text = dhcp_seed().replace("lab: seed\n", "lab: seed\n\ndhcp_agents: []\n");
    refused(
        &text,
        line_of(&text, "- name: net1"),
        &["network `net1`", "no node runs the DHCP agent"],
    );
    let text = dhcp_seed().replace("lab: seed\n", "lab: seed\n\ndhcp_agents: [compute9]\n");
    refused(
        &text,
        line_of(&text, "compute9"),
        &["dhcp_agents: unknown node `compute9`"],
    );
}

#[test]
fn a_reservation_outside_the_subnet_or_taken_is_refused() {
    let text = dhcp_seed().replace("address: 192.168.1.12", "address: 192.168.9.12");
    refused(
        &text,
        line_of(&text, "192.168.9.12"),
        &["instance `instance3`", "outside net1's subnet"],
    );
    let text = dhcp_seed().replace("address: 192.168.1.12", "address: 192.168.1.11");
    refused(
        &text,
        line_of_nth(&text, "address: 192.168.1.11", 1),
        &[
            "instance `instance3`",
            "already used by instance `instance1`",
        ],
    );
}

#[test]
fn user_data_over_novas_limit_and_bad_keys_are_refused() {
    let big = "x".repeat(65_536);
    let text = dhcp_seed().replacen(
        "    floating_ip: 203.0.113.102\n",
        &format!("    floating_ip: 203.0.113.102\n    user_data: \"{big}\"\n"),
        1,
    );
    refused(
        &text,
        line_of(&text, "user_data"),
        &["instance `instance1`", "user_data is 65536 bytes", "65535"],
    );
    let text = dhcp_seed().replacen(
        "    floating_ip: 203.0.113.102\n",
        "    floating_ip: 203.0.113.102\n    ssh_keys: [\"not-a-key\"]\n",
        1,
    );
    refused(
        &text,
        line_of(&text, "not-a-key"),
        &["instance `instance1`", "ssh key must be one line"],
    );
    let fine = dhcp_seed().replacen(
        "    floating_ip: 203.0.113.102\n",
        "    floating_ip: 203.0.113.102\n    user_data: \"#cloud-config\\n\"\n    ssh_keys: [\"ssh-ed25519 AAAA demo@lab\"]\n",
        1,
    );
    let topo = parse("ok.yaml", &fine).unwrap();
    let i = topo.instance("instance1").unwrap();
    assert_eq!(i.user_data.as_deref(), Some("#cloud-config\n"));
    assert_eq!(i.ssh_keys, ["ssh-ed25519 AAAA demo@lab"]);
}

#[test]
fn http_checks_take_a_path_and_other_checks_do_not() {
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: md\n    from: instance1\n    to: 169.254.169.254\n    protocol: http\n",
    );
    let topo = parse("ok.yaml", &text).unwrap();
    let md = topo.checks.iter().find(|c| c.name == "md").unwrap();
    assert_eq!(md.protocol, ovslab_topology::CheckProtocol::Http(80));
    assert_eq!(md.path.as_deref(), Some("/latest/meta-data/instance-id"));
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: md\n    from: instance1\n    to: 169.254.169.254\n    path: /latest\n",
    );
    refused(
        &text,
        line_of(&text, "path: /latest"),
        &["check `md`", "a path needs `protocol: http`"],
    );
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: md\n    from: instance1\n    to: 169.254.169.254\n    protocol: http\n    path: latest meta\n",
    );
    refused(
        &text,
        line_of(&text, "path: latest"),
        &["check `md`", "not an absolute URL path"],
    );
}

#[test]
fn a_dhcp_check_runs_from_an_instance_on_a_dhcp_network_to_its_server() {
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: dhcpcheck\n    from: instance3\n    protocol: dhcp\n    wire_vlan: 101\n",
    );
    let topo = parse("ok.yaml", &text).unwrap();
    let d = topo.checks.iter().find(|c| c.name == "dhcpcheck").unwrap();
    assert_eq!(d.protocol, ovslab_topology::CheckProtocol::Dhcp);
    assert_eq!(
        d.to,
        ovslab_topology::CheckTarget::Address("192.168.1.2".parse().unwrap())
    );
    // From an instance with a static address: refused.
    let text = SEED_YAML.replace(
        "checks:\n",
        "checks:\n  - name: dhcpcheck\n    from: instance3\n    protocol: dhcp\n",
    );
    refused(
        &text,
        line_of(&text, "- name: dhcpcheck"),
        &["check `dhcpcheck`", "`dhcp: true`"],
    );
    // With a `to`: refused; any other check without one: refused.
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: dhcpcheck\n    from: instance3\n    to: instance1\n    protocol: dhcp\n",
    );
    refused(
        &text,
        line_of_nth(&text, "to: instance1", 0),
        &["check `dhcpcheck`", "no `to`"],
    );
    let text = dhcp_seed().replace(
        "checks:\n",
        "checks:\n  - name: dhcpcheck\n    from: instance3\n",
    );
    refused(
        &text,
        line_of(&text, "- name: dhcpcheck"),
        &["check `dhcpcheck`: no `to`"],
    );
}

/// The seed with `count` more networks (VXLAN, 10.0.0.0/29, 10.0.0.8/29,
/// …: a physical network has too few VLAN ids), each with an instance on
/// compute1.
fn seed_with_networks(count: u32) -> String {
    let mut networks = String::new();
    let mut instances = String::new();
    for n in 0..count {
        let base = std::net::Ipv4Addr::from(0x0a00_0000 + n * 8);
        let [a, b, c, d] = base.octets();
        networks.push_str(&format!(
            "  - name: n{n}\n    type: vxlan\n    segmentation_id: {}\n    \
             cidr: {base}/29\n    gateway: {a}.{b}.{c}.{}\n    dhcp: false\n",
            n + 1000,
            d + 1
        ));
        instances.push_str(&format!(
            "  - name: vm{n}\n    node: compute1\n    network: n{n}\n    address: {a}.{b}.{c}.{}\n",
            d + 2
        ));
    }
    seed_with(
        "\n# Reached through the network node",
        &format!("{networks}\n# Reached through the network node"),
    )
    .replacen(
        "\nnetworks:",
        "\noverlay:\n  cidr: 10.255.0.0/16\n\nnetworks:",
        1,
    )
    .replace(
        "\n# What must hold",
        &format!("{instances}\n# What must hold"),
    )
}

#[test]
fn a_node_with_more_networks_than_local_vlans_is_refused() {
    // The seed's compute1 has net1; 4093 more fill its 4094 ids.
    let text = seed_with_networks(4093);
    let topo = parse("ok.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let state = plan::plan(&topo, &LocalVlans::new());
    let tags: std::collections::BTreeSet<u16> = state
        .switch("compute1")
        .unwrap()
        .local_vlans
        .values()
        .copied()
        .collect();
    assert_eq!(tags.len(), 4094);
    assert_eq!((tags.first(), tags.last()), (Some(&1), Some(&4094)));
    let text = seed_with_networks(4094);
    refused(
        &text,
        line_of(&text, "  - name: compute1"),
        &["node `compute1`", "4095 networks", "4094 local VLAN ids"],
    );
}

const HA: &str = include_str!("../../../lab-topologies/ha-vrrp.yaml");

fn ha_with(from: &str, to: &str) -> String {
    assert_eq!(HA.matches(from).count(), 1, "`{from}` must occur once");
    HA.replacen(from, to, 1)
}

#[test]
fn the_ha_scenario_gets_its_ha_network_vrid_and_addresses() {
    let topo = parse("ha-vrrp.yaml", HA).unwrap();
    let router = &topo.routers[0];
    assert_eq!(router.nodes, ["network1", "network2"]);
    let ha = router.ha.as_ref().unwrap();
    assert_eq!(ha.vrid, 1);
    assert_eq!(ha.vip.to_string(), "169.254.0.1/24");
    assert_eq!(
        ha.addresses,
        [
            ("network1".to_string(), "169.254.192.1".parse().unwrap()),
            ("network2".to_string(), "169.254.192.2".parse().unwrap())
        ]
    );
    // The HA network: over the first tunnel type, the lowest free VNI.
    let net = topo.network(&topo.l3_ha.as_ref().unwrap().network).unwrap();
    assert!(net.ha && !net.dhcp);
    assert!(net.name.starts_with("HA network tenant "), "{}", net.name);
    assert_eq!(net.cidr.to_string(), "169.254.192.0/18");
    assert_eq!(net.type_name(), "vxlan");
    assert_eq!(net.segmentation_id(), Some(1));
    // Without `nodes`, every network node has a copy; the seed's only one
    // is too few.
    let all = ha_with("    nodes: [network1, network2]\n", "");
    assert_eq!(parse("x", &all).unwrap().routers[0].nodes.len(), 2);
}

#[test]
fn an_ha_router_on_one_network_node() {
    let text = seed_with("    node: network\n", "    ha: true\n");
    refused(
        &text,
        line_of(&text, "  - name: router1"),
        &["router `router1`", "at least two network nodes, it has 1"],
    );
    let text = ha_with("nodes: [network1, network2]", "nodes: [network1]");
    refused(
        &text,
        line_of(&text, "  - name: router1"),
        &["at least two network nodes"],
    );
    let text = ha_with("nodes: [network1, network2]", "nodes: [network1, compute1]");
    refused(
        &text,
        line_of(&text, "nodes: [network1, compute1]"),
        &["node `compute1` is a compute node"],
    );
    let text = ha_with("nodes: [network1, network2]", "nodes: [network1, network1]");
    refused(
        &text,
        line_of(&text, "nodes: [network1, network1]"),
        &["node `network1` is named twice"],
    );
}

#[test]
fn nodes_and_node_belong_to_their_kind_of_router() {
    let text = ha_with("    ha: true\n", "");
    refused(
        &text,
        line_of(&text, "nodes: [network1, network2]"),
        &["`nodes` is for HA routers"],
    );
    let text = ha_with("    nodes: [network1, network2]\n", "    node: network1\n");
    refused(
        &text,
        line_of(&text, "    node: network1"),
        &["an HA router has a copy on several nodes"],
    );
}

#[test]
fn an_ha_network_that_overlaps_another_subnet() {
    let text = ha_with("cidr: 169.254.192.0/18", "cidr: 192.168.0.0/16");
    refused(
        &text,
        line_of(&text, "cidr: 192.168.0.0/16"),
        &["l3_ha", "192.168.0.0/16 overlaps network `selfservice1`"],
    );
}

#[test]
fn more_than_254_ha_routers_exhaust_the_vrids() {
    // 255 HA routers, each on its own network.
    let mut text = HA.split("\nrouters:").next().unwrap().to_string();
    let mut networks = String::new();
    let mut routers = String::from("\nrouters:\n");
    for i in 0..255u32 {
        networks.push_str(&format!(
            "  - {{ name: n{i}, type: vxlan, segmentation_id: {}, cidr: 10.{}.{}.0/24, gateway: 10.{}.{}.1 }}\n",
            1000 + i,
            100 + i / 200,
            i % 200,
            100 + i / 200,
            i % 200
        ));
        routers.push_str(&format!(
            "  - {{ name: r{i}, ha: true, interfaces: [n{i}] }}\n"
        ));
    }
    text = text.replace("\nnetworks:\n", &format!("\nnetworks:\n{networks}"));
    text.push_str(&routers);
    refused(
        &text,
        line_of(&text, "name: r254,"),
        &["router `r254`", "no VRID is left", "254"],
    );
}

#[test]
fn the_ha_network_segment_must_be_free() {
    let text = ha_with(
        "  cidr: 169.254.192.0/18\n",
        "  cidr: 169.254.192.0/18\n  segmentation_id: 101\n",
    );
    refused(
        &text,
        line_of_nth(&text, "segmentation_id: 101", 1),
        &["already used by network `selfservice1`"],
    );
    let text = ha_with(
        "  cidr: 169.254.192.0/18\n",
        "  cidr: 169.254.192.0/18\n  network_type: vlan\n",
    );
    refused(
        &text,
        line_of(&text, "  network_type: vlan"),
        &["needs a physical network"],
    );
}

#[test]
fn without_tunnels_the_ha_network_is_a_vlan_with_the_lowest_free_id() {
    let text = seed_with(
        "  - name: compute1\n",
        "  - name: network2\n    role: network\n  - name: compute1\n",
    )
    .replacen(
        "    node: network\n    interfaces",
        "    ha: true\n    interfaces",
        1,
    );
    let topo = parse("x", &text).unwrap();
    let ha = topo
        .network(&topo.l3_ha.as_ref().unwrap().network)
        .unwrap()
        .clone();
    assert_eq!(ha.type_name(), "vlan");
    assert_eq!(ha.physical_network.as_deref(), Some("physnet1"));
    // The seed's networks use VLANs 101 and 102: 1 is free.
    assert_eq!(ha.segmentation_id(), Some(1));
    assert_eq!(topo.routers[0].nodes, ["network", "network2"]);
}
