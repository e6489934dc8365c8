//! A legacy router's NAT, as Liberty's L3 agent writes it in
//! `qrouter-<uuid>` (`neutron/agent/l3/router_info.py`,
//! `neutron/agent/linux/iptables_manager.py`).
//!
//! What we write (the agent's binary name `neutron-l3-agent` wraps its chains):
//! - the whole skeleton `IptablesManager` creates before it knows the
//!   router (see [`skeleton`](fn@crate::skeleton::skeleton)): every built-in chain of filter, nat,
//!   mangle and raw jumps to its `neutron-l3-agent-` chain, with
//!   `neutron-filter-top`, `neutron-postrouting-bottom`, `snat`,
//!   `float-snat` and `mark`.
//! - per floating IP (only with a gateway, as the agent processes floating
//!   IPs only then): DNAT in `PREROUTING` and `OUTPUT`, SNAT in `float-snat`;
//! - with a gateway and SNAT on (Liberty adds all of these together, in
//!   `_add_snat_rules`): the `! -i qg ! -o qg … ! --ctstate DNAT -j ACCEPT`
//!   rule in `POSTROUTING`, the two SNAT rules in `snat`, and the mangle
//!   mark (0x2/0xffff, `external_ingress_mark`) on packets entering `qg`.
//!
//! - the metadata proxy's rules (`agent/metadata/driver.py`): nat REDIRECT
//!   of 169.254.169.254:80 from `qr-+` to port 9697, the mangle mark on
//!   those requests, and filter `INPUT` accepting marked requests and
//!   dropping the rest to 9697.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ruleset::{Ruleset, Table};

/// The L3 agent's wrap name: its binary name cut to 16 characters.
pub const ROUTER_BINARY: &str = "neutron-l3-agent";

/// The metadata proxy's port in the router (`metadata_port`).
pub const METADATA_PROXY_PORT: u16 = 9697;

/// The metadata access mark with its mask (`METADATA_ACCESS_MARK`).
pub const METADATA_MARK: &str = "0x1/0xffff";

/// Liberty's `external_ingress_mark` with `ROUTER_MARK_MASK`.
pub const EXTERNAL_INGRESS_MARK: &str = "0x2/0xffff";

/// Input for a legacy router's NAT (`neutron-l3-agent-*`). All pure data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterNat {
    /// The gateway device on the external network, e.g. `qg-1a2b3c4d-5e`.
    pub qg: String,
    /// The router's address on the external network; `None`: no gateway.
    pub gateway_ip: Option<Ipv4Addr>,
    /// SNAT for the project networks through the gateway.
    pub snat: bool,
    pub floating_ips: Vec<FloatingIp>,
    /// Subnets behind the router. Liberty's rules do not name them (its
    /// SNAT matches on the outgoing device, not on sources); kept so the
    /// input describes the whole router, for status and future rules.
    pub internal_cidrs: Vec<Ipv4Net>,
}

/// A floating IP: `floating` on the external network maps to `fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FloatingIp {
    pub fixed: Ipv4Addr,
    pub floating: Ipv4Addr,
}

/// A chain of the L3 agent: `neutron-l3-agent-<name>`.
fn wrapped(name: &str) -> String {
    format!("{ROUTER_BINARY}-{name}")
}

