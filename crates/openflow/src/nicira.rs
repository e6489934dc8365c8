//! OVS's own (Nicira) actions that Neutron's br-tun needs, typed:
//! `learn` (NXAST_LEARN), `move` (NXAST_REG_MOVE) and `load`
//! (NXAST_REG_LOAD).
//!
//! On the wire they stay [`Action::Experimenter`], like every Nicira
//! action: decoding a flow never depends on understanding them, and bytes
//! this module does not understand survive a round trip. The typed forms
//! are views, built with [`Action::learn`], [`Action::reg_move`],
//! [`Action::reg_load`] and read with [`Action::as_learn`],
//! [`Action::as_reg_move`], [`Action::as_reg_load`], the way
//! [`Action::resubmit_table`] and [`Action::as_resubmit`] work. A view
//! that does not fit (a truncated action, reserved bits set, a field named
//! by an 8-byte experimenter header) is `None`, never a panic.
//!
//! The layouts are OVS's (`lib/ofp-actions.c`, `lib/learn.c`). Fields are
//! named by NXM headers, which OVS writes in these actions whatever the
//! OpenFlow version: `NXM_OF_ETH_SRC`, not `OXM_OF_ETH_SRC`.

use bytes::BufMut;

use crate::action::Action;
use crate::consts::NX_VENDOR_ID;
use crate::wire::Reader;

/// Nicira subtype of `move:` (OVS `NXAST_REG_MOVE`).
pub const NXAST_REG_MOVE: u16 = 6;
/// Nicira subtype of `load:` (OVS `NXAST_REG_LOAD`).
pub const NXAST_REG_LOAD: u16 = 7;
/// Nicira subtype of `learn(…)` (OVS `NXAST_LEARN`).
pub const NXAST_LEARN: u16 = 16;

/// Learn flag: the learned flow sends flow_removed when it expires.
pub const NX_LEARN_F_SEND_FLOW_REM: u16 = 1 << 0;
/// Learn flag: the learned flows go when the learning flow goes.
pub const NX_LEARN_F_DELETE_LEARNED: u16 = 1 << 1;

/// A flow_mod_spec's `n_bits`: the low 10 bits of its 16-bit header.
const LEARN_N_BITS_MASK: u16 = 0x03ff;
const LEARN_SRC_IMMEDIATE: u16 = 1 << 13;
const LEARN_DST_LOAD: u16 = 1 << 11;
const LEARN_DST_OUTPUT: u16 = 2 << 11;
/// Bits of the spec header that are neither n_bits, src nor dst.
const LEARN_RESERVED: u16 = 0xc400;
const LEARN_DST_MASK: u16 = 3 << 11;

/// A field as Nicira actions name it: an NXM header with `hasmask` clear
/// (class, field number, length of the value in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NxmField {
    pub class: u16,
    pub field: u8,
    pub len: u8,
}

const fn nxm(class: u16, field: u8, len: u8) -> NxmField {
    NxmField { class, field, len }
}

impl NxmField {
    pub const IN_PORT: NxmField = nxm(0x0000, 0, 2);
    pub const ETH_DST: NxmField = nxm(0x0000, 1, 6);
    pub const ETH_SRC: NxmField = nxm(0x0000, 2, 6);
    /// The whole 802.1Q TCI: PCP, CFI (set when tagged) and VLAN id.
    pub const VLAN_TCI: NxmField = nxm(0x0000, 4, 2);
    pub const ARP_OP: NxmField = nxm(0x0000, 15, 2);
    pub const ARP_SPA: NxmField = nxm(0x0000, 16, 4);
    pub const ARP_TPA: NxmField = nxm(0x0000, 17, 4);
    pub const TUN_ID: NxmField = nxm(0x0001, 16, 8);
    pub const ARP_SHA: NxmField = nxm(0x0001, 17, 6);
    pub const ARP_THA: NxmField = nxm(0x0001, 18, 6);

