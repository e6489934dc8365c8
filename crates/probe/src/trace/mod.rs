//! `ovslab trace`: one real probe, followed hop by hop.
//!
//! Before the probe leaves, AF_PACKET sockets open on every device of the
//! lab it could cross: the source's and destination's NICs and hybrid
//! plugs (tap, qbr, qvb, qvo), every node's uplinks and router ports, the
//! physical and external networks, the routers' qr-/qg- devices. After the
//! answer (or the timeout), every frame of the probe is read back with its
//! VLAN tag, MACs and addresses, and put in path order by the lab's wiring
//! ([`wiring`]). Where a frame entered an Open vSwitch port, the node's
//! vswitchd is asked what its bridges did with it (`ofproto/trace`, which
//! follows patch ports; [`ofproto`]). Comparing neighbouring hops shows
//! the VLAN rewrites and the router's NAT. On a node's overlay uplink the
//! probe travels inside a VXLAN or GRE tunnel: the hop shows the probe's
//! own frame (inside the tunnel) and the tunnel (its key and endpoints),
//! and where the probe went into and came out of it. Nothing in the lab is
//! changed: the sockets close when the trace ends, and a promiscuous
//! membership (on a Linux bridge) goes with its socket.

pub mod ofproto;
pub mod wiring;

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ovslab_api::{
    BridgeTrace, TraceEncapsulation, TraceHop, TraceLoss, TraceProtocol, TraceReport, TraceRequest,
};
use ovslab_capture::frame::format_mac;
use ovslab_capture::{Direction, Encapsulation, Frame, PacketSocket, TunnelKind};
use ovslab_netlink::netns;
use ovslab_topology::naming;
use ovslab_topology::plan::{self, DesiredState, NamespaceKind};
use ovslab_topology::{CheckTarget, NodeRole, Topology, TunnelType};
use ovslab_unixctl as unixctl;

use crate::checks;
use crate::probes::{self, Leg, Probe};
use wiring::{Device, Seen, Wiring};

