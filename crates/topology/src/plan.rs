//! Planning: a [`Topology`] becomes the [`DesiredState`] — every namespace,
//! link, address, route, sysctl, Open vSwitch row and flow — as pure data.
//!
//! The reconciler diffs this against what exists and applies the difference.
//! Ports and flows refer to OVS ports by name; the reconciler resolves names
//! to OpenFlow port numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::dhcp::{self, DhcpClientSpec, DhcpPort, DhcpServerSpec};
use crate::keepalived::{HaPort, KeepalivedSpec};
use crate::model::*;
use crate::naming::{self, *};

/// Everything a lab consists of, in the order it is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub lab: String,
    /// Carried by every flow of the lab.
    pub cookie: u64,
    /// All namespaces of the lab; a veth's peer namespace always exists
    /// before links are configured, because namespaces are created first.
    pub namespaces: Vec<NamespaceSpec>,
    /// One Open vSwitch per node.
    pub switches: Vec<SwitchSpec>,
    /// Legacy routers: their NAT, applied in their namespace.
    pub routers: Vec<RouterSpec>,
    /// The hybrid iptables firewall of each compute node.
    pub firewalls: Vec<FirewallSpec>,
    /// dnsmasq of each DHCP network, in its qdhcp namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcp_servers: Vec<DhcpServerSpec>,
    /// The DHCP client of each instance on a DHCP network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcp_clients: Vec<DhcpClientSpec>,
    /// Where the metadata service answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<crate::metadata::MetadataSpec>,
    /// keepalived of each HA router copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keepalived: Vec<KeepalivedSpec>,
}

/// A legacy router's NAT as the L3 agent writes it (`neutron-l3-agent-*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RouterSpec {
    pub router: String,
    pub namespace: String,
    /// The `qg-…` device, on the external network.
    pub qg: String,
    /// The router's address on the external network.
    pub gateway_ip: Option<Ipv4Addr>,
    pub snat: bool,
    /// `(fixed, floating)`.
    pub floating_ips: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Subnets of the router's project networks.
    pub internal_cidrs: Vec<Ipv4Net>,
}

/// The security groups of a compute node's instances, as the hybrid
/// iptables driver writes them on the node (`neutron-openvswi-*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FirewallSpec {
    pub node: String,
    pub namespace: String,
    pub ports: Vec<FirewallPort>,
    /// The sets of the remote groups the node's rules refer to.
    pub ipsets: Vec<IpSetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FirewallPort {
    pub instance: String,
    /// The `tap…` device on `qbr…` (physdev matches name it).
    pub tap: String,
    pub qvb: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// Conntrack zone: the port's own, 1, 2, … in the node's instance
    /// order (Liberty 7.x `get_device_zone`, on a fresh node).
    pub zone: u16,
    pub rules: Vec<FirewallRule>,
    /// The addresses of its network's DHCP servers, whose answers the
    /// ingress chain lets in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dhcp_servers: Vec<Ipv4Addr>,
}

/// One security-group rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FirewallRule {
    pub direction: Direction,
    pub protocol: Option<Protocol>,
    pub port_range: Option<(u16, u16)>,
    /// `None`: any source/destination.
    pub remote: Option<FirewallRemote>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallRemote {
    /// A remote IP prefix.
    Prefix(Ipv4Net),
    /// A remote security group, matched through the node's ipset for it.
    #[serde(rename = "ipset")]
    IpSet(String),
}

/// A remote group's ipset on a compute node: the addresses of the group's
/// members, lab-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct IpSetSpec {
    /// `NIPv4` + the group's UUID, cut to ipset's 31 characters.
    pub name: String,
    pub group: String,
    pub members: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceKind {
    Node,
    Instance,
    PhysicalNetwork,
    Overlay,
    ExternalNetwork,
    ExternalHost,
    Router,
    PhysicalRouter,
    /// A network's DHCP server (`qdhcp-<network uuid>`).
    Dhcp,
}

/// One named network namespace and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NamespaceSpec {
    /// The namespace's name under `/run/netns`.
    pub name: String,
    /// The topology object it stands for (node, instance, …).
    pub object: String,
    pub kind: NamespaceKind,
    /// Written before any link is created (`net/ipv6/conf/all/disable_ipv6`).
    pub sysctls: Vec<(String, String)>,
    /// Linux bridges (STP off, forward delay 0).
    pub bridges: Vec<String>,
    /// veth pairs created from this namespace.
    pub veths: Vec<VethSpec>,
    /// Internal ports of Open vSwitch bridges (tap devices `ovs-vswitchd`
    /// makes): configured by `links`, never created or deleted by the
    /// links phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ovs_internal: Vec<String>,
    /// Configuration of every link that lives here.
    pub links: Vec<LinkSpec>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct VethSpec {
    pub name: String,
    pub peer: String,
    /// Where the peer end lives (may be this namespace).
    pub peer_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LinkSpec {
    pub name: String,
    /// Linux bridge this link is a port of.
    pub master: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// Addresses with their prefix length (`192.168.1.11/24`).
    pub addresses: Vec<Ipv4Net>,
    /// TX checksum offload (and with it TSO): `Some(true)` on every veth
    /// end. The userspace datapath runs with userspace TSO, so it reads and
    /// writes veths with virtio-net headers and carries partial checksums and
    /// TSO frames across; `None` where it does not matter. Off on the
    /// ends that send into a tunnel network: the netdev datapath drops
    /// offloaded TCP it would have to encapsulate.
    pub tx_checksum: Option<bool>,
    /// The MTU, where it is not the default 1500 (ports of a tunnel
    /// network: 1500 less the encapsulation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Someone else sets addresses on it too: the converge adds
    /// `addresses` and deletes none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses_also_by: Option<AddressSetter>,
    /// IPv6 makes no addresses on it (`addrgenmode none`, set before it
    /// goes up): how IPv6 is kept quiet in namespaces that set no
    /// sysctls, instances (docs/design.md, "IPv6 is kept quiet").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_ipv6: bool,
    /// Promiscuous (nova's `_create_veth_pair` sets `qvb`/`qvo` so).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub promisc: bool,
    /// Wanted down: a lab switch's port towards a node failed on purpose
    /// (`ovslab node fail`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

/// Who besides the converge sets a link's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSetter {
    /// An instance's DHCP client: all of them (its lease).
    DhcpClient,
    /// An HA router copy's keepalived: the router's addresses, on the
    /// master only.
    Keepalived,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RouteSpec {
    /// `0.0.0.0/0` for the default route.
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A node's Open vSwitch: bridges, ports and flows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SwitchSpec {
    pub node: String,
    pub namespace: String,
    pub bridges: Vec<OvsBridge>,
    pub flows: Vec<FlowSpec>,
    /// Node-local VLAN id of each network present on the node.
    pub local_vlans: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct OvsBridge {
    pub name: String,
    /// Every port but the bridge's own internal port, which always exists.
    pub ports: Vec<OvsPort>,
    /// The cookie of its flows: its node's OVS agent's on the bridges the
    /// agent manages (each agent has its own), the lab's on the bridges
    /// ovslab adds for itself (`br-overlay`, a physical router's
    /// `br-eth1`), 0 on `br-ex`, whose one flow is Open vSwitch's own.
    pub cookie: u64,
    /// `fail_mode` unset (standalone), as an operator's `ovs-vsctl
    /// add-br br-ex` leaves it: Open vSwitch adds the `NORMAL` flow itself.
    /// Every other bridge is `fail_mode=secure`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub standalone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct OvsPort {
    pub name: String,
    /// Access VLAN (the node-local tag) for instance ports.
    pub tag: Option<u16>,
    /// `type=patch, options:peer=<peer>` when set; a system port otherwise.
    pub patch_peer: Option<String>,
    /// A tunnel port (`type=vxlan|gre` and the agent's options).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelInterface>,
    /// An internal port (`type=internal`): a device `ovs-vswitchd` makes
    /// in the namespace, for the kernel to send and receive on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Interface `external_ids`, as Nova/os-vif write them.
    pub interface_external_ids: BTreeMap<String, String>,
    /// Port `other_config`, as the OVS agent writes it (`net_uuid`, `tag`…).
    pub port_other_config: BTreeMap<String, String>,
}

/// A tunnel port as the agent adds it (`ovs_lib.add_tunnel_port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TunnelInterface {
    pub kind: TunnelType,
    pub remote_ip: Ipv4Addr,
    pub local_ip: Ipv4Addr,
}

impl OvsPort {
    /// The interface's `type`: "" for a system port.
    pub fn interface_type(&self) -> &'static str {
        match (&self.patch_peer, &self.tunnel) {
            (Some(_), _) => "patch",
            (None, Some(t)) => t.kind.name(),
            (None, None) if self.internal => "internal",
            (None, None) => "",
        }
    }

    /// The interface's `options`.
    pub fn interface_options(&self) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        if let Some(peer) = &self.patch_peer {
            options.insert("peer".into(), peer.clone());
        } else if let Some(t) = &self.tunnel {
            for (k, v) in [
                ("df_default", "true".to_string()),
                ("in_key", "flow".to_string()),
                ("local_ip", t.local_ip.to_string()),
                ("out_key", "flow".to_string()),
                ("remote_ip", t.remote_ip.to_string()),
            ] {
                options.insert(k.to_string(), v);
            }
        }
        options
    }
}

/// One flow, with ports named rather than numbered. Unset matches are
/// wildcards; `FlowSpec::default()` is a table-0, priority-0 drop on no
/// bridge, to be filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FlowSpec {
    pub bridge: String,
    pub table: u8,
    pub priority: u16,
    pub in_port: Option<String>,
    /// The frame's VLAN: a tag, or none at all (`vlan_tci=0x0000`).
    pub dl_vlan: Option<VlanMatch>,
    /// The destination MAC, exactly or by its multicast bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dl_dst: Option<MacMatch>,
    /// The tunnel key the frame arrived with (VXLAN VNI, GRE key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tun_id: Option<u32>,
    /// Matches ARP only (`arp` in ovs-ofctl).
    pub arp: bool,
    /// ARP sender address (`arp_spa`), with `arp`.
    pub arp_spa: Option<Ipv4Addr>,
    /// ARP target address (`arp_tpa`), with `arp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp_tpa: Option<Ipv4Addr>,
    /// The source MAC (`dl_src`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dl_src: Option<[u8; 6]>,
    /// Matches ICMPv6 neighbour advertisements only
    /// (`icmp6,icmp_type=136`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub neighbor_advert: bool,
    /// The advertised target (`nd_target`), with `neighbor_advert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nd_target: Option<std::net::Ipv6Addr>,
    pub actions: Vec<FlowAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VlanMatch {
    /// `dl_vlan=<id>`: tagged with this id.
    Id(u16),
    /// `vlan_tci=0x0000`: no tag (a flat network's frames).
    Untagged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MacMatch {
    /// `dl_dst=<mac>`.
    Exact([u8; 6]),
    /// `dl_dst=00:00:00:00:00:00/01:00:00:00:00:00`.
    Unicast,
    /// `dl_dst=01:00:00:00:00:00/01:00:00:00:00:00` (broadcast too).
    Multicast,
}

/// A header field an action copies from or to (`move:` in ovs-ofctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveField {
    EthSrc,
    EthDst,
    ArpSha,
    ArpTha,
    ArpSpa,
    ArpTpa,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    /// `mod_vlan_vid:<id>` on a tagged frame (OpenFlow 1.3
    /// `set_field:vlan_vid`).
    ModVlanVid(u16),
    /// `push_vlan:0x8100`: before a `ModVlanVid` on an untagged frame,
    /// which OpenFlow 1.0's `mod_vlan_vid` did in one step.
    PushVlan,
    /// `strip_vlan` (`pop_vlan`).
    StripVlan,
    /// `set_tunnel:<key>` (the Nicira action, as the agent's text has it;
    /// `set_field:<key>->tun_id` in a dump over OpenFlow 1.3).
    SetTunnel(u32),
    /// `output:<port>`.
    Output(String),
    /// `IN_PORT`: back out of the port the frame came in on.
    InPort,
    /// `NORMAL`: the bridge's own MAC learning.
    Normal,
    /// `resubmit(,<table>)`: continue in another table and come back.
    Resubmit(u8),
    /// br-tun's table 10: learn where a MAC lives from a frame that came
    /// out of a tunnel, as `br_tun.py` writes it, the learned flows getting
    /// the flow's own (the agent's) cookie:
    /// `learn(table=20,hard_timeout=300,priority=1,cookie=<agent>,
    /// NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],
    /// load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],
    /// output:NXM_OF_IN_PORT[])`.
    LearnFromTunnel,
    /// `move:<from>-><to>` (NXAST_REG_MOVE), whole fields.
    Move(MoveField, MoveField),
    /// `mod_dl_src:<mac>`.
    SetEthSrc([u8; 6]),
    /// `load:<op>->NXM_OF_ARP_OP[]`.
    SetArpOp(u16),
    /// `load:<mac>->NXM_NX_ARP_SHA[]`.
    SetArpSha([u8; 6]),
    /// `load:<ip>->NXM_OF_ARP_SPA[]`.
    SetArpSpa(Ipv4Addr),
}

