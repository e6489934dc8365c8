//! How a lab's devices are joined — veth peers, Linux bridges, Open vSwitch
//! switches, IP stacks — so that the places a probe was seen can be put in
//! the order the packet went, and so that a lost probe's next stop is known.
//!
//! Kernel receive times cannot order frames on both ends of a veth (they
//! may differ by microseconds either way), so the order comes from the
//! wiring: a frame sent by a device is next received by its veth peer; a
//! frame received by a port is next sent by another port of the same
//! bridge, switch or namespace stack. Times only break ties.

use std::collections::{HashMap, HashSet};

use ovslab_capture::{Direction, Frame};
use ovslab_topology::naming;
use ovslab_topology::plan::{DesiredState, RouterPort, active_router_namespace};
use ovslab_topology::{Network, NodeRole, Topology};

/// A device in a namespace.
pub type Device = (String, String);

/// What joins a device to others besides its veth peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Domain {
    /// A Linux bridge (its ports and the bridge device itself).
    Bridge(String, String),
    /// A node's Open vSwitch: every bridge, joined by patch ports.
    Switch(String),
    /// The IP stack of a namespace (routing).
    Stack(String),
}

/// The lab's wiring, from its plan.
#[derive(Debug, Default)]
pub struct Wiring {
    peers: HashMap<Device, Device>,
    domains: HashMap<Device, Domain>,
    bridges: HashSet<Device>,
    /// Open vSwitch ports: `(node, bridge)`.
    ovs_ports: HashMap<Device, (String, String)>,
    /// Internal ports of Open vSwitch bridges other than the bridge's own
    /// (a physical router's `eth1.101`): devices with the switch on one
    /// side and the namespace's IP stack on the other, so what the kernel
    /// receives on them the switch sent, and the other way round.
    internal: HashSet<Device>,
    /// The topology object each namespace stands for.
    objects: HashMap<String, String>,
}

/// One observation, as the wiring sees it.
pub trait Seen {
    fn device(&self) -> &Device;
    fn direction(&self) -> Direction;
    fn time_ns(&self) -> i128;
    fn frame(&self) -> &Frame;
}

impl Wiring {
    pub fn new(plan: &DesiredState) -> Wiring {
        let mut w = Wiring::default();
        for ns in &plan.namespaces {
            w.objects.insert(ns.name.clone(), ns.object.clone());
            for veth in &ns.veths {
                let a = (ns.name.clone(), veth.name.clone());
                let b = (veth.peer_namespace.clone(), veth.peer.clone());
                w.peers.insert(a.clone(), b.clone());
                w.peers.insert(b, a);
            }
            for bridge in &ns.bridges {
                let device = (ns.name.clone(), bridge.clone());
                w.bridges.insert(device.clone());
                w.domains
                    .insert(device, Domain::Bridge(ns.name.clone(), bridge.clone()));
            }
            for link in &ns.links {
                let device = (ns.name.clone(), link.name.clone());
                if let Some(master) = &link.master {
                    w.domains
                        .insert(device, Domain::Bridge(ns.name.clone(), master.clone()));
                } else {
                    w.domains
                        .entry(device)
                        .or_insert_with(|| Domain::Stack(ns.name.clone()));
                }
            }
        }
        for switch in &plan.switches {
            for bridge in &switch.bridges {
                for port in bridge.ports.iter().filter(|p| p.patch_peer.is_none()) {
                    let device = (switch.namespace.clone(), port.name.clone());
                    if port.internal {
                        w.internal.insert(device.clone());
                    }
                    w.domains
                        .insert(device.clone(), Domain::Switch(switch.namespace.clone()));
                    w.ovs_ports
                        .insert(device, (switch.node.clone(), bridge.name.clone()));
                }
            }
        }
        w
    }

    /// The node and bridge of an Open vSwitch port.
    pub fn ovs_port(&self, device: &Device) -> Option<&(String, String)> {
        self.ovs_ports.get(device)
    }

    /// The node and bridge a frame seen on `device` going `direction`
    /// enters: an Open vSwitch port's received frames, an internal port's
    /// sent ones (the kernel sends them into the switch).
    pub fn entering_switch(
        &self,
        device: &Device,
        direction: Direction,
    ) -> Option<&(String, String)> {
        let wanted = if self.internal.contains(device) {
            Direction::Out
        } else {
            Direction::In
        };
        (direction == wanted)
            .then(|| self.ovs_port(device))
            .flatten()
    }