/// Why a trace could not run.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("`{0}` is not an instance or external host of the lab: a trace starts at one")]
    BadSource(String),
    #[error("`{0}` is not an instance, external host, router or IPv4 address of the lab")]
    BadDestination(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How long to wait after the answer for the last frames to be queued.
const SETTLE: Duration = Duration::from_millis(150);

/// How long a trace waits for a node's vswitchd to answer one question
/// (`dpif/show`, `ofproto/trace`): answered in milliseconds by a running
/// one. A node that does not answer in time is not asked again in the
/// same trace.
const VSWITCHD_DEADLINE: Duration = Duration::from_secs(5);

/// How long reading the watched devices may take, after which each
/// device still unread gets one bounded batch
/// ([`PacketSocket::drain_queued`]). Reading them takes milliseconds;
/// this bounds a trace through a lab that an instance floods, where each
/// flooded device is read up to what its socket could hold.
const READ_LIMIT: Duration = Duration::from_secs(5);

/// Runs one trace (blocking: sockets and threads in namespaces).
pub fn run(
    topo: &Topology,
    run_root: &Path,
    request: &TraceRequest,
    tag: u16,
) -> Result<TraceReport, TraceError> {
    let started = Instant::now();
    let lab = topo.lab.as_str();
    let is_source = topo.instance(&request.from).is_some()
        || topo.external_hosts.iter().any(|h| h.name == request.from);
    if !is_source {
        return Err(TraceError::BadSource(request.from.clone()));
    }
    let (dest_ip, dest) = if request.protocol == TraceProtocol::Dhcp {
        // The source's network's DHCP server.
        let server = topo
            .instance(&request.from)
            .and_then(|i| topo.network(&i.network))
            .and_then(|n| n.dhcp_address)
            .ok_or_else(|| {
                TraceError::BadDestination("a DHCP server (the source's network has none)".into())
            })?;
        (server, None)
    } else {
        let target = match request.to.parse::<Ipv4Addr>() {
            Ok(ip) => CheckTarget::Address(ip),
            Err(_) => CheckTarget::Object(request.to.clone()),
        };
        checks::resolve(topo, &target)
            .ok_or_else(|| TraceError::BadDestination(request.to.clone()))?
    };
    let dest_object = dest
        .as_ref()
        .and_then(|(ns, _, _)| ns.strip_prefix(&naming::namespace_prefix(lab)))
        .map(str::to_string);
    let from_ns = naming::namespace(lab, &request.from);
    let probe = match request.protocol {
        TraceProtocol::Icmp => Probe::Icmp,
        TraceProtocol::Tcp(port) => Probe::Tcp(port),
        TraceProtocol::Udp(port) => Probe::Udp(port),
        TraceProtocol::Http(port) => Probe::Http(port),
        TraceProtocol::Dhcp => Probe::Dhcp,
    };

    let desired = plan::plan(topo, &Default::default());
    let wiring = Wiring::new(&desired);
    let watched = watch_list(topo, &desired, &request.from, dest_object.as_deref());
    let sockets = open_all(&watched)?;

    let sent_at = SystemTime::now();
    let listen_ns = dest.as_ref().map(|(ns, _, _)| ns.as_str());
    let answered = match request.protocol {
        TraceProtocol::Dhcp => {
            let mac = topo
                .instance(&request.from)
                .map(|i| i.mac)
                .ok_or_else(|| TraceError::BadSource(request.from.clone()))?;
            probes::dhcp(&from_ns, naming::GUEST_NIC, mac, tag, probes::PROBE_TIMEOUT)?.is_some()
        }
        TraceProtocol::Http(port) => {
            let path = "/latest/meta-data/instance-id";
            probes::http_get(&from_ns, dest_ip, port, path, tag, probes::PROBE_TIMEOUT)?
                .is_some_and(|(s, _)| s == 200)
        }
        _ => probes::send(&from_ns, listen_ns, dest_ip, probe, tag, 1)?,
    };
    std::thread::sleep(SETTLE);

    let mut seen = Vec::new();
    // Devices where frames went unseen: dropped by the kernel while the
    // socket's queue was full, or still queued when reading stopped.
    let mut missed: Vec<&Device> = Vec::new();
    let read_by = Instant::now() + READ_LIMIT;
    for (device, socket) in &sockets {
        let emptied = socket.drain_queued(read_by, |packet| {
            let Some(frame) = Frame::parse(&packet.data) else {
                return;
            };
            let Some(leg) = probes::leg(&frame, probe, tag) else {
                return;
            };
            seen.push(Observation {
                device: device.clone(),
                leg,
                direction: packet.direction,
                time_ns: nanos_since(sent_at, packet.time),
                frame,
            });
        })?;
        let dropped = socket.dropped().unwrap_or(0);
        if !emptied || dropped > 0 {
            let (ns, dev) = device;
            tracing::warn!(
                "trace: {dev} in {ns}: {dropped} frames dropped, {} left unread",
                if emptied { "none" } else { "more" }
            );
            missed.push(device);
        }
    }
    let missed = missed_note(&missed);
    drop(sockets);
    // A retransmission is the same story again: keep the first sighting.
    seen.sort_by_key(|o| o.time_ns);
    let mut firsts: Vec<Observation> = Vec::new();
    for o in seen {
        if !firsts
            .iter()
            .any(|f| f.leg == o.leg && f.device == o.device && f.direction == o.direction)
        {
            firsts.push(o);
        }
    }
    let (requests, replies): (Vec<_>, Vec<_>) =
        firsts.into_iter().partition(|o| o.leg == Leg::Request);
    let dest_nic = dest.as_ref().map(|(ns, nic, _)| (ns.clone(), nic.clone()));
    let source_nic = (from_ns.clone(), naming::GUEST_NIC.to_string());
    let arrives = |o: &Observation, nic: &Device| o.device == *nic && o.direction == Direction::In;
    let (requests, request_floods) = wiring::main_path(wiring.order(requests), |o| {
        dest_nic.as_ref().is_some_and(|nic| arrives(o, nic))
    });
    let (replies, reply_floods) =
        wiring::main_path(wiring.order(replies), |o| arrives(o, &source_nic));

    let mut vswitchds = Vswitchds::new(run_root, lab);
    let mut hops = Vec::new();
    for (leg, floods) in [(&requests, &request_floods), (&replies, &reply_floods)] {
        let mut previous: Option<&Observation> = None;
        for o in leg {
            hops.push(hop(hops.len() + 1, o, previous, &wiring, &mut vswitchds));
            previous = Some(o);
        }
        for o in floods {
            let mut h = hop(hops.len() + 1, o, None, &wiring, &mut vswitchds);
            h.flooded = true;
            hops.push(h);
        }
    }

    let expected = dest_object
        .as_deref()
        .and_then(|to| wiring::expected_path(topo, &request.from, to));
    let arrived = dest.as_ref().is_some_and(|(ns, nic, _)| {
        requests
            .iter()
            .any(|o| o.device == (ns.clone(), nic.clone()) && o.direction == Direction::In)
    });
    let lost = if !arrived && !answered {
        Some(loss(&requests, expected.as_deref(), &wiring))
    } else if !answered {
        let back = expected.as_deref().map(|e| wiring::reply_path(e, &wiring));
        Some(loss(&replies, back.as_deref(), &wiring))
    } else {
        None
    };

    Ok(TraceReport {
        lab: lab.to_string(),
        from: request.from.clone(),
        to: if request.protocol == TraceProtocol::Dhcp {
            "its DHCP server".to_string()
        } else {
            request.to.clone()
        },
        destination: dest_ip.to_string(),
        protocol: request.protocol,
        tag,
        answered,
        conclusions: conclusions(topo, &hops, answered, arrived)
            .into_iter()
            .chain(missed)
            .collect(),
        hops,
        lost,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The conclusion that says where the trace may have missed the probe:
/// on a device whose socket more traffic reached than the trace could keep
/// or read (an instance flooding a wire), so hops there may be missing.
fn missed_note(devices: &[&Device]) -> Option<String> {
    const NAMED: usize = 5;
    if devices.is_empty() {
        return None;
    }
    let mut names: Vec<String> = devices
        .iter()
        .take(NAMED)
        .map(|(ns, dev)| format!("{dev} in {ns}"))
        .collect();
    if devices.len() > NAMED {
        names.push(format!("{} more", devices.len() - NAMED));
    }
    Some(format!(
        "frames unseen on {}: more traffic than a trace reads, so hops there may be missing",
        names.join(", ")
    ))
}

/// One frame of the probe seen on one device.
#[derive(Debug)]
struct Observation {
    device: Device,
    leg: Leg,
    direction: Direction,
    time_ns: i128,
    frame: Frame,
}

impl Seen for Observation {
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

fn nanos_since(start: SystemTime, t: SystemTime) -> i128 {
    let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
    ns(t) - ns(start)
}

/// The devices watched: everything on the way between any two places of
/// the lab, but of instances and external hosts only the two ends.
fn watch_list(
    topo: &Topology,
    desired: &DesiredState,
    from: &str,
    to: Option<&str>,
) -> Vec<(Device, bool)> {
    let ends = [Some(from), to];
    let is_end = |object: &str| ends.contains(&Some(object));
    let foreign_plugs: Vec<String> = topo
        .instances
        .iter()
        .filter(|i| !is_end(&i.name))
        .flat_map(|i| {
            let p = i.plug();
            [p.tap, p.qbr, p.qvb, p.qvo]
        })
        .collect();
    let mut devices = Vec::new();
    for ns in &desired.namespaces {
        let keep_bridges = match ns.kind {
            NamespaceKind::Instance | NamespaceKind::ExternalHost if !is_end(&ns.object) => {
                continue;
            }
            // The networks' own bridges only repeat what their ports show.
            NamespaceKind::PhysicalNetwork
            | NamespaceKind::Overlay
            | NamespaceKind::ExternalNetwork => false,
            _ => true,
        };
        for link in &ns.links {
            let is_bridge = ns.bridges.contains(&link.name);
            if (is_bridge && !keep_bridges) || foreign_plugs.contains(&link.name) {
                continue;
            }
            devices.push(((ns.name.clone(), link.name.clone()), is_bridge));
        }
    }
    devices
}

/// Opens every socket, one thread per namespace.
fn open_all(watched: &[(Device, bool)]) -> io::Result<Vec<(Device, PacketSocket)>> {
    let mut by_ns: HashMap<&str, Vec<(&str, bool)>> = HashMap::new();
    for ((ns, dev), promiscuous) in watched {
        by_ns.entry(ns).or_default().push((dev, *promiscuous));
    }
    let mut sockets = Vec::new();
    for (ns, devices) in by_ns {
        let opened = netns::run_in(ns, || {
            devices
                .iter()
                .map(|(dev, promiscuous)| {
                    PacketSocket::open_here(dev, *promiscuous)
                        .map(|s| ((ns.to_string(), dev.to_string()), s))
                        .map_err(|e| io::Error::other(format!("{dev} in {ns}: {e}")))
                })
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(io::Error::other)?;
        sockets.extend(opened);
    }
    Ok(sockets)
}

/// The vswitchds asked, by node, with their port names.
struct Vswitchds<'a> {
    run_root: &'a Path,
    lab: &'a str,
    /// How long one question may take.
    deadline: Duration,
    ports: HashMap<String, Option<ofproto::PortNames>>,
    /// The nodes whose vswitchd did not answer a question of this trace
    /// within `deadline` (stopped or stuck), with the error: not asked
    /// again, so a trace whose probe enters a stopped switch at ten hops
    /// waits for it once, not ten times.
    unanswered: HashMap<String, String>,
}

impl<'a> Vswitchds<'a> {
    fn new(run_root: &'a Path, lab: &'a str) -> Self {
        Vswitchds {
            run_root,
            lab,
            deadline: VSWITCHD_DEADLINE,
            ports: HashMap::new(),
            unanswered: HashMap::new(),
        }
    }

    /// Asks `node`'s vswitchd; a question it does not answer in time
    /// marks the node as unanswered.
    fn call(&mut self, node: &str, method: &str, params: &[&str]) -> io::Result<String> {
        let rundir = naming::node_rundir(self.run_root, self.lab, node);
        let answer = unixctl::vswitchd_socket(&rundir)
            .and_then(|socket| unixctl::call_within(&socket, method, params, self.deadline));
        if let Err(e) = &answer
            && e.kind() == io::ErrorKind::TimedOut
        {
            self.unanswered.insert(node.to_string(), e.to_string());
        }
        answer
    }

    /// What the node's bridges do with `frame` entering at `port`.
    fn trace(
        &mut self,
        node: &str,
        bridge: &str,
        port: &str,
        frame: &Frame,
    ) -> Option<BridgeTrace> {
        // A frame that came in on the overlay uplink in a tunnel is
        // decapsulated by the datapath (`tnl_pop`) and meets br-tun on the
        // tunnel port from its sender: that is what is asked about.
        let (bridge, flow) = match frame.encapsulation() {
            Some(e) if port == naming::OVERLAY_UPLINK => {
                let kind = match e.tunnel.kind {
                    TunnelKind::Vxlan => TunnelType::Vxlan,
                    TunnelKind::Gre => TunnelType::Gre,
                };
                let tunnel_port = plan::tunnel_port_name(kind, e.outer_src);
                (naming::BR_TUN, ofproto::tunnel_flow_of(&tunnel_port, e)?)
            }
            _ => (bridge, ofproto::flow_of(port, frame)?),
        };
        let unasked = |why: String| BridgeTrace {
            bridge: bridge.to_string(),
            flows: vec![],
            datapath_actions: format!("({why})"),
        };
        if self.unanswered.contains_key(node) {
            return Some(unasked(format!(
                "not asked: {node}'s ovs-vswitchd did not answer earlier in this trace"
            )));
        }
        if !self.ports.contains_key(node) {
            let names = self
                .call(node, "dpif/show", &[])
                .ok()
                .map(|text| ofproto::PortNames::parse(&text));
            self.ports.insert(node.to_string(), names);
        }
        if let Some(e) = self.unanswered.get(node) {
            return Some(unasked(format!("cannot ask {node}'s ovs-vswitchd: {e}")));
        }
        let names = self.ports[node].clone().unwrap_or_default();
        match self.call(node, "ofproto/trace", &[bridge, &flow]) {
            Ok(text) => {
                let (flows, datapath_actions) = ofproto::parse_trace(&text, &names);
                Some(BridgeTrace {
                    bridge: bridge.to_string(),
                    flows,
                    datapath_actions,
                })
            }
            Err(e) => Some(unasked(format!("cannot ask {node}'s ovs-vswitchd: {e}"))),
        }
    }
}

fn hop(
    number: usize,
    o: &Observation,
    previous: Option<&Observation>,
    wiring: &Wiring,
    vswitchds: &mut Vswitchds,
) -> TraceHop {
    let (ns, device) = &o.device;
    // The probe's own frame: inside the tunnel on an overlay uplink.
    let frame = o.frame.innermost();
    let (src, dst) = frame
        .ipv4()
        .unwrap_or((Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED));
    let mut notes = Vec::new();
    if let Some(p) = previous {
        notes.extend(changes(&p.frame, &o.frame));
    }
    let bridge = match wiring.entering_switch(&o.device, o.direction) {
        Some((node, bridge)) => {
            let (node, bridge) = (node.clone(), bridge.clone());
            let trace = vswitchds.trace(&node, &bridge, device, &o.frame);
            if let Some(t) = &trace {
                for step in &t.flows {
                    for action in &step.actions {
                        if let Some(id) = action.strip_prefix("set_tunnel:") {
                            notes.push(format!("{} sends it into tunnel {id}", step.bridge));
                        }
                        if let Some(vid) = action.strip_prefix("mod_vlan_vid:") {
                            // From a tag, or from a tunnel's key (br-tun's
                            // table 3/4: the network's local VLAN).
                            let from = step
                                .matches
                                .split(',')
                                .find_map(|m| {
                                    m.strip_prefix("dl_vlan=")
                                        .map(|v| format!("{v} → "))
                                        .or_else(|| {
                                            m.strip_prefix("tun_id=")
                                                .map(|t| format!("tunnel {t} → "))
                                        })
                                })
                                .unwrap_or_default();
                            notes.push(format!("{} rewrites VLAN {from}{vid}", step.bridge));
                        }
                    }
                }
                if t.datapath_actions == "drop" {
                    notes.push(format!("{node}'s Open vSwitch drops it"));
                }
            }
            trace
        }
        _ => None,
    };
    TraceHop {
        number,
        leg: match o.leg {
            Leg::Request => "request",
            Leg::Reply => "reply",
        }
        .into(),
        place: wiring.object(ns).to_string(),
        namespace: ns.clone(),
        device: device.clone(),
        direction: match o.direction {
            Direction::In => "in",
            Direction::Out => "out",
        }
        .into(),
        vlan: frame.vlan,
        src_mac: format_mac(&frame.src_mac),
        dst_mac: format_mac(&frame.dst_mac),
        src_ip: src.to_string(),
        dst_ip: dst.to_string(),
        encapsulation: o.frame.encapsulation().map(trace_encapsulation),
        time_us: (o.time_ns / 1000) as i64,
        bridge,
        notes,
        flooded: false,
    }
}

/// What changed between a frame seen at one hop and at the next: the
/// probe's VLAN tag, MACs (routing) and addresses (NAT), compared inside
/// any tunnel, and the tunnel itself.
fn changes(before: &Frame, after: &Frame) -> Vec<String> {
    let mut notes = Vec::new();
    let (p, o) = (before.innermost(), after.innermost());
    match (p.vlan, o.vlan) {
        (None, Some(v)) => notes.push(format!("tagged VLAN {v}")),
        (Some(v), None) => notes.push(format!("VLAN {v} tag removed")),
        (Some(a), Some(b)) if a != b => notes.push(format!("VLAN {a} → {b}")),
        _ => {}
    }
    if (p.src_mac, p.dst_mac) != (o.src_mac, o.dst_mac) {
        notes.push("routed: new MAC addresses".to_string());
    }
    if let (Some((psrc, pdst)), Some((src, dst))) = (p.ipv4(), o.ipv4()) {
        if psrc != src {
            notes.push(format!("SNAT {psrc} → {src}"));
        }
        if pdst != dst {
            notes.push(format!("DNAT {pdst} → {dst}"));
        }
    }
    let outer = |e: &Encapsulation| (e.tunnel, e.outer_src, e.outer_dst);
    match (before.encapsulation(), after.encapsulation()) {
        (None, Some(e)) => notes.push(format!("encapsulated: {}", trace_encapsulation(e))),
        (Some(e), None) => notes.push(format!("decapsulated from {}", e.tunnel)),
        (Some(a), Some(b)) if outer(a) != outer(b) => notes.push(format!(
            "tunnel {} → {}",
            trace_encapsulation(a),
            trace_encapsulation(b)
        )),
        _ => {}
    }
    notes
}

fn trace_encapsulation(e: &Encapsulation) -> TraceEncapsulation {
    TraceEncapsulation {
        kind: e.tunnel.kind.to_string(),
        key: e.tunnel.key,
        src_ip: e.outer_src.to_string(),
        dst_ip: e.outer_dst.to_string(),
    }
}

/// Where a lost leg was last seen and the next device it should have
/// reached.
fn loss(seen: &[Observation], expected: Option<&[wiring::Step]>, wiring: &Wiring) -> TraceLoss {
    let describe = |(ns, dev): &Device, dir: Direction| {
        format!(
            "{} {dev} ({})",
            wiring.object(ns),
            match dir {
                Direction::In => "in",
                Direction::Out => "out",
            }
        )
    };
    let last = seen.last();
    let last_seen = last.map_or_else(
        || "nowhere: it never left".to_string(),
        |o| describe(&o.device, o.direction),
    );
    let next_expected = match (expected, last) {
        (None, _) => "unknown (the lab does not say where this address lives)".to_string(),
        (Some(path), None) => path
            .first()
            .map_or_else(String::new, |(d, dir)| describe(d, *dir)),
        (Some(path), Some(o)) => match path
            .iter()
            .position(|(d, dir)| *d == o.device && *dir == o.direction)
        {
            Some(i) => path.get(i + 1).map_or_else(
                || "nothing: this is the destination".to_string(),
                |(d, dir)| describe(d, *dir),
            ),
            None => {
                let missing = path
                    .iter()
                    .find(|(d, dir)| !seen.iter().any(|o| o.device == *d && o.direction == *dir));
                match missing {
                    Some((d, dir)) => {
                        format!("{} (the probe left the expected path)", describe(d, *dir))
                    }
                    None => "unknown".to_string(),
                }
            }
        },
    };
    TraceLoss {
        last_seen,
        next_expected,
    }
}

fn conclusions(topo: &Topology, hops: &[TraceHop], answered: bool, arrived: bool) -> Vec<String> {
    let mut out = Vec::new();
    let request: Vec<&TraceHop> = hops
        .iter()
        .filter(|h| h.leg == "request" && !h.flooded)
        .collect();
    let network_nodes: Vec<String> = topo
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Network)
        .map(|n| n.name.clone())
        .collect();
    let routers: Vec<&str> = topo.routers.iter().map(|r| r.name.as_str()).collect();
    let crossed = request
        .iter()
        .any(|h| network_nodes.contains(&h.place) || routers.contains(&h.place.as_str()));
    out.push(format!(
        "crossed the network node: {}",
        if crossed { "yes" } else { "no" }
    ));
    let physnets: Vec<&str> = topo
        .physical_networks
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut wire_vlans: Vec<String> = Vec::new();
    for h in &request {
        if physnets.contains(&h.place.as_str()) {
            let v = h
                .vlan
                .map_or_else(|| "untagged".to_string(), |v| format!("VLAN {v}"));
            if !wire_vlans.contains(&v) {
                wire_vlans.push(v);
            }
        }
    }
    out.push(if wire_vlans.is_empty() {
        "physical network: not crossed".to_string()
    } else {
        format!("physical network: {}", wire_vlans.join(", "))
    });
    let mut tunnels: Vec<String> = Vec::new();
    for e in request.iter().filter_map(|h| h.encapsulation.as_ref()) {
        let t = e.to_string();
        if !tunnels.contains(&t) {
            tunnels.push(t);
        }
    }
    if !tunnels.is_empty() {
        out.push(format!("tunnels: {}", tunnels.join("; ")));
    }
    let floods: Vec<String> = hops
        .iter()
        .filter(|h| h.flooded)
        .map(|h| h.place.clone())
        .fold(Vec::new(), |mut places, p| {
            if !places.contains(&p) {
                places.push(p);
            }
            places
        });
    if !floods.is_empty() {
        out.push(format!(
            "flooded copies (a switch had not learned the destination yet) reached: {}",
            floods.join(", ")
        ));
    }
    for h in hops.iter().filter(|h| !h.flooded) {
        for note in &h.notes {
            if note.starts_with("SNAT") || note.starts_with("DNAT") {
                let line = if h.leg == "reply" {
                    format!("{note} (the answer, translated back, in {})", h.place)
                } else {
                    format!("{note} in {}", h.place)
                };
                out.push(line);
            }
        }
    }
    out.push(match (arrived, answered) {
        (_, true) => "answered: yes".to_string(),
        (true, false) => "answered: no (the request arrived; no answer came back)".to_string(),
        (false, false) => "answered: no (the request did not arrive)".to_string(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo from instance1 to instance3, tagged `vlan`.
    fn echo(vlan: Option<u16>) -> Vec<u8> {
        let mut f = probes::icmp_frame(
            [0xfa, 0x16, 0x3e, 0, 0, 1],
            [0xfa, 0x16, 0x3e, 0, 0, 3],
            "192.168.1.11".parse().unwrap(),
            "192.168.1.12".parse().unwrap(),
            40000,
            1,
        );
        if let Some(v) = vlan {
            let mut tag = vec![0x81, 0x00];
            tag.extend_from_slice(&v.to_be_bytes());
            f.splice(12..12, tag);
        }
        f
    }

    /// `inner` in VXLAN `vni` from 172.16.0.11 to 172.16.0.12.
    fn in_vxlan(vni: u8, inner: &[u8]) -> Frame {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12,
        ]);
        f.extend_from_slice(&[
            0xc8, 0x22, 0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, vni, 0,
        ]);
        f.extend_from_slice(inner);
        Frame::parse(&f).unwrap()
    }

    #[test]
    fn hops_say_where_the_probe_entered_and_left_a_tunnel() {
        let plain = Frame::parse(&echo(None)).unwrap();
        let tunnelled = in_vxlan(101, &echo(None));
        // Into the tunnel: the probe is the same inside, so nothing else
        // changed (not "routed", though the outer MACs are new).
        assert_eq!(
            changes(&plain, &tunnelled),
            ["encapsulated: vxlan 101, 172.16.0.11 → 172.16.0.12"]
        );
        assert_eq!(changes(&tunnelled, &tunnelled), Vec::<String>::new());
        assert_eq!(changes(&tunnelled, &plain), ["decapsulated from vxlan 101"]);
        // Out of the tunnel onto a physical wire, tagged.
        let tagged = Frame::parse(&echo(Some(101))).unwrap();
        assert_eq!(
            changes(&tunnelled, &tagged),
            ["tagged VLAN 101", "decapsulated from vxlan 101"]
        );
        assert_eq!(
            changes(&in_vxlan(101, &echo(None)), &in_vxlan(102, &echo(None))),
            ["tunnel vxlan 101, 172.16.0.11 → 172.16.0.12 → vxlan 102, 172.16.0.11 → 172.16.0.12"]
        );
        // Without tunnels, as before.
        assert_eq!(changes(&plain, &tagged), ["tagged VLAN 101"]);
    }

    #[test]
    fn a_hop_on_an_overlay_uplink_shows_the_probe_and_its_tunnel() {
        let topo = ovslab_topology::seed();
        let desired = plan::plan(&topo, &Default::default());
        let wiring = Wiring::new(&desired);
        let mut vswitchds = Vswitchds::new(Path::new("/nonexistent"), &topo.lab);
        let compute1 = naming::namespace(&topo.lab, "compute1");
        let before = Observation {
            device: (compute1.clone(), "qvo1".into()),
            leg: Leg::Request,
            direction: Direction::In,
            time_ns: 10_000,
            frame: Frame::parse(&echo(None)).unwrap(),
        };
        let on_eth3 = Observation {
            device: (compute1, "eth3".into()),
            leg: Leg::Request,
            direction: Direction::Out,
            time_ns: 30_000,
            frame: in_vxlan(101, &echo(None)),
        };
        let h = hop(2, &on_eth3, Some(&before), &wiring, &mut vswitchds);
        assert_eq!((h.place.as_str(), h.device.as_str()), ("compute1", "eth3"));
        assert_eq!(
            (h.src_mac.as_str(), h.dst_mac.as_str()),
            ("fa:16:3e:00:00:01", "fa:16:3e:00:00:03")
        );
        assert_eq!(
            (h.src_ip.as_str(), h.dst_ip.as_str(), h.vlan),
            ("192.168.1.11", "192.168.1.12", None)
        );
        assert_eq!(
            h.encapsulation,
            Some(TraceEncapsulation {
                kind: "vxlan".into(),
                key: Some(101),
                src_ip: "172.16.0.11".into(),
                dst_ip: "172.16.0.12".into(),
            })
        );
        assert_eq!(
            h.notes,
            ["encapsulated: vxlan 101, 172.16.0.11 → 172.16.0.12"]
        );
        assert_eq!(h.time_us, 30);

        // The conclusions name the tunnel the request took.
        let plain_hop = hop(1, &before, None, &wiring, &mut vswitchds);
        assert_eq!(plain_hop.encapsulation, None);
        let said = conclusions(&topo, &[plain_hop, h], true, true);
        assert!(
            said.contains(&"tunnels: vxlan 101, 172.16.0.11 → 172.16.0.12".to_string()),
            "{said:?}"
        );
        assert!(said.contains(&"physical network: not crossed".to_string()));
    }

    /// A run directory under the system's temporary one, removed on drop.
    struct TempRunRoot(std::path::PathBuf);

    impl Drop for TempRunRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A stopped vswitchd (its socket takes the connection, nothing
    /// answers) costs a trace one deadline, not one per hop: the first hop
    /// into its switch says why it has no answer, the later ones that it
    /// was not asked again. Each hop once waited the whole deadline (and
    /// the first twice, port names included).
    #[test]
    fn a_vswitchd_that_does_not_answer_is_waited_for_once_per_trace() {
        let topo = ovslab_topology::seed();
        let root = TempRunRoot(std::env::temp_dir().join(format!(
            "ovslab-trace-{}-{}",
            std::process::id(),
            checks::next_tag()
        )));
        let rundir = naming::node_rundir(&root.0, &topo.lab, "compute1");
        std::fs::create_dir_all(&rundir).unwrap();
        std::fs::write(rundir.join("ovs-vswitchd.pid"), "4242\n").unwrap();
        let _stopped =
            std::os::unix::net::UnixListener::bind(rundir.join("ovs-vswitchd.4242.ctl")).unwrap();

        let desired = plan::plan(&topo, &Default::default());
        let wiring = Wiring::new(&desired);
        let compute1 = naming::namespace(&topo.lab, "compute1");
        let into_switch: Vec<Device> = desired
            .namespaces
            .iter()
            .filter(|ns| ns.name == compute1)
            .flat_map(|ns| &ns.links)
            .map(|link| (compute1.clone(), link.name.clone()))
            .filter(|d| wiring.entering_switch(d, Direction::In).is_some())
            .take(3)
            .collect();
        assert_eq!(into_switch.len(), 3, "{into_switch:?}");

        let mut vswitchds = Vswitchds::new(&root.0, &topo.lab);
        vswitchds.deadline = Duration::from_millis(300);
        let started = Instant::now();
        let hops: Vec<TraceHop> = into_switch
            .into_iter()
            .enumerate()
            .map(|(i, device)| {
                let o = Observation {
                    device,
                    leg: Leg::Request,
                    direction: Direction::In,
                    time_ns: 1000 * i as i128,
                    frame: Frame::parse(&echo(None)).unwrap(),
                };
                hop(i + 1, &o, None, &wiring, &mut vswitchds)
            })
            .collect();
        let took = started.elapsed();
        let said: Vec<&str> = hops
            .iter()
            .map(|h| h.bridge.as_ref().unwrap().datapath_actions.as_str())
            .collect();
        assert!(
            said[0].contains("cannot ask compute1's ovs-vswitchd")
                && said[0].contains("not answered within 0.3 s"),
            "{said:?}"
        );
        for later in &said[1..] {
            assert_eq!(
                *later,
                "(not asked: compute1's ovs-vswitchd did not answer earlier in this trace)"
            );
        }
        // Asked once: had every hop waited its 0.3 s, the trace would have
        // taken at least as long as this bound, however quiet the machine.
        let every_hop = Duration::from_millis(300) * said.len() as u32;
        assert!(took < every_hop, "{took:?} for {} hops", said.len());
    }
}
