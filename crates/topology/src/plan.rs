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
}

/// A legacy router's NAT as the L3 agent writes it (`neutron-l3-agent-*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallSpec {
    pub node: String,
    pub namespace: String,
    pub ports: Vec<FirewallPort>,
    /// The sets of the remote groups the node's rules refer to.
    pub ipsets: Vec<IpSetSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallPort {
    pub instance: String,
    /// The `tap…` device on `qbr…` (physdev matches name it).
    pub tap: String,
    pub qvb: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// Conntrack zone: one per network on the node (its local VLAN id).
    pub zone: u16,
    pub rules: Vec<FirewallRule>,
}

/// One security-group rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirewallRule {
    pub direction: Direction,
    pub protocol: Option<Protocol>,
    pub port_range: Option<(u16, u16)>,
    /// `None`: any source/destination.
    pub remote: Option<FirewallRemote>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpSetSpec {
    /// `NIPv4` + the group's UUID, cut to ipset's 31 characters.
    pub name: String,
    pub group: String,
    pub members: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceKind {
    Node,
    Instance,
    PhysicalNetwork,
    ExternalNetwork,
    ExternalHost,
    Router,
}

/// One named network namespace and what lives in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// Configuration of every link that lives here.
    pub links: Vec<LinkSpec>,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VethSpec {
    pub name: String,
    pub peer: String,
    /// Where the peer end lives (may be this namespace).
    pub peer_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// TSO frames across; `None` where it does not matter.
    pub tx_checksum: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSpec {
    /// `0.0.0.0/0` for the default route.
    pub destination: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// A node's Open vSwitch: bridges, ports and flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchSpec {
    pub node: String,
    pub namespace: String,
    pub bridges: Vec<OvsBridge>,
    pub flows: Vec<FlowSpec>,
    /// Node-local VLAN id of each network present on the node.
    pub local_vlans: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvsBridge {
    pub name: String,
    /// Every port but the bridge's own internal port, which always exists.
    pub ports: Vec<OvsPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvsPort {
    pub name: String,
    /// Access VLAN (the node-local tag) for instance ports.
    pub tag: Option<u16>,
    /// `type=patch, options:peer=<peer>` when set; a system port otherwise.
    pub patch_peer: Option<String>,
    /// Interface `external_ids`, as Nova/os-vif write them.
    pub interface_external_ids: BTreeMap<String, String>,
    /// Port `other_config`, as the OVS agent writes it (`net_uuid`, `tag`…).
    pub port_other_config: BTreeMap<String, String>,
}

/// One flow, with ports named rather than numbered. Unset matches are
/// wildcards; `FlowSpec::default()` is a table-0, priority-0 drop on no
/// bridge, to be filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    pub actions: Vec<FlowAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VlanMatch {
    /// `dl_vlan=<id>`: tagged with this id.
    Id(u16),
    /// `vlan_tci=0x0000`: no tag (a flat network's frames).
    Untagged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveField {
    EthSrc,
    EthDst,
    ArpSha,
    ArpTha,
    ArpSpa,
    ArpTpa,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
    /// `set_tunnel:<key>` (`set_field:<key>->tun_id`).
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
    /// out of a tunnel, as `br_tun.py` writes it:
    /// `learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],
    /// NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],
    /// load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[])`.
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
            links: std::iter::once(bridge_link(&physnet.name))
                .chain(
                    topo.nodes
                        .iter()
                        .map(|n| plain_link(&n.name, Some(&physnet.name))),
                )
                .collect(),
            routes: vec![],
        });
    }

    // The external network: a Linux bridge named after it, with a port per
    // network node (peer of that node's eth2) and per external host.
    for ext in &topo.external_networks {
        let hosts = topo.external_hosts.iter().filter(|h| h.network == ext.name);
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &ext.name),
            object: ext.name.clone(),
            kind: NamespaceKind::ExternalNetwork,
            sysctls: ipv6_off.clone(),
            bridges: vec![ext.name.clone()],
            veths: vec![],
            links: std::iter::once(bridge_link(&ext.name))
                .chain(external_nodes(topo).map(|n| plain_link(&n.name, Some(&ext.name))))
                .chain(hosts.map(|h| plain_link(&h.name, Some(&ext.name))))
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
            links: vec![LinkSpec {
                mac: Some(naming::external_host_mac(lab, &host.name)),
                addresses: vec![
                    Ipv4Net::new(host.address, ext.cidr.prefix_len()).expect("valid prefix"),
                ],
                ..plain_link(GUEST_NIC, None)
            }],
            routes: vec![],
        });
    }

    let physnet_ns = topo
        .physical_networks
        .first()
        .map(|p| naming::namespace(lab, &p.name));
    let mut switches = Vec::new();
    let mut firewalls = Vec::new();
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
        let local_vlans = allocate_local_vlans(topo, node, previous);
        let mut br_int_ports = vec![patch_port(INT_BR_VLAN, PHY_BR_VLAN)];
        for inst in topo.instances_on(&node.name) {
            let plug = HybridPlug::new(lab, &inst.name);
            spec.bridges.push(plug.qbr.clone());
            spec.veths.push(VethSpec {
                name: plug.qvb.clone(),
                peer: plug.qvo.clone(),
                peer_namespace: ns.clone(),
            });
            spec.links.push(bridge_link(&plug.qbr));
            spec.links.push(plain_link(&plug.tap, Some(&plug.qbr)));
            spec.links.push(plain_link(&plug.qvb, Some(&plug.qbr)));
            spec.links.push(plain_link(&plug.qvo, None));
            let net = topo.network(&inst.network).expect("validated reference");
            let tag = local_vlans[&inst.network];
            br_int_ports.push(OvsPort {
                name: plug.qvo.clone(),
                tag: Some(tag),
                patch_peer: None,
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
        for router in topo.routers.iter().filter(|r| r.node == node.name) {
            for network in &router.interfaces {
                let net = topo.network(network).expect("validated reference");
                let port = RouterPort::internal(lab, &router.name, network);
                let tag = local_vlans[network];
                spec.veths.push(VethSpec {
                    name: port.tap.clone(),
                    peer: port.device.clone(),
                    peer_namespace: router_namespace(lab, &router.name),
                });
                spec.links.push(plain_link(&port.tap, None));
                br_int_ports.push(OvsPort {
                    name: port.tap.clone(),
                    tag: Some(tag),
                    patch_peer: None,
                    interface_external_ids: router_port_ids(&port),
                    port_other_config: agent_port_config(lab, net, tag),
                });
            }
            if router.external_gateway.is_some() {
                let port = RouterPort::gateway(lab, &router.name);
                spec.veths.push(VethSpec {
                    name: port.tap.clone(),
                    peer: port.device.clone(),
                    peer_namespace: router_namespace(lab, &router.name),
                });
                spec.links.push(plain_link(&port.tap, None));
                br_ex_ports.push(OvsPort {
                    name: port.tap.clone(),
                    tag: None,
                    patch_peer: None,
                    interface_external_ids: router_port_ids(&port),
                    port_other_config: BTreeMap::new(),
                });
            }
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
        let mut br_vlan_ports = vec![patch_port(PHY_BR_VLAN, INT_BR_VLAN)];
        if physnet_ns.is_some() {
            br_vlan_ports.push(plain_port(UPLINK));
        }
        let mut bridges = vec![
            OvsBridge {
                name: BR_INT.to_string(),
                ports: br_int_ports,
            },
            OvsBridge {
                name: BR_VLAN.to_string(),
                ports: br_vlan_ports,
            },
        ];
        let mut flows = agent_flows(topo, &local_vlans);
        // ARP spoofing protection (`prevent_arp_spoofing`, on in Liberty):
        // an instance's ARP goes to table 24, which passes only its own address.
        for inst in topo.instances_on(&node.name) {
            let qvo = HybridPlug::new(lab, &inst.name).qvo;
            let arp = |table, priority, arp_spa, actions| FlowSpec {
                bridge: BR_INT.to_string(),
                table,
                priority,
                in_port: Some(qvo.clone()),
                arp: true,
                arp_spa,
                actions,
                ..FlowSpec::default()
            };
            flows.push(arp(0, 10, None, vec![FlowAction::Resubmit(24)]));
            flows.push(arp(24, 2, Some(inst.address), vec![FlowAction::Normal]));
        }
        flows.sort();
        if ext_ns.is_some() {
            bridges.push(OvsBridge {
                name: BR_EX.to_string(),
                ports: br_ex_ports,
            });
            flows.push(FlowSpec {
                bridge: BR_EX.to_string(),
                actions: vec![FlowAction::Normal],
                ..FlowSpec::default()
            });
            flows.sort();
        }
        if node.role == NodeRole::Compute {
            firewalls.push(firewall(topo, node, &local_vlans));
        }
        switches.push(SwitchSpec {
            node: node.name.clone(),
            namespace: ns.clone(),
            bridges,
            flows,
            local_vlans,
        });
        namespaces.push(spec);
    }

    for inst in &topo.instances {
        let plug = HybridPlug::new(lab, &inst.name);
        let net = topo.network(&inst.network).expect("validated reference");
        namespaces.push(NamespaceSpec {
            name: naming::namespace(lab, &inst.name),
            object: inst.name.clone(),
            kind: NamespaceKind::Instance,
            sysctls: ipv6_off.clone(),
            bridges: vec![],
            veths: vec![VethSpec {
                name: GUEST_NIC.to_string(),
                peer: plug.tap.clone(),
                peer_namespace: naming::namespace(lab, &inst.node),
            }],
            links: vec![LinkSpec {
                name: GUEST_NIC.to_string(),
                master: None,
                mac: Some(inst.mac),
                addresses: vec![
                    Ipv4Net::new(inst.address, net.cidr.prefix_len()).expect("valid prefix"),
                ],
                tx_checksum: Some(true),
            }],
            routes: vec![RouteSpec {
                destination: Ipv4Net::default(),
                gateway: net.gateway,
            }],
        });
    }

    let mut routers = Vec::new();
    for router in &topo.routers {
        let mut links = Vec::new();
        let mut internal_cidrs = Vec::new();
        for network in &router.interfaces {
            let net = topo.network(network).expect("validated reference");
            let port = RouterPort::internal(lab, &router.name, network);
            links.push(LinkSpec {
                mac: Some(port.mac),
                addresses: vec![
                    Ipv4Net::new(net.gateway, net.cidr.prefix_len()).expect("valid prefix"),
                ],
                ..plain_link(&port.device, None)
            });
            internal_cidrs.push(net.cidr);
        }
        let gateway = RouterPort::gateway(lab, &router.name);
        let mut routes = Vec::new();
        let mut floating_ips = Vec::new();
        if let Some(gw) = &router.external_gateway {
            let ext = topo
                .external_network(&gw.network)
                .expect("validated reference");
            let mut addresses =
                vec![Ipv4Net::new(gw.address, ext.cidr.prefix_len()).expect("valid prefix")];
            for inst in &topo.instances {
                let behind = router.interfaces.contains(&inst.network);
                if let (true, Some(fip)) = (behind, inst.floating_ip) {
                    addresses.push(Ipv4Net::new(fip, 32).expect("valid prefix"));
                    floating_ips.push((inst.address, fip));
                }
            }
            links.push(LinkSpec {
                mac: Some(gateway.mac),
                addresses,
                ..plain_link(&gateway.device, None)
            });
            routes.push(RouteSpec {
                destination: Ipv4Net::default(),
                gateway: ext.gateway,
            });
        }
        let namespace = router_namespace(lab, &router.name);
        let mut sysctls = ipv6_off.clone();
        sysctls.push(("net/ipv4/ip_forward".to_string(), "1".to_string()));
        namespaces.push(NamespaceSpec {
            name: namespace.clone(),
            object: router.name.clone(),
            kind: NamespaceKind::Router,
            sysctls,
            bridges: vec![],
            veths: vec![],
            links,
            routes,
        });
        routers.push(RouterSpec {
            router: router.name.clone(),
            namespace,
            qg: gateway.device.clone(),
            gateway_ip: router.external_gateway.as_ref().map(|g| g.address),
            snat: router.snat,
            floating_ips,
            internal_cidrs,
        });
    }

    DesiredState {
        lab: lab.to_string(),
        cookie: naming::lab_cookie(lab),
        namespaces,
        switches,
        routers,
        firewalls,
    }
}

/// The namespace of a legacy router: `<lab>.qrouter-<router uuid>`.
pub fn router_namespace(lab: &str, router: &str) -> String {
    naming::namespace(
        lab,
        &format!("{QROUTER}{}", naming::object_uuid(lab, "router", router)),
    )
}

/// Network nodes that reach the external network (each gets br-ex + eth2).
fn external_nodes(topo: &Topology) -> impl Iterator<Item = &Node> {
    let wanted = !topo.external_networks.is_empty();
    topo.nodes
        .iter()
        .filter(move |n| wanted && n.role == NodeRole::Network)
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
    pub fn internal(lab: &str, router: &str, network: &str) -> Self {
        Self::new(lab, QR, &format!("{router}:{network}"))
    }

    pub fn gateway(lab: &str, router: &str) -> Self {
        Self::new(lab, QG, &format!("{router}:gateway"))
    }

    fn new(lab: &str, prefix: &str, name: &str) -> Self {
        let port = naming::object_uuid(lab, "router-port", name);
        RouterPort {
            port,
            device: naming::device_name(prefix, &port),
            tap: naming::device_name(TAP, &port),
            mac: naming::derived_mac(&port),
        }
    }
}

fn router_port_ids(port: &RouterPort) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("attached-mac".into(), format_mac(&port.mac)),
        ("iface-id".into(), port.port.to_string()),
        ("iface-status".into(), "active".into()),
    ])
}