    /// The 32-bit header: class, field, hasmask = 0, length.
    pub fn header(self) -> u32 {
        u32::from(self.class) << 16 | u32::from(self.field) << 9 | u32::from(self.len)
    }

    /// The field a 32-bit header names; `None` for a masked header and
    /// for the experimenter class, whose headers are 8 bytes long.
    pub fn from_header(header: u32) -> Option<NxmField> {
        let class = (header >> 16) as u16;
        let has_mask = header & 0x100 != 0;
        (class != crate::oxm::OFPXMC_EXPERIMENTER && !has_mask).then_some(NxmField {
            class,
            field: ((header >> 9) & 0x7f) as u8,
            len: header as u8,
        })
    }

    /// Width in bits; every field named here uses all of its bytes.
    pub fn bits(self) -> u16 {
        u16::from(self.len) * 8
    }

    /// ovs-ofctl's name, e.g. `NXM_OF_ETH_SRC`, for the fields above.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            NxmField::IN_PORT => "NXM_OF_IN_PORT",
            NxmField::ETH_DST => "NXM_OF_ETH_DST",
            NxmField::ETH_SRC => "NXM_OF_ETH_SRC",
            NxmField::VLAN_TCI => "NXM_OF_VLAN_TCI",
            NxmField::ARP_OP => "NXM_OF_ARP_OP",
            NxmField::ARP_SPA => "NXM_OF_ARP_SPA",
            NxmField::ARP_TPA => "NXM_OF_ARP_TPA",
            NxmField::TUN_ID => "NXM_NX_TUN_ID",
            NxmField::ARP_SHA => "NXM_NX_ARP_SHA",
            NxmField::ARP_THA => "NXM_NX_ARP_THA",
            _ => return None,
        })
    }

    fn read(r: &mut Reader<'_>) -> Option<NxmField> {
        NxmField::from_header(r.u32().ok()?)
    }
}

/// Bits `ofs .. ofs + n_bits` of a field: `NXM_OF_VLAN_TCI[0..11]` in
/// ovs-ofctl, `NXM_OF_ETH_SRC[]` for all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subfield {
    pub field: NxmField,
    pub ofs: u16,
    pub n_bits: u16,
}

impl Subfield {
    /// All bits of `field`.
    pub fn whole(field: NxmField) -> Subfield {
        Subfield {
            field,
            ofs: 0,
            n_bits: field.bits(),
        }
    }

    /// Whether this is all of its field (`[]` in ovs-ofctl).
    pub fn is_whole(&self) -> bool {
        self.ofs == 0 && self.n_bits == self.field.bits()
    }
}

/// `move:<src>-><dst>`: copy `n_bits` bits between two fields
/// (NXAST_REG_MOVE, 24 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegMove {
    pub n_bits: u16,
    pub src: NxmField,
    pub src_ofs: u16,
    pub dst: NxmField,
    pub dst_ofs: u16,
}

impl RegMove {
    /// Copies all of `src` into all of `dst`; `None` when their widths
    /// differ, which OVS would refuse (`move:NXM_OF_ETH_SRC[]->NXM_OF_ARP_SPA[]`).
    pub fn whole(src: NxmField, dst: NxmField) -> Option<RegMove> {
        (src.bits() == dst.bits()).then_some(RegMove {
            n_bits: src.bits(),
            src,
            src_ofs: 0,
            dst,
            dst_ofs: 0,
        })
    }

    pub fn src(&self) -> Subfield {
        Subfield {
            field: self.src,
            ofs: self.src_ofs,
            n_bits: self.n_bits,
        }
    }

    pub fn dst(&self) -> Subfield {
        Subfield {
            field: self.dst,
            ofs: self.dst_ofs,
            n_bits: self.n_bits,
        }
    }
}

