//! A bridge's flows over OpenFlow 1.3: read back as [`FlowSpec`]s where the
//! planner could have made them, and changed in one batch ended by a
//! barrier.
//!
//! Ports are named in the plan and numbered on the wire; the numbers come
//! from OVSDB (`Interface.ofport`), so a flow naming a port that has no
//! number yet cannot be installed and is reported as an error.

use std::collections::BTreeMap;
use std::fmt;

use ovslab_openflow::{
    Action, Client, ETH_TYPE_ARP, FlowMod, FlowStats, FlowStatsRequest, Instruction, Match,
    OFPP_NORMAL, OFPVID_PRESENT, OxmField,
};
use ovslab_topology::plan::{FlowAction, FlowSpec, VlanMatch};

use crate::ReconcileError;
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
/// is one the planner could have made.
pub async fn read(
    client: &FlowClient,
    bridge: &str,
    ports: &BTreeMap<String, u32>,
) -> Result<Vec<(Option<(FlowSpec, u64)>, PresentFlow)>, ReconcileError> {
    let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
    let flows = client
        .client
        .dump_flows(FlowStatsRequest::default())
        .await
        .map_err(|e| client.err(e))?;
    Ok(flows
        .into_iter()
        .map(|stats| {
            (
                to_spec(bridge, &stats, &names).map(|s| (s, stats.cookie)),
                PresentFlow(stats),
            )
        })
        .collect())
}

/// ovs-ofctl-like text of a planned flow, ports by name.
pub fn describe(spec: &FlowSpec) -> String {
    let mut s = format!("table={}, priority={}", spec.table, spec.priority);
    if let Some(p) = &spec.in_port {
        s.push_str(&format!(",in_port={p}"));
    }
    match spec.dl_vlan {
        Some(VlanMatch::Id(v)) => s.push_str(&format!(",dl_vlan={v}")),
        Some(VlanMatch::Untagged) => s.push_str(",vlan_tci=0x0000"),
        None => {}
    }
    if spec.arp {
        s.push_str(",arp");
    }
    if let Some(ip) = spec.arp_spa {
        s.push_str(&format!(",arp_spa={ip}"));
    }
    s.push_str(" actions=");
    if spec.actions.is_empty() {
        s.push_str("drop");
    }
    let actions: Vec<String> = spec
        .actions
        .iter()
        .map(|a| match a {
            FlowAction::ModVlanVid(v) => format!("mod_vlan_vid:{v}"),
            FlowAction::Normal => "NORMAL".to_string(),
            FlowAction::Resubmit(t) => format!("resubmit(,{t})"),
            other => format!("{other:?}"),
        })
        .collect();
    s.push_str(&actions.join(","));
    s
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
        mods.push(to_flow_mod(spec, cookie, ports).ok_or_else(|| {
            ReconcileError::PortWithoutNumber {
                node: client.node.clone(),
                bridge: bridge.to_string(),
                flow: describe(spec),
                port: spec.in_port.clone().unwrap_or_default(),
            }
        })?);
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

fn to_flow_mod(spec: &FlowSpec, cookie: u64, ports: &BTreeMap<String, u32>) -> Option<FlowMod> {
    let mut m = Match::new();
    if let Some(p) = &spec.in_port {
        m = m.in_port(*ports.get(p)?);
    }
    match spec.dl_vlan {
        Some(VlanMatch::Id(v)) => m = m.vlan_vid(Some(v)),
        Some(VlanMatch::Untagged) => m = m.vlan_vid(None),
        None => {}
    }
    // Not planned yet: br-tun's matches and actions.
    if spec.dl_dst.is_some() || spec.tun_id.is_some() || spec.arp_tpa.is_some() {
        return None;
    }
    if spec.arp {
        m = m.eth_type(ETH_TYPE_ARP);
    }
    if let Some(ip) = spec.arp_spa {
        m = m.arp_spa(ip);
    }
    let actions = spec
        .actions
        .iter()
        .map(|a| match a {
            FlowAction::ModVlanVid(v) => Some(Action::set_vlan_vid(*v)),
            FlowAction::Normal => Some(Action::normal()),
            FlowAction::Resubmit(t) => Some(Action::resubmit_table(*t)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(FlowMod::add(spec.table, spec.priority, m, actions).with_cookie(cookie))
}

/// The [`FlowSpec`] a dumped flow stands for, if it is one the planner
/// could have made.
fn to_spec(bridge: &str, stats: &FlowStats, names: &BTreeMap<u32, &str>) -> Option<FlowSpec> {
    let mut in_port = None;
    let mut dl_vlan = None;
    let mut arp = false;
    let mut arp_spa = None;
    for field in stats.match_.fields() {
        match field {
            OxmField::EthType(ETH_TYPE_ARP) => arp = true,
            OxmField::ArpSpa(ip, None) => arp_spa = Some(*ip),
            OxmField::InPort(p) => in_port = Some(names.get(p)?.to_string()),
            OxmField::VlanVid(v, None) if v & OFPVID_PRESENT != 0 => {
                dl_vlan = Some(VlanMatch::Id(v & 0x0fff))
            }
            OxmField::VlanVid(0, None) => dl_vlan = Some(VlanMatch::Untagged),
            _ => return None,
        }
    }
    let mut actions = Vec::new();
    for instruction in &stats.instructions {
        let Instruction::ApplyActions(list) = instruction else {
            return None;
        };
        for action in list {
            actions.push(match action {
                Action::Output { port, .. } if *port == OFPP_NORMAL => FlowAction::Normal,
                Action::SetField(OxmField::VlanVid(v, None)) => FlowAction::ModVlanVid(v & 0x0fff),
                other => match other.as_resubmit() {
                    Some((None, table)) => FlowAction::Resubmit(table),
                    _ => return None,
                },
            });
        }
    }
    Some(FlowSpec {
        bridge: bridge.to_string(),
        table: stats.table_id,
        priority: stats.priority,
        in_port,
        dl_vlan,
        arp,
        arp_spa,
        actions,
        ..FlowSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> BTreeMap<String, u32> {
        [("int-br-vlan".to_string(), 1), ("qvo1".to_string(), 2)]
            .into_iter()
            .collect()
    }

    fn stats_of(fm: &FlowMod) -> FlowStats {
        FlowStats {
            table_id: fm.table_id,
            duration_sec: 0,
            duration_nsec: 0,
            priority: fm.priority,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: fm.cookie,
            packet_count: 0,
            byte_count: 0,
            match_: fm.match_.clone(),
            instructions: fm.instructions.clone(),
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
        ];
        let ports = ports();
        let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
        for spec in specs {
            let fm = to_flow_mod(&spec, 0xab, &ports).unwrap();
            assert_eq!(fm.cookie, 0xab);
            assert_eq!(to_spec("br-int", &stats_of(&fm), &names), Some(spec));
        }
    }

    #[test]
    fn flows_the_planner_never_makes_are_not_recognised() {
        let ports = ports();
        let names: BTreeMap<u32, &str> = ports.iter().map(|(n, p)| (*p, n.as_str())).collect();
        let foreign = FlowMod::add(0, 5, Match::new().eth_type(0x0800), vec![Action::normal()]);
        assert_eq!(to_spec("br-int", &stats_of(&foreign), &names), None);
        let unknown_port = FlowMod::add(0, 2, Match::new().in_port(99), vec![]);
        assert_eq!(to_spec("br-int", &stats_of(&unknown_port), &names), None);
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
        assert!(to_flow_mod(&spec, 1, &ports()).is_none());
        assert_eq!(
            describe(&spec),
            "table=0, priority=2,in_port=qvo-missing actions=drop"
        );
    }
}