fn plain_port(name: &str) -> OvsPort {
    OvsPort {
        name: name.to_string(),
        tag: None,
        patch_peer: None,
        interface_external_ids: BTreeMap::new(),
        port_other_config: BTreeMap::new(),
    }
}

/// The firewall of a compute node: each instance's security groups, and
/// an ipset per remote group its rules refer to (Liberty's default,
/// `enable_ipset = True`).
fn firewall(topo: &Topology, node: &Node, local_vlans: &BTreeMap<String, u16>) -> FirewallSpec {
    let lab = topo.lab.as_str();
    let members = |group: &str| -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = topo
            .instances
            .iter()
            .filter(|i| i.security_groups.iter().any(|g| g == group))
            .map(|i| i.address)
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let mut ipsets: Vec<IpSetSpec> = Vec::new();
    let mut ports = Vec::new();
    for inst in topo.instances_on(&node.name) {
        let plug = HybridPlug::new(lab, &inst.name);
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
            zone: local_vlans[&inst.network],
            rules,
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
        interface_external_ids: BTreeMap::new(),
        port_other_config: BTreeMap::new(),
    }
}

/// What the OVS agent records in a port's `other_config`.
fn agent_port_config(lab: &str, net: &Network, tag: u16) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "net_uuid".into(),
            naming::network_uuid(lab, &net.name).to_string(),
        ),
        ("network_type".into(), "vlan".into()),
        ("physical_network".into(), net.physical_network.clone()),
        ("segmentation_id".into(), net.segmentation_id.to_string()),
        ("tag".into(), tag.to_string()),
    ])
}

