//! `ovslab check`: each declared expectation is tested with a real probe —
//! ICMP echo from a raw socket, or a TCP connection to a listener the check
//! opens at the destination — while AF_PACKET sockets watch the uplinks of
//! the nodes named in `crosses`/`avoids` and the destination's NIC. Frames
//! are recognised by the probe's ICMP identifier or TCP source port, which
//! NAT keeps, and VLAN ids are read from `PACKET_AUXDATA` because the
//! kernel strips the tag on receive.
//!
//! A node's uplinks are its physical one (`eth1`, where `wire_vlan` is
//! judged) and, when its namespace has one at check time, its overlay
//! uplink (`eth3`), where the probe travels inside a VXLAN or GRE tunnel:
//! there it is recognised by the frame the tunnel carries, and `wire_vni`
//! is judged by the tunnel's key. A probe seen on either uplink crossed
//! the node.
//!
//! Every socket is created on a thread that entered the right namespace; no
//! process is spawned.
//!
//! How long a check takes: one that expects an answer ends as soon as the
//! answer is seen (and gives up after [`probes::PROBE_TIMEOUT`] and
//! [`WAIT_PER_NODE`] for each node of the lab); one that
//! expects none decides after [`probes::FAILURE_WAIT`]. Either way the
//! watches are read once more [`SETTLE`] later. Checks that connect to the
//! same TCP port share its listener ([`probes::listen`]), so every check of
//! a lab runs at once.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ovslab_api::CheckResult;
use ovslab_capture::{Frame, PacketSocket, Tunnel};
use ovslab_topology::plan::active_router_namespace;
use ovslab_topology::{Check, CheckProtocol, CheckTarget, Topology, naming};

use crate::probes::{self, Probe};

/// Echo requests (or raw frames, for a layer-2 check) a probe that
/// expects no answer sends: three, in the first 400 ms of its
/// [`probes::FAILURE_WAIT`].
const REFUSED_PROBES: u16 = 3;

/// After the probe is decided, how long frames still on their way to a
/// watched wire get. The probe's own path is watched before its answer
/// comes back, so this is for copies a switch flooded elsewhere, which
/// travel no slower than the probe.
pub const SETTLE: Duration = Duration::from_millis(30);

/// How long a check may spend reading its watches once the probe is
/// decided. Reading what a watch queued takes milliseconds; a wire that
/// an instance floods is read up to what its socket could hold
/// ([`ovslab_capture::socket::QUEUED_FRAMES_MAX`], well under this), so
/// this only bounds the unforeseen.
pub const READ_LIMIT: Duration = Duration::from_secs(1);

/// How much longer a probe that expects an answer waits for each node of
/// the lab that runs an Open vSwitch. The first ARP request between two
/// instances is a broadcast that every such node's userspace datapath
/// takes to its slow path: on a lab of 200 nodes and two cores, the
/// answer to a first check run took more than 5 s (measured), where a
/// second run answered in milliseconds.
pub const WAIT_PER_NODE: Duration = Duration::from_millis(50);

/// How long a probe in `topo` waits for the answer that `check` expects
/// or not.
pub fn wait(topo: &Topology, check: &Check) -> Duration {
    wait_among(topo.switch_hosts().count(), check)
}

/// [`wait`] in a lab of `nodes` nodes with an Open vSwitch.
fn wait_among(nodes: usize, check: &Check) -> Duration {
    if check.expect_success {
        probes::PROBE_TIMEOUT + WAIT_PER_NODE * u32::try_from(nodes).unwrap_or(u32::MAX)
    } else {
        probes::FAILURE_WAIT
    }
}

/// Echo requests (or raw frames) `check`'s probe sends at most, one every
/// [`probes::ECHO_INTERVAL`]. A probe that expects an answer goes on
/// sending for as long as it waits, as `ping` would: the kernel gives up
/// on an ARP request after three tries and drops what waited for it, and
/// on a large lab a broadcast's first trip through every node's slow path
/// can take longer than that.
fn probes(wait: Duration, check: &Check) -> u16 {
    if check.expect_success {
        let every = probes::ECHO_INTERVAL.as_millis();
        u16::try_from(wait.as_millis().div_ceil(every)).unwrap_or(u16::MAX)
    } else {
        REFUSED_PROBES
    }
}

/// Runs one check (blocking: sockets and threads in namespaces).
pub fn run(topo: &Topology, check: &Check, tag: u16) -> CheckResult {
    match run_inner(topo, check, tag) {
        Ok((reached, observations)) => judge(check, reached, &observations),
        Err(e) => CheckResult {
            name: check.name.clone(),
            passed: false,
            detail: format!("could not run: {e}"),
        },
    }
}

