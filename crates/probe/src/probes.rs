//! Probes: one ICMP echo, TCP connection or UDP datagram sent from inside a
//! namespace, with a tag (ICMP identifier or source port) that every frame
//! of the probe and of its answer carries, also through NAT. Shared by
//! `ovslab check` and `ovslab trace`.
//!
//! A probe returns as soon as it is answered. How long it waits for an
//! answer that does not come is its caller's `wait`: [`PROBE_TIMEOUT`]
//! when an answer is expected (a lost probe fails the check anyway), and
//! [`FAILURE_WAIT`] when the check expects none and no answer is its
//! success.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use ovslab_capture::{Frame, L4};
use ovslab_netlink::netns;

/// How long a probe that should be answered waits before it counts as
/// lost: an answer inside a lab takes milliseconds. A check waits longer
/// in a large lab (`checks::WAIT_PER_NODE`).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a DHCP probe sends its DISCOVER or REQUEST again while it
/// waits for the answer.
pub const DHCP_RESEND: Duration = Duration::from_secs(1);

/// How long a probe that should not be answered waits before it counts
/// as unanswered: a check with `expect: failure` decides after this long.
/// An answer inside a lab takes milliseconds (the first packet of a flow
/// through the userspace datapath included); 1 s is also when a TCP
/// client would send its first SYN again, so a dropped connection is
/// judged on one SYN, and an ICMP probe sends its three echo requests in
/// the first 400 ms of it.
pub const FAILURE_WAIT: Duration = Duration::from_secs(1);

/// How often an ICMP probe sends another echo request while unanswered.
pub const ECHO_INTERVAL: Duration = Duration::from_millis(200);

/// What kind of packet a probe is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Icmp,
    Tcp(u16),
    Udp(u16),
    /// An HTTP GET over TCP to this port (framed as TCP).
    Http(u16),
    /// A DHCP exchange (DISCOVER, OFFER, REQUEST, ACK) whose transaction
    /// id carries the tag ([`dhcp_xid`]).
    Dhcp,
}

/// The DHCP transaction id of the probe tagged `tag`.
pub fn dhcp_xid(tag: u16) -> u32 {
    0x6f76_0000 | u32::from(tag)
}

/// Which way a frame of a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leg {
    Request,
    Reply,
}

/// Whether `frame` belongs to the probe tagged `tag`, and which way it goes.
/// TCP counts the handshake only (SYN out, SYN+ACK or RST back). A tunnel
/// packet is judged by the frame it carries (its outer UDP source port is
/// a hash that may equal any tag).
pub fn leg(frame: &Frame, probe: Probe, tag: u16) -> Option<Leg> {
    use ovslab_capture::frame::{TCP_ACK, TCP_RST, TCP_SYN};
    match (frame.innermost().l4()?, probe) {
        (L4::Icmp { kind: 8, id, .. }, Probe::Icmp) if id == tag => Some(Leg::Request),
        (L4::Icmp { kind: 0, id, .. }, Probe::Icmp) if id == tag => Some(Leg::Reply),
        (L4::Tcp { sport, flags, .. }, Probe::Tcp(_) | Probe::Http(_))
            if sport == tag && flags & TCP_SYN != 0 && flags & TCP_ACK == 0 =>
        {
            Some(Leg::Request)
        }
        (L4::Tcp { dport, flags, .. }, Probe::Tcp(_) | Probe::Http(_))
            if dport == tag && (flags & TCP_SYN != 0 || flags & TCP_RST != 0) =>
        {
            Some(Leg::Reply)
        }
        (L4::Udp { dhcp: Some(d), .. }, Probe::Dhcp) if d.xid == dhcp_xid(tag) => {
            Some(if matches!(d.message, 1 | 3) {
                Leg::Request
            } else {
                Leg::Reply
            })
        }
        (L4::Udp { sport, .. }, Probe::Udp(_)) if sport == tag => Some(Leg::Request),
        (L4::Udp { dport, .. }, Probe::Udp(_)) if dport == tag => Some(Leg::Reply),
        _ => None,
    }
}

