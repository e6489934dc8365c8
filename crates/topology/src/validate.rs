//! Every rule a topology must satisfy before anything is built.
//!
//! All problems are collected (not just the first), each naming the object,
//! the value and the line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

use crate::model::*;
use crate::naming::{self, DEFAULT_OVERLAY, IFNAME_MAX};
use crate::parse::*;
use crate::printable::{is_unsafe, printable, shortened};

struct Checker {
    problems: Vec<Diagnostic>,
}

fn at<T>(s: &S<T>) -> (u32, u32) {
    (s.referenced.line() as u32, s.referenced.column() as u32)
}

impl Checker {
    fn err<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        let (line, column) = at(s);
        self.err_at(line, column, message.into());
    }

    /// Messages quote the file's values: whatever they hold is escaped here,
    /// so that no problem carries a control character to a terminal, and
    /// a value of megabytes is quoted in part ([`MESSAGE_MAX`]).
    fn err_at(&mut self, line: u32, column: u32, message: String) {
        self.problems.push(Diagnostic {
            line,
            column,
            message: shortened(&printable(&message), MESSAGE_MAX).into_owned(),
        });
    }

    fn ipv4(&mut self, what: &str, s: &S<String>) -> Option<Ipv4Addr> {
        match s.value.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(s, format!("{what}: `{}` is not an IPv4 address", s.value));
                None
            }
        }
    }

    fn cidr(&mut self, what: &str, s: &S<String>) -> Option<Ipv4Net> {
        match s.value.parse::<Ipv4Net>() {
            Ok(net) if net.trunc() == net => Some(net),
            Ok(net) => {
                self.err(
                    s,
                    format!(
                        "{what}: `{}` has host bits set (did you mean {}?)",
                        s.value,
                        net.trunc()
                    ),
                );
                None
            }
            Err(_) => {
                self.err(
                    s,
                    format!(
                        "{what}: `{}` is not an IPv4 CIDR like 192.168.1.0/24",
                        s.value
                    ),
                );
                None
            }
        }
    }

    /// An address that hosts may use: inside `net`, neither its network nor
    /// its broadcast address.
    fn host_address(
        &mut self,
        what: &str,
        s: &S<String>,
        net: &Ipv4Net,
        net_name: &str,
    ) -> Option<Ipv4Addr> {
        let ip = self.ipv4(what, s)?;
        if !net.contains(&ip) {
            self.err(
                s,
                format!("{what}: address {ip} is outside {net_name}'s subnet {net}"),
            );
            return None;
        }
        if ip == net.network() {
            self.err(
                s,
                format!("{what}: address {ip} is {net_name}'s network address"),
            );
            return None;
        }
        if ip == net.broadcast() {
            self.err(
                s,
                format!("{what}: address {ip} is {net_name}'s broadcast address"),
            );
            return None;
        }
        Some(ip)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 63
}

const NAME_RULE: &str =
    "a name starts with a letter and holds only letters, digits, `-` and `_` (at most 63)";

/// Why `name` cannot be a lab's name, if it cannot: the rule a topology
/// file's `lab:` obeys, for names that reach the daemon by other ways (an
/// API path, a query). A name that passes is safe to join to a directory.
pub fn lab_name_problem(name: &str) -> Option<String> {
    lab_problem(name).map(|why| format!("lab `{}`: {why}", printable(name)))
}

/// Why `name` cannot be the name of an object of a lab (node, instance,
/// router, network, host), if it cannot.
pub fn object_name_problem(name: &str) -> Option<String> {
    object_problem(name).map(|why| format!("`{}`: {why}", printable(name)))
}

fn lab_problem(name: &str) -> Option<String> {
    if !valid_name(name) {
        return Some(NAME_RULE.to_string());
    }
    naming::RESERVED_LAB_NAMES.contains(&name).then(|| {
        "the name is reserved: the daemon keeps a record of that name in its run directory, beside the labs' directories"
            .to_string()
    })
}

fn object_problem(name: &str) -> Option<String> {
    if !valid_name(name) {
        return Some(NAME_RULE.to_string());
    }
    if name == naming::LOOPBACK {
        return Some("the name is reserved: it is every namespace's loopback device".to_string());
    }
    if naming::RESERVED_NAMES.contains(&name) {
        return Some(format!(
            "the name is reserved: the lab's namespaces have interfaces named so ({})",
            naming::RESERVED_NAMES.join(", ")
        ));
    }
    if let Some(prefix) = naming::NAMESPACE_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
    {
        return Some(format!(
            "names starting with `{prefix}` are reserved for generated namespaces (`{}` for routers; `qdhcp-` for DHCP, `snat-` and `fip-` for DVR, to come)",
            naming::QROUTER
        ));
    }
    if let Some(prefix) = naming::ROUTER_DEVICE_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
    {
        return Some(format!(
            "names starting with `{prefix}` are reserved for router devices (`qr-`, `qg-`, and `ha-` for HA routers)"
        ));
    }
    looks_hashed(name).then(|| {
        "the name has the form of a generated device name (`tap`, `qbr`, `qvb` or `qvo` + 11 characters of a port UUID)"
            .to_string()
    })
}

/// Whether `name` is spelled like a device named after a port:
/// `tap8c2f1a3b-4d`.
fn looks_hashed(name: &str) -> bool {
    [naming::TAP, naming::QBR, naming::QVB, naming::QVO]
        .iter()
        .filter_map(|p| name.strip_prefix(p))
        .any(|rest| {
            rest.len() == 11
                && rest.char_indices().all(|(i, c)| match i {
                    8 => c == '-',
                    _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
                })
        })
}

/// Why a lab's Open vSwitch sockets cannot live under `run_root`, if they
/// cannot: a relative run directory, or a socket path longer than a unix
/// socket may have ([`naming::SOCKET_PATH_MAX`]). Validation checks the
/// default run directory; the engine calls this with the one it runs with,
/// before it creates anything.
pub fn socket_paths_problem(run_root: &Path, topology: &Topology) -> Option<String> {
    if !run_root.is_absolute() {
        return Some(format!(
            "run directory {}: not an absolute path (the lab's sockets would depend on the working directory)",
            printable(&run_root.display().to_string())
        ));
    }
    let too_long: Vec<(&str, usize)> = topology
        .switch_hosts()
        .map(|n| {
            let path = naming::longest_socket_path(run_root, &topology.lab, n);
            (n, path.as_os_str().len())
        })
        .filter(|(_, len)| *len > naming::SOCKET_PATH_MAX)
        .collect();
    let (node, len) = too_long.iter().max_by_key(|(_, len)| *len)?;
    let path = naming::longest_socket_path(run_root, &topology.lab, node);
    let nodes: Vec<&str> = too_long.iter().map(|(n, _)| *n).collect();
    Some(format!(
        "lab `{}`: the Open vSwitch sockets of node(s) {} would not fit a unix socket path \
         ({} is {len} bytes, at most {} fit); use a shorter run directory, lab name or node name",
        topology.lab,
        nodes.join(", "),
        printable(&path.display().to_string()),
        naming::SOCKET_PATH_MAX,
    ))
}

/// The socket-path rule at validation, with the default run directory:
/// a node's sockets live in `/run/ovslab/<lab>/<node>/`.
fn check_socket_path(c: &mut Checker, lab: &str, node: &S<String>) {
    let path = naming::longest_socket_path(Path::new(naming::DEFAULT_RUN_ROOT), lab, &node.value);
    let len = path.as_os_str().len();
    if len > naming::SOCKET_PATH_MAX {
        c.err(
            node,
            format!(
                "node `{}`: its Open vSwitch sockets would not fit a unix socket path: {} is {len} bytes, at most {} fit; shorten the lab or node name",
                node.value,
                path.display(),
                naming::SOCKET_PATH_MAX
            ),
        );
    }
}

/// A name the plan derives from a hash of the lab's and an object's names
/// and cuts short, and whose it is. Two equal ones in one scope would be
/// one object where the plan wants two. Only the security groups' ipsets
/// are checked so now: ports' names and MACs are settled so that they
/// differ ([`crate::identifiers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hashed {
    /// Where the name must be unique: a namespace, a node's firewall.
    scope: String,
    /// `device`, `firewall chains`, `ipset`.
    what: &'static str,
    name: String,
    /// `instance `x``, `router `r``: who the name is derived for.
    owner: String,
    line: u32,
    column: u32,
}

