//! ovs-ofctl-like text for flows, for logs and error messages people read,
//! e.g. `cookie=0x1234, table=0, priority=4,in_port=2,dl_vlan=1
//! actions=set_field:4197->vlan_vid,NORMAL`. It follows ovs-ofctl's
//! conventions closely enough to compare by eye; it is not meant to be
//! parsed back or to match ovs-ofctl byte for byte.

use std::fmt::{self, Display, Formatter, Write as _};
use std::net::Ipv4Addr;

use crate::action::Action;
use crate::consts::*;
use crate::flow::{FlowMod, FlowModCommand, FlowStats};
use crate::instruction::Instruction;
use crate::nicira::{Learn, LearnDst, LearnSrc, NxmField, RegLoad, RegMove, Subfield};
use crate::oxm::{Match, OxmField};

/// `OFPP_*` names as ovs-ofctl prints them, numbers otherwise.
fn port_name(port: u32) -> String {
    match port {
        OFPP_IN_PORT => "IN_PORT".into(),
        OFPP_TABLE => "TABLE".into(),
        OFPP_NORMAL => "NORMAL".into(),
        OFPP_FLOOD => "FLOOD".into(),
        OFPP_ALL => "ALL".into(),
        OFPP_CONTROLLER => "CONTROLLER".into(),
        OFPP_LOCAL => "LOCAL".into(),
        OFPP_ANY => "ANY".into(),
        n => n.to_string(),
    }
}

/// `/24` for a prefix mask, `/255.0.255.0` otherwise.
fn ip_masked(v: Ipv4Addr, m: Option<Ipv4Addr>) -> String {
    match m {
        None => v.to_string(),
        Some(m) => {
            let bits = m.to_bits();
            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                format!("{v}/{}", bits.leading_ones())
            } else {
                format!("{v}/{m}")
            }
        }
    }
}

fn masked<T: Display>(v: T, m: Option<T>) -> String {
    match m {
        None => v.to_string(),
        Some(m) => format!("{v}/{m}"),
    }
}

/// `0x64`, `0x64/0xff`: how ovs-ofctl writes a tunnel key.
fn hex_masked(v: u64, m: Option<u64>) -> String {
    match m {
        None => format!("{v:#x}"),
        Some(m) => format!("{v:#x}/{m:#x}"),
    }
}

/// A number as OVS's `%#x` prints it: `0` for zero, `0x64` otherwise.
fn c_hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

