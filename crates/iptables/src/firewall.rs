//! The hybrid iptables security-group firewall of a compute node, as
//! Liberty's `IptablesFirewallDriver` (`neutron/agent/linux/iptables_firewall.py`)
//! writes it through `IptablesManager` (wrap name `neutron-openvswi`).
//!
//! Everything sits on `IptablesManager`'s skeleton (see [`skeleton`](fn@crate::skeleton::skeleton):
//! every built-in chain of filter, nat, mangle and raw wraps to a
//! `neutron-openvswi-` chain). filter:
//! - per port (ports sorted by device, as the driver sorts them so restarts
//!   do not reorder rules): `FORWARD` sends bridged traffic to and from the
//!   tap to `sg-chain`; `sg-chain` sends it to the port's ingress
//!   (`i…`, `--physdev-out`) or egress (`o…`, `--physdev-in`) chain and
//!   ends with `ACCEPT`; `INPUT` sends the port's traffic to the host to
//!   its egress chain.
//! - ingress: established RETURN, the group's rules, the network's DHCP
//!   servers' answers RETURN (the server's provider rule), INVALID DROP,
//!   `sg-fallback` (DROP). Egress: DHCP discover from 0.0.0.0 RETURN, the
//!   spoof chain `s…` (own IP+MAC RETURN, else DROP), DHCP client RETURN,
//!   DHCP server DROP, established RETURN, the group's rules, INVALID DROP,
//!   `sg-fallback`.
//! - `sg-chain` and `sg-fallback` exist even on a node without ports (the
//!   network node's agent runs the same driver).
//!
//! raw: `neutron-openvswi-PREROUTING` puts traffic from the port's `qvb`
//! and tap into the port's own conntrack zone (7.0.0 and later).
//!
//! Comments: Liberty's defaults (`comment_iptables_rules = True`), with the
//! texts of `iptables_comments.py` where the 7.2.0 driver puts them; the
//! security groups' own rules and the raw zone rules carry none.
//!
//! Rule texts are written in `iptables-save`'s canonical spelling (e.g. one
//! `-m udp` for both ports, lowercase MACs, `/32` on addresses) so that a
//! second pass finds nothing to change.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ruleset::{Ruleset, Table};

/// The OVS agent's wrap name: `neutron-openvswitch-agent` cut to 16.
pub const FIREWALL_BINARY: &str = "neutron-openvswi";

/// Longest wrapped chain name Neutron keeps (`MAX_IPTABLES_CHAIN_LEN_WRAP`).
const MAX_WRAPPED_LEN: usize = 11;

// Liberty's rule comments (`neutron/agent/linux/iptables_comments.py`),
// written as `comment_rule` places them: before the jump.
const VM_INT_SG: &str = "Direct traffic from the VM interface to the security group chain.";
const SG_TO_VM_SG: &str = "Jump to the VM specific chain.";
const INPUT_TO_SG: &str = "Direct incoming traffic from VM to the security group chain.";
const PAIR_ALLOW: &str = "Allow traffic from defined IP/MAC pairs.";
const PAIR_DROP: &str = "Drop traffic without an IP/MAC allow rule.";
const DHCP_CLIENT: &str = "Allow DHCP client traffic.";
const DHCP_SPOOF: &str = "Prevent DHCP Spoofing by VM.";
const UNMATCHED: &str = "Send unmatched traffic to the fallback chain.";
const INVALID_DROP: &str = "Drop packets that appear related to an existing connection (e.g. TCP ACK/FIN) but do not have an entry in conntrack.";
const ALLOW_ASSOC: &str = "Direct packets associated with a known session to the RETURN chain.";
const UNMATCH_DROP: &str = "Default drop rule for unmatched traffic.";

/// `rule` with `-m comment --comment "<comment>"` before its jump, as
/// Liberty's `comment_rule` writes it (and iptables-save prints it).
fn commented(rule: &str, comment: &str) -> String {
    let comment = format!("-m comment --comment \"{comment}\"");
    if rule.starts_with("-j ") {
        return format!("{comment} {rule}");
    }
    match rule.find(" -j ") {
        Some(at) => format!("{} {comment} {}", &rule[..at], &rule[at + 1..]),
        None => format!("{rule} {comment}"),
    }
}

