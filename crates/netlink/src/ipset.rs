//! IPv4 ipsets over nfnetlink (`NFNL_SUBSYS_IPSET`), as the `ipset` tool
//! speaks it: listing every set of a namespace with its members, and adding
//! or deleting members of an existing set. Creating and destroying sets
//! (rare: a remote group appears or goes) is left to `ipset restore`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{
    DefaultNla, ErrorMessage, NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST, NetlinkPayload,
};

use crate::NetlinkError;
use crate::netns;
use crate::nfnetlink::{self, Body, nlas};

const NFNL_SUBSYS_IPSET: u16 = libc::NFNL_SUBSYS_IPSET as u16;
const IPSET_PROTOCOL: u8 = 7;
/// The longest set name and its NUL.
const IPSET_MAXNAMELEN: usize = 32;
const IPSET_CMD_LIST: u16 = 7;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
// Attributes of a command.
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_ADT: u16 = 8;
/// Required beside `ADT`: the line an error names counts from it.
const IPSET_ATTR_LINENO: u16 = 9;
// Attributes of an entry (inside DATA).
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_CIDR: u16 = 3;
// Attributes of an address (inside IP).
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;

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
    request(IPSET_CMD_LIST, NLM_F_REQUEST | NLM_F_DUMP, 1, &[protocol()])
}

/// Reads one datagram of a list dump into `sets`; `true` when it ends the
/// dump. Public (hidden) for the fuzz target in `fuzz/`: whatever the
/// kernel sends, this must not panic.
#[doc(hidden)]
pub fn read_dump(
    datagram: &[u8],
    sets: &mut BTreeMap<String, BTreeSet<Ipv4Net>>,
) -> io::Result<bool> {
    for message in nfnetlink::messages(datagram)? {
        match message?.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(error) => acknowledged(&error)?,
            NetlinkPayload::InnerMessage(body) => parse_set(&body, sets)?,
            _ => return Err(invalid("neither a set nor the end of the dump")),
        }
    }
    Ok(false)
}

/// How many acknowledgements one datagram of replies to member requests
/// holds; a refusal is an error. Public (hidden) for the fuzz target.
#[doc(hidden)]
pub fn count_acks(datagram: &[u8]) -> io::Result<usize> {
    let mut acknowledgements = 0;
    for message in nfnetlink::messages(datagram)? {
        if let NetlinkPayload::Error(error) = message?.payload {
            acknowledged(&error)?;
            acknowledgements += 1;
        }
    }
    Ok(acknowledgements)
}

