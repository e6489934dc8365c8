//! A bridge's flows over OpenFlow 1.3: read back as [`FlowSpec`]s where the
//! planner could have made them, and changed in one batch ended by a
//! barrier.
//!
//! Ports are named in the plan and numbered on the wire; the numbers come
//! from OVSDB (`Interface.ofport`), so a flow naming a port that has no
//! number yet cannot be installed and is reported as an error.
//!
//! The plan speaks Neutron's OpenFlow 1.0 vocabulary (what the agent's
//! `ovs-ofctl add-flows` wrote); each [`FlowAction`] is one OpenFlow 1.3
//! action, so that a dumped flow maps back to the same list:
//!
//! | plan | OpenFlow 1.3 | `ovs-ofctl -O OpenFlow13` prints |
//! |---|---|---|
//! | `PushVlan`, `ModVlanVid(1)` | push_vlan, set_field vlan_vid | `push_vlan:0x8100,set_field:4097->vlan_vid` |
//! | `StripVlan` | pop_vlan | `pop_vlan` |
//! | `SetTunnel(0x64)` | NXAST_SET_TUNNEL (read back as set_field tunnel_id) | `set_field:0x64->tun_id` |
//! | `SetEthSrc`, `SetArpOp`, `SetArpSha`, `SetArpSpa` | set_field | `set_field:2->arp_op`, … |
//! | `Move(EthSrc, EthDst)` | NXAST_REG_MOVE | `move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]` |
//! | `LearnFromTunnel` | NXAST_LEARN | `learn(table=20,…)` |
//! | `InPort` | output OFPP_IN_PORT | `IN_PORT` |

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ovslab_openflow::{
    Action, Client, ETH_TYPE_ARP, ETH_TYPE_IPV6, ETH_TYPE_VLAN, FlowMod, FlowStats,
    FlowStatsRequest, ICMPV6_NEIGHBOR_ADVERT, IP_PROTO_ICMPV6, Instruction, Learn, LearnDst,
    LearnSpec, LearnSrc, MacAddr, Match, NxmField, OFPP_IN_PORT, OFPP_MAX, OFPP_NORMAL,
    OFPVID_PRESENT, OxmField, RegLoad, RegMove, Subfield,
};
use ovslab_topology::plan::{FlowAction, FlowSpec, MacMatch, MoveField, VlanMatch};

use crate::ReconcileError;
use crate::host::ReadFlow;
use crate::ovs_process::NodeOvs;

/// An OpenFlow connection to one bridge of one node.
#[derive(Debug, Clone)]
pub struct FlowClient {
    node: String,
    bridge: String,
    client: Client,
}

impl FlowClient {
    fn err(&self, source: ovslab_openflow::OpenflowError) -> ReconcileError {
        ReconcileError::openflow(&self.node, &self.bridge, source)
    }
}

/// A flow present on a bridge, kept whole so it can be deleted exactly.
#[derive(Debug, Clone)]
pub struct PresentFlow(pub FlowStats);

impl fmt::Display for PresentFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Connects to `<rundir>/<bridge>.mgmt`.
pub async fn connect(node: &NodeOvs, bridge: &str) -> Result<FlowClient, ReconcileError> {
    let path = node.rundir.join(format!("{bridge}.mgmt"));
    let client = Client::connect(&path)
        .await
        .map_err(|source| ReconcileError::openflow(&node.node, bridge, source))?;
    Ok(FlowClient {
        node: node.node.clone(),
        bridge: bridge.to_string(),
        client,
    })
}

/// Every flow of the bridge, each with its [`FlowSpec`] and cookie when it
/// is one the planner could have made, except the flows the datapath
/// learned (see [`is_learned`]).
pub async fn read(
    client: &FlowClient,
    bridge: &str,
    ports: &BTreeMap<String, u32>,
) -> Result<Vec<ReadFlow<PresentFlow>>, ReconcileError> {
    let flows = client
        .client
        .dump_flows(FlowStatsRequest::default())
        .await
        .map_err(|e| client.err(e))?;
    Ok(present(bridge, flows, ports))
}

/// [`read`] without the socket: learned flows left out, every other flow
/// paired with the [`FlowSpec`] it stands for, if any.
fn present(
    bridge: &str,
    flows: Vec<FlowStats>,
    ports: &BTreeMap<String, u32>,
) -> Vec<ReadFlow<PresentFlow>> {
    let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
    flows
        .into_iter()
        .filter(|stats| !is_learned(stats))
        .map(|stats| {
            (
                to_spec(bridge, &stats, &names).map(|s| (s, stats.cookie)),
                PresentFlow(stats),
            )
        })
        .collect()
}

/// br-tun's table 10 as Liberty's `br_tun.py` writes it
/// ([`FlowAction::LearnFromTunnel`]): for a frame that came out of a
/// tunnel, a table-20 flow that sends frames to its source MAC on its
/// local VLAN back into that tunnel with its key, for five minutes, with
/// `cookie` (the agent's, as `setup_default_table` puts its
/// `agent_uuid_stamp` in the learn spec, so that learned flows carry it):
/// `learn(table=20,hard_timeout=300,priority=1,cookie=<cookie>,
/// NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],
/// load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],
/// output:NXM_OF_IN_PORT[])`.
pub fn learn_from_tunnel(cookie: u64) -> Learn {
    let field = |field: NxmField| LearnSrc::Field { field, ofs: 0 };
    let spec = |n_bits, src, dst| LearnSpec { n_bits, src, dst };
    Learn {
        idle_timeout: 0,
        hard_timeout: 300,
        priority: 1,
        cookie,
        flags: 0,
        table_id: 20,
        fin_idle_timeout: 0,
        fin_hard_timeout: 0,
        specs: vec![
            spec(
                12,
                field(NxmField::VLAN_TCI),
                LearnDst::Match {
                    field: NxmField::VLAN_TCI,
                    ofs: 0,
                },
            ),
            spec(
                48,
                field(NxmField::ETH_SRC),
                LearnDst::Match {
                    field: NxmField::ETH_DST,
                    ofs: 0,
                },
            ),
            spec(
                16,
                LearnSrc::Immediate(vec![0, 0]),
                LearnDst::Load {
                    field: NxmField::VLAN_TCI,
                    ofs: 0,
                },
            ),
            spec(
                64,
                field(NxmField::TUN_ID),
                LearnDst::Load {
                    field: NxmField::TUN_ID,
                    ofs: 0,
                },
            ),
            spec(16, field(NxmField::IN_PORT), LearnDst::Output),
        ],
    }
}