/// Pairs `(later, earlier)` of hashed names equal in one scope, one pair
/// per two owners (an instance's tap, qbr, qvb and qvo collide together).
fn collisions(names: &[Hashed]) -> Vec<(&Hashed, &Hashed)> {
    let mut first: HashMap<(&str, &str), &Hashed> = HashMap::new();
    let mut reported: HashSet<(&str, &str)> = HashSet::new();
    let mut out = Vec::new();
    for h in names {
        match first.get(&(h.scope.as_str(), h.name.as_str())) {
            Some(earlier) if earlier.owner != h.owner => {
                if reported.insert((h.owner.as_str(), earlier.owner.as_str())) {
                    out.push((h, *earlier));
                }
            }
            Some(_) => {}
            None => {
                first.insert((&h.scope, &h.name), h);
            }
        }
    }
    out
}

fn collision_message(later: &Hashed, earlier: &Hashed) -> String {
    format!(
        "{}: its {} {} in {} would be the same as {}'s (line {}): both are derived from UUIDs that begin alike; rename one of them",
        later.owner, later.what, later.name, later.scope, earlier.owner, earlier.line
    )
}

/// The column of the name `name` among `spans`, where it was declared.
fn column_of<'a>(mut spans: impl Iterator<Item = &'a S<String>>, name: &str) -> u32 {
    spans.find(|s| s.value == name).map_or(0, |s| at(s).1)
}

/// Names that become a directory of Open vSwitch's in the lab's run
/// directory (nodes, physical routers), beside the lab's own records.
fn check_run_dir_name(c: &mut Checker, kind: &str, s: &S<String>) {
    if s.value == naming::FAILED_NODES_RECORD {
        c.err(
            s,
            format!(
                "{kind} `{}`: the name is reserved: a lab's run directory keeps a record of that name beside its nodes' directories",
                s.value
            ),
        );
    }
}

/// Names that become Linux interface names as they are (a switch port or
/// bridge named after the object), and must fit `IFNAMSIZ`.
fn check_ifname(c: &mut Checker, kind: &str, s: &S<String>, becomes: &str) {
    if naming::KERNEL_NAMES.contains(&s.value.as_str()) {
        c.err(
            s,
            format!(
                "{kind} `{}`: the name is reserved: it becomes {becomes}, and the kernel keeps it for itself in every namespace ({})",
                s.value,
                naming::KERNEL_NAMES.join(", ")
            ),
        );
    }
    if s.value.len() > IFNAME_MAX {
        c.err(
            s,
            format!(
                "{kind} `{}`: name is {} characters, but it becomes {becomes}, limited to {IFNAME_MAX}",
                s.value,
                s.value.len()
            ),
        );
    }
}

/// Nova's limit on user data (`MAX_USERDATA_SIZE`, 65535 bytes).
const MAX_USER_DATA: usize = 65_535;

/// The most DNS servers a network may list: Neutron's default
/// `max_dns_nameservers`. dnsmasq reads its options file in lines of 1024
/// bytes and takes the rest of a longer line for another option.
pub const MAX_DNS_NAMESERVERS: usize = 5;

