//! OXM match fields and the `ofp_match` structure (OpenFlow 1.3.5 §7.2.3).
//!
//! A [`Match`] keeps its fields sorted in one canonical order: OpenFlow
//! basic fields (class `0x8000`) by field number, then every other class.
//! That order does two jobs. Encoding is deterministic, and the spec's
//! field numbers are laid out so that each field's prerequisites (eth_type
//! before ipv4_src, ip_proto before tcp_dst, …) come first, which OVS
//! checks in list order (§7.2.3.6). And comparison is order-independent:
//! a match dumped back from OVS, in whatever order OVS wrote it, equals the
//! match that was sent.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bytes::BufMut;

use crate::consts::OFPVID_PRESENT;
use crate::wire::{DecodeError, EncodeError, Reader, pad_to_8, patch_len};

/// OXM class of the fields the spec defines (§7.2.3.3).
pub const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
/// OXM class whose payload starts with a 32-bit experimenter id.
pub const OFPXMC_EXPERIMENTER: u16 = 0xffff;
/// OXM class `NXM_1`: Nicira's own fields, e.g. `NXM_NX_TUN_ID`.
pub const OFPXMC_NXM_1: u16 = 0x0001;
/// Field number of `NXM_NX_TUN_ID` in class [`OFPXMC_NXM_1`]: the tunnel
/// key under its pre-OpenFlow-1.3 name, 8 bytes, maskable.
pub const NXM_NX_TUN_ID: u8 = 16;
/// `ofp_match.type` of an OXM match, the only kind OpenFlow 1.3 uses.
const OFPMT_OXM: u16 = 1;