/// Whether a flow is one that [`learn_from_tunnel`] made: br-tun's MAC
/// table, which belongs to the datapath, not to the lab, and must not be
/// deleted as stale (every converge would otherwise flush what the bridge
/// learned).
///
/// OVS marks learned flows with nothing of their own: they carry what the
/// learn action says, here table 20, priority 1, the agent's cookie (the
/// same as the lab's own flows on br-tun) and a hard timeout of 300 s. The
/// lab never installs a flow with a timeout, so the timeout alone tells
/// them apart from the lab's flows and from any flow a person adds by hand
/// with ovs-ofctl; table and priority narrow it to this learn action. The
/// cookie is not looked at: a learned flow of an earlier learn action
/// (before learned flows carried the agent's cookie they had 0) is still
/// the datapath's. Keeping one by mistake costs little: it is gone within
/// five minutes.
pub fn is_learned(stats: &FlowStats) -> bool {
    let learn = learn_from_tunnel(stats.cookie);
    stats.hard_timeout != 0
        && stats.hard_timeout == learn.hard_timeout
        && stats.idle_timeout == learn.idle_timeout
        && stats.table_id == learn.table_id
        && stats.priority == learn.priority
}

/// The field a [`FlowAction::Move`] names, as `move:` names it.
fn nxm_field(field: MoveField) -> NxmField {
    match field {
        MoveField::EthSrc => NxmField::ETH_SRC,
        MoveField::EthDst => NxmField::ETH_DST,
        MoveField::ArpSha => NxmField::ARP_SHA,
        MoveField::ArpTha => NxmField::ARP_THA,
        MoveField::ArpSpa => NxmField::ARP_SPA,
        MoveField::ArpTpa => NxmField::ARP_TPA,
    }
}

fn move_field(field: NxmField) -> Option<MoveField> {
    Some(match field {
        NxmField::ETH_SRC => MoveField::EthSrc,
        NxmField::ETH_DST => MoveField::EthDst,
        NxmField::ARP_SHA => MoveField::ArpSha,
        NxmField::ARP_THA => MoveField::ArpTha,
        NxmField::ARP_SPA => MoveField::ArpSpa,
        NxmField::ARP_TPA => MoveField::ArpTpa,
        _ => return None,
    })
}

/// The multicast bit of a MAC address, the mask of [`MacMatch::Unicast`]
/// and [`MacMatch::Multicast`].
const MULTICAST_BIT: MacAddr = MacAddr([1, 0, 0, 0, 0, 0]);

/// ovs-ofctl-like text of a planned flow, ports by name, in the words
/// Neutron's agent gave `ovs-ofctl add-flows` (OpenFlow 1.0: `strip_vlan`,
/// `set_tunnel:0x64`, `load:0x2->NXM_OF_ARP_OP[]`); matches in the order
/// ovs-ofctl prints them.
pub fn describe(spec: &FlowSpec) -> String {
    let mut s = format!("table={}, priority={}", spec.table, spec.priority);
    if spec.arp {
        s.push_str(",arp");
    }
    if spec.neighbor_advert {
        s.push_str(",icmp6,icmp_type=136");
    }
    if let Some(key) = spec.tun_id {
        s.push_str(&format!(",tun_id={key:#x}"));
    }
    if let Some(p) = &spec.in_port {
        s.push_str(&format!(",in_port={p}"));
    }
    match spec.dl_vlan {
        Some(VlanMatch::Id(v)) => s.push_str(&format!(",dl_vlan={v}")),
        Some(VlanMatch::Untagged) => s.push_str(",vlan_tci=0x0000"),
        None => {}
    }
    match spec.dl_dst {
        Some(MacMatch::Exact(mac)) => s.push_str(&format!(",dl_dst={}", MacAddr(mac))),
        Some(MacMatch::Unicast) => s.push_str(",dl_dst=00:00:00:00:00:00/01:00:00:00:00:00"),
        Some(MacMatch::Multicast) => s.push_str(",dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"),
        None => {}
    }
    if let Some(mac) = spec.dl_src {
        s.push_str(&format!(",dl_src={}", MacAddr(mac)));
    }
    if let Some(ip) = spec.nd_target {
        s.push_str(&format!(",nd_target={ip}"));
    }
    if let Some(ip) = spec.arp_spa {
        s.push_str(&format!(",arp_spa={ip}"));
    }
    if let Some(ip) = spec.arp_tpa {
        s.push_str(&format!(",arp_tpa={ip}"));
    }
    s.push_str(" actions=");
    if spec.actions.is_empty() {
        s.push_str("drop");
    }
    let whole = |f: MoveField| Subfield::whole(nxm_field(f));
    let load = |field, value| {
        let dst = Subfield::whole(field);
        RegLoad { dst, value }.to_string()
    };
    let actions: Vec<String> = spec
        .actions
        .iter()
        .map(|a| match a {
            FlowAction::ModVlanVid(v) => format!("mod_vlan_vid:{v}"),
            FlowAction::PushVlan => format!("push_vlan:{ETH_TYPE_VLAN:#06x}"),
            FlowAction::StripVlan => "strip_vlan".to_string(),
            FlowAction::SetTunnel(key) => format!("set_tunnel:{key:#x}"),
            FlowAction::Output(port) => format!("output:{port}"),
            FlowAction::InPort => "IN_PORT".to_string(),
            FlowAction::Normal => "NORMAL".to_string(),
            FlowAction::Resubmit(t) => format!("resubmit(,{t})"),
            // The learned flows' cookie is the flow's own, which the text
            // leaves out here as it does for the flow.
            FlowAction::LearnFromTunnel => learn_from_tunnel(0).to_string(),
            FlowAction::Move(from, to) => format!("move:{}->{}", whole(*from), whole(*to)),
            FlowAction::SetEthSrc(mac) => format!("mod_dl_src:{}", MacAddr(*mac)),
            FlowAction::SetArpOp(op) => load(NxmField::ARP_OP, u64::from(*op)),
            FlowAction::SetArpSha(mac) => load(NxmField::ARP_SHA, mac_number(*mac)),
            FlowAction::SetArpSpa(ip) => load(NxmField::ARP_SPA, u64::from(ip.to_bits())),
        })
        .collect();
    s.push_str(&actions.join(","));
    s
}

