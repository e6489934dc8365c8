//! Property tests: whatever we can build, we can encode and decode back
//! unchanged, also when the bytes arrive in arbitrary pieces.

use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;

use crate::action::Action;
use crate::flow::{FlowMod, FlowModCommand, FlowStats};
use crate::framing::FrameDecoder;
use crate::instruction::{Instruction, sort_instructions};
use crate::message::{Message, MultipartReply, MultipartReplyBody};
use crate::nicira::{Learn, LearnDst, LearnSpec, LearnSrc, NxmField, RegLoad, RegMove, Subfield};
use crate::oxm::{MacAddr, Match, OFPXMC_EXPERIMENTER, OFPXMC_OPENFLOW_BASIC, OxmField, RawOxm};

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn raw_oxm() -> impl Strategy<Value = RawOxm> {
    // Basic fields this crate does not type, other classes, experimenter.
    let unknown_basic = prop::sample::select(vec![1u8, 2, 8, 9, 17, 18, 26, 27, 39, 100]);
    prop_oneof![
        (unknown_basic, any::<bool>(), vec(any::<u8>(), 0..24)).prop_map(
            |(field, has_mask, payload)| RawOxm {
                class: OFPXMC_OPENFLOW_BASIC,
                field,
                has_mask,
                payload,
            }
        ),
        (0u16..2, 0u8..128, any::<bool>(), vec(any::<u8>(), 0..24)).prop_map(
            |(class, field, has_mask, payload)| RawOxm {
                class,
                field,
                has_mask,
                payload,
            }
        ),
        (0u8..128, any::<bool>(), vec(any::<u8>(), 4..24)).prop_map(
            |(field, has_mask, payload)| RawOxm {
                class: OFPXMC_EXPERIMENTER,
                field,
                has_mask,
                payload,
            }
        ),
    ]
}

fn oxm_field() -> impl Strategy<Value = OxmField> {
    use OxmField::*;
    prop_oneof![
        any::<u32>().prop_map(InPort),
        (mac(), prop::option::of(mac())).prop_map(|(v, m)| EthDst(v, m)),
        (mac(), prop::option::of(mac())).prop_map(|(v, m)| EthSrc(v, m)),
        any::<u16>().prop_map(EthType),
        (any::<u16>(), prop::option::of(any::<u16>())).prop_map(|(v, m)| VlanVid(v, m)),
        any::<u8>().prop_map(VlanPcp),
        any::<u8>().prop_map(IpProto),
        (ip(), prop::option::of(ip())).prop_map(|(v, m)| Ipv4Src(v, m)),
        (ip(), prop::option::of(ip())).prop_map(|(v, m)| Ipv4Dst(v, m)),
        any::<u16>().prop_map(TcpSrc),
        any::<u16>().prop_map(TcpDst),
        any::<u16>().prop_map(UdpSrc),
        any::<u16>().prop_map(UdpDst),
        any::<u8>().prop_map(Icmpv4Type),
        any::<u8>().prop_map(Icmpv4Code),
        any::<u16>().prop_map(ArpOp),
        (ip(), prop::option::of(ip())).prop_map(|(v, m)| ArpSpa(v, m)),
        (ip(), prop::option::of(ip())).prop_map(|(v, m)| ArpTpa(v, m)),
        (mac(), prop::option::of(mac())).prop_map(|(v, m)| ArpSha(v, m)),
        (mac(), prop::option::of(mac())).prop_map(|(v, m)| ArpTha(v, m)),
        (any::<u64>(), prop::option::of(any::<u64>())).prop_map(|(v, m)| TunnelId(v, m)),
        raw_oxm().prop_map(Raw),
    ]
}

fn a_match() -> impl Strategy<Value = Match> {
    vec(oxm_field(), 0..10).prop_map(Match::from_iter)
}

fn nxm_field() -> impl Strategy<Value = NxmField> {
    prop_oneof![
        prop::sample::select(vec![
            NxmField::IN_PORT,
            NxmField::ETH_DST,
            NxmField::ETH_SRC,
            NxmField::VLAN_TCI,
            NxmField::ARP_OP,
            NxmField::ARP_SPA,
            NxmField::ARP_TPA,
            NxmField::TUN_ID,
            NxmField::ARP_SHA,
            NxmField::ARP_THA,
        ]),
        // Any class but the experimenter one, whose headers are 8 bytes.
        (0u16..0xffff, 0u8..128, any::<u8>()).prop_map(|(class, field, len)| NxmField {
            class,
            field,
            len,
        }),
    ]
}