/// Any frame of the probe, in either direction (all TCP segments count);
/// inside a tunnel packet, the frame it carries.
pub fn is_probe_frame(frame: &Frame, probe: Probe, tag: u16) -> bool {
    match (frame.innermost().l4(), probe) {
        (
            Some(L4::Icmp {
                kind: 0 | 8, id, ..
            }),
            Probe::Icmp,
        ) => id == tag,
        (Some(L4::Tcp { sport, dport, .. }), Probe::Tcp(_) | Probe::Http(_))
        | (Some(L4::Udp { sport, dport, .. }), Probe::Udp(_)) => sport == tag || dport == tag,
        (Some(L4::Udp { dhcp: Some(d), .. }), Probe::Dhcp) => d.xid == dhcp_xid(tag),
        _ => false,
    }
}

/// Sends the probe from `ns` to `dest` and says whether it was answered
/// within [`PROBE_TIMEOUT`]. `listen_ns`: where TCP and UDP probes find a
/// listener (inside the lab).
pub fn send(
    ns: &str,
    listen_ns: Option<&str>,
    dest: Ipv4Addr,
    probe: Probe,
    tag: u16,
    count: u16,
) -> io::Result<bool> {
    let wait = PROBE_TIMEOUT;
    match probe {
        Probe::Icmp => ping(ns, dest, tag, count, wait),
        Probe::Tcp(port) => {
            let listener = listen_ns.map(|l| listen(l, port)).transpose()?;
            tcp(ns, listener.as_deref(), dest, port, tag, wait)
        }
        Probe::Udp(port) => udp(ns, listen_ns, dest, port, tag),
        Probe::Http(port) => {
            Ok(http_get(ns, dest, port, "/", tag, wait)?.is_some_and(|(status, _)| status == 200))
        }
        Probe::Dhcp => Err(io::Error::other(
            "a DHCP probe needs its client's MAC: see dhcp()",
        )),
    }
}

/// A whole DHCP exchange from `ns`'s `nic` as the client with `mac`:
/// DISCOVER, the OFFER, REQUEST of what was offered, the ACK; each
/// request is sent again every [`DHCP_RESEND`] while its answer is
/// awaited, as a client retransmits. Returns
/// the acknowledged address, or `None` when an answer did not come
/// within `wait` (or was a NAK).
pub fn dhcp(
    ns: &str,
    nic: &str,
    mac: [u8; 6],
    tag: u16,
    wait: Duration,
) -> io::Result<Option<Ipv4Addr>> {
    let socket = ovslab_capture::PacketSocket::open(ns, nic, false)?;
    let xid = dhcp_xid(tag);
    // Sends `request` every DHCP_RESEND until the answer `want` (or a NAK).
    let answer =
        |request: &[u8], want: u8| -> io::Result<Option<(ovslab_capture::Dhcp, Ipv4Addr)>> {
            let deadline = Instant::now() + wait;
            let mut resend = Instant::now();
            while Instant::now() < deadline {
                if Instant::now() >= resend {
                    socket.send(request)?;
                    resend = Instant::now() + DHCP_RESEND;
                }
                for p in socket.drain()? {
                    let Some(frame) = Frame::parse(&p.data) else {
                        continue;
                    };
                    let (Some((server, _)), Some(L4::Udp { dhcp: Some(d), .. })) =
                        (frame.ipv4(), frame.l4())
                    else {
                        continue;
                    };
                    if d.xid == xid && (d.message == want || d.message == 6) {
                        return Ok((d.message == want).then_some((d, server)));
                    }
                }
                std::thread::sleep(POLL);
            }
            Ok(None)
        };
    let Some((offer, server)) = answer(&dhcp_frame(mac, xid, 1, None), 2)? else {
        return Ok(None);
    };
    let request = dhcp_frame(mac, xid, 3, Some((offer.yiaddr, server)));
    Ok(answer(&request, 5)?.map(|(ack, _)| ack.yiaddr))
}

/// A broadcast DHCP `message` (1 DISCOVER, 3 REQUEST with the requested
/// address and server) from the client `mac`, as an Ethernet frame.
pub fn dhcp_frame(
    mac: [u8; 6],
    xid: u32,
    message: u8,
    request: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&xid.to_be_bytes());
    bootp[28..34].copy_from_slice(&mac);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, message]);
    if let Some((ip, server)) = request {
        bootp.extend_from_slice(&[50, 4]);
        bootp.extend_from_slice(&ip.octets());
        bootp.extend_from_slice(&[54, 4]);
        bootp.extend_from_slice(&server.octets());
    }
    bootp.extend_from_slice(&[55, 3, 1, 3, 121, 255]);
    let udp_len = 8 + bootp.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&68u16.to_be_bytes());
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
    udp.extend_from_slice(&bootp);
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    let total = (20 + udp.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame
}