/// A MAC address as the number ovs-ofctl's `load:` writes.
fn mac_number(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0, |n, b| n << 8 | u64::from(*b))
}

/// Deletes `delete` (exactly, by table, priority and match) and adds `add`
/// with the lab's cookie, in one batch ended by one barrier.
pub async fn apply(
    client: &FlowClient,
    bridge: &str,
    cookie: u64,
    ports: &BTreeMap<String, u32>,
    add: &[FlowSpec],
    delete: &[&PresentFlow],
) -> Result<(), ReconcileError> {
    let mut mods = Vec::with_capacity(add.len() + delete.len());
    for PresentFlow(f) in delete {
        mods.push(FlowMod::delete_strict(
            f.table_id,
            f.priority,
            f.match_.clone(),
        ));
    }
    for spec in add {
        let fm = to_flow_mod(spec, cookie, ports).map_err(|why| match why {
            Unbuildable::PortWithoutNumber(port) => ReconcileError::PortWithoutNumber {
                node: client.node.clone(),
                bridge: bridge.to_string(),
                flow: describe(spec),
                port,
            },
            Unbuildable::MoveWidths(from, to) => ReconcileError::FlowNotBuildable {
                node: client.node.clone(),
                bridge: bridge.to_string(),
                flow: describe(spec),
                reason: format!(
                    "move from {} to {}: the fields differ in width",
                    nxm_field(from),
                    nxm_field(to)
                ),
            },
        })?;
        mods.push(fm);
    }
    let (count, started) = (mods.len(), std::time::Instant::now());
    let result = client.client.apply(mods).await.map_err(|e| client.err(e));
    // How long batches take, against their deadline.
    tracing::debug!(
        node = client.node,
        bridge,
        flow_mods = count,
        ms = started.elapsed().as_millis() as u64,
        "flow batch"
    );
    result
}

/// Why a planned flow cannot become a flow_mod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unbuildable {
    /// It matches on or outputs to a port that has no OpenFlow number yet.
    PortWithoutNumber(String),
    /// A `move:` between fields of different widths, which OVS refuses.
    MoveWidths(MoveField, MoveField),
}

/// The flow_mod that installs `spec` with `cookie`.
fn to_flow_mod(
    spec: &FlowSpec,
    cookie: u64,
    ports: &BTreeMap<String, u32>,
) -> Result<FlowMod, Unbuildable> {
    let port = |name: &String| {
        ports
            .get(name)
            .copied()
            .ok_or_else(|| Unbuildable::PortWithoutNumber(name.clone()))
    };
    let mut m = Match::new();
    if let Some(p) = &spec.in_port {
        m = m.in_port(port(p)?);
    }
    match spec.dl_vlan {
        Some(VlanMatch::Id(v)) => m = m.vlan_vid(Some(v)),
        Some(VlanMatch::Untagged) => m = m.vlan_vid(None),
        None => {}
    }
    match spec.dl_dst {
        Some(MacMatch::Exact(mac)) => m = m.eth_dst(MacAddr(mac)),
        Some(MacMatch::Unicast) => m = m.eth_dst_masked(MacAddr([0; 6]), MULTICAST_BIT),
        Some(MacMatch::Multicast) => m = m.eth_dst_masked(MULTICAST_BIT, MULTICAST_BIT),
        None => {}
    }
    if let Some(key) = spec.tun_id {
        m = m.tunnel_id(u64::from(key));
    }
    if let Some(mac) = spec.dl_src {
        m = m.eth_src(MacAddr(mac));
    }
    if spec.arp {
        m = m.eth_type(ETH_TYPE_ARP);
    }
    if spec.neighbor_advert {
        m = m
            .eth_type(ETH_TYPE_IPV6)
            .ip_proto(IP_PROTO_ICMPV6)
            .icmpv6_type(ICMPV6_NEIGHBOR_ADVERT);
    }
    if let Some(target) = spec.nd_target {
        m = m.ipv6_nd_target(target);
    }
    if let Some(ip) = spec.arp_spa {
        m = m.arp_spa(ip);
    }
    if let Some(ip) = spec.arp_tpa {
        m = m.arp_tpa(ip);
    }
    let mut actions = Vec::with_capacity(spec.actions.len());
    for a in &spec.actions {
        actions.push(match a {
            FlowAction::ModVlanVid(v) => Action::set_vlan_vid(*v),
            FlowAction::PushVlan => Action::PushVlan(ETH_TYPE_VLAN),
            FlowAction::StripVlan => Action::PopVlan,
            FlowAction::SetTunnel(key) => Action::set_tunnel(u64::from(*key)),
            FlowAction::Output(p) => Action::output(port(p)?),
            FlowAction::InPort => Action::output(OFPP_IN_PORT),
            FlowAction::Normal => Action::normal(),
            FlowAction::Resubmit(t) => Action::resubmit_table(*t),
            FlowAction::LearnFromTunnel => Action::learn(&learn_from_tunnel(cookie)),
            FlowAction::Move(from, to) => {
                let m = RegMove::whole(nxm_field(*from), nxm_field(*to))
                    .ok_or(Unbuildable::MoveWidths(*from, *to))?;
                Action::reg_move(&m)
            }
            FlowAction::SetEthSrc(mac) => Action::set_field(OxmField::EthSrc(MacAddr(*mac), None)),
            FlowAction::SetArpOp(op) => Action::set_field(OxmField::ArpOp(*op)),
            FlowAction::SetArpSha(mac) => Action::set_field(OxmField::ArpSha(MacAddr(*mac), None)),
            FlowAction::SetArpSpa(ip) => Action::set_field(OxmField::ArpSpa(*ip, None)),
        });
    }
    Ok(FlowMod::add(spec.table, spec.priority, m, actions).with_cookie(cookie))
}

