//! Pure diffs: desired state against actual state, giving the changes to
//! apply. Nothing here touches the host, so all of it is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use ovslab_topology::plan::{FlowSpec, NamespaceSpec, OvsBridge, OvsPort, RouteSpec, SwitchSpec};

use crate::actual::{ActualBridge, ActualNamespace, ActualPort, ActualSwitch};

/// How every bridge of a lab is configured.
pub const DATAPATH_TYPE: &str = "netdev";
pub const FAIL_MODE: &str = "secure";
/// The OpenFlow versions a bridge accepts: Liberty 7.2.0's ovs-ofctl agent
/// sets `OpenFlow10` (`ovs_bridge.py`), so a plain `ovs-ofctl` speaks to it
/// and shows `mod_vlan_vid:N`; ovslab itself speaks 1.3.
pub const PROTOCOLS: [&str; 2] = ["OpenFlow10", "OpenFlow13"];
/// The `Open_vSwitch` root row's `other_config` every node gets before its
/// `ovs-vswitchd` starts (vswitchd reads it once, at start). Userspace TSO
/// makes the netdev datapath read and write the veths with virtio-net
/// headers, so their checksum and segmentation offloads can stay on (see
/// docs/design.md, "The data path").
pub const ROOT_OTHER_CONFIG: &[(&str, &str)] = &[("userspace-tso-enable", "true")];
/// The kind netlink reports for the tap device of an OVS internal port in
/// the userspace datapath.
pub const OVS_INTERNAL_KIND: &str = "tun";
/// `external_ids` key marking a bridge as a lab's.
pub const LAB_MARK: &str = "ovslab-lab";

/// One change to one namespace's links, routes or sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    WriteSysctl {
        key: String,
        value: String,
    },
    DeleteLink {
        name: String,
    },
    CreateBridge {
        name: String,
    },
    CreateVeth {
        name: String,
        peer: String,
        peer_namespace: String,
    },
    SetMac {
        name: String,
        mac: [u8; 6],
    },
    SetMtu {
        name: String,
        mtu: u32,
    },
    /// IPv6 makes no addresses on the link (before it goes up).
    SetIpv6AddrGenNone {
        name: String,
    },
    SetMaster {
        name: String,
        master: Option<String>,
    },
    SetTxChecksum {
        name: String,
        on: bool,
    },
    /// nova's hybrid plug: `qvb`/`qvo` in promiscuous mode.
    SetPromisc {
        name: String,
    },
    DelAddress {
        name: String,
        address: Ipv4Net,
    },
    AddAddress {
        name: String,
        address: Ipv4Net,
    },
    SetUp {
        name: String,
    },
    /// A lab switch's port towards a node failed on purpose.
    SetDown {
        name: String,
    },
    AddRoute {
        route: RouteSpec,
    },
}

impl LinkChange {
    /// Changes run phase by phase across all namespaces, so that every veth
    /// end exists before any is configured.
    pub fn phase(&self) -> u8 {
        match self {
            LinkChange::WriteSysctl { .. } => 0,
            LinkChange::DeleteLink { .. } => 1,
            LinkChange::CreateBridge { .. } => 2,
            LinkChange::CreateVeth { .. } => 3,
            LinkChange::SetMac { .. }
            | LinkChange::SetMtu { .. }
            | LinkChange::SetIpv6AddrGenNone { .. }
            | LinkChange::SetMaster { .. }
            | LinkChange::SetTxChecksum { .. }
            | LinkChange::SetPromisc { .. }
            | LinkChange::DelAddress { .. }
            | LinkChange::AddAddress { .. } => 4,
            LinkChange::SetUp { .. } | LinkChange::SetDown { .. } => 5,
            LinkChange::AddRoute { .. } => 6,
        }
    }
}