/// Input for a compute node's hybrid firewall, one per instance port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFirewall {
    /// The instance's tap device on `qbr…`: `tap` + 11 characters.
    pub device: String,
    /// The `qvb…` end of the veth from `qbr…` to br-int.
    pub qvb: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// Conntrack zone, the port's own (Liberty 7.x). Zone 0 is the
    /// default zone; iptables prints its rule as plain `-j CT`.
    pub zone: u16,
    /// The rules of all the port's security groups, in order.
    pub rules: Vec<SgRule>,
    /// The DHCP servers of the port's network: the server adds a rule
    /// letting their answers in (`_add_ingress_dhcp_rule`), after the
    /// groups' rules.
    pub dhcp_servers: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards the instance (the `i…` chain); remotes are sources.
    Ingress,
    /// From the instance (the `o…` chain); remotes are destinations.
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Icmp,
    Tcp,
    Udp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Whom a rule admits (ingress) or lets the port reach (egress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// One rule per prefix. An empty list (a group without members) yields
    /// no rule at all. As in Liberty, the port's own address is skipped.
    Prefixes(Vec<Ipv4Net>),
    /// A remote security group, matched by its ipset (`NIPv4…`), as
    /// Liberty does with `enable_ipset = True`, its default: one rule
    /// whatever the group's size.
    IpSet(String),
}

/// One security-group rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgRule {
    pub direction: Direction,
    /// `None`: any protocol.
    pub protocol: Option<Protocol>,
    /// Inclusive destination port range; only meaningful for TCP and UDP
    /// and ignored otherwise (as Neutron ignores ports without a protocol
    /// that has them; ovslab's topology rejects such rules anyway).
    pub port_range: Option<(u16, u16)>,
    /// `None`: any remote address (`0.0.0.0/0` means the same).
    pub remote: Option<Remote>,
}

/// A wrapped chain: `neutron-openvswi-` + `name` cut to 11 characters.
pub fn firewall_chain(name: &str) -> String {
    let short: String = name.chars().take(MAX_WRAPPED_LEN).collect();
    format!("{FIREWALL_BINARY}-{short}")
}

/// Chain names of one port: `prefix` (`i`, `o`, `s`) + the device name
/// without its 3-character prefix, wrapped: `tap28298c0d-08` →
/// `neutron-openvswi-i28298c0d-0`.
pub fn port_chain(prefix: char, device: &str) -> String {
    let rest: String = device.chars().skip(3).collect();
    firewall_chain(&format!("{prefix}{rest}"))
}