/// The most of an HTTP answer a probe reads; the rest is not looked at.
pub const HTTP_ANSWER_MAX: usize = 1 << 20;

/// An HTTP/1.0 `GET path` from `ns` to `dest:port`, from source port
/// `sport`, the whole exchange (connect, request and answer) within
/// `wait`: the answer's status and its body as far as it came by then (at
/// most [`HTTP_ANSWER_MAX`] in all), or `None` when there was no answer
/// (no connection, or no whole status line and header within `wait`). A
/// server that sends its answer a byte at a time is cut off at `wait`
/// like one that sends nothing, so a probe never outlasts its check.
pub fn http_get(
    ns: &str,
    dest: Ipv4Addr,
    port: u16,
    path: &str,
    sport: u16,
    wait: Duration,
) -> io::Result<Option<(u16, String)>> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + wait;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let Some(mut stream) =
        netns::run_in(ns, || connect_from(sport, dest, port, wait)).map_err(io::Error::other)?
    else {
        return Ok(None);
    };
    let Some(time) = left() else {
        return Ok(None);
    };
    stream.set_write_timeout(Some(time))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {dest}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return Ok(None);
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < HTTP_ANSWER_MAX {
        // Each read waits only for what is left of `wait`.
        let Some(time) = left() else {
            break;
        };
        stream.set_read_timeout(Some(time))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n.min(HTTP_ANSWER_MAX - answer.len())]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Timed out, or reset: what came so far is the answer.
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Ok(None);
    };
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    Ok(status.map(|s| (s, body.to_string())))
}

