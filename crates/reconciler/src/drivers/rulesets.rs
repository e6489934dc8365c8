//! iptables rulesets: a router's NAT in its namespace, a compute node's
//! hybrid firewall (and its remote groups' ipsets) in the node's namespace.
//! Each is compared with `iptables-save` (`ipset save`) and, only when it
//! differs, applied with one `iptables-restore --noflush` (`ipset
//! restore`) (see `ovslab-iptables`).
//!
//! A ruleset found exactly as wanted is remembered with its namespace's
//! nf_tables generation ([`Verified`]): while neither the wanted ruleset
//! nor the generation changes, nobody changed the rules, and the next
//! converge skips `iptables-save` there.

use ovslab_iptables::{
    Direction, FloatingIp, IpSet, PortFirewall, Protocol, Remote, RouterNat, Ruleset, SgRule,
    firewall_ruleset, router_ruleset,
};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ovslab_netlink::Generation;
use ovslab_topology as model;
use ovslab_topology::plan::{FirewallRemote, FirewallSpec, RouterSpec};

use crate::ReconcileError;
use crate::fingerprint::Fingerprint;

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
            dhcp_servers: p.dhcp_servers.clone(),
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

/// Rulesets found exactly as wanted, by namespace, with the nf_tables
/// generation they were found at. Each is kept as a [`Fingerprint`], not
/// itself: a compute node's firewall is tens of kilobytes of rule text,
/// and a 10,000-instance lab has 200 of them.
#[derive(Debug, Default)]
pub struct Verified {
    by_namespace: Mutex<HashMap<String, (Generation, Fingerprint)>>,
}

impl Verified {
    /// Whether `namespace` is known to hold `ruleset` at `generation`.
    fn holds(&self, namespace: &str, generation: Generation, ruleset: &Ruleset) -> bool {
        let known = self
            .by_namespace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .copied();
        known.is_some_and(|(g, f)| g == generation && f == Fingerprint::of(ruleset))
    }

    fn record(&self, namespace: &str, known: Option<(Generation, &Ruleset)>) {
        let known = known.map(|(g, ruleset)| (g, Fingerprint::of(ruleset)));
        let mut map = self.by_namespace.lock().unwrap_or_else(|e| e.into_inner());
        match known {
            Some(known) => map.insert(namespace.to_string(), known),
            None => map.remove(namespace),
        };
    }

    /// Forgets every namespace whose name starts with `prefix` (a lab's).
    pub fn forget(&self, prefix: &str) {
        self.by_namespace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|ns, _| !ns.starts_with(prefix));
    }
}

/// Whether `iptables` is iptables-nft, whose every change moves the
/// nf_tables generation (iptables-legacy's would not: then every converge
/// reads the rules).
fn nf_tables() -> bool {
    static NFT: OnceLock<bool> = OnceLock::new();
    *NFT.get_or_init(ovslab_iptables::is_nf_tables)
}

