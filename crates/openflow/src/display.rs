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
            Raw(raw) => {
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
            Action::Experimenter { experimenter, data } => match self.as_resubmit() {
                Some((port, table)) => {
                    let port = port.map(|p| p.to_string()).unwrap_or_default();
                    write!(f, "resubmit({port},{table})")
                }
                None => {
                    let subtype = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    match subtype {
                        Some(s) => write!(f, "experimenter({experimenter:#x}:{s})"),
                        None => write!(f, "experimenter({experimenter:#x})"),
                    }
                }
            },
            Action::Unknown { action_type, .. } => write!(f, "action(type={action_type})"),
        }
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
