//! Pictures of a lab: the planned [`DesiredState`] drawn as people draw a
//! Neutron deployment — one box per node with its OVS and Linux bridges,
//! instances and routers hanging off them, the physical and external networks
//! as switches, and every veth or patch link as a labelled line.
//!
//! One [`Graph`] is built from the plan and rendered three ways ([`dot`],
//! [`mermaid`], [`svg()`]), so the three formats always show the same lab.
//! Everything here is pure: no graphviz, no files.

pub mod svg;

use std::collections::BTreeMap;

use crate::Topology;
use crate::model::NetworkType;
use crate::naming::UPLINK;
use crate::plan::{DesiredState, NamespaceKind, NamespaceSpec};

/// A lab as boxes and lines, independent of any output format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// The lab's name, used as the picture's title.
    pub lab: String,
    /// Namespaces that hold bridges: nodes, the physical and external networks.
    pub clusters: Vec<Cluster>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Every device of the plan, by `(namespace, device)`, and the box it is
    /// drawn on (its namespace's box, its bridge, or a box of its own): where
    /// a trace hop or a repair that names a device is shown.
    pub devices: BTreeMap<(String, String), usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    Node,
    PhysicalNetwork,
    ExternalNetwork,
}

/// A namespace drawn as a frame around its bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub kind: ClusterKind,
    /// The topology object (`compute1`, `physnet1`, …).
    pub object: String,
    /// The namespace it lives in.
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// An Open vSwitch bridge (`br-int`, `br-vlan`, `br-ex`).
    OvsBridge,
    /// A Linux bridge on a node (`qbr…`).
    LinuxBridge,
    /// The Linux bridge that is a physical or external network.
    Switch,
    Instance,
    Router,
    ExternalHost,
    /// A device the plan links to but no bridge or namespace box holds.
    Device,
}

/// One box; its label is a few short lines, the first one its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Index into [`Graph::clusters`] for bridges; `None` for namespaces
    /// drawn as boxes of their own (instances, routers, external hosts).
    pub cluster: Option<usize>,
    /// The cluster a free box belongs next to (an instance's node, …).
    pub anchor: Option<usize>,
    pub label: Vec<String>,
}

/// One link between two boxes (a veth pair or an OVS patch pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// The two device names, then what travels on it (`tag 1`, `vlan 101,102`).
    pub label: Vec<String>,
}

impl Graph {
    /// Builds the picture of a planned lab; `topo` supplies what the plan
    /// does not repeat (the VLAN ids of each network).
    pub fn new(state: &DesiredState, topo: &Topology) -> Self {
        Builder::new(state, topo).build()
    }

    /// The stable identifier of node `i` in DOT and Mermaid.
    pub fn node_id(i: usize) -> String {
        format!("n{i}")
    }

    /// The same picture with the instances of each node that has more than
    /// `above` of them drawn as one box (`50 instances`), and their `qbr…`
    /// bridges as one: a large lab stays a picture one can take in. Lines
    /// between the same two boxes become one (`50 links`, the tags they
    /// carry), and [`Graph::devices`] points at the boxes that hold them now.
    pub fn collapse_instances(mut self, above: usize) -> Graph {
        let mut target: Vec<usize> = (0..self.nodes.len()).collect();
        for c in 0..self.clusters.len() {
            let instances: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let n = &self.nodes[i];
                    n.kind == NodeKind::Instance && n.cluster.is_none() && n.anchor == Some(c)
                })
                .collect();
            if instances.len() <= above {
                continue;
            }
            let bridges: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let n = &self.nodes[i];
                    n.kind == NodeKind::LinuxBridge && n.cluster == Some(c)
                })
                .collect();
            let first = self.nodes[instances[0]].label[0].clone();
            let last = self.nodes[instances[instances.len() - 1]].label[0].clone();
            let object = self.clusters[c].object.clone();
            let group = self.nodes.len();
            self.nodes.push(Node {
                kind: NodeKind::Instance,
                cluster: None,
                anchor: Some(c),
                label: vec![
                    format!("{} instances", instances.len()),
                    format!("on {object}"),
                    format!("{first} … {last}"),
                ],
            });
            target.push(group);
            for i in instances {
                target[i] = group;
            }
            if !bridges.is_empty() {
                let group = self.nodes.len();
                self.nodes.push(Node {
                    kind: NodeKind::LinuxBridge,
                    cluster: Some(c),
                    anchor: None,
                    label: vec![format!("{} qbr bridges", bridges.len())],
                });
                target.push(group);
                for b in bridges {
                    target[b] = group;
                }
            }
        }
        // Only the boxes that stand for themselves stay, renumbered.
        let mut renumbered = vec![usize::MAX; self.nodes.len()];
        let mut nodes = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if target[i] == i {
                renumbered[i] = nodes.len();
                nodes.push(node.clone());
            }
        }
        let new = |i: usize| renumbered[target[i]];
        let mut edges: Vec<Edge> = Vec::new();
        let mut merged: BTreeMap<(usize, usize), (usize, usize)> = BTreeMap::new();
        for e in &self.edges {
            let (from, to) = (new(e.from), new(e.to));
            if target[e.from] == e.from && target[e.to] == e.to {
                // Lines between boxes that stay are drawn as they were.
                edges.push(Edge {
                    from,
                    to,
                    label: e.label.clone(),
                });
                continue;
            }
            let key = (from.min(to), from.max(to));
            match merged.get_mut(&key) {
                None => {
                    merged.insert(key, (edges.len(), 1));
                    edges.push(Edge {
                        from,
                        to,
                        label: e.label.clone(),
                    });
                }
                Some((at, count)) => {
                    *count += 1;
                    let edge = &mut edges[*at];
                    let tags = edge
                        .label
                        .iter()
                        .chain(&e.label)
                        .filter(|l| l.starts_with("tag ") || l.starts_with("vlan "))
                        .cloned()
                        .collect::<std::collections::BTreeSet<_>>();
                    edge.label = std::iter::once(format!("{count} links"))
                        .chain(tags)
                        .collect();
                }
            }
        }
        let devices = self
            .devices
            .iter()
            .map(|(k, &i)| (k.clone(), new(i)))
            .collect();
        Graph {
            lab: self.lab,
            clusters: self.clusters,
            nodes,
            edges,
            devices,
        }
    }
}

