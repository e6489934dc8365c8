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
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ovslab_api::CheckResult;
use ovslab_netlink::netns;
use ovslab_topology::plan::router_namespace;
use ovslab_topology::{Check, CheckProtocol, CheckTarget, Topology, naming};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
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
    socket: OwnedFd,
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
            socket: packet_socket(&ns, naming::UPLINK)?,
        });
    }
    if let (true, Some((ns, nic, local))) = (check.arrives_from.is_some() || check.layer2, &dest) {
        watches.push(Watch {
            place: format!("destination {nic}"),
            node: None,
            local: Some(*local),
            socket: packet_socket(ns, nic)?,
        });
    }

    let reached = match check.protocol {
        CheckProtocol::Icmp if check.layer2 => {
            inject(topo, check, dest_ip, tag)?;
            false // decided below, by what arrived
        }
        CheckProtocol::Icmp => ping(&from_ns, dest_ip, tag)?,
        CheckProtocol::Tcp(port) => {
            let listen_ns = dest.as_ref().map(|(ns, _, _)| ns.clone());
            tcp(&from_ns, listen_ns.as_deref(), dest_ip, port, tag)?
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
    let socket = packet_socket(&naming::namespace(&topo.lab, &from.name), naming::GUEST_NIC)?;
    for seq in 1..=PROBES {
        let frame = icmp_frame(from.mac, to.mac, from.address, dest_ip, tag, seq);
        // SAFETY: the frame outlives the call; the socket is bound to the NIC.
        let n = unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// An Ethernet frame carrying an IPv4 ICMP echo request.
fn icmp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let icmp = echo_request(id, seq);
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = Vec::with_capacity(14 + ip.len() + icmp.len());
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend(ip);
    frame.extend(icmp);
    frame
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
fn object_namespace(topo: &Topology, name: &str) -> Option<String> {
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
type Destination = (String, String, Ipv4Addr);

/// The destination address, and (when it is inside the lab) the namespace,
/// NIC and address where the probe ends up (after any DNAT).
fn resolve(topo: &Topology, to: &CheckTarget) -> Option<(Ipv4Addr, Option<Destination>)> {
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

// --- probes -------------------------------------------------------------

fn ping(ns: &str, dest: Ipv4Addr, id: u16) -> io::Result<bool> {
    let socket = netns::run_in(ns, || {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .map_err(io::Error::other)?;
    set_timeout(&socket, libc::SO_RCVTIMEO, Duration::from_millis(200))?;
    let addr = sockaddr_in(dest, 0);
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut seq = 0u16;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if seq < PROBES && Instant::now() >= next_send {
            seq += 1;
            let packet = echo_request(id, seq);
            // SAFETY: valid buffer and address for the duration of the call.
            let n = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if n < 0 {
                // No route and the like: the probe is lost.
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENETUNREACH)
                    && e.raw_os_error() != Some(libc::EHOSTUNREACH)
                {
                    return Err(e);
                }
            }
            next_send = Instant::now() + Duration::from_millis(200);
        }
        // SAFETY: `buf` outlives the call.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        let packet = &buf[..n as usize];
        // A raw ICMP socket receives the IPv4 header too.
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let Some(icmp) = packet.get(ihl..) else {
            continue;
        };
        let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        if icmp.len() >= 8
            && icmp[0] == 0
            && u16::from_be_bytes([icmp[4], icmp[5]]) == id
            && src == dest
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"ovslab check probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Connects from `ns` (source port `sport`) to `dest:port`, with a
/// listener in `listen_ns` when the destination is inside the lab.
fn tcp(
    ns: &str,
    listen_ns: Option<&str>,
    dest: Ipv4Addr,
    port: u16,
    sport: u16,
) -> io::Result<bool> {
    let listener = match listen_ns {
        Some(l) => Some(
            netns::run_in(l, || {
                TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            })
            .map_err(io::Error::other)?,
        ),
        None => None,
    };
    let accepted = listener.map(|l| {
        std::thread::spawn(move || {
            l.set_nonblocking(true).ok();
            let deadline = Instant::now() + PROBE_TIMEOUT + Duration::from_millis(500);
            while Instant::now() < deadline {
                if l.accept().is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    });
    let connected = netns::run_in(ns, || {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        let local = sockaddr_in(Ipv4Addr::UNSPECIFIED, sport);
        // SAFETY: valid address for the duration of the call.
        if unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&local as *const libc::sockaddr_in).cast(),
                16,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        set_timeout(&socket, libc::SO_SNDTIMEO, PROBE_TIMEOUT)?;
        let remote = sockaddr_in(dest, port);
        // SAFETY: as above; SO_SNDTIMEO bounds a connect that gets no answer.
        let rc = unsafe {
            libc::connect(
                socket.as_raw_fd(),
                (&remote as *const libc::sockaddr_in).cast(),
                16,
            )
        };
        if rc == 0 {
            drop(TcpStream::from(socket));
            Ok(true)
        } else {
            Ok(false)
        }
    })
    .map_err(io::Error::other)?;
    let accepted = accepted.map(|h| h.join().unwrap_or(false));
    Ok(connected && accepted.unwrap_or(true))
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn set_timeout(socket: &OwnedFd, option: libc::c_int, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid option buffer of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- watching -----------------------------------------------------------

const SOL_PACKET: libc::c_int = 263;
const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// An AF_PACKET socket on `iface` inside `ns`, asking for PACKET_AUXDATA.
fn packet_socket(ns: &str, iface: &str) -> io::Result<OwnedFd> {
    let iface = iface.to_string();
    netns::run_in(ns, move || {
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface.clone()).map_err(io::Error::other)?;
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::other(format!("no interface {iface}")));
        }
        // SAFETY: sockaddr_ll is plain data; zeroes are valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: valid address of the right size.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        // SAFETY: valid option buffer.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                SOL_PACKET,
                PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        Ok(socket)
    })
    .map_err(io::Error::other)
}

/// Reads every queued frame and keeps those of the probe; sources are
/// recorded for frames addressed to `local` only (all frames when `None`).
fn drain(socket: &OwnedFd, protocol: CheckProtocol, tag: u16, local: Option<Ipv4Addr>) -> Seen {
    let mut seen = Seen::default();
    let mut buf = [0u8; 4096];
    let mut control = [0u8; 64];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; zeroes are valid before filling in.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: buffers outlive the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
        let mut vlan = None;
        // SAFETY: walking the control messages the kernel just wrote.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA {
                    let aux = &*(libc::CMSG_DATA(cmsg) as *const TpacketAuxdata);
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                        vlan = Some(aux.tp_vlan_tci & 0x0fff);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let frame = &buf[..n as usize];
        if let Some((frame_vlan, src, dst)) = probe_frame(frame, protocol, tag) {
            seen.frames += 1;
            match vlan.or(frame_vlan) {
                Some(v) if !seen.vlans.contains(&v) => seen.vlans.push(v),
                Some(_) => {}
                None => seen.untagged += 1,
            }
            if local.is_none_or(|l| l == dst) && !seen.sources.contains(&src) {
                seen.sources.push(src);
            }
        }
    }
    seen
}

/// For a frame of the probe: its in-frame VLAN id (if the tag was not
/// stripped), its IPv4 source and destination.
fn probe_frame(
    frame: &[u8],
    protocol: CheckProtocol,
    tag: u16,
) -> Option<(Option<u16>, Ipv4Addr, Ipv4Addr)> {
    let mut offset = 12;
    let mut vlan = None;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == 0x8100 {
        vlan = Some(u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]) & 0x0fff);
        ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        offset += 4;
    }
    if ethertype != 0x0800 {
        return None;
    }
    let ip = frame.get(offset + 2..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let src = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
    let dst = Ipv4Addr::new(*ip.get(16)?, *ip.get(17)?, *ip.get(18)?, *ip.get(19)?);
    let l4 = ip.get(ihl..)?;
    let matches = match (ip.get(9)?, protocol) {
        (1, CheckProtocol::Icmp) => {
            matches!(l4.first()?, 0 | 8) && u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]) == tag
        }
        (6, CheckProtocol::Tcp(_)) => {
            let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
            let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
            sport == tag || dport == tag
        }
        _ => false,
    };
    matches.then_some((vlan, src, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(vlan: Option<u16>, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0xfa, 0x16, 0x3e, 0, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 2];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 168, 1, 11, 203, 0, 113, 1,
        ];
        ip.extend_from_slice(l4);
        f.extend(ip);
        f
    }

    #[test]
    fn probe_frames_are_recognised_by_icmp_id_or_tcp_port() {
        let echo = echo_request(4242, 1);
        let f = frame(Some(101), 1, &echo);
        assert_eq!(
            probe_frame(&f, CheckProtocol::Icmp, 4242),
            Some((
                Some(101),
                "192.168.1.11".parse().unwrap(),
                "203.0.113.1".parse().unwrap()
            ))
        );
        assert_eq!(probe_frame(&f, CheckProtocol::Icmp, 4243), None);
        let syn = [0x9c, 0x40, 0x00, 0x16, 0, 0, 0, 0];
        let f = frame(None, 6, &syn);
        assert!(probe_frame(&f, CheckProtocol::Tcp(22), 40000).is_some());
        assert!(probe_frame(&f, CheckProtocol::Tcp(22), 40001).is_none());
        assert!(probe_frame(&f, CheckProtocol::Icmp, 40000).is_none());
    }

    #[test]
    fn injected_frames_are_well_formed_probes() {
        let f = icmp_frame(
            [2; 6],
            [4; 6],
            "192.168.1.11".parse().unwrap(),
            "192.168.2.11".parse().unwrap(),
            9,
            1,
        );
        assert_eq!(&f[..6], &[4; 6]);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        assert_eq!(
            probe_frame(&f, CheckProtocol::Icmp, 9),
            Some((
                None,
                "192.168.1.11".parse().unwrap(),
                "192.168.2.11".parse().unwrap()
            ))
        );
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(7, 3);
        assert_eq!(checksum(&p), 0);
    }

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