/// The [`FlowSpec`] a dumped flow stands for, if it is one the planner
/// could have made: every match field and every action must have its
/// counterpart, so that the spec installs exactly this flow again.
fn to_spec(bridge: &str, stats: &FlowStats, names: &BTreeMap<u32, &str>) -> Option<FlowSpec> {
    let mut spec = FlowSpec {
        bridge: bridge.to_string(),
        table: stats.table_id,
        priority: stats.priority,
        ..FlowSpec::default()
    };
    // ICMPv6 neighbour advertisements: the three fields together.
    let (mut ipv6, mut icmpv6) = (false, false);
    for field in stats.match_.fields() {
        match field {
            OxmField::EthType(ETH_TYPE_ARP) => spec.arp = true,
            OxmField::EthType(ETH_TYPE_IPV6) => ipv6 = true,
            OxmField::IpProto(IP_PROTO_ICMPV6) => icmpv6 = true,
            OxmField::Icmpv6Type(ICMPV6_NEIGHBOR_ADVERT) => spec.neighbor_advert = true,
            OxmField::Ipv6NdTarget(target) => spec.nd_target = Some(*target),
            OxmField::EthSrc(mac, None) => spec.dl_src = Some(mac.0),
            OxmField::ArpSpa(ip, None) => spec.arp_spa = Some(*ip),
            OxmField::ArpTpa(ip, None) => spec.arp_tpa = Some(*ip),
            OxmField::InPort(p) => spec.in_port = Some(names.get(p)?.to_string()),
            OxmField::VlanVid(v, None) if v & !0x0fff == OFPVID_PRESENT => {
                spec.dl_vlan = Some(VlanMatch::Id(v & 0x0fff))
            }
            OxmField::VlanVid(0, None) => spec.dl_vlan = Some(VlanMatch::Untagged),
            OxmField::EthDst(mac, None) => spec.dl_dst = Some(MacMatch::Exact(mac.0)),
            OxmField::EthDst(MacAddr([0, 0, 0, 0, 0, 0]), Some(MULTICAST_BIT)) => {
                spec.dl_dst = Some(MacMatch::Unicast)
            }
            OxmField::EthDst(MULTICAST_BIT, Some(MULTICAST_BIT)) => {
                spec.dl_dst = Some(MacMatch::Multicast)
            }
            // Either form of the key, but only once.
            other => match other.tunnel_id() {
                Some((key, None)) if spec.tun_id.is_none() => {
                    spec.tun_id = Some(u32::try_from(key).ok()?)
                }
                _ => return None,
            },
        }
    }
    if (ipv6, icmpv6) != (spec.neighbor_advert, spec.neighbor_advert) {
        return None;
    }
    for instruction in &stats.instructions {
        let Instruction::ApplyActions(list) = instruction else {
            return None;
        };
        for action in list {
            spec.actions
                .push(to_flow_action(action, stats.cookie, names)?);
        }
    }
    Some(spec)
}

