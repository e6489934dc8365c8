//! What a frame carries: its MAC addresses, its 802.1Q tag, and for IPv4
//! the addresses and the ICMP, TCP or UDP header; for ARP who asks for whom.
//! A frame that is a tunnel packet (VXLAN, or GRE carrying Ethernet, as on
//! a node's overlay uplink) also carries the frame inside it, decoded in
//! turn: [`Frame::encapsulation`], [`Frame::innermost`].

use std::fmt;
use std::net::Ipv4Addr;

/// A decoded Ethernet frame (only what a lab needs to tell packets apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// The VLAN id of the outer 802.1Q tag.
    pub vlan: Option<u16>,
    pub ethertype: u16,
    pub payload: Payload,
    /// The tunnel this frame is, with the frame it carries (boxed: a frame
    /// inside a frame).
    encapsulation: Option<Box<Encapsulation>>,
}

/// A tunnel protocol that carries Ethernet frames over IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    /// VXLAN (RFC 7348): UDP to port 4789, an 8-byte header with a 24-bit
    /// VXLAN network identifier (VNI).
    Vxlan,
    /// GRE (RFC 2784, with the key and sequence number of RFC 2890),
    /// protocol type 0x6558 (transparent Ethernet bridging).
    Gre,
}

/// Which tunnel a frame travelled in: the protocol and the key, which is
/// what Open vSwitch calls the tunnel id (`tun_id`) and Neutron the
/// network's segmentation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// The VNI (VXLAN), or the GRE key; `None` for GRE without the key bit.
    pub key: Option<u32>,
}

/// The outer headers of a tunnel packet, and the frame it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulation {
    pub tunnel: Tunnel,
    /// The tunnel endpoints: the outer IPv4 source and destination.
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    /// The carried frame, decoded (it may be cut short, like any frame).
    pub inner: Frame,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        l4: L4,
    },
    Arp {
        /// 1 request, 2 reply.
        op: u16,
        sender: Ipv4Addr,
        target: Ipv4Addr,
    },
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Icmp {
        kind: u8,
        code: u8,
        id: u16,
        seq: u16,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
        /// A DHCP message (UDP between ports 67 and 68 with the BOOTP magic
        /// cookie): its transaction id and message type.
        dhcp: Option<Dhcp>,
    },
    Other(u8),
}

/// A DHCP message, as far as a probe needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dhcp {
    pub xid: u32,
    /// Option 53: 1 DISCOVER, 2 OFFER, 3 REQUEST, 5 ACK, 6 NAK, …
    pub message: u8,
    /// `yiaddr`: the address offered or acknowledged.
    pub yiaddr: Ipv4Addr,
}

impl Dhcp {
    /// Reads a BOOTP/DHCP message (the UDP payload); `None` when it is not
    /// one (too short, no magic cookie, no message type).
    pub fn parse(payload: &[u8]) -> Option<Dhcp> {
        if payload.len() < 240 || payload[236..240] != [99, 130, 83, 99] {
            return None;
        }
        let xid = u32::from_be_bytes(payload[4..8].try_into().ok()?);
        let yiaddr = Ipv4Addr::new(payload[16], payload[17], payload[18], payload[19]);
        let mut at = 240;
        while at < payload.len() {
            match payload[at] {
                0 => at += 1,
                255 => break,
                code => {
                    let len = usize::from(*payload.get(at + 1)?);
                    if code == 53 && len == 1 {
                        return Some(Dhcp {
                            xid,
                            message: *payload.get(at + 2)?,
                            yiaddr,
                        });
                    }
                    at += 2 + len;
                }
            }
        }
        None
    }