pub(crate) fn validate(source: &str, raw: RawTopology) -> Result<Topology, Vec<Diagnostic>> {
    let mut c = Checker {
        problems: Vec::new(),
    };

    if let Some(why) = lab_problem(&raw.lab.value) {
        c.err(&raw.lab, format!("lab `{}`: {why}", raw.lab.value));
    }

    // Names share one space: each becomes `<lab>.<name>` as a namespace.
    let mut names: HashMap<String, (&'static str, u32)> = HashMap::new();
    let mut declare = |c: &mut Checker, kind: &'static str, s: &S<String>| {
        if let Some(why) = object_problem(&s.value) {
            c.err(s, format!("{kind} `{}`: {why}", s.value));
        }
        if let Some((other_kind, line)) = names.get(&s.value) {
            c.err(
                s,
                format!(
                    "{kind} `{}`: duplicate name, already used by the {other_kind} on line {line}",
                    s.value
                ),
            );
        } else {
            names.insert(s.value.clone(), (kind, at(s).0));
        }
    };
    for n in &raw.nodes {
        declare(&mut c, "node", &n.name);
    }
    for p in &raw.physical_networks {
        declare(&mut c, "physical network", &p.name);
    }
    if let Some(name) = raw.overlay.as_ref().and_then(|o| o.name.as_ref()) {
        declare(&mut c, "overlay", name);
    }
    for n in &raw.networks {
        declare(&mut c, "network", &n.name);
    }
    for n in &raw.external_networks {
        declare(&mut c, "external network", &n.name);
    }
    for h in &raw.external_hosts {
        declare(&mut c, "external host", &h.name);
    }
    for r in &raw.physical_routers {
        declare(&mut c, "physical router", &r.name);
    }
    for r in &raw.routers {
        declare(&mut c, "router", &r.name);
    }
    for g in &raw.security_groups {
        declare(&mut c, "security group", &g.name);
    }
    for i in &raw.instances {
        declare(&mut c, "instance", &i.name);
    }

    if let Some(o) = raw.overlay.as_ref().filter(|o| o.name.is_none())
        && let Some((kind, line)) = names.get(DEFAULT_OVERLAY)
    {
        c.err(
            &o.cidr,
            format!(
                "overlay: its default name `{DEFAULT_OVERLAY}` is the {kind}'s on line {line}; give the overlay a `name`"
            ),
        );
    }

    // Nodes.
    let mut nodes = Vec::new();
    for n in &raw.nodes {
        check_ifname(
            &mut c,
            "node",
            &n.name,
            "its port name on the physical switch",
        );
        check_run_dir_name(&mut c, "node", &n.name);
        check_socket_path(&mut c, &raw.lab.value, &n.name);
        let role = match n.role.value.as_str() {
            "network" => NodeRole::Network,
            "compute" => NodeRole::Compute,
            other => {
                c.err(
                    &n.role,
                    format!(
                        "node `{}`: role `{other}` is neither `network` nor `compute`",
                        n.name.value
                    ),
                );
                continue;
            }
        };
        nodes.push(Node {
            name: n.name.value.clone(),
            role,
            line: at(&n.name).0,
        });
    }
    if raw.nodes.is_empty() {
        c.err(
            &raw.lab,
            format!("lab `{}`: no nodes declared", raw.lab.value),
        );
    }
    let role_of: HashMap<&str, NodeRole> =
        nodes.iter().map(|n| (n.name.as_str(), n.role)).collect();

    // The DHCP agents: the nodes named, or every network node.
    let dhcp_agents: Vec<String> = match &raw.dhcp_agents {
        None => nodes
            .iter()
            .filter(|n| n.role == NodeRole::Network)
            .map(|n| n.name.clone())
            .collect(),
        Some(list) => {
            let mut agents: Vec<String> = Vec::new();
            for a in &list.value {
                if !role_of.contains_key(a.value.as_str()) {
                    c.err(a, format!("dhcp_agents: unknown node `{}`", a.value));
                } else if agents.contains(&a.value) {
                    c.err(a, format!("dhcp_agents: node `{}` named twice", a.value));
                } else {
                    agents.push(a.value.clone());
                }
            }
            agents
        }
    };

    // Physical networks.
    let mut physical_networks = Vec::new();
    for (i, p) in raw.physical_networks.iter().enumerate() {
        check_ifname(
            &mut c,
            "physical network",
            &p.name,
            "the name of its switch bridge",
        );
        if i > 0 {
            c.err(
                &p.name,
                format!(
                    "physical network `{}`: only one physical network is supported (each node has one br-vlan with one uplink)",
                    p.name.value
                ),
            );
        }
        physical_networks.push(PhysicalNetwork {
            name: p.name.value.clone(),
            line: at(&p.name).0,
        });
    }

    // The agent's options.
    let agent = check_agent(&mut c, &raw);

    // Project and provider networks.
    let mut networks = Vec::new();
    let mut segments: HashMap<(String, i64), String> = HashMap::new();
    let mut subnets: Vec<(Ipv4Net, String, String)> = Vec::new(); // (net, kind, name)
    for n in &raw.networks {
        let name = &n.name.value;
        let Some(network_type) = check_network_type(&mut c, &raw, &agent, n, &mut segments) else {
            continue;
        };
        let Some(cidr) = c.cidr(&format!("network `{name}`"), &n.cidr) else {
            continue;
        };
        if cidr.prefix_len() > 29 {
            c.err(
                &n.cidr,
                format!("network `{name}`: subnet {cidr} is too small (at most /29)"),
            );
            continue;
        }
        check_overlap(&mut c, &mut subnets, cidr, "network", name, &n.cidr);
        let Some(gateway) = c.host_address(
            &format!("network `{name}` gateway"),
            &n.gateway,
            &cidr,
            name,
        ) else {
            continue;
        };
        let mut dns_nameservers: Vec<Ipv4Addr> = Vec::new();
        for (i, d) in n.dns_nameservers.iter().enumerate() {
            let Some(server) = c.ipv4(&format!("network `{name}` DNS server"), d) else {
                continue;
            };
            if i >= MAX_DNS_NAMESERVERS {
                if i > MAX_DNS_NAMESERVERS {
                    continue;
                }
                c.err(
                    d,
                    format!(
                        "network `{name}`: more than {MAX_DNS_NAMESERVERS} DNS servers (Neutron's `max_dns_nameservers`)"
                    ),
                );
            } else if dns_nameservers.contains(&server) {
                c.err(
                    d,
                    format!("network `{name}`: DNS server {server} is listed twice"),
                );
            } else {
                dns_nameservers.push(server);
            }
        }
        networks.push(Network {
            name: name.clone(),
            network_type,
            physical_network: n.physical_network.as_ref().map(|p| p.value.clone()),
            cidr,
            gateway,
            dhcp: n.dhcp.as_ref().is_none_or(|d| d.value),
            dns_nameservers,
            dhcp_address: None,
            dhcp_port: None, // settled below
            ha: false,
            line: at(&n.name).0,
        });
    }

    // External networks.
    let mut external_networks = Vec::new();
    for (i, e) in raw.external_networks.iter().enumerate() {
        let name = &e.name.value;
        check_ifname(
            &mut c,
            "external network",
            &e.name,
            "the name of its switch bridge",
        );
        if i > 0 {
            c.err(
                &e.name,
                format!("external network `{name}`: only one external network is supported (one br-ex per network node)"),
            );
        }
        let Some(cidr) = c.cidr(&format!("external network `{name}`"), &e.cidr) else {
            continue;
        };
        check_overlap(
            &mut c,
            &mut subnets,
            cidr,
            "external network",
            name,
            &e.cidr,
        );
        let what = format!("external network `{name}`");
        let gateway = c.host_address(&format!("{what} gateway"), &e.gateway, &cidr, name);
        let pool = match &e.pool {
            None => Some(None),
            Some(pool) => {
                let start = c.host_address(&format!("{what} pool start"), &pool.start, &cidr, name);
                let end = c.host_address(&format!("{what} pool end"), &pool.end, &cidr, name);
                match (start, end) {
                    (Some(start), Some(end)) if start > end => {
                        c.err(
                            &pool.start,
                            format!("{what}: pool start {start} is after pool end {end}"),
                        );
                        None
                    }
                    (Some(start), Some(end)) => Some(Some((start, end))),
                    _ => None,
                }
            }
        };
        let (Some(gateway), Some(pool)) = (gateway, pool) else {
            continue;
        };
        external_networks.push(ExternalNetwork {
            name: name.clone(),
            cidr,
            gateway,
            pool,
            line: at(&e.name).0,
        });
    }
    let ext_by_name: BTreeMap<String, ExternalNetwork> = external_networks
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    let net_by_name: BTreeMap<String, Network> = networks
        .iter()
        .map(|n| (n.name.clone(), n.clone()))
        .collect();

    // The overlay and each node's tunnel endpoint on it.
    let overlay = check_overlay(&mut c, &raw, &mut subnets);

    // Addresses in use, per network: who holds them.
    let mut used: HashMap<(String, Ipv4Addr), String> = HashMap::new();
    let mut claim = |c: &mut Checker, s: &S<String>, network: &str, ip: Ipv4Addr, who: String| {
        if let Some(holder) = used.get(&(network.to_string(), ip)) {
            c.err(
                s,
                format!("{who}: address {ip} on `{network}` is already used by {holder}"),
            );
            false
        } else {
            used.insert((network.to_string(), ip), who);
            true
        }
    };
    for n in &raw.networks {
        if let Some(net) = net_by_name.get(&n.name.value) {
            claim(
                &mut c,
                &n.gateway,
                &net.name,
                net.gateway,
                format!("the gateway of network `{}`", net.name),
            );
        }
    }

    // External hosts.
    let mut external_hosts = Vec::new();
    for h in &raw.external_hosts {
        let name = &h.name.value;
        check_ifname(
            &mut c,
            "external host",
            &h.name,
            "its port name on the external switch",
        );
        let Some(ext) = ext_by_name.get(&h.network.value) else {
            c.err(
                &h.network,
                format!(
                    "external host `{name}`: unknown external network `{}`",
                    h.network.value
                ),
            );
            continue;
        };
        let Some(address) = c.host_address(
            &format!("external host `{name}`"),
            &h.address,
            &ext.cidr,
            &ext.name,
        ) else {
            continue;
        };
        claim(
            &mut c,
            &h.address,
            &ext.name,
            address,
            format!("external host `{name}`"),
        );
        external_hosts.push(ExternalHost {
            name: name.clone(),
            network: ext.name.clone(),
            address,
            mac: [0; 6], // settled with the others, below
            line: at(&h.name).0,
        });
    }

    // Routers.
    let mut routers = Vec::new();
    let mut attached: HashMap<String, String> = HashMap::new();
    let network_nodes: Vec<&str> = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Network)
        .map(|n| n.name.as_str())
        .collect();
    for r in &raw.routers {
        let name = &r.name.value;
        let ha = r.ha.as_ref().is_some_and(|h| h.value);
        let mut router_nodes = Vec::new();
        let mut network_node = |c: &mut Checker, node: &S<String>| match role_of
            .get(node.value.as_str())
        {
            None => c.err(
                node,
                format!("router `{name}`: unknown node `{}`", node.value),
            ),
            Some(NodeRole::Compute) => c.err(
                node,
                format!(
                    "router `{name}`: node `{}` is a compute node; routers live on a network node",
                    node.value
                ),
            ),
            Some(NodeRole::Network) if router_nodes.contains(&node.value) => c.err(
                node,
                format!("router `{name}`: node `{}` is named twice", node.value),
            ),
            Some(NodeRole::Network) => router_nodes.push(node.value.clone()),
        };
        let problems_before = c.problems.len();
        match (ha, &r.node, &r.nodes) {
            (false, Some(node), None) => network_node(&mut c, node),
            (false, None, None) => c.err(
                &r.name,
                format!("router `{name}`: no `node` (the network node it lives on)"),
            ),
            (false, _, Some(list)) => c.err(
                list,
                format!(
                    "router `{name}`: `nodes` is for HA routers (`ha: true`); a legacy router has one `node`"
                ),
            ),
            (true, Some(node), _) => c.err(
                node,
                format!(
                    "router `{name}`: an HA router has a copy on several nodes: `nodes: [...]` (or none: every network node), not `node`"
                ),
            ),
            (true, None, Some(list)) => {
                for node in &list.value {
                    network_node(&mut c, node);
                }
            }
            (true, None, None) => router_nodes.extend(network_nodes.iter().map(|n| n.to_string())),
        }
        if ha && router_nodes.len() < 2 && c.problems.len() == problems_before {
            c.err(
                &r.name,
                format!(
                    "router `{name}`: an HA router needs at least two network nodes, it has {}",
                    router_nodes.len()
                ),
            );
        }
        if router_nodes.is_empty() {
            router_nodes.push(String::new());
        }
        let mut interfaces = Vec::new();
        for i in &r.interfaces {
            if !raw.networks.iter().any(|n| n.name.value == i.value) {
                c.err(i, format!("router `{name}`: unknown network `{}`", i.value));
            } else if let Some(other) = attached.get(&i.value) {
                c.err(
                    i,
                    format!(
                        "router `{name}`: network `{}` is already attached to router `{other}`",
                        i.value
                    ),
                );
            } else {
                attached.insert(i.value.clone(), name.clone());
                interfaces.push(i.value.clone());
            }
        }
        let mut external_gateway = None;
        if let Some(g) = &r.external_gateway {
            match ext_by_name.get(&g.network.value) {
                None => c.err(
                    &g.network,
                    format!(
                        "router `{name}`: unknown external network `{}`",
                        g.network.value
                    ),
                ),
                Some(ext) => {
                    let what = format!("router `{name}` gateway");
                    if let Some(address) = c.host_address(&what, &g.address, &ext.cidr, &ext.name) {
                        if address == ext.gateway {
                            c.err(
                                &g.address,
                                format!("{what}: address {address} is the external network's own gateway"),
                            );
                        } else if claim(
                            &mut c,
                            &g.address,
                            &ext.name,
                            address,
                            format!("router `{name}`"),
                        ) {
                            external_gateway = Some(NetworkAddress {
                                network: ext.name.clone(),
                                address,
                            });
                        }
                    }
                }
            }
        }
        routers.push(Router {
            name: name.clone(),
            nodes: router_nodes,
            ha: ha.then(|| HaRouter {
                vrid: 0,
                vip: Ipv4Net::default(),
                addresses: Vec::new(),
                ports: Vec::new(), // settled below
            }),
            interfaces,
            external_gateway,
            snat: r.snat,
            interface_ports: Vec::new(), // settled below
            gateway_port: None,
            line: at(&r.name).0,
        });
    }

    // The HA network, each HA router's VRID and its copies' addresses.
    let l3_ha = check_l3_ha(
        &mut c,
        &raw,
        &agent,
        overlay.is_some(),
        &mut routers,
        &subnets,
        &segments,
    );

    // Physical routers.
    let mut physical_routers = Vec::new();
    for r in &raw.physical_routers {
        let name = &r.name.value;
        let what = format!("physical router `{name}`");
        check_ifname(
            &mut c,
            "physical router",
            &r.name,
            "its port name on the physical and external switches",
        );
        check_run_dir_name(&mut c, "physical router", &r.name);
        check_socket_path(&mut c, &raw.lab.value, &r.name);
        if r.interfaces.is_empty() {
            c.err(&r.name, format!("{what}: no interfaces"));
        }
        let mut interfaces: Vec<PhysicalInterface> = Vec::new();
        let mut external = Vec::new();
        for i in &r.interfaces {
            let network = &i.network.value;
            if interfaces
                .iter()
                .chain(&external)
                .any(|x| &x.network == network)
            {
                c.err(
                    &i.network,
                    format!("{what}: a second interface on `{network}`"),
                );
                continue;
            }
            let (cidr, gateway) = if let Some(net) = net_by_name.get(network) {
                if net.tunnel().is_some() {
                    c.err(
                        &i.network,
                        format!(
                            "{what}: `{network}` is a {} network; a physical router reaches flat and VLAN (provider) networks only",
                            net.type_name()
                        ),
                    );
                    continue;
                }
                (net.cidr, Some(net.gateway))
            } else if let Some(ext) = ext_by_name.get(network) {
                (ext.cidr, None)
            } else {
                if !raw.networks.iter().any(|n| &n.name.value == network)
                    && !raw
                        .external_networks
                        .iter()
                        .any(|n| &n.name.value == network)
                {
                    c.err(&i.network, format!("{what}: unknown network `{network}`"));
                }
                continue;
            };
            let Some(address) = c.host_address(&what, &i.address, &cidr, network) else {
                continue;
            };
            if Some(address) == gateway {
                // The provider network's gateway is the physical router,
                // unless a Neutron router holds it.
                if let Some(router) = routers.iter().find(|x| x.interfaces.contains(network)) {
                    c.err(
                        &i.address,
                        format!(
                            "{what}: address {address} is `{network}`'s gateway, which router `{}` holds",
                            router.name
                        ),
                    );
                    continue;
                }
            } else if !claim(&mut c, &i.address, network, address, what.clone()) {
                continue;
            }
            let at = PhysicalInterface {
                network: network.clone(),
                address,
                mac: [0; 6], // settled below
            };
            if gateway.is_some() {
                interfaces.push(at);
            } else {
                external.push(at);
            }
        }
        interfaces.extend(external);
        physical_routers.push(PhysicalRouter {
            name: name.clone(),
            interfaces,
            line: at(&r.name).0,
        });
    }

    // Security groups.
    let mut security_groups = Vec::new();
    for g in &raw.security_groups {
        let mut rules = Vec::new();
        for rule in &g.rules {
            if let Some(r) = check_rule(&mut c, &g.name.value, rule, &raw.security_groups) {
                rules.push(r);
            }
        }
        security_groups.push(SecurityGroup {
            name: g.name.value.clone(),
            rules,
            line: at(&g.name).0,
        });
    }

    // MACs: every one of the lab is unique, since the physical switch
    // learns them whatever the VLAN. Only those given in the file can be
    // refused; derived ones are settled around them (`identifiers`).
    let lab = raw.lab.value.as_str();
    let mut given_macs: Vec<Option<[u8; 6]>> = Vec::new();
    let mut given_by: HashMap<[u8; 6], String> = HashMap::new();

    // Instances.
    let mut instances = Vec::new();
    for i in &raw.instances {
        let name = &i.name.value;
        let mut ok = true;
        match role_of.get(i.node.value.as_str()) {
            None => {
                c.err(
                    &i.node,
                    format!("instance `{name}`: unknown node `{}`", i.node.value),
                );
                ok = false;
            }
            Some(NodeRole::Network) => {
                c.err(
                    &i.node,
                    format!("instance `{name}`: node `{}` is a network node; instances live on compute nodes", i.node.value),
                );
                ok = false;
            }
            Some(NodeRole::Compute) => {}
        }
        for g in &i.security_groups {
            if !raw
                .security_groups
                .iter()
                .any(|sg| sg.name.value == g.value)
            {
                c.err(
                    g,
                    format!("instance `{name}`: unknown security group `{}`", g.value),
                );
                ok = false;
            }
        }
        let mac = match &i.mac {
            Some(m) => {
                match parse_mac(&m.value) {
                    Some([0, 0, 0, 0, 0, 0]) => {
                        c.err(
                            m,
                            format!("instance `{name}`: MAC {} is all zeroes, which no interface may have", m.value),
                        );
                        ok = false;
                        None
                    }
                    Some(mac) if mac[0] & 1 == 0 => Some(mac),
                    Some(_) => {
                        c.err(
                            m,
                            format!("instance `{name}`: MAC {} is a multicast address", m.value),
                        );
                        ok = false;
                        None
                    }
                    None => {
                        c.err(m, format!("instance `{name}`: `{}` is not a MAC address like fa:16:3e:00:00:01", m.value));
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        if let (Some(mac), Some(span)) = (mac, &i.mac) {
            if let Some(other) = given_by.get(&mac) {
                c.err(
                    span,
                    format!(
                        "instance `{name}`: MAC {} is already given to {other}",
                        format_mac(&mac)
                    ),
                );
                ok = false;
            } else {
                given_by.insert(mac, format!("instance `{name}` (line {})", at(span).0));
            }
        }
        let Some(net) = net_by_name.get(&i.network.value) else {
            if !raw.networks.iter().any(|n| n.name.value == i.network.value) {
                c.err(
                    &i.network,
                    format!("instance `{name}`: unknown network `{}`", i.network.value),
                );
            }
            continue;
        };
        let what = format!("instance `{name}`");
        let Some(address) = c.host_address(&what, &i.address, &net.cidr, &net.name) else {
            continue;
        };
        if address == net.gateway {
            c.err(
                &i.address,
                format!(
                    "{what}: address {address} is {}'s gateway address",
                    net.name
                ),
            );
            continue;
        }
        ok &= claim(
            &mut c,
            &i.address,
            &net.name,
            address,
            format!("instance `{name}`"),
        );

        let mut floating_ip = None;
        if let Some(f) = &i.floating_ip
            && let Some(ip) = c.ipv4(&format!("{what} floating IP"), f)
        {
            {
                match external_networks.iter().find(|e| e.cidr.contains(&ip)) {
                    None => c.err(
                        f,
                        format!("{what}: floating IP {ip} is outside every external subnet"),
                    ),
                    Some(ext) if ext.pool.is_none() => c.err(
                        f,
                        format!(
                            "{what}: floating IP {ip}: {} has no `pool` of floating IPs",
                            ext.name
                        ),
                    ),
                    Some(ExternalNetwork {
                        pool: Some((start, end)),
                        name: ext_name,
                        ..
                    }) if ip < *start || ip > *end => c.err(
                        f,
                        format!(
                            "{what}: floating IP {ip} is outside {ext_name}'s pool {start}–{end}"
                        ),
                    ),
                    Some(ext) => {
                        let routed = routers.iter().any(|r| {
                            r.interfaces.contains(&net.name)
                                && r.external_gateway
                                    .as_ref()
                                    .is_some_and(|g| g.network == ext.name)
                        });
                        if !routed {
                            c.err(
                                f,
                                format!(
                                    "{what}: floating IP {ip} needs a router between `{}` and `{}`",
                                    net.name, ext.name
                                ),
                            );
                        } else if claim(
                            &mut c,
                            f,
                            &ext.name,
                            ip,
                            format!("the floating IP of instance `{name}`"),
                        ) {
                            floating_ip = Some(ip);
                        }
                    }
                }
            }
        }
        if let Some(u) = &i.user_data
            && u.value.len() > MAX_USER_DATA
        {
            c.err(
                u,
                format!(
                    "{what}: user_data is {} bytes, more than Nova's {MAX_USER_DATA}",
                    u.value.len()
                ),
            );
            ok = false;
        }
        for key in &i.ssh_keys {
            let k = key.value.trim();
            let words = k.split_whitespace().count();
            if k.is_empty()
                || k.contains('\n')
                || k.chars().any(is_unsafe)
                || words < 2
                || k.len() > 16_384
            {
                c.err(
                    key,
                    format!("{what}: an ssh key must be one line like `ssh-ed25519 AAAA… comment`"),
                );
                ok = false;
            }
        }
        if ok {
            given_macs.push(mac);
            instances.push(Instance {
                name: name.clone(),
                node: i.node.value.clone(),
                network: net.name.clone(),
                address,
                port: uuid::Uuid::nil(), // settled below
                mac: mac.unwrap_or_default(),
                floating_ip,
                security_groups: i.security_groups.iter().map(|g| g.value.clone()).collect(),
                user_data: i.user_data.as_ref().map(|u| u.value.clone()),
                ssh_keys: i
                    .ssh_keys
                    .iter()
                    .map(|k| k.value.trim().to_string())
                    .collect(),
                line: at(&i.name).0,
            });
        }
    }

    // DHCP: each DHCP network needs an agent, and its port the lowest
    // address nothing else holds.
    for net in networks.iter_mut().filter(|n| n.dhcp) {
        let Some(n) = raw.networks.iter().find(|n| n.name.value == net.name) else {
            continue;
        };
        let span = n.dhcp.as_ref().map_or(at(&n.name), at);
        if dhcp_agents.is_empty() {
            c.err_at(
                span.0,
                span.1,
                format!(
                    "network `{}`: DHCP is on (`dhcp: true` is the default) but no node runs the DHCP agent: \
                     add a network node or `dhcp_agents`, or set `dhcp: false`",
                    net.name
                ),
            );
            continue;
        }
        let free = net
            .cidr
            .hosts()
            .find(|ip| *ip != net.gateway && !used.contains_key(&(net.name.clone(), *ip)));
        match free {
            Some(ip) => {
                used.insert(
                    (net.name.clone(), ip),
                    format!("the DHCP port of `{}`", net.name),
                );
                net.dhcp_address = Some(ip);
            }
            None => c.err_at(
                span.0,
                span.1,
                format!(
                    "network `{}`: no address is left for its DHCP port",
                    net.name
                ),
            ),
        }
    }

    // Names derived from hashes: two equal ipsets would be one set where
    // the plan wants two. (Ports' devices and chains, and MACs, are
    // settled so that they differ: `identifiers`.)
    let mut hashed = Vec::new();
    for group in &security_groups {
        hashed.push(Hashed {
            scope: "the lab's ipsets".to_string(),
            what: "ipset",
            name: naming::ipset_name(lab, &group.name),
            owner: format!("security group `{}`", group.name),
            line: group.line,
            column: column_of(raw.security_groups.iter().map(|g| &g.name), &group.name),
        });
    }
    for (later, earlier) in collisions(&hashed) {
        c.err_at(later.line, later.column, collision_message(later, earlier));
    }

    let mut checks = check_checks(&mut c, &raw);
    // A DHCP check runs from an instance on a DHCP network, to its server.
    for check in checks
        .iter_mut()
        .filter(|k| k.protocol == CheckProtocol::Dhcp)
    {
        let server = instances
            .iter()
            .find(|i| i.name == check.from)
            .and_then(|i| networks.iter().find(|n| n.name == i.network))
            .and_then(|n| n.dhcp_address);
        match server {
            Some(ip) => check.to = CheckTarget::Address(ip),
            None => c.err_at(
                check.line,
                1,
                format!(
                    "check `{}`: a DHCP check runs from an instance on a network with `dhcp: true`",
                    check.name
                ),
            ),
        }
    }

    let l3_ha = l3_ha.map(|(l3_ha, network)| {
        networks.push(network);
        l3_ha
    });
    let mut topology = Topology {
        lab: raw.lab.value.clone(),
        source: source.to_string(),
        nodes,
        physical_networks,
        overlay,
        agent,
        dhcp_agents,
        networks,
        external_networks,
        external_hosts,
        physical_routers,
        routers,
        l3_ha,
        security_groups,
        instances,
        checks,
    };
    check_local_vlans(&mut c, &raw, &topology);
    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line, p.column));
        return Err(c.problems);
    }
    crate::identifiers::assign(&mut topology, &given_macs);
    Ok(topology)
}