/// The lab in Graphviz DOT (render with `dot -Tsvg`).
pub fn dot(state: &DesiredState, topo: &Topology) -> String {
    render_dot(&Graph::new(state, topo))
}

/// The lab as a Mermaid flowchart (GitHub renders it in Markdown).
pub fn mermaid(state: &DesiredState, topo: &Topology) -> String {
    render_mermaid(&Graph::new(state, topo))
}

/// The lab as a standalone SVG image, laid out here, deterministically.
pub fn svg(state: &DesiredState, topo: &Topology) -> String {
    svg::render(&Graph::new(state, topo))
}

/// [`svg()`] for a page: the same picture, each box, frame and line in a
/// group that carries its index in `graph` (see [`svg::render_with`]).
pub fn svg_interactive(graph: &Graph) -> String {
    svg::render_with(graph, true)
}

struct Builder<'a> {
    state: &'a DesiredState,
    topo: &'a Topology,
    graph: Graph,
    /// `(namespace, bridge)` → node.
    bridges: BTreeMap<(String, String), usize>,
    /// Namespace drawn as one box → node.
    boxes: BTreeMap<String, usize>,
    /// `(namespace, device)` → node, for devices nothing else holds.
    devices: BTreeMap<(String, String), usize>,
}

impl<'a> Builder<'a> {
    fn new(state: &'a DesiredState, topo: &'a Topology) -> Self {
        Builder {
            state,
            topo,
            graph: Graph {
                lab: state.lab.clone(),
                clusters: vec![],
                nodes: vec![],
                edges: vec![],
                devices: BTreeMap::new(),
            },
            bridges: BTreeMap::new(),
            boxes: BTreeMap::new(),
            devices: BTreeMap::new(),
        }
    }

    fn add_node(&mut self, node: Node) -> usize {
        self.graph.nodes.push(node);
        self.graph.nodes.len() - 1
    }

    fn build(mut self) -> Graph {
        self.clusters();
        self.boxes();
        self.veth_edges();
        self.patch_edges();
        self.tunnel_edges();
        self.device_index();
        self.graph
    }

    /// Fills [`Graph::devices`]: every link and OVS port of the plan, on
    /// the box it is drawn on (never a new box: those the edges needed exist).
    fn device_index(&mut self) {
        let mut index = BTreeMap::new();
        for ns in &self.state.namespaces {
            let names = ns
                .links
                .iter()
                .map(|l| l.name.as_str())
                .chain(ns.veths.iter().map(|v| v.name.as_str()))
                .chain(ns.bridges.iter().map(String::as_str))
                .chain(ns.ovs_internal.iter().map(String::as_str));
            for name in names {
                let key = (ns.name.clone(), name.to_string());
                let bridge = self.bridges.get(&key).copied();
                if let Some(node) = bridge.or_else(|| self.locate(&ns.name, name)) {
                    index.insert(key, node);
                }
            }
        }
        for switch in &self.state.switches {
            for bridge in &switch.bridges {
                let Some(&node) = self
                    .bridges
                    .get(&(switch.namespace.clone(), bridge.name.clone()))
                else {
                    continue;
                };
                index.insert((switch.namespace.clone(), bridge.name.clone()), node);
                for port in &bridge.ports {
                    index.insert((switch.namespace.clone(), port.name.clone()), node);
                }
            }
        }
        self.graph.devices = index;
    }