/// Node-local VLAN ids already in use, `(node, network) → tag`; kept so that
/// a change elsewhere never renumbers a running network.
pub type LocalVlans = BTreeMap<(String, String), u16>;

/// Plans the whole lab. `previous` holds the local VLAN ids the running lab
/// uses (read back from OVSDB); new networks get the lowest free id.
pub fn plan(topo: &Topology, previous: &LocalVlans) -> DesiredState {
    let lab = topo.lab.as_str();
    let ipv6_off = vec![
        (
            "net/ipv6/conf/all/disable_ipv6".to_string(),
            "1".to_string(),
        ),
        (
            "net/ipv6/conf/default/disable_ipv6".to_string(),
            "1".to_string(),
        ),
    ];
    let mut namespaces = Vec::new();

    for physnet in &topo.physical_networks {
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &physnet.name),
            object: physnet.name.clone(),
            kind: NamespaceKind::PhysicalNetwork,
            sysctls: ipv6_off.clone(),
            bridges: vec![physnet.name.clone()],
            veths: vec![],
            ovs_internal: vec![],
            links: std::iter::once(bridge_link(&physnet.name))
                .chain(
                    topo.nodes
                        .iter()
                        .map(|n| plain_link(&n.name, Some(&physnet.name))),
                )
                .chain(trunked_routers(topo).map(|r| plain_link(&r.name, Some(&physnet.name))))
                .collect(),
            routes: vec![],
        });
    }

    // The overlay: a Linux bridge named after it, with a port per node
    // (peer of that node's eth3).
    if let Some(overlay) = &topo.overlay {
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &overlay.name),
            object: overlay.name.clone(),
            kind: NamespaceKind::Overlay,
            sysctls: ipv6_off.clone(),
            bridges: vec![overlay.name.clone()],
            veths: vec![],
            ovs_internal: vec![],
            links: std::iter::once(bridge_link(&overlay.name))
                .chain(
                    topo.nodes
                        .iter()
                        .map(|n| plain_link(&n.name, Some(&overlay.name))),
                )
                .collect(),
            routes: vec![],
        });
    }

    // The external network: a Linux bridge named after it, with a port per
    // network node (peer of that node's eth2) and per external host.
    for ext in &topo.external_networks {
        let hosts = topo.external_hosts.iter().filter(|h| h.network == ext.name);
        let routers = topo
            .physical_routers
            .iter()
            .filter(|r| r.interfaces.iter().any(|i| i.network == ext.name));
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &ext.name),
            object: ext.name.clone(),
            kind: NamespaceKind::ExternalNetwork,
            sysctls: ipv6_off.clone(),
            bridges: vec![ext.name.clone()],
            veths: vec![],
            ovs_internal: vec![],
            links: std::iter::once(bridge_link(&ext.name))
                .chain(external_nodes(topo).map(|n| plain_link(&n.name, Some(&ext.name))))
                .chain(hosts.map(|h| plain_link(&h.name, Some(&ext.name))))
                .chain(routers.map(|r| plain_link(&r.name, Some(&ext.name))))
                .collect(),
            routes: vec![],
        });
    }
    for host in &topo.external_hosts {
        let ext = topo
            .external_network(&host.network)
            .expect("validated reference");
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &host.name),
            object: host.name.clone(),
            kind: NamespaceKind::ExternalHost,
            sysctls: ipv6_off.clone(),
            bridges: vec![],
            veths: vec![VethSpec {
                name: GUEST_NIC.to_string(),
                peer: host.name.clone(),
                peer_namespace: naming::namespace(lab, &ext.name),
            }],
            ovs_internal: vec![],
            links: vec![LinkSpec {
                mac: Some(host.mac),
                addresses: vec![
                    Ipv4Net::new(host.address, ext.cidr.prefix_len()).expect("valid prefix"),
                ],
                ..plain_link(GUEST_NIC, None)
            }],
            routes: routes_behind_physical_routers(topo, &host.network),
        });
    }

    let physnet_ns = topo
        .physical_networks
        .first()
        .map(|p| naming::namespace(lab, &p.name));
    let mut switches = Vec::new();
    let mut firewalls = Vec::new();
    let group_members = group_members(topo);
    let l2pop = l2pop_ports(topo);
    for node in &topo.nodes {
        let ns = naming::namespace(lab, &node.name);
        let mut sysctls = ipv6_off.clone();
        if node.role == NodeRole::Compute {
            // The hybrid firewall filters bridged traffic on qbr.
            sysctls.push((
                "net/bridge/bridge-nf-call-iptables".to_string(),
                "1".to_string(),
            ));
        }
        let mut spec = NamespaceSpec {
            name: ns.clone(),
            object: node.name.clone(),
            kind: NamespaceKind::Node,
            sysctls,
            bridges: vec![],
            veths: vec![],
            ovs_internal: vec![],
            links: vec![],
            routes: vec![],
        };
        if let Some(physnet_ns) = &physnet_ns {
            spec.veths.push(VethSpec {
                name: UPLINK.to_string(),
                peer: node.name.clone(),
                peer_namespace: physnet_ns.clone(),
            });
            spec.links.push(plain_link(UPLINK, None));
        }
        let endpoint = topo.overlay.as_ref().and_then(|o| {
            o.endpoint(&node.name).map(|ip| {
                (
                    o,
                    Ipv4Net::new(ip, o.cidr.prefix_len()).expect("valid prefix"),
                )
            })
        });
        if let Some((overlay, address)) = endpoint {
            spec.veths.push(VethSpec {
                name: OVERLAY_UPLINK.to_string(),
                peer: node.name.clone(),
                peer_namespace: naming::namespace(lab, &overlay.name),
            });
            spec.links.push(plain_link(OVERLAY_UPLINK, None));
            // The tunnel endpoint lives on br-overlay's internal port: the
            // datapath routes and answers ARP for it itself, so the
            // kernel must not answer for it on eth3 as well.
            spec.ovs_internal.push(BR_OVERLAY.to_string());
            spec.links.push(LinkSpec {
                addresses: vec![address],
                tx_checksum: None,
                ..plain_link(BR_OVERLAY, None)
            });
            spec.sysctls
                .push(("net/ipv4/conf/all/arp_ignore".to_string(), "1".to_string()));
        }
        let tunnels = endpoint.is_some() && !topo.agent.tunnel_types.is_empty();
        let local_vlans = allocate_local_vlans(topo, node, previous);
        // The physical bridge and its patch ports exist only where a
        // physical network is mapped: with empty `bridge_mappings` the
        // agent makes neither (`setup_physical_bridges`).
        let physical = physnet_ns.is_some();
        let mut br_int_ports = Vec::new();
        if physical {
            br_int_ports.push(patch_port(INT_BR_VLAN, PHY_BR_VLAN));
        }
        if tunnels {
            br_int_ports.push(patch_port(PATCH_TUN, PATCH_INT));
        }
        for inst in topo.instances_on(&node.name) {
            let plug = inst.plug();
            spec.bridges.push(plug.qbr.clone());
            spec.veths.push(VethSpec {
                name: plug.qvb.clone(),
                peer: plug.qvo.clone(),
                peer_namespace: ns.clone(),
            });
            spec.links.push(bridge_link(&plug.qbr));
            // libvirt gives the host end of a VM's NIC the VM's MAC with
            // `fe` for its first byte.
            let mut tap_mac = inst.mac;
            tap_mac[0] = 0xfe;
            spec.links.push(LinkSpec {
                mac: Some(tap_mac),
                ..plain_link(&plug.tap, Some(&plug.qbr))
            });
            spec.links.push(LinkSpec {
                promisc: true,
                ..plain_link(&plug.qvb, Some(&plug.qbr))
            });
            spec.links.push(LinkSpec {
                promisc: true,
                ..plain_link(&plug.qvo, None)
            });
            let net = topo.network(&inst.network).expect("validated reference");
            let tag = local_vlans[&inst.network];
            br_int_ports.push(OvsPort {
                name: plug.qvo.clone(),
                tag: Some(tag),
                patch_peer: None,
                tunnel: None,
                internal: false,
                interface_external_ids: BTreeMap::from([
                    ("attached-mac".into(), format_mac(&inst.mac)),
                    ("iface-id".into(), plug.port.to_string()),
                    ("iface-status".into(), "active".into()),
                    (
                        "vm-uuid".into(),
                        naming::instance_uuid(lab, &inst.name).to_string(),
                    ),
                ]),
                port_other_config: agent_port_config(lab, net, tag),
            });
        }
        let mut br_ex_ports = Vec::new();
        for router in topo.routers.iter().filter(|r| r.nodes.contains(&node.name)) {
            let router_ns = router_namespace_on(lab, router, &node.name);
            for network in &router.interfaces {
                let net = topo.network(network).expect("validated reference");
                let port = RouterPort::internal(router, network);
                let tag = local_vlans[network];
                br_int_ports.push(plug_agent_port(
                    &mut spec,
                    (&port.tap, &port.device, &router_ns),
                    Some(tag),
                    router_port_ids(&port),
                    agent_port_config(lab, net, tag),
                ));
            }
            if router.external_gateway.is_some() {
                let port = RouterPort::gateway(router);
                br_ex_ports.push(plug_agent_port(
                    &mut spec,
                    (&port.tap, &port.device, &router_ns),
                    None,
                    router_port_ids(&port),
                    BTreeMap::new(),
                ));
            }
            if router.ha.is_some() {
                let port = HaPort::of(router, &node.name);
                let net = ha_network(topo);
                let tag = local_vlans[&net.name];
                br_int_ports.push(plug_agent_port(
                    &mut spec,
                    (&port.tap, &port.device, &router_ns),
                    Some(tag),
                    port_ids(port.mac, &port.port),
                    agent_port_config(lab, net, tag),
                ));
            }
        }
        for net in dhcp_networks_on(topo, &node.name) {
            let port = DhcpPort::of(net);
            let tag = local_vlans[&net.name];
            br_int_ports.push(plug_agent_port(
                &mut spec,
                (&port.tap, &port.device, &dhcp::namespace(lab, &net.name)),
                tag.into(),
                port_ids(port.mac, &port.port),
                agent_port_config(lab, net, tag),
            ));
        }
        let ext_ns = topo
            .external_networks
            .first()
            .filter(|_| external_nodes(topo).any(|n| n.name == node.name))
            .map(|e| naming::namespace(lab, &e.name));
        if let Some(ext_ns) = &ext_ns {
            spec.veths.push(VethSpec {
                name: EXTERNAL_UPLINK.to_string(),
                peer: node.name.clone(),
                peer_namespace: ext_ns.clone(),
            });
            spec.links.push(plain_link(EXTERNAL_UPLINK, None));
            br_ex_ports.insert(0, plain_port(EXTERNAL_UPLINK));
        }
        let agent_cookie = naming::agent_cookie(lab, &node.name);
        let mut bridges = vec![OvsBridge {
            name: BR_INT.to_string(),
            ports: br_int_ports,
            cookie: agent_cookie,
            standalone: false,
        }];
        if physical {
            bridges.push(OvsBridge {
                name: BR_VLAN.to_string(),
                ports: vec![patch_port(PHY_BR_VLAN, INT_BR_VLAN), plain_port(UPLINK)],
                cookie: agent_cookie,
                standalone: false,
            });
        }
        let mut flows = agent_flows(topo, &local_vlans, physical);
        if let Some((_, address)) = endpoint {
            bridges.push(OvsBridge {
                name: BR_OVERLAY.to_string(),
                ports: vec![plain_port(OVERLAY_UPLINK)],
                cookie: naming::lab_cookie(lab),
                standalone: false,
            });
            flows.push(FlowSpec {
                bridge: BR_OVERLAY.to_string(),
                actions: vec![FlowAction::Normal],
                ..FlowSpec::default()
            });
            if tunnels {
                let (ports, tun) = br_tun(topo, node, address.addr(), &local_vlans, &l2pop);
                bridges.push(OvsBridge {
                    name: BR_TUN.to_string(),
                    ports: std::iter::once(patch_port(PATCH_INT, PATCH_TUN))
                        .chain(ports)
                        .collect(),
                    cookie: agent_cookie,
                    standalone: false,
                });
                flows.extend(tun);
            }
        }
        // Spoofing protection (`prevent_arp_spoofing`, on in Liberty;
        // 7.2.0 `setup_arp_spoofing_protection`): an instance's ARP and
        // ICMPv6 neighbour advertisements go to table 24, which passes
        // only its own addresses (its IPv4 address; its link-local IPv6
        // address, from its MAC); everything else it sends goes to table
        // 25, which passes only its own MAC (`set_allowed_macs_for_port`),
        // and so does the ARP table 24 lets through.
        for inst in topo.instances_on(&node.name) {
            let qvo = inst.plug().qvo;
            let port = |table, priority, actions| FlowSpec {
                bridge: BR_INT.to_string(),
                table,
                priority,
                in_port: Some(qvo.clone()),
                actions,
                ..FlowSpec::default()
            };
            flows.push(FlowSpec {
                arp: true,
                ..port(0, 10, vec![FlowAction::Resubmit(24)])
            });
            flows.push(FlowSpec {
                arp: true,
                arp_spa: Some(inst.address),
                ..port(24, 2, vec![FlowAction::Resubmit(25)])
            });
            flows.push(FlowSpec {
                neighbor_advert: true,
                ..port(0, 10, vec![FlowAction::Resubmit(24)])
            });
            flows.push(FlowSpec {
                neighbor_advert: true,
                nd_target: Some(naming::link_local(inst.mac)),
                ..port(24, 2, vec![FlowAction::Normal])
            });
            flows.push(port(0, 9, vec![FlowAction::Resubmit(25)]));
            flows.push(FlowSpec {
                dl_src: Some(inst.mac),
                ..port(25, 2, vec![FlowAction::Normal])
            });
        }
        flows.sort();
        if ext_ns.is_some() {
            bridges.push(OvsBridge {
                name: BR_EX.to_string(),
                ports: br_ex_ports,
                cookie: 0,
                standalone: true,
            });
            flows.push(FlowSpec {
                bridge: BR_EX.to_string(),
                actions: vec![FlowAction::Normal],
                ..FlowSpec::default()
            });
            flows.sort();
        }
        // Every node's OVS agent runs the hybrid firewall driver, which
        // sets up its chains even on a network node without ports.
        firewalls.push(firewall(topo, node, &group_members));
        switches.push(SwitchSpec {
            node: node.name.clone(),
            namespace: ns.clone(),
            bridges,
            flows,
            local_vlans,
        });
        namespaces.push(spec);
    }

    let mut dhcp_clients = Vec::new();
    for inst in &topo.instances {
        let plug = inst.plug();
        let net = topo.network(&inst.network).expect("validated reference");
        let address = Ipv4Net::new(inst.address, net.cidr.prefix_len()).expect("valid prefix");
        let namespace = naming::namespace(lab, &inst.name);
        // On a DHCP network the instance's address and routes are its DHCP
        // client's to set (the address is its reservation).
        let (addresses, routes) = if net.dhcp {
            dhcp_clients.push(DhcpClientSpec {
                instance: inst.name.clone(),
                namespace: namespace.clone(),
                interface: GUEST_NIC.to_string(),
                address,
            });
            (vec![], vec![])
        } else {
            let default = RouteSpec {
                destination: Ipv4Net::default(),
                gateway: net.gateway,
            };
            (vec![address], vec![default])
        };
        namespaces.push(NamespaceSpec {
            name: namespace,
            object: inst.name.clone(),
            kind: NamespaceKind::Instance,
            // No `/proc/sys` lookups in the lab's most numerous namespaces:
            // their cost grows with the number of namespaces on the host.
            sysctls: vec![],
            bridges: vec![],
            veths: vec![VethSpec {
                name: GUEST_NIC.to_string(),
                peer: plug.tap.clone(),
                peer_namespace: naming::namespace(lab, &inst.node),
            }],
            ovs_internal: vec![],
            links: vec![LinkSpec {
                mac: Some(inst.mac),
                addresses,
                addresses_also_by: net.dhcp.then_some(AddressSetter::DhcpClient),
                no_ipv6: true,
                ..sending_link(net, GUEST_NIC)
            }],
            routes,
        });
    }

    let dhcp_servers = dhcp_servers(topo, &ipv6_off, &mut namespaces);

    for router in &topo.physical_routers {
        let (namespace, switch) = physical_router(topo, router, &ipv6_off);
        namespaces.push(namespace);
        switches.extend(switch);
    }

    let mut routers = Vec::new();
    let mut keepalived = Vec::new();
    for router in &topo.routers {
        for (node, namespace) in router_copies(lab, router) {
            let copy = router_copy(topo, router, node, &namespace, &ipv6_off);
            namespaces.push(copy.namespace);
            routers.push(copy.nat);
            keepalived.extend(copy.keepalived);
        }
    }

    DesiredState {
        lab: lab.to_string(),
        cookie: naming::lab_cookie(lab),
        namespaces,
        switches,
        routers,
        firewalls,
        dhcp_servers,
        dhcp_clients,
        metadata: crate::metadata::plan(topo),
        keepalived,
    }
}

