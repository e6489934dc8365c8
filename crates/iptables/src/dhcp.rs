//! The DHCP agent's rules in a `qdhcp-<network uuid>` namespace
//! (`neutron/agent/linux/dhcp.py`, `DeviceManager._set_checksum_fill`…
//! `iptables_manager.ipv4['mangle'].add_rule('POSTROUTING', …)`): DHCP
//! answers leave with their UDP checksum filled in, for clients that check
//! it on frames whose checksum the kernel left to offload. Wrapped as
//! `IptablesManager` wraps every chain, with the agent's binary name cut
//! to 16 characters.

use crate::ruleset::{Ruleset, Table};

/// The DHCP agent's wrap name: `neutron-dhcp-agent` cut to 16 characters.
pub const DHCP_BINARY: &str = "neutron-dhcp-age";

/// The qdhcp namespace's ruleset.
pub fn dhcp_ruleset() -> Ruleset {
    let mut r = crate::skeleton::skeleton(DHCP_BINARY);
    let postrouting = format!("{DHCP_BINARY}-POSTROUTING");
    r.append(
        Table::Mangle,
        &postrouting,
        "-p udp -m udp --dport 68 -j CHECKSUM --checksum-fill",
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_rule_is_the_agents() {
        let r = dhcp_ruleset();
        r.validate().unwrap();
        assert_eq!(
            r.chain(Table::Mangle, "neutron-dhcp-age-POSTROUTING")
                .unwrap(),
            ["-p udp -m udp --dport 68 -j CHECKSUM --checksum-fill"]
        );
        let jumps: Vec<&str> = r
            .table(Table::Mangle)
            .unwrap()
            .builtin_rules_of("POSTROUTING")
            .collect();
        assert_eq!(jumps, ["-j neutron-dhcp-age-POSTROUTING"]);
    }
}