/// Makes namespace `namespace`'s rules of ours exactly `ruleset`, with
/// `sets` its ipsets: sets are filled before the rules that use them and
/// destroyed after the rules that used them are gone. Returns one line per
/// change (none when everything already was).
/// `verified` skips the reading of a ruleset known to be as wanted.
pub async fn converge(
    namespace: &str,
    ruleset: Ruleset,
    sets: Option<Vec<IpSet>>,
    verified: std::sync::Arc<Verified>,
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
        // Read before the rules are: a change made after this moves it.
        let generation = nf_tables()
            .then(|| ovslab_netlink::generation(&ns).ok())
            .flatten();
        if !generation.is_some_and(|g| verified.holds(&ns, g, &ruleset)) {
            let applied = ovslab_iptables::apply(&ns, &ruleset)?;
            // Rules just written are known when the generation moved by
            // exactly the tables written (one transaction each): then no
            // one else changed them meanwhile. Otherwise they are read
            // again next time.
            let known = match (applied.changed, generation) {
                (false, Some(g)) => Some((g, &ruleset)),
                (true, Some(before)) => ovslab_netlink::generation(&ns)
                    .ok()
                    .filter(|after| {
                        after.cookie == before.cookie
                            && after.id == before.id.wrapping_add(applied.tables_written)
                    })
                    .map(|after| (after, &ruleset)),
                (true, None) | (false, None) => None,
            };
            verified.record(&ns, known);
            changes.extend(applied.changes);
        }
        if let (Some(sets), Some(actual)) = (&sets, &before) {
            changes.extend(ovslab_iptables::remove_stale_ipsets(&ns, actual, sets)?);
        }
        Ok::<_, ovslab_iptables::IptablesError>(changes)
    })
    .await
    .map_err(|source| ReconcileError::Task {
        of: format!("namespace {namespace}"),
        what: "iptables",
        source,
    })??;
    Ok(changes
        .into_iter()
        .map(|c| format!("{namespace}: iptables: {c}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_iptables::Table;

    fn ruleset(rule: &str) -> Ruleset {
        let mut r = Ruleset::new();
        r.append(Table::Nat, "neutron-l3-agent-snat", rule);
        r
    }

    #[test]
    fn a_ruleset_is_trusted_only_at_the_generation_and_content_it_was_found() {
        let verified = Verified::default();
        let at = Generation { cookie: 1, id: 5 };
        let wanted = ruleset("-j ACCEPT");
        assert!(
            !verified.holds("lab.network", at, &wanted),
            "nothing known yet"
        );
        verified.record("lab.network", Some((at, &wanted)));
        assert!(verified.holds("lab.network", at, &wanted));
        assert!(
            !verified.holds("lab.network", Generation { cookie: 1, id: 6 }, &wanted),
            "someone changed the rules"
        );
        assert!(
            !verified.holds("lab.network", Generation { cookie: 2, id: 5 }, &wanted),
            "the namespace was made again"
        );
        assert!(
            !verified.holds("lab.network", at, &ruleset("-j DROP")),
            "another ruleset is wanted"
        );
        assert!(!verified.holds("lab.compute1", at, &wanted));
        verified.record("lab.network", None);
        assert!(
            !verified.holds("lab.network", at, &wanted),
            "written: read again"
        );
        verified.record("lab.network", Some((at, &wanted)));
        verified.forget("lab.");
        assert!(
            !verified.holds("lab.network", at, &wanted),
            "the lab went down"
        );
    }

    #[test]
    fn fingerprints_tell_apart_rulesets_that_differ_in_order_or_place() {
        let of = |rules: &[(Table, &str, &str)]| {
            let mut r = Ruleset::new();
            for (table, chain, rule) in rules {
                r.append(*table, chain, *rule);
            }
            Fingerprint::of(&r)
        };
        let a = (Table::Filter, "neutron-openvswi-sg-chain", "-j ACCEPT");
        let b = (Table::Filter, "neutron-openvswi-sg-chain", "-j DROP");
        assert_eq!(of(&[a, b]), of(&[a, b]));
        assert_ne!(of(&[a, b]), of(&[b, a]), "rule order");
        assert_ne!(of(&[a]), of(&[a, a]), "a rule twice");
        let elsewhere = (Table::Filter, "neutron-openvswi-sg-fallback", "-j ACCEPT");
        assert_ne!(of(&[a]), of(&[elsewhere]), "another chain");
        let raw = (Table::Raw, "neutron-openvswi-sg-chain", "-j ACCEPT");
        assert_ne!(of(&[a]), of(&[raw]), "another table");
        let split = |x: &'static str, y: &'static str| {
            of(&[(Table::Filter, "c", x), (Table::Filter, "c", y)])
        };
        assert_ne!(
            split("-j A", "CCEPT"),
            split("-j AC", "CEPT"),
            "rule bounds"
        );
    }
}
