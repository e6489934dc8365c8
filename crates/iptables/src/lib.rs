//! Neutron's iptables rulesets as plain data, and the one driver that puts
//! them into a namespace.
//!
//! - [`router_ruleset`] — a legacy router's NAT as the Liberty L3 agent
//!   writes it (`neutron-l3-agent-*`);
//! - [`firewall_ruleset`] — a compute node's hybrid security-group firewall
//!   (`neutron-openvswi-*`);
//! - [`dhcp_ruleset`] — the DHCP agent's checksum rule in a qdhcp namespace;
//! - [`diff()`] — pure comparison of a [`Ruleset`] with parsed
//!   `iptables-save` output ([`Saved`]);
//! - [`apply()`] / [`read`] — the blocking driver: `iptables-save`, then at
//!   most one `iptables-restore --noflush -w`, inside a named namespace.
//! - [`converge_ipsets`] / [`remove_stale_ipsets`] — the remote groups'
//!   ipsets (`NIPv4…`), read with `ipset save` and changed with at most one
//!   `ipset restore` each.
//!
//! Ownership is by name: every chain starting with [`OWNED_PREFIX`] is
//! ours, rules in built-in chains are ours when they jump to such a chain,
//! and nothing else is read or written. Rules are generated in the exact
//! text `iptables-save` prints back (the root tests prove it), which is what
//! lets an unchanged ruleset cost one `iptables-save` and nothing more.

mod apply;
mod dhcp;
mod diff;
mod error;
mod firewall;
mod ipset;
mod router;
mod ruleset;
mod save;
mod skeleton;
mod tokens;

pub use apply::{Applied, apply, is_nf_tables, read};
pub use dhcp::{DHCP_BINARY, dhcp_ruleset};
pub use diff::{Plan, diff};
pub use error::IptablesError;
pub use firewall::{
    Direction, FIREWALL_BINARY, PortFirewall, Protocol, Remote, SgRule, firewall_chain,
    firewall_ruleset, port_chain,
};
pub use ipset::{
    ActualIpSets, IPSET_PREFIX, IpSet, converge_ipsets, read_ipsets, remove_stale_ipsets,
};
pub use router::{EXTERNAL_INGRESS_MARK, FloatingIp, ROUTER_BINARY, RouterNat, router_ruleset};
pub use ruleset::{BuiltinRule, Chain, MAX_CHAIN_LEN, OWNED_PREFIX, Ruleset, Table, TableRules};
pub use save::{Saved, SavedChain, SavedRule, SavedTable};
pub use skeleton::skeleton;