    /// Frames for nodes and networks, with their bridges inside.
    fn clusters(&mut self) {
        let order = [
            (NamespaceKind::ExternalNetwork, ClusterKind::ExternalNetwork),
            (NamespaceKind::Node, ClusterKind::Node),
            (NamespaceKind::PhysicalNetwork, ClusterKind::PhysicalNetwork),
            (NamespaceKind::Overlay, ClusterKind::PhysicalNetwork),
        ];
        for (ns_kind, kind) in order {
            for ns in self.state.namespaces.iter().filter(|n| n.kind == ns_kind) {
                self.graph.clusters.push(Cluster {
                    kind,
                    object: ns.object.clone(),
                    namespace: ns.name.clone(),
                });
                let cluster = self.graph.clusters.len() - 1;
                // OVS bridges first, in plan order (br-int, br-vlan, br-ex).
                let ovs: Vec<String> = self
                    .state
                    .switches
                    .iter()
                    .filter(|s| s.namespace == ns.name)
                    .flat_map(|s| s.bridges.iter().map(|b| b.name.clone()))
                    .collect();
                for name in ovs {
                    let node = self.add_node(Node {
                        kind: NodeKind::OvsBridge,
                        cluster: Some(cluster),
                        anchor: None,
                        label: vec![name.clone()],
                    });
                    self.bridges.insert((ns.name.clone(), name), node);
                }
                for name in &ns.bridges {
                    let (node_kind, label) = if kind == ClusterKind::Node {
                        (NodeKind::LinuxBridge, vec![name.clone()])
                    } else {
                        (NodeKind::Switch, vec![name.clone(), "Linux bridge".into()])
                    };
                    let node = self.add_node(Node {
                        kind: node_kind,
                        cluster: Some(cluster),
                        anchor: None,
                        label,
                    });
                    self.bridges.insert((ns.name.clone(), name.clone()), node);
                }
            }
        }
    }

    /// Instances, routers and external hosts: one box each, listing addresses.
    fn boxes(&mut self) {
        for ns in &self.state.namespaces {
            let kind = match ns.kind {
                NamespaceKind::Instance => NodeKind::Instance,
                // A physical router's Open vSwitch only stands in for its
                // 802.1Q sub-interfaces, listed with their addresses.
                NamespaceKind::Router | NamespaceKind::PhysicalRouter | NamespaceKind::Dhcp => {
                    NodeKind::Router
                }
                NamespaceKind::ExternalHost => NodeKind::ExternalHost,
                _ => continue,
            };
            let mut label = vec![ns.object.clone(), ns.name.clone()];
            for link in &ns.links {
                for addr in &link.addresses {
                    label.push(format!("{} {addr}", link.name));
                }
            }
            // An HA router's copy: what keepalived gives it when master.
            if let Some(k) = self
                .state
                .keepalived
                .iter()
                .find(|k| k.namespace == ns.name)
            {
                label.push(format!("VR_{} on {}, when master:", k.vrid, k.interface));
                label.push(format!("{} {}", k.interface, k.vip));
                for (addr, dev) in &k.excluded {
                    label.push(format!("{dev} {addr}"));
                }
            }
            let anchor = self.anchor_of(ns);
            let node = self.add_node(Node {
                kind,
                cluster: None,
                anchor,
                label,
            });
            self.boxes.insert(ns.name.clone(), node);
        }
    }

    /// The cluster a namespace box is drawn next to: where its veths lead.
    fn anchor_of(&self, ns: &NamespaceSpec) -> Option<usize> {
        let peer = ns
            .veths
            .iter()
            .map(|v| v.peer_namespace.as_str())
            .chain(
                self.state
                    .namespaces
                    .iter()
                    .filter(|o| o.veths.iter().any(|v| v.peer_namespace == ns.name))
                    .map(|o| o.name.as_str()),
            )
            .next()?;
        self.graph.clusters.iter().position(|c| c.namespace == peer)
    }

    /// The box a device is drawn on: its namespace's box, its Linux bridge,
    /// its OVS bridge, or else a box of its own.
    fn attach(&mut self, namespace: &str, device: &str) -> usize {
        if let Some(node) = self.locate(namespace, device) {
            return node;
        }
        let cluster = self
            .graph
            .clusters
            .iter()
            .position(|c| c.namespace == namespace);
        let node = self.add_node(Node {
            kind: NodeKind::Device,
            cluster,
            anchor: None,
            label: vec![device.to_string(), namespace.to_string()],
        });
        self.devices
            .insert((namespace.to_string(), device.to_string()), node);
        node
    }

