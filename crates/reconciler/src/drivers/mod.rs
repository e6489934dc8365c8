//! Reading and applying through the kernel and Open vSwitch: netlink for
//! links, OVSDB for bridges and ports, OpenFlow for flows.

pub mod flows;
pub mod links;
pub mod rulesets;
pub mod switch;