/// Big-endian bytes as OVS's `ds_put_hex` prints them: leading zero
/// bytes skipped, `0` when all are zero.
fn ovs_hex(bytes: &[u8]) -> String {
    match bytes.iter().position(|b| *b != 0) {
        None => "0".into(),
        Some(first) => {
            let mut s = format!("{:#x}", bytes[first]);
            for b in &bytes[first + 1..] {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::from("0x"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl OxmField {
    /// The OXM name ovs-ofctl uses in `set_field:VALUE->NAME`, and the value.
    fn oxm_name_value(&self) -> (String, String) {
        use OxmField::*;
        let (name, value) = match self {
            InPort(p) => ("in_port", port_name(*p)),
            EthDst(v, m) => ("eth_dst", masked(v, m.as_ref())),
            EthSrc(v, m) => ("eth_src", masked(v, m.as_ref())),
            EthType(t) => ("eth_type", format!("{t:#06x}")),
            VlanVid(v, None) => ("vlan_vid", v.to_string()),
            VlanVid(v, Some(m)) => ("vlan_vid", format!("{v:#06x}/{m:#06x}")),
            VlanPcp(p) => ("vlan_pcp", p.to_string()),
            IpProto(p) => ("ip_proto", p.to_string()),
            Ipv4Src(v, m) => ("ipv4_src", ip_masked(*v, *m)),
            Ipv4Dst(v, m) => ("ipv4_dst", ip_masked(*v, *m)),
            TcpSrc(p) => ("tcp_src", p.to_string()),
            TcpDst(p) => ("tcp_dst", p.to_string()),
            UdpSrc(p) => ("udp_src", p.to_string()),
            UdpDst(p) => ("udp_dst", p.to_string()),
            Icmpv4Type(t) => ("icmpv4_type", t.to_string()),
            Icmpv4Code(c) => ("icmpv4_code", c.to_string()),
            ArpOp(op) => ("arp_op", op.to_string()),
            ArpSpa(v, m) => ("arp_spa", ip_masked(*v, *m)),
            ArpTpa(v, m) => ("arp_tpa", ip_masked(*v, *m)),
            ArpSha(v, m) => ("arp_sha", masked(v, m.as_ref())),
            ArpTha(v, m) => ("arp_tha", masked(v, m.as_ref())),
            Icmpv6Type(t) => ("icmpv6_type", t.to_string()),
            Ipv6NdTarget(a) => ("nd_target", a.to_string()),
            TunnelId(v, m) => ("tun_id", hex_masked(*v, *m)),
            Raw(raw) => {
                if let Some((v, m)) = self.tunnel_id() {
                    return ("tun_id".into(), hex_masked(v, m));
                }
                let name = format!(
                    "oxm({:#06x}:{}{})",
                    raw.class,
                    raw.field,
                    if raw.has_mask { ",masked" } else { "" }
                );
                return (name, hex(&raw.payload));
            }
        };
        (name.to_string(), value)
    }
}

/// One match term as ovs-ofctl writes it, e.g. `dl_vlan=1`,
/// `nw_src=10.0.0.0/24`, `dl_vlan=0xffff` for "no VLAN".
impl Display for OxmField {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        use OxmField::*;
        match self {
            InPort(p) => write!(f, "in_port={}", port_name(*p)),
            EthDst(v, m) => write!(f, "dl_dst={}", masked(v, m.as_ref())),
            EthSrc(v, m) => write!(f, "dl_src={}", masked(v, m.as_ref())),
            EthType(t) => write!(f, "dl_type={t:#06x}"),
            VlanVid(v, None) if v & OFPVID_PRESENT != 0 => write!(f, "dl_vlan={}", v & 0x0fff),
            VlanVid(OFPVID_NONE, None) => write!(f, "dl_vlan=0xffff"),
            VlanVid(v, None) => write!(f, "vlan_vid={v:#06x}"),
            VlanVid(v, Some(m)) => write!(f, "vlan_vid={v:#06x}/{m:#06x}"),
            VlanPcp(p) => write!(f, "dl_vlan_pcp={p}"),
            IpProto(p) => write!(f, "nw_proto={p}"),
            Ipv4Src(v, m) => write!(f, "nw_src={}", ip_masked(*v, *m)),
            Ipv4Dst(v, m) => write!(f, "nw_dst={}", ip_masked(*v, *m)),
            Icmpv4Type(t) => write!(f, "icmp_type={t}"),
            Icmpv4Code(c) => write!(f, "icmp_code={c}"),
            Icmpv6Type(t) => write!(f, "icmp_type={t}"),
            other => {
                let (name, value) = other.oxm_name_value();
                write!(f, "{name}={value}")
            }
        }
    }
}

/// The protocol shorthand ovs-ofctl prints first (`arp`, `tcp`, …) and
/// whether it covers ip_proto too.
fn shorthand(m: &Match) -> Option<(&'static str, bool)> {
    let eth_type = m.fields().iter().find_map(|f| match f {
        OxmField::EthType(t) => Some(*t),
        _ => None,
    })?;
    let proto = m.fields().iter().find_map(|f| match f {
        OxmField::IpProto(p) => Some(*p),
        _ => None,
    });
    Some(match (eth_type, proto) {
        (ETH_TYPE_IPV4, Some(IP_PROTO_TCP)) => ("tcp", true),
        (ETH_TYPE_IPV4, Some(IP_PROTO_UDP)) => ("udp", true),
        (ETH_TYPE_IPV4, Some(IP_PROTO_ICMP)) => ("icmp", true),
        (ETH_TYPE_IPV4, _) => ("ip", false),
        (ETH_TYPE_ARP, _) => ("arp", false),
        (ETH_TYPE_IPV6, _) => ("ipv6", false),
        _ => return None,
    })
}

/// Comma-separated match terms; empty for the empty match.
impl Display for Match {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let short = shorthand(self);
        let mut terms: Vec<String> = Vec::new();
        if let Some((name, _)) = short {
            terms.push(name.to_string());
        }
        for field in self.fields() {
            match field {
                OxmField::EthType(_) if short.is_some() => {}
                OxmField::IpProto(_) if matches!(short, Some((_, true))) => {}
                other => terms.push(other.to_string()),
            }
        }
        f.write_str(&terms.join(","))
    }
}

impl Display for Action {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output {
                port: OFPP_CONTROLLER,
                max_len,
            } => write!(f, "CONTROLLER:{max_len}"),
            Action::Output { port, .. } if *port > OFPP_MAX => f.write_str(&port_name(*port)),
            Action::Output { port, .. } => write!(f, "output:{port}"),
            Action::PushVlan(ethertype) => write!(f, "push_vlan:{ethertype:#06x}"),
            Action::PopVlan => f.write_str("pop_vlan"),
            Action::SetField(field) => {
                let (name, value) = field.oxm_name_value();
                write!(f, "set_field:{value}->{name}")
            }
            Action::Group(id) => write!(f, "group:{id}"),
            Action::SetQueue(id) => write!(f, "set_queue:{id}"),
            Action::Experimenter { experimenter, data } => {
                if let Some((port, table)) = self.as_resubmit() {
                    let port = port.map(|p| p.to_string()).unwrap_or_default();
                    return write!(f, "resubmit({port},{table})");
                }
                if let Some(key) = self.as_set_tunnel() {
                    return match u32::try_from(key) {
                        Ok(_) => write!(f, "set_tunnel:{key:#x}"),
                        Err(_) => write!(f, "set_tunnel64:{key:#x}"),
                    };
                }
                if let Some(learn) = self.as_learn() {
                    return write!(f, "{learn}");
                }
                if let Some(m) = self.as_reg_move() {
                    return write!(f, "{m}");
                }
                if let Some(l) = self.as_reg_load() {
                    return write!(f, "{l}");
                }
                let subtype = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match subtype {
                    Some(s) => write!(f, "experimenter({experimenter:#x}:{s})"),
                    None => write!(f, "experimenter({experimenter:#x})"),
                }
            }
            Action::Unknown { action_type, .. } => write!(f, "action(type={action_type})"),
        }
    }
}

/// `NXM_OF_ETH_SRC`, or `nxm(0x0001:40)` for a field without a name here.
impl Display for NxmField {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "nxm({:#06x}:{})", self.class, self.field),
        }
    }
}