    pub fn name(&self) -> &'static str {
        match self.message {
            1 => "DISCOVER",
            2 => "OFFER",
            3 => "REQUEST",
            4 => "DECLINE",
            5 => "ACK",
            6 => "NAK",
            7 => "RELEASE",
            8 => "INFORM",
            _ => "message",
        }
    }
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// GRE's protocol type for an Ethernet frame (transparent Ethernet
/// bridging), what OVS's `gre` ports and Linux `gretap` send.
pub const ETHERTYPE_TEB: u16 = 0x6558;
/// The IANA port of VXLAN (RFC 7348 §5), Neutron's and OVS's default.
pub const VXLAN_PORT: u16 = 4789;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_UDP: u8 = 17;
/// Tunnels inside tunnels are decoded this deep and no deeper: a lab has
/// one level, and a hostile packet of nested headers must not recurse
/// without end.
const MAX_TUNNEL_DEPTH: usize = 4;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;
pub const TCP_FIN: u8 = 0x01;

impl Frame {
    /// Decodes a frame; `None` when it is shorter than an Ethernet header.
    /// A truncated IPv4 or ARP packet decodes as [`Payload::Other`]. A
    /// VXLAN packet (UDP to port 4789 with the VNI flag set) or a GRE
    /// packet carrying Ethernet is decapsulated too, when the carried
    /// frame's Ethernet header is there; a truncated or unknown tunnel
    /// header leaves the frame as a plain UDP or GRE packet.
    pub fn parse(data: &[u8]) -> Option<Frame> {
        Self::parse_nested(data, 0)
    }

    fn parse_nested(data: &[u8], depth: usize) -> Option<Frame> {
        let mac = |at: usize| -> Option<[u8; 6]> { data.get(at..at + 6)?.try_into().ok() };
        let be16 = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
        };
        let dst_mac = mac(0)?;
        let src_mac = mac(6)?;
        let mut ethertype = be16(12)?;
        let mut offset = 14;
        let mut vlan = None;
        if ethertype == ETHERTYPE_VLAN {
            vlan = Some(be16(14)? & 0x0fff);
            ethertype = be16(16)?;
            offset = 18;
        }
        let rest = &data[offset.min(data.len())..];
        let payload = match ethertype {
            ETHERTYPE_IPV4 => ipv4(rest),
            ETHERTYPE_ARP => arp(rest),
            _ => None,
        }
        .unwrap_or(Payload::Other);
        let encapsulation = match (&payload, ethertype) {
            (Payload::Ipv4 { src, dst, .. }, ETHERTYPE_IPV4) if depth < MAX_TUNNEL_DEPTH => {
                tunnel_payload(rest).and_then(|(tunnel, inner)| {
                    Some(Box::new(Encapsulation {
                        tunnel,
                        outer_src: *src,
                        outer_dst: *dst,
                        inner: Frame::parse_nested(inner, depth + 1)?,
                    }))
                })
            }
            _ => None,
        };
        Some(Frame {
            dst_mac,
            src_mac,
            vlan,
            ethertype,
            payload,
            encapsulation,
        })
    }

    /// The tunnel this frame is and the frame it carries, if it is a
    /// VXLAN or GRE packet.
    pub fn encapsulation(&self) -> Option<&Encapsulation> {
        self.encapsulation.as_deref()
    }

    /// The frame this one carries, if it is a tunnel packet.
    pub fn inner(&self) -> Option<&Frame> {
        self.encapsulation().map(|e| &e.inner)
    }

    /// The frame at the bottom of every tunnel: this one when it is not a
    /// tunnel packet. What a probe is recognised by wherever it is seen.
    pub fn innermost(&self) -> &Frame {
        let mut frame = self;
        while let Some(inner) = frame.inner() {
            frame = inner;
        }
        frame
    }

    /// IPv4 source and destination, if this is IPv4.
    pub fn ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        match self.payload {
            Payload::Ipv4 { src, dst, .. } => Some((src, dst)),
            _ => None,
        }
    }

    /// The transport header, if this is IPv4.
    pub fn l4(&self) -> Option<L4> {
        match self.payload {
            Payload::Ipv4 { l4, .. } => Some(l4),
            _ => None,
        }
    }
}