/// Networks that need a local VLAN on `node`, in topology order.
fn networks_on<'a>(topo: &'a Topology, node: &Node) -> Vec<&'a Network> {
    let wanted: BTreeSet<&str> = topo
        .instances_on(&node.name)
        .map(|i| i.network.as_str())
        .chain(
            topo.routers
                .iter()
                .filter(|r| r.node == node.name)
                .flat_map(|r| r.interfaces.iter().map(String::as_str)),
        )
        .collect();
    topo.networks
        .iter()
        .filter(|n| wanted.contains(n.name.as_str()))
        .collect()
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
fn agent_flows(topo: &Topology, local_vlans: &BTreeMap<String, u16>) -> Vec<FlowSpec> {
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
        flow(BR_INT, 0, 2, Some(INT_BR_VLAN), None, vec![]),
        flow(BR_INT, 23, 0, None, None, vec![]),
        flow(BR_INT, 24, 0, None, None, vec![]),
        flow(BR_VLAN, 0, 0, None, None, vec![FlowAction::Normal]),
        flow(BR_VLAN, 0, 2, Some(PHY_BR_VLAN), None, vec![]),
    ];
    for (network, &local) in local_vlans {
        let segment = topo.network(network).expect("validated").segmentation_id;
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
    flows.sort();
    flows
}

impl DesiredState {
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
    fn seed_desired_state_snapshot() {
        let state = plan(&crate::seed(), &LocalVlans::new());
        insta::assert_yaml_snapshot!(state);
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
        let state = plan(&crate::seed(), &LocalVlans::new());
        let plug = HybridPlug::new("seed", "instance1");
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