    /// The box a device is drawn on, if there is one already.
    fn locate(&self, namespace: &str, device: &str) -> Option<usize> {
        if let Some(&node) = self.boxes.get(namespace) {
            return Some(node);
        }
        let master = self
            .state
            .namespace(namespace)
            .and_then(|ns| ns.links.iter().find(|l| l.name == device))
            .and_then(|l| l.master.clone());
        if let Some(node) = master.and_then(|m| self.bridges.get(&(namespace.to_string(), m))) {
            return Some(*node);
        }
        let ovs = self
            .state
            .switches
            .iter()
            .filter(|s| s.namespace == namespace)
            .flat_map(|s| &s.bridges)
            .find(|b| b.ports.iter().any(|p| p.name == device))
            .map(|b| b.name.clone());
        if let Some(node) = ovs.and_then(|b| self.bridges.get(&(namespace.to_string(), b))) {
            return Some(*node);
        }
        self.devices
            .get(&(namespace.to_string(), device.to_string()))
            .copied()
    }

    /// The local VLAN tag of a device that is an OVS port.
    fn tag(&self, namespace: &str, device: &str) -> Option<u16> {
        self.state
            .switches
            .iter()
            .filter(|s| s.namespace == namespace)
            .flat_map(|s| &s.bridges)
            .flat_map(|b| &b.ports)
            .find(|p| p.name == device)
            .and_then(|p| p.tag)
    }

    /// The VLAN ids a node's uplink carries onto a physical network (a
    /// physical router's trunk: the tags of its sub-interfaces).
    fn wire_vlans(&self, node_namespace: &str, physnet: &str) -> Vec<u16> {
        let switches = self
            .state
            .switches
            .iter()
            .filter(|s| s.namespace == node_namespace);
        let trunk_tags = switches
            .clone()
            .flat_map(|s| &s.bridges)
            .flat_map(|b| &b.ports)
            .filter(|p| p.internal)
            .filter_map(|p| p.tag);
        let mut ids: Vec<u16> = switches
            .flat_map(|s| s.local_vlans.keys())
            .filter_map(|n| self.topo.network(n))
            .filter(|n| n.physical_network.as_deref() == Some(physnet))
            .filter_map(|n| match n.network_type {
                NetworkType::Vlan(id) => Some(id),
                _ => None,
            })
            .chain(trunk_tags)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn veth_edges(&mut self) {
        let state = self.state;
        for ns in &state.namespaces {
            for veth in &ns.veths {
                let from = self.attach(&ns.name, &veth.name);
                let to = self.attach(&veth.peer_namespace, &veth.peer);
                let mut label = vec![veth.name.clone(), veth.peer.clone()];
                let tag = self
                    .tag(&ns.name, &veth.name)
                    .or_else(|| self.tag(&veth.peer_namespace, &veth.peer));
                if let Some(tag) = tag {
                    label.push(format!("tag {tag}"));
                }
                let peer_kind = state.namespace(&veth.peer_namespace).map(|n| n.kind);
                if veth.name == UPLINK && peer_kind == Some(NamespaceKind::PhysicalNetwork) {
                    let physnet = state
                        .namespace(&veth.peer_namespace)
                        .map(|n| n.object.as_str())
                        .unwrap_or_default();
                    let ids = self.wire_vlans(&ns.name, physnet);
                    if !ids.is_empty() {
                        let ids: Vec<String> = ids.iter().map(u16::to_string).collect();
                        label.push(format!("vlan {}", ids.join(",")));
                    }
                }
                self.graph.edges.push(Edge { from, to, label });
            }
        }
    }

    /// OVS patch ports, one line per pair.
    fn patch_edges(&mut self) {
        for switch in &self.state.switches {
            for bridge in &switch.bridges {
                for port in &bridge.ports {
                    let Some(peer) = &port.patch_peer else {
                        continue;
                    };
                    let Some(peer_bridge) = switch
                        .bridges
                        .iter()
                        .find(|b| b.ports.iter().any(|p| &p.name == peer))
                    else {
                        continue;
                    };
                    // Each pair once: from the side whose port sorts first.
                    if port.name > *peer {
                        continue;
                    }
                    let ns = switch.namespace.clone();
                    let (Some(&from), Some(&to)) = (
                        self.bridges.get(&(ns.clone(), bridge.name.clone())),
                        self.bridges.get(&(ns, peer_bridge.name.clone())),
                    ) else {
                        continue;
                    };
                    self.graph.edges.push(Edge {
                        from,
                        to,
                        label: vec![port.name.clone(), peer.clone(), "patch".into()],
                    });
                }
            }
        }
    }
}

impl Builder<'_> {
    /// Tunnels between br-tun bridges, one line per pair of nodes and type,
    /// labelled with both ports and the keys of the networks they carry.
    fn tunnel_edges(&mut self) {
        let keys: Vec<String> = self
            .topo
            .networks
            .iter()
            .filter_map(|n| match n.network_type {
                NetworkType::Tunnel(kind, key) => Some(format!("{} {key}", kind.name())),
                _ => None,
            })
            .collect();
        for switch in &self.state.switches {
            for bridge in &switch.bridges {
                for port in &bridge.ports {
                    let Some(tunnel) = &port.tunnel else {
                        continue;
                    };
                    // The switch whose endpoint is the remote one, once per
                    // pair: from the side with the lower address.
                    if tunnel.local_ip > tunnel.remote_ip {
                        continue;
                    }
                    let Some((remote_ns, remote_port)) = self.state.switches.iter().find_map(|s| {
                        s.bridges.iter().flat_map(|b| &b.ports).find_map(|p| {
                            let t = p.tunnel.as_ref()?;
                            (t.kind == tunnel.kind
                                && t.local_ip == tunnel.remote_ip
                                && t.remote_ip == tunnel.local_ip)
                                .then(|| (s.namespace.clone(), p.name.clone()))
                        })
                    }) else {
                        continue;
                    };
                    let (Some(&from), Some(&to)) = (
                        self.bridges
                            .get(&(switch.namespace.clone(), bridge.name.clone())),
                        self.bridges.get(&(remote_ns, bridge.name.clone())),
                    ) else {
                        continue;
                    };
                    let mut label = vec![port.name.clone(), remote_port];
                    label.extend(
                        keys.iter()
                            .filter(|k| k.starts_with(tunnel.kind.name()))
                            .cloned(),
                    );
                    self.graph.edges.push(Edge { from, to, label });
                }
            }
        }
    }
}

