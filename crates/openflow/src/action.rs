//! Actions (OpenFlow 1.3.5 §7.2.5).
//!
//! Only the standard actions ovslab writes are typed. Everything else,
//! notably OVS's Nicira extensions (NXAST resubmit, ct, learn, …) that
//! another agent may have installed, decodes as [`Action::Experimenter`] or
//! [`Action::Unknown`] with its bytes kept, so a dump never fails on them
//! and re-encoding reproduces them. The Nicira actions ovslab writes have
//! typed views over those bytes: `resubmit` here, `learn`, `move` and
//! `load` in [`crate::nicira`].

use bytes::BufMut;

use crate::consts::{NX_VENDOR_ID, OFPCML_NO_BUFFER, OFPP_CONTROLLER, OFPP_NORMAL, OFPVID_PRESENT};
use crate::oxm::OxmField;
use crate::wire::{DecodeError, EncodeError, Reader, pad_to_8, patch_len};

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_PUSH_VLAN: u16 = 17;
const OFPAT_POP_VLAN: u16 = 18;
const OFPAT_SET_QUEUE: u16 = 21;
const OFPAT_GROUP: u16 = 22;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_EXPERIMENTER: u16 = 0xffff;

/// Nicira subtype of `resubmit(port,table)` (OVS `NXAST_RESUBMIT_TABLE`).
pub const NXAST_RESUBMIT_TABLE: u16 = 14;
/// Nicira subtype of `set_tunnel:<key>` with a 32-bit key (OVS
/// `NXAST_SET_TUNNEL`).
pub const NXAST_SET_TUNNEL: u16 = 2;
/// Nicira subtype of `set_tunnel64:<key>` (OVS `NXAST_SET_TUNNEL64`).
pub const NXAST_SET_TUNNEL64: u16 = 9;
/// The 16-bit `OFPP_IN_PORT` that NXAST_RESUBMIT_TABLE uses for "the
/// packet's own in_port" (`resubmit(,table)`).
const NX_OFPP_IN_PORT: u16 = 0xfff8;

/// One action of an apply-actions or write-actions instruction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send out `port` (a number or one of the `OFPP_*` constants);
    /// `max_len` only matters for [`OFPP_CONTROLLER`].
    Output { port: u32, max_len: u16 },
    /// Push a new VLAN tag with this ethertype (normally 0x8100).
    PushVlan(u16),
    /// Pop the outermost VLAN tag.
    PopVlan,
    /// Set one header field; the OXM normally has no mask.
    SetField(OxmField),
    /// Process the packet through a group.
    Group(u32),
    /// Set the queue id for the output port.
    SetQueue(u32),
    /// An experimenter action; `data` is everything after the 8-byte
    /// header (for Nicira: 16-bit subtype, arguments, padding).
    Experimenter { experimenter: u32, data: Vec<u8> },
    /// Any other standard action, `body` being everything after type and
    /// length.
    Unknown { action_type: u16, body: Vec<u8> },
}

impl Action {
    /// Output to `port`; to the controller it sends whole packets.
    pub fn output(port: u32) -> Action {
        let max_len = if port == OFPP_CONTROLLER {
            OFPCML_NO_BUFFER
        } else {
            0
        };
        Action::Output { port, max_len }
    }

    /// Output to the NORMAL port: OVS's MAC-learning switch.
    pub fn normal() -> Action {
        Action::output(OFPP_NORMAL)
    }

    /// Rewrite the VLAN id of a tagged packet (`mod_vlan_vid` in
    /// ovs-ofctl); the OXM value carries [`OFPVID_PRESENT`] as OVS requires.
    pub fn set_vlan_vid(vid: u16) -> Action {
        Action::SetField(OxmField::VlanVid(OFPVID_PRESENT | (vid & 0x0fff), None))
    }

    /// Set an arbitrary field.
    pub fn set_field(field: OxmField) -> Action {
        Action::SetField(field)
    }