/// `NXM_OF_ETH_SRC[]`, `NXM_OF_VLAN_TCI[0..11]`, `NXM_NX_REG0[5]`.
impl Display for Subfield {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.is_whole() {
            write!(f, "{}[]", self.field)
        } else if self.n_bits == 1 {
            write!(f, "{}[{}]", self.field, self.ofs)
        } else {
            let last = u32::from(self.ofs) + u32::from(self.n_bits).max(1) - 1;
            write!(f, "{}[{}..{last}]", self.field, self.ofs)
        }
    }
}

/// `move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]`.
impl Display for RegMove {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "move:{}->{}", self.src(), self.dst())
    }
}

/// `load:0x64->NXM_NX_TUN_ID[]`.
impl Display for RegLoad {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "load:{}->{}", c_hex(self.value), self.dst)
    }
}

/// As ovs-ofctl writes it (`lib/learn.c` `learn_format`): the
/// parameters that differ from their defaults, then each spec. A constant
/// matched against a whole field is written `FIELD[]=0x…`, where
/// ovs-ofctl would write the field's own name and value syntax.
impl Display for Learn {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "learn(table={}", self.table_id)?;
        for (name, value) in [
            ("idle_timeout", self.idle_timeout),
            ("hard_timeout", self.hard_timeout),
            ("fin_idle_timeout", self.fin_idle_timeout),
            ("fin_hard_timeout", self.fin_hard_timeout),
        ] {
            if value != 0 {
                write!(f, ",{name}={value}")?;
            }
        }
        // OFP_DEFAULT_PRIORITY is left out.
        if self.priority != 0x8000 {
            write!(f, ",priority={}", self.priority)?;
        }
        if self.flags & crate::nicira::NX_LEARN_F_SEND_FLOW_REM != 0 {
            f.write_str(",send_flow_rem")?;
        }
        if self.flags & crate::nicira::NX_LEARN_F_DELETE_LEARNED != 0 {
            f.write_str(",delete_learned")?;
        }
        if self.cookie != 0 {
            write!(f, ",cookie={:#x}", self.cookie)?;
        }
        for spec in &self.specs {
            let imm = match &spec.src {
                LearnSrc::Immediate(v) => {
                    let n_bytes = usize::from(spec.n_bits).div_ceil(8);
                    Some(ovs_hex(&v[v.len().saturating_sub(n_bytes)..]))
                }
                LearnSrc::Field { .. } => None,
            };
            let src = spec.src_subfield();
            let dst = spec.dst_subfield();
            f.write_str(",")?;
            match (spec.dst, imm, src, dst) {
                (LearnDst::Match { .. }, Some(imm), _, Some(dst)) => write!(f, "{dst}={imm}")?,
                (LearnDst::Match { .. }, None, Some(src), Some(dst)) => {
                    write!(f, "{dst}")?;
                    if (src.field, src.ofs) != (dst.field, dst.ofs) {
                        write!(f, "={src}")?;
                    }
                }
                (LearnDst::Load { .. }, Some(imm), _, Some(dst)) => write!(f, "load:{imm}->{dst}")?,
                (LearnDst::Load { .. }, None, Some(src), Some(dst)) => {
                    write!(f, "load:{src}->{dst}")?
                }
                (LearnDst::Output, _, Some(src), _) => write!(f, "output:{src}")?,
                // Not built by as_learn (an output from a constant).
                _ => f.write_str("?")?,
            }
        }
        f.write_str(")")
    }
}

fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Display for Instruction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Instruction::ApplyActions(actions) => f.write_str(&join(actions)),
            Instruction::WriteActions(actions) => write!(f, "write_actions({})", join(actions)),
            Instruction::ClearActions => f.write_str("clear_actions"),
            Instruction::WriteMetadata { metadata, mask } => {
                write!(f, "write_metadata:{metadata:#x}/{mask:#x}")
            }
            Instruction::GotoTable(t) => write!(f, "goto_table:{t}"),
            Instruction::Meter(m) => write!(f, "meter:{m}"),
            Instruction::Unknown {
                instruction_type, ..
            } => write!(f, "instruction(type={instruction_type})"),
        }
    }
}

/// `actions=…`, `drop` when nothing would be done.
fn write_actions(f: &mut Formatter<'_>, instructions: &[Instruction]) -> fmt::Result {
    let parts: Vec<String> = instructions
        .iter()
        .map(ToString::to_string)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        f.write_str(" actions=drop")
    } else {
        write!(f, " actions={}", parts.join(","))
    }
}

fn write_priority_and_match(f: &mut Formatter<'_>, priority: u16, m: &Match) -> fmt::Result {
    write!(f, "priority={priority}")?;
    if !m.is_empty() {
        write!(f, ",{m}")?;
    }
    Ok(())
}

fn table_name(table: u8) -> String {
    if table == OFPTT_ALL {
        "ALL".into()
    } else {
        table.to_string()
    }
}

