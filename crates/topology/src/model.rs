//! The validated topology: what the rest of ovslab plans from.
//!
//! Every object keeps the line it was declared on, so that later errors can
//! still point into the file.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;
use uuid::Uuid;

/// A whole lab, validated: names are unique, references resolve, addresses
/// fit their subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The lab's name; every namespace of the lab starts with it.
    pub lab: String,
    /// Where the topology came from (a path, or the compiled-in seed).
    pub source: String,
    pub nodes: Vec<Node>,
    pub physical_networks: Vec<PhysicalNetwork>,
    /// The network the nodes' tunnels run over, when the lab has tunnel
    /// (VXLAN, GRE) networks.
    pub overlay: Option<Overlay>,
    /// The OVS agent's options (`openvswitch_agent.ini`), the same on
    /// every node.
    pub agent: Agent,
    /// The nodes that run the DHCP agent, each network's served by one of
    /// them (Neutron's `dhcp_agents_per_network = 1`).
    pub dhcp_agents: Vec<String>,
    pub networks: Vec<Network>,
    pub external_networks: Vec<ExternalNetwork>,
    pub external_hosts: Vec<ExternalHost>,
    /// Routers outside OpenStack: the provider networks' gateways.
    pub physical_routers: Vec<PhysicalRouter>,
    pub routers: Vec<Router>,
    /// The HA network, when the lab has HA routers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l3_ha: Option<L3Ha>,
    pub security_groups: Vec<SecurityGroup>,
    pub instances: Vec<Instance>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Hosts routers (the L3 agent) and the external bridge.
    Network,
    /// Hosts instances.
    Compute,
}

/// A Neutron host: one network namespace with its own Open vSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub role: NodeRole,
    pub line: u32,
}

/// A provider network: a VLAN "switch" (a Linux bridge in its own namespace)
/// joining every node's `eth1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalNetwork {
    pub name: String,
    pub line: u32,
}

/// The overlay network (the Networking Guide's "overlay" interface): a
/// switch (a Linux bridge in its own namespace) joining every node's
/// [`OVERLAY_UPLINK`](crate::naming::OVERLAY_UPLINK). Each node's tunnel
/// endpoint address (the agent's `local_ip`) is in `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    pub name: String,
    pub cidr: Ipv4Net,
    /// Each node's tunnel endpoint, in node order.
    pub endpoints: Vec<(String, Ipv4Addr)>,
    pub line: u32,
}

impl Overlay {
    /// The tunnel endpoint address of `node`.
    pub fn endpoint(&self, node: &str) -> Option<Ipv4Addr> {
        self.endpoints
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, ip)| *ip)
    }
}

/// `[agent]` of `openvswitch_agent.ini`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// The tunnel types the agents serve (`tunnel_types`).
    pub tunnel_types: Vec<TunnelType>,
    /// `l2_population`: tunnels only towards nodes with ports on a network,
    /// and unicast flows per remote port.
    pub l2_population: bool,
    /// `arp_responder`: br-tun answers ARP for remote ports (needs
    /// `l2_population`).
    pub arp_responder: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    Vxlan,
    Gre,
}

impl TunnelType {
    /// `vxlan`, `gre`: the OVS interface type and the tunnel port prefix.
    pub fn name(self) -> &'static str {
        match self {
            TunnelType::Vxlan => "vxlan",
            TunnelType::Gre => "gre",
        }
    }

    /// The br-tun table a tunnel's frames go to (`GRE_TUN_TO_LV` 3,
    /// `VXLAN_TUN_TO_LV` 4).
    pub fn table(self) -> u8 {
        match self {
            TunnelType::Vxlan => 4,
            TunnelType::Gre => 3,
        }
    }

    /// Bytes the encapsulation adds (outer Ethernet, IPv4, UDP + VXLAN or
    /// GRE with a key): the instance MTU is 1500 less this.
    pub fn overhead(self) -> u32 {
        match self {
            TunnelType::Vxlan => 50,
            TunnelType::Gre => 42,
        }
    }
}

/// A network's type (ML2 `provider:network_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "segmentation_id")]
pub enum NetworkType {
    /// Tagged with this VLAN id on its physical network.
    Vlan(u16),
    /// Untagged on its physical network.
    Flat,
    /// Carried in tunnels with this key (VNI, GRE key).
    Tunnel(TunnelType, u32),
}