/// The local VLAN ids a node's br-int can give its networks (1–4094, the
/// agent's `LocalVlanManager`).
const LOCAL_VLANS: usize = 4094;

/// A node has one local VLAN per network it has a port on (an instance's,
/// a router copy's interface or `ha-` port, a DHCP port): more networks
/// than ids cannot be planned.
fn check_local_vlans(c: &mut Checker, raw: &RawTopology, topo: &Topology) {
    let mut networks: HashMap<&str, HashSet<&str>> = HashMap::new();
    for i in &topo.instances {
        networks.entry(&i.node).or_default().insert(&i.network);
    }
    let ha_network = topo.l3_ha.as_ref().map(|h| h.network.as_str());
    for r in &topo.routers {
        let ha = r.ha.as_ref().and(ha_network);
        for node in &r.nodes {
            let on = networks.entry(node).or_default();
            on.extend(r.interfaces.iter().map(String::as_str).chain(ha));
        }
    }
    for n in topo.networks.iter().filter(|n| n.dhcp) {
        if let Some(node) = topo.dhcp_node(&n.name) {
            networks.entry(node).or_default().insert(&n.name);
        }
    }
    for node in &raw.nodes {
        let count = networks
            .get(node.name.value.as_str())
            .map_or(0, HashSet::len);
        if count > LOCAL_VLANS {
            c.err(
                &node.name,
                format!(
                    "node `{}`: it has ports on {count} networks, but its br-int has {LOCAL_VLANS} local VLAN ids",
                    node.name.value
                ),
            );
        }
    }
}