/// An add reads like a line of `ovs-ofctl dump-flows --no-stats`; other
/// commands are prefixed with their verb (`delete_strict: …`).
impl Display for FlowMod {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.command != FlowModCommand::Add {
            write!(f, "{}: ", self.command.name())?;
        }
        write!(f, "cookie={:#x}", self.cookie)?;
        if self.cookie_mask != 0 && self.command != FlowModCommand::Add {
            write!(f, "/{:#x}", self.cookie_mask)?;
        }
        write!(f, ", table={}, ", table_name(self.table_id))?;
        if self.idle_timeout != 0 {
            write!(f, "idle_timeout={}, ", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, "hard_timeout={}, ", self.hard_timeout)?;
        }
        match self.command {
            FlowModCommand::Delete => {
                if !self.match_.is_empty() {
                    write!(f, "{}", self.match_)?;
                } else {
                    f.write_str("*")?;
                }
                Ok(())
            }
            FlowModCommand::DeleteStrict => {
                write_priority_and_match(f, self.priority, &self.match_)
            }
            _ => {
                write_priority_and_match(f, self.priority, &self.match_)?;
                write_actions(f, &self.instructions)
            }
        }
    }
}

/// Like a line of `ovs-ofctl dump-flows`, counters included.
impl Display for FlowStats {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cookie={:#x}, duration={}.{:03}s, table={}, n_packets={}, n_bytes={}, ",
            self.cookie,
            self.duration_sec,
            self.duration_nsec / 1_000_000,
            self.table_id,
            self.packet_count,
            self.byte_count
        )?;
        if self.idle_timeout != 0 {
            write!(f, "idle_timeout={}, ", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, "hard_timeout={}, ", self.hard_timeout)?;
        }
        write_priority_and_match(f, self.priority, &self.match_)?;
        write_actions(f, &self.instructions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oxm::MacAddr;

    #[test]
    fn neutron_vlan_flow_reads_like_ofctl() {
        let fm = FlowMod::add(
            0,
            4,
            Match::new().in_port(2).vlan_vid(Some(1)),
            vec![Action::set_vlan_vid(101), Action::normal()],
        )
        .with_cookie(0x1234);
        assert_eq!(
            fm.to_string(),
            "cookie=0x1234, table=0, priority=4,in_port=2,dl_vlan=1 \
             actions=set_field:4197->vlan_vid,NORMAL"
        );
    }

    #[test]
    fn drops_normal_and_shorthands() {
        assert_eq!(
            FlowMod::add(0, 2, Match::new().in_port(7), vec![]).to_string(),
            "cookie=0x0, table=0, priority=2,in_port=7 actions=drop"
        );
        assert_eq!(
            FlowMod::add(0, 0, Match::new(), vec![Action::normal()]).to_string(),
            "cookie=0x0, table=0, priority=0 actions=NORMAL"
        );
        let arp = Match::new()
            .eth_type(ETH_TYPE_ARP)
            .in_port(5)
            .arp_spa(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(arp.to_string(), "arp,in_port=5,arp_spa=10.0.0.3");
        let tcp = Match::new()
            .eth_type(ETH_TYPE_IPV4)
            .ip_proto(IP_PROTO_TCP)
            .ipv4_src_masked(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
            .tcp_dst(22);
        assert_eq!(tcp.to_string(), "tcp,nw_src=10.1.0.0/16,tcp_dst=22");
        let odd = Match::new()
            .eth_type(ETH_TYPE_IPV4)
            .ip_proto(47)
            .ipv4_dst_masked(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(255, 0, 255, 255));
        assert_eq!(
            odd.to_string(),
            "ip,nw_proto=47,nw_dst=10.0.0.1/255.0.255.255"
        );
    }

    #[test]
    fn vlan_terms() {
        assert_eq!(Match::new().vlan_vid(None).to_string(), "dl_vlan=0xffff");
        assert_eq!(
            Match::new().vlan_vid_masked(0x1000, 0x1000).to_string(),
            "vlan_vid=0x1000/0x1000"
        );
        assert_eq!(
            Match::new().vlan_vid(Some(4094)).to_string(),
            "dl_vlan=4094"
        );
    }

    #[test]
    fn other_actions_and_instructions() {
        let fm = FlowMod::add(
            24,
            2,
            Match::new().eth_dst(MacAddr([0xfa, 0x16, 0x3e, 0, 0, 1])),
            vec![],
        )
        .with_instructions(vec![
            Instruction::GotoTable(60),
            Instruction::ApplyActions(vec![
                Action::PushVlan(ETH_TYPE_VLAN),
                Action::PopVlan,
                Action::output(3),
                Action::output(OFPP_CONTROLLER),
                Action::resubmit_table(24),
                Action::Group(1),
            ]),
            Instruction::ClearActions,
        ]);
        assert_eq!(
            fm.to_string(),
            "cookie=0x0, table=24, priority=2,dl_dst=fa:16:3e:00:00:01 \
             actions=push_vlan:0x8100,pop_vlan,output:3,CONTROLLER:65535,resubmit(,24),group:1,\
             clear_actions,goto_table:60"
        );
    }

    /// The actions of Liberty's br-tun flows read exactly as
    /// `ovs-ofctl -O OpenFlow13 dump-flows` (OVS 3.1) prints them.
    #[test]
    fn br_tun_actions_read_like_ofctl() {
        use crate::nicira::{NxmField, RegLoad, RegMove, Subfield};
        let mac = MacAddr([0xfa, 0x16, 0x3e, 0, 0, 0x22]);
        let ip = Ipv4Addr::new(192, 168, 1, 22);
        let mv = |a, b| Action::reg_move(&RegMove::whole(a, b).expect("same width"));
        let cases: Vec<(Vec<Action>, &str)> = vec![
            (
                vec![
                    Action::learn(&crate::nicira::tests::liberty_learn()),
                    Action::output(1),
                ],
                "learn(table=20,hard_timeout=300,priority=1,NXM_OF_VLAN_TCI[0..11],\
                 NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
                 load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:1",
            ),
            (
                vec![
                    Action::PushVlan(ETH_TYPE_VLAN),
                    Action::set_vlan_vid(1),
                    Action::resubmit_table(10),
                ],
                "push_vlan:0x8100,set_field:4097->vlan_vid,resubmit(,10)",
            ),
            (
                vec![Action::PopVlan, Action::set_tunnel(0x64), Action::output(2)],
                "pop_vlan,set_tunnel:0x64,output:2",
            ),
            (
                vec![
                    Action::PopVlan,
                    Action::set_field(OxmField::TunnelId(0x64, None)),
                    Action::output(2),
                ],
                "pop_vlan,set_field:0x64->tun_id,output:2",
            ),
            (
                vec![
                    mv(NxmField::ETH_SRC, NxmField::ETH_DST),
                    Action::set_field(OxmField::EthSrc(mac, None)),
                    Action::set_field(OxmField::ArpOp(2)),
                    mv(NxmField::ARP_SHA, NxmField::ARP_THA),
                    mv(NxmField::ARP_SPA, NxmField::ARP_TPA),
                    Action::set_field(OxmField::ArpSha(mac, None)),
                    Action::set_field(OxmField::ArpSpa(ip, None)),
                    Action::output(OFPP_IN_PORT),
                ],
                "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:fa:16:3e:00:00:22->eth_src,\
                 set_field:2->arp_op,move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
                 move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:fa:16:3e:00:00:22->arp_sha,\
                 set_field:192.168.1.22->arp_spa,IN_PORT",
            ),
            // What a flow learned by the first one does.
            (
                vec![
                    Action::reg_load(&RegLoad {
                        dst: Subfield::whole(NxmField::VLAN_TCI),
                        value: 0,
                    }),
                    Action::reg_load(&RegLoad {
                        dst: Subfield::whole(NxmField::TUN_ID),
                        value: 0x64,
                    }),
                    Action::output(2),
                ],
                "load:0->NXM_OF_VLAN_TCI[],load:0x64->NXM_NX_TUN_ID[],output:2",
            ),
        ];
        for (actions, text) in cases {
            assert_eq!(Instruction::ApplyActions(actions).to_string(), text);
        }
    }

    #[test]
    fn br_tun_matches_read_like_ofctl() {
        assert_eq!(Match::new().tunnel_id(0x64).to_string(), "tun_id=0x64");
        assert_eq!(
            Match::new().tunnel_id_masked(0x64, 0xff).to_string(),
            "tun_id=0x64/0xff"
        );
        let nxm = OxmField::Raw(crate::oxm::RawOxm {
            class: crate::oxm::OFPXMC_NXM_1,
            field: crate::oxm::NXM_NX_TUN_ID,
            has_mask: false,
            payload: vec![0, 0, 0, 0, 0, 0, 0, 0x64],
        });
        assert_eq!(nxm.to_string(), "tun_id=0x64");
        assert_eq!(
            Match::new()
                .eth_dst_masked(MacAddr([1, 0, 0, 0, 0, 0]), MacAddr([1, 0, 0, 0, 0, 0]))
                .to_string(),
            "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
        );
        let arp = Match::new()
            .eth_type(ETH_TYPE_ARP)
            .vlan_vid(Some(1))
            .arp_tpa(Ipv4Addr::new(192, 168, 1, 22));
        assert_eq!(arp.to_string(), "arp,dl_vlan=1,arp_tpa=192.168.1.22");
    }

    #[test]
    fn subfields_and_odd_learn_specs() {
        use crate::nicira::{LearnDst, LearnSpec, LearnSrc, NxmField, Subfield};
        let reg0 = NxmField {
            class: 1,
            field: 0,
            len: 4,
        };
        assert_eq!(Subfield::whole(reg0).to_string(), "nxm(0x0001:0)[]");
        let bit = Subfield {
            field: reg0,
            ofs: 5,
            n_bits: 1,
        };
        assert_eq!(bit.to_string(), "nxm(0x0001:0)[5]");
        let mut learn = crate::nicira::tests::liberty_learn();
        learn.priority = 0x8000;
        learn.cookie = 0x99;
        learn.idle_timeout = 10;
        learn.specs = vec![
            LearnSpec {
                n_bits: 16,
                src: LearnSrc::Immediate(vec![0, 99]),
                dst: LearnDst::Match {
                    field: NxmField::IN_PORT,
                    ofs: 0,
                },
            },
            LearnSpec {
                n_bits: 32,
                src: LearnSrc::Field {
                    field: NxmField::ARP_SPA,
                    ofs: 0,
                },
                dst: LearnDst::Match {
                    field: NxmField::ARP_SPA,
                    ofs: 0,
                },
            },
        ];
        assert_eq!(
            Action::learn(&learn).to_string(),
            "learn(table=20,idle_timeout=10,hard_timeout=300,cookie=0x99,\
             NXM_OF_IN_PORT[]=0x63,NXM_OF_ARP_SPA[])"
        );
    }

    #[test]
    fn deletes_name_their_verb() {
        assert_eq!(
            FlowMod::delete_by_cookie(0xab).to_string(),
            "delete: cookie=0xab/0xffffffffffffffff, table=ALL, *"
        );
        assert_eq!(
            FlowMod::delete_strict(0, 2, Match::new().in_port(1)).to_string(),
            "delete_strict: cookie=0x0, table=0, priority=2,in_port=1"
        );
    }

    #[test]
    fn flow_stats_show_counters() {
        let fs = FlowStats {
            table_id: 0,
            duration_sec: 3,
            duration_nsec: 250_000_000,
            priority: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: 1,
            packet_count: 4,
            byte_count: 256,
            match_: Match::new(),
            instructions: vec![Instruction::ApplyActions(vec![Action::normal()])],
        };
        assert_eq!(
            fs.to_string(),
            "cookie=0x1, duration=3.250s, table=0, n_packets=4, n_bytes=256, priority=0 actions=NORMAL"
        );
    }
}
