//! Whole OpenFlow 1.3 messages: the 8-byte header (OpenFlow 1.3.5 §7.1)
//! and the bodies ovslab sends or expects. Anything else decodes as
//! [`Message::Unknown`] so the connection survives messages it does not
//! care about (port status, packet-in, …).

use bytes::BufMut;

use crate::consts::OFP_VERSION_1_3;
use crate::error_msg::ErrorMsg;
use crate::flow::{FlowMod, FlowStats, FlowStatsRequest};
use crate::wire::{DecodeError, EncodeError, Reader, pad_to_8, patch_len, round8};

/// Size of the common header.
pub const OFP_HEADER_LEN: usize = 8;

/// Message type numbers (`ofp_type`, §7.1).
pub mod msg_type {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const FLOW_MOD: u8 = 14;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
}

/// Multipart type of individual flow statistics (`OFPMP_FLOW`).
pub const OFPMP_FLOW: u16 = 1;
/// Hello element carrying the supported-versions bitmap (§7.5.1.1).
const OFPHET_VERSIONBITMAP: u16 = 1;

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub msg_type: u8,
    /// Length of the whole message, header included.
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Parses the first 8 bytes of `buf`; checks that the length can at
    /// least hold the header.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(buf, "openflow header");
        let header = Header {
            version: r.u8()?,
            msg_type: r.u8()?,
            length: r.u16()?,
            xid: r.u32()?,
        };
        if usize::from(header.length) < OFP_HEADER_LEN {
            return Err(r.bad_length(usize::from(header.length)));
        }
        Ok(header)
    }
}

/// A HELLO. `version` is the header's version: the highest the sender
/// speaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    pub version: u8,
    pub elements: Vec<HelloElement>,
}

/// An element of a HELLO (§7.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HelloElement {
    /// Bit `n` of word `n / 32` is set when wire version `n` is supported.
    VersionBitmap(Vec<u32>),
    Unknown {
        element_type: u16,
        body: Vec<u8>,
    },
}

impl Hello {
    /// Our hello: version 1.3 and a bitmap offering only 1.3.
    pub fn of13() -> Hello {
        Hello {
            version: OFP_VERSION_1_3,
            elements: vec![HelloElement::VersionBitmap(vec![1 << OFP_VERSION_1_3])],
        }
    }

    /// The wire versions the sender offers: its bitmap when it sent one,
    /// otherwise every version up to the header's (§6.3.1).
    pub fn versions(&self) -> Vec<u8> {
        for e in &self.elements {
            if let HelloElement::VersionBitmap(words) = e {
                let mut out = Vec::new();
                for (i, word) in words.iter().enumerate() {
                    for bit in 0..32 {
                        if word & (1 << bit) != 0
                            && let Ok(v) = u8::try_from(i * 32 + bit)
                        {
                            out.push(v);
                        }
                    }
                }
                return out;
            }
        }
        (1..=self.version).collect()
    }

    /// Whether a connection with the sender can use OpenFlow 1.3.
    pub fn supports(&self, version: u8) -> bool {
        self.versions().contains(&version)
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        for e in &self.elements {
            let start = out.len();
            match e {
                HelloElement::VersionBitmap(words) => {
                    out.put_u16(OFPHET_VERSIONBITMAP);
                    out.put_u16(0);
                    for w in words {
                        out.put_u32(*w);
                    }
                }
                HelloElement::Unknown { element_type, body } => {
                    out.put_u16(*element_type);
                    out.put_u16(0);
                    out.put_slice(body);
                }
            }
            // The length excludes the padding that follows (§7.5.1).
            let len = out.len() - start;
            patch_len(out, start + 2, "hello element", len)?;
            pad_to_8(out, start);
        }
        Ok(())
    }