/// A project or provider network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub name: String,
    pub network_type: NetworkType,
    /// For VLAN and flat networks.
    pub physical_network: Option<String>,
    pub cidr: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Neutron's `enable_dhcp`: instances get their address from dnsmasq.
    pub dhcp: bool,
    /// The DNS servers DHCP hands out (`dns_nameservers`).
    pub dns_nameservers: Vec<Ipv4Addr>,
    /// The DHCP port's address (the lowest free one), when `dhcp`.
    pub dhcp_address: Option<Ipv4Addr>,
    /// The DHCP port's identifiers, when `dhcp`.
    pub dhcp_port: Option<PortIds>,
    /// The HA network: only HA routers' `ha-` ports are on it, and it has
    /// no gateway (`gateway` is its network address, never routed to).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ha: bool,
    pub line: u32,
}

impl Network {
    /// The VLAN id on the physical wire, or the tunnel key; none when flat.
    pub fn segmentation_id(&self) -> Option<u32> {
        match self.network_type {
            NetworkType::Vlan(id) => Some(id.into()),
            NetworkType::Flat => None,
            NetworkType::Tunnel(_, key) => Some(key),
        }
    }

    /// The tunnel type, for a tunnel network.
    pub fn tunnel(&self) -> Option<TunnelType> {
        match self.network_type {
            NetworkType::Tunnel(t, _) => Some(t),
            _ => None,
        }
    }

    /// The MTU of the network's ports: 1500, less the encapsulation for a
    /// tunnel network (Neutron's `path_mtu` minus overhead).
    pub fn mtu(&self) -> u32 {
        1500 - self.tunnel().map_or(0, TunnelType::overhead)
    }

    /// ML2's name of the type: `vlan`, `flat`, `vxlan`, `gre`.
    pub fn type_name(&self) -> &'static str {
        match self.network_type {
            NetworkType::Vlan(_) => "vlan",
            NetworkType::Flat => "flat",
            NetworkType::Tunnel(t, _) => t.name(),
        }
    }
}

/// The external (provider, flat) network behind the network node's `br-ex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalNetwork {
    pub name: String,
    pub cidr: Ipv4Net,
    /// The upstream gateway routers send their default route to.
    pub gateway: Ipv4Addr,
    /// The floating IP range `(start, end)`, when the network has one.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub line: u32,
}

/// A host on an external network (a namespace), e.g. the seed's `internet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalHost {
    pub name: String,
    pub network: String,
    pub address: Ipv4Addr,
    /// Its NIC's MAC, derived ([`identifiers`](crate::identifiers)).
    pub mac: [u8; 6],
    pub line: u32,
}

/// A router outside OpenStack, as the Networking Guide's provider scenario
/// has one: the gateway of provider (flat, VLAN) networks, routing between
/// them and an external network. A namespace with IP forwarding; its
/// provider interfaces sit on an Open vSwitch of its own whose trunk port
/// `eth1` joins the physical network (the kernel here has no 802.1Q
/// driver to make `eth1.101` from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalRouter {
    pub name: String,
    /// Provider networks first, then the external network, if any.
    pub interfaces: Vec<PhysicalInterface>,
    pub line: u32,
}

/// A physical router's interface on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalInterface {
    pub network: String,
    pub address: Ipv4Addr,
    /// Derived ([`identifiers`](crate::identifiers)).
    pub mac: [u8; 6],
}

impl PhysicalRouter {
    /// Whether it has an interface on a provider network (and so a trunk
    /// to the physical network, and an Open vSwitch).
    pub fn on_physical_network(&self, topo: &Topology) -> bool {
        self.interfaces
            .iter()
            .any(|i| topo.network(&i.network).is_some())
    }
}