/// `load:<value>-><dst>`: write a constant of up to 64 bits into a
/// subfield (NXAST_REG_LOAD, 24 bytes). OVS itself writes the actions of
/// a learned flow this way (`load:0x64->NXM_NX_TUN_ID[]`); over OpenFlow
/// 1.3 a whole-field load is better written as set_field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegLoad {
    /// `n_bits` from 1 to 64, `ofs` below 1024: the wire packs both in 16
    /// bits as `ofs << 6 | (n_bits - 1)`.
    pub dst: Subfield,
    pub value: u64,
}

/// Where a learn spec's bits come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// Bits `ofs ..` of a field of the packet being learned from.
    Field { field: NxmField, ofs: u16 },
    /// A constant, big-endian, in `(n_bits + 15) / 16 * 2` bytes: its
    /// `n_bits` least significant bits are used. A shorter value is
    /// zero-extended on the wire, a longer one loses its leading bytes.
    Immediate(Vec<u8>),
}

/// What a learn spec does with its bits in the learned flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LearnDst {
    /// Match bits `ofs ..` of `field` on them.
    Match { field: NxmField, ofs: u16 },
    /// Load them into bits `ofs ..` of `field` (a `load:` action).
    Load { field: NxmField, ofs: u16 },
    /// Output to the port they number; the source must be a field.
    Output,
}

/// One flow_mod_spec of a learn action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LearnSpec {
    /// At most 1023: 10 bits on the wire, and no field is wider than 992.
    pub n_bits: u16,
    pub src: LearnSrc,
    pub dst: LearnDst,
}

impl LearnSpec {
    /// The source as a subfield, when it is a field.
    pub fn src_subfield(&self) -> Option<Subfield> {
        match self.src {
            LearnSrc::Field { field, ofs } => Some(Subfield {
                field,
                ofs,
                n_bits: self.n_bits,
            }),
            LearnSrc::Immediate(_) => None,
        }
    }

    /// The destination as a subfield, unless it is an output.
    pub fn dst_subfield(&self) -> Option<Subfield> {
        match self.dst {
            LearnDst::Match { field, ofs } | LearnDst::Load { field, ofs } => Some(Subfield {
                field,
                ofs,
                n_bits: self.n_bits,
            }),
            LearnDst::Output => None,
        }
    }

    /// Bytes an immediate source takes on the wire.
    fn immediate_len(n_bits: u16) -> usize {
        usize::from(n_bits).div_ceil(16) * 2
    }
}

/// `learn(…)`: add or refresh a flow built from the packet (NXAST_LEARN).
/// The learned flow gets `cookie`, `priority`, the timeouts and `table_id`
/// from here; OVS gives it no mark of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Learn {
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub cookie: u64,
    /// `NX_LEARN_F_*` bits.
    pub flags: u16,
    pub table_id: u8,
    pub fin_idle_timeout: u16,
    pub fin_hard_timeout: u16,
    pub specs: Vec<LearnSpec>,
}

/// Experimenter data: subtype, body, then zeros so that the whole action
/// (8-byte header included) is a multiple of 8, as OVS pads it; that way
/// the helper's action equals the one decoded from OVS's bytes.
fn nicira(subtype: u16, body: impl FnOnce(&mut Vec<u8>)) -> Action {
    let mut data = Vec::with_capacity(24);
    data.put_u16(subtype);
    body(&mut data);
    let total = 8 + data.len();
    data.put_bytes(0, total.div_ceil(8) * 8 - total);
    Action::Experimenter {
        experimenter: NX_VENDOR_ID,
        data,
    }
}

/// A reader over the body of a Nicira action of this subtype.
fn nicira_body(action: &Action, subtype: u16) -> Option<Reader<'_>> {
    match action {
        Action::Experimenter { experimenter, data } if *experimenter == NX_VENDOR_ID => {
            let mut r = Reader::new(data, "nicira action");
            (r.u16().ok()? == subtype).then_some(r)
        }
        _ => None,
    }
}

/// Whether the rest is padding only.
fn only_zeros(r: &mut Reader<'_>) -> bool {
    r.rest().iter().all(|b| *b == 0)
}