/// One copy of a router: its namespace, its NAT and, for an HA router,
/// its keepalived.
struct RouterCopy {
    namespace: NamespaceSpec,
    nat: RouterSpec,
    keepalived: Option<KeepalivedSpec>,
}

/// A router's copy on `node`: `qr-` ports holding their networks' gateway
/// addresses, `qg-` the gateway and floating IPs, and a default route to
/// the external network's gateway. In an HA router's copy, keepalived
/// sets those addresses and the route on the master only; the copy itself
/// has its `ha-` port with its address on the HA network.
fn router_copy(
    topo: &Topology,
    router: &Router,
    node: &str,
    namespace: &str,
    ipv6_off: &[(String, String)],
) -> RouterCopy {
    let mut links = Vec::new();
    let mut internal_cidrs = Vec::new();
    // What the router holds: (link, address) and routes.
    let mut held: Vec<(usize, Ipv4Net)> = Vec::new();
    let mut routes = Vec::new();
    for network in &router.interfaces {
        let net = topo.network(network).expect("validated reference");
        let port = RouterPort::internal(router, network);
        held.push((
            links.len(),
            Ipv4Net::new(net.gateway, net.cidr.prefix_len()).expect("valid prefix"),
        ));
        links.push(LinkSpec {
            mac: Some(port.mac),
            ..sending_link(net, &port.device)
        });
        internal_cidrs.push(net.cidr);
    }
    let gateway = RouterPort::gateway(router);
    let mut floating_ips = Vec::new();
    if let Some(gw) = &router.external_gateway {
        let ext = topo
            .external_network(&gw.network)
            .expect("validated reference");
        let qg = links.len();
        held.push((
            qg,
            Ipv4Net::new(gw.address, ext.cidr.prefix_len()).expect("valid prefix"),
        ));
        for inst in &topo.instances {
            let behind = router.interfaces.contains(&inst.network);
            if let (true, Some(fip)) = (behind, inst.floating_ip) {
                held.push((qg, Ipv4Net::new(fip, 32).expect("valid prefix")));
                floating_ips.push((inst.address, fip));
            }
        }
        links.push(LinkSpec {
            mac: Some(gateway.mac),
            ..plain_link(&gateway.device, None)
        });
        routes.push(RouteSpec {
            destination: Ipv4Net::default(),
            gateway: ext.gateway,
        });
    }
    let keepalived = match &router.ha {
        None => {
            for (link, address) in held {
                links[link].addresses.push(address);
            }
            None
        }
        Some(ha) => {
            for link in &mut links {
                link.addresses_also_by = Some(AddressSetter::Keepalived);
            }
            let port = HaPort::of(router, node);
            let net = ha_network(topo);
            let own = ha.address_on(node).expect("an address per copy");
            links.push(LinkSpec {
                mac: Some(port.mac),
                addresses: vec![Ipv4Net::new(own, net.cidr.prefix_len()).expect("valid prefix")],
                addresses_also_by: Some(AddressSetter::Keepalived),
                ..sending_link(net, &port.device)
            });
            let excluded = held
                .into_iter()
                .map(|(link, address)| (address, links[link].name.clone()))
                .collect();
            let routes = std::mem::take(&mut routes)
                .into_iter()
                .map(|r| (r.destination, r.gateway, gateway.device.clone()))
                .collect();
            Some(KeepalivedSpec {
                router: router.name.clone(),
                node: node.to_string(),
                namespace: namespace.to_string(),
                vrid: ha.vrid,
                interface: port.device.clone(),
                vip: ha.vip,
                excluded,
                routes,
            })
        }
    };
    let mut sysctls = agent_namespace_sysctls(ipv6_off);
    sysctls.push(("net/ipv4/ip_forward".to_string(), "1".to_string()));
    RouterCopy {
        namespace: NamespaceSpec {
            name: namespace.to_string(),
            object: router.name.clone(),
            kind: NamespaceKind::Router,
            sysctls,
            bridges: vec![],
            veths: vec![],
            ovs_internal: vec![],
            links,
            routes,
        },
        nat: RouterSpec {
            router: router.name.clone(),
            namespace: namespace.to_string(),
            qg: gateway.device.clone(),
            gateway_ip: router.external_gateway.as_ref().map(|g| g.address),
            snat: router.snat,
            floating_ips,
            internal_cidrs,
        },
        keepalived,
    }
}

/// The sysctls of a namespace an agent makes (`ip_lib`'s `netns add`):
/// `promote_secondaries`, so that deleting a router's primary address
/// keeps the others of its subnet.
fn agent_namespace_sysctls(base: &[(String, String)]) -> Vec<(String, String)> {
    let mut sysctls = base.to_vec();
    sysctls.push((
        "net/ipv4/conf/all/promote_secondaries".to_string(),
        "1".to_string(),
    ));
    sysctls
}

