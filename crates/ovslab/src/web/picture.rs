//! What the page draws and marks: the lab laid out as `ovslab graph` lays
//! it out (the same [`Graph`], its SVG with every box named), the details
//! of each box, and the functions that say which boxes a trace hop, a
//! repair line or a check is about.

use std::collections::{BTreeMap, BTreeSet};

use ovslab_api::{TraceHop, TraceReport};
use ovslab_topology::Topology;
use ovslab_topology::graph::{self, Graph, NodeKind};
use ovslab_topology::plan::{DesiredState, LocalVlans, plan};
use ovslab_topology::{CheckProtocol, CheckTarget};
use serde::Serialize;

/// A node with more instances than this has them drawn as one box (and
/// their `qbr…` bridges as one): the 1000-instance lab, 50 a node, stays a
/// picture one can take in and zoom smoothly; the 10 × 10 lab is drawn
/// whole.
pub const CROWDED: usize = 20;

/// A lab as the page sees it: its topology, plan and picture.
#[derive(Debug)]
pub struct LabPicture {
    pub topology: Topology,
    pub state: DesiredState,
    pub graph: Graph,
    /// Topology object → its namespaces (an HA router has several).
    objects: BTreeMap<String, Vec<String>>,
}

/// Everything the page needs to draw a lab (`GET /api/labs/{lab}/picture`).
#[derive(Debug, Serialize)]
pub struct Picture {
    pub lab: String,
    /// The picture of `ovslab graph --format svg`, each box, frame and line
    /// in a group named by its index.
    pub svg: String,
    pub boxes: Vec<BoxView>,
    pub clusters: Vec<ClusterView>,
    pub edges: Vec<EdgeView>,
    /// Where a trace may start: instances and external hosts.
    pub sources: Vec<String>,
    /// Where it may go: instances, external hosts, routers (or any
    /// address, typed in).
    pub destinations: Vec<String>,
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Serialize)]
pub struct BoxView {
    pub id: usize,
    /// `ovs-bridge`, `linux-bridge`, `switch`, `instance`, `router`,
    /// `external-host` or `device`.
    pub kind: &'static str,
    pub label: Vec<String>,
    pub object: String,
    pub namespace: String,
    /// The frame it is drawn in, if any.
    pub cluster: Option<usize>,
    pub devices: Vec<DeviceView>,
    /// A router's NAT as planned (`SNAT 192.168.1.0/24 → 203.0.113.101`).
    pub nat: Vec<String>,
    /// What the page can ask for live: `flows` (an OVS bridge) or `nat`
    /// (a router's iptables nat table).
    pub live: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub name: String,
    pub mac: Option<String>,
    pub addresses: Vec<String>,
    /// The local VLAN tag of an OVS port.
    pub tag: Option<u16>,
    /// The other end of a veth, `namespace device`.
    pub peer: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub id: usize,
    pub object: String,
    pub namespace: String,
}

#[derive(Debug, Serialize)]
pub struct EdgeView {
    pub id: usize,
    pub from: usize,
    pub to: usize,
    pub label: Vec<String>,
}

/// A declared check, with what the page needs to trace its probe.
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    pub name: String,
    pub from: String,
    pub to: String,
    /// `icmp`, `tcp`, `udp`, or one a trace from the page does not send
    /// (`http`, `dhcp`).
    pub protocol: &'static str,
    pub port: Option<u16>,
    pub expect_success: bool,
    pub layer2: bool,
    /// The boxes of its two ends.
    pub ends: Vec<usize>,
}

/// The boxes and frames something is about.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Marks {
    pub boxes: BTreeSet<usize>,
    pub clusters: BTreeSet<usize>,
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty() && self.clusters.is_empty()
    }

    fn extend(&mut self, other: Marks) {
        self.boxes.extend(other.boxes);
        self.clusters.extend(other.clusters);
    }
}