/// `agent:`: known tunnel types, and `arp_responder` only with
/// `l2_population` (the agent refuses it otherwise). Without
/// `tunnel_types`, the agents serve the tunnel types the networks use.
fn check_agent(c: &mut Checker, raw: &RawTopology) -> Agent {
    let default = RawAgent::default();
    let given = raw.agent.as_ref().map_or(&default, |a| &a.value);
    let mut agent = Agent {
        l2_population: given.l2_population.as_ref().is_some_and(|l| l.value),
        arp_responder: given.arp_responder.as_ref().is_some_and(|a| a.value),
        tunnel_types: Vec::new(),
    };
    for t in &given.tunnel_types {
        match tunnel_type(&t.value) {
            Some(kind) if !agent.tunnel_types.contains(&kind) => agent.tunnel_types.push(kind),
            Some(_) => c.err(
                t,
                format!("agent: tunnel type `{}` is listed twice", t.value),
            ),
            None => c.err(
                t,
                format!(
                    "agent: tunnel type `{}` is neither `vxlan` nor `gre`",
                    printable(&t.value)
                ),
            ),
        }
    }
    if given.tunnel_types.is_empty() {
        for n in &raw.networks {
            if let Some(kind) = n.network_type.as_ref().and_then(|t| tunnel_type(&t.value))
                && !agent.tunnel_types.contains(&kind)
            {
                agent.tunnel_types.push(kind);
            }
        }
    }
    if let Some(a) = given.arp_responder.as_ref().filter(|a| a.value)
        && !agent.l2_population
    {
        c.err(
            a,
            "agent: `arp_responder: true` needs `l2_population: true` (the responder's entries come from l2population)",
        );
    }
    if !agent.tunnel_types.is_empty()
        && raw.overlay.is_none()
        && let Some(a) = &raw.agent
    {
        c.err(
            a,
            "agent: tunnel types need an `overlay:` for the tunnels to run over",
        );
    }
    agent
}

fn tunnel_type(name: &str) -> Option<TunnelType> {
    match name {
        "vxlan" => Some(TunnelType::Vxlan),
        "gre" => Some(TunnelType::Gre),
        _ => None,
    }
}

