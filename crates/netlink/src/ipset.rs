//! IPv4 ipsets over nfnetlink (`NFNL_SUBSYS_IPSET`), as the `ipset` tool
//! speaks it: listing every set of a namespace with its members, and adding
//! or deleting members of an existing set. Creating and destroying sets
//! (rare: a remote group appears or goes) is left to `ipset restore`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::netns;
use crate::{NetlinkError, nfnetlink};

const NFNL_SUBSYS_IPSET: u16 = libc::NFNL_SUBSYS_IPSET as u16;
const IPSET_PROTOCOL: u8 = 7;
const IPSET_CMD_LIST: u16 = 7;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
// Attributes of a command.
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_ADT: u16 = 8;
// Attributes of an entry (inside DATA).
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_CIDR: u16 = 3;
// Attributes of an address (inside IP).
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;

const NLA_F_NESTED: u16 = libc::NLA_F_NESTED as u16;
const NLA_F_NET_BYTEORDER: u16 = libc::NLA_F_NET_BYTEORDER as u16;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const AF_INET: u8 = libc::AF_INET as u8;

/// Every set of namespace `name` with its IPv4 members (sets of other
/// families or kinds come back empty).
pub fn ipsets(name: &str) -> Result<BTreeMap<String, BTreeSet<Ipv4Net>>, NetlinkError> {
    netns::run_in(name, || {
        let socket = nfnetlink::socket(nfnetlink::DEADLINE)?;
        nfnetlink::send(&socket, &list_request())?;
        let mut sets = BTreeMap::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = nfnetlink::recv(&socket, &mut buf)?;
            if read_dump(&buf[..n], &mut sets)? {
                return Ok(sets);
            }
        }
    })
}

/// The dump of every set: `LIST` with nothing but the protocol version.
fn list_request() -> Vec<u8> {
    let mut request = Message::new(IPSET_CMD_LIST, NLM_F_REQUEST | NLM_F_DUMP, 1);
    request.attr(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    request.finish()
}

/// Reads one datagram of a list dump into `sets`; `true` when it ends the
/// dump. Public (hidden) for the fuzz target in `fuzz/`: whatever the
/// kernel sends, this must not panic.
#[doc(hidden)]
pub fn read_dump(
    datagram: &[u8],
    sets: &mut BTreeMap<String, BTreeSet<Ipv4Net>>,
) -> io::Result<bool> {
    for (kind, payload) in messages(datagram)? {
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => check_ack(payload)?,
            _ => parse_set(payload, sets)?,
        }
    }
    Ok(false)
}

/// How many acknowledgements one datagram of replies to member requests
/// holds; a refusal is an error. Public (hidden) for the fuzz target.
#[doc(hidden)]
pub fn count_acks(datagram: &[u8]) -> io::Result<usize> {
    let mut acknowledged = 0;
    for (kind, payload) in messages(datagram)? {
        if kind == NLMSG_ERROR {
            check_ack(payload)?;
            acknowledged += 1;
        }
    }
    Ok(acknowledged)
}

/// Adds `add` to and deletes `delete` from set `set` of namespace `name`.
/// Members already there (or already gone) are not an error.
pub fn change_ipset(
    name: &str,
    set: &str,
    add: &[Ipv4Addr],
    delete: &[Ipv4Addr],
) -> Result<(), NetlinkError> {
    let requests: Vec<Vec<u8>> = [(IPSET_CMD_ADD, add), (IPSET_CMD_DEL, delete)]
        .into_iter()
        .flat_map(|(command, members)| members.iter().map(move |ip| (command, *ip)))
        .enumerate()
        .map(|(seq, (command, ip))| member_request(command, set, ip, seq as u32 + 1))
        .collect();
    if requests.is_empty() {
        return Ok(());
    }
    netns::run_in(name, || {
        let socket = nfnetlink::socket(nfnetlink::DEADLINE)?;
        let mut buf = vec![0u8; 64 * 1024];
        // Many requests to one datagram (the kernel handles them in turn),
        // then one acknowledgement each.
        for chunk in requests.chunks(BATCH) {
            nfnetlink::send(&socket, &chunk.concat())?;
            let mut acknowledged = 0;
            while acknowledged < chunk.len() {
                let n = nfnetlink::recv(&socket, &mut buf)?;
                acknowledged += count_acks(&buf[..n])?;
            }
        }
        Ok(())
    })
}

/// Requests sent in one datagram: about 3 KB of requests, whose
/// acknowledgements (which repeat each request) fit the socket's buffer.
const BATCH: usize = 64;