/// A unique probe tag (ICMP id / TCP source port) per check run.
pub fn next_tag() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid = std::process::id() as u16;
    // TCP source ports from 40000 up, away from the usual ephemeral range.
    40000
        + (pid
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
            % 20000)
}

/// Which wire a watch is on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wire {
    /// A node's physical uplink (`eth1`): VLAN ids are real there.
    Physical(String),
    /// A node's overlay uplink (`eth3`): tunnels run there.
    Overlay(String),
    /// The destination's NIC.
    Destination,
}

impl Wire {
    /// The node whose uplink this is.
    fn node(&self) -> Option<&str> {
        match self {
            Wire::Physical(node) | Wire::Overlay(node) => Some(node),
            Wire::Destination => None,
        }
    }
}

/// What was seen on one watched interface.
#[derive(Debug)]
struct Seen {
    wire: Wire,
    /// `compute1 eth1`, or `destination eth0`.
    place: String,
    frames: usize,
    /// The VLAN ids of the frames on the wire (the outer ones, for a
    /// tunnel packet), and how many were untagged.
    vlans: Vec<u16>,
    untagged: usize,
    /// The tunnels the probe's frames travelled in, and how many were in
    /// none.
    tunnels: Vec<Tunnel>,
    bare: usize,
    /// The probe's source addresses (inside any tunnel).
    sources: Vec<Ipv4Addr>,
}

impl Seen {
    fn new(wire: Wire, place: String) -> Seen {
        Seen {
            wire,
            place,
            frames: 0,
            vlans: Vec::new(),
            untagged: 0,
            tunnels: Vec::new(),
            bare: 0,
            sources: Vec::new(),
        }
    }

    /// `(vxlan 101)`, `(vlan 101, untagged)`: what the frames carried.
    fn carried(&self) -> String {
        let vlans = self.vlans.iter().map(|v| format!("vlan {v}"));
        let tunnels = self.tunnels.iter().map(ToString::to_string);
        let parts: Vec<String> = match self.wire {
            Wire::Overlay(_) => {
                let bare = (self.bare > 0).then(|| "not encapsulated".to_string());
                tunnels.chain(bare).chain(vlans).collect()
            }
            _ => {
                let untagged = (self.untagged > 0).then(|| "untagged".to_string());
                vlans.chain(untagged).chain(tunnels).collect()
            }
        };
        parts.join(", ")
    }
}

/// A watched interface and what was read from it so far.
struct Watch {
    seen: Seen,
    /// At the destination: its own address, so that only frames arriving
    /// there count as sources (not its answers).
    local: Option<Ipv4Addr>,
    socket: PacketSocket,
}

impl Watch {
    fn new(wire: Wire, place: String, local: Option<Ipv4Addr>, socket: PacketSocket) -> Watch {
        Watch {
            seen: Seen::new(wire, place),
            local,
            socket,
        }
    }

    /// Reads one batch of the frames queued so far (a bounded
    /// [`PacketSocket::drain`]) and keeps those of the probe.
    fn read(&mut self, protocol: CheckProtocol, tag: u16) {
        let packets = self.socket.drain().unwrap_or_else(|e| {
            tracing::warn!("reading {}: {e}", self.socket.interface());
            Vec::new()
        });
        for packet in packets {
            if let Some(frame) = Frame::parse(&packet.data) {
                tally(&mut self.seen, &frame, protocol, tag, self.local);
            }
        }
    }

    /// Reads every frame queued so far, however many a flood queued
    /// behind them, but not past `deadline`
    /// ([`PacketSocket::drain_queued`]), and keeps those of the probe.
    fn read_queued(&mut self, protocol: CheckProtocol, tag: u16, deadline: Instant) {
        let (socket, seen, local) = (&self.socket, &mut self.seen, self.local);
        let read = socket.drain_queued(deadline, |packet| {
            if let Some(frame) = Frame::parse(&packet.data) {
                tally(seen, &frame, protocol, tag, local);
            }
        });
        match read {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "reading {}: more frames queued than a check reads; the rest were left",
                socket.interface()
            ),
            Err(e) => tracing::warn!("reading {}: {e}", socket.interface()),
        }
    }
}