/// A network's type and segment: a known type, a segment in its range and
/// not used by another network of the same kind, the physical network a
/// VLAN or flat network needs, the overlay a tunnel network needs.
fn check_network_type(
    c: &mut Checker,
    raw: &RawTopology,
    agent: &Agent,
    n: &RawNetwork,
    segments: &mut HashMap<(String, i64), String>,
) -> Option<NetworkType> {
    let name = &n.name.value;
    let type_name = n.network_type.as_ref().map_or("vlan", |t| t.value.as_str());
    let type_span = n.network_type.as_ref().map_or(&n.name, |t| t);
    let tunnel = tunnel_type(type_name);
    if !matches!(type_name, "vlan" | "flat") && tunnel.is_none() {
        c.err(
            type_span,
            format!(
                "network `{name}`: type `{}` is not one of vlan, flat, vxlan, gre",
                printable(type_name)
            ),
        );
        return None;
    }
    // Problems past the type are reported, and the network is still kept
    // (its segment clamped into range), so that what refers to it is
    // checked too.
    // The physical network: needed by VLAN and flat, meaningless for tunnels.
    match (&n.physical_network, tunnel) {
        (Some(p), Some(_)) => {
            c.err(
                p,
                format!("network `{name}`: a {type_name} network has no physical network"),
            );
        }
        (Some(p), None) => {
            if !raw
                .physical_networks
                .iter()
                .any(|q| q.name.value == p.value)
            {
                c.err(
                    p,
                    format!("network `{name}`: unknown physical network `{}`", p.value),
                );
            }
        }
        (None, None) => {
            c.err(
                &n.name,
                format!("network `{name}`: a {type_name} network needs `physical_network`"),
            );
        }
        (None, Some(_)) => {}
    }
    if tunnel.is_some() && raw.overlay.is_none() {
        c.err(
            type_span,
            format!("network `{name}`: a {type_name} network needs an `overlay:` for its tunnels"),
        );
    }
    if let Some(kind) = tunnel
        && !agent.tunnel_types.contains(&kind)
    {
        c.err(
            type_span,
            format!("network `{name}`: the agents' `tunnel_types` do not include {type_name}"),
        );
    }
    let physnet = n.physical_network.as_ref().map_or("", |p| p.value.as_str());
    // The segment: its range per type, unique per physical network (VLAN,
    // flat) or per tunnel type.
    let (range, scope, what) = match type_name {
        "vlan" => (1..=4094, format!("vlan:{physnet}"), "VLAN id"),
        "vxlan" => (1..=16_777_215, "vxlan".to_string(), "VNI"),
        "gre" => (1..=u32::MAX as i64, "gre".to_string(), "GRE key"),
        _ => (0..=0, format!("flat:{physnet}"), "flat network"),
    };
    let seg = match (&n.segmentation_id, type_name) {
        (Some(s), "flat") => {
            c.err(
                s,
                format!("network `{name}`: a flat network has no segmentation_id"),
            );
            0
        }
        (None, "flat") => 0,
        (None, _) => {
            c.err(
                &n.name,
                format!("network `{name}`: a {type_name} network needs `segmentation_id`"),
            );
            *range.start()
        }
        (Some(s), _) if !range.contains(&s.value) => {
            c.err(
                s,
                format!(
                    "network `{name}`: {what} {} is outside {}–{}",
                    s.value,
                    range.start(),
                    range.end()
                ),
            );
            s.value.clamp(*range.start(), *range.end())
        }
        (Some(s), _) => s.value,
    };
    let span = n.segmentation_id.as_ref().map_or(at(&n.name), at);
    if let Some(other) = segments.get(&(scope.clone(), seg)) {
        let message = if type_name == "flat" {
            format!(
                "network `{name}`: physical network `{physnet}` already carries flat network `{other}` (untagged frames would mix)"
            )
        } else if tunnel.is_some() {
            format!("network `{name}`: {what} {seg} is already used by network `{other}`")
        } else {
            format!(
                "network `{name}`: VLAN id {seg} is already used by network `{other}` on physical network `{physnet}`"
            )
        };
        c.err_at(span.0, span.1, message);
    } else {
        segments.insert((scope, seg), name.clone());
    }
    Some(match (type_name, tunnel) {
        (_, Some(kind)) => NetworkType::Tunnel(kind, seg as u32),
        ("flat", _) => NetworkType::Flat,
        _ => NetworkType::Vlan(seg as u16),
    })
}

/// The HA network (`l3_ha:`, all defaulted as Neutron defaults them) when
/// the lab has HA routers: its subnet apart from every other, its type
/// (the first tunnel type, else VLAN on the physical network) and a
/// segment no other network uses (the lowest free one by default); each
/// HA router gets the next VRID (1–254, as the L3 plugin allocates them
/// per HA network) and each of its copies the next address of the subnet.
fn check_l3_ha(
    c: &mut Checker,
    raw: &RawTopology,
    agent: &Agent,
    has_overlay: bool,
    routers: &mut [Router],
    subnets: &[(Ipv4Net, String, String)],
    segments: &HashMap<(String, i64), String>,
) -> Option<(L3Ha, Network)> {
    let first = raw
        .routers
        .iter()
        .find(|r| r.ha.as_ref().is_some_and(|h| h.value))?;
    let given = raw.l3_ha.as_ref().map(|g| &g.value);
    let line = raw.l3_ha.as_ref().map_or(at(&first.name), at);
    let what = "l3_ha";
    let cidr = match given.and_then(|g| g.cidr.as_ref()) {
        Some(s) => c.cidr(what, s)?,
        None => naming::L3_HA_NET_CIDR.parse().expect("a valid default"),
    };
    let cidr_at = given.and_then(|g| g.cidr.as_ref()).map_or(line, at);
    if cidr.prefix_len() > 29 {
        c.err_at(
            cidr_at.0,
            cidr_at.1,
            format!("{what}: the HA network's subnet {cidr} is too small (at most /29)"),
        );
        return None;
    }
    if let Some((other, kind, name)) = subnets
        .iter()
        .find(|(n, _, _)| n.contains(&cidr.network()) || cidr.contains(&n.network()))
    {
        c.err_at(
            cidr_at.0,
            cidr_at.1,
            format!(
                "{what}: the HA network's subnet {cidr} overlaps {kind} `{name}` ({other}); give `l3_ha: {{cidr: ...}}` another"
            ),
        );
        return None;
    }
    // Its type: the first tenant network type, as Neutron's default.
    let type_at = given.and_then(|g| g.network_type.as_ref()).map_or(line, at);
    let type_name = match given.and_then(|g| g.network_type.as_ref()) {
        Some(t) => t.value.clone(),
        None if has_overlay && !agent.tunnel_types.is_empty() => {
            agent.tunnel_types[0].name().to_string()
        }
        None => "vlan".to_string(),
    };
    let tunnel = tunnel_type(&type_name);
    let physnet = given
        .and_then(|g| g.physical_network.as_ref())
        .map(|p| p.value.clone())
        .or_else(|| raw.physical_networks.first().map(|p| p.name.value.clone()));
    let scope = match (type_name.as_str(), tunnel) {
        (_, Some(kind)) => {
            if !has_overlay || !agent.tunnel_types.contains(&kind) {
                c.err_at(
                    type_at.0,
                    type_at.1,
                    format!("{what}: a {type_name} HA network needs an `overlay:` and `{type_name}` among the agents' tunnel types"),
                );
                return None;
            }
            type_name.clone()
        }
        ("vlan" | "flat", None) => {
            let Some(physnet) = physnet
                .as_ref()
                .filter(|p| raw.physical_networks.iter().any(|q| &q.name.value == *p))
            else {
                c.err_at(
                    type_at.0,
                    type_at.1,
                    format!("{what}: a {type_name} HA network needs a physical network"),
                );
                return None;
            };
            format!("{type_name}:{physnet}")
        }
        _ => {
            c.err_at(
                type_at.0,
                type_at.1,
                format!(
                    "{what}: type `{}` is not one of vlan, flat, vxlan, gre",
                    printable(&type_name)
                ),
            );
            return None;
        }
    };
    let range: std::ops::RangeInclusive<i64> = match type_name.as_str() {
        "vlan" => 1..=4094,
        "vxlan" => 1..=16_777_215,
        "gre" => 1..=u32::MAX as i64,
        _ => 0..=0,
    };
    let seg = match given.and_then(|g| g.segmentation_id.as_ref()) {
        Some(s) if type_name == "flat" => {
            c.err(s, format!("{what}: a flat network has no segmentation_id"));
            return None;
        }
        Some(s) if !range.contains(&s.value) => {
            c.err(
                s,
                format!(
                    "{what}: segmentation_id {} is outside {}–{}",
                    s.value,
                    range.start(),
                    range.end()
                ),
            );
            return None;
        }
        Some(s) => s.value,
        None => range
            .clone()
            .find(|id| !segments.contains_key(&(scope.clone(), *id)))?,
    };
    if let Some(other) = segments.get(&(scope.clone(), seg)) {
        let seg_at = given
            .and_then(|g| g.segmentation_id.as_ref())
            .map_or(type_at, at);
        c.err_at(
            seg_at.0,
            seg_at.1,
            format!("{what}: the HA network's segment ({scope} {seg}) is already used by network `{other}`"),
        );
        return None;
    }
    // VRIDs, primary VIPs and the copies' addresses.
    let Some(vips) = crate::keepalived::primary_vip_range(cidr) else {
        c.err_at(
            cidr_at.0,
            cidr_at.1,
            format!("{what}: the HA network {cidr} leaves no /24 of 169.254.0.0/16 free for the routers' primary VIPs"),
        );
        return None;
    };
    let mut hosts = cidr.hosts();
    let mut vrid = 0u32;
    for (router, raw_router) in routers.iter_mut().zip(&raw.routers) {
        let Some(ha) = router.ha.as_mut() else {
            continue;
        };
        vrid += 1;
        if vrid > 254 {
            c.err(
                &raw_router.name,
                format!(
                    "router `{}`: no VRID is left on the HA network (VRIDs 1–254: at most 254 HA routers)",
                    router.name
                ),
            );
            return None;
        }
        ha.vrid = vrid as u8;
        ha.vip = Ipv4Net::new(
            Ipv4Addr::from(u32::from(vips.network()) + vrid),
            vips.prefix_len(),
        )
        .expect("valid prefix");
        for node in &router.nodes {
            let Some(address) = hosts.next() else {
                c.err(
                    &raw_router.name,
                    format!(
                        "router `{}`: the HA network {cidr} has no address left for its copy on `{node}`",
                        router.name
                    ),
                );
                return None;
            };
            ha.addresses.push((node.clone(), address));
        }
    }
    let name = naming::ha_network_name(&raw.lab.value);
    let network_type = match (type_name.as_str(), tunnel) {
        (_, Some(kind)) => NetworkType::Tunnel(kind, seg as u32),
        ("flat", _) => NetworkType::Flat,
        _ => NetworkType::Vlan(seg as u16),
    };
    Some((
        L3Ha {
            network: name.clone(),
            line: line.0,
        },
        Network {
            name,
            network_type,
            physical_network: tunnel.is_none().then_some(physnet).flatten(),
            cidr,
            gateway: cidr.network(),
            dhcp: false,
            dns_nameservers: Vec::new(),
            dhcp_address: None,
            dhcp_port: None,
            ha: true,
            line: line.0,
        },
    ))
}