impl Action {
    /// `move:` as OVS writes it over OpenFlow 1.0 to 1.4 (NXAST_REG_MOVE).
    pub fn reg_move(m: &RegMove) -> Action {
        nicira(NXAST_REG_MOVE, |d| {
            d.put_u16(m.n_bits);
            d.put_u16(m.src_ofs);
            d.put_u16(m.dst_ofs);
            d.put_u32(m.src.header());
            d.put_u32(m.dst.header());
        })
    }

    /// The `move:` this is, if it is one with 4-byte field headers.
    pub fn as_reg_move(&self) -> Option<RegMove> {
        let mut r = nicira_body(self, NXAST_REG_MOVE)?;
        let n_bits = r.u16().ok()?;
        let src_ofs = r.u16().ok()?;
        let dst_ofs = r.u16().ok()?;
        let src = NxmField::read(&mut r)?;
        let dst = NxmField::read(&mut r)?;
        only_zeros(&mut r).then_some(RegMove {
            n_bits,
            src,
            src_ofs,
            dst,
            dst_ofs,
        })
    }

    /// `load:` (NXAST_REG_LOAD). `n_bits` outside 1..=64 or `ofs` of
    /// 1024 and more do not fit the wire and are cut to it.
    pub fn reg_load(l: &RegLoad) -> Action {
        nicira(NXAST_REG_LOAD, |d| {
            d.put_u16(l.dst.ofs << 6 | (l.dst.n_bits.wrapping_sub(1) & 0x3f));
            d.put_u32(l.dst.field.header());
            d.put_u64(l.value);
        })
    }

    /// The `load:` this is, if it is one.
    pub fn as_reg_load(&self) -> Option<RegLoad> {
        let mut r = nicira_body(self, NXAST_REG_LOAD)?;
        let ofs_nbits = r.u16().ok()?;
        let field = NxmField::read(&mut r)?;
        let value = r.u64().ok()?;
        only_zeros(&mut r).then_some(RegLoad {
            dst: Subfield {
                field,
                ofs: ofs_nbits >> 6,
                n_bits: (ofs_nbits & 0x3f) + 1,
            },
            value,
        })
    }

    /// `learn(…)` (NXAST_LEARN): the 24-byte header after the
    /// experimenter id, the flow_mod_specs, zeros to a multiple of 8.
    pub fn learn(l: &Learn) -> Action {
        nicira(NXAST_LEARN, |d| {
            d.put_u16(l.idle_timeout);
            d.put_u16(l.hard_timeout);
            d.put_u16(l.priority);
            d.put_u64(l.cookie);
            d.put_u16(l.flags);
            d.put_u8(l.table_id);
            d.put_u8(0);
            d.put_u16(l.fin_idle_timeout);
            d.put_u16(l.fin_hard_timeout);
            for spec in &l.specs {
                let n_bits = spec.n_bits & LEARN_N_BITS_MASK;
                let src = match spec.src {
                    LearnSrc::Field { .. } => 0,
                    LearnSrc::Immediate(_) => LEARN_SRC_IMMEDIATE,
                };
                let dst = match spec.dst {
                    LearnDst::Match { .. } => 0,
                    LearnDst::Load { .. } => LEARN_DST_LOAD,
                    LearnDst::Output => LEARN_DST_OUTPUT,
                };
                d.put_u16(n_bits | src | dst);
                match &spec.src {
                    LearnSrc::Field { field, ofs } => {
                        d.put_u32(field.header());
                        d.put_u16(*ofs);
                    }
                    LearnSrc::Immediate(value) => {
                        let len = LearnSpec::immediate_len(n_bits);
                        let keep = &value[value.len().saturating_sub(len)..];
                        d.put_bytes(0, len - keep.len());
                        d.put_slice(keep);
                    }
                }
                if let LearnDst::Match { field, ofs } | LearnDst::Load { field, ofs } = spec.dst {
                    d.put_u32(field.header());
                    d.put_u16(ofs);
                }
            }
        })
    }