    fn decode_body(version: u8, r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
        let mut elements = Vec::new();
        // A trailing fragment shorter than an element header is ignored, as
        // the spec asks of unknown trailing data in a hello.
        while r.remaining() >= 4 {
            let element_type = r.u16()?;
            let len = usize::from(r.u16()?);
            if len < 4 {
                return Err(r.bad_length(len));
            }
            let mut body = r.sub(len - 4, "hello element")?;
            r.skip((round8(len) - len).min(r.remaining()))?;
            elements.push(if element_type == OFPHET_VERSIONBITMAP {
                let mut words = Vec::new();
                while body.remaining() >= 4 {
                    words.push(body.u32()?);
                }
                HelloElement::VersionBitmap(words)
            } else {
                HelloElement::Unknown {
                    element_type,
                    body: body.rest().to_vec(),
                }
            });
        }
        Ok(Hello { version, elements })
    }
}

/// The switch's answer to FEATURES_REQUEST (§7.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeaturesReply {
    pub datapath_id: u64,
    pub n_buffers: u32,
    pub n_tables: u8,
    pub auxiliary_id: u8,
    /// `OFPC_*` bits.
    pub capabilities: u32,
    pub reserved: u32,
}

/// A MULTIPART_REQUEST (§7.3.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartRequest {
    /// `OFPMPF_REQ_MORE` when more parts follow.
    pub flags: u16,
    pub body: MultipartRequestBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartRequestBody {
    Flow(FlowStatsRequest),
    Other { mp_type: u16, body: Vec<u8> },
}

/// A MULTIPART_REPLY: one part of the answer (§7.3.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartReply {
    /// `OFPMPF_REPLY_MORE` when more parts follow.
    pub flags: u16,
    pub body: MultipartReplyBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartReplyBody {
    Flow(Vec<FlowStats>),
    Other { mp_type: u16, body: Vec<u8> },
}

impl MultipartReply {
    /// Whether more parts of this reply follow.
    pub fn more(&self) -> bool {
        self.flags & crate::consts::OFPMPF_REPLY_MORE != 0
    }
}

/// An OpenFlow 1.3 message; the xid travels beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    Hello(Hello),
    Error(ErrorMsg),
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FeaturesRequest,
    FeaturesReply(FeaturesReply),
    FlowMod(FlowMod),
    MultipartRequest(MultipartRequest),
    MultipartReply(MultipartReply),
    BarrierRequest,
    BarrierReply,
    /// Any other type, `body` being everything after the header.
    Unknown {
        msg_type: u8,
        body: Vec<u8>,
    },
}