    /// ovs-ofctl's `set_tunnel:<key>`, the Nicira action Neutron's agent
    /// writes (NXAST_SET_TUNNEL; NXAST_SET_TUNNEL64 for a key beyond 32
    /// bits), valid under every OpenFlow version. OVS keeps it as such, so
    /// a dump over OpenFlow 1.0 prints `set_tunnel:0x64` where a set_field
    /// `tunnel_id` prints `load:0x64->NXM_NX_TUN_ID[]`; over 1.3 OVS sends
    /// either back as set_field `tunnel_id`.
    pub fn set_tunnel(tun_id: u64) -> Action {
        let mut data = Vec::with_capacity(16);
        match u32::try_from(tun_id) {
            Ok(key) => {
                data.put_u16(NXAST_SET_TUNNEL);
                data.put_bytes(0, 2);
                data.put_u32(key);
            }
            Err(_) => {
                data.put_u16(NXAST_SET_TUNNEL64);
                data.put_bytes(0, 6);
                data.put_u64(tun_id);
            }
        }
        Action::Experimenter {
            experimenter: NX_VENDOR_ID,
            data,
        }
    }

    /// The key of a Nicira `set_tunnel` or `set_tunnel64` action.
    pub fn as_set_tunnel(&self) -> Option<u64> {
        let Action::Experimenter { experimenter, data } = self else {
            return None;
        };
        if *experimenter != NX_VENDOR_ID || data.len() < 2 {
            return None;
        }
        let subtype = u16::from_be_bytes([data[0], data[1]]);
        match (subtype, &data[2..]) {
            (NXAST_SET_TUNNEL, [0, 0, key @ ..]) if key.len() == 4 => Some(u64::from(
                u32::from_be_bytes(key.try_into().expect("4 bytes")),
            )),
            (NXAST_SET_TUNNEL64, [0, 0, 0, 0, 0, 0, key @ ..]) if key.len() == 8 => {
                Some(u64::from_be_bytes(key.try_into().expect("8 bytes")))
            }
            _ => None,
        }
    }

    /// OVS's `resubmit(,table)`: run the packet through `table` and come
    /// back, the Nicira extension Neutron's ARP-spoofing rules use.
    pub fn resubmit_table(table: u8) -> Action {
        let mut data = Vec::with_capacity(8);
        data.put_u16(NXAST_RESUBMIT_TABLE);
        data.put_u16(NX_OFPP_IN_PORT);
        data.put_u8(table);
        data.put_bytes(0, 3);
        Action::Experimenter {
            experimenter: NX_VENDOR_ID,
            data,
        }
    }

    /// For a Nicira resubmit action: `(in_port, table)` with `None` for
    /// "the packet's own in_port".
    pub fn as_resubmit(&self) -> Option<(Option<u16>, u8)> {
        match self {
            Action::Experimenter { experimenter, data }
                if *experimenter == NX_VENDOR_ID && data.len() >= 5 =>
            {
                let subtype = u16::from_be_bytes([data[0], data[1]]);
                let port = u16::from_be_bytes([data[2], data[3]]);
                let port = (port != NX_OFPP_IN_PORT).then_some(port);
                (subtype == NXAST_RESUBMIT_TABLE).then_some((port, data[4]))
            }
            _ => None,
        }
    }