/// A trace as the page draws it: the daemon's report (what `ovslab trace
/// --json` prints), and for each hop the box it is on and what changed
/// there.
#[derive(Debug, Serialize)]
pub struct TraceView {
    pub report: TraceReport,
    pub steps: Vec<Step>,
    /// Where a lost request was last seen, and the next box it should
    /// have reached.
    pub lost_at: Option<usize>,
    pub next_expected: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Step {
    /// The hop's index in the report.
    pub hop: usize,
    pub leg: String,
    pub r#box: Option<usize>,
    /// What changed at this hop, short enough for a label on the picture:
    /// `VLAN 101`, `VLAN 101 → 1`, `VXLAN VNI 101`, `SNAT 192.168.1.11 →
    /// 203.0.113.101`, `MAC fa:16:3e:… → fa:16:3e:…`.
    pub changes: Vec<String>,
}

impl LabPicture {
    pub fn new(topology: Topology) -> Self {
        let state = plan(&topology, &LocalVlans::new());
        let graph = Graph::new(&state, &topology).collapse_instances(CROWDED);
        let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ns in &state.namespaces {
            objects
                .entry(ns.object.clone())
                .or_default()
                .push(ns.name.clone());
        }
        LabPicture {
            topology,
            state,
            graph,
            objects,
        }
    }

    /// The namespace a box lives in: its frame's, or (a box of its own) its
    /// second label line's.
    pub fn namespace_of(&self, i: usize) -> String {
        let node = &self.graph.nodes[i];
        match (node.kind, node.cluster) {
            // A box of its own says its namespace second (a group of
            // instances says where they are instead: no one namespace).
            (NodeKind::Device, _) | (_, None) => node
                .label
                .get(1)
                .filter(|ns| self.state.namespace(ns).is_some())
                .cloned()
                .unwrap_or_default(),
            (_, Some(c)) => self.graph.clusters[c].namespace.clone(),
        }
    }

    fn object_of(&self, i: usize) -> String {
        let node = &self.graph.nodes[i];
        match (node.kind, node.cluster) {
            (NodeKind::Device, Some(c)) | (NodeKind::Switch, Some(c)) => {
                self.graph.clusters[c].object.clone()
            }
            (NodeKind::OvsBridge | NodeKind::LinuxBridge, Some(c)) => {
                self.graph.clusters[c].object.clone()
            }
            _ => node.label[0].clone(),
        }
    }

    pub fn picture(&self) -> Picture {
        let boxes = (0..self.graph.nodes.len())
            .map(|i| self.box_view(i))
            .collect();
        let clusters = self
            .graph
            .clusters
            .iter()
            .enumerate()
            .map(|(id, c)| ClusterView {
                id,
                object: c.object.clone(),
                namespace: c.namespace.clone(),
            })
            .collect();
        let edges = self
            .graph
            .edges
            .iter()
            .enumerate()
            .map(|(id, e)| EdgeView {
                id,
                from: e.from,
                to: e.to,
                label: e.label.clone(),
            })
            .collect();
        let t = &self.topology;
        let sources: Vec<String> = t
            .instances
            .iter()
            .map(|i| i.name.clone())
            .chain(t.external_hosts.iter().map(|h| h.name.clone()))
            .collect();
        let destinations = sources
            .iter()
            .cloned()
            .chain(t.routers.iter().map(|r| r.name.clone()))
            .collect();
        Picture {
            lab: t.lab.clone(),
            svg: graph::svg_interactive(&self.graph),
            boxes,
            clusters,
            edges,
            sources,
            destinations,
            checks: self.checks(),
        }
    }

    /// One box and its details.
    pub fn box_view(&self, i: usize) -> BoxView {
        let node = &self.graph.nodes[i];
        let namespace = self.namespace_of(i);
        let mut devices = Vec::new();
        for ((ns, name), &at) in &self.graph.devices {
            if at != i {
                continue;
            }
            devices.push(self.device_view(ns, name));
        }
        let router = self.state.routers.iter().find(|r| r.namespace == namespace);
        let nat = router.map(nat_lines).unwrap_or_default();
        let live = match node.kind {
            NodeKind::OvsBridge => Some("flows"),
            NodeKind::Router if router.is_some() => Some("nat"),
            _ => None,
        };
        BoxView {
            id: i,
            kind: kind_name(node.kind),
            label: node.label.clone(),
            object: self.object_of(i),
            namespace,
            cluster: node.cluster,
            devices,
            nat,
            live,
        }
    }

