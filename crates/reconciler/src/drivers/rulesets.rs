//! iptables rulesets: a router's NAT in its namespace, a compute node's
//! hybrid firewall (and its remote groups' ipsets) in the node's namespace.
//! Each is compared with `iptables-save` (`ipset save`) and, only when it
//! differs, applied with one `iptables-restore --noflush` (`ipset
//! restore`) (see `ovslab-iptables`).

use ovslab_iptables::{
    Direction, FloatingIp, IpSet, PortFirewall, Protocol, Remote, RouterNat, Ruleset, SgRule,
    firewall_ruleset, router_ruleset,
};
use ovslab_topology as model;
use ovslab_topology::plan::{FirewallRemote, FirewallSpec, RouterSpec};

use crate::ReconcileError;

/// The ruleset of a router, from its plan.
pub fn router(spec: &RouterSpec) -> Ruleset {
    router_ruleset(&RouterNat {
        qg: spec.qg.clone(),
        gateway_ip: spec.gateway_ip,
        snat: spec.snat,
        floating_ips: spec
            .floating_ips
            .iter()
            .map(|&(fixed, floating)| FloatingIp { fixed, floating })
            .collect(),
        internal_cidrs: spec.internal_cidrs.clone(),
    })
}

/// The ruleset of a compute node's firewall, from its plan.
pub fn firewall(spec: &FirewallSpec) -> Ruleset {
    let ports: Vec<PortFirewall> = spec
        .ports
        .iter()
        .map(|p| PortFirewall {
            device: p.tap.clone(),
            qvb: p.qvb.clone(),
            mac: p.mac,
            ip: p.ip,
            zone: p.zone,
            rules: p
                .rules
                .iter()
                .map(|r| SgRule {
                    direction: match r.direction {
                        model::Direction::Ingress => Direction::Ingress,
                        model::Direction::Egress => Direction::Egress,
                    },
                    protocol: r.protocol.map(|p| match p {
                        model::Protocol::Icmp => Protocol::Icmp,
                        model::Protocol::Tcp => Protocol::Tcp,
                        model::Protocol::Udp => Protocol::Udp,
                    }),
                    port_range: r.port_range,
                    remote: r.remote.as_ref().map(|remote| match remote {
                        FirewallRemote::Prefix(p) => Remote::Prefixes(vec![*p]),
                        FirewallRemote::IpSet(name) => Remote::IpSet(name.clone()),
                    }),
                })
                .collect(),
        })
        .collect();
    firewall_ruleset(&ports)
}

/// The ipsets of a compute node's firewall, from its plan.
pub fn ipsets(spec: &FirewallSpec) -> Vec<IpSet> {
    spec.ipsets
        .iter()
        .map(|s| IpSet {
            name: s.name.clone(),
            members: s.members.clone(),
        })
        .collect()
}

/// Makes namespace `namespace`'s rules of ours exactly `ruleset`, with
/// `sets` its ipsets: sets are filled before the rules that use them and
/// destroyed after the rules that used them are gone. Returns one line per
/// change (none when everything already was).
pub async fn converge(
    namespace: &str,
    ruleset: Ruleset,
    sets: Option<Vec<IpSet>>,
) -> Result<Vec<String>, ReconcileError> {
    let ns = namespace.to_string();
    let changes = tokio::task::spawn_blocking(move || {
        let mut changes = Vec::new();
        let mut before = None;
        if let Some(sets) = &sets {
            let (made, actual) = ovslab_iptables::converge_ipsets(&ns, sets)?;
            changes.extend(made);
            before = Some(actual);
        }
        changes.extend(ovslab_iptables::apply(&ns, &ruleset)?.changes);
        if let (Some(sets), Some(actual)) = (&sets, &before) {
            changes.extend(ovslab_iptables::remove_stale_ipsets(&ns, actual, sets)?);
        }
        Ok::<_, ovslab_iptables::IptablesError>(changes)
    })
    .await
    .map_err(|e| ReconcileError::Switch {
        node: namespace.to_string(),
        message: format!("iptables task failed: {e}"),
    })??;
    Ok(changes
        .into_iter()
        .map(|c| format!("{namespace}: iptables: {c}"))
        .collect())
}