/// The lab's HA network (there is one when a router is HA).
fn ha_network(topo: &Topology) -> &Network {
    topo.l3_ha
        .as_ref()
        .and_then(|h| topo.network(&h.network))
        .expect("an HA router has the HA network")
}

/// Each copy of a router, `(node, namespace)`: a legacy router's one, an HA
/// router's one per node in `nodes` order.
pub fn router_copies<'a>(lab: &str, router: &'a Router) -> Vec<(&'a str, String)> {
    router
        .nodes
        .iter()
        .map(|node| (node.as_str(), router_namespace_on(lab, router, node)))
        .collect()
}

/// The namespace of a router's copy on `node`.
pub fn router_namespace_on(lab: &str, router: &Router, node: &str) -> String {
    if router.ha.is_some() {
        naming::ha_router_namespace(lab, node, &router.name)
    } else {
        router_namespace(lab, &router.name)
    }
}

/// The namespace of the router copy its traffic goes through: a legacy
/// router's only one, an HA router's on [`Router::node`] (the active copy,
/// in a topology ordered by [`Topology::hosting`]).
pub fn active_router_namespace(lab: &str, router: &Router) -> String {
    router_namespace_on(lab, router, router.node())
}

/// Each DHCP network's server: its qdhcp namespace (added to
/// `namespaces`, with the DHCP port's address and a default route, as
/// the agent's `DeviceManager` sets them up) and what dnsmasq hands out.
fn dhcp_servers(
    topo: &Topology,
    base_sysctls: &[(String, String)],
    namespaces: &mut Vec<NamespaceSpec>,
) -> Vec<DhcpServerSpec> {
    let lab = topo.lab.as_str();
    let mut servers = Vec::new();
    for net in topo.networks.iter().filter(|n| n.dhcp) {
        let (Some(node), Some(address)) = (topo.dhcp_node(&net.name), net.dhcp_address) else {
            continue;
        };
        let port = DhcpPort::of(net);
        let namespace = dhcp::namespace(lab, &net.name);
        let isolated = crate::metadata::isolated(topo, &net.name);
        // Every DHCP port holds 169.254.169.254/16 (7.2.0
        // `DeviceManager.setup` with `enable_isolated_metadata`, which
        // ovslab has on); only an isolated network's answers there (its
        // proxy), the others' instances are routed to their router.
        let addresses = vec![
            Ipv4Net::new(address, net.cidr.prefix_len()).expect("valid prefix"),
            Ipv4Net::new(dhcp::METADATA_ADDRESS, 16).expect("valid prefix"),
        ];
        namespaces.push(NamespaceSpec {
            name: namespace.clone(),
            object: net.name.clone(),
            kind: NamespaceKind::Dhcp,
            sysctls: agent_namespace_sysctls(base_sysctls),
            bridges: vec![],
            veths: vec![],
            ovs_internal: vec![],
            links: vec![LinkSpec {
                mac: Some(port.mac),
                addresses,
                ..sending_link(net, &port.device)
            }],
            routes: vec![RouteSpec {
                destination: Ipv4Net::default(),
                gateway: net.gateway,
            }],
        });
        // Every port of the network with a fixed address, by address.
        let mut hosts: Vec<([u8; 6], Ipv4Addr)> = topo
            .instances
            .iter()
            .filter(|i| i.network == net.name)
            .map(|i| (i.mac, i.address))
            .chain(
                topo.routers
                    .iter()
                    .filter(|r| r.interfaces.contains(&net.name))
                    .map(|r| (RouterPort::internal(r, &net.name).mac, net.gateway)),
            )
            .chain(std::iter::once((port.mac, address)))
            .collect();
        hosts.sort_by_key(|(_, ip)| *ip);
        servers.push(DhcpServerSpec {
            network: net.name.clone(),
            node: node.to_string(),
            namespace,
            interface: port.device.clone(),
            subnet: net.cidr,
            gateway: net.gateway,
            metadata_via: if isolated { address } else { net.gateway },
            dns_nameservers: net.dns_nameservers.clone(),
            hosts,
        });
    }
    servers
}

/// The namespace of a legacy router: `<lab>.qrouter-<router uuid>` (see
/// [`router_namespace_on`] for an HA router's copies).
pub fn router_namespace(lab: &str, router: &str) -> String {
    naming::namespace(
        lab,
        &format!("{QROUTER}{}", naming::object_uuid(lab, "router", router)),
    )
}

/// Network nodes that reach the external network (each gets br-ex + eth2):
/// all of them, when a router has an external gateway.
fn external_nodes(topo: &Topology) -> impl Iterator<Item = &Node> {
    let wanted = !topo.external_networks.is_empty()
        && topo.routers.iter().any(|r| r.external_gateway.is_some());
    topo.nodes
        .iter()
        .filter(move |n| wanted && n.role == NodeRole::Network)
}

/// Physical routers with a trunk into the physical network.
fn trunked_routers(topo: &Topology) -> impl Iterator<Item = &PhysicalRouter> {
    topo.physical_routers
        .iter()
        .filter(|r| r.on_physical_network(topo))
}

/// A physical router: a namespace that forwards, with its provider
/// interfaces on an Open vSwitch of its own (`br-eth1`: the trunk `eth1`
/// into the physical network, and an internal port per network, tagged
/// with the network's VLAN id or untagged for a flat one) and its external
/// interface (`eth2`) on the external network's switch. Open vSwitch
/// stands in for the 802.1Q driver this kernel lacks; the addresses live
/// on its internal ports as they would on `eth1.101`.
fn physical_router(
    topo: &Topology,
    router: &PhysicalRouter,
    base_sysctls: &[(String, String)],
) -> (NamespaceSpec, Option<SwitchSpec>) {
    let lab = topo.lab.as_str();
    let ns = naming::namespace(lab, &router.name);
    let mut sysctls = base_sysctls.to_vec();
    sysctls.push(("net/ipv4/ip_forward".to_string(), "1".to_string()));
    let mut spec = NamespaceSpec {
        name: ns.clone(),
        object: router.name.clone(),
        kind: NamespaceKind::PhysicalRouter,
        sysctls,
        bridges: vec![],
        veths: vec![],
        ovs_internal: vec![],
        links: vec![],
        routes: vec![],
    };
    let mut trunk = vec![plain_port(UPLINK)];
    for i in &router.interfaces {
        let mac = Some(i.mac);
        if let Some(net) = topo.network(&i.network) {
            let vlan = match net.network_type {
                NetworkType::Vlan(id) => Some(id),
                _ => None,
            };
            let name = naming::trunk_interface(vlan);
            trunk.push(OvsPort {
                tag: vlan,
                internal: true,
                ..plain_port(&name)
            });
            spec.ovs_internal.push(name.clone());
            spec.links.push(LinkSpec {
                mac,
                addresses: vec![
                    Ipv4Net::new(i.address, net.cidr.prefix_len()).expect("valid prefix"),
                ],
                tx_checksum: None,
                ..plain_link(&name, None)
            });
        } else if let Some(ext) = topo.external_network(&i.network) {
            spec.veths.push(VethSpec {
                name: EXTERNAL_UPLINK.to_string(),
                peer: router.name.clone(),
                peer_namespace: naming::namespace(lab, &ext.name),
            });
            spec.links.push(LinkSpec {
                mac,
                addresses: vec![
                    Ipv4Net::new(i.address, ext.cidr.prefix_len()).expect("valid prefix"),
                ],
                ..plain_link(EXTERNAL_UPLINK, None)
            });
            if ext.gateway != i.address {
                spec.routes.push(RouteSpec {
                    destination: Ipv4Net::default(),
                    gateway: ext.gateway,
                });
            }
        }
    }
    if trunk.len() == 1 {
        return (spec, None);
    }
    let physnet = topo
        .physical_networks
        .first()
        .expect("validated: a provider network has one");
    spec.veths.push(VethSpec {
        name: UPLINK.to_string(),
        peer: router.name.clone(),
        peer_namespace: naming::namespace(lab, &physnet.name),
    });
    spec.links.push(plain_link(UPLINK, None));
    let switch = SwitchSpec {
        node: router.name.clone(),
        namespace: ns,
        bridges: vec![OvsBridge {
            name: BR_TRUNK.to_string(),
            ports: trunk,
            cookie: naming::lab_cookie(lab),
            standalone: false,
        }],
        flows: vec![FlowSpec {
            bridge: BR_TRUNK.to_string(),
            actions: vec![FlowAction::Normal],
            ..FlowSpec::default()
        }],
        local_vlans: BTreeMap::new(),
    };
    (spec, Some(switch))
}

/// What a host on an external network knows of the networks behind the
/// physical routers on it: a route to each, through the router.
fn routes_behind_physical_routers(topo: &Topology, network: &str) -> Vec<RouteSpec> {
    let mut routes = Vec::new();
    for router in &topo.physical_routers {
        let Some(here) = router.interfaces.iter().find(|i| i.network == network) else {
            continue;
        };
        for net in router
            .interfaces
            .iter()
            .filter_map(|i| topo.network(&i.network))
        {
            routes.push(RouteSpec {
                destination: net.cidr,
                gateway: here.address,
            });
        }
    }
    routes
}

/// A router port as the L3 agent plugs it with `ovs_use_veth`: `qr-…` or
/// `qg-…` inside the router's namespace, its veth peer `tap…` on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPort {
    pub port: uuid::Uuid,
    /// `qr-…` / `qg-…`, in the router namespace.
    pub device: String,
    /// `tap…`, on br-int / br-ex in the node namespace.
    pub tap: String,
    pub mac: [u8; 6],
}

impl RouterPort {
    /// `router`'s `qr-` port on `network`, one of its interfaces.
    pub fn internal(router: &Router, network: &str) -> Self {
        let ids = router
            .port_on(network)
            .expect("validated: the router has an interface on the network");
        Self::new(QR, ids)
    }

    /// `router`'s `qg-` port, on its external gateway.
    pub fn gateway(router: &Router) -> Self {
        let ids = router
            .gateway_port
            .expect("validated: the router has an external gateway");
        Self::new(QG, ids)
    }

    fn new(prefix: &str, ids: PortIds) -> Self {
        RouterPort {
            port: ids.uuid,
            device: naming::device_name(prefix, &ids.uuid),
            tap: naming::device_name(TAP, &ids.uuid),
            mac: ids.mac,
        }
    }
}

/// An agent's port (`ovs_use_veth`: a router's or DHCP server's) plugged
/// on `node`: the veth `tap…` in the node's namespace with its peer (`qr-`,
/// `qg-`, `ha-`, `ns-`) in the agent's, and the OVS port of the `tap…`.
fn plug_agent_port(
    node: &mut NamespaceSpec,
    (tap, device, peer_namespace): (&str, &str, &str),
    tag: Option<u16>,
    interface_external_ids: BTreeMap<String, String>,
    port_other_config: BTreeMap<String, String>,
) -> OvsPort {
    node.veths.push(VethSpec {
        name: tap.to_string(),
        peer: device.to_string(),
        peer_namespace: peer_namespace.to_string(),
    });
    node.links.push(plain_link(tap, None));
    OvsPort {
        tag,
        interface_external_ids,
        port_other_config,
        ..plain_port(tap)
    }
}

fn router_port_ids(port: &RouterPort) -> BTreeMap<String, String> {
    port_ids(port.mac, &port.port)
}

/// The `external_ids` an agent's own port (router, DHCP) carries.
fn port_ids(mac: [u8; 6], port: &uuid::Uuid) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("attached-mac".into(), format_mac(&mac)),
        ("iface-id".into(), port.to_string()),
        ("iface-status".into(), "active".into()),
    ])
}