fn ipv4(ip: &[u8]) -> Option<Payload> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let l4 = ip.get(ihl..).unwrap_or(&[]);
    let be16 =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?])) };
    let proto = ip[9];
    let parsed = match proto {
        1 => (|| {
            Some(L4::Icmp {
                kind: *l4.first()?,
                code: *l4.get(1)?,
                id: be16(4)?,
                seq: be16(6)?,
            })
        })(),
        6 => (|| {
            Some(L4::Tcp {
                sport: be16(0)?,
                dport: be16(2)?,
                flags: *l4.get(13)?,
            })
        })(),
        17 => (|| {
            let (sport, dport) = (be16(0)?, be16(2)?);
            let dhcp = match (sport, dport) {
                (67 | 68, 67 | 68) => l4.get(8..).and_then(Dhcp::parse),
                _ => None,
            };
            Some(L4::Udp { sport, dport, dhcp })
        })(),
        _ => None,
    };
    Some(Payload::Ipv4 {
        src: addr(12),
        dst: addr(16),
        ttl: ip[8],
        l4: parsed.unwrap_or(L4::Other(proto)),
    })
}

/// The tunnel and the carried frame's bytes, when the IPv4 packet `ip` is
/// a VXLAN or GRE packet carrying Ethernet with at least a whole Ethernet
/// header inside. A later fragment (no transport header) is none.
fn tunnel_payload(ip: &[u8]) -> Option<(Tunnel, &[u8])> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
    if ihl < 20 || fragment_offset != 0 {
        return None;
    }
    let l4 = ip.get(ihl..)?;
    let (tunnel, inner) = match *ip.get(9)? {
        IPPROTO_UDP => vxlan(l4)?,
        IPPROTO_GRE => gre(l4)?,
        _ => return None,
    };
    // A carried frame without a whole Ethernet header is no frame.
    (inner.len() >= 14).then_some((tunnel, inner))
}

/// RFC 7348 §5: after the UDP header (destination port 4789), flags (the
/// I bit 0x08 says the VNI is valid) and 3 reserved bytes, the VNI in 3
/// bytes and a reserved byte. Without the I bit this is no VXLAN packet
/// of ours.
fn vxlan(udp: &[u8]) -> Option<(Tunnel, &[u8])> {
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let header = udp.get(8..16)?;
    if dport != VXLAN_PORT || header[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    let tunnel = Tunnel {
        kind: TunnelKind::Vxlan,
        key: Some(vni),
    };
    Some((tunnel, udp.get(16..)?))
}

/// RFC 2784 §2 and RFC 2890 §2: flags C (checksum, 0x80), R (routing,
/// 0x40, RFC 1701), K (key, 0x20), S (sequence number, 0x10) in the first
/// byte, the version in the low 3 bits of the second, then the protocol
/// type; then checksum and offset (4 bytes, with C or R), key (4, with K),
/// sequence number (4, with S). Version 0 carrying Ethernet (0x6558) only;
/// a routing field (RFC 1701's source routes, deprecated) is not decoded.
fn gre(gre: &[u8]) -> Option<(Tunnel, &[u8])> {
    let (flags, version) = (*gre.first()?, *gre.get(1)? & 0x07);
    let protocol = u16::from_be_bytes([*gre.get(2)?, *gre.get(3)?]);
    if version != 0 || flags & 0x40 != 0 || protocol != ETHERTYPE_TEB {
        return None;
    }
    let mut at = 4;
    if flags & 0x80 != 0 {
        at += 4;
    }
    let key = if flags & 0x20 != 0 {
        let k = gre.get(at..at + 4)?;
        at += 4;
        Some(u32::from_be_bytes([k[0], k[1], k[2], k[3]]))
    } else {
        None
    };
    if flags & 0x10 != 0 {
        at += 4;
    }
    let tunnel = Tunnel {
        kind: TunnelKind::Gre,
        key,
    };
    Some((tunnel, gre.get(at..)?))
}

fn arp(a: &[u8]) -> Option<Payload> {
    if a.len() < 28 {
        return None;
    }
    Some(Payload::Arp {
        op: u16::from_be_bytes([a[6], a[7]]),
        sender: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        target: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

/// `fa:16:3e:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `SA` (SYN+ACK), `R`, `F.`…, as tcpdump spells TCP flags.
pub fn format_tcp_flags(flags: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [(TCP_SYN, 'S'), (TCP_FIN, 'F'), (TCP_RST, 'R'), (0x08, 'P')] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    if flags & TCP_ACK != 0 {
        s.push('.');
    }
    s
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Gre => "gre",
        })
    }
}

/// `vxlan 101`, `gre 101`, `gre without key`.
impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "{} {key}", self.kind),
            None => write!(f, "{} without key", self.kind),
        }
    }
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            L4::Icmp {
                kind: 8, id, seq, ..
            } => write!(f, "ICMP echo request, id {id}, seq {seq}"),
            L4::Icmp {
                kind: 0, id, seq, ..
            } => write!(f, "ICMP echo reply, id {id}, seq {seq}"),
            L4::Icmp { kind, code, .. } => write!(f, "ICMP type {kind} code {code}"),
            L4::Tcp {
                sport,
                dport,
                flags,
            } => write!(f, "TCP {sport} > {dport} [{}]", format_tcp_flags(flags)),
            L4::Udp {
                sport,
                dport,
                dhcp: Some(d),
            } => write!(
                f,
                "UDP {sport} > {dport} DHCP {} xid {:#010x}",
                d.name(),
                d.xid
            ),
            L4::Udp { sport, dport, .. } => write!(f, "UDP {sport} > {dport}"),
            L4::Other(p) => write!(f, "IP protocol {p}"),
        }
    }
}