/// An Ethernet frame carrying an IPv4 ICMP echo request.
pub fn icmp_frame(
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
/// Sends up to `count` echo requests from `ns` to `dest`, one every
/// [`ECHO_INTERVAL`], and says whether one was answered within `wait`;
/// returns at the first answer.
pub fn ping(ns: &str, dest: Ipv4Addr, id: u16, count: u16, wait: Duration) -> io::Result<bool> {
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
    // Short reads, so that the next request goes on time.
    ovslab_netlink::sockopt::set_timeout(&socket, libc::SO_RCVTIMEO, POLL)?;
    let addr = sockaddr_in(dest, 0);
    let deadline = Instant::now() + wait;
    let mut seq = 0u16;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if seq < count && Instant::now() >= next_send {
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
            next_send = Instant::now() + ECHO_INTERVAL;
        }
        // SAFETY: `buf` outlives the call.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            continue;
        }
        if is_echo_reply(&buf[..n as usize], id, dest) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `packet`, as a raw ICMP socket receives it (IPv4 header
/// included), is an echo reply with identifier `id` from `from`. Anything
/// short or malformed is not. Public (hidden) for the fuzz target in `fuzz/`.
#[doc(hidden)]
pub fn is_echo_reply(packet: &[u8], id: u16, from: Ipv4Addr) -> bool {
    let Some(&[version_ihl]) = packet.get(..1) else {
        return false;
    };
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    let (Some(src), Some(icmp)) = (packet.get(12..16), packet.get(ihl.max(20)..)) else {
        return false;
    };
    icmp.len() >= 8
        && icmp[0] == 0
        && u16::from_be_bytes([icmp[4], icmp[5]]) == id
        && src == from.octets()
}

pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"ovslab check probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

pub fn checksum(data: &[u8]) -> u16 {
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

/// A socket bound inside namespace `ns`, when there is one (the probe's
/// listener or responder at a destination inside the lab).
fn bound_in<T: Send>(
    ns: Option<&str>,
    bind: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<Option<T>> {
    ns.map(|ns| netns::run_in(ns, bind).map_err(io::Error::other))
        .transpose()
}

/// How often a waiting probe looks again (at a listener's queue, a
/// packet socket).
const POLL: Duration = Duration::from_millis(5);

/// The TCP listener on `port` in namespace `ns` that probes share: one
/// per namespace and port in this process while any probe holds it,
/// opened by the first. Each probe finds its own connection among those
/// the listener accepted by its source port, its tag, which NAT keeps.
/// So checks that connect to the same port of the same destination run
/// at once, in one `ovslab check` or in two.
pub fn listen(ns: &str, port: u16) -> io::Result<Arc<Listener>> {
    type Open = Mutex<HashMap<(String, u16), Weak<Listener>>>;
    static OPEN: std::sync::LazyLock<Open> = std::sync::LazyLock::new(Default::default);
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, listener| listener.strong_count() > 0);
    let key = (ns.to_string(), port);
    if let Some(listener) = open.get(&key).and_then(Weak::upgrade) {
        return Ok(listener);
    }
    let socket = netns::run_in(ns, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    })
    .map_err(io::Error::other)?;
    socket.set_nonblocking(true)?;
    let listener = Arc::new(Listener {
        socket,
        accepted: Mutex::new(HashSet::new()),
    });
    open.insert(key, Arc::downgrade(&listener));
    Ok(listener)
}

/// A probe's listener at its destination, and the source ports of the
/// connections it accepted.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
    accepted: Mutex<HashSet<u16>>,
}

impl Listener {
    /// Whether a connection from source port `sport` was accepted; waits
    /// for it until `deadline`.
    fn accepted(&self, sport: u16, deadline: Instant) -> bool {
        loop {
            {
                let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
                while let Ok((_, peer)) = self.socket.accept() {
                    accepted.insert(peer.port());
                }
                if accepted.remove(&sport) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Connects from `ns` (source port `sport`) to `dest:port` and says
/// whether the connection was made within `wait` and, when there is a
/// `listener` (the destination is inside the lab), that it arrived there.
pub fn tcp(
    ns: &str,
    listener: Option<&Listener>,
    dest: Ipv4Addr,
    port: u16,
    sport: u16,
    wait: Duration,
) -> io::Result<bool> {
    let connected = netns::run_in(ns, || Ok(connect_from(sport, dest, port, wait)?.is_some()))
        .map_err(io::Error::other)?;
    // Connected, the listener has it queued or is about to: a connection
    // that does not arrive there within the usual timeout went elsewhere.
    let arrived = |l: &Listener| l.accepted(sport, Instant::now() + PROBE_TIMEOUT);
    Ok(connected && listener.is_none_or(arrived))
}

/// A TCP connection from this thread's namespace, from source port
/// `sport` (the probe's tag), to `dest:port`; `None` when it was refused
/// or got no answer within `wait`.
fn connect_from(
    sport: u16,
    dest: Ipv4Addr,
    port: u16,
    wait: Duration,
) -> io::Result<Option<TcpStream>> {
    {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        ovslab_netlink::sockopt::set_int(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
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
        ovslab_netlink::sockopt::set_timeout(&socket, libc::SO_SNDTIMEO, wait)?;
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
            Ok(Some(TcpStream::from(socket)))
        } else {
            Ok(None)
        }
    }
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

/// Sends one datagram from `ns` (source port `sport`) to `dest:port` and
/// waits for an answer; inside the lab, a responder at the destination
/// sends the datagram back.
fn udp(
    ns: &str,
    listen_ns: Option<&str>,
    dest: Ipv4Addr,
    port: u16,
    sport: u16,
) -> io::Result<bool> {
    let responder = bound_in(listen_ns, || {
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
    })?;
    let echoed = responder.map(|socket| {
        std::thread::spawn(move || {
            socket.set_read_timeout(Some(PROBE_TIMEOUT)).ok();
            let mut buf = [0u8; 1500];
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => socket.send_to(&buf[..n], from).is_ok(),
                Err(_) => false,
            }
        })
    });
    let socket = netns::run_in(ns, || {
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport))
    })
    .map_err(io::Error::other)?;
    socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
    let answered = match socket.send_to(b"ovslab probe", SocketAddrV4::new(dest, port)) {
        Ok(_) => {
            let mut buf = [0u8; 1500];
            matches!(socket.recv_from(&mut buf), Ok((_, from)) if from.ip() == std::net::IpAddr::V4(dest))
        }
        Err(_) => false,
    };
    if let Some(h) = echoed {
        let _ = h.join();
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_capture::Frame;

    /// How much later than its wait a probe that fails may decide, on a
    /// loaded machine, before the test calls it a probe that hung.
    const HANG: Duration = Duration::from_secs(5);

    fn frame(proto: u8, l4: &[u8]) -> Frame {
        let mut f = vec![
            0xfa, 0x16, 0x3e, 0, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 2, 0x08, 0x00,
        ];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 168, 1, 11, 203, 0, 113, 1,
        ]);
        f.extend_from_slice(l4);
        Frame::parse(&f).unwrap()
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Frame {
        let mut h = vec![0u8; 20];
        h[..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 0x50;
        h[13] = flags;
        frame(6, &h)
    }

    #[test]
    fn echo_replies_are_told_by_id_and_source_and_short_packets_are_not() {
        let from: Ipv4Addr = "192.168.1.11".parse().unwrap();
        let mut reply = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 192, 168, 1, 11, 10, 0, 0, 1,
        ];
        reply.extend_from_slice(&[0, 0, 0, 0, 0x10, 0x92, 0, 1]);
        assert!(is_echo_reply(&reply, 4242, from));
        assert!(!is_echo_reply(&reply, 4243, from));
        assert!(!is_echo_reply(&reply, 4242, "10.0.0.1".parse().unwrap()));
        // Shorter than an IPv4 header, with an IHL of 0 so the ICMP part
        // seemed to start at once: once an out-of-bounds read of the source.
        assert!(!is_echo_reply(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0], 0, from));
        for len in 0..reply.len() {
            assert!(!is_echo_reply(&reply[..len], 4242, from), "{len} bytes");
        }
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        assert_eq!(checksum(&echo_request(7, 3)), 0);
    }

    #[test]
    fn frames_are_told_apart_by_tag_and_direction() {
        let req = frame(1, &echo_request(4242, 1));
        assert_eq!(leg(&req, Probe::Icmp, 4242), Some(Leg::Request));
        assert_eq!(leg(&req, Probe::Icmp, 4243), None);
        let mut reply = echo_request(4242, 1);
        reply[0] = 0;
        assert_eq!(leg(&frame(1, &reply), Probe::Icmp, 4242), Some(Leg::Reply));
        assert_eq!(leg(&req, Probe::Tcp(22), 4242), None);

        let t = Probe::Tcp(22);
        assert_eq!(leg(&tcp(40000, 22, 0x02), t, 40000), Some(Leg::Request));
        assert_eq!(leg(&tcp(22, 40000, 0x12), t, 40000), Some(Leg::Reply));
        assert_eq!(
            leg(&tcp(22, 40000, 0x14), t, 40000),
            Some(Leg::Reply),
            "RST"
        );
        assert_eq!(leg(&tcp(40000, 22, 0x10), t, 40000), None, "the final ACK");
        assert!(is_probe_frame(&tcp(40000, 22, 0x10), t, 40000));
        assert!(!is_probe_frame(&tcp(40001, 22, 0x02), t, 40000));

        let u = Probe::Udp(53);
        assert_eq!(
            leg(&frame(17, &[0x9c, 0x40, 0, 53, 0, 8, 0, 0]), u, 40000),
            Some(Leg::Request)
        );
        assert_eq!(
            leg(&frame(17, &[0, 53, 0x9c, 0x40, 0, 8, 0, 0]), u, 40000),
            Some(Leg::Reply)
        );
    }

    /// `inner` in a VXLAN packet from 172.16.0.11:`sport` to 172.16.0.12:4789.
    fn vxlan(sport: u16, vni: u32, inner: &[u8]) -> Frame {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12,
        ]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0x12, 0xb5, 0, 0, 0, 0, 0x08, 0, 0, 0]);
        f.extend_from_slice(&vni.to_be_bytes()[1..]);
        f.push(0);
        f.extend_from_slice(inner);
        Frame::parse(&f).unwrap()
    }

    #[test]
    fn a_probe_in_a_tunnel_is_told_by_the_frame_inside() {
        let echo = icmp_frame(
            [2; 6],
            [4; 6],
            "192.168.1.11".parse().unwrap(),
            "192.168.1.12".parse().unwrap(),
            40000,
            1,
        );
        let outer = vxlan(51234, 101, &echo);
        assert_eq!(leg(&outer, Probe::Icmp, 40000), Some(Leg::Request));
        assert!(is_probe_frame(&outer, Probe::Icmp, 40000));
        assert!(!is_probe_frame(&outer, Probe::Icmp, 40001));
        // The outer source port is a hash: equal to a UDP probe's tag, it
        // still does not make the tunnel packet a frame of that probe.
        let other = vxlan(40000, 101, &echo);
        assert_eq!(leg(&other, Probe::Udp(53), 40000), None);
        assert!(!is_probe_frame(&other, Probe::Udp(4789), 40000));
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
        let parsed = Frame::parse(&f).unwrap();
        assert_eq!(leg(&parsed, Probe::Icmp, 9), Some(Leg::Request));
    }

    #[test]
    #[ignore = "needs root"]
    fn probes_to_one_port_share_its_listener_and_a_dropped_one_ends_after_its_wait() {
        use ovslab_testkit::{TestNetns, require_root};
        require_root("probes_to_one_port_share_its_listener_and_a_dropped_one_ends_after_its_wait");
        let ns = TestNetns::new();
        let local = Ipv4Addr::LOCALHOST;
        let (a, b) = (
            listen(&ns.name, 5001).unwrap(),
            listen(&ns.name, 5001).unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b), "one listener per namespace and port");
        // Two probes at once, each finding its own connection.
        let (name, listener) = (ns.name.as_str(), &*a);
        let answered = std::thread::scope(|s| {
            let probes: Vec<_> = [40001, 40002]
                .map(|sport| {
                    s.spawn(move || {
                        super::tcp(name, Some(listener), local, 5001, sport, PROBE_TIMEOUT)
                    })
                })
                .into_iter()
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(answered, [true, true]);
        // A connection the listener did not accept is not the probe's.
        assert!(!a.accepted(40003, Instant::now()));
        // Released by every probe, the listener closes; the next opens anew.
        drop((a, b));
        let again = listen(&ns.name, 5001).unwrap();
        drop(again);

        // SYNs to 5002 dropped: no answer, decided after the wait and
        // not much later.
        ns.exec(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5002", "-j", "DROP",
        ]);
        let dropped = listen(&ns.name, 5002).unwrap();
        let started = Instant::now();
        assert!(!super::tcp(&ns.name, Some(&dropped), local, 5002, 40004, FAILURE_WAIT).unwrap());
        let took = started.elapsed();
        assert!(
            took >= FAILURE_WAIT && took < FAILURE_WAIT + HANG,
            "{took:?}"
        );
        // An echo request that is dropped too.
        ns.exec(&["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"]);
        let started = Instant::now();
        assert!(!ping(&ns.name, local, 40005, 3, FAILURE_WAIT).unwrap());
        let took = started.elapsed();
        assert!(
            took >= FAILURE_WAIT && took < FAILURE_WAIT + HANG,
            "{took:?}"
        );
    }

    /// A server that sends its answer a byte every 80 ms for 10 s: the
    /// probe ends at its wait, not at the answer's end. With the header
    /// whole by then it has the status (and the body so far); with half a
    /// header it has no answer. Each read once waited the whole `wait`
    /// for the next byte, so such a server held the probe for as long as
    /// it liked.
    #[test]
    #[ignore = "needs root"]
    fn an_http_probe_ends_at_its_wait_however_slowly_the_server_answers() {
        use ovslab_testkit::{TestNetns, require_root};
        use std::io::Write;
        require_root("an_http_probe_ends_at_its_wait_however_slowly_the_server_answers");
        let ns = TestNetns::new();
        let local = Ipv4Addr::LOCALHOST;
        let wait = Duration::from_millis(800);
        let cases = [
            (8081, "HTTP/1.0 200 OK\r\n\r\n", Some(200)),
            (8082, "", None),
        ];
        for (port, at_once, status) in cases {
            let listener = netns::run_in(&ns.name, move || {
                TcpListener::bind(SocketAddrV4::new(local, port))
            })
            .unwrap();
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                stream.write_all(at_once.as_bytes()).unwrap();
                let trickle = b"HTTP/1.0 200 OK\r\n\r\n".iter().chain(b"x".iter().cycle());
                let until = Instant::now() + Duration::from_secs(10);
                for byte in trickle {
                    // The probe closed its end: the write fails.
                    if Instant::now() >= until || stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(80));
                }
            });
            let started = Instant::now();
            let got = http_get(&ns.name, local, port, "/", 40030 + port % 10, wait).unwrap();
            let took = started.elapsed();
            assert!(took >= wait && took < wait + HANG, "port {port}: {took:?}");
            assert_eq!(
                got.as_ref().map(|(s, _)| *s),
                status,
                "port {port}: {got:?}"
            );
            if let Some((_, body)) = got {
                assert!(!body.is_empty(), "the body so far");
            }
            server.join().unwrap();
        }
    }

    /// A DHCP answer (`message` 2 OFFER, 5 ACK) from `server` giving
    /// `yiaddr` to the client of `request`, made from the request.
    fn dhcp_answer(request: &[u8], message: u8, server: Ipv4Addr, yiaddr: Ipv4Addr) -> Vec<u8> {
        let mut frame = request.to_vec();
        frame[26..30].copy_from_slice(&server.octets()); // IPv4 source
        frame[24..26].copy_from_slice(&[0, 0]);
        let sum = checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
        frame[34..38].copy_from_slice(&[0, 67, 0, 68]); // UDP ports
        frame[42] = 2; // BOOTREPLY
        frame[58..62].copy_from_slice(&yiaddr.octets());
        frame[42 + 242] = message;
        frame
    }

    /// A DHCP server that misses the first DISCOVER and the first REQUEST
    /// (lost, or too slow): the probe asks again every `DHCP_RESEND`, as a
    /// client does, and gets its address.
    #[test]
    #[ignore = "needs root"]
    fn a_dhcp_probe_asks_again_until_it_is_answered() {
        use ovslab_capture::PacketSocket;
        use ovslab_testkit::{TestNetns, require_root};
        require_root("a_dhcp_probe_asks_again_until_it_is_answered");
        let ns = TestNetns::new();
        ns.exec(&["ip", "link", "add", "c0", "type", "veth", "peer", "s0"]);
        ns.exec(&["ip", "link", "set", "c0", "up"]);
        ns.exec(&["ip", "link", "set", "s0", "up"]);
        let server: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let given: Ipv4Addr = "10.9.0.7".parse().unwrap();
        let socket = PacketSocket::open(&ns.name, "s0", false).unwrap();
        let serve = std::thread::spawn(move || {
            let mut seen = [0usize; 6];
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                for p in socket.drain().unwrap() {
                    let Some(Some(L4::Udp { dhcp: Some(d), .. })) =
                        Frame::parse(&p.data).map(|f| f.l4())
                    else {
                        continue;
                    };
                    if d.message != 1 && d.message != 3 {
                        continue;
                    }
                    seen[usize::from(d.message)] += 1;
                    // The first of each goes unanswered.
                    if seen[usize::from(d.message)] > 1 {
                        let answer = if d.message == 1 { 2 } else { 5 };
                        socket
                            .send(&dhcp_answer(&p.data, answer, server, given))
                            .unwrap();
                    }
                    if d.message == 3 && seen[3] > 1 {
                        return seen;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 9];
        let started = Instant::now();
        let got = dhcp(&ns.name, "c0", mac, 40011, PROBE_TIMEOUT).unwrap();
        let took = started.elapsed();
        let seen = serve.join().unwrap();
        assert_eq!(got, Some(given), "DISCOVERs and REQUESTs seen: {seen:?}");
        assert_eq!((seen[1], seen[3]), (2, 2), "each sent again once");
        assert!(took >= DHCP_RESEND * 2, "{took:?}");
    }

    #[test]
    fn a_dhcp_probe_frame_reads_back_as_its_message() {
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 1];
        let discover = Frame::parse(&dhcp_frame(mac, dhcp_xid(40001), 1, None)).unwrap();
        let Some(L4::Udp {
            sport: 68,
            dport: 67,
            dhcp: Some(d),
        }) = discover.l4()
        else {
            panic!("not DHCP: {discover:?}");
        };
        assert_eq!((d.xid, d.message), (dhcp_xid(40001), 1));
        assert_eq!(leg(&discover, Probe::Dhcp, 40001), Some(Leg::Request));
        assert_eq!(leg(&discover, Probe::Dhcp, 40002), None);
        let request = dhcp_frame(
            mac,
            dhcp_xid(40001),
            3,
            Some((
                "192.168.1.11".parse().unwrap(),
                "192.168.1.2".parse().unwrap(),
            )),
        );
        let request = Frame::parse(&request).unwrap();
        assert!(is_probe_frame(&request, Probe::Dhcp, 40001));
        assert_eq!(
            request.ipv4(),
            Some((Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST))
        );
        assert!(
            discover
                .l4()
                .unwrap()
                .to_string()
                .contains("DHCP DISCOVER xid 0x6f769c41")
        );
    }
}