/// One member added to or deleted from a set: the entry is
/// `DATA { IP { IPADDR_IPV4 } }`, the address in network byte order.
fn member_request(command: u16, set: &str, ip: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut m = Message::new(command, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.attr(IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    m.attr(IPSET_ATTR_SETNAME, &nul_terminated(set));
    let mut address = Vec::new();
    push_attr(
        &mut address,
        IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
        &ip.octets(),
    );
    let mut entry = Vec::new();
    push_attr(&mut entry, IPSET_ATTR_IP | NLA_F_NESTED, &address);
    m.attr(IPSET_ATTR_DATA | NLA_F_NESTED, &entry);
    m.finish()
}

fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// A netfilter netlink request: header, `nfgenmsg` (IPv4), attributes.
struct Message(Vec<u8>);

impl Message {
    fn new(command: u16, flags: u16, seq: u32) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        b.extend_from_slice(&(NFNL_SUBSYS_IPSET << 8 | command).to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[AF_INET, 0, 0, 0]);
        Message(b)
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        push_attr(&mut self.0, kind, value);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ipset netlink: {what}"))
}

/// The messages in one datagram: (type, payload after the 16-byte header).
fn messages(datagram: &[u8]) -> io::Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        if len < 16 || len > rest.len() {
            return Err(invalid("bad message length"));
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
        out.push((kind, &rest[16..len]));
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    Ok(out)
}

/// An `NLMSG_ERROR`: an acknowledgement (0) or the kernel's refusal.
fn check_ack(payload: &[u8]) -> io::Result<()> {
    let code = payload
        .get(0..4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .ok_or_else(|| invalid("short error message"))?;
    // `wrapping_neg`: a lying i32::MIN must not overflow.
    match code.wrapping_neg() {
        0 => Ok(()),
        // ipset's own codes (4096 and up) have no errno text.
        c if c >= 4096 => Err(io::Error::other(format!("ipset error {c}"))),
        c => Err(io::Error::from_raw_os_error(c)),
    }
}

/// The attributes of `data`: (type without flags, value).
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes(data[0..2].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(data[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    out
}

/// One listed set (or a further part of a large one): its name and, in
/// `ADT`, its entries.
fn parse_set(payload: &[u8], sets: &mut BTreeMap<String, BTreeSet<Ipv4Net>>) -> io::Result<()> {
    // Past the 4-byte nfgenmsg.
    let attrs = attributes(payload.get(4..).unwrap_or_default());
    let name = attrs
        .iter()
        .find(|(k, _)| *k == IPSET_ATTR_SETNAME)
        .map(|(_, v)| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })
        .ok_or_else(|| invalid("a listed set without a name"))?;
    let members = sets.entry(name).or_default();
    for (_, adt) in attrs.iter().filter(|(k, _)| *k == IPSET_ATTR_ADT) {
        for (_, entry) in attributes(adt)
            .into_iter()
            .filter(|(k, _)| *k == IPSET_ATTR_DATA)
        {
            let entry = attributes(entry);
            let ip = entry
                .iter()
                .find(|(k, _)| *k == IPSET_ATTR_IP)
                .and_then(|(_, ip)| {
                    attributes(ip)
                        .into_iter()
                        .find(|(k, v)| *k == IPSET_ATTR_IPADDR_IPV4 && v.len() == 4)
                })
                .map(|(_, v)| Ipv4Addr::new(v[0], v[1], v[2], v[3]));
            let cidr = entry
                .iter()
                .find(|(k, v)| *k == IPSET_ATTR_CIDR && !v.is_empty())
                .map_or(32, |(_, v)| v[0]);
            if let Some(ip) = ip
                && let Ok(net) = Ipv4Net::new(ip, cidr)
            {
                members.insert(net);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_request_nests_the_address_in_network_order() {
        let r = member_request(IPSET_CMD_ADD, "NIPv4abc", Ipv4Addr::new(192, 168, 1, 11), 3);
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 6 << 8 | 9);
        let attrs = attributes(&r[20..]);
        assert_eq!(attrs[0], (IPSET_ATTR_PROTOCOL, &[7u8][..]));
        assert_eq!(attrs[1], (IPSET_ATTR_SETNAME, &b"NIPv4abc\0"[..]));
        assert_eq!(attrs[2].0, IPSET_ATTR_DATA);
        let ip = attributes(attrs[2].1);
        let address = attributes(ip[0].1);
        assert_eq!(
            address[0],
            (IPSET_ATTR_IPADDR_IPV4, &[192u8, 168, 1, 11][..])
        );
        // The flags the kernel insists on.
        let raw = |b: &[u8]| u16::from_ne_bytes([b[2], b[3]]);
        let data_at = 20 + 8 + 16;
        assert_eq!(raw(&r[data_at..]) & NLA_F_NESTED, NLA_F_NESTED);
        assert_eq!(raw(&r[data_at + 4..]) & NLA_F_NESTED, NLA_F_NESTED);
        assert_eq!(
            raw(&r[data_at + 8..]) & NLA_F_NET_BYTEORDER,
            NLA_F_NET_BYTEORDER
        );
    }

    /// The requests byte for byte, as the `ipset` tool sends them (and as
    /// this module sent them before it was built on netlink-packet-core).
    #[test]
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    fn the_requests_on_the_wire() {
        assert_eq!(list_request(), [
            28, 0, 0, 0, 7, 6, 1, 3, 1, 0, 0, 0, 0, 0, 0, 0, // LIST, REQUEST|DUMP, seq 1
            2, 0, 0, 0,                                      // nfgenmsg: AF_INET
            5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7, padded
        ]);
        assert_eq!(
            member_request(IPSET_CMD_ADD, "NIPv4abc", Ipv4Addr::new(192, 168, 1, 11), 3),
            [
                60, 0, 0, 0, 9, 6, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0, // ADD, REQUEST|ACK, seq 3
                2, 0, 0, 0,                                      // AF_INET
                5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
                13, 0, 2, 0, b'N', b'I', b'P', b'v', b'4', b'a', b'b', b'c', 0, 0, 0, 0, // SETNAME
                16, 0, 7, 128,                                   // DATA, nested
                12, 0, 1, 128,                                   // IP, nested
                8, 0, 1, 64, 192, 168, 1, 11,                    // IPADDR_IPV4, network order
            ]
        );
        assert_eq!(
            member_request(IPSET_CMD_DEL, "NIPv4-x", Ipv4Addr::new(10, 0, 0, 255), 70000),
            [
                56, 0, 0, 0, 10, 6, 5, 0, 112, 17, 1, 0, 0, 0, 0, 0, // DEL, seq 70000
                2, 0, 0, 0,
                5, 0, 1, 0, 7, 0, 0, 0,
                12, 0, 2, 0, b'N', b'I', b'P', b'v', b'4', b'-', b'x', 0, // SETNAME, unpadded
                16, 0, 7, 128, 12, 0, 1, 128, 8, 0, 1, 64, 10, 0, 0, 255,
            ]
        );
    }

    #[test]
    fn listed_entries_become_networks() {
        let entry = |ip: [u8; 4], cidr: Option<u8>| {
            let mut address = Vec::new();
            push_attr(
                &mut address,
                IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
                &ip,
            );
            let mut e = Vec::new();
            push_attr(&mut e, IPSET_ATTR_IP | NLA_F_NESTED, &address);
            if let Some(c) = cidr {
                push_attr(&mut e, IPSET_ATTR_CIDR, &[c]);
            }
            let mut data = Vec::new();
            push_attr(&mut data, IPSET_ATTR_DATA | NLA_F_NESTED, &e);
            data
        };
        let mut adt = entry([10, 0, 0, 1], None);
        adt.extend(entry([10, 1, 0, 0], Some(16)));
        let mut payload = vec![AF_INET, 0, 0, 0];
        push_attr(&mut payload, IPSET_ATTR_SETNAME, b"NIPv4x\0");
        push_attr(&mut payload, IPSET_ATTR_ADT | NLA_F_NESTED, &adt);
        let mut sets = BTreeMap::new();
        parse_set(&payload, &mut sets).unwrap();
        // A second part of the same set adds to it.
        let mut more = vec![AF_INET, 0, 0, 0];
        push_attr(&mut more, IPSET_ATTR_SETNAME, b"NIPv4x\0");
        push_attr(
            &mut more,
            IPSET_ATTR_ADT | NLA_F_NESTED,
            &entry([10, 0, 0, 2], Some(32)),
        );
        parse_set(&more, &mut sets).unwrap();
        let want: BTreeSet<Ipv4Net> = ["10.0.0.1/32", "10.1.0.0/16", "10.0.0.2/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(sets["NIPv4x"], want);
    }

    #[test]
    fn kernel_refusals_are_errors() {
        assert!(check_ack(&0i32.to_ne_bytes()).is_ok());
        assert_eq!(
            check_ack(&(-libc::ENOENT).to_ne_bytes())
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        assert!(check_ack(&(-4097i32).to_ne_bytes()).is_err());
        assert!(check_ack(&[1]).is_err());
        assert!(check_ack(&i32::MIN.to_ne_bytes()).is_err());
    }

    #[test]
    fn a_dump_ends_at_done_and_lists_its_sets() {
        let mut part = vec![AF_INET, 0, 0, 0];
        push_attr(&mut part, IPSET_ATTR_SETNAME, b"NIPv4y\0");
        let mut datagram = header(NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST, &part);
        let mut sets = BTreeMap::new();
        assert!(!read_dump(&datagram, &mut sets).unwrap());
        assert!(sets["NIPv4y"].is_empty());
        datagram.extend(header(NLMSG_DONE, &[0; 4]));
        assert!(read_dump(&datagram, &mut sets).unwrap());
        assert_eq!(
            count_acks(&[header(NLMSG_ERROR, &[0; 4]), header(NLMSG_ERROR, &[0; 4])].concat())
                .unwrap(),
            2
        );
    }

    #[test]
    fn lying_lengths_in_a_datagram_are_errors_not_panics() {
        // A header whose length covers the datagram's end, then a second
        // message's header claiming less than a header.
        let mut datagram = header(NLMSG_ERROR, &[0; 4]);
        datagram.extend_from_slice(&8u32.to_ne_bytes());
        datagram.extend_from_slice(&[0; 12]);
        assert!(count_acks(&datagram).is_err());
        let mut sets = BTreeMap::new();
        assert!(read_dump(&[0xff; 16], &mut sets).is_err());
        assert!(read_dump(&[], &mut sets).is_ok());
    }

    /// A netlink message: 16-byte header of type `kind`, then `payload`,
    /// padded to 4 bytes.
    fn header(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }
}