/// `overlay:`: its subnet apart from every other, a switch name fit for an
/// interface, and each node's `local_ip` a distinct host address in it
/// (by default the subnet's hosts in node order).
fn check_overlay(
    c: &mut Checker,
    raw: &RawTopology,
    subnets: &mut Vec<(Ipv4Net, String, String)>,
) -> Option<Overlay> {
    let Some(o) = &raw.overlay else {
        for n in &raw.nodes {
            if let Some(ip) = &n.local_ip {
                c.err(
                    ip,
                    format!("node `{}`: `local_ip` needs an `overlay:`", n.name.value),
                );
            }
        }
        return None;
    };
    let name = o
        .name
        .as_ref()
        .map_or(DEFAULT_OVERLAY, |n| n.value.as_str());
    if let Some(n) = &o.name {
        check_ifname(c, "overlay", n, "the name of its switch bridge");
    }
    let cidr = c.cidr("overlay", &o.cidr)?;
    check_overlap(c, subnets, cidr, "overlay", name, &o.cidr);
    // Given endpoints first, so that a default one never takes theirs:
    // defaults are the subnet's hosts in node order, skipping those given.
    let given: Vec<Option<Ipv4Addr>> = raw
        .nodes
        .iter()
        .map(|n| {
            let s = n.local_ip.as_ref()?;
            c.host_address(&format!("node `{}` local_ip", n.name.value), s, &cidr, name)
        })
        .collect();
    let taken: HashSet<Ipv4Addr> = given.iter().flatten().copied().collect();
    let mut hosts = cidr.hosts().filter(|ip| !taken.contains(ip));
    let mut endpoints: Vec<(String, Ipv4Addr)> = Vec::new();
    let mut ok = true;
    for (n, given) in raw.nodes.iter().zip(given) {
        let ip = match &n.local_ip {
            Some(_) => given,
            None => {
                let next = hosts.next();
                if next.is_none() {
                    c.err(
                        &o.cidr,
                        format!(
                            "overlay: subnet {cidr} has no address left for node `{}`",
                            n.name.value
                        ),
                    );
                }
                next
            }
        };
        let Some(ip) = ip else {
            ok = false;
            continue;
        };
        if let Some((other, _)) = endpoints.iter().find(|(_, e)| *e == ip) {
            let span = n.local_ip.as_ref().unwrap_or(&n.name);
            c.err(
                span,
                format!(
                    "node `{}`: tunnel endpoint {ip} is already node `{other}`'s",
                    n.name.value
                ),
            );
            ok = false;
        }
        endpoints.push((n.name.value.clone(), ip));
    }
    ok.then(|| Overlay {
        name: name.to_string(),
        cidr,
        endpoints,
        line: at(&o.cidr).0,
    })
}

/// The `checks:` section: names unique, endpoints and nodes known.
fn check_checks(c: &mut Checker, raw: &RawTopology) -> Vec<Check> {
    let probes_from = |name: &str| {
        raw.instances.iter().any(|i| i.name.value == name)
            || raw.external_hosts.iter().any(|h| h.name.value == name)
            || raw.routers.iter().any(|r| r.name.value == name)
    };
    let is_node = |name: &str| {
        raw.nodes.iter().any(|n| n.name.value == name)
            || raw.physical_routers.iter().any(|r| r.name.value == name)
    };
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::new();
    for k in &raw.checks {
        let name = k.name.value.clone();
        let what = format!("check `{name}`");
        let mut ok = true;
        if name.chars().any(is_unsafe) {
            c.err(
                &k.name,
                format!("{what}: the name holds a control character"),
            );
            ok = false;
        }
        if let Some(line) = seen.insert(name.clone(), at(&k.name).0) {
            c.err(
                &k.name,
                format!("{what}: declared twice (first on line {line})"),
            );
            ok = false;
        }
        if !probes_from(&k.from.value) {
            c.err(
                &k.from,
                format!(
                    "{what}: from `{}` is not an instance, external host or router",
                    k.from.value
                ),
            );
            ok = false;
        }
        let dhcp = k.protocol.as_ref().is_some_and(|p| p.value == "dhcp");
        let to = match &k.to {
            // A DHCP check's destination is set once the networks are
            // known (its network's DHCP server).
            None if dhcp => CheckTarget::Address(Ipv4Addr::UNSPECIFIED),
            None => {
                c.err(&k.name, format!("{what}: no `to`"));
                ok = false;
                CheckTarget::Address(Ipv4Addr::UNSPECIFIED)
            }
            Some(t) => match t.value.parse::<Ipv4Addr>() {
                Ok(ip) => CheckTarget::Address(ip),
                Err(_) if probes_from(&t.value) => CheckTarget::Object(t.value.clone()),
                Err(_) => {
                    c.err(
                        t,
                        format!(
                            "{what}: to `{}` is neither an IPv4 address nor an instance, external host or router",
                            t.value
                        ),
                    );
                    ok = false;
                    CheckTarget::Address(Ipv4Addr::UNSPECIFIED)
                }
            },
        };
        let port = match &k.port {
            Some(p) if (1..=65535).contains(&p.value) => Some(p.value as u16),
            Some(p) => {
                c.err(p, format!("{what}: port {} is outside 1–65535", p.value));
                ok = false;
                None
            }
            None => None,
        };
        let protocol = match k.protocol.as_ref().map(|p| p.value.as_str()) {
            None | Some("icmp") => {
                if let Some(p) = &k.port {
                    c.err(p, format!("{what}: a port needs `protocol: tcp` or `http`"));
                    ok = false;
                }
                CheckProtocol::Icmp
            }
            Some("http") => CheckProtocol::Http(port.unwrap_or(80)),
            Some("dhcp") => {
                if let Some(p) = &k.port {
                    c.err(p, format!("{what}: a DHCP check takes no port"));
                    ok = false;
                }
                if let Some(t) = &k.to {
                    c.err(
                        t,
                        format!("{what}: a DHCP check goes to its network's DHCP server: no `to`"),
                    );
                    ok = false;
                }
                CheckProtocol::Dhcp
            }
            Some("tcp") => match port {
                Some(port) => CheckProtocol::Tcp(port),
                None => {
                    if k.port.is_none() {
                        c.err(&k.name, format!("{what}: `protocol: tcp` needs a `port`"));
                    }
                    ok = false;
                    CheckProtocol::Icmp
                }
            },
            Some(other) => {
                let span = k.protocol.as_ref().expect("matched Some");
                c.err(
                    span,
                    format!("{what}: protocol `{other}` is not one of icmp, tcp, http, dhcp"),
                );
                ok = false;
                CheckProtocol::Icmp
            }
        };
        let expect_success = match k.expect.as_ref().map(|e| e.value.as_str()) {
            None | Some("success") => true,
            Some("failure") => false,
            Some(other) => {
                let span = k.expect.as_ref().expect("matched Some");
                c.err(
                    span,
                    format!("{what}: expect `{other}` is neither `success` nor `failure`"),
                );
                ok = false;
                true
            }
        };
        for node in k.crosses.iter().chain(&k.avoids) {
            if !is_node(&node.value) {
                c.err(
                    node,
                    format!("{what}: unknown node or physical router `{}`", node.value),
                );
                ok = false;
            }
        }
        let wire_vlan = match &k.wire_vlan {
            Some(v) if (1..=4094).contains(&v.value) => Some(v.value as u16),
            Some(v) => {
                c.err(
                    v,
                    format!("{what}: wire_vlan {} is outside 1–4094", v.value),
                );
                ok = false;
                None
            }
            None => None,
        };
        let wire_vni = match &k.wire_vni {
            Some(v) if (1..=u32::MAX as i64).contains(&v.value) => Some(v.value as u32),
            Some(v) => {
                c.err(
                    v,
                    format!("{what}: wire_vni {} is outside 1–4294967295", v.value),
                );
                ok = false;
                None
            }
            None => None,
        };
        let arrives_from = match &k.arrives_from {
            Some(a) => {
                let ip = c.ipv4(&format!("{what}: arrives_from"), a);
                ok &= ip.is_some();
                ip
            }
            None => None,
        };
        let layer2 = k.layer2.as_ref().is_some_and(|l| l.value);
        if let Some(l) = k.layer2.as_ref().filter(|l| l.value) {
            let instance = |n: &str| raw.instances.iter().any(|i| i.name.value == n);
            if !instance(&k.from.value) || !matches!(&to, CheckTarget::Object(t) if instance(t)) {
                c.err(
                    l,
                    format!("{what}: `layer2: true` needs an instance on both ends"),
                );
                ok = false;
            }
            if protocol != CheckProtocol::Icmp {
                c.err(l, format!("{what}: `layer2: true` sends ICMP only"));
                ok = false;
            }
        }
        let path = match (&k.path, protocol) {
            (Some(p), CheckProtocol::Http(_)) => {
                let good = p.value.starts_with('/')
                    && p.value.len() <= 200
                    && p.value.chars().all(|c| c.is_ascii_graphic());
                if !good {
                    c.err(
                        p,
                        format!("{what}: path `{}` is not an absolute URL path", p.value),
                    );
                    ok = false;
                }
                Some(p.value.clone())
            }
            (Some(p), _) => {
                c.err(p, format!("{what}: a path needs `protocol: http`"));
                ok = false;
                None
            }
            (None, CheckProtocol::Http(_)) => Some("/latest/meta-data/instance-id".to_string()),
            (None, _) => None,
        };
        if ok {
            out.push(Check {
                layer2,
                path,
                name,
                from: k.from.value.clone(),
                to,
                protocol,
                expect_success,
                crosses: k.crosses.iter().map(|n| n.value.clone()).collect(),
                avoids: k.avoids.iter().map(|n| n.value.clone()).collect(),
                wire_vlan,
                wire_vni,
                arrives_from,
                line: at(&k.name).0,
            });
        }
    }
    out
}