/// The [`FlowAction`] an action of a dumped flow stands for. A whole-field
/// `load:` of the ARP fields is read like the set_field the driver writes:
/// it is what ovs-ofctl writes for Neutron's own text, and does the same.
/// `cookie` is the flow's: br-tun's learn action gives the flows it learns
/// that cookie, and one that gives them another (0, as ovslab's did before)
/// stands for no spec, so the converge replaces it.
fn to_flow_action(action: &Action, cookie: u64, names: &BTreeMap<u32, &str>) -> Option<FlowAction> {
    Some(match action {
        Action::Output { port, .. } if *port == OFPP_NORMAL => FlowAction::Normal,
        Action::Output { port, .. } if *port == OFPP_IN_PORT => FlowAction::InPort,
        Action::Output { port, .. } if *port <= OFPP_MAX => {
            FlowAction::Output(names.get(port)?.to_string())
        }
        Action::PushVlan(ETH_TYPE_VLAN) => FlowAction::PushVlan,
        Action::PopVlan => FlowAction::StripVlan,
        Action::SetField(OxmField::VlanVid(v, None)) if v & !0x0fff == OFPVID_PRESENT => {
            FlowAction::ModVlanVid(v & 0x0fff)
        }
        Action::SetField(OxmField::EthSrc(mac, None)) => FlowAction::SetEthSrc(mac.0),
        Action::SetField(OxmField::ArpOp(op)) => FlowAction::SetArpOp(*op),
        Action::SetField(OxmField::ArpSha(mac, None)) => FlowAction::SetArpSha(mac.0),
        Action::SetField(OxmField::ArpSpa(ip, None)) => FlowAction::SetArpSpa(*ip),
        Action::SetField(field) => match field.tunnel_id()? {
            (key, None) => FlowAction::SetTunnel(u32::try_from(key).ok()?),
            _ => return None,
        },
        other => {
            if let Some((None, table)) = other.as_resubmit() {
                FlowAction::Resubmit(table)
            } else if let Some(m) = other.as_reg_move() {
                let (src, dst) = (m.src(), m.dst());
                if !src.is_whole() || !dst.is_whole() {
                    return None;
                }
                FlowAction::Move(move_field(src.field)?, move_field(dst.field)?)
            } else if let Some(key) = other.as_set_tunnel() {
                FlowAction::SetTunnel(u32::try_from(key).ok()?)
            } else if let Some(l) = other.as_reg_load() {
                whole_load(l.dst, l.value)?
            } else if other.as_learn()? == learn_from_tunnel(cookie) {
                FlowAction::LearnFromTunnel
            } else {
                return None;
            }
        }
    })
}