    /// The namespace whose IP stack the device sends and receives for.
    fn stack_of<'a>(&'a self, device: &'a Device) -> Option<&'a str> {
        if self.internal.contains(device) {
            return Some(&device.0);
        }
        match self.domains.get(device)? {
            Domain::Stack(ns) => Some(ns),
            _ => None,
        }
    }

    pub fn is_bridge(&self, device: &Device) -> bool {
        self.bridges.contains(device)
    }

    /// The topology object a namespace stands for.
    pub fn object<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.objects
            .get(namespace)
            .map_or(namespace, String::as_str)
    }

    /// Whether a frame seen at `a` is next seen at `b`: the devices are
    /// joined, and the frame is what that joint can make of it — the same
    /// across a veth or a Linux bridge, the same but for its VLAN tag and
    /// a tunnel around it across an Open vSwitch (which encapsulates onto
    /// an overlay uplink and decapsulates from it), and anything (routing,
    /// NAT) across an IP stack.
    pub fn follows(
        &self,
        a: (&Device, Direction, &Frame),
        b: (&Device, Direction, &Frame),
    ) -> bool {
        let domain = || {
            let d = self.domains.get(a.0)?;
            (a.0 != b.0 && self.domains.get(b.0) == Some(d)).then_some(d)
        };
        let same_l2 = |x: &Frame, y: &Frame| {
            x.src_mac == y.src_mac && x.dst_mac == y.dst_mac && x.ipv4() == y.ipv4()
        };
        let same_inside = || same_l2(a.2.innermost(), b.2.innermost());
        let same_l2 = same_l2(a.2, b.2);
        let (internal_a, internal_b) = (self.internal.contains(a.0), self.internal.contains(b.0));
        if internal_a || internal_b {
            let same_switch = || matches!(domain(), Some(Domain::Switch(_)));
            return match (a.1, b.1) {
                (Direction::Out, Direction::In) => false,
                // The switch hands the frame to the kernel.
                (Direction::In, Direction::In) => {
                    internal_b && !internal_a && same_switch() && same_inside()
                }
                // The kernel hands it to the switch, which sends it on.
                (Direction::Out, Direction::Out) => {
                    internal_a && !internal_b && same_switch() && same_inside()
                }
                // The kernel routes it.
                (Direction::In, Direction::Out) => {
                    a.0 != b.0
                        && self.stack_of(a.0).is_some()
                        && self.stack_of(a.0) == self.stack_of(b.0)
                }
            };
        }
        match (a.1, b.1) {
            (Direction::Out, Direction::In) => self.peers.get(a.0) == Some(b.0) && a.2 == b.2,
            (Direction::In, Direction::Out) => match domain() {
                Some(Domain::Stack(_)) => true,
                Some(Domain::Switch(_)) => same_inside(),
                Some(Domain::Bridge(..)) => same_l2 && a.2.vlan == b.2.vlan,
                None => false,
            },
            // A Linux bridge device sees what its ports receive.
            (Direction::In, Direction::In) => {
                self.is_bridge(b.0) && domain().is_some() && same_l2 && a.2.vlan == b.2.vlan
            }
            (Direction::Out, Direction::Out) => false,
        }
    }

    /// Puts observations in path order: each chain starts where nothing
    /// leads to it, and goes on to what it leads to; the rest follows by
    /// time. With each observation comes the position (in the answer) of
    /// the one it came from.
    pub fn order<T: Seen>(&self, seen: Vec<T>) -> Vec<(T, Option<usize>)> {
        let n = seen.len();
        let edge = |i: usize, j: usize| {
            i != j
                && self.follows(
                    (seen[i].device(), seen[i].direction(), seen[i].frame()),
                    (seen[j].device(), seen[j].direction(), seen[j].frame()),
                )
        };
        let mut by_time: Vec<usize> = (0..n).collect();
        by_time.sort_by_key(|&i| seen[i].time_ns());
        let starts: Vec<usize> = by_time
            .iter()
            .copied()
            .filter(|&i| !(0..n).any(|j| edge(j, i)))
            .collect();
        let mut visited = vec![false; n];
        let mut order: Vec<(usize, Option<usize>)> = Vec::with_capacity(n);
        for start in starts.into_iter().chain(by_time.iter().copied()) {
            if visited[start] {
                continue;
            }
            let mut stack = vec![(start, None)];
            visited[start] = true;
            while let Some((i, parent)) = stack.pop() {
                let at = order.len();
                order.push((i, parent));
                let mut next: Vec<usize> = (0..n).filter(|&j| !visited[j] && edge(i, j)).collect();
                // A Linux bridge device that saw the frame comes first, and
                // the ports it leaves by follow from there.
                if let Some(&bridge) = next.iter().find(|&&j| self.is_bridge(seen[j].device())) {
                    next = vec![bridge];
                }
                next.sort_by_key(|&j| seen[j].time_ns());
                for &j in next.iter().rev() {
                    visited[j] = true;
                    stack.push((j, Some(at)));
                }
            }
        }
        let mut slots: Vec<Option<T>> = seen.into_iter().map(Some).collect();
        order
            .into_iter()
            .filter_map(|(i, parent)| Some((slots[i].take()?, parent)))
            .collect()
    }
}