    fn device_view(&self, namespace: &str, name: &str) -> DeviceView {
        let spec = self.state.namespace(namespace);
        let link = spec.and_then(|ns| ns.links.iter().find(|l| l.name == name));
        let peer = self
            .state
            .namespaces
            .iter()
            .flat_map(|ns| ns.veths.iter().map(move |v| (ns, v)))
            .find_map(|(ns, v)| {
                if ns.name == namespace && v.name == name {
                    Some(format!("{} {}", v.peer_namespace, v.peer))
                } else if v.peer_namespace == namespace && v.peer == name {
                    Some(format!("{} {}", ns.name, v.name))
                } else {
                    None
                }
            });
        let tag = self
            .state
            .switches
            .iter()
            .filter(|s| s.namespace == namespace)
            .flat_map(|s| &s.bridges)
            .flat_map(|b| &b.ports)
            .find(|p| p.name == name)
            .and_then(|p| p.tag);
        DeviceView {
            name: name.to_string(),
            mac: link.and_then(|l| l.mac).map(|m| mac_text(&m)),
            addresses: link
                .map(|l| l.addresses.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            tag,
            peer,
        }
    }

    /// The lab's declared checks.
    pub fn checks(&self) -> Vec<CheckView> {
        self.topology
            .checks
            .iter()
            .map(|c| {
                let to = match &c.to {
                    CheckTarget::Object(name) => name.clone(),
                    CheckTarget::Address(address) => address.to_string(),
                };
                let (protocol, port) = match c.protocol {
                    CheckProtocol::Icmp => ("icmp", None),
                    CheckProtocol::Tcp(port) => ("tcp", Some(port)),
                    CheckProtocol::Http(port) => ("http", Some(port)),
                    CheckProtocol::Dhcp => ("dhcp", None),
                };
                let mut ends = self.marks_of_object(&c.from);
                ends.extend(self.marks_of_object(&to));
                ends.extend(self.marks_of_address(&to));
                CheckView {
                    name: c.name.clone(),
                    from: c.from.clone(),
                    to,
                    protocol,
                    port,
                    expect_success: c.expect_success,
                    layer2: c.layer2,
                    ends: ends.boxes.into_iter().collect(),
                }
            })
            .collect()
    }

    /// The box (or frame) of each namespace of a topology object.
    fn marks_of_object(&self, object: &str) -> Marks {
        let mut marks = Marks::default();
        for ns in self.objects.get(object).into_iter().flatten() {
            marks.extend(self.marks_of_namespace(ns));
        }
        marks
    }

    /// The box drawn for a namespace, or else its frame, or else the box
    /// its devices are drawn on (a group of instances).
    fn marks_of_namespace(&self, namespace: &str) -> Marks {
        let mut marks = self.marks_of_own_namespace(namespace);
        if marks.is_empty()
            && let Some((_, &i)) = self
                .graph
                .devices
                .range((namespace.to_string(), String::new())..)
                .next()
                .filter(|((ns, _), _)| ns == namespace)
        {
            marks.boxes.insert(i);
        }
        marks
    }

    fn marks_of_own_namespace(&self, namespace: &str) -> Marks {
        let mut marks = Marks::default();
        let own = (0..self.graph.nodes.len()).find(|&i| {
            let n = &self.graph.nodes[i];
            n.cluster.is_none() && n.label.get(1).is_some_and(|l| l == namespace)
        });
        if let Some(i) = own {
            marks.boxes.insert(i);
            return marks;
        }
        for (c, cluster) in self.graph.clusters.iter().enumerate() {
            if cluster.namespace == namespace {
                marks.clusters.insert(c);
                // A network drawn as a bar is its switch box.
                for (i, n) in self.graph.nodes.iter().enumerate() {
                    if n.kind == NodeKind::Switch && n.cluster == Some(c) {
                        marks.boxes.insert(i);
                    }
                }
            }
        }
        marks
    }

    /// The box of the instance or host that has an address (a floating IP
    /// is its instance's).
    fn marks_of_address(&self, address: &str) -> Marks {
        let Ok(ip) = address.parse::<std::net::Ipv4Addr>() else {
            return Marks::default();
        };
        let t = &self.topology;
        let owner = t
            .instances
            .iter()
            .find(|i| i.address == ip || i.floating_ip == Some(ip))
            .map(|i| i.name.clone())
            .or_else(|| {
                t.external_hosts
                    .iter()
                    .find(|h| h.address == ip)
                    .map(|h| h.name.clone())
            });
        owner.map_or_else(Marks::default, |o| self.marks_of_object(&o))
    }

    /// The box a device of a namespace is drawn on.
    pub fn box_of_device(&self, namespace: &str, device: &str) -> Option<usize> {
        self.graph
            .devices
            .get(&(namespace.to_string(), device.to_string()))
            .copied()
    }

    /// The box a trace hop is on: its device's, else its namespace's box.
    pub fn box_of_hop(&self, hop: &TraceHop) -> Option<usize> {
        self.box_of_device(&hop.namespace, &hop.device)
            .or_else(|| {
                self.marks_of_namespace(&hop.namespace)
                    .boxes
                    .first()
                    .copied()
            })
            .or_else(|| self.marks_of_object(&hop.place).boxes.first().copied())
    }

    /// The box of `place device (direction)`, as a trace's loss names it.
    fn box_of_place(&self, text: &str) -> Option<usize> {
        let mut words = text.split_whitespace();
        let place = words.next()?;
        let device = words.next().unwrap_or_default();
        let namespaces = self.objects.get(place)?;
        namespaces
            .iter()
            .find_map(|ns| self.box_of_device(ns, device))
            .or_else(|| self.marks_of_object(place).boxes.first().copied())
    }

    /// What a line of an audit's repairs (or of `ovslab status`'s repairs)
    /// is about: the boxes of the devices it names in the namespaces or
    /// objects it names, or, naming no device, those objects' boxes and
    /// frames. `compute1: br-vlan: add flow …` is the br-vlan box of
    /// compute1; `start ovs-vswitchd on compute1` is compute1's frame.
    pub fn marks_of_repair(&self, line: &str) -> Marks {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || ",;:()[]<>'\"`".contains(c))
            .map(|w| w.trim_end_matches('.'))
            .filter(|w| !w.is_empty())
            .collect();
        // The namespaces the line names, directly or by their object.
        let mut namespaces: Vec<&str> = Vec::new();
        for w in &words {
            if let Some(nss) = self.objects.get(*w) {
                namespaces.extend(nss.iter().map(String::as_str));
            } else if self.state.namespace(w).is_some() {
                namespaces.push(w);
            }
        }
        let mut narrow = Marks::default();
        for w in &words {
            for ns in &namespaces {
                if let Some(i) = self.box_of_device(ns, w) {
                    narrow.boxes.insert(i);
                }
            }
        }
        // A device of a box drawn for the whole namespace says no more
        // than the namespace itself.
        if !narrow.is_empty() {
            return narrow;
        }
        let mut broad = Marks::default();
        for ns in namespaces {
            broad.extend(self.marks_of_namespace(ns));
        }
        broad
    }