/// The node's filter and raw rules for `ports` (see the module doc).
pub fn firewall_ruleset(ports: &[PortFirewall]) -> Ruleset {
    let mut sorted: Vec<&PortFirewall> = ports.iter().collect();
    sorted.sort_by(|a, b| a.device.cmp(&b.device));

    // The manager's skeleton, then the driver's own chains: `sg-fallback`
    // at its start (`_add_fallback_chain_v4v6`), `sg-chain` at every
    // apply, even without ports (`_setup_chains_apply`).
    let mut r = crate::skeleton::skeleton(FIREWALL_BINARY);
    let input = firewall_chain("INPUT");
    let forward = firewall_chain("FORWARD");
    let sg_chain = firewall_chain("sg-chain");
    let fallback = firewall_chain("sg-fallback");
    let raw_pre = firewall_chain("PREROUTING");
    r.add_chain(Table::Filter, &sg_chain);
    r.append(Table::Filter, &fallback, commented("-j DROP", UNMATCH_DROP));

    for port in &sorted {
        let tap = &port.device;
        let ingress = port_chain('i', tap);
        let egress = port_chain('o', tap);
        let spoof = port_chain('s', tap);

        // Ingress hooks first, then egress, as the driver adds them.
        r.append(
            Table::Filter,
            &forward,
            commented(
                &format!("-m physdev --physdev-out {tap} --physdev-is-bridged -j {sg_chain}"),
                VM_INT_SG,
            ),
        );
        r.append(
            Table::Filter,
            &sg_chain,
            commented(
                &format!("-m physdev --physdev-out {tap} --physdev-is-bridged -j {ingress}"),
                SG_TO_VM_SG,
            ),
        );
        r.append(
            Table::Filter,
            &forward,
            commented(
                &format!("-m physdev --physdev-in {tap} --physdev-is-bridged -j {sg_chain}"),
                VM_INT_SG,
            ),
        );
        r.append(
            Table::Filter,
            &sg_chain,
            commented(
                &format!("-m physdev --physdev-in {tap} --physdev-is-bridged -j {egress}"),
                SG_TO_VM_SG,
            ),
        );
        r.append(
            Table::Filter,
            &input,
            commented(
                &format!("-m physdev --physdev-in {tap} --physdev-is-bridged -j {egress}"),
                INPUT_TO_SG,
            ),
        );

        for rule in ingress_rules(port, &fallback) {
            r.append(Table::Filter, &ingress, rule);
        }
        for rule in egress_rules(port, &spoof, &fallback) {
            r.append(Table::Filter, &egress, rule);
        }
        r.append(
            Table::Filter,
            &spoof,
            commented(
                &format!(
                    "-s {}/32 -m mac --mac-source {} -j RETURN",
                    port.ip,
                    mac(port.mac)
                ),
                PAIR_ALLOW,
            ),
        );
        r.append(Table::Filter, &spoof, commented("-j DROP", PAIR_DROP));

        r.append(Table::Raw, &raw_pre, zone_rule(&port.qvb, port.zone));
        r.append(Table::Raw, &raw_pre, zone_rule(tap, port.zone));
    }
    r.append(Table::Filter, &sg_chain, "-j ACCEPT");
    r
}

/// The port's ingress chain. The DHCP servers' replies are a provider rule
/// that belongs to no group: Liberty keeps it in the port's own rule list
/// (`securitygroups_rpc_base.py` `_apply_provider_rule`), which
/// `iptables_firewall.py` `_add_rules_by_security_group` puts before the
/// groups' rules, so it comes right after RELATED,ESTABLISHED.
fn ingress_rules(port: &PortFirewall, fallback: &str) -> Vec<String> {
    let mut rules = vec![commented(
        "-m state --state RELATED,ESTABLISHED -j RETURN",
        ALLOW_ASSOC,
    )];
    let dhcp = port
        .dhcp_servers
        .iter()
        .map(|ip| format!("-s {ip}/32 -p udp -m udp --sport 67 --dport 68 -j RETURN"));
    push_unique(&mut rules, dhcp.collect());
    push_unique(&mut rules, group_rules(port, Direction::Ingress));
    rules.push(commented("-m state --state INVALID -j DROP", INVALID_DROP));
    rules.push(commented(&format!("-j {fallback}"), UNMATCHED));
    rules
}

fn egress_rules(port: &PortFirewall, spoof: &str, fallback: &str) -> Vec<String> {
    let mut rules = vec![
        commented(
            "-s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j RETURN",
            DHCP_CLIENT,
        ),
        format!("-j {spoof}"),
        commented("-p udp -m udp --sport 68 --dport 67 -j RETURN", DHCP_CLIENT),
        commented("-p udp -m udp --sport 67 --dport 68 -j DROP", DHCP_SPOOF),
        commented(
            "-m state --state RELATED,ESTABLISHED -j RETURN",
            ALLOW_ASSOC,
        ),
    ];
    push_unique(&mut rules, group_rules(port, Direction::Egress));
    rules.push(commented("-m state --state INVALID -j DROP", INVALID_DROP));
    rules.push(commented(&format!("-j {fallback}"), UNMATCHED));
    rules
}