/// A whole-field `load:` of an ARP field, as its set_field.
fn whole_load(dst: Subfield, value: u64) -> Option<FlowAction> {
    if !dst.is_whole() {
        return None;
    }
    let mac = |v: u64| {
        let b = v.to_be_bytes();
        (v >> 48 == 0).then_some([b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    Some(match dst.field {
        NxmField::ARP_OP => FlowAction::SetArpOp(u16::try_from(value).ok()?),
        NxmField::ARP_SHA => FlowAction::SetArpSha(mac(value)?),
        NxmField::ARP_SPA => FlowAction::SetArpSpa(Ipv4Addr::from(u32::try_from(value).ok()?)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::diff_flows;
    use crate::testing::liberty_br_tun;

    fn numbered(ports: &[(&str, u32)]) -> BTreeMap<String, u32> {
        ports.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    /// br-int's ports.
    fn ports() -> BTreeMap<String, u32> {
        numbered(&[("int-br-vlan", 1), ("qvo1", 2)])
    }

    /// br-tun's ports, as in the reference's listing.
    fn tun_ports() -> BTreeMap<String, u32> {
        numbered(&[
            ("patch-int", 1),
            ("vxlan-0a000002", 2),
            ("vxlan-0a000003", 3),
        ])
    }

    fn stats_of(fm: &FlowMod) -> FlowStats {
        FlowStats {
            table_id: fm.table_id,
            duration_sec: 0,
            duration_nsec: 0,
            priority: fm.priority,
            idle_timeout: fm.idle_timeout,
            hard_timeout: fm.hard_timeout,
            flags: 0,
            cookie: fm.cookie,
            packet_count: 0,
            byte_count: 0,
            match_: fm.match_.clone(),
            instructions: fm.instructions.clone(),
        }
    }

    /// Every spec must come back from its own flow_mod, as OVS would dump
    /// it, unchanged: otherwise a second converge would delete and re-add it.
    fn assert_round_trip(bridge: &str, ports: &BTreeMap<String, u32>, specs: &[FlowSpec]) {
        let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
        for spec in specs {
            let fm = to_flow_mod(spec, 0xab, ports).expect("buildable");
            assert_eq!(fm.cookie, 0xab);
            // Through the wire too: the bytes OVS would store and send back.
            let bytes = ovslab_openflow::Message::FlowMod(fm.clone())
                .encode(1)
                .expect("encode");
            let (_, back) = ovslab_openflow::Message::decode(&bytes).expect("decode");
            assert_eq!(back, ovslab_openflow::Message::FlowMod(fm.clone()));
            assert_eq!(
                to_spec(bridge, &stats_of(&fm), &names).as_ref(),
                Some(spec),
                "{}",
                describe(spec)
            );
        }
    }

    #[test]
    fn planned_flows_survive_the_round_trip_through_openflow() {
        let specs = [
            FlowSpec {
                bridge: "br-int".into(),
                table: 0,
                priority: 3,
                in_port: Some("int-br-vlan".into()),
                dl_vlan: Some(VlanMatch::Id(101)),
                arp: false,
                arp_spa: None,
                actions: vec![FlowAction::ModVlanVid(1), FlowAction::Normal],
                ..FlowSpec::default()
            },
            FlowSpec {
                bridge: "br-int".into(),
                table: 0,
                priority: 2,
                in_port: Some("int-br-vlan".into()),
                dl_vlan: None,
                arp: false,
                arp_spa: None,
                actions: vec![],
                ..FlowSpec::default()
            },
            FlowSpec {
                bridge: "br-int".into(),
                table: 24,
                priority: 2,
                in_port: Some("qvo1".into()),
                dl_vlan: None,
                arp: true,
                arp_spa: Some("192.168.1.11".parse().unwrap()),
                actions: vec![FlowAction::Normal],
                ..FlowSpec::default()
            },
            FlowSpec {
                bridge: "br-int".into(),
                table: 0,
                priority: 10,
                in_port: Some("qvo1".into()),
                dl_vlan: None,
                arp: true,
                arp_spa: None,
                actions: vec![FlowAction::Resubmit(24)],
                ..FlowSpec::default()
            },
            FlowSpec {
                bridge: "br-int".into(),
                table: 23,
                priority: 0,
                in_port: None,
                dl_vlan: None,
                arp: false,
                arp_spa: None,
                actions: vec![],
                ..FlowSpec::default()
            },
            // A flat network's frames get a local tag on the way in.
            FlowSpec {
                bridge: "br-int".into(),
                table: 0,
                priority: 3,
                in_port: Some("int-br-vlan".into()),
                dl_vlan: Some(VlanMatch::Untagged),
                actions: vec![
                    FlowAction::PushVlan,
                    FlowAction::ModVlanVid(2),
                    FlowAction::Normal,
                ],
                ..FlowSpec::default()
            },
        ];
        assert_round_trip("br-int", &ports(), &specs);
    }

    #[test]
    fn liberty_br_tun_survives_the_round_trip_through_openflow() {
        assert_round_trip("br-tun", &tun_ports(), &liberty_br_tun());
    }

    /// describe() reads like the agent's own `ovs-ofctl add-flows` text
    /// (the reference's listing), with ports by name.
    #[test]
    fn br_tun_flows_are_described_in_the_agents_words() {
        let text: Vec<String> = liberty_br_tun().iter().map(describe).collect();
        let want = [
            "table=0, priority=1,in_port=patch-int actions=resubmit(,2)",
            "table=0, priority=1,in_port=vxlan-0a000002 actions=resubmit(,4)",
            "table=0, priority=1,in_port=vxlan-0a000003 actions=resubmit(,4)",
            "table=0, priority=0 actions=drop",
            "table=2, priority=1,arp,dl_dst=ff:ff:ff:ff:ff:ff actions=resubmit(,21)",
            "table=2, priority=0,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,20)",
            "table=2, priority=0,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=resubmit(,22)",
            "table=3, priority=0 actions=drop",
            "table=4, priority=1,tun_id=0x64 actions=push_vlan:0x8100,mod_vlan_vid:1,resubmit(,10)",
            "table=4, priority=0 actions=drop",
            "table=6, priority=0 actions=drop",
            "table=10, priority=1 actions=learn(table=20,hard_timeout=300,priority=1,\
             NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:0->NXM_OF_VLAN_TCI[],\
             load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),output:patch-int",
            "table=20, priority=2,dl_vlan=1,dl_dst=fa:16:3e:00:00:22 \
             actions=strip_vlan,set_tunnel:0x64,output:vxlan-0a000002",
            "table=20, priority=0 actions=resubmit(,22)",
            "table=21, priority=1,arp,dl_vlan=1,arp_tpa=192.168.1.22 \
             actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:00:00:22,\
             load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],\
             move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],load:0xfa163e000022->NXM_NX_ARP_SHA[],\
             load:0xc0a80116->NXM_OF_ARP_SPA[],IN_PORT",
            "table=21, priority=0 actions=resubmit(,22)",
            "table=22, priority=32768,dl_vlan=1 \
             actions=strip_vlan,set_tunnel:0x64,output:vxlan-0a000002,output:vxlan-0a000003",
            "table=22, priority=0 actions=drop",
        ];
        assert_eq!(text, want);
        let untagged = FlowSpec {
            dl_vlan: Some(VlanMatch::Untagged),
            ..FlowSpec::default()
        };
        assert_eq!(
            describe(&untagged),
            "table=0, priority=0,vlan_tci=0x0000 actions=drop"
        );
    }

    /// The ovs-ofctl text of the agent, replayed by `ovs-ofctl add-flows`
    /// (OpenFlow 1.0), comes back over 1.3 with `load:` for the ARP
    /// fields: those read as the same specs, since they do the same.
    #[test]
    fn whole_field_loads_read_as_set_fields() {
        let names = BTreeMap::new();
        let load = |field, value| {
            Action::reg_load(&ovslab_openflow::RegLoad {
                dst: Subfield::whole(field),
                value,
            })
        };
        let read = |a: Action| to_flow_action(&a, 0, &names);
        assert_eq!(
            read(load(NxmField::ARP_OP, 2)),
            Some(FlowAction::SetArpOp(2))
        );
        assert_eq!(
            read(load(NxmField::ARP_SHA, 0xfa163e000022)),
            Some(FlowAction::SetArpSha([0xfa, 0x16, 0x3e, 0, 0, 0x22]))
        );
        assert_eq!(
            read(load(NxmField::ARP_SPA, 0xc0a80116)),
            Some(FlowAction::SetArpSpa(Ipv4Addr::new(192, 168, 1, 22)))
        );
        // Not whole fields, or fields the plan never loads.
        let part = Action::reg_load(&ovslab_openflow::RegLoad {
            dst: Subfield {
                field: NxmField::ARP_OP,
                ofs: 0,
                n_bits: 8,
            },
            value: 2,
        });
        assert_eq!(read(part), None);
        assert_eq!(read(load(NxmField::TUN_ID, 0x64)), None);
        // The tunnel key as set_field (how OVS sends it back over 1.3) or
        // as the Nicira action the driver writes; neither of more than 32
        // bits, nor masked.
        let key = |k| Action::set_field(OxmField::TunnelId(k, None));
        assert_eq!(read(key(0x65)), Some(FlowAction::SetTunnel(0x65)));
        assert_eq!(
            read(Action::set_tunnel(0x65)),
            Some(FlowAction::SetTunnel(0x65))
        );
        assert_eq!(read(key(1 << 40)), None);
        assert_eq!(read(Action::set_tunnel(1 << 40)), None);
        assert_eq!(
            read(Action::set_field(OxmField::TunnelId(1, Some(1)))),
            None
        );
        // A learn other than br-tun's.
        let mut other = learn_from_tunnel(0);
        other.hard_timeout = 60;
        assert_eq!(read(Action::learn(&other)), None);
        // A move of part of a field.
        let part_move = Action::reg_move(&RegMove {
            n_bits: 24,
            ..RegMove::whole(NxmField::ETH_SRC, NxmField::ETH_DST).expect("same width")
        });
        assert_eq!(read(part_move), None);
    }

    /// A tun_id match in the NXM form an older switch might answer with
    /// reads as the same key.
    #[test]
    fn nicira_tun_id_match_reads_as_tun_id() {
        let names = BTreeMap::new();
        let raw = |payload: Vec<u8>, has_mask| {
            OxmField::Raw(ovslab_openflow::RawOxm {
                class: ovslab_openflow::oxm::OFPXMC_NXM_1,
                field: ovslab_openflow::oxm::NXM_NX_TUN_ID,
                has_mask,
                payload,
            })
        };
        let fm = FlowMod::add(
            4,
            1,
            Match::new().with(raw(vec![0, 0, 0, 0, 0, 0, 0, 0x64], false)),
            vec![],
        );
        let spec = to_spec("br-tun", &stats_of(&fm), &names).expect("a planned flow");
        assert_eq!(spec.tun_id, Some(0x64));
        // Both forms at once, a mask, or a key wider than 32 bits: no.
        for m in [
            fm.match_.clone().tunnel_id(0x64),
            Match::new().tunnel_id_masked(0x64, 0xff),
            Match::new().tunnel_id(1 << 32),
        ] {
            let fm = FlowMod::add(4, 1, m, vec![]);
            assert_eq!(to_spec("br-tun", &stats_of(&fm), &names), None);
        }
    }

    #[test]
    fn flows_the_planner_never_makes_are_not_recognised() {
        let ports = tun_ports();
        let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
        let foreign = FlowMod::add(0, 5, Match::new().eth_type(0x0800), vec![Action::normal()]);
        assert_eq!(to_spec("br-int", &stats_of(&foreign), &names), None);
        let unknown_port = FlowMod::add(0, 2, Match::new().in_port(99), vec![]);
        assert_eq!(to_spec("br-int", &stats_of(&unknown_port), &names), None);
        let to_unknown_port = FlowMod::add(0, 2, Match::new(), vec![Action::output(99)]);
        assert_eq!(to_spec("br-int", &stats_of(&to_unknown_port), &names), None);
        let odd_mask = FlowMod::add(
            2,
            0,
            Match::new().eth_dst_masked(MacAddr([2, 0, 0, 0, 0, 0]), MacAddr([2, 0, 0, 0, 0, 0])),
            vec![],
        );
        assert_eq!(to_spec("br-tun", &stats_of(&odd_mask), &names), None);
        let qinq = FlowMod::add(0, 2, Match::new(), vec![Action::PushVlan(0x88a8)]);
        assert_eq!(to_spec("br-int", &stats_of(&qinq), &names), None);
    }

    #[test]
    fn a_flow_on_a_port_without_a_number_cannot_be_built() {
        let spec = FlowSpec {
            bridge: "br-int".into(),
            table: 0,
            priority: 2,
            in_port: Some("qvo-missing".into()),
            dl_vlan: None,
            arp: false,
            arp_spa: None,
            actions: vec![],
            ..FlowSpec::default()
        };
        assert_eq!(
            to_flow_mod(&spec, 1, &ports()),
            Err(Unbuildable::PortWithoutNumber("qvo-missing".into()))
        );
        assert_eq!(
            describe(&spec),
            "table=0, priority=2,in_port=qvo-missing actions=drop"
        );
        let output = FlowSpec {
            actions: vec![FlowAction::Output("vxlan-0a0000ff".into())],
            ..FlowSpec::default()
        };
        assert_eq!(
            to_flow_mod(&output, 1, &tun_ports()),
            Err(Unbuildable::PortWithoutNumber("vxlan-0a0000ff".into()))
        );
    }

    #[test]
    fn a_move_between_fields_of_different_widths_cannot_be_built() {
        let spec = FlowSpec {
            arp: true,
            actions: vec![FlowAction::Move(MoveField::EthSrc, MoveField::ArpSpa)],
            ..FlowSpec::default()
        };
        assert_eq!(
            to_flow_mod(&spec, 1, &ports()),
            Err(Unbuildable::MoveWidths(
                MoveField::EthSrc,
                MoveField::ArpSpa
            ))
        );
    }

    /// A flow as br-tun's learn action leaves it in table 20 (OVS 3.1,
    /// read over OpenFlow 1.3): the agent's cookie (here 0xab),
    /// hard_timeout 300, priority 1, the local VLAN and the MAC matched,
    /// loads and an output.
    fn learned(mac: [u8; 6]) -> FlowStats {
        let load = |field, value| {
            Action::reg_load(&ovslab_openflow::RegLoad {
                dst: Subfield::whole(field),
                value,
            })
        };
        let fm = FlowMod::add(
            20,
            1,
            Match::new()
                .vlan_vid_masked(0x0001, 0x0fff)
                .eth_dst(MacAddr(mac)),
            vec![
                load(NxmField::VLAN_TCI, 0),
                load(NxmField::TUN_ID, 0x64),
                Action::output(2),
            ],
        )
        .with_timeouts(0, 300)
        .with_cookie(0xab);
        stats_of(&fm)
    }

    #[test]
    fn learned_flows_are_recognised_by_what_the_learn_action_gave_them() {
        assert!(is_learned(&learned([0xfa, 0x16, 0x3e, 0, 0, 0x33])));
        // The lab's own table-20 flows have no timeout.
        let ports = tun_ports();
        for spec in liberty_br_tun() {
            let fm = to_flow_mod(&spec, 0, &ports).expect("buildable");
            assert!(!is_learned(&stats_of(&fm)), "{}", describe(&spec));
        }
        // Same shape with another timeout, table or priority: not this
        // learn's.
        let mut other = learned([0xfa, 0x16, 0x3e, 0, 0, 0x33]);
        other.hard_timeout = 60;
        assert!(!is_learned(&other));
        let mut other = learned([0xfa, 0x16, 0x3e, 0, 0, 0x33]);
        other.table_id = 21;
        assert!(!is_learned(&other));
        let mut other = learned([0xfa, 0x16, 0x3e, 0, 0, 0x33]);
        other.priority = 2;
        assert!(!is_learned(&other));
        // Whatever its cookie: one learned before the learn action carried
        // the agent's has 0, and is the datapath's all the same.
        let mut before = learned([0xfa, 0x16, 0x3e, 0, 0, 0x33]);
        before.cookie = 0;
        assert!(is_learned(&before));
    }

    /// The tunnel key is set with the Nicira `set_tunnel` the agent wrote,
    /// which a plain (OpenFlow 1.0) `ovs-ofctl dump-flows br-tun` prints as
    /// `set_tunnel:0x64`; a set_field would print as a `load:` into
    /// NXM_NX_TUN_ID.
    #[test]
    fn the_tunnel_key_is_set_with_the_agents_set_tunnel() {
        let ports = tun_ports();
        let to_tunnels = liberty_br_tun()
            .into_iter()
            .find(|s| s.actions.contains(&FlowAction::SetTunnel(0x64)))
            .expect("a flow into the tunnels");
        let fm = to_flow_mod(&to_tunnels, 0xab, &ports).expect("buildable");
        let [Instruction::ApplyActions(actions)] = fm.instructions.as_slice() else {
            panic!("{:?}", fm.instructions);
        };
        assert_eq!(actions[1], Action::set_tunnel(0x64));
        assert_eq!(actions[1].as_set_tunnel(), Some(0x64));
    }

    /// br-tun's learn action carries the cookie of its flow (the agent's),
    /// as Liberty's `setup_default_table` writes `cookie=<agent stamp>` in
    /// the learn spec, so learned flows carry it too; a learn action that
    /// gives another cookie (0, as ovslab's did) reads as no spec, and
    /// the converge replaces it.
    #[test]
    fn the_learn_action_gives_learned_flows_the_agents_cookie() {
        let ports = tun_ports();
        let cookie = 0xab;
        let wanted = liberty_br_tun();
        let table_10 = wanted
            .iter()
            .find(|s| s.actions.contains(&FlowAction::LearnFromTunnel))
            .expect("table 10's learn");
        let fm = to_flow_mod(table_10, cookie, &ports).expect("buildable");
        let [Instruction::ApplyActions(actions)] = fm.instructions.as_slice() else {
            panic!("{:?}", fm.instructions);
        };
        let learn = actions[0].as_learn().expect("a learn action");
        assert_eq!(learn.cookie, cookie);
        assert!(
            learn.to_string().contains(",priority=1,cookie=0xab,"),
            "{learn}"
        );

        // The old learn, with cookie 0, on a flow with the agent's cookie.
        let mut old = fm.clone();
        let zero = learn_from_tunnel(0);
        old.instructions = vec![Instruction::ApplyActions(vec![
            Action::learn(&zero),
            actions[1].clone(),
        ])];
        let mut dumped: Vec<FlowStats> = wanted
            .iter()
            .filter(|s| *s != table_10)
            .map(|spec| stats_of(&to_flow_mod(spec, cookie, &ports).expect("buildable")))
            .collect();
        dumped.push(stats_of(&old));
        let actual = present("br-tun", dumped, &ports);
        let (add, delete) = diff_flows(&wanted, cookie, &actual);
        assert_eq!(add, std::slice::from_ref(table_10));
        assert_eq!(delete.len(), 1);
        assert!(delete[0].to_string().contains("learn("), "{}", delete[0]);
    }

    /// A converged br-tun with two learned MACs: the diff changes nothing;
    /// a stale flow of the lab is still deleted.
    #[test]
    fn learned_flows_are_not_deleted_as_stale() {
        let ports = tun_ports();
        let cookie = 0xab;
        let wanted = liberty_br_tun();
        let mut dumped: Vec<FlowStats> = wanted
            .iter()
            .map(|spec| stats_of(&to_flow_mod(spec, cookie, &ports).expect("buildable")))
            .collect();
        dumped.push(learned([0xfa, 0x16, 0x3e, 0, 0, 0x33]));
        dumped.push(learned([0xfa, 0x16, 0x3e, 0, 0, 0x44]));
        let actual = present("br-tun", dumped.clone(), &ports);
        assert_eq!(actual.len(), wanted.len());
        let (add, delete) = diff_flows(&wanted, cookie, &actual);
        assert!(add.is_empty(), "{add:?}");
        assert!(
            delete.is_empty(),
            "{:?}",
            delete.iter().map(|f| f.to_string()).collect::<Vec<_>>()
        );

        let stale = FlowSpec {
            dl_vlan: Some(VlanMatch::Id(2)),
            ..wanted[wanted.len() - 2].clone()
        };
        dumped.push(stats_of(
            &to_flow_mod(&stale, cookie, &ports).expect("buildable"),
        ));
        let actual = present("br-tun", dumped, &ports);
        let (add, delete) = diff_flows(&wanted, cookie, &actual);
        assert!(add.is_empty());
        assert_eq!(delete.len(), 1);
        assert!(delete[0].to_string().contains("dl_vlan=2"), "{}", delete[0]);
    }
}