fn run_inner(topo: &Topology, check: &Check, tag: u16) -> io::Result<(bool, Vec<Seen>)> {
    let lab = &topo.lab;
    let from_ns = object_namespace(topo, &check.from)
        .ok_or_else(|| io::Error::other(format!("unknown source `{}`", check.from)))?;
    let (dest_ip, dest) = resolve(topo, &check.to)
        .ok_or_else(|| io::Error::other(format!("cannot resolve destination {:?}", check.to)))?;

    let mut watches = Vec::new();
    let mut watched: Vec<&String> = check.crosses.iter().chain(&check.avoids).collect();
    watched.sort();
    watched.dedup();
    for node in watched {
        watches.extend(uplinks(lab, node)?);
    }
    if let (true, Some((ns, nic, local))) = (check.arrives_from.is_some() || check.layer2, &dest) {
        watches.push(Watch::new(
            Wire::Destination,
            format!("destination {nic}"),
            Some(*local),
            PacketSocket::open(ns, nic, false)?,
        ));
    }

    let wait = wait(topo, check);
    let reached = match check.protocol {
        // Reached when a frame arrived at the destination.
        CheckProtocol::Icmp if check.layer2 => {
            let arrived = watches
                .last_mut()
                .filter(|w| w.seen.wire == Wire::Destination);
            let arrived = arrived
                .ok_or_else(|| io::Error::other("layer2 needs an instance as destination"))?;
            inject(topo, check, dest_ip, tag, wait, arrived)?
        }
        // DISCOVER to ACK from the instance's NIC, as its client would;
        // reached when the ACK gives it its reservation.
        CheckProtocol::Dhcp => {
            let inst = topo
                .instance(&check.from)
                .ok_or_else(|| io::Error::other("a DHCP check runs from an instance"))?;
            probes::dhcp(&from_ns, naming::GUEST_NIC, inst.mac, tag, wait)? == Some(inst.address)
        }
        // Answered means `200 OK`: a service that is there but refuses is
        // not reached.
        CheckProtocol::Http(port) => {
            let path = check.path.as_deref().unwrap_or("/");
            matches!(
                probes::http_get(&from_ns, dest_ip, port, path, tag, wait)?,
                Some((200, _))
            )
        }
        // A listener at a destination inside the lab, shared with the
        // other checks that connect there.
        CheckProtocol::Tcp(port) => {
            let listener = dest
                .as_ref()
                .map(|(ns, _, _)| probes::listen(ns, port))
                .transpose()?;
            probes::tcp(&from_ns, listener.as_deref(), dest_ip, port, tag, wait)?
        }
        CheckProtocol::Icmp => probes::ping(&from_ns, dest_ip, tag, probes(wait, check), wait)?,
    };
    std::thread::sleep(SETTLE);
    let read_by = Instant::now() + READ_LIMIT;
    let observations: Vec<Seen> = watches
        .into_iter()
        .map(|mut w| {
            w.read_queued(check.protocol, tag, read_by);
            w.seen
        })
        .collect();
    // A layer-2 frame that arrived while the watches settled counts too.
    let arrived = |o: &Seen| o.wire == Wire::Destination && o.frames > 0;
    let reached = reached || (check.layer2 && observations.iter().any(arrived));
    Ok((reached, observations))
}

/// The watches on a node's uplinks: the physical one, and the overlay one
/// when the node's namespace has it now. A lab without tunnels has no
/// overlay uplink, and its physical one must be there (an error if not);
/// a node with an overlay uplink may have no physical one.
fn uplinks(lab: &str, node: &str) -> io::Result<Vec<Watch>> {
    let ns = naming::namespace(lab, node);
    let watch = |wire: Wire, interface: &str, socket| {
        Watch::new(wire, format!("{node} {interface}"), None, socket)
    };
    let physical = PacketSocket::open_if_present(&ns, naming::UPLINK, false)?;
    let overlay = PacketSocket::open_if_present(&ns, naming::OVERLAY_UPLINK, false)?;
    let physical = match (physical, &overlay) {
        // Neither: the error of a missing eth1, as without tunnels.
        (None, None) => Some(PacketSocket::open(&ns, naming::UPLINK, false)?),
        (physical, _) => physical,
    };
    let physical = physical.map(|s| watch(Wire::Physical(node.to_string()), naming::UPLINK, s));
    let overlay =
        overlay.map(|s| watch(Wire::Overlay(node.to_string()), naming::OVERLAY_UPLINK, s));
    Ok(physical.into_iter().chain(overlay).collect())
}