/// One line, as `tcpdump -e -n` would print it (without the time).
impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} > {}",
            format_mac(&self.src_mac),
            format_mac(&self.dst_mac)
        )?;
        if let Some(v) = self.vlan {
            write!(f, ", vlan {v}")?;
        }
        match &self.payload {
            Payload::Ipv4 { src, dst, l4, .. } => write!(f, ", IPv4 {src} > {dst}: {l4}"),
            Payload::Arp {
                op: 1,
                sender,
                target,
            } => write!(f, ", ARP who-has {target} tell {sender}"),
            Payload::Arp { sender, .. } => {
                write!(
                    f,
                    ", ARP reply {sender} is-at {}",
                    format_mac(&self.src_mac)
                )
            }
            Payload::Other => write!(f, ", ethertype 0x{:04x}", self.ethertype),
        }?;
        if let Some(e) = self.encapsulation() {
            write!(f, ", {}: {}", e.tunnel, e.inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ipv4_frame(vlan: Option<u16>, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0xfa, 0x16, 0x3e, 0, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 2];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 192, 168, 1, 11, 203, 0, 113, 1,
        ]);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn an_echo_request_in_a_tagged_frame() {
        let f = Frame::parse(&ipv4_frame(Some(101), 1, &[8, 0, 0, 0, 0x10, 0x92, 0, 1])).unwrap();
        assert_eq!(f.vlan, Some(101));
        assert_eq!(
            f.ipv4(),
            Some((
                "192.168.1.11".parse().unwrap(),
                "203.0.113.1".parse().unwrap()
            ))
        );
        assert_eq!(
            f.l4(),
            Some(L4::Icmp {
                kind: 8,
                code: 0,
                id: 4242,
                seq: 1
            })
        );
        assert_eq!(
            f.to_string(),
            "fa:16:3e:00:00:02 > fa:16:3e:00:00:01, vlan 101, IPv4 192.168.1.11 > 203.0.113.1: \
             ICMP echo request, id 4242, seq 1"
        );
    }

    #[test]
    fn tcp_and_udp_ports_and_flags() {
        let mut syn_ack = vec![0x9c, 0x40, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x12];
        syn_ack.extend_from_slice(&[0; 6]);
        let f = Frame::parse(&ipv4_frame(None, 6, &syn_ack)).unwrap();
        assert_eq!(
            f.l4(),
            Some(L4::Tcp {
                sport: 40000,
                dport: 22,
                flags: TCP_SYN | TCP_ACK
            })
        );
        assert_eq!(f.l4().unwrap().to_string(), "TCP 40000 > 22 [S.]");
        let f = Frame::parse(&ipv4_frame(None, 17, &[0, 53, 0x9c, 0x40, 0, 8, 0, 0])).unwrap();
        assert_eq!(
            f.l4(),
            Some(L4::Udp {
                sport: 53,
                dport: 40000,
                dhcp: None
            })
        );
    }

    #[test]
    fn truncated_and_foreign_frames_do_not_panic() {
        assert_eq!(Frame::parse(&[0; 5]), None);
        let short = ipv4_frame(None, 6, &[0x9c]);
        assert_eq!(Frame::parse(&short).unwrap().l4(), Some(L4::Other(6)));
        let mut ipv6 = vec![0; 12];
        ipv6.extend_from_slice(&[0x86, 0xdd, 0x60]);
        assert_eq!(Frame::parse(&ipv6).unwrap().payload, Payload::Other);
        for len in 0..60 {
            let f = ipv4_frame(Some(5), 1, &[8, 0, 0, 0, 0, 1, 0, 1]);
            let _ = Frame::parse(&f[..len.min(f.len())]);
        }
    }

    #[test]
    fn arp_requests_say_who_asks_for_whom() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 2]);
        let f = Frame::parse(&f).unwrap();
        assert_eq!(
            f.payload,
            Payload::Arp {
                op: 1,
                sender: "10.0.0.1".parse().unwrap(),
                target: "10.0.0.2".parse().unwrap()
            }
        );
        assert!(
            f.to_string()
                .ends_with("ARP who-has 10.0.0.2 tell 10.0.0.1")
        );
    }

    // --- tunnels ---------------------------------------------------------

    /// An untagged frame between two tunnel endpoints (172.16.0.11 →
    /// 172.16.0.12) carrying an IPv4 packet of protocol `proto`.
    fn outer(proto: u8, fragment: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00];
        let total = (20 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&fragment.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 172, 16, 0, 11, 172, 16, 0, 12]);
        f.extend_from_slice(payload);
        f
    }

    /// A VXLAN packet (source port 51234) with `flags` and `vni`, carrying `inner`.
    pub(crate) fn vxlan_packet(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut udp = vec![0xc8, 0x22, 0x12, 0xb5];
        udp.extend_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0, flags, 0, 0, 0]);
        udp.extend_from_slice(&vni.to_be_bytes()[1..]);
        udp.push(0);
        udp.extend_from_slice(inner);
        outer(17, 0x4000, &udp)
    }

    /// A GRE packet with the C, K and S bits as asked, carrying `inner`.
    fn gre_packet(checksum: bool, key: Option<u32>, sequence: bool, inner: &[u8]) -> Vec<u8> {
        let flags =
            u8::from(checksum) << 7 | u8::from(key.is_some()) << 5 | u8::from(sequence) << 4;
        let mut gre = vec![flags, 0, 0x65, 0x58];
        if checksum {
            gre.extend_from_slice(&[0xab, 0xcd, 0, 0]);
        }
        if let Some(k) = key {
            gre.extend_from_slice(&k.to_be_bytes());
        }
        if sequence {
            gre.extend_from_slice(&7u32.to_be_bytes());
        }
        gre.extend_from_slice(inner);
        outer(47, 0x4000, &gre)
    }

    fn echo(vlan: Option<u16>) -> Vec<u8> {
        ipv4_frame(vlan, 1, &[8, 0, 0, 0, 0x10, 0x92, 0, 1])
    }

    #[test]
    fn a_vxlan_packet_shows_its_endpoints_vni_and_the_frame_inside() {
        let f = Frame::parse(&vxlan_packet(0x08, 101, &echo(None))).unwrap();
        assert_eq!(
            f.l4(),
            Some(L4::Udp {
                sport: 51234,
                dport: 4789,
                dhcp: None
            })
        );
        let e = f.encapsulation().unwrap();
        assert_eq!(
            e.tunnel,
            Tunnel {
                kind: TunnelKind::Vxlan,
                key: Some(101)
            }
        );
        assert_eq!(e.outer_src, Ipv4Addr::new(172, 16, 0, 11));
        assert_eq!(e.outer_dst, Ipv4Addr::new(172, 16, 0, 12));
        assert_eq!(e.inner, Frame::parse(&echo(None)).unwrap());
        assert_eq!(f.inner(), Some(&e.inner));
        assert_eq!(f.innermost(), &e.inner);
        assert_eq!(e.inner.vlan, None);
        assert_eq!(
            f.to_string(),
            "02:00:00:00:00:11 > 02:00:00:00:00:12, IPv4 172.16.0.11 > 172.16.0.12: \
             UDP 51234 > 4789, vxlan 101: fa:16:3e:00:00:02 > fa:16:3e:00:00:01, \
             IPv4 192.168.1.11 > 203.0.113.1: ICMP echo request, id 4242, seq 1"
        );
        // All 24 bits of the VNI.
        let f = Frame::parse(&vxlan_packet(0x08, 0xab_cdef, &echo(None))).unwrap();
        assert_eq!(f.encapsulation().unwrap().tunnel.key, Some(0xab_cdef));
    }

    #[test]
    fn a_gre_packet_with_a_key_shows_it_whatever_other_fields_come_first() {
        for (checksum, sequence) in [(false, false), (true, false), (false, true), (true, true)] {
            let f = Frame::parse(&gre_packet(checksum, Some(0x64), sequence, &echo(None))).unwrap();
            assert_eq!(f.l4(), Some(L4::Other(47)));
            let e = f.encapsulation().unwrap();
            assert_eq!(
                e.tunnel,
                Tunnel {
                    kind: TunnelKind::Gre,
                    key: Some(100)
                },
                "checksum {checksum} sequence {sequence}"
            );
            assert_eq!(
                (e.outer_src, e.outer_dst),
                (
                    "172.16.0.11".parse().unwrap(),
                    "172.16.0.12".parse().unwrap()
                )
            );
            assert_eq!(f.innermost(), &Frame::parse(&echo(None)).unwrap());
        }
        let f = Frame::parse(&gre_packet(false, Some(0xffff_ffff), false, &echo(None))).unwrap();
        assert_eq!(f.encapsulation().unwrap().tunnel.key, Some(u32::MAX));
        assert!(
            f.to_string()
                .contains("IP protocol 47, gre 4294967295: fa:16:3e"),
            "{f}"
        );
    }

    #[test]
    fn a_gre_packet_without_a_key_has_none() {
        for checksum in [false, true] {
            let f = Frame::parse(&gre_packet(checksum, None, false, &echo(None))).unwrap();
            let e = f.encapsulation().unwrap();
            assert_eq!(
                e.tunnel,
                Tunnel {
                    kind: TunnelKind::Gre,
                    key: None
                }
            );
            assert_eq!(e.tunnel.to_string(), "gre without key");
            assert_eq!(f.innermost().l4(), Frame::parse(&echo(None)).unwrap().l4());
        }
    }

    #[test]
    fn a_tagged_frame_inside_a_tunnel_keeps_its_tag() {
        let f = Frame::parse(&vxlan_packet(0x08, 101, &echo(Some(5)))).unwrap();
        assert_eq!(f.vlan, None);
        assert_eq!(f.innermost().vlan, Some(5));
        assert_eq!(
            f.innermost().ipv4(),
            Frame::parse(&echo(None)).unwrap().ipv4()
        );
        let f = Frame::parse(&gre_packet(false, Some(7), true, &echo(Some(4094)))).unwrap();
        assert_eq!(f.innermost().vlan, Some(4094));
        assert!(matches!(
            f.innermost().l4(),
            Some(L4::Icmp { id: 4242, .. })
        ));
        // And a tagged tunnel packet (the outer frame tagged) decodes too.
        let mut tagged = vxlan_packet(0x08, 101, &echo(None));
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0c]);
        let f = Frame::parse(&tagged).unwrap();
        assert_eq!(
            (f.vlan, f.encapsulation().unwrap().tunnel.key),
            (Some(12), Some(101))
        );
    }

    #[test]
    fn truncated_tunnel_headers_leave_a_plain_packet_and_never_panic() {
        for packet in [
            vxlan_packet(0x08, 101, &echo(Some(5))),
            gre_packet(true, Some(1), true, &echo(Some(5))),
            gre_packet(false, None, false, &echo(None)),
        ] {
            let whole = Frame::parse(&packet).unwrap();
            // 14 (Ethernet) + 20 (IPv4) + the tunnel headers + 14 (Ethernet inside).
            let headers = packet.len() - echo(None).len() + 14;
            for len in 0..packet.len() {
                let Some(f) = Frame::parse(&packet[..len]) else {
                    assert!(len < 14);
                    continue;
                };
                assert_eq!(
                    f.encapsulation().is_some(),
                    len >= headers,
                    "{len} of {}",
                    packet.len()
                );
                if let Some(inner) = f.inner() {
                    // Cut short inside: the frame's headers are there, its
                    // payload only partly.
                    assert_eq!(inner.src_mac, whole.innermost().src_mac);
                }
                let _ = f.to_string();
            }
        }
        // The carried frame shorter than an Ethernet header.
        let f = Frame::parse(&vxlan_packet(0x08, 101, &[0xfa; 13])).unwrap();
        assert_eq!(f.encapsulation(), None);
        assert_eq!(f.innermost(), &f);
    }

    #[test]
    fn what_is_not_a_tunnel_of_ours_is_not_decapsulated() {
        let inner = echo(None);
        // VXLAN without the I flag (the VNI is not valid).
        let no_vni = Frame::parse(&vxlan_packet(0x00, 101, &inner)).unwrap();
        assert_eq!(no_vni.encapsulation(), None);
        // UDP to another port.
        let mut other_port = vxlan_packet(0x08, 101, &inner);
        other_port[14 + 20 + 3] = 0xb6; // 4790, VXLAN-GPE
        assert_eq!(Frame::parse(&other_port).unwrap().encapsulation(), None);
        let gre_offset = 14 + 20;
        // GRE version 1 (PPTP), the routing bit, or not carrying Ethernet.
        let mut v1 = gre_packet(false, Some(1), false, &inner);
        v1[gre_offset + 1] = 1;
        let mut routing = gre_packet(false, Some(1), false, &inner);
        routing[gre_offset] |= 0x40;
        let mut ip_in_gre = gre_packet(false, Some(1), false, &inner);
        ip_in_gre[gre_offset + 2..gre_offset + 4].copy_from_slice(&[0x08, 0x00]);
        for p in [v1, routing, ip_in_gre] {
            let f = Frame::parse(&p).unwrap();
            assert_eq!((f.encapsulation(), f.l4()), (None, Some(L4::Other(47))));
        }
        // A later fragment holds no UDP header, whatever its bytes look like.
        let mut fragment = vxlan_packet(0x08, 101, &inner);
        fragment[14 + 7] = 0xb9;
        assert_eq!(Frame::parse(&fragment).unwrap().encapsulation(), None);
        // An IPv4 header claiming fewer than 20 bytes.
        let mut short_ihl = vxlan_packet(0x08, 101, &inner);
        short_ihl[14] = 0x44;
        assert_eq!(Frame::parse(&short_ihl).unwrap().encapsulation(), None);
    }

    #[test]
    fn tunnels_inside_tunnels_are_decoded_to_a_bounded_depth() {
        let mut packet = echo(None);
        for vni in 1..=10 {
            packet = vxlan_packet(0x08, vni, &packet);
        }
        let f = Frame::parse(&packet).unwrap();
        let mut depth = 0;
        let mut at = &f;
        while let Some(e) = at.encapsulation() {
            depth += 1;
            assert_eq!(e.tunnel.key, Some(11 - depth));
            at = &e.inner;
        }
        assert_eq!(depth, MAX_TUNNEL_DEPTH as u32);
        assert_eq!(f.innermost(), at);
        // The deepest decoded frame is still a VXLAN packet, left whole.
        assert_eq!(
            at.l4(),
            Some(L4::Udp {
                sport: 51234,
                dport: 4789,
                dhcp: None
            })
        );
    }
}