/// Appends `new` rules that are not there yet: two groups allowing the same
/// thing give one rule, as `IptablesManager` weeds out duplicates.
fn push_unique(rules: &mut Vec<String>, new: Vec<String>) {
    for rule in new {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
}

/// The port's security-group rules in `direction`, one text per remote.
fn group_rules(port: &PortFirewall, direction: Direction) -> Vec<String> {
    let own = Ipv4Net::from(port.ip);
    let mut out = Vec::new();
    for rule in port.rules.iter().filter(|r| r.direction == direction) {
        match &rule.remote {
            None => out.push(rule_text(rule, None)),
            Some(Remote::Prefixes(remotes)) => {
                for remote in remotes.iter().filter(|n| n.trunc() != own) {
                    out.push(rule_text(rule, Some(*remote)));
                }
            }
            Some(Remote::IpSet(set)) => out.push(set_rule_text(rule, set)),
        }
    }
    out
}

/// One rule in iptables-save's order: address, protocol, ports, target.
fn rule_text(rule: &SgRule, remote: Option<Ipv4Net>) -> String {
    let mut parts: Vec<String> = Vec::new();
    // A /0 prefix is no constraint; iptables drops it, and so does Neutron.
    if let Some(net) = remote.filter(|n| n.prefix_len() > 0) {
        let flag = match rule.direction {
            Direction::Ingress => "-s",
            Direction::Egress => "-d",
        };
        parts.push(format!("{flag} {}", net.trunc()));
    }
    protocol_parts(rule, &mut parts);
    parts.push("-j RETURN".into());
    parts.join(" ")
}

/// A remote-group rule as Liberty's `_generate_ipset_rule_args` writes it:
/// protocol and ports, then the set (`src` for ingress, `dst` for egress).
fn set_rule_text(rule: &SgRule, set: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    protocol_parts(rule, &mut parts);
    let direction = match rule.direction {
        Direction::Ingress => "src",
        Direction::Egress => "dst",
    };
    parts.push(format!("-m set --match-set {set} {direction}"));
    parts.push("-j RETURN".into());
    parts.join(" ")
}

/// The protocol and its ports as Liberty's `_protocol_arg` and
/// `_port_arg` write them: `-m tcp` (or `-m udp`) only with a port range,
/// so a rule without ports is `-p tcp -j RETURN`. iptables-save gives each
/// form back as it was written (`-p tcp` alone stays alone), so the
/// audit's comparison sees what it wrote.
fn protocol_parts(rule: &SgRule, parts: &mut Vec<String>) {
    match rule.protocol {
        None => {}
        Some(Protocol::Icmp) => parts.push("-p icmp".into()),
        Some(p @ (Protocol::Tcp | Protocol::Udp)) => {
            let name = p.name();
            parts.push(format!("-p {name}"));
            // A reversed range means the same ports; iptables wants it in order.
            match rule.port_range.map(|(a, b)| (a.min(b), a.max(b))) {
                None => {}
                Some((lo, hi)) if lo == hi => parts.push(format!("-m {name} --dport {lo}")),
                Some((lo, hi)) => parts.push(format!("-m {name} -m multiport --dports {lo}:{hi}")),
            }
        }
    }
}

/// `-j CT --zone N`; zone 0 is the default and iptables prints no option.
fn zone_rule(device: &str, zone: u16) -> String {
    if zone == 0 {
        format!("-m physdev --physdev-in {device} -j CT")
    } else {
        format!("-m physdev --physdev-in {device} -j CT --zone {zone}")
    }
}

/// A MAC as iptables-save prints it: lowercase, colon-separated.
fn mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("cidr")
    }

    /// The seed's default group: egress any; ingress ICMP; ingress from
    /// the group's members (expanded to their /32s).
    pub(crate) fn default_group(members: &[&str]) -> Vec<SgRule> {
        vec![
            SgRule {
                direction: Direction::Egress,
                protocol: None,
                port_range: None,
                remote: None,
            },
            SgRule {
                direction: Direction::Ingress,
                protocol: Some(Protocol::Icmp),
                port_range: None,
                remote: None,
            },
            SgRule {
                direction: Direction::Ingress,
                protocol: None,
                port_range: None,
                remote: Some(Remote::Prefixes(members.iter().map(|m| net(m)).collect())),
            },
        ]
    }

    /// Two ports on two networks (zones 1 and 2), given out of order.
    pub(crate) fn two_ports() -> Vec<PortFirewall> {
        let members = ["192.168.1.12/32", "192.168.1.13/32"];
        vec![
            PortFirewall {
                device: "tapd5a1e2b3-c4".into(),
                qvb: "qvbd5a1e2b3-c4".into(),
                mac: [0xfa, 0x16, 0x3e, 0x5d, 0x0b, 0xEE],
                ip: Ipv4Addr::new(192, 168, 2, 11),
                zone: 2,
                rules: default_group(&members),
                dhcp_servers: vec![],
            },
            PortFirewall {
                device: "tap28298c0d-08".into(),
                qvb: "qvb28298c0d-08".into(),
                mac: [0xfa, 0x16, 0x3e, 0x28, 0x29, 0x8c],
                ip: Ipv4Addr::new(192, 168, 1, 11),
                zone: 1,
                rules: default_group(&members),
                dhcp_servers: vec![],
            },
        ]
    }

    #[test]
    fn two_ports_snapshot() {
        let ruleset = firewall_ruleset(&two_ports());
        ruleset.validate().expect("valid");
        insta::assert_snapshot!(ruleset.render_save_like());
    }

    #[test]
    fn chain_names_follow_neutron() {
        assert_eq!(
            port_chain('i', "tap28298c0d-08"),
            "neutron-openvswi-i28298c0d-0"
        );
        assert_eq!(
            firewall_chain("sg-fallback"),
            "neutron-openvswi-sg-fallback"
        );
        assert_eq!(firewall_chain("PREROUTING"), "neutron-openvswi-PREROUTING");
    }

    fn rule(
        direction: Direction,
        protocol: Option<Protocol>,
        ports: Option<(u16, u16)>,
        remote: Option<Vec<Ipv4Net>>,
    ) -> SgRule {
        SgRule {
            direction,
            protocol,
            port_range: ports,
            remote: remote.map(Remote::Prefixes),
        }
    }

    #[test]
    fn remote_groups_match_their_ipset_after_protocol_and_ports() {
        let ingress = SgRule {
            direction: Direction::Ingress,
            protocol: Some(Protocol::Tcp),
            port_range: Some((22, 22)),
            remote: Some(Remote::IpSet("NIPv4abc".into())),
        };
        assert_eq!(
            set_rule_text(&ingress, "NIPv4abc"),
            "-p tcp -m tcp --dport 22 -m set --match-set NIPv4abc src -j RETURN"
        );
        let egress = SgRule {
            direction: Direction::Egress,
            protocol: None,
            port_range: None,
            remote: Some(Remote::IpSet("NIPv4abc".into())),
        };
        let port = PortFirewall {
            rules: vec![egress],
            ..two_ports().remove(0)
        };
        assert_eq!(
            group_rules(&port, Direction::Egress),
            ["-m set --match-set NIPv4abc dst -j RETURN"]
        );
    }

    #[test]
    fn rule_texts_are_canonical() {
        use Direction::*;
        use Protocol::*;
        let cases = [
            (rule(Ingress, Some(Icmp), None, None), "-p icmp -j RETURN"),
            (
                rule(Ingress, Some(Tcp), Some((22, 22)), None),
                "-p tcp -m tcp --dport 22 -j RETURN",
            ),
            (
                rule(Ingress, Some(Udp), Some((1000, 2000)), None),
                "-p udp -m udp -m multiport --dports 1000:2000 -j RETURN",
            ),
            // No ports, no `-m tcp` (`_port_arg` returns nothing).
            (rule(Ingress, Some(Tcp), None, None), "-p tcp -j RETURN"),
            (rule(Egress, Some(Udp), None, None), "-p udp -j RETURN"),
            (
                rule(Ingress, Some(Tcp), Some((90, 80)), None),
                "-p tcp -m tcp -m multiport --dports 80:90 -j RETURN",
            ),
            (
                rule(
                    Ingress,
                    Some(Tcp),
                    Some((53, 53)),
                    Some(vec![net("10.1.2.3/8")]),
                ),
                "-s 10.0.0.0/8 -p tcp -m tcp --dport 53 -j RETURN",
            ),
            (
                rule(Egress, Some(Icmp), None, Some(vec![net("10.0.0.1/32")])),
                "-d 10.0.0.1/32 -p icmp -j RETURN",
            ),
            (
                rule(Egress, None, None, Some(vec![net("0.0.0.0/0")])),
                "-j RETURN",
            ),
            (rule(Egress, None, Some((5, 6)), None), "-j RETURN"),
        ];
        for (r, want) in cases {
            let remote = match &r.remote {
                Some(Remote::Prefixes(v)) => v.first().copied(),
                _ => None,
            };
            assert_eq!(rule_text(&r, remote), want, "{r:?}");
        }
    }

    #[test]
    fn empty_remote_group_gives_no_rule_and_own_address_is_skipped() {
        let mut ports = two_ports();
        ports[1].rules = vec![
            rule(Direction::Ingress, Some(Protocol::Tcp), None, Some(vec![])),
            rule(
                Direction::Ingress,
                None,
                None,
                Some(vec![net("192.168.1.11/32"), net("192.168.1.12/32")]),
            ),
        ];
        let r = firewall_ruleset(&ports);
        assert_eq!(
            r.chain(Table::Filter, "neutron-openvswi-i28298c0d-0")
                .expect("chain"),
            [
                "-m state --state RELATED,ESTABLISHED -m comment --comment \"Direct packets associated with a known session to the RETURN chain.\" -j RETURN",
                "-s 192.168.1.12/32 -j RETURN",
                "-m state --state INVALID -m comment --comment \"Drop packets that appear related to an existing connection (e.g. TCP ACK/FIN) but do not have an entry in conntrack.\" -j DROP",
                "-m comment --comment \"Send unmatched traffic to the fallback chain.\" -j neutron-openvswi-sg-fallback"
            ]
        );
    }

    /// The DHCP server's rule is the port's own (a provider rule), which
    /// Liberty puts before its groups' rules: right after
    /// RELATED,ESTABLISHED.
    #[test]
    fn the_dhcp_servers_rule_comes_before_the_groups_rules() {
        let mut ports = two_ports();
        ports[1].dhcp_servers = vec![Ipv4Addr::new(192, 168, 1, 2)];
        let r = firewall_ruleset(&ports);
        let chain = r
            .chain(Table::Filter, "neutron-openvswi-i28298c0d-0")
            .expect("chain");
        assert_eq!(
            chain[..4],
            [
                "-m state --state RELATED,ESTABLISHED -m comment --comment \"Direct packets associated with a known session to the RETURN chain.\" -j RETURN",
                "-s 192.168.1.2/32 -p udp -m udp --sport 67 --dport 68 -j RETURN",
                "-p icmp -j RETURN",
                "-s 192.168.1.12/32 -j RETURN",
            ]
        );
    }

    #[test]
    fn duplicate_rules_from_two_groups_appear_once() {
        let mut ports = two_ports();
        let twice: Vec<SgRule> = ports[0]
            .rules
            .iter()
            .chain(ports[0].rules.iter())
            .cloned()
            .collect();
        ports[0].rules = twice;
        assert_eq!(firewall_ruleset(&ports), firewall_ruleset(&two_ports()));
    }

    #[test]
    fn zone_zero_is_plain_ct() {
        assert_eq!(zone_rule("qvbx", 0), "-m physdev --physdev-in qvbx -j CT");
        assert_eq!(
            zone_rule("qvbx", 4095),
            "-m physdev --physdev-in qvbx -j CT --zone 4095"
        );
    }

    #[test]
    fn no_ports_keeps_the_skeleton() {
        let r = firewall_ruleset(&[]);
        r.validate().expect("valid");
        assert_eq!(
            r.chain(Table::Filter, "neutron-openvswi-sg-chain"),
            Some(&["-j ACCEPT".to_string()][..])
        );
    }
}