    /// Appends the action, padded to a multiple of 8 with the padding
    /// counted in its length (§7.2.5).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let action_type = match self {
            Action::Output { .. } => OFPAT_OUTPUT,
            Action::PushVlan(_) => OFPAT_PUSH_VLAN,
            Action::PopVlan => OFPAT_POP_VLAN,
            Action::SetField(_) => OFPAT_SET_FIELD,
            Action::Group(_) => OFPAT_GROUP,
            Action::SetQueue(_) => OFPAT_SET_QUEUE,
            Action::Experimenter { .. } => OFPAT_EXPERIMENTER,
            Action::Unknown { action_type, .. } => *action_type,
        };
        out.put_u16(action_type);
        out.put_u16(0);
        match self {
            Action::Output { port, max_len } => {
                out.put_u32(*port);
                out.put_u16(*max_len);
                out.put_bytes(0, 6);
            }
            Action::PushVlan(ethertype) => {
                out.put_u16(*ethertype);
                out.put_bytes(0, 2);
            }
            Action::PopVlan => out.put_bytes(0, 4),
            Action::SetField(field) => field.encode(out)?,
            Action::Group(id) | Action::SetQueue(id) => out.put_u32(*id),
            Action::Experimenter { experimenter, data } => {
                out.put_u32(*experimenter);
                out.put_slice(data);
            }
            Action::Unknown { body, .. } => out.put_slice(body),
        }
        pad_to_8(out, start);
        let len = out.len() - start;
        patch_len(out, start + 2, "action", len)
    }

    /// Reads one action.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
        let action_type = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(r.bad_length(len));
        }
        let mut body = r.sub(len - 4, "action")?;
        let fixed = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(DecodeError::Invalid {
                    what: "action",
                    detail: format!("type {action_type} has length {len}, the spec says {want}"),
                })
            }
        };
        let action = match action_type {
            OFPAT_OUTPUT => {
                fixed(16)?;
                let port = body.u32()?;
                let max_len = body.u16()?;
                Action::Output { port, max_len }
            }
            OFPAT_PUSH_VLAN => {
                fixed(8)?;
                Action::PushVlan(body.u16()?)
            }
            OFPAT_POP_VLAN => {
                fixed(8)?;
                Action::PopVlan
            }
            OFPAT_GROUP => {
                fixed(8)?;
                Action::Group(body.u32()?)
            }
            OFPAT_SET_QUEUE => {
                fixed(8)?;
                Action::SetQueue(body.u32()?)
            }
            // The OXM is followed by padding, which is ignored.
            OFPAT_SET_FIELD => Action::SetField(OxmField::decode(&mut body)?),
            OFPAT_EXPERIMENTER => Action::Experimenter {
                experimenter: body.u32()?,
                data: body.rest().to_vec(),
            },
            _ => Action::Unknown {
                action_type,
                body: body.rest().to_vec(),
            },
        };
        Ok(action)
    }
}

/// Appends a list of actions.
pub(crate) fn encode_actions(actions: &[Action], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    actions.iter().try_for_each(|a| a.encode(out))
}

