//! What a frame carries: its MAC addresses, its 802.1Q tag, and for IPv4
//! the addresses and the ICMP, TCP or UDP header; for ARP who asks for whom.

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
    },
    Other(u8),
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_RST: u8 = 0x04;
pub const TCP_FIN: u8 = 0x01;

impl Frame {
    /// Decodes a frame; `None` when it is shorter than an Ethernet header.
    /// A truncated IPv4 or ARP packet decodes as [`Payload::Other`].
    pub fn parse(data: &[u8]) -> Option<Frame> {
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
        Some(Frame {
            dst_mac,
            src_mac,
            vlan,
            ethertype,
            payload,
        })
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
            Some(L4::Udp {
                sport: be16(0)?,
                dport: be16(2)?,
            })
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
            L4::Udp { sport, dport } => write!(f, "UDP {sport} > {dport}"),
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
        }
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
                dport: 40000
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
}