/// The router's NAT rules (see the module doc for what and why).
/// Floating IPs are written sorted by floating address, so the input's
/// order does not matter.
pub fn router_ruleset(nat: &RouterNat) -> Ruleset {
    let mut r = crate::skeleton::skeleton(ROUTER_BINARY);
    let prerouting = wrapped("PREROUTING");
    let output = wrapped("OUTPUT");
    let postrouting = wrapped("POSTROUTING");
    let snat = wrapped("snat");
    let float_snat = wrapped("float-snat");
    let mark = wrapped("mark");

    // The metadata proxy (`agent/metadata/driver.py`,
    // `metadata_filter_rules`, `metadata_mangle_rules`, `metadata_nat_rules`):
    // requests to 169.254.169.254:80 from the router's internal ports are
    // marked and redirected to the proxy's port, which only marked
    // requests may reach.
    let input = wrapped("INPUT");
    r.append(
        Table::Filter,
        &input,
        format!("-m mark --mark {METADATA_MARK} -j ACCEPT"),
    );
    r.append(
        Table::Filter,
        &input,
        format!("-p tcp -m tcp --dport {METADATA_PROXY_PORT} -j DROP"),
    );
    r.append(
        Table::Mangle,
        &prerouting,
        format!(
            "-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j MARK --set-xmark {METADATA_MARK}"
        ),
    );
    r.append(
        Table::Nat,
        &prerouting,
        format!(
            "-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports {METADATA_PROXY_PORT}"
        ),
    );

    let Some(gw) = nat.gateway_ip else {
        return r;
    };

    let mut fips = nat.floating_ips.clone();
    fips.sort_by_key(|f| (f.floating, f.fixed));
    fips.dedup();
    for fip in &fips {
        let dnat = format!(
            "-d {}/32 -j DNAT --to-destination {}",
            fip.floating, fip.fixed
        );
        r.append(Table::Nat, &prerouting, dnat.clone());
        r.append(Table::Nat, &output, dnat);
        r.append(
            Table::Nat,
            &float_snat,
            format!("-s {}/32 -j SNAT --to-source {}", fip.fixed, fip.floating),
        );
    }

    if nat.snat {
        let qg = &nat.qg;
        r.append(
            Table::Nat,
            &postrouting,
            format!("! -i {qg} ! -o {qg} -m conntrack ! --ctstate DNAT -j ACCEPT"),
        );
        r.append(
            Table::Nat,
            &snat,
            format!("-o {qg} -j SNAT --to-source {gw}"),
        );
        r.append(
            Table::Nat,
            &snat,
            format!(
                "-m mark ! --mark {EXTERNAL_INGRESS_MARK} -m conntrack --ctstate DNAT \
                 -j SNAT --to-source {gw}"
            ),
        );
        r.append(
            Table::Mangle,
            &mark,
            format!("-i {qg} -j MARK --set-xmark {EXTERNAL_INGRESS_MARK}"),
        );
    }
    r
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The seed lab's router1: gateway .101, instance1's floating IP .102.
    pub(crate) fn seed_router() -> RouterNat {
        RouterNat {
            qg: "qg-aaaaaaaa-aa".into(),
            gateway_ip: Some(Ipv4Addr::new(203, 0, 113, 101)),
            snat: true,
            floating_ips: vec![FloatingIp {
                fixed: Ipv4Addr::new(192, 168, 1, 11),
                floating: Ipv4Addr::new(203, 0, 113, 102),
            }],
            internal_cidrs: vec![
                "192.168.1.0/24".parse().expect("cidr"),
                "192.168.2.0/24".parse().expect("cidr"),
            ],
        }
    }

    #[test]
    fn seed_router_snapshot() {
        let ruleset = router_ruleset(&seed_router());
        ruleset.validate().expect("valid");
        insta::assert_snapshot!(ruleset.render_save_like());
    }

    #[test]
    fn without_snat_keeps_floating_ips_only() {
        let mut nat = seed_router();
        nat.snat = false;
        let r = router_ruleset(&nat);
        assert_eq!(
            r.chain(Table::Nat, "neutron-l3-agent-snat"),
            Some(&["-j neutron-l3-agent-float-snat".to_string()][..])
        );
        assert_eq!(
            r.chain(Table::Nat, "neutron-l3-agent-POSTROUTING"),
            Some(&[][..])
        );
        assert_eq!(
            r.chain(Table::Mangle, "neutron-l3-agent-mark"),
            Some(&[][..])
        );
        assert_eq!(
            r.chain(Table::Nat, "neutron-l3-agent-float-snat")
                .map(<[String]>::len),
            Some(1)
        );
    }

    #[test]
    fn without_gateway_only_the_skeleton() {
        let mut nat = seed_router();
        nat.gateway_ip = None;
        let r = router_ruleset(&nat);
        r.validate().expect("valid");
        assert_eq!(
            r.chain(Table::Nat, "neutron-l3-agent-PREROUTING"),
            Some(&["-d 169.254.169.254/32 -i qr-+ -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 9697".to_string()][..])
        );
        for chain in [
            "neutron-l3-agent-OUTPUT",
            "neutron-l3-agent-float-snat",
            "neutron-l3-agent-POSTROUTING",
        ] {
            assert_eq!(r.chain(Table::Nat, chain), Some(&[][..]), "{chain}");
        }
    }

    #[test]
    fn floating_ips_are_sorted() {
        let mut nat = seed_router();
        nat.floating_ips.insert(
            0,
            FloatingIp {
                fixed: Ipv4Addr::new(192, 168, 2, 11),
                floating: Ipv4Addr::new(203, 0, 113, 150),
            },
        );
        let r = router_ruleset(&nat);
        let pre = r
            .chain(Table::Nat, "neutron-l3-agent-PREROUTING")
            .expect("chain");
        // After the metadata redirect, which the router has from the start.
        assert!(pre[0].contains("REDIRECT --to-ports 9697"));
        assert!(pre[1].contains("203.0.113.102/32"));
        assert!(pre[2].contains("203.0.113.150/32"));
    }
}