/// Splits an ordered leg into the way to `goal` (the observation for which
/// `is_goal` holds) and the copies that went elsewhere (floods). Without a
/// goal, everything is the way.
pub fn main_path<T>(
    ordered: Vec<(T, Option<usize>)>,
    is_goal: impl Fn(&T) -> bool,
) -> (Vec<T>, Vec<T>) {
    let Some(goal) = ordered.iter().position(|(t, _)| is_goal(t)) else {
        return (ordered.into_iter().map(|(t, _)| t).collect(), Vec::new());
    };
    let mut on_path = vec![false; ordered.len()];
    let mut at = Some(goal);
    while let Some(i) = at {
        on_path[i] = true;
        at = ordered[i].1;
    }
    let (mut way, mut elsewhere) = (Vec::new(), Vec::new());
    for (i, (t, _)) in ordered.into_iter().enumerate() {
        if on_path[i] {
            way.push(t);
        } else {
            elsewhere.push(t);
        }
    }
    (way, elsewhere)
}

/// One step of the path a packet should take.
pub type Step = (Device, Direction);

/// The devices a request from `from` to `to` (instances or external hosts;
/// `to` as reached after any DNAT) should cross, in order; `None` when
/// the lab does not say (a destination outside the lab, a router).
pub fn expected_path(topo: &Topology, from: &str, to: &str) -> Option<Vec<Step>> {
    let lab = topo.lab.as_str();
    let network_node = topo.nodes.iter().find(|n| n.role == NodeRole::Network)?;
    let mut path = Vec::new();
    let here = |ns: String, dev: &str, dir| ((ns, dev.to_string()), dir);
    // The wire a network's frames cross between nodes: the physical
    // network's switch on eth1, or the overlay's on eth3 for a tunnel
    // network.
    let wire = |path: &mut Vec<Step>, a: &str, b: &str, network: &Network| {
        if a == b {
            return;
        }
        let (switch, uplink) = match (&network.physical_network, &topo.overlay) {
            (Some(physnet), _) => (physnet.as_str(), naming::UPLINK),
            (None, Some(overlay)) => (overlay.name.as_str(), naming::OVERLAY_UPLINK),
            (None, None) => return,
        };
        let pns = naming::namespace(lab, switch);
        path.push(here(naming::namespace(lab, a), uplink, Direction::Out));
        path.push(here(pns.clone(), a, Direction::In));
        path.push(here(pns, b, Direction::Out));
        path.push(here(naming::namespace(lab, b), uplink, Direction::In));
    };
    let plug = |name: &str| {
        let i = topo.instance(name)?;
        let p = i.plug();
        let node = naming::namespace(lab, &i.node);
        let network = topo.network(&i.network)?;
        Some((i, p, node, network))
    };
    let router_of = |network: &str| {
        topo.routers
            .iter()
            .find(|r| r.interfaces.iter().any(|n| n == network))
    };
    let ext_steps = |host: &str| -> Option<Vec<Step>> {
        let h = topo.external_hosts.iter().find(|h| h.name == host)?;
        let ext = naming::namespace(lab, &h.network);
        let nn = naming::namespace(lab, &network_node.name);
        Some(vec![
            here(nn, naming::EXTERNAL_UPLINK, Direction::Out),
            here(ext.clone(), &network_node.name, Direction::In),
            here(ext, host, Direction::Out),
            here(
                naming::namespace(lab, host),
                naming::GUEST_NIC,
                Direction::In,
            ),
        ])
    };
    let reverse = |steps: Vec<Step>| -> Vec<Step> {
        steps
            .into_iter()
            .rev()
            .map(|(d, dir)| (d, flip(dir)))
            .collect()
    };

    // Leaving the source.
    let (src_node, src_net) = if let Some((i, p, node, _)) = plug(from) {
        path.push(here(
            naming::namespace(lab, from),
            naming::GUEST_NIC,
            Direction::Out,
        ));
        path.push(here(node.clone(), &p.tap, Direction::In));
        path.push(here(node.clone(), &p.qbr, Direction::In));
        path.push(here(node.clone(), &p.qvb, Direction::Out));
        path.push(here(node, &p.qvo, Direction::In));
        (i.node.clone(), Some(i.network.clone()))
    } else {
        // From an external host, in through the router's gateway.
        path.extend(reverse(ext_steps(from)?));
        (network_node.name.clone(), None)
    };

    // Reaching the destination.
    if let Some((dst, p, node, network)) = plug(to) {
        let arrive = |path: &mut Vec<Step>| {
            path.push(here(node.clone(), &p.qvo, Direction::Out));
            path.push(here(node.clone(), &p.qvb, Direction::In));
            path.push(here(node.clone(), &p.qbr, Direction::In));
            path.push(here(node.clone(), &p.tap, Direction::Out));
            path.push(here(
                naming::namespace(lab, to),
                naming::GUEST_NIC,
                Direction::In,
            ));
        };
        if src_net.as_deref() == Some(dst.network.as_str()) {
            wire(&mut path, &src_node, &dst.node, network);
            arrive(&mut path);
            return Some(path);
        }
        let router = router_of(&dst.network)?;
        let rns = active_router_namespace(lab, router);
        let nn = naming::namespace(lab, router.node());
        match &src_net {
            Some(net) => {
                wire(&mut path, &src_node, router.node(), topo.network(net)?);
                let port = RouterPort::internal(router, net);
                path.push(here(nn.clone(), &port.tap, Direction::Out));
                path.push(here(rns.clone(), &port.device, Direction::In));
            }
            None => {
                let port = RouterPort::gateway(router);
                path.push(here(nn.clone(), &port.tap, Direction::Out));
                path.push(here(rns.clone(), &port.device, Direction::In));
            }
        }
        let port = RouterPort::internal(router, &dst.network);
        path.push(here(rns, &port.device, Direction::Out));
        path.push(here(nn, &port.tap, Direction::In));
        wire(&mut path, router.node(), &dst.node, network);
        arrive(&mut path);
        return Some(path);
    }

    // An external host, out through the source network's router.
    let net = src_net?;
    let router = router_of(&net)?;
    let rns = active_router_namespace(lab, router);
    let nn = naming::namespace(lab, router.node());
    wire(&mut path, &src_node, router.node(), topo.network(&net)?);
    let inside = RouterPort::internal(router, &net);
    let gateway = RouterPort::gateway(router);
    path.push(here(nn.clone(), &inside.tap, Direction::Out));
    path.push(here(rns.clone(), &inside.device, Direction::In));
    path.push(here(rns, &gateway.device, Direction::Out));
    path.push(here(nn, &gateway.tap, Direction::In));
    path.extend(ext_steps(to)?);
    Some(path)
}

