//! `ovslab check`: each declared expectation is tested with a real probe —
//! ICMP echo from a raw socket, or a TCP connection to a listener the check
//! opens at the destination — while AF_PACKET sockets watch the physical
//! uplinks (`eth1`) of the nodes named in `crosses`/`avoids` and the
//! destination's NIC. Frames are recognised by the probe's ICMP identifier
//! or TCP source port, which NAT keeps, and VLAN ids are read from
//! `PACKET_AUXDATA` because the kernel strips the tag on receive.
//!
//! Every socket is created on a thread that entered the right namespace; no
//! process is spawned.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ovslab_api::CheckResult;
use ovslab_capture::{Frame, PacketSocket};
use ovslab_topology::plan::router_namespace;
use ovslab_topology::{Check, CheckProtocol, CheckTarget, Topology, naming};

use crate::probes::{self, Probe};

const PROBES: u16 = 3;

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

/// Checks that listen on the same TCP port in the same place must not run
/// at the same time; this is what they share.
pub fn listen_key(topo: &Topology, check: &Check) -> Option<(String, u16)> {
    let CheckProtocol::Tcp(port) = check.protocol else {
        return None;
    };
    let (_, dest) = resolve(topo, &check.to)?;
    Some((dest?.0, port))
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

/// What was seen on one watched interface.
#[derive(Debug, Default)]
struct Seen {
    place: String,
    frames: usize,
    vlans: Vec<u16>,
    untagged: usize,
    sources: Vec<Ipv4Addr>,
}

struct Watch {
    place: String,
    /// A node's uplink (for crosses/avoids) or the destination's NIC.
    node: Option<String>,
    /// At the destination: its own address, so that only frames arriving
    /// there count as sources (not its answers).
    local: Option<Ipv4Addr>,
    socket: PacketSocket,
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
        let ns = naming::namespace(lab, node);
        watches.push(Watch {
            place: format!("{node} {}", naming::UPLINK),
            node: Some(node.clone()),
            local: None,
            socket: PacketSocket::open(&ns, naming::UPLINK, false)?,
        });
    }
    if let (true, Some((ns, nic, local))) = (check.arrives_from.is_some() || check.layer2, &dest) {
        watches.push(Watch {
            place: format!("destination {nic}"),
            node: None,
            local: Some(*local),
            socket: PacketSocket::open(ns, nic, false)?,
        });
    }

    let reached = match check.protocol {
        CheckProtocol::Icmp if check.layer2 => {
            inject(topo, check, dest_ip, tag)?;
            false // decided below, by what arrived
        }
        protocol => {
            let listen_ns = dest.as_ref().map(|(ns, _, _)| ns.clone());
            let probe = probe_of(protocol);
            probes::send(&from_ns, listen_ns.as_deref(), dest_ip, probe, tag, PROBES)?
        }
    };
    std::thread::sleep(Duration::from_millis(150));
    let observations: Vec<Seen> = watches
        .into_iter()
        .map(|w| {
            let mut seen = drain(&w.socket, check.protocol, tag, w.local);
            seen.place = w.place;
            if w.node.is_none() {
                seen.place = format!("dest:{}", seen.place);
            }
            seen
        })
        .collect();
    let reached = if check.layer2 {
        observations
            .iter()
            .any(|o| o.place.starts_with("dest:") && o.frames > 0)
    } else {
        reached
    };
    Ok((reached, observations))
}

/// Sends three ICMP echo requests as raw frames from the source instance's
/// NIC straight to the destination instance's MAC: no routing, no ARP.
fn inject(topo: &Topology, check: &Check, dest_ip: Ipv4Addr, tag: u16) -> io::Result<()> {
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
    for seq in 1..=PROBES {
        socket.send(&probes::icmp_frame(
            from.mac,
            to.mac,
            from.address,
            dest_ip,
            tag,
            seq,
        ))?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
    for seen in observations {
        if let Some(place) = seen.place.strip_prefix("dest:") {
            let from: Vec<String> = seen.sources.iter().map(ToString::to_string).collect();
            notes.push(format!(
                "arrived at {place} from {}",
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
        }
        let node = seen.place.split(' ').next().unwrap_or_default().to_string();
        if seen.frames == 0 {
            notes.push(format!("not on {}", seen.place));
        } else {
            let mut tags: Vec<String> = seen.vlans.iter().map(|v| format!("vlan {v}")).collect();
            if seen.untagged > 0 {
                tags.push("untagged".into());
            }
            notes.push(format!(
                "{} frames on {} ({})",
                seen.frames,
                seen.place,
                tags.join(", ")
            ));
        }
        if check.crosses.contains(&node) && seen.frames == 0 && check.expect_success {
            problems.push(format!("did not cross {}", seen.place));
        }
        if check.avoids.contains(&node) && seen.frames > 0 {
            problems.push(format!("crossed {}", seen.place));
        }
        if let Some(vlan) = check.wire_vlan
            && seen.frames > 0
            && (seen.untagged > 0 || seen.vlans.iter().any(|v| *v != vlan))
        {
            problems.push(format!("{} carried other than vlan {vlan}", seen.place));
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
    } else if topo.routers.iter().any(|r| r.name == name) {
        Some(router_namespace(lab, name))
    } else {
        None
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
    }
}

// --- watching -----------------------------------------------------------

/// Reads every queued frame and keeps those of the probe; sources are
/// recorded for frames addressed to `local` only (all frames when `None`).
fn drain(
    socket: &PacketSocket,
    protocol: CheckProtocol,
    tag: u16,
    local: Option<Ipv4Addr>,
) -> Seen {
    let mut seen = Seen::default();
    let packets = socket.drain().unwrap_or_else(|e| {
        tracing::warn!("reading {}: {e}", socket.interface());
        Vec::new()
    });
    for packet in packets {
        let Some(frame) = Frame::parse(&packet.data) else {
            continue;
        };
        if !probes::is_probe_frame(&frame, probe_of(protocol), tag) {
            continue;
        }
        let Some((src, dst)) = frame.ipv4() else {
            continue;
        };
        seen.frames += 1;
        match frame.vlan {
            Some(v) if !seen.vlans.contains(&v) => seen.vlans.push(v),
            Some(_) => {}
            None => seen.untagged += 1,
        }
        if local.is_none_or(|l| l == dst) && !seen.sources.contains(&src) {
            seen.sources.push(src);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

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
            line: 1,
        }
    }

    #[test]
    fn judging_follows_each_expectation() {
        let on = |node: &str, vlans: Vec<u16>, frames| Seen {
            place: format!("{node} eth1"),
            frames,
            vlans,
            untagged: 0,
            sources: vec![],
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
}