/// Sends ICMP echo requests as raw frames from the source instance's NIC
/// straight to the destination instance's MAC (no routing, no ARP), up to
/// [`probes()`] of them every [`probes::ECHO_INTERVAL`], and says whether one
/// arrived at the destination (`arrived`) within `wait`: at once when one
/// does.
fn inject(
    topo: &Topology,
    check: &Check,
    dest_ip: Ipv4Addr,
    tag: u16,
    wait: Duration,
    arrived: &mut Watch,
) -> io::Result<bool> {
    let from = topo
        .instance(&check.from)
        .ok_or_else(|| io::Error::other("layer2 needs an instance as source"))?;
    let CheckTarget::Object(to) = &check.to else {
        return Err(io::Error::other("layer2 needs an instance as destination"));
    };
    let to = topo
        .instance(to)
        .ok_or_else(|| io::Error::other("layer2 needs an instance as destination"))?;
    let ns = naming::namespace(&topo.lab, &from.name);
    let socket = PacketSocket::open(&ns, naming::GUEST_NIC, false)?;
    let started = Instant::now();
    let deadline = started + wait;
    let count = probes(wait, check);
    let mut seq = 0;
    loop {
        if seq < count && started + probes::ECHO_INTERVAL * u32::from(seq) <= Instant::now() {
            seq += 1;
            socket.send(&probes::icmp_frame(
                from.mac,
                to.mac,
                from.address,
                dest_ip,
                tag,
                seq,
            ))?;
        }
        arrived.read(CheckProtocol::Icmp, tag);
        if arrived.seen.frames > 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn judge(check: &Check, reached: bool, observations: &[Seen]) -> CheckResult {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let outcome = if reached { "reached" } else { "no answer" };
    notes.push(outcome.to_string());
    if reached != check.expect_success {
        problems.push(format!(
            "expected {}",
            if check.expect_success {
                "an answer"
            } else {
                "no answer"
            }
        ));
    }
    let mut judged_nodes: Vec<&str> = Vec::new();
    for seen in observations {
        let Some(node) = seen.wire.node() else {
            let from: Vec<String> = seen.sources.iter().map(ToString::to_string).collect();
            notes.push(format!(
                "arrived at {} from {}",
                seen.place,
                if from.is_empty() {
                    "-".into()
                } else {
                    from.join(",")
                }
            ));
            if let Some(want) = check.arrives_from
                && check.expect_success
                && !seen.sources.contains(&want)
            {
                problems.push(format!("did not arrive from {want}"));
            }
            if let Some(want) = check.arrives_from
                && seen.sources.iter().any(|s| *s != want)
            {
                problems.push(format!("arrived from another source than {want}"));
            }
            continue;
        };
        if seen.frames == 0 {
            notes.push(format!("not on {}", seen.place));
        } else {
            notes.push(format!(
                "{} frames on {} ({})",
                seen.frames,
                seen.place,
                seen.carried()
            ));
        }
        // A node is crossed when the probe is on any of its uplinks.
        if check.crosses.iter().any(|c| c == node) && !judged_nodes.contains(&node) {
            judged_nodes.push(node);
            let uplinks: Vec<&Seen> = observations
                .iter()
                .filter(|o| o.wire.node() == Some(node))
                .collect();
            if check.expect_success && uplinks.iter().all(|o| o.frames == 0) {
                let interfaces: Vec<&str> = uplinks
                    .iter()
                    .map(|o| o.place.strip_prefix(node).unwrap_or(&o.place).trim())
                    .collect();
                problems.push(format!("did not cross {node} {}", interfaces.join(" or ")));
            }
        }
        if check.avoids.iter().any(|a| a == node) && seen.frames > 0 {
            problems.push(format!("crossed {}", seen.place));
        }
        match &seen.wire {
            Wire::Physical(_) => {
                if let Some(vlan) = check.wire_vlan
                    && seen.frames > 0
                    && (seen.untagged > 0 || seen.vlans.iter().any(|v| *v != vlan))
                {
                    problems.push(format!("{} carried other than vlan {vlan}", seen.place));
                }
            }
            Wire::Overlay(_) => {
                if let Some(vni) = check.wire_vni
                    && seen.frames > 0
                    && (seen.bare > 0 || seen.tunnels.iter().any(|t| t.key != Some(vni)))
                {
                    problems.push(format!("{} carried other than vni {vni}", seen.place));
                }
            }
            Wire::Destination => {}
        }
    }
    let mut detail = notes.join("; ");
    if !problems.is_empty() {
        detail = format!("{}: {detail}", problems.join(", "));
    }
    CheckResult {
        name: check.name.clone(),
        passed: problems.is_empty(),
        detail,
    }
}

/// The namespace a probe starts from or a listener waits in.
pub(crate) fn object_namespace(topo: &Topology, name: &str) -> Option<String> {
    let lab = &topo.lab;
    if topo.instance(name).is_some() || topo.external_hosts.iter().any(|h| h.name == name) {
        Some(naming::namespace(lab, name))
    } else {
        topo.router(name)
            .map(|router| active_router_namespace(lab, router))
    }
}

/// Where a probe ends: its namespace, NIC and the NIC's own address.
pub(crate) type Destination = (String, String, Ipv4Addr);

/// The destination address, and (when it is inside the lab) the namespace,
/// NIC and address where the probe ends up (after any DNAT).
pub(crate) fn resolve(
    topo: &Topology,
    to: &CheckTarget,
) -> Option<(Ipv4Addr, Option<Destination>)> {
    let lab = &topo.lab;
    let address_of = |object: &str| {
        topo.instance(object).map(|i| i.address).or_else(|| {
            topo.external_hosts
                .iter()
                .find(|h| h.name == object)
                .map(|h| h.address)
        })
    };
    let nic = |object: &str| {
        Some((
            naming::namespace(lab, object),
            naming::GUEST_NIC.to_string(),
            address_of(object)?,
        ))
    };
    match to {
        CheckTarget::Object(name) => {
            if let Some(i) = topo.instance(name) {
                Some((i.address, nic(name)))
            } else if let Some(h) = topo.external_hosts.iter().find(|h| &h.name == name) {
                Some((h.address, nic(name)))
            } else {
                let r = topo.routers.iter().find(|r| &r.name == name)?;
                let gw = r.external_gateway.as_ref()?.address;
                Some((gw, None))
            }
        }
        CheckTarget::Address(ip) => {
            let dest = topo
                .instances
                .iter()
                .find(|i| i.address == *ip || i.floating_ip == Some(*ip))
                .map(|i| i.name.clone())
                .or_else(|| {
                    topo.external_hosts
                        .iter()
                        .find(|h| h.address == *ip)
                        .map(|h| h.name.clone())
                });
            Some((*ip, dest.and_then(|d| nic(&d))))
        }
    }
}

fn probe_of(protocol: CheckProtocol) -> Probe {
    match protocol {
        CheckProtocol::Icmp => Probe::Icmp,
        CheckProtocol::Tcp(port) => Probe::Tcp(port),
        CheckProtocol::Http(port) => Probe::Http(port),
        CheckProtocol::Dhcp => Probe::Dhcp,
    }
}

// --- watching -----------------------------------------------------------

/// Counts `frame` if it is the probe's (inside any tunnel): its tag, its
/// tunnel, and its source, for frames addressed to `local` only (all
/// frames when `None`).
fn tally(
    seen: &mut Seen,
    frame: &Frame,
    protocol: CheckProtocol,
    tag: u16,
    local: Option<Ipv4Addr>,
) {
    if !probes::is_probe_frame(frame, probe_of(protocol), tag) {
        return;
    }
    let Some((src, dst)) = frame.innermost().ipv4() else {
        return;
    };
    seen.frames += 1;
    match frame.vlan {
        Some(v) if !seen.vlans.contains(&v) => seen.vlans.push(v),
        Some(_) => {}
        None => seen.untagged += 1,
    }
    match frame.encapsulation() {
        Some(e) if !seen.tunnels.contains(&e.tunnel) => seen.tunnels.push(e.tunnel),
        Some(_) => {}
        None => seen.bare += 1,
    }
    if local.is_none_or(|l| l == dst) && !seen.sources.contains(&src) {
        seen.sources.push(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_capture::TunnelKind;

    fn check() -> Check {
        Check {
            name: "c".into(),
            from: "a".into(),
            to: CheckTarget::Object("b".into()),
            protocol: CheckProtocol::Icmp,
            expect_success: true,
            crosses: vec!["compute1".into()],
            avoids: vec!["network".into()],
            wire_vlan: Some(101),
            wire_vni: None,
            arrives_from: None,
            layer2: false,
            path: None,
            line: 1,
        }
    }

    #[test]
    fn a_check_that_expects_no_answer_waits_less_for_one() {
        assert_eq!(wait_among(0, &check()), probes::PROBE_TIMEOUT);
        let refused = Check {
            expect_success: false,
            ..check()
        };
        assert_eq!(wait_among(3, &refused), probes::FAILURE_WAIT);
        assert_eq!(wait_among(201, &refused), probes::FAILURE_WAIT);
        assert!(probes::FAILURE_WAIT < probes::PROBE_TIMEOUT);
    }

    #[test]
    fn a_check_that_expects_an_answer_waits_longer_in_a_larger_lab() {
        // The seed lab (three nodes) and the 10,000-instance one (201).
        assert_eq!(wait_among(3, &check()), Duration::from_millis(2150));
        assert_eq!(wait_among(201, &check()), Duration::from_millis(12050));
    }

    #[test]
    fn a_probe_that_expects_an_answer_keeps_asking_while_it_waits() {
        let every = probes::ECHO_INTERVAL;
        let wait = wait_among(201, &check());
        assert_eq!(probes(wait, &check()), 61);
        assert!(every * u32::from(probes(wait, &check())) >= wait);
        let refused = Check {
            expect_success: false,
            ..check()
        };
        assert_eq!(probes(probes::FAILURE_WAIT, &refused), 3);
    }

    #[test]
    fn judging_follows_each_expectation() {
        let on = |node: &str, vlans: Vec<u16>, frames| Seen {
            frames,
            vlans,
            ..Seen::new(Wire::Physical(node.into()), format!("{node} eth1"))
        };
        let ok = judge(
            &check(),
            true,
            &[on("compute1", vec![101], 6), on("network", vec![], 0)],
        );
        assert!(ok.passed, "{}", ok.detail);
        let crossed = judge(
            &check(),
            true,
            &[on("compute1", vec![101], 6), on("network", vec![101], 2)],
        );
        assert!(
            !crossed.passed && crossed.detail.contains("crossed network eth1"),
            "{}",
            crossed.detail
        );
        let local_tag = judge(
            &check(),
            true,
            &[on("compute1", vec![1], 6), on("network", vec![], 0)],
        );
        assert!(!local_tag.passed, "{}", local_tag.detail);
        let lost = judge(
            &check(),
            false,
            &[on("compute1", vec![101], 3), on("network", vec![], 0)],
        );
        assert!(
            !lost.passed && lost.detail.contains("expected an answer"),
            "{}",
            lost.detail
        );
        let mut refused = check();
        refused.expect_success = false;
        assert!(
            judge(
                &refused,
                false,
                &[on("compute1", vec![101], 3), on("network", vec![], 0)]
            )
            .passed
        );
    }

    fn vxlan(vni: u32) -> Tunnel {
        Tunnel {
            kind: TunnelKind::Vxlan,
            key: Some(vni),
        }
    }

    /// `frames` of the probe on `node`'s overlay uplink, in `tunnels`, and
    /// `bare` of them in none.
    fn overlay(node: &str, frames: usize, tunnels: Vec<Tunnel>, bare: usize) -> Seen {
        Seen {
            frames,
            untagged: frames,
            tunnels,
            bare,
            ..Seen::new(Wire::Overlay(node.into()), format!("{node} eth3"))
        }
    }

    fn physical(node: &str, frames: usize) -> Seen {
        Seen {
            frames,
            vlans: if frames > 0 { vec![101] } else { vec![] },
            ..Seen::new(Wire::Physical(node.into()), format!("{node} eth1"))
        }
    }

    /// instance1 on compute1 to instance3 on compute2 over VXLAN 101.
    fn across_the_overlay() -> Check {
        Check {
            crosses: vec!["compute1".into(), "compute2".into()],
            avoids: vec!["network".into()],
            wire_vlan: Some(101),
            wire_vni: Some(101),
            ..check()
        }
    }

    #[test]
    fn a_probe_in_a_tunnel_on_the_overlay_uplink_crosses_the_node() {
        let seen = [
            physical("compute1", 0),
            overlay("compute1", 2, vec![vxlan(101)], 0),
            physical("compute2", 0),
            overlay("compute2", 2, vec![vxlan(101)], 0),
            physical("network", 0),
            overlay("network", 0, vec![], 0),
        ];
        let ok = judge(&across_the_overlay(), true, &seen);
        assert!(ok.passed, "{}", ok.detail);
        assert_eq!(
            ok.detail,
            "reached; not on compute1 eth1; 2 frames on compute1 eth3 (vxlan 101); \
             not on compute2 eth1; 2 frames on compute2 eth3 (vxlan 101); \
             not on network eth1; not on network eth3"
        );
        // Untagged on the overlay is no matter for wire_vlan, which is the
        // physical uplinks'.
        assert!(seen[1].untagged > 0);

        // Seen on neither uplink of compute2.
        let mut missed = seen;
        missed[3] = overlay("compute2", 0, vec![], 0);
        let r = judge(&across_the_overlay(), true, &missed);
        assert!(!r.passed);
        assert!(
            r.detail
                .starts_with("did not cross compute2 eth1 or eth3: reached;"),
            "{}",
            r.detail
        );
        // Through the network node's tunnel: it was to be avoided.
        missed[3] = overlay("compute2", 2, vec![vxlan(101)], 0);
        missed[5] = overlay("network", 4, vec![vxlan(101)], 0);
        let r = judge(&across_the_overlay(), true, &missed);
        assert!(
            !r.passed && r.detail.contains("crossed network eth3"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn wire_vni_wants_the_key_wherever_the_probe_is_on_an_overlay_uplink() {
        let judged = |on_compute2: Seen| {
            judge(
                &across_the_overlay(),
                true,
                &[
                    overlay("compute1", 2, vec![vxlan(101)], 0),
                    on_compute2,
                    overlay("network", 0, vec![], 0),
                ],
            )
        };
        let other_vni = judged(overlay("compute2", 2, vec![vxlan(102)], 0));
        assert!(!other_vni.passed);
        assert!(
            other_vni
                .detail
                .starts_with("compute2 eth3 carried other than vni 101: "),
            "{}",
            other_vni.detail
        );
        assert!(
            other_vni
                .detail
                .contains("2 frames on compute2 eth3 (vxlan 102)"),
            "{}",
            other_vni.detail
        );
        let bare = judged(overlay("compute2", 2, vec![], 2));
        assert!(!bare.passed);
        assert!(
            bare.detail
                .contains("2 frames on compute2 eth3 (not encapsulated)")
                && bare
                    .detail
                    .contains("compute2 eth3 carried other than vni 101"),
            "{}",
            bare.detail
        );
        let mixed = judged(overlay("compute2", 3, vec![vxlan(101)], 1));
        assert!(!mixed.passed, "{}", mixed.detail);
        // A GRE tunnel: its key is what counts; one without a key is not it.
        let gre = |key| Tunnel {
            kind: TunnelKind::Gre,
            key,
        };
        let keyed = judged(overlay("compute2", 2, vec![gre(Some(101))], 0));
        assert!(keyed.passed, "{}", keyed.detail);
        assert!(keyed.detail.contains("(gre 101)"), "{}", keyed.detail);
        let keyless = judged(overlay("compute2", 2, vec![gre(None)], 0));
        assert!(!keyless.passed, "{}", keyless.detail);
        assert!(
            keyless.detail.contains("(gre without key)"),
            "{}",
            keyless.detail
        );
        // Without wire_vni, any tunnel crosses.
        let r = judge(
            &Check {
                wire_vni: None,
                ..across_the_overlay()
            },
            true,
            &[
                overlay("compute1", 2, vec![vxlan(7)], 0),
                overlay("compute2", 2, vec![vxlan(7)], 0),
            ],
        );
        assert!(r.passed, "{}", r.detail);
    }

    #[test]
    fn wire_vlan_stays_the_physical_uplinks_and_wire_vni_the_overlay_ones() {
        // A tagged frame with another VLAN on the overlay uplink is no
        // wire_vlan problem; one on the physical uplink is.
        let mut tagged_overlay = overlay("compute1", 2, vec![vxlan(101)], 0);
        tagged_overlay.vlans = vec![7];
        tagged_overlay.untagged = 0;
        let check = Check {
            crosses: vec!["compute1".into()],
            avoids: vec![],
            ..across_the_overlay()
        };
        let r = judge(&check, true, &[physical("compute1", 0), tagged_overlay]);
        assert!(r.passed, "{}", r.detail);
        assert!(r.detail.contains("(vxlan 101, vlan 7)"), "{}", r.detail);
        // And frames on the physical uplink are not judged by wire_vni.
        let r = judge(&check, true, &[physical("compute1", 2)]);
        assert!(r.passed, "{}", r.detail);
        assert_eq!(r.detail, "reached; 2 frames on compute1 eth1 (vlan 101)");
    }

    /// A probe's ICMP echo (tag 40000) from instance1 to instance3.
    fn echo() -> Vec<u8> {
        probes::icmp_frame(
            [0xfa, 0x16, 0x3e, 0, 0, 1],
            [0xfa, 0x16, 0x3e, 0, 0, 3],
            "192.168.1.11".parse().unwrap(),
            "192.168.1.12".parse().unwrap(),
            40000,
            1,
        )
    }

    /// `inner` in a VXLAN packet from 172.16.0.11 to 172.16.0.12.
    fn in_vxlan(vni: u32, inner: &[u8]) -> Frame {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0]);
        f.extend_from_slice(&vni.to_be_bytes()[1..]);
        f.push(0);
        f.extend_from_slice(inner);
        Frame::parse(&f).unwrap()
    }

    #[test]
    fn frames_are_tallied_by_the_probe_inside_the_tunnel() {
        let mut seen = Seen::new(Wire::Overlay("compute1".into()), "compute1 eth3".into());
        let icmp = CheckProtocol::Icmp;
        tally(&mut seen, &in_vxlan(101, &echo()), icmp, 40000, None);
        tally(&mut seen, &in_vxlan(101, &echo()), icmp, 40000, None);
        tally(&mut seen, &in_vxlan(102, &echo()), icmp, 40000, None);
        tally(
            &mut seen,
            &Frame::parse(&echo()).unwrap(),
            icmp,
            40000,
            None,
        );
        // Another probe's, and (its outer source port equal to the tag)
        // a tunnel packet that is no TCP probe.
        tally(&mut seen, &in_vxlan(101, &echo()), icmp, 40001, None);
        tally(
            &mut seen,
            &in_vxlan(101, &echo()),
            CheckProtocol::Tcp(22),
            40000,
            None,
        );
        assert_eq!(seen.frames, 4);
        assert_eq!(seen.tunnels, vec![vxlan(101), vxlan(102)]);
        assert_eq!(seen.bare, 1);
        assert_eq!((seen.vlans.clone(), seen.untagged), (vec![], 4));
        // The source is the instance's, not the tunnel endpoint's.
        assert_eq!(
            seen.sources,
            vec!["192.168.1.11".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(seen.carried(), "vxlan 101, vxlan 102, not encapsulated");
    }

    /// A node's namespace of a lab of its own (`<lab>.<node>`), deleted on
    /// drop.
    struct NodeNetns(String);

    impl NodeNetns {
        fn new(lab: &str, node: &str) -> Self {
            let ns = naming::namespace(lab, node);
            ovslab_testkit::run("ip", &["netns", "add", &ns]);
            NodeNetns(ns)
        }
    }

    impl Drop for NodeNetns {
        fn drop(&mut self) {
            let _ = ovslab_testkit::run_raw("ip", &["netns", "del", &self.0]);
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn the_overlay_uplink_is_watched_when_the_node_has_one() {
        use ovslab_testkit::{require_root, run, unique_name};
        require_root("the_overlay_uplink_is_watched_when_the_node_has_one");
        let lab = unique_name("vni");
        let (plain, tunnelled, _empty) = (
            NodeNetns::new(&lab, "compute1"),
            NodeNetns::new(&lab, "compute2"),
            NodeNetns::new(&lab, "compute3"),
        );
        let overlay = NodeNetns::new(&lab, "overlay");
        // compute1 as today: eth1 only. compute2: eth1, and eth3 joined to
        // the overlay namespace, which holds a tunnel endpoint.
        let ip = |ns: &NodeNetns, args: &str| {
            let mut all = vec!["-n", ns.0.as_str()];
            all.extend(args.split_whitespace());
            run("ip", &all);
        };
        ip(&plain, "link add eth1 type veth peer name p1");
        ip(&tunnelled, "link add eth1 type veth peer name p1");
        let join = format!(
            "link add eth3 type veth peer name compute2 netns {}",
            overlay.0
        );
        ip(&tunnelled, &join);
        ip(&tunnelled, "addr add 172.16.0.12/24 dev eth3");
        ip(&overlay, "addr add 172.16.0.11/24 dev compute2");
        ip(&tunnelled, "link set eth3 up");
        ip(&overlay, "link set compute2 up");

        let places = |w: &[Watch]| w.iter().map(|w| w.seen.place.clone()).collect::<Vec<_>>();
        assert_eq!(
            places(&uplinks(&lab, "compute1").unwrap()),
            ["compute1 eth1"]
        );
        let e = uplinks(&lab, "compute3").err().expect("no uplink at all");
        assert!(e.to_string().contains("no interface eth1"), "{e}");
        let e = uplinks(&lab, "compute4").err().expect("no namespace");
        assert!(e.to_string().starts_with("eth1 in "), "{e}");
        let watches = uplinks(&lab, "compute2").unwrap();
        assert_eq!(places(&watches), ["compute2 eth1", "compute2 eth3"]);
        assert_eq!(watches[1].seen.wire, Wire::Overlay("compute2".into()));

        // The probe, in VXLAN 101, arrives on compute2's eth3; another
        // socket there says when it has come.
        let observer = PacketSocket::open(&tunnelled.0, "eth3", false).unwrap();
        let mut datagram = vec![0x08, 0, 0, 0, 0, 0, 101, 0];
        datagram.extend_from_slice(&echo());
        ovslab_netlink::netns::run_in(&overlay.0, move || {
            let socket = std::net::UdpSocket::bind("172.16.0.11:0")?;
            socket.send_to(&datagram, "172.16.0.12:4789").map(drop)
        })
        .unwrap();
        ovslab_testkit::wait_until(Duration::from_secs(3), "the VXLAN datagram", || {
            std::iter::from_fn(|| observer.try_recv().unwrap())
                .any(|p| Frame::parse(&p.data).is_some_and(|f| f.encapsulation().is_some()))
        });
        let mut seen: Vec<Seen> = watches
            .into_iter()
            .map(|mut w| {
                w.read(CheckProtocol::Icmp, 40000);
                w.seen
            })
            .collect();
        let on_eth3 = seen.pop().unwrap();
        assert_eq!((seen[0].frames, on_eth3.frames), (0, 1));
        assert_eq!(on_eth3.tunnels, vec![vxlan(101)]);
        let check = Check {
            crosses: vec!["compute2".into()],
            avoids: vec![],
            wire_vni: Some(101),
            ..check()
        };
        let r = judge(&check, true, &[seen.pop().unwrap(), on_eth3]);
        assert!(r.passed, "{}", r.detail);
        assert!(
            r.detail.contains("1 frames on compute2 eth3 (vxlan 101)"),
            "{}",
            r.detail
        );
    }
}