/// The path of the answer: the request's, backwards.
pub fn reply_path(request: &[Step], wiring: &Wiring) -> Vec<Step> {
    request
        .iter()
        .rev()
        .map(|(d, dir)| {
            let dir = if wiring.is_bridge(d) {
                *dir
            } else {
                flip(*dir)
            };
            (d.clone(), dir)
        })
        .collect()
}

fn flip(d: Direction) -> Direction {
    match d {
        Direction::In => Direction::Out,
        Direction::Out => Direction::In,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_topology::plan::{self, NamespaceKind};

    /// The seed lab's plan with an overlay as the planner is to add it:
    /// each node's `eth3`, a port of its `br-overlay`, joined by a veth to a
    /// port named after the node on a Linux bridge in an overlay namespace.
    /// Made by copying the physical network's pieces, so that it follows
    /// the plan's types as they grow.
    fn seed_with_overlay() -> DesiredState {
        let topo = ovslab_topology::seed();
        let mut plan = plan::plan(&topo, &Default::default());
        let mut overlay = plan
            .namespaces
            .iter()
            .find(|n| n.kind == NamespaceKind::PhysicalNetwork)
            .expect("the seed has a physical network")
            .clone();
        overlay.name = naming::namespace(&plan.lab, "overlay");
        overlay.object = "overlay".into();
        for ns in plan
            .namespaces
            .iter_mut()
            .filter(|n| n.kind == NamespaceKind::Node)
        {
            let mut veth = ns
                .veths
                .iter()
                .find(|v| v.name == naming::UPLINK)
                .unwrap()
                .clone();
            veth.name = naming::OVERLAY_UPLINK.into();
            veth.peer_namespace = overlay.name.clone();
            ns.veths.push(veth);
            let mut link = ns
                .links
                .iter()
                .find(|l| l.name == naming::UPLINK)
                .unwrap()
                .clone();
            link.name = naming::OVERLAY_UPLINK.into();
            ns.links.push(link);
        }
        for switch in &mut plan.switches {
            let mut bridge = switch
                .bridges
                .iter()
                .find(|b| b.ports.iter().any(|p| p.name == naming::UPLINK))
                .unwrap()
                .clone();
            bridge.name = naming::BR_OVERLAY.into();
            bridge.ports.retain(|p| p.name == naming::UPLINK);
            bridge.ports[0].name = naming::OVERLAY_UPLINK.into();
            switch.bridges.push(bridge);
        }
        plan.namespaces.push(overlay);
        plan
    }

    struct Sighting {
        device: Device,
        direction: Direction,
        time_ns: i128,
        frame: Frame,
    }

    impl Seen for Sighting {
        fn device(&self) -> &Device {
            &self.device
        }
        fn direction(&self) -> Direction {
            self.direction
        }
        fn time_ns(&self) -> i128 {
            self.time_ns
        }
        fn frame(&self) -> &Frame {
            &self.frame
        }
    }

    /// `inner` in VXLAN 101 from 172.16.0.11 to 172.16.0.12.
    fn in_vxlan(inner: &[u8]) -> Frame {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12,
        ]);
        f.extend_from_slice(&[
            0xc8, 0x22, 0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 101, 0,
        ]);
        f.extend_from_slice(inner);
        Frame::parse(&f).unwrap()
    }

    #[test]
    fn a_frame_is_followed_into_a_tunnel_across_the_overlay_and_out_of_it() {
        let topo = ovslab_topology::seed();
        let wiring = Wiring::new(&seed_with_overlay());
        let (i1, i3) = (
            topo.instance("instance1").unwrap(),
            topo.instance("instance3").unwrap(),
        );
        let echo = crate::probes::icmp_frame(i1.mac, i3.mac, i1.address, i3.address, 40000, 1);
        let (plain, tunnelled) = (Frame::parse(&echo).unwrap(), in_vxlan(&echo));
        let node = |n: &str| naming::namespace(&topo.lab, n);
        let at = |ns: String, dev: &str, direction, time_ns, frame: &Frame| Sighting {
            device: (ns, dev.to_string()),
            direction,
            time_ns,
            frame: frame.clone(),
        };
        let (qvo1, qvo3) = (i1.plug().qvo, i3.plug().qvo);
        use Direction::{In, Out};
        // In order of the path; the kernel's times disagree across a veth.
        let path = vec![
            at(node("compute1"), &qvo1, In, 10, &plain),
            at(node("compute1"), "eth3", Out, 30, &tunnelled),
            at(node("overlay"), "compute1", In, 29, &tunnelled),
            at(node("overlay"), "compute2", Out, 40, &tunnelled),
            at(node("compute2"), "eth3", In, 41, &tunnelled),
            at(node("compute2"), &qvo3, Out, 50, &plain),
        ];
        let expected: Vec<Device> = path.iter().map(|s| s.device.clone()).collect();
        let mut shuffled = path;
        shuffled.reverse();
        let ordered = wiring.order(shuffled);
        let devices: Vec<Device> = ordered.iter().map(|(s, _)| s.device.clone()).collect();
        assert_eq!(devices, expected);
        // Each step comes from the one before: one chain.
        let parents: Vec<Option<usize>> = ordered.iter().map(|(_, p)| *p).collect();
        assert_eq!(parents, [None, Some(0), Some(1), Some(2), Some(3), Some(4)]);
        // eth3 is an Open vSwitch port (of br-overlay), asked about by trace.
        assert_eq!(
            wiring.ovs_port(&(node("compute2"), "eth3".into())),
            Some(&("compute2".to_string(), naming::BR_OVERLAY.to_string()))
        );
        assert_eq!(wiring.object(&node("overlay")), "overlay");

        // A switch does not turn one frame into another inside a tunnel.
        let mut other = echo.clone();
        other[0] ^= 1;
        let stranger = in_vxlan(&other);
        let qvo = (node("compute1"), qvo1.clone());
        let eth3 = (node("compute1"), "eth3".to_string());
        assert!(wiring.follows((&qvo, In, &plain), (&eth3, Out, &tunnelled)));
        assert!(!wiring.follows((&qvo, In, &plain), (&eth3, Out, &stranger)));
    }

    /// `frame` tagged with VLAN `vid` (an 802.1Q header after the MACs).
    fn tagged(frame: &[u8], vid: u16) -> Frame {
        let mut f = frame[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
        f.extend_from_slice(&frame[12..]);
        Frame::parse(&f).unwrap()
    }

    #[test]
    fn a_physical_routers_sub_interface_joins_its_switch_to_its_ip_stack() {
        const PROVIDER: &str = include_str!("../../../../lab-topologies/provider.yaml");
        let topo = ovslab_topology::parse("provider", PROVIDER).unwrap();
        let wiring = Wiring::new(&plan::plan(&topo, &Default::default()));
        let i3 = topo.instance("instance3").unwrap();
        let router = [0xfa, 0x16, 0x3e, 0, 0, 1];
        let server = [0xfa, 0x16, 0x3e, 0, 0, 2];
        let dst = "198.51.100.10".parse().unwrap();
        let echo = crate::probes::icmp_frame(i3.mac, router, i3.address, dst, 40000, 1);
        let routed = crate::probes::icmp_frame(router, server, i3.address, dst, 40000, 1);
        let (on_trunk, on_sub) = (tagged(&echo, 101), Frame::parse(&echo).unwrap());
        let routed = Frame::parse(&routed).unwrap();
        let ns = naming::namespace(&topo.lab, "physrouter");
        let dev = |d: &str| (ns.clone(), d.to_string());
        let (eth1, sub, eth2) = (dev("eth1"), dev("eth1.101"), dev("eth2"));
        use Direction::{In, Out};
        // In: the switch takes it off the trunk and hands it to the
        // kernel, which routes it out of eth2.
        assert!(wiring.follows((&eth1, In, &on_trunk), (&sub, In, &on_sub)));
        assert!(wiring.follows((&sub, In, &on_sub), (&eth2, Out, &routed)));
        // Out: the kernel routes the answer into the sub-interface, which
        // the switch sends out of the trunk, tagged.
        assert!(wiring.follows((&eth2, In, &routed), (&sub, Out, &on_sub)));
        assert!(wiring.follows((&sub, Out, &on_sub), (&eth1, Out, &on_trunk)));
        // Not the other way round.
        assert!(!wiring.follows((&sub, In, &on_sub), (&eth1, Out, &on_trunk)));
        assert!(!wiring.follows((&eth1, In, &on_trunk), (&sub, Out, &on_sub)));
        // Trace asks the switch about what the kernel sends into it.
        let switch = Some(&("physrouter".to_string(), naming::BR_TRUNK.to_string()));
        assert_eq!(wiring.entering_switch(&sub, Out), switch);
        assert_eq!(wiring.entering_switch(&sub, In), None);
        assert_eq!(wiring.entering_switch(&eth1, In), switch);
    }
}