impl Message {
    /// The `ofp_type` of this message.
    pub fn msg_type(&self) -> u8 {
        use msg_type::*;
        match self {
            Message::Hello(_) => HELLO,
            Message::Error(_) => ERROR,
            Message::EchoRequest(_) => ECHO_REQUEST,
            Message::EchoReply(_) => ECHO_REPLY,
            Message::FeaturesRequest => FEATURES_REQUEST,
            Message::FeaturesReply(_) => FEATURES_REPLY,
            Message::FlowMod(_) => FLOW_MOD,
            Message::MultipartRequest(_) => MULTIPART_REQUEST,
            Message::MultipartReply(_) => MULTIPART_REPLY,
            Message::BarrierRequest => BARRIER_REQUEST,
            Message::BarrierReply => BARRIER_REPLY,
            Message::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// The message as bytes, header included.
    pub fn encode(&self, xid: u32) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(xid, &mut out)?;
        Ok(out)
    }

    /// Appends the message to `out`, so a batch can go out in one write.
    pub fn encode_into(&self, xid: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let version = match self {
            Message::Hello(h) => h.version,
            _ => OFP_VERSION_1_3,
        };
        out.put_u8(version);
        out.put_u8(self.msg_type());
        out.put_u16(0);
        out.put_u32(xid);
        match self {
            Message::Hello(h) => h.encode_body(out)?,
            Message::Error(e) => {
                out.put_u16(e.error_type);
                out.put_u16(e.code);
                out.put_slice(&e.data);
            }
            Message::EchoRequest(data) | Message::EchoReply(data) => out.put_slice(data),
            Message::FeaturesRequest | Message::BarrierRequest | Message::BarrierReply => {}
            Message::FeaturesReply(f) => {
                out.put_u64(f.datapath_id);
                out.put_u32(f.n_buffers);
                out.put_u8(f.n_tables);
                out.put_u8(f.auxiliary_id);
                out.put_bytes(0, 2);
                out.put_u32(f.capabilities);
                out.put_u32(f.reserved);
            }
            Message::FlowMod(fm) => fm.encode_body(out)?,
            Message::MultipartRequest(req) => {
                let mp_type = match &req.body {
                    MultipartRequestBody::Flow(_) => OFPMP_FLOW,
                    MultipartRequestBody::Other { mp_type, .. } => *mp_type,
                };
                out.put_u16(mp_type);
                out.put_u16(req.flags);
                out.put_bytes(0, 4);
                match &req.body {
                    MultipartRequestBody::Flow(f) => f.encode_body(out)?,
                    MultipartRequestBody::Other { body, .. } => out.put_slice(body),
                }
            }
            Message::MultipartReply(rep) => {
                let mp_type = match &rep.body {
                    MultipartReplyBody::Flow(_) => OFPMP_FLOW,
                    MultipartReplyBody::Other { mp_type, .. } => *mp_type,
                };
                out.put_u16(mp_type);
                out.put_u16(rep.flags);
                out.put_bytes(0, 4);
                match &rep.body {
                    MultipartReplyBody::Flow(flows) => {
                        for f in flows {
                            f.encode(out)?;
                        }
                    }
                    MultipartReplyBody::Other { body, .. } => out.put_slice(body),
                }
            }
            Message::Unknown { body, .. } => out.put_slice(body),
        }
        let len = out.len() - start;
        patch_len(out, start + 2, "openflow message", len)
    }

    /// Decodes one whole message (as cut by [`crate::FrameDecoder`]) into
    /// its xid and body. HELLO and ERROR are accepted in any version, since
    /// they are what version negotiation exchanges; everything else must be
    /// OpenFlow 1.3.
    pub fn decode(frame: &[u8]) -> Result<(u32, Message), DecodeError> {
        let header = Header::parse(frame)?;
        if usize::from(header.length) != frame.len() {
            return Err(DecodeError::BadLength {
                what: "openflow message",
                len: frame.len(),
            });
        }
        let mut r = Reader::new(&frame[OFP_HEADER_LEN..], "openflow message");
        use msg_type::*;
        if header.version != OFP_VERSION_1_3 && !matches!(header.msg_type, HELLO | ERROR) {
            return Err(r.invalid(format!(
                "message type {} has version {:#04x}, not OpenFlow 1.3",
                header.msg_type, header.version
            )));
        }
        let msg = match header.msg_type {
            HELLO => Message::Hello(Hello::decode_body(
                header.version,
                &mut Reader::new(r.rest(), "hello"),
            )?),
            ERROR => {
                let mut r = Reader::new(r.rest(), "error message");
                Message::Error(ErrorMsg {
                    error_type: r.u16()?,
                    code: r.u16()?,
                    data: r.rest().to_vec(),
                })
            }
            ECHO_REQUEST => Message::EchoRequest(r.rest().to_vec()),
            ECHO_REPLY => Message::EchoReply(r.rest().to_vec()),
            FEATURES_REQUEST => Message::FeaturesRequest,
            FEATURES_REPLY => {
                let mut r = Reader::new(r.rest(), "features reply");
                let datapath_id = r.u64()?;
                let n_buffers = r.u32()?;
                let n_tables = r.u8()?;
                let auxiliary_id = r.u8()?;
                r.skip(2)?;
                Message::FeaturesReply(FeaturesReply {
                    datapath_id,
                    n_buffers,
                    n_tables,
                    auxiliary_id,
                    capabilities: r.u32()?,
                    reserved: r.u32()?,
                })
            }
            FLOW_MOD => Message::FlowMod(FlowMod::decode_body(&mut Reader::new(
                r.rest(),
                "flow_mod",
            ))?),
            MULTIPART_REQUEST => {
                let mut r = Reader::new(r.rest(), "multipart request");
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                let body = if mp_type == OFPMP_FLOW {
                    let mut r = Reader::new(r.rest(), "flow stats request");
                    MultipartRequestBody::Flow(FlowStatsRequest::decode_body(&mut r)?)
                } else {
                    MultipartRequestBody::Other {
                        mp_type,
                        body: r.rest().to_vec(),
                    }
                };
                Message::MultipartRequest(MultipartRequest { flags, body })
            }
            MULTIPART_REPLY => {
                let mut r = Reader::new(r.rest(), "multipart reply");
                let mp_type = r.u16()?;
                let flags = r.u16()?;
                r.skip(4)?;
                let body = if mp_type == OFPMP_FLOW {
                    let mut flows = Vec::new();
                    let mut r = Reader::new(r.rest(), "flow stats reply");
                    while !r.is_empty() {
                        flows.push(FlowStats::decode(&mut r)?);
                    }
                    MultipartReplyBody::Flow(flows)
                } else {
                    MultipartReplyBody::Other {
                        mp_type,
                        body: r.rest().to_vec(),
                    }
                };
                Message::MultipartReply(MultipartReply { flags, body })
            }
            BARRIER_REQUEST => Message::BarrierRequest,
            BARRIER_REPLY => Message::BarrierReply,
            other => Message::Unknown {
                msg_type: other,
                body: r.rest().to_vec(),
            },
        };
        Ok((header.xid, msg))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::action::Action;
    use crate::consts::*;
    use crate::flow::FlowModCommand;
    use crate::instruction::Instruction;
    use crate::oxm::Match;

    fn round_trip(msg: Message) {
        let bytes = msg.encode(0x1234_5678).expect("encode");
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            bytes.len()
        );
        let (xid, back) = Message::decode(&bytes).expect("decode");
        assert_eq!(xid, 0x1234_5678);
        assert_eq!(back, msg);
    }

    fn sample_flow_stats(i: u16) -> FlowStats {
        FlowStats {
            table_id: 0,
            duration_sec: 5,
            duration_nsec: 6,
            priority: i,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: 0x1234,
            packet_count: 1,
            byte_count: 64,
            match_: Match::new().in_port(u32::from(i)),
            instructions: vec![Instruction::ApplyActions(vec![Action::normal()])],
        }
    }

    #[test]
    fn every_message_round_trips() {
        let fm = FlowMod::add(
            0,
            4,
            Match::new().in_port(2).vlan_vid(Some(1)),
            vec![Action::set_vlan_vid(101), Action::normal()],
        )
        .with_cookie(0x1234)
        .with_timeouts(10, 20)
        .with_flags(OFPFF_SEND_FLOW_REM);
        let msgs = vec![
            Message::Hello(Hello::of13()),
            Message::Hello(Hello {
                version: 6,
                elements: vec![
                    HelloElement::VersionBitmap(vec![0x52, 1]),
                    HelloElement::Unknown {
                        element_type: 9,
                        body: vec![1, 2, 3, 4],
                    },
                ],
            }),
            Message::Hello(Hello {
                version: 1,
                elements: vec![],
            }),
            Message::Error(ErrorMsg {
                error_type: 4,
                code: 9,
                data: vec![4, 14, 0, 8, 0, 0, 0, 1],
            }),
            Message::EchoRequest(vec![1, 2, 3]),
            Message::EchoReply(vec![]),
            Message::FeaturesRequest,
            Message::FeaturesReply(FeaturesReply {
                datapath_id: 0x0000_aabb_ccdd_eeff,
                n_buffers: 0,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: 0x4f,
                reserved: 0,
            }),
            Message::FlowMod(fm.clone()),
            Message::FlowMod(FlowMod {
                command: FlowModCommand::Modify,
                ..fm.clone()
            }),
            Message::FlowMod(FlowMod::modify_strict(1, 2, Match::new(), vec![])),
            Message::FlowMod(FlowMod::delete(OFPTT_ALL, Match::new().in_port(3))),
            Message::FlowMod(FlowMod::delete_strict(0, 2, Match::new().in_port(3))),
            Message::FlowMod(FlowMod::delete_by_cookie(7)),
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Flow(FlowStatsRequest::default()),
            }),
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Flow(FlowStatsRequest {
                    table_id: 3,
                    match_: Match::new()
                        .eth_type(ETH_TYPE_IPV4)
                        .ipv4_dst(Ipv4Addr::new(1, 2, 3, 4)),
                    ..FlowStatsRequest::by_cookie(9)
                }),
            }),
            Message::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Other {
                    mp_type: 0,
                    body: vec![],
                },
            }),
            Message::MultipartReply(MultipartReply {
                flags: OFPMPF_REPLY_MORE,
                body: MultipartReplyBody::Flow(vec![sample_flow_stats(1), sample_flow_stats(2)]),
            }),
            Message::MultipartReply(MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Flow(vec![]),
            }),
            Message::MultipartReply(MultipartReply {
                flags: 0,
                body: MultipartReplyBody::Other {
                    mp_type: 13,
                    body: vec![0; 16],
                },
            }),
            Message::BarrierRequest,
            Message::BarrierReply,
            Message::Unknown {
                msg_type: 12,
                body: vec![0; 72],
            },
        ];
        for m in msgs {
            round_trip(m);
        }
    }

    #[test]
    fn hello_known_bytes() {
        let bytes = Message::Hello(Hello::of13()).encode(1).expect("encode");
        assert_eq!(
            bytes,
            [
                0x04, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01, // header, length 16
                0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x10, // bitmap: 1.3 only
            ]
        );
    }

    #[test]
    fn hello_version_offer() {
        let of10_only = Hello {
            version: 1,
            elements: vec![],
        };
        assert_eq!(of10_only.versions(), [1]);
        assert!(!of10_only.supports(OFP_VERSION_1_3));
        let ovs = Hello {
            version: 6,
            elements: vec![HelloElement::VersionBitmap(vec![0b101_0010])],
        };
        assert_eq!(ovs.versions(), [1, 4, 6]);
        assert!(ovs.supports(OFP_VERSION_1_3));
        let no_bitmap_newer = Hello {
            version: 5,
            elements: vec![],
        };
        assert!(no_bitmap_newer.supports(OFP_VERSION_1_3));
    }

    /// Hand-computed from §7.3.4.1, §7.2.3 and §7.2.5 of the 1.3.5 spec.
    #[test]
    fn flow_mod_known_bytes() {
        let fm = FlowMod::add(
            0,
            4,
            Match::new().in_port(2).vlan_vid(Some(1)),
            vec![Action::set_vlan_vid(101), Action::normal()],
        )
        .with_cookie(0x1234);
        let bytes = Message::FlowMod(fm).encode(7).expect("encode");
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // header: version 4, FLOW_MOD, length 112, xid 7
            0x04, 0x0e, 0x00, 0x70, 0x00, 0x00, 0x00, 0x07,
            // cookie, cookie_mask
            0, 0, 0, 0, 0, 0, 0x12, 0x34,
            0, 0, 0, 0, 0, 0, 0, 0,
            // table 0, ADD, idle 0, hard 0, priority 4
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
            // buffer_id NO_BUFFER, out_port ANY
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            // out_group ANY, flags 0, pad
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
            // match: OXM, length 18; in_port=2
            0x00, 0x01, 0x00, 0x12, 0x80, 0x00, 0x00, 0x04,
            0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x0c, 0x02,
            // vlan_vid=0x1001, 6 bytes pad
            0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // APPLY_ACTIONS, length 40, pad
            0x00, 0x04, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00,
            // SET_FIELD, length 16, vlan_vid=0x1065, pad
            0x00, 0x19, 0x00, 0x10, 0x80, 0x00, 0x0c, 0x02,
            0x10, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // OUTPUT, length 16, port NORMAL, max_len 0, pad
            0x00, 0x00, 0x00, 0x10, 0xff, 0xff, 0xff, 0xfa,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(bytes, expected);
    }

    /// A flow stats reply as OVS would send it for
    /// `table=0, priority=0, actions=NORMAL`, hand-computed from §7.3.5.2.
    #[test]
    fn flow_stats_reply_known_bytes() {
        #[rustfmt::skip]
        let bytes: Vec<u8> = vec![
            // header: version 4, MULTIPART_REPLY, length 96, xid 3
            0x04, 0x13, 0x00, 0x60, 0x00, 0x00, 0x00, 0x03,
            // OFPMP_FLOW, flags 0, pad
            0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // entry length 80, table 0, pad, duration 12 s
            0x00, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
            // duration 500 ns, priority 0, idle 0
            0x00, 0x00, 0x01, 0xf4, 0x00, 0x00, 0x00, 0x00,
            // hard 0, flags 0, pad
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // cookie 0xab
            0, 0, 0, 0, 0, 0, 0, 0xab,
            // packet_count 2
            0, 0, 0, 0, 0, 0, 0, 2,
            // byte_count 128
            0, 0, 0, 0, 0, 0, 0, 0x80,
            // empty match: OXM, length 4, pad
            0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
            // APPLY_ACTIONS length 24, OUTPUT NORMAL
            0x00, 0x04, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x10, 0xff, 0xff, 0xff, 0xfa,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let (xid, msg) = Message::decode(&bytes).expect("decode");
        assert_eq!(xid, 3);
        let expected = Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(vec![FlowStats {
                table_id: 0,
                duration_sec: 12,
                duration_nsec: 500,
                priority: 0,
                idle_timeout: 0,
                hard_timeout: 0,
                flags: 0,
                cookie: 0xab,
                packet_count: 2,
                byte_count: 128,
                match_: Match::new(),
                instructions: vec![Instruction::ApplyActions(vec![Action::normal()])],
            }]),
        });
        assert_eq!(msg, expected);
        assert_eq!(expected.encode(3).expect("encode"), bytes);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        // Length field disagrees with the frame.
        assert!(Message::decode(&[4, 20, 0, 9, 0, 0, 0, 1]).is_err());
        // Length below the header size.
        assert!(Header::parse(&[4, 20, 0, 4, 0, 0, 0, 1]).is_err());
        // OpenFlow 1.0 barrier after negotiating 1.3.
        assert!(Message::decode(&[1, 18, 0, 8, 0, 0, 0, 1]).is_err());
        // Truncated features reply.
        assert!(Message::decode(&[4, 6, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
        // Every truncation of a real flow_mod fails cleanly, except the
        // one that leaves a valid flow_mod without instructions (a drop).
        let fm = FlowMod::add(0, 1, Match::new().in_port(1), vec![Action::normal()]);
        let bytes = Message::FlowMod(fm).encode(1).expect("encode");
        let without_instructions = 48 + 16;
        for cut in OFP_HEADER_LEN..bytes.len() {
            let mut b = bytes[..cut].to_vec();
            b[2..4].copy_from_slice(&u16::try_from(cut).expect("small").to_be_bytes());
            let res = Message::decode(&b);
            assert_eq!(res.is_ok(), cut == without_instructions, "cut at {cut}");
        }
    }

    #[test]
    fn unknown_types_are_kept() {
        let (xid, msg) = Message::decode(&[4, 12, 0, 10, 0, 0, 0, 5, 0xaa, 0xbb]).expect("decode");
        assert_eq!(xid, 5);
        assert_eq!(
            msg,
            Message::Unknown {
                msg_type: 12,
                body: vec![0xaa, 0xbb]
            }
        );
    }
}