/// Adds `add` to and deletes `delete` from set `set` of namespace `name`.
/// Members already there (or already gone) are not an error.
///
/// Many members to a request, as `ipset restore` sends them (an `ADT`
/// list of entries), and one acknowledgement per request: a compute node
/// of a 10,000-instance lab holds a 10,000-member set, which one request
/// per member cost about a quarter more CPU (the wall time is the
/// kernel's: it waits for an RCU grace period each time a set outgrows
/// its hash).
pub fn change_ipset(
    name: &str,
    set: &str,
    add: &[Ipv4Addr],
    delete: &[Ipv4Addr],
) -> Result<(), NetlinkError> {
    if add.is_empty() && delete.is_empty() {
        return Ok(());
    }
    netns::run_in(name, || {
        // The kernel's answer to a name too long, given without asking:
        // netlink-packet-core would not check that the attribute's length
        // fits its 16 bits.
        if set.len() >= IPSET_MAXNAMELEN {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let requests: Vec<Vec<u8>> = [(IPSET_CMD_ADD, add), (IPSET_CMD_DEL, delete)]
            .into_iter()
            .flat_map(|(command, members)| {
                members
                    .chunks(MEMBERS_PER_REQUEST)
                    .map(move |chunk| (command, chunk))
            })
            .enumerate()
            .map(|(seq, (command, members))| members_request(command, set, members, seq as u32 + 1))
            .collect();
        let socket = nfnetlink::socket(nfnetlink::DEADLINE)?;
        let mut buf = vec![0u8; 64 * 1024];
        // One request at a time: its acknowledgement repeats it whole.
        for request in &requests {
            nfnetlink::send(&socket, request)?;
            loop {
                let n = nfnetlink::recv(&socket, &mut buf)?;
                if count_acks(&buf[..n])? > 0 {
                    break;
                }
            }
        }
        Ok(())
    })
}

/// Members in one request: 16 bytes each, so that the request (and its
/// acknowledgement, which repeats it) stays near 16 KB, well inside an
/// attribute's 64 KB and the receive buffer.
const MEMBERS_PER_REQUEST: usize = 1000;

/// Members added to or deleted from a set: `ADT { DATA { IP {
/// IPADDR_IPV4 } } … }`, each address in network byte order (the kernel
/// stops at the first it refuses).
fn members_request(command: u16, set: &str, members: &[Ipv4Addr], seq: u32) -> Vec<u8> {
    let mut name = set.as_bytes().to_vec();
    name.push(0);
    let entries: Vec<DefaultNla> = members
        .iter()
        .map(|ip| {
            let address = DefaultNla::new(
                IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
                ip.octets().to_vec(),
            );
            nested(IPSET_ATTR_DATA, &[nested(IPSET_ATTR_IP, &[address])])
        })
        .collect();
    let attributes = [
        protocol(),
        DefaultNla::new(IPSET_ATTR_SETNAME, name),
        DefaultNla::new(IPSET_ATTR_LINENO, 0u32.to_ne_bytes().to_vec()),
        nested(IPSET_ATTR_ADT, &entries),
    ];
    request(command, NLM_F_REQUEST | NLM_F_ACK, seq, &attributes)
}

/// An ipset request: IPv4, the command in the ipset subsystem.
fn request(command: u16, flags: u16, seq: u32, attributes: &[DefaultNla]) -> Vec<u8> {
    let body = Body {
        message_type: NFNL_SUBSYS_IPSET << 8 | command,
        family: AF_INET,
        attributes: nfnetlink::attributes(attributes),
    };
    nfnetlink::encode(body, flags, seq)
}

/// The protocol version every request starts with.
fn protocol() -> DefaultNla {
    DefaultNla::new(IPSET_ATTR_PROTOCOL, vec![IPSET_PROTOCOL])
}

fn nested(kind: u16, inner: &[DefaultNla]) -> DefaultNla {
    DefaultNla::new(kind | NLA_F_NESTED, nfnetlink::attributes(inner))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ipset netlink: {what}"))
}

/// An `NLMSG_ERROR`: an acknowledgement (0) or the kernel's refusal.
fn acknowledged(error: &ErrorMessage) -> io::Result<()> {
    match nfnetlink::errno(error) {
        0 => Ok(()),
        // ipset's own codes (4096 and up) have no errno text.
        c if c >= 4096 => Err(io::Error::other(format!("ipset error {c}"))),
        c => Err(io::Error::from_raw_os_error(c)),
    }
}

/// One listed set (or a further part of a large one): its name and, in
/// `ADT`, its entries.
fn parse_set(body: &Body, sets: &mut BTreeMap<String, BTreeSet<Ipv4Net>>) -> io::Result<()> {
    let name = nlas(&body.attributes)
        .find(|a| a.kind() == IPSET_ATTR_SETNAME)
        .map(|a| {
            String::from_utf8_lossy(a.value())
                .trim_end_matches('\0')
                .to_string()
        })
        .ok_or_else(|| invalid("a listed set without a name"))?;
    let members = sets.entry(name).or_default();
    for adt in nlas(&body.attributes).filter(|a| a.kind() == IPSET_ATTR_ADT) {
        for data in nlas(adt.value()).filter(|a| a.kind() == IPSET_ATTR_DATA) {
            members.extend(entry(data.value()));
        }
    }
    Ok(())
}

/// A listed entry, `IP { IPADDR_IPV4 }` and `CIDR` (32 when missing), as
/// a network; `None` for an entry of another family or kind.
fn entry(data: &[u8]) -> Option<Ipv4Net> {
    let ip = nlas(data).find(|a| a.kind() == IPSET_ATTR_IP)?;
    let address =
        nlas(ip.value()).find(|a| a.kind() == IPSET_ATTR_IPADDR_IPV4 && a.value_length() == 4)?;
    let octets: [u8; 4] = address.value().try_into().ok()?;
    let cidr = nlas(data)
        .filter(|a| a.kind() == IPSET_ATTR_CIDR)
        .find_map(|a| a.value().first().copied())
        .unwrap_or(32);
    Ipv4Net::new(Ipv4Addr::from(octets), cidr).ok()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP};

    use super::*;

    #[test]
    fn a_members_request_lists_each_address_in_network_order() {
        let members = [Ipv4Addr::new(192, 168, 1, 11), Ipv4Addr::new(10, 0, 0, 1)];
        let r = members_request(IPSET_CMD_ADD, "NIPv4abc", &members, 3);
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 6 << 8 | 9);
        let attrs = attributes(&r[20..]);
        assert_eq!(attrs[0], (IPSET_ATTR_PROTOCOL, &[7u8][..]));
        assert_eq!(attrs[1], (IPSET_ATTR_SETNAME, &b"NIPv4abc\0"[..]));
        assert_eq!(attrs[2], (IPSET_ATTR_LINENO, &[0u8, 0, 0, 0][..]));
        assert_eq!(attrs[3].0, IPSET_ATTR_ADT);
        let entries = attributes(attrs[3].1);
        assert_eq!(entries.len(), 2);
        for (entry, ip) in entries.iter().zip(members) {
            assert_eq!(entry.0, IPSET_ATTR_DATA);
            let address = attributes(attributes(entry.1)[0].1);
            assert_eq!(address[0], (IPSET_ATTR_IPADDR_IPV4, &ip.octets()[..]));
        }
        // The flags the kernel insists on.
        let raw = |b: &[u8]| u16::from_ne_bytes([b[2], b[3]]);
        let adt_at = 20 + 8 + 16 + 8;
        assert_eq!(raw(&r[adt_at..]) & NLA_F_NESTED, NLA_F_NESTED);
        assert_eq!(raw(&r[adt_at + 4..]) & NLA_F_NESTED, NLA_F_NESTED);
        assert_eq!(raw(&r[adt_at + 8..]) & NLA_F_NESTED, NLA_F_NESTED);
        assert_eq!(
            raw(&r[adt_at + 12..]) & NLA_F_NET_BYTEORDER,
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
            members_request(
                IPSET_CMD_ADD,
                "NIPv4abc",
                &[Ipv4Addr::new(192, 168, 1, 11), Ipv4Addr::new(192, 168, 1, 12)],
                3,
            ),
            [
                88, 0, 0, 0, 9, 6, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0, // ADD, REQUEST|ACK, seq 3
                2, 0, 0, 0,                                      // AF_INET
                5, 0, 1, 0, 7, 0, 0, 0,                          // PROTOCOL 7
                13, 0, 2, 0, b'N', b'I', b'P', b'v', b'4', b'a', b'b', b'c', 0, 0, 0, 0, // SETNAME
                8, 0, 9, 0, 0, 0, 0, 0,                          // LINENO 0
                36, 0, 8, 128,                                   // ADT, nested
                16, 0, 7, 128,                                   // DATA, nested
                12, 0, 1, 128,                                   // IP, nested
                8, 0, 1, 64, 192, 168, 1, 11,                    // IPADDR_IPV4, network order
                16, 0, 7, 128, 12, 0, 1, 128, 8, 0, 1, 64, 192, 168, 1, 12,
            ]
        );
        assert_eq!(
            members_request(IPSET_CMD_DEL, "NIPv4-x", &[Ipv4Addr::new(10, 0, 0, 255)], 70000),
            [
                68, 0, 0, 0, 10, 6, 5, 0, 112, 17, 1, 0, 0, 0, 0, 0, // DEL, seq 70000
                2, 0, 0, 0,
                5, 0, 1, 0, 7, 0, 0, 0,
                12, 0, 2, 0, b'N', b'I', b'P', b'v', b'4', b'-', b'x', 0, // SETNAME, unpadded
                8, 0, 9, 0, 0, 0, 0, 0,
                20, 0, 8, 128,
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
        listed(&payload, &mut sets).unwrap();
        // A second part of the same set adds to it.
        let mut more = vec![AF_INET, 0, 0, 0];
        push_attr(&mut more, IPSET_ATTR_SETNAME, b"NIPv4x\0");
        push_attr(
            &mut more,
            IPSET_ATTR_ADT | NLA_F_NESTED,
            &entry([10, 0, 0, 2], Some(32)),
        );
        listed(&more, &mut sets).unwrap();
        let want: BTreeSet<Ipv4Net> = ["10.0.0.1/32", "10.1.0.0/16", "10.0.0.2/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(sets["NIPv4x"], want);
    }

    #[test]
    fn kernel_refusals_are_errors() {
        assert!(ack(&0i32.to_ne_bytes()).is_ok());
        assert_eq!(
            ack(&(-libc::ENOENT).to_ne_bytes())
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        assert!(ack(&(-4097i32).to_ne_bytes()).is_err());
        assert!(ack(&[1]).is_err());
        assert!(ack(&i32::MIN.to_ne_bytes()).is_err());
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
    fn a_malformed_end_or_a_stranger_in_a_dump_is_an_error() {
        // NLMSG_DONE carries an int: 2 bytes are no end (netlink-packet-core
        // reads no bytes as 0, and more as an extended ack).
        let mut sets = BTreeMap::new();
        assert!(read_dump(&header(NLMSG_DONE, &[0; 2]), &mut sets).is_err());
        assert!(count_acks(&header(NLMSG_DONE, &[0; 2])).is_err());
        assert!(read_dump(&header(NLMSG_DONE, &[]), &mut sets).unwrap());
        assert!(read_dump(&header(NLMSG_DONE, &[0; 12]), &mut sets).unwrap());
        // A NOOP is neither a set, whatever it holds, nor the end.
        let mut noop = vec![AF_INET, 0, 0, 0];
        push_attr(&mut noop, IPSET_ATTR_SETNAME, b"NIPv4z\0");
        assert!(read_dump(&header(NLMSG_NOOP, &noop), &mut sets).is_err());
        assert!(sets.is_empty());
        // Among acknowledgements it is ignored, as is a whole NLMSG_DONE.
        let acks = [
            header(NLMSG_NOOP, &noop),
            header(NLMSG_ERROR, &[0; 4]),
            header(NLMSG_DONE, &[0; 4]),
        ];
        assert_eq!(count_acks(&acks.concat()).unwrap(), 1);
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

    /// `payload` (nfgenmsg and attributes) as one message of a list dump.
    fn listed(payload: &[u8], sets: &mut BTreeMap<String, BTreeSet<Ipv4Net>>) -> io::Result<()> {
        let more = read_dump(
            &header(NFNL_SUBSYS_IPSET << 8 | IPSET_CMD_LIST, payload),
            sets,
        )?;
        assert!(!more, "a set is not the end of the dump");
        Ok(())
    }

    /// An `NLMSG_ERROR` with `payload`, read as replies to member requests.
    fn ack(payload: &[u8]) -> io::Result<()> {
        count_acks(&header(NLMSG_ERROR, payload)).map(|n| assert_eq!(n, 1))
    }

    /// An attribute of type `kind` (flags included) and value `value`,
    /// padded to 4 bytes: encoded by hand, a witness independent of
    /// netlink-packet-core.
    fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
        buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    /// The attributes of `data`, (type without flags, value), read by hand.
    fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while data.len() >= 4 {
            let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
            let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
            if len < 4 || len > data.len() {
                break;
            }
            out.push((kind, &data[4..len]));
            data = &data[((len + 3) & !3).min(data.len())..];
        }
        out
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