impl Cluster {
    /// Its title lines: the object, then the namespace.
    pub fn label(&self) -> Vec<String> {
        vec![self.object.clone(), self.namespace.clone()]
    }
}

/// A DOT double-quoted string: lines joined with `\n`.
fn dot_quote(lines: &[String]) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

fn dot_style(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::OvsBridge => "shape=box, style=filled, fillcolor=\"#dbeafe\"",
        NodeKind::LinuxBridge => "shape=box, style=filled, fillcolor=\"#dcfce7\"",
        NodeKind::Switch => "shape=box, style=filled, fillcolor=\"#e5e7eb\"",
        NodeKind::Instance => "shape=box, style=\"rounded,filled\", fillcolor=\"#ffedd5\"",
        NodeKind::Router => "shape=box, style=\"rounded,filled\", fillcolor=\"#fef9c3\"",
        NodeKind::ExternalHost => "shape=box, style=\"rounded,filled\", fillcolor=\"#fce7f3\"",
        NodeKind::Device => "shape=ellipse",
    }
}

fn render_dot(graph: &Graph) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "graph {} {{\n",
        dot_quote(std::slice::from_ref(&graph.lab))
    ));
    out.push_str(&format!(
        "  graph [label={}, labelloc=t, fontname=\"Helvetica\"];\n",
        dot_quote(&[format!("ovslab lab {}", graph.lab)])
    ));
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let node_line = |i: usize, node: &Node| {
        format!(
            "{} [label={}, {}];\n",
            Graph::node_id(i),
            dot_quote(&node.label),
            dot_style(node.kind)
        )
    };
    for (c, cluster) in graph.clusters.iter().enumerate() {
        out.push_str(&format!("  subgraph \"cluster_{c}\" {{\n"));
        out.push_str(&format!(
            "    label={};\n    style=rounded;\n",
            dot_quote(&cluster.label())
        ));
        for (i, node) in graph.nodes.iter().enumerate() {
            if node.cluster == Some(c) {
                out.push_str("    ");
                out.push_str(&node_line(i, node));
            }
        }
        out.push_str("  }\n");
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.cluster.is_none() {
            out.push_str("  ");
            out.push_str(&node_line(i, node));
        }
    }
    for edge in &graph.edges {
        out.push_str(&format!(
            "  {} -- {} [label={}];\n",
            Graph::node_id(edge.from),
            Graph::node_id(edge.to),
            dot_quote(&edge.label)
        ));
    }
    out.push_str("}\n");
    out
}

/// A Mermaid quoted label: entity codes for what would end or break it.
fn mermaid_quote(lines: &[String], separator: &str) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| {
            l.replace('#', "#35;")
                .replace('"', "#quot;")
                .replace('<', "#lt;")
                .replace('>', "#gt;")
        })
        .collect();
    format!("\"{}\"", escaped.join(separator))
}