/// A Neutron router: legacy (centralised, on one network node) or HA (a
/// copy on each of several network nodes, one of them active, elected by
/// keepalived over the HA network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    pub name: String,
    /// The network nodes with a copy: one for a legacy router. For an HA
    /// router, in the file's order; [`Topology::hosting`] puts the active
    /// copy's node first where the daemon knows it.
    pub nodes: Vec<String>,
    /// Its VRRP side, for an HA router.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaRouter>,
    /// Project networks with a `qr-` port holding the network's gateway address.
    pub interfaces: Vec<String>,
    pub external_gateway: Option<NetworkAddress>,
    pub snat: bool,
    /// The `qr-` port on each of `interfaces`, in the same order.
    pub interface_ports: Vec<PortIds>,
    /// The `qg-` port, with `external_gateway`.
    pub gateway_port: Option<PortIds>,
    pub line: u32,
}

impl Router {
    /// Its `qr-` port on `network`.
    pub fn port_on(&self, network: &str) -> Option<PortIds> {
        self.interfaces
            .iter()
            .position(|n| n == network)
            .map(|i| self.interface_ports[i])
    }

    /// The node its traffic crosses: a legacy router's only node; for an
    /// HA router, the first of `nodes` (the active copy's, in a topology
    /// the daemon ordered with [`Topology::hosting`]).
    pub fn node(&self) -> &str {
        &self.nodes[0]
    }
}

/// An HA router's VRRP instance (`VR_<vrid>`), the primary VIP the master
/// holds on its `ha-` port, and each copy's own address on the HA
/// network, by node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaRouter {
    pub vrid: u8,
    /// `169.254.0.<vrid>/24` with the default HA network (see
    /// [`crate::keepalived::primary_vip_range`]).
    pub vip: Ipv4Net,
    pub addresses: Vec<(String, Ipv4Addr)>,
    /// Each copy's `ha-` port, by node; derived
    /// ([`identifiers`](crate::identifiers)).
    pub ports: Vec<(String, PortIds)>,
}

impl HaRouter {
    /// The copy's own address on the HA network.
    pub fn address_on(&self, node: &str) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, a)| *a)
    }

    /// The copy's `ha-` port.
    pub fn port_on(&self, node: &str) -> Option<PortIds> {
        self.ports.iter().find(|(n, _)| n == node).map(|(_, p)| *p)
    }
}

/// The HA network: the one network every HA router's copies talk VRRP
/// over (Neutron's "HA network tenant …"), in `networks` under
/// [`L3Ha::network`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L3Ha {
    pub network: String,
    pub line: u32,
}

/// What names a Neutron port: its UUID (whose first characters name its
/// devices and firewall chains) and its MAC. Derived from the lab's and
/// the object's names, and resolved so that no two ports of a lab share
/// either ([`identifiers`](crate::identifiers)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortIds {
    pub uuid: Uuid,
    pub mac: [u8; 6],
}

/// An address on a network: a router's gateway port, a physical router's
/// interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAddress {
    pub network: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroup {
    pub name: String,
    pub rules: Vec<SecurityGroupRule>,
    pub line: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Icmp,
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    Cidr(Ipv4Net),
    Group(String),
}

/// One rule of a security group (ethertype IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroupRule {
    pub direction: Direction,
    pub protocol: Option<Protocol>,
    /// Inclusive port range, for TCP and UDP.
    pub port_range: Option<(u16, u16)>,
    pub remote: Option<Remote>,
    pub line: u32,
}

/// A Nova instance: a namespace with one NIC, plugged the hybrid way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub name: String,
    pub node: String,
    pub network: String,
    pub address: Ipv4Addr,
    /// Its NIC's Neutron port (`iface-id`), which names its hybrid plug's
    /// devices; derived ([`identifiers`](crate::identifiers)).
    pub port: Uuid,
    /// Given in the file, or `fa:16:3e:…` derived from the port UUID.
    pub mac: [u8; 6],
    pub floating_ip: Option<Ipv4Addr>,
    pub security_groups: Vec<String>,
    /// The metadata service's `user-data` for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Its public keys (`public-keys`), one OpenSSH key per entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    pub line: u32,
}

impl Instance {
    /// Its hybrid plug's devices, named after its port.
    pub fn plug(&self) -> crate::naming::HybridPlug {
        crate::naming::HybridPlug::new(self.port)
    }
}