fn learn_spec() -> impl Strategy<Value = LearnSpec> {
    // n_bits 0 with a field source matched would be a zero header, which
    // ends the specs; OVS has the same ambiguity.
    (
        1u16..1024,
        any::<bool>(),
        0u8..3,
        nxm_field(),
        any::<u16>(),
        nxm_field(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(
            |(n_bits, immediate, dst, src_f, src_ofs, dst_f, dst_ofs, b)| {
                let src = if immediate && dst != 2 {
                    LearnSrc::Immediate(vec![b; usize::from(n_bits).div_ceil(16) * 2])
                } else {
                    LearnSrc::Field {
                        field: src_f,
                        ofs: src_ofs,
                    }
                };
                let dst = match dst {
                    0 => LearnDst::Match {
                        field: dst_f,
                        ofs: dst_ofs,
                    },
                    1 => LearnDst::Load {
                        field: dst_f,
                        ofs: dst_ofs,
                    },
                    _ => LearnDst::Output,
                };
                LearnSpec { n_bits, src, dst }
            },
        )
}

prop_compose! {
    fn learn()(
        timeouts in any::<(u16, u16, u16, u16)>(),
        priority in any::<u16>(),
        cookie in any::<u64>(),
        flags in any::<u16>(),
        table_id in any::<u8>(),
        specs in vec(learn_spec(), 0..6),
    ) -> Learn {
        Learn {
            idle_timeout: timeouts.0,
            hard_timeout: timeouts.1,
            priority,
            cookie,
            flags,
            table_id,
            fin_idle_timeout: timeouts.2,
            fin_hard_timeout: timeouts.3,
            specs,
        }
    }
}

fn reg_move() -> impl Strategy<Value = RegMove> {
    (
        any::<u16>(),
        nxm_field(),
        any::<u16>(),
        nxm_field(),
        any::<u16>(),
    )
        .prop_map(|(n_bits, src, src_ofs, dst, dst_ofs)| RegMove {
            n_bits,
            src,
            src_ofs,
            dst,
            dst_ofs,
        })
}

fn reg_load() -> impl Strategy<Value = RegLoad> {
    (nxm_field(), 0u16..1024, 1u16..=64, any::<u64>()).prop_map(|(field, ofs, n_bits, value)| {
        RegLoad {
            dst: Subfield { field, ofs, n_bits },
            value,
        }
    })
}

fn action() -> impl Strategy<Value = Action> {
    // Standard action types this crate does not type.
    let unknown_type = prop::sample::select(vec![11u16, 12, 15, 16, 19, 20, 23, 24, 26, 27]);
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Action::Output { port, max_len }),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        oxm_field().prop_map(Action::SetField),
        learn().prop_map(|l| Action::learn(&l)),
        reg_move().prop_map(|m| Action::reg_move(&m)),
        reg_load().prop_map(|l| Action::reg_load(&l)),
        any::<u32>().prop_map(Action::Group),
        any::<u32>().prop_map(Action::SetQueue),
        (any::<u32>(), 0usize..4, any::<u8>()).prop_map(|(experimenter, words, b)| {
            Action::Experimenter {
                experimenter,
                data: vec![b; words * 8],
            }
        }),
        (unknown_type, 0usize..3, any::<u8>()).prop_map(|(action_type, words, b)| {
            Action::Unknown {
                action_type,
                body: vec![b; 4 + words * 8],
            }
        }),
    ]
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        any::<u8>().prop_map(Instruction::GotoTable),
        (any::<u64>(), any::<u64>())
            .prop_map(|(metadata, mask)| Instruction::WriteMetadata { metadata, mask }),
        vec(action(), 0..4).prop_map(Instruction::WriteActions),
        vec(action(), 0..4).prop_map(Instruction::ApplyActions),
        Just(Instruction::ClearActions),
        any::<u32>().prop_map(Instruction::Meter),
        (7u16..0xffff, 0usize..3, any::<u8>()).prop_map(|(instruction_type, words, b)| {
            Instruction::Unknown {
                instruction_type,
                body: vec![b; 4 + words * 8],
            }
        }),
    ]
}

fn instructions() -> impl Strategy<Value = Vec<Instruction>> {
    vec(instruction(), 0..4).prop_map(|mut v| {
        sort_instructions(&mut v);
        v
    })
}

fn command() -> impl Strategy<Value = FlowModCommand> {
    prop::sample::select(vec![
        FlowModCommand::Add,
        FlowModCommand::Modify,
        FlowModCommand::ModifyStrict,
        FlowModCommand::Delete,
        FlowModCommand::DeleteStrict,
    ])
}