impl std::fmt::Display for LinkChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkChange::WriteSysctl { key, value } => write!(f, "sysctl {key}={value}"),
            LinkChange::DeleteLink { name } => write!(f, "delete link {name}"),
            LinkChange::CreateBridge { name } => write!(f, "create bridge {name}"),
            LinkChange::CreateVeth {
                name,
                peer,
                peer_namespace,
            } => write!(f, "create veth {name} <-> {peer} (in {peer_namespace})"),
            LinkChange::SetMac { name, mac } => {
                write!(f, "set {name} address {}", ovslab_topology::format_mac(mac))
            }
            LinkChange::SetMtu { name, mtu } => write!(f, "set {name} mtu {mtu}"),
            LinkChange::SetIpv6AddrGenNone { name } => write!(f, "set {name} addrgenmode none"),
            LinkChange::SetMaster {
                name,
                master: Some(m),
            } => write!(f, "set {name} master {m}"),
            LinkChange::SetMaster { name, master: None } => write!(f, "set {name} nomaster"),
            LinkChange::SetTxChecksum { name, on } => {
                write!(
                    f,
                    "set {name} tx-checksumming {}",
                    if *on { "on" } else { "off" }
                )
            }
            LinkChange::SetPromisc { name } => write!(f, "set {name} promisc on"),
            LinkChange::DelAddress { name, address } => {
                write!(f, "delete address {address} from {name}")
            }
            LinkChange::AddAddress { name, address } => {
                write!(f, "add address {address} to {name}")
            }
            LinkChange::SetUp { name } => write!(f, "set {name} up"),
            LinkChange::SetDown { name } => write!(f, "set {name} down"),
            LinkChange::AddRoute { route } => {
                write!(f, "add route {} via {}", route.destination, route.gateway)
            }
        }
    }
}

/// Links that the kernel or Open vSwitch own in a node namespace; never ours
/// to delete.
fn foreign_kind(kind: &str) -> bool {
    !matches!(kind, "veth" | "bridge")
}