fn plain_port(name: &str) -> OvsPort {
    OvsPort {
        name: name.to_string(),
        tag: None,
        patch_peer: None,
        tunnel: None,
        internal: false,
        interface_external_ids: BTreeMap::new(),
        port_other_config: BTreeMap::new(),
    }
}

/// The addresses of each security group's members, lab-wide, sorted:
/// what every node's ipset of the group holds (computed once, not per
/// node: a 10,000-instance lab has 200 nodes).
fn group_members(topo: &Topology) -> BTreeMap<&str, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    for i in &topo.instances {
        for g in &i.security_groups {
            out.entry(g.as_str()).or_default().push(i.address);
        }
    }
    for members in out.values_mut() {
        members.sort();
        members.dedup();
    }
    out
}

/// The firewall of a compute node: each instance's security groups, and
/// an ipset per remote group its rules refer to (Liberty's default,
/// `enable_ipset = True`).
fn firewall(
    topo: &Topology,
    node: &Node,
    group_members: &BTreeMap<&str, Vec<Ipv4Addr>>,
) -> FirewallSpec {
    let lab = topo.lab.as_str();
    let members =
        |group: &str| -> Vec<Ipv4Addr> { group_members.get(group).cloned().unwrap_or_default() };
    let mut ipsets: Vec<IpSetSpec> = Vec::new();
    let mut ports = Vec::new();
    for (zone, inst) in (1u16..).zip(topo.instances_on(&node.name)) {
        let plug = inst.plug();
        let mut rules = Vec::new();
        for group in &inst.security_groups {
            let Some(sg) = topo.security_groups.iter().find(|g| &g.name == group) else {
                continue;
            };
            for rule in &sg.rules {
                rules.push(FirewallRule {
                    direction: rule.direction,
                    protocol: rule.protocol,
                    port_range: rule.port_range,
                    remote: match &rule.remote {
                        None => None,
                        Some(Remote::Cidr(c)) => Some(FirewallRemote::Prefix(*c)),
                        Some(Remote::Group(g)) => {
                            let name = naming::ipset_name(lab, g);
                            if !ipsets.iter().any(|s| s.name == name) {
                                ipsets.push(IpSetSpec {
                                    name: name.clone(),
                                    group: g.clone(),
                                    members: members(g),
                                });
                            }
                            Some(FirewallRemote::IpSet(name))
                        }
                    },
                });
            }
        }
        ports.push(FirewallPort {
            instance: inst.name.clone(),
            tap: plug.tap.clone(),
            qvb: plug.qvb.clone(),
            mac: inst.mac,
            ip: inst.address,
            zone,
            rules,
            dhcp_servers: topo
                .network(&inst.network)
                .and_then(|n| n.dhcp_address)
                .into_iter()
                .collect(),
        });
    }
    ports.sort_by(|a, b| a.tap.cmp(&b.tap));
    ipsets.sort_by(|a, b| a.name.cmp(&b.name));
    FirewallSpec {
        node: node.name.clone(),
        namespace: naming::namespace(lab, &node.name),
        ports,
        ipsets,
    }
}

/// A veth end: no address, TX checksum offload (and TSO) on.
fn plain_link(name: &str, master: Option<&str>) -> LinkSpec {
    LinkSpec {
        name: name.to_string(),
        master: master.map(str::to_string),
        mac: None,
        addresses: vec![],
        tx_checksum: Some(true),
        mtu: None,
        addresses_also_by: None,
        no_ipv6: false,
        promisc: false,
        down: false,
    }
}

/// The NIC an instance or router sends onto `net` from: on a tunnel
/// network, the network's MTU and no TX offload (the netdev datapath drops
/// offloaded TCP it would have to encapsulate).
fn sending_link(net: &Network, name: &str) -> LinkSpec {
    let tunnel = net.tunnel().is_some();
    LinkSpec {
        tx_checksum: Some(!tunnel),
        mtu: tunnel.then(|| net.mtu()),
        ..plain_link(name, None)
    }
}

/// A Linux bridge.
fn bridge_link(name: &str) -> LinkSpec {
    LinkSpec {
        tx_checksum: None,
        ..plain_link(name, None)
    }
}

fn patch_port(name: &str, peer: &str) -> OvsPort {
    OvsPort {
        name: name.to_string(),
        tag: None,
        patch_peer: Some(peer.to_string()),
        tunnel: None,
        internal: false,
        interface_external_ids: BTreeMap::new(),
        port_other_config: BTreeMap::new(),
    }
}

/// What the OVS agent records in a port's `other_config` (7.2.0
/// `port_bound`): `physical_network` always, the string `None` on a tunnel
/// network (ovs-vsctl's `py_to_val` writes Python's None so).
fn agent_port_config(lab: &str, net: &Network, tag: u16) -> BTreeMap<String, String> {
    let mut config = BTreeMap::from([
        (
            "net_uuid".into(),
            naming::network_uuid(lab, &net.name).to_string(),
        ),
        ("network_type".into(), net.type_name().into()),
        (
            "physical_network".into(),
            net.physical_network.as_deref().unwrap_or("None").into(),
        ),
        ("tag".into(), tag.to_string()),
    ]);
    if let Some(segment) = net.segmentation_id() {
        config.insert("segmentation_id".into(), segment.to_string());
    }
    config
}

/// A tunnel port's name as the agent makes it: `<type>-<remote IPv4 in 8
/// hex digits>`, e.g. `vxlan-ac10000b`.
pub fn tunnel_port_name(kind: TunnelType, remote: Ipv4Addr) -> String {
    format!("{}-{:08x}", kind.name(), u32::from(remote))
}

/// The ports l2population announces, by (node, network): each instance
/// and router interface, by MAC and address. Made once per plan: every
/// node's br-tun looks up every other node's.
type Ports<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<([u8; 6], Ipv4Addr)>>>;

fn l2pop_ports(topo: &Topology) -> Ports<'_> {
    let mut ports: Ports<'_> = BTreeMap::new();
    for i in &topo.instances {
        ports
            .entry(i.node.as_str())
            .or_default()
            .entry(i.network.as_str())
            .or_default()
            .push((i.mac, i.address));
    }
    for r in &topo.routers {
        for network in &r.interfaces {
            let net = topo.network(network).expect("validated reference");
            for node in &r.nodes {
                let entries = ports
                    .entry(node.as_str())
                    .or_default()
                    .entry(network.as_str())
                    .or_default();
                // An HA router's port moves with the master: its copies'
                // nodes get the network's floods, and no unicast or ARP
                // entry pins its MAC to one of them.
                if r.ha.is_none() {
                    entries.push((RouterPort::internal(r, network).mac, net.gateway));
                }
            }
        }
        if r.ha.is_some() {
            let ha = ha_network(topo);
            for node in &r.nodes {
                ports
                    .entry(node.as_str())
                    .or_default()
                    .entry(ha.name.as_str())
                    .or_default();
            }
        }
    }
    for net in &topo.networks {
        if let (Some(node), Some(address)) = (topo.dhcp_node(&net.name), net.dhcp_address) {
            ports
                .entry(node)
                .or_default()
                .entry(net.name.as_str())
                .or_default()
                .push((DhcpPort::of(net).mac, address));
        }
    }
    ports
}

/// br-tun of `node`, whose tunnel endpoint is `local_ip`: its tunnel ports
/// and the flows of Liberty's `br_tun.py` (tables 0, 2, 3, 4, 6, 10, 20,
/// 21, 22).
///
/// Without l2population a node has a tunnel to every other node, for each
/// tunnel type, and floods a network's broadcasts into all of that type's;
/// with it, only towards nodes that have ports on a network the node also
/// has, flooding only to those, with a unicast flow (table 20) and, with
/// the ARP responder, an ARP reply (table 21) per remote port.
fn br_tun(
    topo: &Topology,
    node: &Node,
    local_ip: Ipv4Addr,
    local_vlans: &BTreeMap<String, u16>,
    l2pop: &Ports<'_>,
) -> (Vec<OvsPort>, Vec<FlowSpec>) {
    let overlay = topo.overlay.as_ref().expect("br-tun needs the overlay");
    let agent = &topo.agent;
    let flow = |table: u8, priority: u16, actions: Vec<FlowAction>| FlowSpec {
        bridge: BR_TUN.to_string(),
        table,
        priority,
        actions,
        ..FlowSpec::default()
    };
    // Networks of `node` carried in tunnels, with their local VLAN.
    let here: Vec<(&Network, TunnelType, u32, u16)> = local_vlans
        .iter()
        .filter_map(|(name, &local)| {
            let net = topo.network(name)?;
            match net.network_type {
                NetworkType::Tunnel(kind, key) => Some((net, kind, key, local)),
                _ => None,
            }
        })
        .collect();
    // Which remote nodes a tunnel of each type goes to, in node order.
    let remotes: Vec<(&Node, Ipv4Addr)> = topo
        .nodes
        .iter()
        .filter(|n| n.name != node.name)
        .filter_map(|n| overlay.endpoint(&n.name).map(|ip| (n, ip)))
        .collect();
    fn ports_on<'p>(
        l2pop: &'p Ports<'_>,
        remote: &Node,
        network: &str,
    ) -> &'p [([u8; 6], Ipv4Addr)] {
        l2pop
            .get(remote.name.as_str())
            .and_then(|networks| networks.get(network))
            .map_or(&[][..], Vec::as_slice)
    }
    // A node with an HA router's copy on a network has its ports there
    // without entries (they move with the master).
    let has_ports = |remote: &Node, network: &str| {
        l2pop
            .get(remote.name.as_str())
            .is_some_and(|networks| networks.contains_key(network))
    };
    let mut ports = Vec::new();
    let mut tunnel_of: BTreeMap<(TunnelType, String), String> = BTreeMap::new();
    for &kind in &agent.tunnel_types {
        for (remote, ip) in &remotes {
            let wanted = !agent.l2_population
                || here
                    .iter()
                    .any(|(net, k, _, _)| *k == kind && has_ports(remote, &net.name));
            if !wanted {
                continue;
            }
            let name = tunnel_port_name(kind, *ip);
            tunnel_of.insert((kind, remote.name.clone()), name.clone());
            ports.push(OvsPort {
                tunnel: Some(TunnelInterface {
                    kind,
                    remote_ip: *ip,
                    local_ip,
                }),
                ..plain_port(&name)
            });
        }
    }

    let mut flows = vec![
        FlowSpec {
            in_port: Some(PATCH_INT.to_string()),
            ..flow(0, 1, vec![FlowAction::Resubmit(2)])
        },
        flow(0, 0, vec![]),
        FlowSpec {
            dl_dst: Some(MacMatch::Unicast),
            ..flow(2, 0, vec![FlowAction::Resubmit(20)])
        },
        FlowSpec {
            dl_dst: Some(MacMatch::Multicast),
            ..flow(2, 0, vec![FlowAction::Resubmit(22)])
        },
        flow(3, 0, vec![]),
        flow(4, 0, vec![]),
        flow(6, 0, vec![]),
        flow(
            10,
            1,
            vec![
                FlowAction::LearnFromTunnel,
                FlowAction::Output(PATCH_INT.to_string()),
            ],
        ),
        flow(20, 0, vec![FlowAction::Resubmit(22)]),
        flow(22, 0, vec![]),
    ];
    if agent.arp_responder {
        flows.push(FlowSpec {
            arp: true,
            dl_dst: Some(MacMatch::Exact([0xff; 6])),
            ..flow(2, 1, vec![FlowAction::Resubmit(21)])
        });
        flows.push(flow(21, 0, vec![FlowAction::Resubmit(22)]));
    }
    for port in &ports {
        let kind = port.tunnel.as_ref().expect("a tunnel port").kind;
        flows.push(FlowSpec {
            in_port: Some(port.name.clone()),
            ..flow(0, 1, vec![FlowAction::Resubmit(kind.table())])
        });
    }
    for &(net, kind, key, local) in &here {
        flows.push(FlowSpec {
            tun_id: Some(key),
            ..flow(
                kind.table(),
                1,
                vec![
                    FlowAction::PushVlan,
                    FlowAction::ModVlanVid(local),
                    FlowAction::Resubmit(10),
                ],
            )
        });
        let to_remote = |remote: &Node| tunnel_of.get(&(kind, remote.name.clone()));
        // Flooding: to every tunnel of the type (to those with ports on the
        // network, with l2population); `mod_flow` leaves it at the default
        // priority. None when there is no tunnel to flood to.
        let flood: Vec<FlowAction> = remotes
            .iter()
            .filter(|(r, _)| !agent.l2_population || has_ports(r, &net.name))
            .filter_map(|(r, _)| to_remote(r))
            .map(|name| FlowAction::Output(name.clone()))
            .collect();
        if !flood.is_empty() {
            flows.push(FlowSpec {
                dl_vlan: Some(VlanMatch::Id(local)),
                ..flow(
                    22,
                    FLOOD_PRIORITY,
                    [FlowAction::StripVlan, FlowAction::SetTunnel(key)]
                        .into_iter()
                        .chain(flood)
                        .collect(),
                )
            });
        }
        if !agent.l2_population {
            continue;
        }
        for (remote, _) in &remotes {
            let Some(tunnel) = to_remote(remote) else {
                continue;
            };
            for &(mac, ip) in ports_on(l2pop, remote, &net.name) {
                flows.push(FlowSpec {
                    dl_vlan: Some(VlanMatch::Id(local)),
                    dl_dst: Some(MacMatch::Exact(mac)),
                    ..flow(
                        20,
                        2,
                        vec![
                            FlowAction::StripVlan,
                            FlowAction::SetTunnel(key),
                            FlowAction::Output(tunnel.clone()),
                        ],
                    )
                });
                if agent.arp_responder {
                    flows.push(FlowSpec {
                        arp: true,
                        dl_vlan: Some(VlanMatch::Id(local)),
                        arp_tpa: Some(ip),
                        ..flow(21, 1, arp_reply(mac, ip))
                    });
                }
            }
        }
    }
    flows.sort();
    (ports, flows)
}