prop_compose! {
    fn flow_mod()(
        command in command(),
        cookie in any::<u64>(),
        cookie_mask in any::<u64>(),
        table_id in any::<u8>(),
        timeouts in any::<(u16, u16)>(),
        priority in any::<u16>(),
        ids in any::<(u32, u32, u32)>(),
        flags in any::<u16>(),
        match_ in a_match(),
        instructions in instructions(),
    ) -> FlowMod {
        FlowMod {
            command,
            cookie,
            cookie_mask,
            table_id,
            idle_timeout: timeouts.0,
            hard_timeout: timeouts.1,
            priority,
            buffer_id: ids.0,
            out_port: ids.1,
            out_group: ids.2,
            flags,
            match_,
            instructions,
        }
    }
}

prop_compose! {
    fn flow_stats()(
        table_id in any::<u8>(),
        duration in any::<(u32, u32)>(),
        priority in any::<u16>(),
        small in any::<(u16, u16, u16)>(),
        counters in any::<(u64, u64, u64)>(),
        match_ in a_match(),
        instructions in instructions(),
    ) -> FlowStats {
        FlowStats {
            table_id,
            duration_sec: duration.0,
            duration_nsec: duration.1,
            priority,
            idle_timeout: small.0,
            hard_timeout: small.1,
            flags: small.2,
            cookie: counters.0,
            packet_count: counters.1,
            byte_count: counters.2,
            match_,
            instructions,
        }
    }
}

proptest! {
    #[test]
    fn matches_round_trip(m in a_match()) {
        let mut out = Vec::new();
        m.encode(&mut out).expect("encode");
        prop_assert_eq!(out.len() % 8, 0);
        let mut r = crate::wire::Reader::new(&out, "match");
        let back = Match::decode(&mut r).expect("decode");
        prop_assert!(r.is_empty());
        prop_assert_eq!(back, m);
    }

    #[test]
    fn match_equality_ignores_insertion_order(fields in vec(oxm_field(), 0..10)) {
        // Distinct keys only: with duplicates the last one wins, which
        // depends on order by design.
        let m: Match = fields.iter().cloned().collect();
        let reversed: Match = m.fields().iter().rev().cloned().collect();
        prop_assert_eq!(reversed, m);
    }

    #[test]
    fn flow_mods_round_trip(fm in flow_mod(), xid in any::<u32>()) {
        let msg = Message::FlowMod(fm);
        let bytes = msg.encode(xid).expect("encode");
        prop_assert_eq!(bytes.len() % 8, 0);
        let (back_xid, back) = Message::decode(&bytes).expect("decode");
        prop_assert_eq!(back_xid, xid);
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn flow_stats_replies_round_trip(flows in vec(flow_stats(), 0..5), more in any::<bool>()) {
        let msg = Message::MultipartReply(MultipartReply {
            flags: u16::from(more),
            body: MultipartReplyBody::Flow(flows),
        });
        let bytes = msg.encode(9).expect("encode");
        let (_, back) = Message::decode(&bytes).expect("decode");
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn stream_of_flow_mods_survives_any_split(
        mods in vec(flow_mod(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        for (i, fm) in mods.iter().enumerate() {
            let xid = u32::try_from(i).expect("small");
            Message::FlowMod(fm.clone()).encode_into(xid, &mut bytes).expect("encode");
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for w in points.windows(2) {
            d.extend(&bytes[w[0]..w[1]]);
            while let Some((_, msg)) = d.next_message().expect("valid stream") {
                got.push(msg);
            }
        }
        let want: Vec<Message> = mods.into_iter().map(Message::FlowMod).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn nicira_views_round_trip(l in learn(), m in reg_move(), r in reg_load()) {
        prop_assert_eq!(Action::learn(&l).as_learn(), Some(l));
        prop_assert_eq!(Action::reg_move(&m).as_reg_move(), Some(m));
        prop_assert_eq!(Action::reg_load(&r).as_reg_load(), Some(r));
    }

    #[test]
    fn nicira_views_of_garbage_never_panic(subtype in prop::sample::select(vec![6u16, 7, 16]), body in vec(any::<u8>(), 0..120)) {
        let mut data = subtype.to_be_bytes().to_vec();
        data.extend(body);
        let a = Action::Experimenter { experimenter: crate::consts::NX_VENDOR_ID, data };
        let _ = (a.as_learn(), a.as_reg_move(), a.as_reg_load(), a.to_string());
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&bytes);
        let mut d = FrameDecoder::new();
        d.extend(&bytes);
        while let Ok(Some(_)) = d.next_message() {}
    }
}