fn check_overlap(
    c: &mut Checker,
    subnets: &mut Vec<(Ipv4Net, String, String)>,
    cidr: Ipv4Net,
    kind: &str,
    name: &str,
    span: &S<String>,
) {
    if let Some((other, other_kind, other_name)) = subnets
        .iter()
        .find(|(n, _, _)| n.contains(&cidr.network()) || cidr.contains(&n.network()))
    {
        c.err(
            span,
            format!(
                "{kind} `{name}`: subnet {cidr} overlaps {other_kind} `{other_name}` ({other})"
            ),
        );
    } else {
        subnets.push((cidr, kind.to_string(), name.to_string()));
    }
}

fn check_rule(
    c: &mut Checker,
    group: &str,
    s: &S<RawRule>,
    groups: &[RawSecurityGroup],
) -> Option<SecurityGroupRule> {
    let r = &s.value;
    let what = format!("security group `{group}` rule");
    let direction = match r.direction.value.as_str() {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        other => {
            c.err(
                &r.direction,
                format!("{what}: direction `{other}` is neither `ingress` nor `egress`"),
            );
            return None;
        }
    };
    if let Some(e) = &r.ethertype
        && e.value != "IPv4"
    {
        c.err(
            e,
            format!(
                "{what}: ethertype `{}` is not supported (only IPv4)",
                e.value
            ),
        );
        return None;
    }
    let protocol = match r.protocol.as_ref().map(|p| (p, p.value.as_str())) {
        None => None,
        Some((_, "icmp")) => Some(Protocol::Icmp),
        Some((_, "tcp")) => Some(Protocol::Tcp),
        Some((_, "udp")) => Some(Protocol::Udp),
        Some((p, other)) => {
            c.err(
                p,
                format!("{what}: protocol `{other}` is not one of icmp, tcp, udp"),
            );
            return None;
        }
    };
    let port_range = match (&r.port_range_min, &r.port_range_max) {
        (None, None) => None,
        (min, max) => {
            let span = min.as_ref().or(max.as_ref()).expect("one is set");
            if !matches!(protocol, Some(Protocol::Tcp | Protocol::Udp)) {
                c.err(
                    span,
                    format!("{what}: a port range needs protocol tcp or udp"),
                );
                return None;
            }
            let lo = min.as_ref().map_or(1, |m| m.value);
            let hi = max.as_ref().map_or(65535, |m| m.value);
            if !(1..=65535).contains(&lo) || !(1..=65535).contains(&hi) || lo > hi {
                c.err(
                    span,
                    format!("{what}: port range {lo}–{hi} is not within 1–65535 in order"),
                );
                return None;
            }
            Some((lo as u16, hi as u16))
        }
    };
    let remote = match (&r.remote_ip_prefix, &r.remote_group) {
        (Some(p), Some(_)) => {
            c.err(
                p,
                format!("{what}: set remote_ip_prefix or remote_group, not both"),
            );
            return None;
        }
        (Some(p), None) => Some(Remote::Cidr(c.cidr(&what, p)?)),
        (None, Some(g)) => {
            if !groups.iter().any(|sg| sg.name.value == g.value) {
                c.err(g, format!("{what}: unknown remote group `{}`", g.value));
                return None;
            }
            Some(Remote::Group(g.value.clone()))
        }
        (None, None) => None,
    };
    Some(SecurityGroupRule {
        direction,
        protocol,
        port_range,
        remote,
        line: at(s).0,
    })
}

#[cfg(test)]
mod name_rule_tests {
    use super::*;

    fn hashed(scope: &str, name: &str, owner: &str, line: u32) -> Hashed {
        Hashed {
            scope: scope.to_string(),
            what: "device",
            name: name.to_string(),
            owner: owner.to_string(),
            line,
            column: 5,
        }
    }

    #[test]
    fn equal_hashed_names_in_one_scope_collide_once_per_pair() {
        let names = [
            hashed("seed.compute1", "tap6a964ee8-78", "instance `a`", 10),
            hashed("seed.compute1", "qvo6a964ee8-78", "instance `a`", 10),
            hashed("seed.compute2", "tap6a964ee8-78", "instance `c`", 20),
            hashed("seed.compute1", "tap6a964ee8-78", "instance `b`", 30),
            hashed("seed.compute1", "qvo6a964ee8-78", "instance `b`", 30),
        ];
        let found = collisions(&names);
        assert_eq!(found, vec![(&names[3], &names[0])]);
        let message = collision_message(found[0].0, found[0].1);
        assert_eq!(
            message,
            "instance `b`: its device tap6a964ee8-78 in seed.compute1 would be the same as \
             instance `a`'s (line 10): both are derived from UUIDs that begin alike; rename one of them"
        );
        assert!(collisions(&names[..3]).is_empty());
    }

    #[test]
    fn names_from_outside_are_held_to_the_file_rule() {
        assert_eq!(lab_name_problem("seed"), None);
        assert_eq!(object_name_problem("compute-1_a"), None);
        for bad in [
            "",
            "..",
            "/var/tmp/x",
            "a/b",
            "1lab",
            "a.b",
            "x\u{1b}[2J",
            &"a".repeat(64),
        ] {
            assert!(lab_name_problem(bad).is_some(), "{bad:?} passed");
            assert!(object_name_problem(bad).is_some(), "{bad:?} passed");
        }
        let shown = lab_name_problem("x\u{1b}[2J").unwrap();
        assert!(
            !shown.contains('\u{1b}'),
            "the escape reached the message: {shown}"
        );
    }
}