/// A connectivity expectation `ovslab check` verifies with a real probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    /// An instance, external host or router, by name.
    pub from: String,
    pub to: CheckTarget,
    pub protocol: CheckProtocol,
    /// Whether the probe must get through (`true`) or must not.
    pub expect_success: bool,
    /// Nodes whose physical uplink (`eth1`) the probe must cross.
    pub crosses: Vec<String>,
    /// Nodes whose physical uplink the probe must not cross.
    pub avoids: Vec<String>,
    /// The VLAN id the probe must carry wherever it crosses a physical uplink.
    pub wire_vlan: Option<u16>,
    /// The tunnel key (VXLAN VNI, GRE key) the probe must carry wherever it
    /// crosses an overlay uplink.
    pub wire_vni: Option<u32>,
    /// The source address the probe must arrive with at its destination.
    pub arrives_from: Option<Ipv4Addr>,
    /// Send the probe as a raw frame straight to the destination
    /// instance's MAC, bypassing routing: proves (or refutes) layer-2
    /// reachability, e.g. that two networks are isolated.
    pub layer2: bool,
    /// What an HTTP check asks for (`/latest/meta-data/instance-id` unless
    /// the file says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckTarget {
    /// An instance, external host or router of the topology.
    Object(String),
    Address(Ipv4Addr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckProtocol {
    Icmp,
    Tcp(u16),
    /// An HTTP `GET` of the check's `path` to this port: success is an
    /// answer `200 OK` (e.g. the metadata service).
    Http(u16),
    /// A DHCP exchange from the source instance's NIC (DISCOVER to ACK);
    /// success is the ACK of its reservation.
    Dhcp,
}

impl Topology {
    /// A lab with nothing in it: what a daemon knows of a lab whose saved
    /// topology it cannot read (it can still take the lab down).
    pub fn empty(lab: &str, source: &str) -> Self {
        Topology {
            lab: lab.to_string(),
            source: source.to_string(),
            nodes: Vec::new(),
            physical_networks: Vec::new(),
            overlay: None,
            agent: Agent::default(),
            dhcp_agents: Vec::new(),
            networks: Vec::new(),
            external_networks: Vec::new(),
            external_hosts: Vec::new(),
            physical_routers: Vec::new(),
            routers: Vec::new(),
            l3_ha: None,
            security_groups: Vec::new(),
            instances: Vec::new(),
            checks: Vec::new(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The node whose DHCP agent serves `network`: the DHCP networks are
    /// spread over the DHCP agents in turn, in file order.
    pub fn dhcp_node(&self, network: &str) -> Option<&str> {
        if self.dhcp_agents.is_empty() {
            return None;
        }
        let index = self
            .networks
            .iter()
            .filter(|n| n.dhcp)
            .position(|n| n.name == network)?;
        Some(&self.dhcp_agents[index % self.dhcp_agents.len()])
    }

    pub fn physical_router(&self, name: &str) -> Option<&PhysicalRouter> {
        self.physical_routers.iter().find(|r| r.name == name)
    }

    /// Everything that runs an Open vSwitch of its own, in plan order:
    /// every node, then each physical router on the physical network.
    pub fn switch_hosts(&self) -> impl Iterator<Item = &str> + '_ {
        self.nodes.iter().map(|n| n.name.as_str()).chain(
            self.physical_routers
                .iter()
                .filter(|r| r.on_physical_network(self))
                .map(|r| r.name.as_str()),
        )
    }

    pub fn router(&self, name: &str) -> Option<&Router> {
        self.routers.iter().find(|r| r.name == name)
    }

    /// This topology with each HA router's `nodes` put in hosting order:
    /// the node `active` names first (the copy keepalived made master),
    /// so that [`Router::node`] is where its traffic goes.
    pub fn hosting(&self, active: &std::collections::BTreeMap<String, String>) -> Topology {
        let mut topo = self.clone();
        for router in topo.routers.iter_mut().filter(|r| r.ha.is_some()) {
            if let Some(i) = active
                .get(&router.name)
                .and_then(|node| router.nodes.iter().position(|n| n == node))
            {
                router.nodes[..=i].rotate_right(1);
            }
        }
        topo
    }

    pub fn external_network(&self, name: &str) -> Option<&ExternalNetwork> {
        self.external_networks.iter().find(|n| n.name == name)
    }

    pub fn instance(&self, name: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// Instances placed on `node`, in file order.
    pub fn instances_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.node == node)
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