/// `ovs-ofctl mod-flows` without a priority: OpenFlow's default.
const FLOOD_PRIORITY: u16 = 0x8000;

/// The ARP responder's answer for `ip` at `mac` (`br_tun.py`
/// `install_arp_responder`): the request turned into a reply and sent back
/// out of the port it came in on.
fn arp_reply(mac: [u8; 6], ip: Ipv4Addr) -> Vec<FlowAction> {
    use MoveField::*;
    vec![
        FlowAction::Move(EthSrc, EthDst),
        FlowAction::SetEthSrc(mac),
        FlowAction::SetArpOp(2),
        FlowAction::Move(ArpSha, ArpTha),
        FlowAction::Move(ArpSpa, ArpTpa),
        FlowAction::SetArpSha(mac),
        FlowAction::SetArpSpa(ip),
        FlowAction::InPort,
    ]
}

/// Networks that need a local VLAN on `node`, in topology order.
fn networks_on<'a>(topo: &'a Topology, node: &Node) -> Vec<&'a Network> {
    let wanted: BTreeSet<&str> = topo
        .instances_on(&node.name)
        .map(|i| i.network.as_str())
        .chain(
            topo.routers
                .iter()
                .filter(|r| r.nodes.contains(&node.name))
                .flat_map(|r| {
                    let ha = r.ha.as_ref().map(|_| ha_network(topo).name.as_str());
                    r.interfaces.iter().map(String::as_str).chain(ha)
                }),
        )
        .chain(dhcp_networks_on(topo, &node.name).map(|n| n.name.as_str()))
        .collect();
    topo.networks
        .iter()
        .filter(|n| wanted.contains(n.name.as_str()))
        .collect()
}

/// The DHCP networks whose server runs on `node`.
fn dhcp_networks_on<'a>(topo: &'a Topology, node: &'a str) -> impl Iterator<Item = &'a Network> {
    topo.networks
        .iter()
        .filter(move |n| n.dhcp && topo.dhcp_node(&n.name) == Some(node))
}

/// The agent's `LocalVlanManager`: keep what is in use, give new networks
/// the lowest free id.
fn allocate_local_vlans(
    topo: &Topology,
    node: &Node,
    previous: &LocalVlans,
) -> BTreeMap<String, u16> {
    let networks = networks_on(topo, node);
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for net in &networks {
        if let Some(&tag) = previous.get(&(node.name.clone(), net.name.clone()))
            && (1..=4094).contains(&tag)
            && taken.insert(tag)
        {
            out.insert(net.name.clone(), tag);
        }
    }
    let mut next = 1u16;
    for net in &networks {
        if out.contains_key(&net.name) {
            continue;
        }
        while taken.contains(&next) {
            next += 1;
        }
        taken.insert(next);
        out.insert(net.name.clone(), next);
    }
    out
}

/// The flows the Liberty OVS agent (ovs-ofctl driver) installs for VLAN
/// networks: defaults, the drops on the patch ports, and
/// `provision_local_vlan` on br-int and br-vlan.
fn agent_flows(
    topo: &Topology,
    local_vlans: &BTreeMap<String, u16>,
    physical: bool,
) -> Vec<FlowSpec> {
    let flow = |bridge: &str,
                table,
                priority,
                in_port: Option<&str>,
                dl_vlan: Option<u16>,
                actions: Vec<FlowAction>| FlowSpec {
        bridge: bridge.to_string(),
        table,
        priority,
        in_port: in_port.map(str::to_string),
        dl_vlan: dl_vlan.map(VlanMatch::Id),
        actions,
        ..FlowSpec::default()
    };
    let mut flows = vec![
        flow(BR_INT, 0, 0, None, None, vec![FlowAction::Normal]),
        flow(BR_INT, 23, 0, None, None, vec![]),
        flow(BR_INT, 24, 0, None, None, vec![]),
    ];
    if physical {
        flows.extend([
            flow(BR_INT, 0, 2, Some(INT_BR_VLAN), None, vec![]),
            flow(BR_VLAN, 0, 0, None, None, vec![FlowAction::Normal]),
            flow(BR_VLAN, 0, 2, Some(PHY_BR_VLAN), None, vec![]),
        ]);
    }
    for (network, &local) in local_vlans {
        match topo.network(network).expect("validated").network_type {
            NetworkType::Vlan(segment) => {
                flows.push(flow(
                    BR_INT,
                    0,
                    3,
                    Some(INT_BR_VLAN),
                    Some(segment),
                    vec![FlowAction::ModVlanVid(local), FlowAction::Normal],
                ));
                flows.push(flow(
                    BR_VLAN,
                    0,
                    4,
                    Some(PHY_BR_VLAN),
                    Some(local),
                    vec![FlowAction::ModVlanVid(segment), FlowAction::Normal],
                ));
            }
            // Untagged on the wire (`dl_vlan=0xffff` in the agent's words).
            NetworkType::Flat => {
                flows.push(FlowSpec {
                    dl_vlan: Some(VlanMatch::Untagged),
                    ..flow(
                        BR_INT,
                        0,
                        3,
                        Some(INT_BR_VLAN),
                        None,
                        vec![
                            FlowAction::PushVlan,
                            FlowAction::ModVlanVid(local),
                            FlowAction::Normal,
                        ],
                    )
                });
                flows.push(flow(
                    BR_VLAN,
                    0,
                    4,
                    Some(PHY_BR_VLAN),
                    Some(local),
                    vec![FlowAction::StripVlan, FlowAction::Normal],
                ));
            }
            // br-tun's, below.
            NetworkType::Tunnel(..) => {}
        }
    }
    flows.sort();
    flows
}

/// Every namespace that lives on `nodes` as a host would hold it: each
/// node's own, its instances', its router copies' and its DHCP servers'.
pub fn namespaces_on(topo: &Topology, nodes: &BTreeSet<String>) -> BTreeSet<String> {
    let lab = topo.lab.as_str();
    let mut out = BTreeSet::new();
    if nodes.is_empty() {
        return out;
    }
    out.extend(nodes.iter().map(|n| naming::namespace(lab, n)));
    out.extend(
        topo.instances
            .iter()
            .filter(|i| nodes.contains(&i.node))
            .map(|i| naming::namespace(lab, &i.name)),
    );
    for router in &topo.routers {
        out.extend(
            router_copies(lab, router)
                .into_iter()
                .filter(|(node, _)| nodes.contains(*node))
                .map(|(_, ns)| ns),
        );
    }
    out.extend(
        topo.networks
            .iter()
            .filter(|n| topo.dhcp_node(&n.name).is_some_and(|d| nodes.contains(d)))
            .map(|n| dhcp::namespace(lab, &n.name)),
    );
    out
}

/// The node that hosts each node-hosted namespace of the plan: a node's
/// own, its instances', its router copies', its qdhcp namespaces (as
/// [`namespaces_on`] counts them). The others — physical, overlay and
/// external networks, external hosts, physical routers — are the lab's
/// wire, hosted by no node.
pub fn namespace_hosts(topo: &Topology) -> BTreeMap<String, String> {
    let lab = topo.lab.as_str();
    let mut out = BTreeMap::new();
    for node in topo.switch_hosts() {
        out.insert(naming::namespace(lab, node), node.to_string());
    }
    for i in &topo.instances {
        out.insert(naming::namespace(lab, &i.name), i.node.clone());
    }
    for router in &topo.routers {
        for (node, ns) in router_copies(lab, router) {
            out.insert(ns, node.to_string());
        }
    }
    for n in &topo.networks {
        if let Some(node) = topo.dhcp_node(&n.name) {
            out.insert(dhcp::namespace(lab, &n.name), node.to_string());
        }
    }
    out
}

impl DesiredState {
    /// The namespaces that hold iptables rules: routers, compute nodes'
    /// firewalls and DHCP namespaces.
    pub fn rule_namespaces(&self) -> BTreeSet<&str> {
        self.routers
            .iter()
            .map(|r| r.namespace.as_str())
            .chain(self.firewalls.iter().map(|f| f.namespace.as_str()))
            .chain(self.dhcp_servers.iter().map(|d| d.namespace.as_str()))
            .collect()
    }