fn mermaid_node(i: usize, node: &Node) -> String {
    let label = mermaid_quote(&node.label, "<br/>");
    let id = Graph::node_id(i);
    match node.kind {
        NodeKind::Instance | NodeKind::Router | NodeKind::ExternalHost => {
            format!("{id}({label})")
        }
        NodeKind::Device => format!("{id}(({label}))"),
        _ => format!("{id}[{label}]"),
    }
}

fn render_mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart TB\n");
    for (c, cluster) in graph.clusters.iter().enumerate() {
        out.push_str(&format!(
            "  subgraph c{c}[{}]\n",
            mermaid_quote(&cluster.label(), " · ")
        ));
        for (i, node) in graph.nodes.iter().enumerate() {
            if node.cluster == Some(c) {
                out.push_str(&format!("    {}\n", mermaid_node(i, node)));
            }
        }
        out.push_str("  end\n");
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.cluster.is_none() {
            out.push_str(&format!("  {}\n", mermaid_node(i, node)));
        }
    }
    for edge in &graph.edges {
        out.push_str(&format!(
            "  {} ---|{}| {}\n",
            Graph::node_id(edge.from),
            mermaid_quote(&edge.label, "<br/>"),
            Graph::node_id(edge.to)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::naming::{BR_EX, BR_INT, BR_VLAN};
    use crate::plan::{LocalVlans, plan, router_namespace};

    fn seed() -> (DesiredState, Topology) {
        let topo = crate::seed();
        (plan(&topo, &LocalVlans::new()), topo)
    }

    /// Every name a reader looks for in a picture of the seed lab.
    fn expected_names(state: &DesiredState, topo: &Topology) -> Vec<String> {
        let mut names: Vec<String> = topo.nodes.iter().map(|n| n.name.clone()).collect();
        names.extend(state.switches.iter().flat_map(|s| {
            s.bridges
                .iter()
                .map(move |b| format!("{}/{}", s.namespace, b.name))
        }));
        for ns in &state.namespaces {
            if matches!(
                ns.kind,
                NamespaceKind::Instance | NamespaceKind::Router | NamespaceKind::ExternalHost
            ) {
                names.push(ns.name.clone());
            }
        }
        for inst in &topo.instances {
            let plug = inst.plug();
            names.push(plug.qbr);
            names.push(plug.qvo);
            names.push(inst.name.clone());
        }
        names.push(router_namespace(&topo.lab, "router1"));
        names.extend(["tag 1", "tag 2", "vlan 101", "vlan 101,102", "internet"].map(String::from));
        names.extend(["physnet1", "ext-net", "int-br-vlan", "phy-br-vlan"].map(String::from));
        names
    }

    /// Bridges are checked by name within their node's part of the output.
    fn assert_all_named(output: &str, state: &DesiredState, topo: &Topology) {
        for name in expected_names(state, topo) {
            let needle = name.rsplit('/').next().unwrap_or(&name);
            assert!(
                output.contains(needle),
                "`{needle}` missing from:\n{output}"
            );
        }
    }

    #[test]
    fn the_seed_plan_has_the_bridges_the_pictures_must_show() {
        let (state, _) = seed();
        let bridges = |node: &str| -> Vec<String> {
            state
                .switch(node)
                .unwrap()
                .bridges
                .iter()
                .map(|b| b.name.clone())
                .collect()
        };
        assert_eq!(bridges("network"), [BR_INT, BR_VLAN, BR_EX]);
        assert_eq!(bridges("compute1"), [BR_INT, BR_VLAN]);
    }

    #[test]
    fn tunnels_are_drawn_between_br_tuns_with_their_keys() {
        let text = include_str!("../../../lab-topologies/selfservice-vxlan.yaml");
        let topo = crate::parse("selfservice", text).unwrap();
        let state = plan(&topo, &LocalVlans::new());
        let graph = Graph::new(&state, &topo);
        let tunnels: Vec<&Edge> = graph
            .edges
            .iter()
            .filter(|e| e.label[0].starts_with("vxlan-"))
            .collect();
        // Three nodes: three pairs, each drawn once.
        assert_eq!(tunnels.len(), 3, "{tunnels:?}");
        for edge in tunnels {
            assert!(edge.label.contains(&"vxlan 101".to_string()));
            assert_eq!(graph.nodes[edge.from].label, ["br-tun"]);
            assert_eq!(graph.nodes[edge.to].label, ["br-tun"]);
        }
        // The overlay is a frame of its own, like the physical network.
        assert!(graph.clusters.iter().any(|c| c.object == "overlay"));
    }

    #[test]
    fn every_bridge_is_in_its_nodes_cluster() {
        let (state, topo) = seed();
        let graph = Graph::new(&state, &topo);
        for switch in &state.switches {
            let c = graph
                .clusters
                .iter()
                .position(|c| c.namespace == switch.namespace)
                .unwrap();
            for bridge in &switch.bridges {
                assert!(
                    graph
                        .nodes
                        .iter()
                        .any(|n| n.cluster == Some(c) && n.label[0] == bridge.name),
                    "{} {}",
                    switch.node,
                    bridge.name
                );
            }
        }
        // Everything the plan links resolves to a bridge or a namespace box.
        assert!(graph.nodes.iter().all(|n| n.kind != NodeKind::Device));
    }

    #[test]
    fn the_links_carry_tags_and_wire_vlans() {
        let (state, topo) = seed();
        let graph = Graph::new(&state, &topo);
        let labels: Vec<String> = graph.edges.iter().map(|e| e.label.join(" ")).collect();
        let qvo = topo.instance("instance2").unwrap().plug().qvo;
        assert!(
            labels
                .iter()
                .any(|l| l.contains(&qvo) && l.ends_with("tag 2"))
        );
        assert!(labels.contains(&"eth1 compute1 vlan 101".to_string()));
        assert!(labels.contains(&"eth1 compute2 vlan 101,102".to_string()));
        assert!(labels.contains(&"eth1 network vlan 101,102".to_string()));
        assert!(labels.contains(&"int-br-vlan phy-br-vlan patch".to_string()));
        assert!(labels.contains(&"eth2 network".to_string()));
    }

    #[test]
    fn dot_names_everything_and_is_well_formed() {
        let (state, topo) = seed();
        let out = dot(&state, &topo);
        assert!(out.starts_with("graph \"seed\" {"));
        assert_all_named(&out, &state, &topo);
        assert_dot_well_formed(&out);
    }

    /// Braces balance outside strings, and every edge's ends are declared.
    fn assert_dot_well_formed(out: &str) {
        let mut depth = 0i32;
        let mut in_string = false;
        let mut escaped = false;
        for c in out.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => in_string = !in_string,
                (false, _, '{') => depth += 1,
                (false, _, '}') => {
                    depth -= 1;
                    assert!(depth >= 0, "unbalanced braces:\n{out}");
                }
                _ => {}
            }
        }
        assert_eq!((depth, in_string), (0, false), "{out}");
        let mut declared = BTreeSet::new();
        let mut used = BTreeSet::new();
        for line in out.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [a, "--", b, ..] => {
                    used.insert(a.to_string());
                    used.insert(b.to_string());
                }
                [id, rest, ..] if id.starts_with('n') && rest.starts_with("[label=") => {
                    declared.insert(id.to_string());
                }
                _ => {}
            }
        }
        assert!(!used.is_empty());
        let undeclared: Vec<_> = used.difference(&declared).collect();
        assert!(
            undeclared.is_empty(),
            "undeclared {undeclared:?} in:\n{out}"
        );
    }

    #[test]
    fn mermaid_names_everything_with_a_subgraph_per_node() {
        let (state, topo) = seed();
        let out = mermaid(&state, &topo);
        assert!(out.starts_with("flowchart"));
        assert_all_named(&out, &state, &topo);
        for node in &topo.nodes {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with("subgraph") && l.contains(&node.name)),
                "no subgraph for {}",
                node.name
            );
        }
        assert_eq!(
            out.matches("subgraph").count(),
            out.lines().filter(|l| l.trim() == "end").count()
        );
    }

    #[test]
    fn svg_is_xml_and_names_everything_as_text() {
        let (state, topo) = seed();
        let out = svg(&state, &topo);
        assert_all_named(&out, &state, &topo);
        let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let texts: BTreeSet<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        for node in &topo.nodes {
            assert!(
                texts.contains(node.name.as_str()),
                "no <text> {}",
                node.name
            );
        }
        for inst in &topo.instances {
            assert!(
                texts.contains(inst.name.as_str()),
                "no <text> {}",
                inst.name
            );
        }
        assert!(texts.contains("vlan 101,102"));
        assert!(texts.contains("tag 1"));
        assert!(!out.contains("href"), "an SVG must stand alone");
    }

    #[test]
    fn svg_escapes_markup_in_names() {
        let (mut state, topo) = seed();
        state.namespaces[0].object = "a<b>&\"c'".into();
        let out = svg::render(&Graph::new(&state, &topo));
        roxmltree::Document::parse(&out).expect("well-formed XML");
        assert!(out.contains("a&lt;b&gt;&amp;&quot;c&apos;"));
    }

    #[test]
    fn the_pictures_are_deterministic() {
        let (state, topo) = seed();
        assert_eq!(svg(&state, &topo), svg(&state, &topo));
        assert_eq!(dot(&state, &topo), dot(&state, &topo));
    }

    #[test]
    fn every_device_of_the_plan_is_on_a_box() {
        let (state, topo) = seed();
        let graph = Graph::new(&state, &topo);
        let ns = |o: &str| crate::naming::namespace(&topo.lab, o);
        let name = |i: usize| graph.nodes[i].label[0].clone();
        let at = |namespace: String, device: &str| {
            graph
                .devices
                .get(&(namespace.clone(), device.to_string()))
                .copied()
                .unwrap_or_else(|| panic!("{namespace} {device} is on no box"))
        };
        let plug = topo.instance("instance1").unwrap().plug();
        // A device on a bridge is drawn on that bridge.
        assert_eq!(name(at(ns("compute1"), &plug.qvo)), BR_INT);
        assert_eq!(name(at(ns("compute1"), &plug.qvb)), plug.qbr);
        assert_eq!(name(at(ns("compute1"), &plug.tap)), plug.qbr);
        assert_eq!(name(at(ns("compute1"), "eth1")), BR_VLAN);
        assert_eq!(name(at(ns("network"), BR_EX)), BR_EX);
        // A namespace drawn as one box holds its devices.
        assert_eq!(name(at(ns("instance1"), "eth0")), "instance1");
        for ns in &state.namespaces {
            for link in &ns.links {
                assert!(
                    graph
                        .devices
                        .contains_key(&(ns.name.clone(), link.name.clone())),
                    "{} {}",
                    ns.name,
                    link.name
                );
            }
        }
    }

    #[test]
    fn the_interactive_picture_is_the_plain_one_with_named_groups() {
        let (state, topo) = seed();
        let graph = Graph::new(&state, &topo);
        let page = svg_interactive(&graph);
        let plain = svg(&state, &topo);
        let stripped: String = page
            .lines()
            .filter(|l| !l.starts_with("<g class=") && *l != "</g>")
            .map(|l| {
                let l = match l.find(" class=\"edge\" data-edge=") {
                    Some(at) => format!("{}/>", &l[..at]),
                    None => l.to_string(),
                };
                l + "\n"
            })
            .collect();
        assert_eq!(stripped, plain);
        for i in 0..graph.nodes.len() {
            assert!(
                page.contains(&format!("<g class=\"box\" data-box=\"{i}\">")),
                "box {i}"
            );
        }
        for i in 0..graph.edges.len() {
            assert!(page.contains(&format!("data-edge=\"{i}\"")), "edge {i}");
        }
        let doc = roxmltree::Document::parse(&page).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
    }

    #[test]
    fn a_crowded_node_draws_its_instances_as_one_box() {
        let topo = crate::parse("scale.yaml", &crate::generate::scale_topology(2, 30)).unwrap();
        let state = plan(&topo, &LocalVlans::new());
        let whole = Graph::new(&state, &topo);
        let graph = whole.clone().collapse_instances(20);
        let instances: Vec<&Node> = graph
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Instance)
            .collect();
        assert_eq!(instances.len(), 2, "one box per compute node");
        assert_eq!(instances[0].label[0], "30 instances");
        assert_eq!(instances[0].label[1], "on compute1");
        let qbrs = graph
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::LinuxBridge)
            .count();
        assert_eq!(qbrs, 2);
        // Every device still has a box, and an instance's is its group's.
        assert_eq!(graph.devices.len(), whole.devices.len());
        for (key, &i) in &graph.devices {
            assert!(i < graph.nodes.len(), "{key:?}");
        }
        let eth0 = (
            crate::naming::namespace(&topo.lab, "instance30"),
            "eth0".to_string(),
        );
        assert_eq!(graph.nodes[graph.devices[&eth0]].label[0], "30 instances");
        // One line per pair of boxes a group is in, counting what it
        // stands for.
        let group = graph.devices[&eth0];
        let mut pairs = BTreeSet::new();
        for e in &graph.edges {
            assert!(e.from < graph.nodes.len() && e.to < graph.nodes.len());
            if e.from == group || e.to == group {
                assert!(pairs.insert((e.from.min(e.to), e.from.max(e.to))), "{e:?}");
            }
        }
        assert!(graph.edges.iter().any(|e| e.label[0] == "30 links"));
        // A node with few instances is left alone.
        assert!(whole.clone().collapse_instances(30) == whole);
        let picture = svg_interactive(&graph);
        roxmltree::Document::parse(&picture).expect("well-formed XML");
        assert!(picture.len() < svg_interactive(&whole).len() / 3);
    }
}