/// Reads actions until the reader is empty.
pub(crate) fn decode_actions(r: &mut Reader<'_>) -> Result<Vec<Action>, DecodeError> {
    let mut actions = Vec::new();
    while !r.is_empty() {
        actions.push(Action::decode(r)?);
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{OFPP_IN_PORT, OFPP_LOCAL};
    use crate::oxm::{MacAddr, RawOxm};

    fn round_trip(a: &Action) -> (Vec<u8>, Action) {
        let mut out = Vec::new();
        a.encode(&mut out).expect("encode");
        assert_eq!(out.len() % 8, 0, "{a:?} padded to 8");
        assert_eq!(
            usize::from(u16::from_be_bytes([out[2], out[3]])),
            out.len(),
            "{a:?} length includes padding"
        );
        let mut r = Reader::new(&out, "t");
        let back = Action::decode(&mut r).expect("decode");
        assert!(r.is_empty());
        (out, back)
    }

    #[test]
    fn every_action_round_trips() {
        let actions = [
            Action::output(3),
            Action::normal(),
            Action::output(OFPP_CONTROLLER),
            Action::output(OFPP_IN_PORT),
            Action::output(OFPP_LOCAL),
            Action::PushVlan(0x8100),
            Action::PopVlan,
            Action::set_vlan_vid(101),
            Action::set_tunnel(0x64),
            Action::set_tunnel(1 << 40),
            Action::set_field(OxmField::TunnelId(0x64, None)),
            Action::set_field(OxmField::EthDst(MacAddr([0xfa, 0x16, 0x3e, 0, 0, 1]), None)),
            Action::set_field(OxmField::Raw(RawOxm {
                class: 1,
                field: 1,
                has_mask: false,
                payload: vec![0, 0, 0, 9],
            })),
            Action::Group(7),
            Action::SetQueue(2),
            Action::resubmit_table(24),
            Action::Experimenter {
                experimenter: 0x2320,
                data: vec![0, 35, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0, 0, 0],
            },
            Action::Unknown {
                action_type: 24,
                body: vec![0, 0, 0, 0],
            },
        ];
        for a in actions {
            assert_eq!(round_trip(&a).1, a);
        }
    }

    #[test]
    fn known_bytes() {
        assert_eq!(
            round_trip(&Action::normal()).0,
            [0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfa, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // set_field vlan_vid=0x1065: 4 header + 6 OXM, padded to 16.
        assert_eq!(
            round_trip(&Action::set_vlan_vid(101)).0,
            [0, 25, 0, 16, 0x80, 0, 0x0c, 2, 0x10, 0x65, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(round_trip(&Action::PopVlan).0, [0, 18, 0, 8, 0, 0, 0, 0]);
        // set_field tunnel_id=0x64: 4 header + 12 OXM, padded to 16; what
        // OVS 3.1 sends back for `set_tunnel:0x64` over OpenFlow 1.3.
        assert_eq!(
            round_trip(&Action::set_field(OxmField::TunnelId(0x64, None))).0,
            [0, 25, 0, 16, 0x80, 0, 0x4c, 8, 0, 0, 0, 0, 0, 0, 0, 0x64]
        );
        // NXAST_SET_TUNNEL (OVS `nx_action_set_tunnel`): subtype 2, 2 bytes
        // of padding, the 32-bit key; NXAST_SET_TUNNEL64 beyond 32 bits.
        assert_eq!(
            round_trip(&Action::set_tunnel(0x64)).0,
            [
                0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 2, 0, 0, 0, 0, 0, 0x64
            ]
        );
        assert_eq!(
            round_trip(&Action::set_tunnel(0x1_0000_0064)).0,
            [
                0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
                0x64
            ]
        );
        assert_eq!(
            round_trip(&Action::resubmit_table(24)).0,
            [
                0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 14, 0xff, 0xf8, 24, 0, 0, 0
            ]
        );
    }

    #[test]
    fn set_tunnel_is_recognized() {
        assert_eq!(Action::set_tunnel(0x65).as_set_tunnel(), Some(0x65));
        assert_eq!(Action::set_tunnel(1 << 40).as_set_tunnel(), Some(1 << 40));
        assert_eq!(
            Action::set_field(OxmField::TunnelId(0x65, None)).as_set_tunnel(),
            None
        );
        assert_eq!(Action::resubmit_table(24).as_set_tunnel(), None);
    }

    #[test]
    fn resubmit_is_recognized() {
        assert_eq!(Action::resubmit_table(24).as_resubmit(), Some((None, 24)));
        assert_eq!(Action::normal().as_resubmit(), None);
    }

    #[test]
    fn nicira_ct_action_decodes_as_experimenter() {
        // NXAST_CT (subtype 35) with flags=commit, zone 5, no nested actions:
        // 24 bytes as OVS writes it.
        let bytes = [
            0xff, 0xff, 0x00, 0x18, 0x00, 0x00, 0x23, 0x20, 0x00, 0x23, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x05, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let mut r = Reader::new(&bytes, "t");
        let a = Action::decode(&mut r).expect("decode");
        assert!(
            matches!(a, Action::Experimenter { experimenter: 0x2320, ref data } if data.len() == 16)
        );
        let mut out = Vec::new();
        a.encode(&mut out).expect("encode");
        assert_eq!(out, bytes);
    }

    #[test]
    fn bad_lengths_are_errors() {
        // output with length 8
        let bytes = [0, 0, 0, 8, 0, 0, 0, 1];
        assert!(Action::decode(&mut Reader::new(&bytes, "t")).is_err());
        // length beyond the buffer
        let bytes = [0, 0, 0, 16, 0, 0, 0, 1];
        assert!(Action::decode(&mut Reader::new(&bytes, "t")).is_err());
        // length below the header
        let bytes = [0, 0, 0, 2];
        assert!(Action::decode(&mut Reader::new(&bytes, "t")).is_err());
    }

    /// Found by the `openflow` fuzz target: an unknown action of length 12
    /// (not padded to 8, as §7.2.5 asks) decodes with its 8 body bytes;
    /// encoding pads it to 16, and that encoding is then a fixed point.
    #[test]
    fn an_unpadded_unknown_action_is_padded_once_then_stable() {
        let bytes = [4, 10, 0, 12, 0, 0, 0, 32, 1, 2, 3, 4];
        let mut r = Reader::new(&bytes, "t");
        let action = Action::decode(&mut r).expect("decode");
        assert!(r.is_empty());
        let (padded, back) = round_trip(&action);
        assert_eq!(padded.len(), 16);
        assert_eq!(&padded[..12], &[4, 10, 0, 16, 0, 0, 0, 32, 1, 2, 3, 4]);
        let (again, _) = round_trip(&back);
        assert_eq!(again, padded);
    }
}