/// Field numbers of class [`OFPXMC_OPENFLOW_BASIC`] (§7.2.3.7).
pub mod field {
    pub const IN_PORT: u8 = 0;
    pub const METADATA: u8 = 2;
    pub const ETH_DST: u8 = 3;
    pub const ETH_SRC: u8 = 4;
    pub const ETH_TYPE: u8 = 5;
    pub const VLAN_VID: u8 = 6;
    pub const VLAN_PCP: u8 = 7;
    pub const IP_PROTO: u8 = 10;
    pub const IPV4_SRC: u8 = 11;
    pub const IPV4_DST: u8 = 12;
    pub const TCP_SRC: u8 = 13;
    pub const TCP_DST: u8 = 14;
    pub const UDP_SRC: u8 = 15;
    pub const UDP_DST: u8 = 16;
    pub const ICMPV4_TYPE: u8 = 19;
    pub const ICMPV4_CODE: u8 = 20;
    pub const ARP_OP: u8 = 21;
    pub const ARP_SPA: u8 = 22;
    pub const ARP_TPA: u8 = 23;
    pub const ARP_SHA: u8 = 24;
    pub const ARP_THA: u8 = 25;
    pub const ICMPV6_TYPE: u8 = 29;
    pub const IPV6_ND_TARGET: u8 = 31;
    pub const TUNNEL_ID: u8 = 38;
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`, also the all-ones mask.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl From<[u8; 6]> for MacAddr {
    fn from(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not six colon-separated hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address like fa:16:3e:00:00:01")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// An OXM field this crate has no type for, kept byte for byte so that
/// decoding never fails on fields OVS adds (Nicira registers, conntrack
/// state, IPv6, …) and re-encoding gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawOxm {
    pub class: u16,
    pub field: u8,
    pub has_mask: bool,
    /// Value followed by mask when `has_mask`; for class
    /// [`OFPXMC_EXPERIMENTER`] the first 4 bytes are the experimenter id.
    pub payload: Vec<u8>,
}

/// One OXM TLV. Masks are `Some` only for maskable fields.
///
/// `VlanVid` carries the wire value: [`OFPVID_PRESENT`] or'ed with the VLAN
/// id, or [`crate::OFPVID_NONE`] for "no VLAN header" (§7.2.3.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OxmField {
    InPort(u32),
    EthDst(MacAddr, Option<MacAddr>),
    EthSrc(MacAddr, Option<MacAddr>),
    EthType(u16),
    VlanVid(u16, Option<u16>),
    VlanPcp(u8),
    IpProto(u8),
    Ipv4Src(Ipv4Addr, Option<Ipv4Addr>),
    Ipv4Dst(Ipv4Addr, Option<Ipv4Addr>),
    TcpSrc(u16),
    TcpDst(u16),
    UdpSrc(u16),
    UdpDst(u16),
    Icmpv4Type(u8),
    Icmpv4Code(u8),
    ArpOp(u16),
    ArpSpa(Ipv4Addr, Option<Ipv4Addr>),
    ArpTpa(Ipv4Addr, Option<Ipv4Addr>),
    ArpSha(MacAddr, Option<MacAddr>),
    ArpTha(MacAddr, Option<MacAddr>),
    Icmpv6Type(u8),
    /// The target of an IPv6 neighbour solicitation or advertisement.
    Ipv6NdTarget(Ipv6Addr),
    /// The tunnel key (VXLAN VNI, GRE key): OVS's `tun_id`, 64 bits.
    TunnelId(u64, Option<u64>),
    Raw(RawOxm),
}

/// What identifies a field within a match: no match holds two fields with
/// the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FieldKey {
    /// Basic fields sort first, in field-number (prerequisite) order.
    not_basic: bool,
    class: u16,
    field: u8,
    experimenter: u32,
}

/// A value with an optional mask, as bytes.
struct Encoded {
    field: u8,
    value: Vec<u8>,
    mask: Option<Vec<u8>>,
}

fn mac_mask(value: MacAddr, mask: Option<MacAddr>) -> (Vec<u8>, Option<Vec<u8>>) {
    (value.0.to_vec(), mask.map(|m| m.0.to_vec()))
}

fn ip_mask(value: Ipv4Addr, mask: Option<Ipv4Addr>) -> (Vec<u8>, Option<Vec<u8>>) {
    (value.octets().to_vec(), mask.map(|m| m.octets().to_vec()))
}

impl OxmField {
    /// The OXM class of this field.
    pub fn class(&self) -> u16 {
        match self {
            OxmField::Raw(raw) => raw.class,
            _ => OFPXMC_OPENFLOW_BASIC,
        }
    }

    /// The OXM field number within its class.
    pub fn field(&self) -> u8 {
        match self {
            OxmField::Raw(raw) => raw.field,
            _ => self.encoded().field,
        }
    }

    /// Whether the field carries a mask on the wire.
    pub fn has_mask(&self) -> bool {
        match self {
            OxmField::Raw(raw) => raw.has_mask,
            _ => self.encoded().mask.is_some(),
        }
    }

    fn key(&self) -> FieldKey {
        let class = self.class();
        let experimenter = match self {
            OxmField::Raw(raw) if raw.class == OFPXMC_EXPERIMENTER && raw.payload.len() >= 4 => {
                u32::from_be_bytes([
                    raw.payload[0],
                    raw.payload[1],
                    raw.payload[2],
                    raw.payload[3],
                ])
            }
            _ => 0,
        };
        FieldKey {
            not_basic: class != OFPXMC_OPENFLOW_BASIC,
            class,
            field: self.field(),
            experimenter,
        }
    }

    /// The typed value as wire bytes (not used for `Raw`).
    fn encoded(&self) -> Encoded {
        use OxmField::*;
        let (field, (value, mask)) = match *self {
            InPort(p) => (field::IN_PORT, (p.to_be_bytes().to_vec(), None)),
            EthDst(v, m) => (field::ETH_DST, mac_mask(v, m)),
            EthSrc(v, m) => (field::ETH_SRC, mac_mask(v, m)),
            EthType(t) => (field::ETH_TYPE, (t.to_be_bytes().to_vec(), None)),
            VlanVid(v, m) => (
                field::VLAN_VID,
                (
                    v.to_be_bytes().to_vec(),
                    m.map(|m| m.to_be_bytes().to_vec()),
                ),
            ),
            VlanPcp(p) => (field::VLAN_PCP, (vec![p], None)),
            IpProto(p) => (field::IP_PROTO, (vec![p], None)),
            Ipv4Src(v, m) => (field::IPV4_SRC, ip_mask(v, m)),
            Ipv4Dst(v, m) => (field::IPV4_DST, ip_mask(v, m)),
            TcpSrc(p) => (field::TCP_SRC, (p.to_be_bytes().to_vec(), None)),
            TcpDst(p) => (field::TCP_DST, (p.to_be_bytes().to_vec(), None)),
            UdpSrc(p) => (field::UDP_SRC, (p.to_be_bytes().to_vec(), None)),
            UdpDst(p) => (field::UDP_DST, (p.to_be_bytes().to_vec(), None)),
            Icmpv4Type(t) => (field::ICMPV4_TYPE, (vec![t], None)),
            Icmpv4Code(c) => (field::ICMPV4_CODE, (vec![c], None)),
            ArpOp(op) => (field::ARP_OP, (op.to_be_bytes().to_vec(), None)),
            ArpSpa(v, m) => (field::ARP_SPA, ip_mask(v, m)),
            ArpTpa(v, m) => (field::ARP_TPA, ip_mask(v, m)),
            ArpSha(v, m) => (field::ARP_SHA, mac_mask(v, m)),
            ArpTha(v, m) => (field::ARP_THA, mac_mask(v, m)),
            Icmpv6Type(t) => (field::ICMPV6_TYPE, (vec![t], None)),
            Ipv6NdTarget(a) => (field::IPV6_ND_TARGET, (a.octets().to_vec(), None)),
            TunnelId(v, m) => (
                field::TUNNEL_ID,
                (
                    v.to_be_bytes().to_vec(),
                    m.map(|m| m.to_be_bytes().to_vec()),
                ),
            ),
            Raw(ref raw) => (raw.field, (raw.payload.clone(), None)),
        };
        Encoded { field, value, mask }
    }

    /// Appends the OXM TLV (4-byte header, value, mask).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (class, field, has_mask, payload) = match self {
            OxmField::Raw(raw) => (raw.class, raw.field, raw.has_mask, raw.payload.clone()),
            _ => {
                let enc = self.encoded();
                let has_mask = enc.mask.is_some();
                let mut payload = enc.value;
                payload.extend(enc.mask.unwrap_or_default());
                (OFPXMC_OPENFLOW_BASIC, enc.field, has_mask, payload)
            }
        };
        let len = u8::try_from(payload.len()).map_err(|_| EncodeError {
            what: "oxm field payload",
            len: payload.len(),
            max: usize::from(u8::MAX),
        })?;
        out.put_u16(class);
        out.put_u8((field << 1) | u8::from(has_mask));
        out.put_u8(len);
        out.put_slice(&payload);
        Ok(())
    }

    /// Reads one OXM TLV. Known basic fields must have the spec's length;
    /// anything else is kept as [`RawOxm`].
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<OxmField, DecodeError> {
        let class = r.u16()?;
        let field_and_mask = r.u8()?;
        let len = usize::from(r.u8()?);
        let field = field_and_mask >> 1;
        let has_mask = field_and_mask & 1 == 1;
        let payload = r.bytes(len)?;
        if class != OFPXMC_OPENFLOW_BASIC {
            return Ok(OxmField::Raw(RawOxm {
                class,
                field,
                has_mask,
                payload: payload.to_vec(),
            }));
        }
        // (value size, maskable) per §7.2.3.7, Table 11.
        let shape = match field {
            field::IN_PORT => (4, false),
            field::ETH_DST | field::ETH_SRC | field::ARP_SHA | field::ARP_THA => (6, true),
            field::ETH_TYPE
            | field::TCP_SRC
            | field::TCP_DST
            | field::UDP_SRC
            | field::UDP_DST
            | field::ARP_OP => (2, false),
            field::VLAN_VID => (2, true),
            field::VLAN_PCP
            | field::IP_PROTO
            | field::ICMPV4_TYPE
            | field::ICMPV4_CODE
            | field::ICMPV6_TYPE => (1, false),
            field::IPV6_ND_TARGET => (16, false),
            field::IPV4_SRC | field::IPV4_DST | field::ARP_SPA | field::ARP_TPA => (4, true),
            field::TUNNEL_ID => (8, true),
            _ => {
                return Ok(OxmField::Raw(RawOxm {
                    class,
                    field,
                    has_mask,
                    payload: payload.to_vec(),
                }));
            }
        };
        let (size, maskable) = shape;
        let expected = if has_mask { 2 * size } else { size };
        if (has_mask && !maskable) || len != expected {
            return Err(DecodeError::Invalid {
                what: "oxm field",
                detail: format!(
                    "basic field {field} has length {len}{}, the spec says {size}{}",
                    if has_mask { " with mask" } else { "" },
                    if maskable {
                        " (doubled with mask)"
                    } else {
                        " without mask"
                    }
                ),
            });
        }
        let (value, mask) = payload.split_at(size);
        let mask = has_mask.then_some(mask);
        Ok(typed(field, value, mask))
    }

    /// Applies the mask to the value, drops an all-ones mask (exact match)
    /// and returns `None` for an all-zeros mask (matches everything). OVS
    /// stores and reports fields this way, so normalizing makes a dumped
    /// match compare equal to the one sent.
    pub(crate) fn normalized(self) -> Option<OxmField> {
        fn mac(v: MacAddr, m: Option<MacAddr>) -> Option<(MacAddr, Option<MacAddr>)> {
            match m {
                None => Some((v, None)),
                Some(m) if m == MacAddr::BROADCAST => Some((v, None)),
                Some(m) if m.0 == [0; 6] => None,
                Some(m) => {
                    let mut out = v.0;
                    for (b, mb) in out.iter_mut().zip(m.0) {
                        *b &= mb;
                    }
                    Some((MacAddr(out), Some(m)))
                }
            }
        }
        fn ip(v: Ipv4Addr, m: Option<Ipv4Addr>) -> Option<(Ipv4Addr, Option<Ipv4Addr>)> {
            match m {
                None => Some((v, None)),
                Some(m) if m == Ipv4Addr::BROADCAST => Some((v, None)),
                Some(m) if m.is_unspecified() => None,
                Some(m) => Some((Ipv4Addr::from(v.to_bits() & m.to_bits()), Some(m))),
            }
        }
        use OxmField::*;
        Some(match self {
            EthDst(v, m) => mac(v, m).map(|(v, m)| EthDst(v, m))?,
            EthSrc(v, m) => mac(v, m).map(|(v, m)| EthSrc(v, m))?,
            ArpSha(v, m) => mac(v, m).map(|(v, m)| ArpSha(v, m))?,
            ArpTha(v, m) => mac(v, m).map(|(v, m)| ArpTha(v, m))?,
            Ipv4Src(v, m) => ip(v, m).map(|(v, m)| Ipv4Src(v, m))?,
            Ipv4Dst(v, m) => ip(v, m).map(|(v, m)| Ipv4Dst(v, m))?,
            ArpSpa(v, m) => ip(v, m).map(|(v, m)| ArpSpa(v, m))?,
            ArpTpa(v, m) => ip(v, m).map(|(v, m)| ArpTpa(v, m))?,
            VlanVid(v, m) => match m {
                None => VlanVid(v, None),
                // The field is 13 bits wide: 12 of VLAN id and the present bit.
                Some(m) if m & 0x1fff == 0x1fff => VlanVid(v, None),
                Some(0) => return None,
                Some(m) => VlanVid(v & m, Some(m)),
            },
            TunnelId(v, m) => match m {
                None | Some(u64::MAX) => TunnelId(v, None),
                Some(0) => return None,
                Some(m) => TunnelId(v & m, Some(m)),
            },
            other => other,
        })
    }
}

impl OxmField {
    /// The tunnel key and its mask, in either of the two forms OVS knows
    /// it by: `OXM_OF_TUNNEL_ID` ([`OxmField::TunnelId`], what OVS sends
    /// over OpenFlow 1.3) or `NXM_NX_TUN_ID` (class [`OFPXMC_NXM_1`], field
    /// [`NXM_NX_TUN_ID`], kept as [`RawOxm`] so its bytes survive a round
    /// trip), which an older switch may answer with.
    pub fn tunnel_id(&self) -> Option<(u64, Option<u64>)> {
        match self {
            OxmField::TunnelId(v, m) => Some((*v, *m)),
            OxmField::Raw(raw) if raw.class == OFPXMC_NXM_1 && raw.field == NXM_NX_TUN_ID => {
                let p = &raw.payload;
                match (raw.has_mask, p.len()) {
                    (false, 8) => Some((u64_from(p), None)),
                    (true, 16) => Some((u64_from(&p[..8]), Some(u64_from(&p[8..])))),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn u64_from(b: &[u8]) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    u64::from_be_bytes(out)
}

fn mac_from(b: &[u8]) -> MacAddr {
    let mut out = [0u8; 6];
    out.copy_from_slice(b);
    MacAddr(out)
}

fn ip_from(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn u16_from(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Builds a typed field from slices whose lengths `decode` checked.
fn typed(f: u8, v: &[u8], m: Option<&[u8]>) -> OxmField {
    use OxmField::*;
    match f {
        field::IN_PORT => InPort(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        field::ETH_DST => EthDst(mac_from(v), m.map(mac_from)),
        field::ETH_SRC => EthSrc(mac_from(v), m.map(mac_from)),
        field::ETH_TYPE => EthType(u16_from(v)),
        field::VLAN_VID => VlanVid(u16_from(v), m.map(u16_from)),
        field::VLAN_PCP => VlanPcp(v[0]),
        field::IP_PROTO => IpProto(v[0]),
        field::IPV4_SRC => Ipv4Src(ip_from(v), m.map(ip_from)),
        field::IPV4_DST => Ipv4Dst(ip_from(v), m.map(ip_from)),
        field::TCP_SRC => TcpSrc(u16_from(v)),
        field::TCP_DST => TcpDst(u16_from(v)),
        field::UDP_SRC => UdpSrc(u16_from(v)),
        field::UDP_DST => UdpDst(u16_from(v)),
        field::ICMPV4_TYPE => Icmpv4Type(v[0]),
        field::ICMPV4_CODE => Icmpv4Code(v[0]),
        field::ARP_OP => ArpOp(u16_from(v)),
        field::ARP_SPA => ArpSpa(ip_from(v), m.map(ip_from)),
        field::ARP_TPA => ArpTpa(ip_from(v), m.map(ip_from)),
        field::ARP_SHA => ArpSha(mac_from(v), m.map(mac_from)),
        field::ARP_THA => ArpTha(mac_from(v), m.map(mac_from)),
        field::ICMPV6_TYPE => Icmpv6Type(v[0]),
        field::IPV6_ND_TARGET => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(v);
            Ipv6NdTarget(Ipv6Addr::from(octets))
        }
        field::TUNNEL_ID => TunnelId(u64_from(v), m.map(u64_from)),
        _ => {
            let mut payload = v.to_vec();
            payload.extend(m.unwrap_or_default());
            Raw(RawOxm {
                class: OFPXMC_OPENFLOW_BASIC,
                field: f,
                has_mask: m.is_some(),
                payload,
            })
        }
    }
}

/// The match of a flow: a set of OXM fields, at most one per field type,
/// kept in canonical order (see the module docs). The empty match matches
/// every packet.
///
/// Build with the chained methods, e.g.
/// `Match::new().in_port(2).vlan_vid(Some(101))`. Setting a field twice
/// keeps the last value. No prerequisite is added behind the caller's back:
/// `ipv4_src` without `eth_type(0x0800)` is sent as is, and OVS refuses it
/// with BAD_MATCH/BAD_PREREQ.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Match {
    fields: Vec<OxmField>,
}

impl Match {
    /// The empty match (all packets).
    pub fn new() -> Match {
        Match::default()
    }

    /// The fields in canonical order.
    pub fn fields(&self) -> &[OxmField] {
        &self.fields
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Adds or replaces a field, normalizing its mask (an all-zeros mask
    /// removes the field, since it matches everything).
    pub fn insert(&mut self, field: OxmField) {
        let key = field.key();
        let pos = self.fields.binary_search_by(|f| f.key().cmp(&key));
        match (pos, field.normalized()) {
            (Ok(i), Some(f)) => self.fields[i] = f,
            (Ok(i), None) => {
                self.fields.remove(i);
            }
            (Err(i), Some(f)) => self.fields.insert(i, f),
            (Err(_), None) => {}
        }
    }

    /// Chained form of [`Match::insert`].
    pub fn with(mut self, field: OxmField) -> Match {
        self.insert(field);
        self
    }

    /// The field with this class and number, if the match has it.
    pub fn get(&self, class: u16, field: u8) -> Option<&OxmField> {
        self.fields
            .iter()
            .find(|f| f.class() == class && f.field() == field)
    }

    pub fn in_port(self, port: u32) -> Match {
        self.with(OxmField::InPort(port))
    }
    pub fn eth_dst(self, addr: MacAddr) -> Match {
        self.with(OxmField::EthDst(addr, None))
    }
    pub fn eth_dst_masked(self, addr: MacAddr, mask: MacAddr) -> Match {
        self.with(OxmField::EthDst(addr, Some(mask)))
    }
    pub fn eth_src(self, addr: MacAddr) -> Match {
        self.with(OxmField::EthSrc(addr, None))
    }
    pub fn eth_src_masked(self, addr: MacAddr, mask: MacAddr) -> Match {
        self.with(OxmField::EthSrc(addr, Some(mask)))
    }
    pub fn eth_type(self, eth_type: u16) -> Match {
        self.with(OxmField::EthType(eth_type))
    }
    /// `Some(vid)`: packets tagged with VLAN `vid` (the present bit is
    /// added); `None`: packets without a VLAN header.
    pub fn vlan_vid(self, vid: Option<u16>) -> Match {
        let value = match vid {
            Some(vid) => OFPVID_PRESENT | (vid & 0x0fff),
            None => crate::consts::OFPVID_NONE,
        };
        self.with(OxmField::VlanVid(value, None))
    }
    /// The raw OXM value and mask, e.g. `(0x1000, 0x1000)` for "any VLAN".
    pub fn vlan_vid_masked(self, value: u16, mask: u16) -> Match {
        self.with(OxmField::VlanVid(value, Some(mask)))
    }
    pub fn vlan_pcp(self, pcp: u8) -> Match {
        self.with(OxmField::VlanPcp(pcp))
    }
    pub fn ip_proto(self, proto: u8) -> Match {
        self.with(OxmField::IpProto(proto))
    }
    pub fn ipv4_src(self, addr: Ipv4Addr) -> Match {
        self.with(OxmField::Ipv4Src(addr, None))
    }
    pub fn ipv4_src_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Match {
        self.with(OxmField::Ipv4Src(addr, Some(mask)))
    }
    pub fn ipv4_dst(self, addr: Ipv4Addr) -> Match {
        self.with(OxmField::Ipv4Dst(addr, None))
    }
    pub fn ipv4_dst_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Match {
        self.with(OxmField::Ipv4Dst(addr, Some(mask)))
    }
    pub fn tcp_src(self, port: u16) -> Match {
        self.with(OxmField::TcpSrc(port))
    }
    pub fn tcp_dst(self, port: u16) -> Match {
        self.with(OxmField::TcpDst(port))
    }
    pub fn udp_src(self, port: u16) -> Match {
        self.with(OxmField::UdpSrc(port))
    }
    pub fn udp_dst(self, port: u16) -> Match {
        self.with(OxmField::UdpDst(port))
    }
    pub fn icmpv4_type(self, icmp_type: u8) -> Match {
        self.with(OxmField::Icmpv4Type(icmp_type))
    }
    pub fn icmpv4_code(self, code: u8) -> Match {
        self.with(OxmField::Icmpv4Code(code))
    }
    pub fn icmpv6_type(self, icmp_type: u8) -> Match {
        self.with(OxmField::Icmpv6Type(icmp_type))
    }
    pub fn ipv6_nd_target(self, target: Ipv6Addr) -> Match {
        self.with(OxmField::Ipv6NdTarget(target))
    }
    pub fn arp_op(self, op: u16) -> Match {
        self.with(OxmField::ArpOp(op))
    }
    pub fn arp_spa(self, addr: Ipv4Addr) -> Match {
        self.with(OxmField::ArpSpa(addr, None))
    }
    pub fn arp_spa_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Match {
        self.with(OxmField::ArpSpa(addr, Some(mask)))
    }
    pub fn arp_tpa(self, addr: Ipv4Addr) -> Match {
        self.with(OxmField::ArpTpa(addr, None))
    }
    pub fn arp_tpa_masked(self, addr: Ipv4Addr, mask: Ipv4Addr) -> Match {
        self.with(OxmField::ArpTpa(addr, Some(mask)))
    }
    pub fn arp_sha(self, addr: MacAddr) -> Match {
        self.with(OxmField::ArpSha(addr, None))
    }
    pub fn arp_sha_masked(self, addr: MacAddr, mask: MacAddr) -> Match {
        self.with(OxmField::ArpSha(addr, Some(mask)))
    }
    pub fn arp_tha(self, addr: MacAddr) -> Match {
        self.with(OxmField::ArpTha(addr, None))
    }
    pub fn arp_tha_masked(self, addr: MacAddr, mask: MacAddr) -> Match {
        self.with(OxmField::ArpTha(addr, Some(mask)))
    }
    /// The tunnel key a packet arrived with (`tun_id` in ovs-ofctl).
    pub fn tunnel_id(self, tun_id: u64) -> Match {
        self.with(OxmField::TunnelId(tun_id, None))
    }
    pub fn tunnel_id_masked(self, tun_id: u64, mask: u64) -> Match {
        self.with(OxmField::TunnelId(tun_id, Some(mask)))
    }

    /// Appends `ofp_match` (§7.2.3.1): type, length without padding, the
    /// OXM fields, then zeros up to a multiple of 8.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u16(OFPMT_OXM);
        out.put_u16(0);
        for f in &self.fields {
            f.encode(out)?;
        }
        let len = out.len() - start;
        patch_len(out, start + 2, "ofp_match", len)?;
        pad_to_8(out, start);
        Ok(())
    }

    /// Reads `ofp_match` including its padding.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Match, DecodeError> {
        let match_type = r.u16()?;
        if match_type != OFPMT_OXM {
            return Err(r.invalid(format!(
                "match type {match_type} is not OXM (1), the only type OpenFlow 1.3 has"
            )));
        }
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(r.bad_length(len));
        }
        let mut fields_r = r.sub(len - 4, "ofp_match")?;
        r.skip(crate::wire::round8(len) - len)?;
        let mut m = Match::new();
        while !fields_r.is_empty() {
            let f = OxmField::decode(&mut fields_r)?;
            let key = f.key();
            if m.fields.iter().any(|have| have.key() == key) {
                return Err(
                    fields_r.invalid(format!("field {}:{} appears twice", key.class, key.field))
                );
            }
            m.insert(f);
        }
        Ok(m)
    }
}

impl FromIterator<OxmField> for Match {
    fn from_iter<T: IntoIterator<Item = OxmField>>(iter: T) -> Self {
        let mut m = Match::new();
        for f in iter {
            m.insert(f);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: &Match) -> Match {
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        assert_eq!(out.len() % 8, 0, "ofp_match is padded to 8");
        let mut r = Reader::new(&out, "test");
        let back = Match::decode(&mut r).expect("decode");
        assert!(r.is_empty(), "padding consumed");
        back
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("valid mac")
    }

    #[test]
    fn every_typed_field_round_trips() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let mask = Ipv4Addr::new(255, 255, 255, 0);
        let a = mac("fa:16:3e:00:00:01");
        let mm = mac("ff:ff:ff:00:00:00");
        let fields = vec![
            OxmField::InPort(7),
            OxmField::EthDst(a, None),
            OxmField::EthDst(mac("fa:16:3e:00:00:00"), Some(mm)),
            OxmField::EthSrc(a, None),
            OxmField::EthSrc(mac("fa:16:3e:00:00:00"), Some(mm)),
            OxmField::EthType(0x0800),
            OxmField::VlanVid(0x1065, None),
            OxmField::VlanVid(0x1000, Some(0x1000)),
            OxmField::VlanVid(0, None),
            OxmField::VlanPcp(3),
            OxmField::IpProto(6),
            OxmField::Ipv4Src(ip, None),
            OxmField::Ipv4Src(Ipv4Addr::new(10, 0, 0, 0), Some(mask)),
            OxmField::Ipv4Dst(ip, None),
            OxmField::Ipv4Dst(Ipv4Addr::new(10, 0, 0, 0), Some(mask)),
            OxmField::TcpSrc(1234),
            OxmField::TcpDst(80),
            OxmField::UdpSrc(68),
            OxmField::UdpDst(67),
            OxmField::Icmpv4Type(8),
            OxmField::Icmpv4Code(0),
            OxmField::ArpOp(1),
            OxmField::ArpSpa(ip, None),
            OxmField::ArpSpa(Ipv4Addr::new(10, 0, 0, 0), Some(mask)),
            OxmField::ArpTpa(ip, None),
            OxmField::ArpTpa(Ipv4Addr::new(10, 0, 0, 0), Some(mask)),
            OxmField::ArpSha(a, None),
            OxmField::ArpSha(mac("fa:16:3e:00:00:00"), Some(mm)),
            OxmField::ArpTha(a, None),
            OxmField::ArpTha(mac("fa:16:3e:00:00:00"), Some(mm)),
            OxmField::TunnelId(0x64, None),
            OxmField::TunnelId(0x60, Some(0xf0)),
            OxmField::Raw(RawOxm {
                class: OFPXMC_OPENFLOW_BASIC,
                field: 26,
                has_mask: false,
                payload: vec![0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            }),
            OxmField::Raw(RawOxm {
                class: 0x0001,
                field: 0,
                has_mask: true,
                payload: vec![0, 0, 0, 5, 0, 0, 0, 0xff],
            }),
            OxmField::Raw(RawOxm {
                class: OFPXMC_EXPERIMENTER,
                field: 3,
                has_mask: false,
                payload: vec![0, 0, 0x23, 0x20, 1, 2],
            }),
        ];
        for f in fields {
            let m = Match::new().with(f.clone());
            assert_eq!(m.fields(), std::slice::from_ref(&f), "kept as given: {f:?}");
            assert_eq!(round_trip(&m), m, "{f:?}");
        }
    }

    #[test]
    fn known_bytes_of_in_port_and_vlan() {
        let m = Match::new().vlan_vid(Some(1)).in_port(2);
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        assert_eq!(
            out,
            [
                0x00, 0x01, 0x00, 0x12, // OXM match, length 4 + 8 + 6
                0x80, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02, // in_port=2
                0x80, 0x00, 0x0c, 0x02, 0x10, 0x01, // vlan_vid=0x1001
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // pad to 24
            ]
        );
    }

    /// As OVS 3.1 sends `tun_id=0x64` in an OpenFlow 1.3 flow stats reply
    /// (captured from a dump): `OXM_OF_TUNNEL_ID`, not `NXM_NX_TUN_ID`.
    #[test]
    fn known_bytes_of_tunnel_id() {
        let m = Match::new().tunnel_id(0x64);
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        let bytes = [
            0x00, 0x01, 0x00, 0x10, // OXM match, length 4 + 12
            0x80, 0x00, 0x4c, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x64, // tunnel_id=0x64
        ];
        assert_eq!(out, bytes);
        assert_eq!(Match::decode(&mut Reader::new(&bytes, "t")), Ok(m.clone()));
        assert_eq!(m.fields()[0].tunnel_id(), Some((0x64, None)));
    }

    #[test]
    fn nicira_tun_id_is_kept_raw_and_still_read_as_the_tunnel_key() {
        let bytes = [
            0x00, 0x01, 0x00, 0x18, // OXM match, length 4 + 20
            0x00, 0x01, 0x21, 0x10, // NXM_NX_TUN_ID_W
            0, 0, 0, 0, 0, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0xff,
        ];
        let m = Match::decode(&mut Reader::new(&bytes, "t")).expect("decode");
        assert!(matches!(m.fields(), [OxmField::Raw(_)]));
        assert_eq!(m.fields()[0].tunnel_id(), Some((0x64, Some(0xff))));
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        assert_eq!(out, bytes, "re-encoded as it came");
        // The same class and field with a payload of the wrong size is not
        // a tunnel key.
        let odd = OxmField::Raw(RawOxm {
            class: OFPXMC_NXM_1,
            field: NXM_NX_TUN_ID,
            has_mask: false,
            payload: vec![0; 4],
        });
        assert_eq!(odd.tunnel_id(), None);
    }

    #[test]
    fn empty_match_is_eight_bytes() {
        let mut out = Vec::new();
        Match::new().encode(&mut out).expect("encode");
        assert_eq!(out, [0, 1, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn order_of_insertion_does_not_matter() {
        let a = Match::new()
            .tcp_dst(80)
            .ip_proto(6)
            .eth_type(0x0800)
            .in_port(1);
        let b = Match::new()
            .in_port(1)
            .eth_type(0x0800)
            .ip_proto(6)
            .tcp_dst(80);
        assert_eq!(a, b);
        let kinds: Vec<u8> = a.fields().iter().map(OxmField::field).collect();
        assert_eq!(kinds, [0, 5, 10, 14], "prerequisites come first");
    }

    #[test]
    fn decoding_accepts_any_order_and_rejects_duplicates() {
        // tcp_dst=80 before eth_type: OVS may order fields its own way.
        let bytes = [
            0x00, 0x01, 0x00, 0x10, 0x80, 0x00, 0x1c, 0x02, 0x00, 0x50, 0x80, 0x00, 0x0a, 0x02,
            0x08, 0x00,
        ];
        let m = Match::decode(&mut Reader::new(&bytes, "t")).expect("decode");
        assert_eq!(m, Match::new().eth_type(0x0800).tcp_dst(80));

        let dup = [
            0x00, 0x01, 0x00, 0x10, 0x80, 0x00, 0x0a, 0x02, 0x08, 0x00, 0x80, 0x00, 0x0a, 0x02,
            0x08, 0x06,
        ];
        let err = Match::decode(&mut Reader::new(&dup, "t")).expect_err("duplicate");
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn masks_are_normalized_like_ovs_does() {
        let full = Match::new().ipv4_src_masked(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(255, 255, 255, 255),
        );
        assert_eq!(full, Match::new().ipv4_src(Ipv4Addr::new(10, 0, 0, 1)));
        let net = Match::new()
            .ipv4_dst_masked(Ipv4Addr::new(10, 0, 0, 77), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            net.fields(),
            [OxmField::Ipv4Dst(
                Ipv4Addr::new(10, 0, 0, 0),
                Some(Ipv4Addr::new(255, 255, 255, 0))
            )]
        );
        assert!(
            Match::new()
                .eth_dst_masked(MacAddr([1; 6]), MacAddr([0; 6]))
                .is_empty()
        );
        assert_eq!(
            Match::new().vlan_vid_masked(0x1001, 0x1fff),
            Match::new().vlan_vid(Some(1))
        );
        assert_eq!(
            Match::new().tunnel_id_masked(0x64, u64::MAX),
            Match::new().tunnel_id(0x64)
        );
        assert!(Match::new().tunnel_id_masked(0x64, 0).is_empty());
        assert_eq!(
            Match::new().tunnel_id_masked(0x1ff, 0xff).fields(),
            [OxmField::TunnelId(0xff, Some(0xff))]
        );
    }

    #[test]
    fn vlan_builder_sets_present_bit() {
        assert_eq!(
            Match::new().vlan_vid(Some(101)).fields(),
            [OxmField::VlanVid(0x1065, None)]
        );
        assert_eq!(
            Match::new().vlan_vid(None).fields(),
            [OxmField::VlanVid(0, None)]
        );
    }

    #[test]
    fn wrong_length_of_known_field_is_an_error() {
        // in_port with 2 bytes of payload.
        let bytes = [
            0x00, 0x01, 0x00, 0x0a, 0x80, 0x00, 0x00, 0x02, 0, 2, 0, 0, 0, 0, 0, 0,
        ];
        assert!(Match::decode(&mut Reader::new(&bytes, "t")).is_err());
        // truncated match.
        assert!(Match::decode(&mut Reader::new(&bytes[..9], "t")).is_err());
    }

    #[test]
    fn mac_parse_and_display() {
        let m = mac("FA:16:3e:0:1:ff");
        assert_eq!(m.to_string(), "fa:16:3e:00:01:ff");
        assert!("fa:16:3e:00:01".parse::<MacAddr>().is_err());
        assert!("fa:16:3e:00:01:02:03".parse::<MacAddr>().is_err());
        assert!("fa:16:3e:00:01:zz".parse::<MacAddr>().is_err());
    }
}
