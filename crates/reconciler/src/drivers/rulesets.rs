//! iptables rulesets: a router's NAT in its namespace, a compute node's
//! hybrid firewall in the node's namespace. Each is compared with
//! `iptables-save` and, only when it differs, applied with one
//! `iptables-restore --noflush` (see `ovslab-iptables`).

use ovslab_iptables::{
    Direction, FloatingIp, PortFirewall, Protocol, RouterNat, Ruleset, SgRule, firewall_ruleset,
    router_ruleset,
};
use ovslab_topology as model;
use ovslab_topology::plan::{FirewallSpec, RouterSpec};

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
                    remote: r.remote.clone(),
                })
                .collect(),
        })
        .collect();
    firewall_ruleset(&ports)
}

/// Makes namespace `namespace`'s rules of ours exactly `ruleset`; returns
/// one line per change (none when it already was).
pub async fn converge(namespace: &str, ruleset: Ruleset) -> Result<Vec<String>, ReconcileError> {
    let ns = namespace.to_string();
    let applied = tokio::task::spawn_blocking(move || ovslab_iptables::apply(&ns, &ruleset))
        .await
        .map_err(|e| ReconcileError::Switch {
            node: namespace.to_string(),
            message: format!("iptables task failed: {e}"),
        })??;
    Ok(applied
        .changes
        .into_iter()
        .map(|c| format!("{namespace}: iptables: {c}"))
        .collect())
}