    /// Each hop on its box, with what changed since the previous hop of
    /// the same leg.
    pub fn trace_view(&self, report: TraceReport) -> TraceView {
        let mut steps = Vec::new();
        let mut previous: Option<&TraceHop> = None;
        for (i, hop) in report.hops.iter().enumerate() {
            let before = previous.filter(|p| p.leg == hop.leg && !hop.flooded);
            steps.push(Step {
                hop: i,
                leg: hop.leg.clone(),
                r#box: self.box_of_hop(hop),
                changes: changes(before, hop),
            });
            if !hop.flooded {
                previous = Some(hop);
            }
        }
        let lost_at = report.lost.as_ref().and_then(|l| {
            self.box_of_place(&l.last_seen).or_else(|| {
                report
                    .hops
                    .iter()
                    .rev()
                    .find(|h| h.leg == "request")
                    .and_then(|h| self.box_of_hop(h))
            })
        });
        let next_expected = report
            .lost
            .as_ref()
            .and_then(|l| self.box_of_place(&l.next_expected));
        TraceView {
            report,
            steps,
            lost_at,
            next_expected,
        }
    }
}

/// What changed between two hops of one leg, as labels for the picture:
/// the VLAN tag (set, rewritten, removed), a tunnel entered, the addresses
/// (NAT) and the MACs (routing). The first hop shows its tag.
pub fn changes(before: Option<&TraceHop>, hop: &TraceHop) -> Vec<String> {
    let mut out = Vec::new();
    match (before.map(|b| b.vlan), hop.vlan) {
        (None, Some(v)) => out.push(format!("VLAN {v}")),
        (Some(None), Some(v)) => out.push(format!("VLAN {v}")),
        (Some(Some(a)), Some(b)) if a != b => out.push(format!("VLAN {a} → {b}")),
        (Some(Some(a)), None) => out.push(format!("VLAN {a} removed")),
        _ => {}
    }
    if let Some(e) = &hop.encapsulation {
        let was = before.and_then(|b| b.encapsulation.as_ref());
        if was != Some(e) {
            let kind = e.kind.to_uppercase();
            let key = match (e.kind.as_str(), e.key) {
                ("vxlan", Some(k)) => format!(" VNI {k}"),
                (_, Some(k)) => format!(" key {k}"),
                (_, None) => String::new(),
            };
            out.push(format!("{kind}{key} {} → {}", e.src_ip, e.dst_ip));
        }
    }
    let Some(before) = before else {
        return out;
    };
    if before.src_ip != hop.src_ip && !hop.src_ip.is_empty() && !before.src_ip.is_empty() {
        out.push(format!("SNAT {} → {}", before.src_ip, hop.src_ip));
    }
    if before.dst_ip != hop.dst_ip && !hop.dst_ip.is_empty() && !before.dst_ip.is_empty() {
        out.push(format!("DNAT {} → {}", before.dst_ip, hop.dst_ip));
    }
    if before.src_mac != hop.src_mac || before.dst_mac != hop.dst_mac {
        out.push(format!("MAC {} → {}", hop.src_mac, hop.dst_mac));
    }
    out
}

/// A router's NAT as planned, one rule a line.
fn nat_lines(r: &ovslab_topology::plan::RouterSpec) -> Vec<String> {
    let mut out = Vec::new();
    for (fixed, floating) in &r.floating_ips {
        out.push(format!("DNAT {floating} → {fixed}"));
        out.push(format!("SNAT {fixed} → {floating}"));
    }
    if let (true, Some(gateway)) = (r.snat, r.gateway_ip) {
        for cidr in &r.internal_cidrs {
            out.push(format!("SNAT {cidr} → {gateway} (on {})", r.qg));
        }
    }
    out
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::OvsBridge => "ovs-bridge",
        NodeKind::LinuxBridge => "linux-bridge",
        NodeKind::Switch => "switch",
        NodeKind::Instance => "instance",
        NodeKind::Router => "router",
        NodeKind::ExternalHost => "external-host",
        NodeKind::Device => "device",
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_api::{TraceLoss, TraceProtocol};
    use ovslab_topology::naming::{BR_INT, BR_VLAN};

    fn seed() -> LabPicture {
        LabPicture::new(ovslab_topology::seed())
    }

    fn name(p: &LabPicture, i: usize) -> String {
        p.graph.nodes[i].label[0].clone()
    }

    fn names(p: &LabPicture, marks: &Marks) -> Vec<String> {
        marks.boxes.iter().map(|&i| name(p, i)).collect()
    }

    fn ns(object: &str) -> String {
        ovslab_topology::naming::namespace("seed", object)
    }

    fn hop(place: &str, device: &str, vlan: Option<u16>) -> TraceHop {
        TraceHop {
            number: 1,
            leg: "request".into(),
            place: place.into(),
            namespace: ns(place),
            device: device.into(),
            direction: "in".into(),
            vlan,
            src_mac: "fa:16:3e:00:00:01".into(),
            dst_mac: "fa:16:3e:00:00:02".into(),
            src_ip: "192.168.1.11".into(),
            dst_ip: "192.168.2.11".into(),
            encapsulation: None,
            time_us: 0,
            bridge: None,
            notes: vec![],
            flooded: false,
        }
    }

    #[test]
    fn every_node_and_instance_is_a_box_or_a_frame_of_the_picture() {
        let p = seed();
        let picture = p.picture();
        for n in &p.topology.nodes {
            assert!(
                picture.clusters.iter().any(|c| c.object == n.name),
                "{}",
                n.name
            );
        }
        for i in &p.topology.instances {
            let b = picture
                .boxes
                .iter()
                .find(|b| b.object == i.name)
                .unwrap_or_else(|| panic!("{}", i.name));
            assert_eq!(b.kind, "instance");
            assert!(picture.svg.contains(&format!("data-box=\"{}\"", b.id)));
            let eth0 = b.devices.iter().find(|d| d.name == "eth0").unwrap();
            assert_eq!(eth0.mac.as_deref(), Some(mac_text(&i.mac).as_str()));
        }
        assert_eq!(picture.checks.len(), 12);
        assert!(picture.sources.contains(&"internet".to_string()));
    }

    #[test]
    fn a_router_box_shows_its_nat_and_bridges_their_flows() {
        let picture = seed().picture();
        let router = picture
            .boxes
            .iter()
            .find(|b| b.object == "router1")
            .unwrap();
        assert_eq!(router.live, Some("nat"));
        assert!(
            router
                .nat
                .contains(&"DNAT 203.0.113.102 → 192.168.1.11".to_string()),
            "{:?}",
            router.nat
        );
        assert!(
            router
                .nat
                .iter()
                .any(|l| l.starts_with("SNAT 192.168.1.0/24 → 203.0.113.101"))
        );
        let br_int = picture.boxes.iter().find(|b| b.label[0] == BR_INT).unwrap();
        assert_eq!(br_int.live, Some("flows"));
        assert!(br_int.devices.iter().any(|d| d.tag.is_some()));
    }

    #[test]
    fn a_repair_names_the_device_in_its_node_or_else_the_node() {
        let p = seed();
        let flow = p.marks_of_repair("compute1: br-vlan: add flow table=0 in_port=phy-br-vlan");
        assert_eq!(names(&p, &flow), [BR_VLAN]);
        let [i] = flow.boxes.iter().copied().collect::<Vec<_>>()[..] else {
            panic!()
        };
        assert_eq!(p.namespace_of(i), ns("compute1"));
        assert!(flow.clusters.is_empty());

        let restart = p.marks_of_repair("start ovs-vswitchd on compute2");
        assert!(restart.boxes.is_empty());
        let frames: Vec<&str> = restart
            .clusters
            .iter()
            .map(|&c| p.graph.clusters[c].object.as_str())
            .collect();
        assert_eq!(frames, ["compute2"]);

        let created = p.marks_of_repair(&format!("create namespace {}", ns("instance3")));
        assert_eq!(names(&p, &created), ["instance3"]);

        let qvo = p.topology.instance("instance1").unwrap().plug().qvo;
        let port = p.marks_of_repair(&format!("{}: add port {qvo} to br-int", ns("compute1")));
        assert_eq!(names(&p, &port), [BR_INT]);

        assert!(p.marks_of_repair("nothing of the lab").is_empty());
    }

    #[test]
    fn hops_land_on_their_boxes_with_the_changes_labelled() {
        let p = seed();
        let plug = p.topology.instance("instance1").unwrap().plug();
        let eth0 = hop("instance1", "eth0", None);
        let qvo = hop("compute1", &plug.qvo, None);
        let eth1 = hop("compute1", "eth1", Some(101));
        let mut back = hop("network", "eth1", Some(102));
        back.src_mac = "fa:16:3e:00:00:09".into();
        let mut nat = hop("internet", "eth0", None);
        nat.src_ip = "203.0.113.101".into();
        let report = TraceReport {
            lab: "seed".into(),
            from: "instance1".into(),
            to: "instance2".into(),
            destination: "192.168.2.11".into(),
            protocol: TraceProtocol::Icmp,
            tag: 1,
            answered: false,
            hops: vec![eth0, qvo, eth1, back, nat],
            conclusions: vec![],
            lost: Some(TraceLoss {
                last_seen: format!("compute1 {} (in)", plug.qvo),
                next_expected: "compute1 eth1 (out)".into(),
            }),
            elapsed_ms: 1,
        };
        let view = p.trace_view(report);
        let on: Vec<String> = view
            .steps
            .iter()
            .map(|s| name(&p, s.r#box.unwrap()))
            .collect();
        assert_eq!(on, ["instance1", BR_INT, BR_VLAN, BR_VLAN, "internet"]);
        assert_eq!(view.steps[2].changes, ["VLAN 101"]);
        assert_eq!(
            view.steps[3].changes,
            [
                "VLAN 101 → 102",
                "MAC fa:16:3e:00:00:09 → fa:16:3e:00:00:02"
            ]
        );
        assert_eq!(
            view.steps[4].changes,
            [
                "VLAN 102 removed",
                "SNAT 192.168.1.11 → 203.0.113.101",
                "MAC fa:16:3e:00:00:01 → fa:16:3e:00:00:02"
            ]
        );
        assert_eq!(view.lost_at.map(|i| name(&p, i)), Some(BR_INT.to_string()));
        assert_eq!(
            view.next_expected.map(|i| name(&p, i)),
            Some(BR_VLAN.to_string())
        );
    }

    #[test]
    fn a_tunnel_is_labelled_with_its_key_where_the_frame_enters_it() {
        let mut h = hop("compute1", "eth3", None);
        h.encapsulation = Some(ovslab_api::TraceEncapsulation {
            kind: "vxlan".into(),
            key: Some(101),
            src_ip: "172.16.0.11".into(),
            dst_ip: "172.16.0.12".into(),
        });
        let before = hop("compute1", "eth0", None);
        assert_eq!(
            changes(Some(&before), &h),
            ["VXLAN VNI 101 172.16.0.11 → 172.16.0.12"]
        );
        assert_eq!(changes(Some(&h), &h), Vec::<String>::new());
    }

    #[test]
    fn checks_know_their_ends_and_protocol() {
        let p = seed();
        let checks = p.checks();
        let inbound = checks
            .iter()
            .find(|c| c.name == "security-group-drops-inbound-tcp")
            .unwrap();
        assert_eq!((inbound.protocol, inbound.port), ("tcp", Some(22)));
        assert!(!inbound.expect_success);
        let mut ends: Vec<String> = inbound.ends.iter().map(|&i| name(&p, i)).collect();
        ends.sort();
        assert_eq!(ends, ["instance1", "internet"]);
        let router = checks
            .iter()
            .find(|c| c.name == "security-group-drops-tcp-from-the-router")
            .unwrap();
        assert_eq!(router.from, "router1");
        assert_eq!(router.ends.len(), 2, "the router's box and instance1's");
    }

    #[test]
    fn a_crowded_node_shows_its_instances_as_one_box_that_traces_land_on() {
        let topology = ovslab_topology::parse(
            "scale.yaml",
            &ovslab_topology::generate::scale_topology(2, 30),
        )
        .unwrap();
        let p = LabPicture::new(topology);
        let picture = p.picture();
        let groups: Vec<&BoxView> = picture
            .boxes
            .iter()
            .filter(|b| b.kind == "instance")
            .collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].label[0], "30 instances");
        assert_eq!(groups[0].namespace, "");
        assert_eq!(groups[0].devices.len(), 30, "every instance's eth0");
        let ns = ovslab_topology::naming::namespace(&p.topology.lab, "instance25");
        let mut h = hop("instance25", "eth0", None);
        h.namespace = ns.clone();
        assert_eq!(p.box_of_hop(&h), Some(groups[0].id));
        let created = p.marks_of_repair(&format!("create namespace {ns}"));
        assert_eq!(
            created.boxes.into_iter().collect::<Vec<_>>(),
            [groups[0].id]
        );
    }
}