    /// This plan with `failed` nodes failed on purpose: what runs on them
    /// (see [`namespaces_on`], their Open vSwitch and agents) is left out,
    /// so that a converge neither repairs nor removes it, and their ports
    /// on the lab's switches (physical, overlay, external) are down.
    /// The part of this plan on `nodes` and, with `wire`, on the
    /// namespaces no node hosts (see [`namespace_hosts`], which `hosts`
    /// is): what an audit re-reads when notices concern only those.
    pub fn part(
        &self,
        hosts: &BTreeMap<String, String>,
        nodes: &BTreeSet<String>,
        wire: bool,
    ) -> DesiredState {
        let on = |ns: &str| match hosts.get(ns) {
            Some(node) => nodes.contains(node),
            None => wire,
        };
        DesiredState {
            lab: self.lab.clone(),
            cookie: self.cookie,
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| on(&n.name))
                .cloned()
                .collect(),
            switches: self
                .switches
                .iter()
                .filter(|s| nodes.contains(&s.node))
                .cloned()
                .collect(),
            routers: self
                .routers
                .iter()
                .filter(|r| on(&r.namespace))
                .cloned()
                .collect(),
            firewalls: self
                .firewalls
                .iter()
                .filter(|f| nodes.contains(&f.node))
                .cloned()
                .collect(),
            dhcp_servers: self
                .dhcp_servers
                .iter()
                .filter(|d| nodes.contains(&d.node))
                .cloned()
                .collect(),
            dhcp_clients: self
                .dhcp_clients
                .iter()
                .filter(|c| on(&c.namespace))
                .cloned()
                .collect(),
            metadata: self
                .metadata
                .iter()
                .filter(|m| on(&m.namespace))
                .cloned()
                .collect(),
            keepalived: self
                .keepalived
                .iter()
                .filter(|k| nodes.contains(&k.node))
                .cloned()
                .collect(),
        }
    }

    pub fn fail_nodes(&mut self, topo: &Topology, failed: &BTreeSet<String>) {
        if failed.is_empty() {
            return;
        }
        let gone = namespaces_on(topo, failed);
        self.namespaces.retain(|n| !gone.contains(&n.name));
        for ns in &mut self.namespaces {
            if matches!(
                ns.kind,
                NamespaceKind::PhysicalNetwork
                    | NamespaceKind::Overlay
                    | NamespaceKind::ExternalNetwork
            ) {
                for link in ns.links.iter_mut().filter(|l| failed.contains(&l.name)) {
                    link.down = true;
                }
            }
        }
        self.switches.retain(|s| !failed.contains(&s.node));
        self.routers.retain(|r| !gone.contains(&r.namespace));
        self.firewalls.retain(|f| !failed.contains(&f.node));
        self.dhcp_servers.retain(|d| !failed.contains(&d.node));
        self.dhcp_clients.retain(|c| !gone.contains(&c.namespace));
        self.metadata.retain(|m| !gone.contains(&m.namespace));
        self.keepalived.retain(|k| !failed.contains(&k.node));
    }

    pub fn switch(&self, node: &str) -> Option<&SwitchSpec> {
        self.switches.iter().find(|s| s.node == node)
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceSpec> {
        self.namespaces.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_of_the_plan_is_what_runs_on_its_nodes_and_the_wire_only_when_asked() {
        let seed = crate::seed();
        let state = plan(&seed, &LocalVlans::new());
        let hosts = namespace_hosts(&seed);
        let names = |d: &DesiredState| -> Vec<String> {
            d.namespaces
                .iter()
                .map(|n| n.name.trim_start_matches("seed.").to_string())
                .collect()
        };
        let compute1: BTreeSet<String> = ["compute1".to_string()].into();
        let part = state.part(&hosts, &compute1, false);
        assert_eq!(names(&part), ["compute1", "instance1", "instance4"]);
        assert_eq!(part.switches.len(), 1);
        assert_eq!(part.firewalls.len(), 1);
        assert!(part.routers.is_empty());
        let wire = names(&state.part(&hosts, &BTreeSet::new(), true));
        assert!(wire.contains(&"physnet1".to_string()), "{wire:?}");
        assert!(wire.contains(&"internet".to_string()), "{wire:?}");
        assert!(
            wire.iter()
                .all(|n| !hosts.contains_key(&format!("seed.{n}")))
        );
        let network: BTreeSet<String> = ["network".to_string()].into();
        let part = state.part(&hosts, &network, false);
        assert_eq!(
            part.routers.len(),
            1,
            "the router lives on the network node"
        );
        // Every namespace is in exactly one part.
        let all: BTreeSet<String> = seed.switch_hosts().map(str::to_string).collect();
        assert_eq!(
            state.part(&hosts, &all, false).namespaces.len()
                + state.part(&hosts, &BTreeSet::new(), true).namespaces.len(),
            state.namespaces.len()
        );
    }

    #[test]
    fn seed_desired_state_snapshot() {
        let state = plan(&crate::seed(), &LocalVlans::new());
        insta::assert_yaml_snapshot!(state);
    }

    const SELFSERVICE: &str = include_str!("../../../lab-topologies/selfservice-vxlan.yaml");

    fn selfservice(edit: impl FnOnce(String) -> String) -> DesiredState {
        let text = edit(SELFSERVICE.to_string());
        plan(
            &crate::parse("selfservice", &text).unwrap(),
            &LocalVlans::new(),
        )
    }

    fn br_tun_flows(state: &DesiredState, node: &str) -> Vec<FlowSpec> {
        let sw = state.switch(node).unwrap();
        sw.flows
            .iter()
            .filter(|f| f.bridge == BR_TUN)
            .cloned()
            .collect()
    }

    #[test]
    fn selfservice_desired_state_snapshot() {
        insta::assert_yaml_snapshot!(selfservice(|t| t));
    }

    /// With no physical network mapped (empty `bridge_mappings`) the
    /// agent makes no physical bridge, no patch ports to it and no flows
    /// for them; the seed's nodes, on physnet1, keep all three.
    #[test]
    fn br_vlan_exists_only_where_a_physical_network_is_mapped() {
        let state = selfservice(|t| t);
        for sw in &state.switches {
            let bridges: Vec<&str> = sw.bridges.iter().map(|b| b.name.as_str()).collect();
            assert!(!bridges.contains(&BR_VLAN), "{}: {bridges:?}", sw.node);
            let ports = sw.bridges.iter().flat_map(|b| &b.ports);
            assert!(
                !ports
                    .clone()
                    .any(|p| p.name == INT_BR_VLAN || p.name == PHY_BR_VLAN),
                "{}",
                sw.node
            );
            assert!(
                !sw.flows
                    .iter()
                    .any(|f| f.bridge == BR_VLAN || f.in_port.as_deref() == Some(INT_BR_VLAN)),
                "{}",
                sw.node
            );
        }
        let seed = plan(&crate::seed(), &LocalVlans::new());
        for sw in &seed.switches {
            let br_vlan = sw.bridges.iter().find(|b| b.name == BR_VLAN).unwrap();
            let ports: Vec<&str> = br_vlan.ports.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(ports, [PHY_BR_VLAN, UPLINK], "{}", sw.node);
            assert!(sw.flows.iter().any(|f| f.bridge == BR_INT
                && f.priority == 2
                && f.in_port.as_deref() == Some(INT_BR_VLAN)));
        }
    }

    /// `port_bound` writes `physical_network` whatever the network: on a
    /// tunnel network Python's None, which ovs-vsctl stores as `None`.
    #[test]
    fn a_port_on_a_tunnel_network_records_physical_network_none() {
        let state = selfservice(|t| t);
        let sw = state.switch("compute1").unwrap();
        let ports: Vec<&OvsPort> = sw
            .bridges
            .iter()
            .flat_map(|b| &b.ports)
            .filter(|p| !p.port_other_config.is_empty())
            .collect();
        assert!(!ports.is_empty());
        for port in ports {
            let config = &port.port_other_config;
            assert_eq!(config["network_type"], "vxlan", "{}", port.name);
            assert_eq!(config["physical_network"], "None", "{}", port.name);
        }
        let seed = plan(&crate::seed(), &LocalVlans::new());
        let sw = seed.switch("compute1").unwrap();
        let qvo = sw.bridges[0]
            .ports
            .iter()
            .find(|p| p.name.starts_with("qvo"))
            .unwrap();
        assert_eq!(qvo.port_other_config["physical_network"], "physnet1");
    }

    /// With `enable_isolated_metadata` every DHCP port holds
    /// 169.254.169.254/16, on a network behind a router too (7.2.0
    /// `DeviceManager.setup`); only an isolated network's DHCP server is
    /// the metadata route's next hop.
    #[test]
    fn every_dhcp_port_holds_the_metadata_address() {
        let metadata: Ipv4Net = "169.254.169.254/16".parse().unwrap();
        for (state, routed) in [
            (selfservice(|t| t), true),
            (
                plan(
                    &crate::parse("provider", PROVIDER).unwrap(),
                    &LocalVlans::new(),
                ),
                false,
            ),
        ] {
            assert!(!state.dhcp_servers.is_empty());
            for server in &state.dhcp_servers {
                let ns = state.namespace(&server.namespace).unwrap();
                let link = ns
                    .links
                    .iter()
                    .find(|l| l.name == server.interface)
                    .unwrap();
                assert!(link.addresses.contains(&metadata), "{}", server.network);
                assert_eq!(server.metadata_via == server.gateway, routed);
            }
        }
    }

    const PROVIDER: &str = include_str!("../../../lab-topologies/provider.yaml");

    #[test]
    fn provider_desired_state_snapshot() {
        let topo = crate::parse("provider", PROVIDER).unwrap();
        insta::assert_yaml_snapshot!(plan(&topo, &LocalVlans::new()));
    }

    const HA: &str = include_str!("../../../lab-topologies/ha-vrrp.yaml");

    #[test]
    fn an_ha_router_has_a_copy_per_node_whose_addresses_are_keepalived_s() {
        let topo = crate::parse("ha-vrrp.yaml", HA).unwrap();
        let state = plan(&topo, &LocalVlans::new());
        let lab = topo.lab.as_str();
        let router = topo.router("router1").unwrap();
        let ha_net = topo.l3_ha.as_ref().unwrap().network.clone();
        for node in ["network1", "network2"] {
            let ns = naming::ha_router_namespace(lab, node, "router1");
            assert_eq!(router_namespace_on(lab, router, node), ns);
            let copy = state.namespace(&ns).expect("a copy per node");
            // No routes of its own, and every link's addresses shared
            // with keepalived; the ha- port holds its own address.
            assert!(copy.routes.is_empty());
            assert!(
                copy.links
                    .iter()
                    .all(|l| l.addresses_also_by == Some(AddressSetter::Keepalived))
            );
            let ha = HaPort::of(router, node);
            let own = copy.links.iter().find(|l| l.name == ha.device).unwrap();
            assert_eq!(own.addresses.len(), 1);
            assert!(
                copy.links
                    .iter()
                    .filter(|l| l.name != ha.device)
                    .all(|l| l.addresses.is_empty())
            );
            // Its ports on the node's br-int, the ha- port's tap on the HA
            // network's local VLAN.
            let switch = state.switch(node).unwrap();
            let tag = switch.local_vlans[&ha_net];
            let br_int = &switch.bridges[0];
            let tap = br_int.ports.iter().find(|p| p.name == ha.tap).unwrap();
            assert_eq!(tap.tag, Some(tag));
            // Its NAT and metadata like any router's.
            assert!(state.routers.iter().any(|r| r.namespace == ns));
            assert!(state.metadata.iter().any(|m| m.namespace == ns));
            let k = state.keepalived.iter().find(|k| k.node == node).unwrap();
            assert_eq!(k.namespace, ns);
            assert_eq!(k.interface, ha.device);
            assert_eq!(k.excluded.len(), 4, "{:?}", k.excluded);
            assert_eq!(k.routes.len(), 1);
        }
        assert_eq!(state.keepalived.len(), 2);
        assert!(state.namespace(&router_namespace(lab, "router1")).is_none());
        // Compute nodes do not carry the HA network.
        assert!(
            !state
                .switch("compute1")
                .unwrap()
                .local_vlans
                .contains_key(&ha_net)
        );
    }

    #[test]
    fn a_failed_node_is_left_out_and_its_switch_ports_are_down() {
        let topo = crate::parse("ha-vrrp.yaml", HA).unwrap();
        let mut state = plan(&topo, &LocalVlans::new());
        let all = state.clone();
        let failed = BTreeSet::from(["network1".to_string(), "compute1".to_string()]);
        state.fail_nodes(&topo, &failed);
        let lab = topo.lab.as_str();
        let gone = namespaces_on(&topo, &failed);
        for ns in [
            naming::namespace(lab, "network1"),
            naming::namespace(lab, "compute1"),
            naming::namespace(lab, "instance1"),
            naming::ha_router_namespace(lab, "network1", "router1"),
            dhcp::namespace(lab, "selfservice1"),
        ] {
            assert!(gone.contains(&ns), "{ns}");
            assert!(state.namespace(&ns).is_none(), "{ns}");
        }
        assert!(
            state
                .namespace(&naming::namespace(lab, "instance2"))
                .is_some()
        );
        assert_eq!(state.switches.len(), all.switches.len() - 2);
        assert_eq!(state.keepalived.len(), 1);
        assert_eq!(state.keepalived[0].node, "network2");
        assert!(state.dhcp_servers.iter().all(|d| d.node == "network2"));
        assert!(state.dhcp_clients.iter().all(|c| c.instance == "instance2"));
        let firewalls: Vec<&str> = state.firewalls.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(firewalls, ["network2", "compute2"]);
        for switch in ["overlay", "provider"] {
            let ns = state.namespace(&naming::namespace(lab, switch)).unwrap();
            for link in &ns.links {
                assert_eq!(
                    link.down,
                    failed.contains(&link.name),
                    "{switch}: {}",
                    link.name
                );
            }
        }
        // Nothing failed: the plan as it was.
        let mut same = all.clone();
        same.fail_nodes(&topo, &BTreeSet::new());
        assert_eq!(same, all);
    }

    #[test]
    fn a_physical_router_trunks_its_provider_networks_on_its_own_switch() {
        let topo = crate::parse("provider", PROVIDER).unwrap();
        let state = plan(&topo, &LocalVlans::new());
        let sw = state.switch("physrouter").expect("the router's switch");
        assert_eq!(sw.namespace, "provider.physrouter");
        let ports: Vec<(&str, Option<u16>, &str)> = sw.bridges[0]
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.tag, p.interface_type()))
            .collect();
        assert_eq!(sw.bridges[0].name, BR_TRUNK);
        assert_eq!(
            ports,
            [
                ("eth1", None, ""),
                ("eth1.flat", None, "internal"),
                ("eth1.101", Some(101), "internal")
            ]
        );
        let ns = state.namespace("provider.physrouter").unwrap();
        assert_eq!(ns.kind, NamespaceKind::PhysicalRouter);
        assert!(
            ns.sysctls
                .contains(&("net/ipv4/ip_forward".into(), "1".into()))
        );
        assert_eq!(ns.ovs_internal, ["eth1.flat", "eth1.101"]);
        let addresses: Vec<(String, String)> = ns
            .links
            .iter()
            .flat_map(|l| l.addresses.iter().map(|a| (l.name.clone(), a.to_string())))
            .collect();
        assert_eq!(
            addresses,
            [
                ("eth1.flat".to_string(), "203.0.113.1/24".to_string()),
                ("eth1.101".into(), "192.0.2.1/24".into()),
                ("eth2".into(), "198.51.100.1/24".into())
            ]
        );
        // Its own address is the internet's gateway: no default route.
        assert!(ns.routes.is_empty());
        // The trunk and the external NIC are ports of the two switches.
        let physnet = state.namespace("provider.provider").unwrap();
        assert!(physnet.links.iter().any(|l| l.name == "physrouter"));
        let internet = state.namespace("provider.internet").unwrap();
        assert!(internet.links.iter().any(|l| l.name == "physrouter"));
        // The internet's host routes both provider networks through it.
        let server = state.namespace("provider.server").unwrap();
        let routes: Vec<String> = server
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.destination, r.gateway))
            .collect();
        assert_eq!(
            routes,
            [
                "203.0.113.0/24 via 198.51.100.1",
                "192.0.2.0/24 via 198.51.100.1"
            ]
        );
        // No Neutron router has a gateway: no br-ex, no eth2 on the network node.
        let network = state.switch("network").unwrap();
        assert!(network.bridges.iter().all(|b| b.name != BR_EX));
    }

    #[test]
    fn a_physical_router_only_on_the_external_network_has_no_switch() {
        let text = PROVIDER
            .replace("      - { network: provider1, address: 203.0.113.1 }\n", "")
            .replace("      - { network: provider2, address: 192.0.2.1 }\n", "");
        let topo = crate::parse("provider", &text).unwrap();
        assert_eq!(topo.switch_hosts().count(), 3);
        let state = plan(&topo, &LocalVlans::new());
        assert!(state.switch("physrouter").is_none());
        let ns = state.namespace("provider.physrouter").unwrap();
        assert!(ns.veths.iter().all(|v| v.name != UPLINK));
    }

    #[test]
    fn without_l2population_every_node_tunnels_to_every_other() {
        let state = selfservice(|t| t.replace("l2_population: true", "l2_population: false"));
        let c1 = state.switch("compute1").unwrap();
        let br_tun = c1.bridges.iter().find(|b| b.name == BR_TUN).unwrap();
        let names: Vec<&str> = br_tun.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["patch-int", "vxlan-0a000101", "vxlan-0a000103"]);
        let port = &br_tun.ports[1];
        assert_eq!(port.interface_type(), "vxlan");
        let options = port.interface_options();
        assert_eq!(options["remote_ip"], "10.0.1.1");
        assert_eq!(options["local_ip"], "10.0.1.2");
        assert_eq!(options["in_key"], "flow");
        let flows = br_tun_flows(&state, "compute1");
        // VNI 101 → local VLAN 1, then learn; flood to both tunnels.
        assert!(flows.contains(&FlowSpec {
            bridge: BR_TUN.into(),
            table: 4,
            priority: 1,
            tun_id: Some(101),
            actions: vec![
                FlowAction::PushVlan,
                FlowAction::ModVlanVid(1),
                FlowAction::Resubmit(10)
            ],
            ..FlowSpec::default()
        }));
        assert!(flows.contains(&FlowSpec {
            bridge: BR_TUN.into(),
            table: 22,
            priority: FLOOD_PRIORITY,
            dl_vlan: Some(VlanMatch::Id(1)),
            actions: vec![
                FlowAction::StripVlan,
                FlowAction::SetTunnel(101),
                FlowAction::Output("vxlan-0a000101".into()),
                FlowAction::Output("vxlan-0a000103".into()),
            ],
            ..FlowSpec::default()
        }));
        assert!(!flows.iter().any(|f| f.table == 20 && f.priority == 2));
        assert!(!flows.iter().any(|f| f.table == 21));
        // Instances on a VXLAN network send with its MTU and no offload.
        let i1 = state
            .namespace(&naming::namespace("selfservice", "instance1"))
            .unwrap();
        assert_eq!(i1.links[0].mtu, Some(1450));
        assert_eq!(i1.links[0].tx_checksum, Some(false));
    }

    #[test]
    fn with_l2population_tunnels_go_only_where_the_networks_have_ports() {
        // compute2 keeps only selfservice2 (instance2), which compute1 lacks.
        let state = selfservice(|t| {
            let t = t.replace("arp_responder: false", "arp_responder: true");
            // instance3 is the last instance; the checks go with it.
            let cut = t.find("  - name: instance3").unwrap();
            t[..cut].to_string()
        });
        let c1 = state.switch("compute1").unwrap();
        let br_tun = c1.bridges.iter().find(|b| b.name == BR_TUN).unwrap();
        let names: Vec<&str> = br_tun.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["patch-int", "vxlan-0a000101"],
            "no tunnel to compute2"
        );
        let flows = br_tun_flows(&state, "compute1");
        let topo = crate::parse("selfservice", SELFSERVICE).unwrap();
        let router = RouterPort::internal(topo.router("router1").unwrap(), "selfservice1");
        assert!(flows.contains(&FlowSpec {
            bridge: BR_TUN.into(),
            table: 20,
            priority: 2,
            dl_vlan: Some(VlanMatch::Id(1)),
            dl_dst: Some(MacMatch::Exact(router.mac)),
            actions: vec![
                FlowAction::StripVlan,
                FlowAction::SetTunnel(101),
                FlowAction::Output("vxlan-0a000101".into()),
            ],
            ..FlowSpec::default()
        }));
        assert!(flows.contains(&FlowSpec {
            bridge: BR_TUN.into(),
            table: 21,
            priority: 1,
            arp: true,
            dl_vlan: Some(VlanMatch::Id(1)),
            arp_tpa: Some("192.168.1.1".parse().unwrap()),
            actions: arp_reply(router.mac, "192.168.1.1".parse().unwrap()),
            ..FlowSpec::default()
        }));
        // compute2 floods selfservice2 only to the network node.
        let c2 = br_tun_flows(&state, "compute2");
        let flood: Vec<_> = c2
            .iter()
            .filter(|f| f.table == 22 && f.priority > 0)
            .collect();
        assert_eq!(flood.len(), 1);
        assert_eq!(
            flood[0].actions.last(),
            Some(&FlowAction::Output("vxlan-0a000101".into()))
        );
    }

    #[test]
    fn local_vlans_are_node_local_and_not_the_segment() {
        let state = plan(&crate::seed(), &LocalVlans::new());
        let c1 = state.switch("compute1").unwrap();
        assert_eq!(c1.local_vlans, BTreeMap::from([("net1".to_string(), 1)]));
        let c2 = state.switch("compute2").unwrap();
        assert_eq!(
            c2.local_vlans,
            BTreeMap::from([("net1".to_string(), 1), ("net2".to_string(), 2)])
        );
        // The wire carries the segment: br-vlan rewrites local → 101.
        assert!(c1.flows.iter().any(|f| f.bridge == BR_VLAN
            && f.dl_vlan == Some(VlanMatch::Id(1))
            && f.actions == vec![FlowAction::ModVlanVid(101), FlowAction::Normal]));
        assert!(c1.flows.iter().any(|f| f.bridge == BR_INT
            && f.dl_vlan == Some(VlanMatch::Id(101))
            && f.actions == vec![FlowAction::ModVlanVid(1), FlowAction::Normal]));
    }

    #[test]
    fn running_local_vlans_are_kept() {
        let previous = LocalVlans::from([
            (("compute2".to_string(), "net2".to_string()), 1),
            (("compute2".to_string(), "net1".to_string()), 7),
        ]);
        let state = plan(&crate::seed(), &previous);
        let c2 = state.switch("compute2").unwrap();
        assert_eq!(c2.local_vlans["net2"], 1);
        assert_eq!(c2.local_vlans["net1"], 7);
    }

    #[test]
    fn hybrid_plug_is_wired_as_os_vif_does() {
        let seed = crate::seed();
        let state = plan(&seed, &LocalVlans::new());
        let plug = seed.instance("instance1").unwrap().plug();
        let node = state.namespace("seed.compute1").unwrap();
        assert!(node.bridges.contains(&plug.qbr));
        let tap = node.links.iter().find(|l| l.name == plug.tap).unwrap();
        assert_eq!(tap.master.as_deref(), Some(plug.qbr.as_str()));
        let qvb = node.links.iter().find(|l| l.name == plug.qvb).unwrap();
        assert_eq!(qvb.master.as_deref(), Some(plug.qbr.as_str()));
        let port = state.switch("compute1").unwrap().bridges[0]
            .ports
            .iter()
            .find(|p| p.name == plug.qvo)
            .unwrap();
        assert_eq!(port.tag, Some(1));
        assert_eq!(
            port.interface_external_ids["iface-id"],
            plug.port.to_string()
        );
        assert_eq!(port.interface_external_ids["iface-status"], "active");
        let inst = state.namespace("seed.instance1").unwrap();
        assert_eq!(inst.veths[0].peer, plug.tap);
        assert_eq!(inst.veths[0].peer_namespace, "seed.compute1");
        assert_eq!(inst.routes[0].gateway, Ipv4Addr::new(192, 168, 1, 1));
    }
}