    /// The `learn(…)` this is, if it is an NXAST_LEARN whose specs this
    /// crate can name. Specs end at the end of the action or at a zero
    /// header, after which only padding may follow.
    pub fn as_learn(&self) -> Option<Learn> {
        let mut r = nicira_body(self, NXAST_LEARN)?;
        let idle_timeout = r.u16().ok()?;
        let hard_timeout = r.u16().ok()?;
        let priority = r.u16().ok()?;
        let cookie = r.u64().ok()?;
        let flags = r.u16().ok()?;
        let table_id = r.u8().ok()?;
        if r.u8().ok()? != 0 {
            return None;
        }
        let fin_idle_timeout = r.u16().ok()?;
        let fin_hard_timeout = r.u16().ok()?;
        let mut specs = Vec::new();
        // A lone trailing byte is padding too short to be a header.
        while r.remaining() >= 2 {
            let header = r.u16().ok()?;
            if header == 0 {
                break;
            }
            if header & LEARN_RESERVED != 0 {
                return None;
            }
            let n_bits = header & LEARN_N_BITS_MASK;
            let src = if header & LEARN_SRC_IMMEDIATE != 0 {
                let len = LearnSpec::immediate_len(n_bits);
                LearnSrc::Immediate(r.bytes(len).ok()?.to_vec())
            } else {
                let field = NxmField::read(&mut r)?;
                LearnSrc::Field {
                    field,
                    ofs: r.u16().ok()?,
                }
            };
            let dst = match header & LEARN_DST_MASK {
                0 | LEARN_DST_LOAD => {
                    let field = NxmField::read(&mut r)?;
                    let ofs = r.u16().ok()?;
                    if header & LEARN_DST_MASK == 0 {
                        LearnDst::Match { field, ofs }
                    } else {
                        LearnDst::Load { field, ofs }
                    }
                }
                LEARN_DST_OUTPUT if matches!(src, LearnSrc::Field { .. }) => LearnDst::Output,
                _ => return None,
            };
            specs.push(LearnSpec { n_bits, src, dst });
        }
        only_zeros(&mut r).then_some(Learn {
            idle_timeout,
            hard_timeout,
            priority,
            cookie,
            flags,
            table_id,
            fin_idle_timeout,
            fin_hard_timeout,
            specs,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Neutron Liberty's br-tun table 10 (`br_tun.py`):
    /// `learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],
    /// NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],
    /// load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[])`.
    pub(crate) fn liberty_learn() -> Learn {
        Learn {
            idle_timeout: 0,
            hard_timeout: 300,
            priority: 1,
            cookie: 0,
            flags: 0,
            table_id: 20,
            fin_idle_timeout: 0,
            fin_hard_timeout: 0,
            specs: vec![
                LearnSpec {
                    n_bits: 12,
                    src: LearnSrc::Field {
                        field: NxmField::VLAN_TCI,
                        ofs: 0,
                    },
                    dst: LearnDst::Match {
                        field: NxmField::VLAN_TCI,
                        ofs: 0,
                    },
                },
                LearnSpec {
                    n_bits: 48,
                    src: LearnSrc::Field {
                        field: NxmField::ETH_SRC,
                        ofs: 0,
                    },
                    dst: LearnDst::Match {
                        field: NxmField::ETH_DST,
                        ofs: 0,
                    },
                },
                LearnSpec {
                    n_bits: 16,
                    src: LearnSrc::Immediate(vec![0, 0]),
                    dst: LearnDst::Load {
                        field: NxmField::VLAN_TCI,
                        ofs: 0,
                    },
                },
                LearnSpec {
                    n_bits: 64,
                    src: LearnSrc::Field {
                        field: NxmField::TUN_ID,
                        ofs: 0,
                    },
                    dst: LearnDst::Load {
                        field: NxmField::TUN_ID,
                        ofs: 0,
                    },
                },
                LearnSpec {
                    n_bits: 16,
                    src: LearnSrc::Field {
                        field: NxmField::IN_PORT,
                        ofs: 0,
                    },
                    dst: LearnDst::Output,
                },
            ],
        }
    }

    /// Encodes through [`Action::encode`] and decodes again.
    fn wire(a: &Action) -> (Vec<u8>, Action) {
        let mut out = Vec::new();
        a.encode(&mut out).expect("encode");
        let mut r = Reader::new(&out, "t");
        let back = Action::decode(&mut r).expect("decode");
        assert!(r.is_empty());
        (out, back)
    }

    /// The learn action of a flow OVS 3.1 reported in an OpenFlow 1.3
    /// flow stats reply after `ovs-ofctl add-flow` of Liberty's text.
    const OVS_LIBERTY_LEARN: [u8; 96] = [
        0xff, 0xff, 0x00, 0x60, 0x00, 0x00, 0x23, 0x20, // experimenter, length 96, Nicira
        0x00, 0x10, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x01, // learn, idle 0, hard 300, priority 1
        0, 0, 0, 0, 0, 0, 0, 0, // cookie
        0x00, 0x00, 20, 0x00, 0x00, 0x00, 0x00, 0x00, // flags, table 20, pad, fin timeouts
        0x00, 0x0c, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, // VLAN_TCI[0..11] =
        0x00, 0x00, 0x08, 0x02, 0x00, 0x00, // VLAN_TCI[0..11]
        0x00, 0x30, 0x00, 0x00, 0x04, 0x06, 0x00, 0x00, // ETH_SRC[] =
        0x00, 0x00, 0x02, 0x06, 0x00, 0x00, // ETH_DST[]
        0x28, 0x10, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, // load:0->VLAN_TCI[]
        0x08, 0x40, 0x00, 0x01, 0x20, 0x08, 0x00, 0x00, // load:TUN_ID[] ->
        0x00, 0x01, 0x20, 0x08, 0x00, 0x00, // TUN_ID[]
        0x10, 0x10, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, // output:IN_PORT[]
        0, 0, 0, 0, // padding
    ];

    #[test]
    fn liberty_learn_is_byte_for_byte_what_ovs_sends() {
        let action = Action::learn(&liberty_learn());
        let (bytes, back) = wire(&action);
        assert_eq!(bytes, OVS_LIBERTY_LEARN);
        assert_eq!(back, action);
        assert_eq!(back.as_learn(), Some(liberty_learn()));
        assert_eq!(back.as_reg_move(), None);
        assert_eq!(back.as_resubmit(), None);
    }

    /// `move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]` and the two ARP moves of
    /// Liberty's ARP responder, as OVS 3.1 reported them.
    #[test]
    fn reg_moves_are_byte_for_byte_what_ovs_sends() {
        let cases = [
            (
                NxmField::ETH_SRC,
                NxmField::ETH_DST,
                [0, 48, 0, 0, 0, 0, 0, 0, 4, 6, 0, 0, 2, 6],
            ),
            (
                NxmField::ARP_SHA,
                NxmField::ARP_THA,
                [0, 48, 0, 0, 0, 0, 0, 1, 34, 6, 0, 1, 36, 6],
            ),
            (
                NxmField::ARP_SPA,
                NxmField::ARP_TPA,
                [0, 32, 0, 0, 0, 0, 0, 0, 32, 4, 0, 0, 34, 4],
            ),
        ];
        for (src, dst, body) in cases {
            let m = RegMove::whole(src, dst).expect("same widths");
            let (bytes, back) = wire(&Action::reg_move(&m));
            let mut want = vec![0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 6];
            want.extend(body);
            assert_eq!(bytes, want);
            assert_eq!(back.as_reg_move(), Some(m));
            assert_eq!(back.as_learn(), None);
        }
        assert_eq!(RegMove::whole(NxmField::ETH_SRC, NxmField::ARP_SPA), None);
    }

    /// `load:0x64->NXM_NX_TUN_ID[]`, as in a flow OVS learned.
    #[test]
    fn reg_load_round_trips() {
        let l = RegLoad {
            dst: Subfield::whole(NxmField::TUN_ID),
            value: 0x64,
        };
        let (bytes, back) = wire(&Action::reg_load(&l));
        assert_eq!(
            bytes,
            [
                0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 7, 0, 63, 0, 1, 0x20, 8, 0, 0, 0, 0, 0, 0,
                0, 0x64
            ]
        );
        assert_eq!(back.as_reg_load(), Some(l));
        let tci = RegLoad {
            dst: Subfield {
                field: NxmField::VLAN_TCI,
                ofs: 0,
                n_bits: 12,
            },
            value: 1,
        };
        assert_eq!(Action::reg_load(&tci).as_reg_load(), Some(tci));
    }

    #[test]
    fn immediates_are_right_aligned_in_whole_16_bit_words() {
        let mut l = liberty_learn();
        l.specs = vec![LearnSpec {
            n_bits: 20,
            src: LearnSrc::Immediate(vec![0x0a, 0xbc]),
            dst: LearnDst::Load {
                field: NxmField::ARP_SPA,
                ofs: 0,
            },
        }];
        let back = Action::learn(&l).as_learn().expect("learn");
        assert_eq!(
            back.specs[0].src,
            LearnSrc::Immediate(vec![0, 0, 0x0a, 0xbc])
        );
        l.specs[0].src = LearnSrc::Immediate(vec![0xff, 0, 0, 0x0a, 0xbc]);
        let back = Action::learn(&l).as_learn().expect("learn");
        assert_eq!(
            back.specs[0].src,
            LearnSrc::Immediate(vec![0, 0, 0x0a, 0xbc])
        );
    }

    #[test]
    fn hostile_bodies_are_not_typed_and_do_not_panic() {
        let good = match Action::learn(&liberty_learn()) {
            Action::Experimenter { data, .. } => data,
            _ => unreachable!(),
        };
        // Every truncation, and every single-byte corruption.
        for len in 0..good.len() {
            let a = Action::Experimenter {
                experimenter: NX_VENDOR_ID,
                data: good[..len].to_vec(),
            };
            let _ = (
                a.as_learn(),
                a.as_reg_move(),
                a.as_reg_load(),
                a.to_string(),
            );
        }
        for i in 0..good.len() {
            for b in [0x00, 0x01, 0x80, 0xff] {
                let mut data = good.clone();
                data[i] = b;
                let a = Action::Experimenter {
                    experimenter: NX_VENDOR_ID,
                    data,
                };
                let _ = (a.as_learn(), a.to_string());
            }
        }
        // Reserved header bits, a non-zero pad byte, output from a constant.
        let mut reserved = good.clone();
        reserved[24] |= 0x80;
        let mut pad = good.clone();
        pad[19] = 1;
        let mut output_imm = good.clone();
        output_imm[24..26]
            .copy_from_slice(&(LEARN_DST_OUTPUT | LEARN_SRC_IMMEDIATE | 16).to_be_bytes());
        for data in [reserved, pad, output_imm] {
            let a = Action::Experimenter {
                experimenter: NX_VENDOR_ID,
                data,
            };
            assert_eq!(a.as_learn(), None);
        }
        // A move naming a field by an experimenter (8-byte) header.
        let exp = Action::Experimenter {
            experimenter: NX_VENDOR_ID,
            data: vec![0, 6, 0, 8, 0, 0, 0, 0, 0xff, 0xff, 0, 12, 0, 0, 0x23, 0x20],
        };
        assert_eq!(exp.as_reg_move(), None);
        // Another vendor's subtype 16 is not a learn.
        let other = Action::Experimenter {
            experimenter: 0x4f4e_4600,
            data: good,
        };
        assert_eq!(other.as_learn(), None);
    }
}