/// The changes that make one namespace's links, addresses, routes and
/// sysctls what `desired` says. `actual` is `None` for a namespace that does
/// not exist yet.
pub fn diff_namespace(
    desired: &NamespaceSpec,
    actual: Option<&ActualNamespace>,
) -> Vec<LinkChange> {
    let empty = ActualNamespace::default();
    let actual = actual.unwrap_or(&empty);
    let mut out = Vec::new();

    for (key, value) in &desired.sysctls {
        if actual.sysctls.get(key) != Some(value) {
            out.push(LinkChange::WriteSysctl {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }

    // Which kind each wanted link must be.
    let mut wanted_kind: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &desired.bridges {
        wanted_kind.insert(b, "bridge");
    }
    // Made by ovs-vswitchd (a tap), configured here once it exists.
    for port in &desired.ovs_internal {
        wanted_kind.insert(port, OVS_INTERNAL_KIND);
    }
    let veth_names: BTreeSet<&str> = desired.links.iter().map(|l| l.name.as_str()).collect();
    for name in veth_names {
        wanted_kind.entry(name).or_insert("veth");
    }

    // Stale links of ours, or links of the wrong kind, go first.
    let mut recreated = BTreeSet::new();
    for link in &actual.links {
        match wanted_kind.get(link.name.as_str()) {
            Some(kind) if *kind == link.kind => {}
            Some(_) => {
                out.push(LinkChange::DeleteLink {
                    name: link.name.clone(),
                });
                recreated.insert(link.name.as_str());
            }
            None if foreign_kind(&link.kind) => {}
            None => out.push(LinkChange::DeleteLink {
                name: link.name.clone(),
            }),
        }
    }
    let exists = |name: &str| actual.link(name).is_some() && !recreated.contains(name);

    for b in &desired.bridges {
        if !exists(b) {
            out.push(LinkChange::CreateBridge { name: b.clone() });
        }
    }
    for v in &desired.veths {
        if !exists(&v.name) {
            out.push(LinkChange::CreateVeth {
                name: v.name.clone(),
                peer: v.peer.clone(),
                peer_namespace: v.peer_namespace.clone(),
            });
        }
    }

    for spec in &desired.links {
        let current = actual.link(&spec.name).filter(|_| exists(&spec.name));
        if current.is_none() && desired.ovs_internal.contains(&spec.name) {
            // Not there until ovs-vswitchd makes it; the converge comes
            // back to it after the switch's transaction.
            continue;
        }
        if let Some(mac) = spec.mac
            && current.and_then(|c| c.mac) != Some(mac)
        {
            out.push(LinkChange::SetMac {
                name: spec.name.clone(),
                mac,
            });
        }
        let current_master = current.and_then(|c| c.master.clone());
        if current_master != spec.master && (spec.master.is_some() || current.is_some()) {
            out.push(LinkChange::SetMaster {
                name: spec.name.clone(),
                master: spec.master.clone(),
            });
        }
        if let Some(mtu) = spec.mtu
            && current.map(|c| c.mtu) != Some(mtu)
        {
            out.push(LinkChange::SetMtu {
                name: spec.name.clone(),
                mtu,
            });
        }
        if spec.no_ipv6 && !current.is_some_and(|c| c.ipv6_addr_gen_none) {
            out.push(LinkChange::SetIpv6AddrGenNone {
                name: spec.name.clone(),
            });
        }
        if let Some(on) = spec.tx_checksum
            && current.map(|c| c.tx_checksum) != Some(on)
        {
            out.push(LinkChange::SetTxChecksum {
                name: spec.name.clone(),
                on,
            });
        }
        if spec.promisc && !current.is_some_and(|c| c.promisc) {
            out.push(LinkChange::SetPromisc {
                name: spec.name.clone(),
            });
        }
        // A DHCP client's link holds what its lease gives it, an HA
        // router's what keepalived gives the master: none goes.
        let have: &[Ipv4Net] = current.map_or(&[], |c| &c.addresses);
        for address in have.iter().filter(|_| spec.addresses_also_by.is_none()) {
            if !spec.addresses.contains(address) {
                out.push(LinkChange::DelAddress {
                    name: spec.name.clone(),
                    address: *address,
                });
            }
        }
        for address in &spec.addresses {
            if !have.contains(address) {
                out.push(LinkChange::AddAddress {
                    name: spec.name.clone(),
                    address: *address,
                });
            }
        }
        let up = current.is_some_and(|c| c.up);
        if spec.down && up {
            out.push(LinkChange::SetDown {
                name: spec.name.clone(),
            });
        } else if !spec.down && !up {
            out.push(LinkChange::SetUp {
                name: spec.name.clone(),
            });
        }
    }

    for route in &desired.routes {
        if !actual.routes.contains(route) {
            out.push(LinkChange::AddRoute {
                route: route.clone(),
            });
        }
    }
    out.sort_by_key(LinkChange::phase);
    out
}

/// One change inside a node's OVSDB; all of a node's changes go into one
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvsChange {
    /// Inserts the `Open_vSwitch` root row (what `ovs-vsctl init` does).
    EnsureRoot,
    /// A bridge with its internal port and every listed port.
    AddBridge {
        bridge: OvsBridge,
    },
    /// Sets datapath type, fail mode, protocols and the lab mark.
    UpdateBridge {
        uuid: String,
        name: String,
        /// Fail mode unset (br-ex), else `secure`.
        standalone: bool,
    },
    DeleteBridge {
        uuid: String,
        name: String,
    },
    AddPort {
        bridge: String,
        bridge_uuid: String,
        port: OvsPort,
    },
    UpdatePort {
        port_uuid: String,
        interface_uuid: String,
        port: OvsPort,
    },
    DeletePort {
        bridge_uuid: String,
        port_uuid: String,
        name: String,
    },
}

impl std::fmt::Display for OvsChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OvsChange::EnsureRoot => write!(f, "ovsdb: initialise Open_vSwitch"),
            OvsChange::AddBridge { bridge } => write!(
                f,
                "ovsdb: add bridge {} with ports {}",
                bridge.name,
                bridge
                    .ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            OvsChange::UpdateBridge { name, .. } => write!(f, "ovsdb: fix bridge {name} settings"),
            OvsChange::DeleteBridge { name, .. } => write!(f, "ovsdb: delete bridge {name}"),
            OvsChange::AddPort { bridge, port, .. } => {
                write!(f, "ovsdb: add port {} to {bridge}", port.name)
            }
            OvsChange::UpdatePort { port, .. } => write!(f, "ovsdb: update port {}", port.name),
            OvsChange::DeletePort { name, .. } => write!(f, "ovsdb: delete port {name}"),
        }
    }
}

fn bridge_settings_match(b: &ActualBridge, lab: &str, standalone: bool) -> bool {
    b.datapath_type == DATAPATH_TYPE
        && b.fail_mode.as_deref() == (!standalone).then_some(FAIL_MODE)
        && b.protocols.len() == PROTOCOLS.len()
        && PROTOCOLS.iter().all(|p| b.protocols.iter().any(|q| q == p))
        && b.external_ids.get(LAB_MARK).map(String::as_str) == Some(lab)
}

fn port_matches(actual: &ActualPort, desired: &OvsPort) -> bool {
    actual.tag == desired.tag
        && actual.kind == desired.interface_type()
        && actual.options == desired.interface_options()
        && actual.interface_external_ids == desired.interface_external_ids
        && actual.port_other_config == desired.port_other_config
}

/// The changes that make a node's OVSDB hold exactly the planned bridges
/// and ports (each bridge's own internal port is left alone).
pub fn diff_switch(lab: &str, desired: &SwitchSpec, actual: &ActualSwitch) -> Vec<OvsChange> {
    let mut out = Vec::new();
    if actual.root_uuid.is_none() {
        out.push(OvsChange::EnsureRoot);
    }
    for bridge in &desired.bridges {
        let Some(current) = actual.bridge(&bridge.name) else {
            out.push(OvsChange::AddBridge {
                bridge: bridge.clone(),
            });
            continue;
        };
        if !bridge_settings_match(current, lab, bridge.standalone) {
            out.push(OvsChange::UpdateBridge {
                uuid: current.uuid.clone(),
                name: current.name.clone(),
                standalone: bridge.standalone,
            });
        }
        for port in &bridge.ports {
            match current.port(&port.name) {
                None => out.push(OvsChange::AddPort {
                    bridge: bridge.name.clone(),
                    bridge_uuid: current.uuid.clone(),
                    port: port.clone(),
                }),
                Some(p) if !port_matches(p, port) => out.push(OvsChange::UpdatePort {
                    port_uuid: p.uuid.clone(),
                    interface_uuid: p.interface_uuid.clone(),
                    port: port.clone(),
                }),
                Some(_) => {}
            }
        }
        for p in &current.ports {
            let wanted = p.name == bridge.name || bridge.ports.iter().any(|d| d.name == p.name);
            if !wanted {
                out.push(OvsChange::DeletePort {
                    bridge_uuid: current.uuid.clone(),
                    port_uuid: p.uuid.clone(),
                    name: p.name.clone(),
                });
            }
        }
    }
    for b in &actual.bridges {
        if !desired.bridges.iter().any(|d| d.name == b.name) {
            out.push(OvsChange::DeleteBridge {
                uuid: b.uuid.clone(),
                name: b.name.clone(),
            });
        }
    }
    out
}

/// Flows to add and flows to delete on one bridge. `actual` pairs each flow
/// read back (as a [`FlowSpec`] when it is one the planner could make, with
/// its cookie) with whatever the caller needs to delete it.
pub fn diff_flows<'a, F>(
    desired: &[FlowSpec],
    cookie: u64,
    actual: &'a [(Option<(FlowSpec, u64)>, F)],
) -> (Vec<FlowSpec>, Vec<&'a F>) {
    let mut present = BTreeSet::new();
    let mut delete = Vec::new();
    for (spec, raw) in actual {
        match spec {
            Some((spec, c)) if *c == cookie && desired.contains(spec) && present.insert(spec) => {}
            _ => delete.push(raw),
        }
    }
    let add = desired
        .iter()
        .filter(|d| !present.contains(d))
        .cloned()
        .collect();
    (add, delete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_topology::plan::{FlowAction, LocalVlans, plan};

    fn seed() -> ovslab_topology::plan::DesiredState {
        plan(&ovslab_topology::seed(), &LocalVlans::new())
    }

    /// What a namespace looks like once `desired` has been applied.
    fn converged(desired: &NamespaceSpec) -> ActualNamespace {
        let mut links = Vec::new();
        for spec in &desired.links {
            links.push(crate::actual::ActualLink {
                name: spec.name.clone(),
                ifindex: links.len() as u32 + 2,
                kind: if desired.bridges.contains(&spec.name) {
                    "bridge"
                } else {
                    "veth"
                }
                .into(),
                master: spec.master.clone(),
                up: true,
                promisc: spec.promisc,
                mac: spec.mac.or(Some([2, 0, 0, 0, 0, 1])),
                addresses: spec.addresses.clone(),
                tx_checksum: spec.tx_checksum.unwrap_or(true),
                mtu: spec.mtu.unwrap_or(1500),
                ipv6_addr_gen_none: spec.no_ipv6,
                peer_elsewhere: None,
            });
        }
        links.push(crate::actual::ActualLink {
            name: "br-int".into(),
            kind: "tun".into(),
            ..Default::default()
        });
        ActualNamespace {
            links,
            routes: desired.routes.clone(),
            sysctls: desired.sysctls.iter().cloned().collect(),
        }
    }

    #[test]
    fn a_new_namespace_gets_everything_in_phase_order() {
        let state = seed();
        let ns = state.namespace("seed.compute1").unwrap();
        let changes = diff_namespace(ns, None);
        let phases: Vec<u8> = changes.iter().map(LinkChange::phase).collect();
        let mut sorted = phases.clone();
        sorted.sort();
        assert_eq!(phases, sorted, "{changes:#?}");
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, LinkChange::CreateBridge { .. }))
                .count(),
            2
        );
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, LinkChange::CreateVeth { .. }))
                .count(),
            3
        );
        assert!(changes.contains(&LinkChange::SetTxChecksum {
            name: "eth1".into(),
            on: true
        }));
    }

    #[test]
    fn a_converged_namespace_needs_nothing() {
        for ns in &seed().namespaces {
            assert_eq!(
                diff_namespace(ns, Some(&converged(ns))),
                vec![],
                "{}",
                ns.name
            );
        }
    }

    #[test]
    fn drift_is_repaired_minimally() {
        let state = seed();
        let ns = state.namespace("seed.instance1").unwrap();
        let mut actual = converged(ns);
        actual.links[0].addresses = vec!["192.168.1.99/24".parse().unwrap()];
        actual.links[0].tx_checksum = false;
        actual.routes.clear();
        actual.links.push(crate::actual::ActualLink {
            name: "stray".into(),
            kind: "veth".into(),
            ..Default::default()
        });
        let changes = diff_namespace(ns, Some(&actual));
        assert_eq!(
            changes,
            vec![
                LinkChange::DeleteLink {
                    name: "stray".into()
                },
                LinkChange::SetTxChecksum {
                    name: "eth0".into(),
                    on: true
                },
                LinkChange::DelAddress {
                    name: "eth0".into(),
                    address: "192.168.1.99/24".parse().unwrap()
                },
                LinkChange::AddAddress {
                    name: "eth0".into(),
                    address: "192.168.1.11/24".parse().unwrap()
                },
                LinkChange::AddRoute {
                    route: ns.routes[0].clone()
                },
            ]
        );
    }

    #[test]
    fn an_instance_keeps_ipv6_quiet_per_link_and_reads_no_sysctl() {
        let state = seed();
        let ns = state.namespace("seed.instance1").unwrap();
        assert!(ns.sysctls.is_empty(), "no /proc/sys lookups in instances");
        let changes = diff_namespace(ns, None);
        let quiet = changes
            .iter()
            .position(|c| {
                c == &LinkChange::SetIpv6AddrGenNone {
                    name: "eth0".into(),
                }
            })
            .expect("eth0 gets addrgenmode none");
        let up = changes
            .iter()
            .position(|c| {
                c == &LinkChange::SetUp {
                    name: "eth0".into(),
                }
            })
            .unwrap();
        assert!(quiet < up, "before it goes up: {changes:#?}");
        // Drift: the mode changed back is set again.
        let mut actual = converged(ns);
        actual.links[0].ipv6_addr_gen_none = false;
        assert_eq!(
            diff_namespace(ns, Some(&actual)),
            vec![LinkChange::SetIpv6AddrGenNone {
                name: "eth0".into()
            }]
        );
        // Nodes keep IPv6 off by sysctl.
        let node = state.namespace("seed.compute1").unwrap();
        assert!(
            node.sysctls
                .iter()
                .any(|(k, v)| k == "net/ipv6/conf/default/disable_ipv6" && v == "1")
        );
    }

    #[test]
    fn a_link_of_the_wrong_kind_is_recreated() {
        let state = seed();
        let ns = state.namespace("seed.compute1").unwrap();
        let mut actual = converged(ns);
        let qbr = ns.bridges[0].clone();
        actual
            .links
            .iter_mut()
            .find(|l| l.name == qbr)
            .unwrap()
            .kind = "veth".into();
        let changes = diff_namespace(ns, Some(&actual));
        assert_eq!(changes[0], LinkChange::DeleteLink { name: qbr.clone() });
        assert_eq!(changes[1], LinkChange::CreateBridge { name: qbr.clone() });
        assert!(changes.contains(&LinkChange::SetUp { name: qbr }));
    }

    fn converged_switch(lab: &str, desired: &SwitchSpec) -> ActualSwitch {
        ActualSwitch {
            root_uuid: Some("root".into()),
            root_other_config: BTreeMap::new(),
            root_identity: Default::default(),
            bridges: desired
                .bridges
                .iter()
                .map(|b| ActualBridge {
                    uuid: format!("uuid-{}", b.name),
                    name: b.name.clone(),
                    datapath_type: DATAPATH_TYPE.into(),
                    fail_mode: Some(FAIL_MODE.into()),
                    protocols: PROTOCOLS.map(String::from).to_vec(),
                    external_ids: BTreeMap::from([(LAB_MARK.into(), lab.into())]),
                    ports: std::iter::once(ActualPort {
                        uuid: format!("uuid-{}", b.name),
                        name: b.name.clone(),
                        kind: "internal".into(),
                        ..Default::default()
                    })
                    .chain(b.ports.iter().map(|p| ActualPort {
                        uuid: format!("uuid-{}", p.name),
                        interface_uuid: format!("iface-{}", p.name),
                        name: p.name.clone(),
                        tag: p.tag,
                        kind: p.interface_type().into(),
                        options: p.interface_options(),
                        interface_external_ids: p.interface_external_ids.clone(),
                        port_other_config: p.port_other_config.clone(),
                        ofport: Some(1),
                    }))
                    .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_empty_database_gets_root_and_both_bridges() {
        let state = seed();
        let sw = state.switch("compute1").unwrap();
        let changes = diff_switch("seed", sw, &ActualSwitch::default());
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0], OvsChange::EnsureRoot);
        assert!(
            matches!(&changes[1], OvsChange::AddBridge { bridge } if bridge.name == "br-int" && bridge.ports.len() == 3)
        );
    }

    #[test]
    fn a_converged_switch_needs_nothing_and_drift_is_fixed() {
        let state = seed();
        let sw = state.switch("compute2").unwrap();
        let mut actual = converged_switch("seed", sw);
        assert_eq!(diff_switch("seed", sw, &actual), vec![]);

        let br_int = &mut actual.bridges[0];
        br_int.ports[2].tag = Some(4095);
        br_int.ports.push(ActualPort {
            uuid: "uuid-stale".into(),
            name: "qvostale".into(),
            ..Default::default()
        });
        actual.bridges[1].fail_mode = None;
        let changes = diff_switch("seed", sw, &actual);
        assert_eq!(changes.len(), 3, "{changes:#?}");
        assert!(
            matches!(&changes[0], OvsChange::UpdatePort { port, .. } if port.name == sw.bridges[0].ports[1].name)
        );
        assert!(matches!(&changes[1], OvsChange::DeletePort { name, .. } if name == "qvostale"));
        assert!(matches!(&changes[2], OvsChange::UpdateBridge { name, .. } if name == "br-vlan"));
    }

    #[test]
    fn flows_are_diffed_by_content_and_cookie() {
        let state = seed();
        let sw = state.switch("compute1").unwrap();
        let cookie = state.cookie;
        let mut actual: Vec<(Option<(FlowSpec, u64)>, usize)> = sw
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| (Some((f.clone(), cookie)), i))
            .collect();
        let (add, delete) = diff_flows(&sw.flows, cookie, &actual);
        assert!(add.is_empty() && delete.is_empty());

        // A flow removed by hand, one with another cookie, one we never make.
        let removed = actual.remove(0).0.unwrap().0;
        actual[0].0.as_mut().unwrap().1 = 7;
        let other_cookie = actual[0].0.clone().unwrap().0;
        actual.push((None, 99));
        let mut wrong = sw.flows[1].clone();
        wrong.actions = vec![FlowAction::ModVlanVid(9)];
        actual.push((Some((wrong, cookie)), 100));
        let (add, delete) = diff_flows(&sw.flows, cookie, &actual);
        assert_eq!(add, vec![removed, other_cookie]);
        assert_eq!(
            delete.into_iter().copied().collect::<Vec<_>>(),
            vec![1, 99, 100]
        );
    }
}
