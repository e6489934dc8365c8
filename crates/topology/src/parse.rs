//! Reading a topology file: YAML → raw, located structs → validated
//! [`Topology`](crate::Topology).

use std::fmt;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::model::Topology;
use crate::printable::printable;
use crate::validate;

/// One problem in a topology file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    /// One line, control characters escaped (see [`printable`]): it quotes
    /// values from the file.
    pub message: String,
}

/// Why a topology file was refused. Nothing has been touched on the host
/// when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file is not YAML of the expected shape.
    #[error("{}:{line}:{column}: {message}", printable(.source_name))]
    Syntax {
        source_name: String,
        line: u32,
        column: u32,
        message: String,
    },
    /// The file parses but breaks one or more rules; all are listed.
    #[error("{}", format_invalid(.source_name, .problems))]
    Invalid {
        source_name: String,
        problems: Vec<Diagnostic>,
    },
}

fn format_invalid(source_name: &str, problems: &[Diagnostic]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}: {}",
                printable(source_name),
                p.line,
                p.column,
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Parses and validates a topology. `source_name` (a path, usually) is what
/// error messages call the file.
pub fn parse(source_name: &str, text: &str) -> Result<Topology, TopologyError> {
    let raw: RawTopology = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as u32, l.column() as u32))
            .unwrap_or((0, 0));
        TopologyError::Syntax {
            source_name: source_name.to_string(),
            line,
            column,
            message: first_line(&e.to_string()),
        }
    })?;
    validate::validate(source_name, raw).map_err(|problems| TopologyError::Invalid {
        source_name: source_name.to_string(),
        problems,
    })
}

/// serde-saphyr's messages carry a source snippet after the first line; we
/// print our own `file:line:column` prefix instead. What it quotes from the
/// file is escaped.
fn first_line(message: &str) -> String {
    printable(message.lines().next().unwrap_or(message).trim()).into_owned()
}

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopology {
    pub lab: S<String>,
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub physical_networks: Vec<RawPhysicalNetwork>,
    #[serde(default)]
    pub overlay: Option<RawOverlay>,
    #[serde(default)]
    pub agent: Option<S<RawAgent>>,
    /// The nodes that run the DHCP agent (default: the network nodes).
    #[serde(default)]
    pub dhcp_agents: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub networks: Vec<RawNetwork>,
    #[serde(default)]
    pub external_networks: Vec<RawExternalNetwork>,
    #[serde(default)]
    pub external_hosts: Vec<RawExternalHost>,
    #[serde(default)]
    pub physical_routers: Vec<RawPhysicalRouter>,
    #[serde(default)]
    pub routers: Vec<RawRouter>,
    /// The HA network of the HA routers (Neutron's `l3_ha_net_*` options).
    #[serde(default)]
    pub l3_ha: Option<S<RawL3Ha>>,
    #[serde(default)]
    pub security_groups: Vec<RawSecurityGroup>,
    #[serde(default)]
    pub instances: Vec<RawInstance>,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub name: S<String>,
    pub from: S<String>,
    /// Optional for a DHCP check, whose probe goes to the network's DHCP
    /// server.
    #[serde(default)]
    pub to: Option<S<String>>,
    #[serde(default)]
    pub protocol: Option<S<String>>,
    #[serde(default)]
    pub port: Option<S<i64>>,
    #[serde(default)]
    pub expect: Option<S<String>>,
    #[serde(default)]
    pub crosses: Vec<S<String>>,
    #[serde(default)]
    pub avoids: Vec<S<String>>,
    #[serde(default)]
    pub wire_vlan: Option<S<i64>>,
    #[serde(default)]
    pub wire_vni: Option<S<i64>>,
    #[serde(default)]
    pub arrives_from: Option<S<String>>,
    #[serde(default)]
    pub layer2: Option<S<bool>>,
    #[serde(default)]
    pub path: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: S<String>,
    pub role: S<String>,
    /// The node's tunnel endpoint on the overlay (the agent's `local_ip`).
    #[serde(default)]
    pub local_ip: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOverlay {
    #[serde(default)]
    pub name: Option<S<String>>,
    pub cidr: S<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    #[serde(default)]
    pub tunnel_types: Vec<S<String>>,
    #[serde(default)]
    pub l2_population: Option<S<bool>>,
    #[serde(default)]
    pub arp_responder: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhysicalNetwork {
    pub name: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub name: S<String>,
    /// `vlan` (the default), `flat`, `vxlan` or `gre`.
    #[serde(default, rename = "type")]
    pub network_type: Option<S<String>>,
    #[serde(default)]
    pub physical_network: Option<S<String>>,
    #[serde(default)]
    pub segmentation_id: Option<S<i64>>,
    pub cidr: S<String>,
    pub gateway: S<String>,
    /// Neutron's `enable_dhcp` (default true).
    #[serde(default)]
    pub dhcp: Option<S<bool>>,
    #[serde(default)]
    pub dns_nameservers: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub start: S<String>,
    pub end: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExternalNetwork {
    pub name: S<String>,
    pub cidr: S<String>,
    pub gateway: S<String>,
    #[serde(default)]
    pub pool: Option<RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExternalHost {
    pub name: S<String>,
    pub network: S<String>,
    pub address: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhysicalRouter {
    pub name: S<String>,
    pub interfaces: Vec<RawGateway>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub network: S<String>,
    pub address: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawL3Ha {
    /// `l3_ha_net_cidr` (default 169.254.192.0/18).
    pub cidr: Option<S<String>>,
    /// `l3_ha_network_type` (default: the first tunnel type, else vlan).
    pub network_type: Option<S<String>>,
    /// `l3_ha_network_physical_name`, for a VLAN or flat HA network.
    pub physical_network: Option<S<String>>,
    /// Default: the lowest one no other network of the type uses.
    pub segmentation_id: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub name: S<String>,
    /// A legacy router's network node.
    pub node: Option<S<String>>,
    /// An HA router: a copy on each of `nodes`, with keepalived.
    #[serde(default)]
    pub ha: Option<S<bool>>,
    /// An HA router's network nodes (default: every network node).
    pub nodes: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub interfaces: Vec<S<String>>,
    pub external_gateway: Option<RawGateway>,
    #[serde(default = "default_true")]
    pub snat: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurityGroup {
    pub name: S<String>,
    #[serde(default)]
    pub rules: Vec<S<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub direction: S<String>,
    #[serde(default)]
    pub ethertype: Option<S<String>>,
    #[serde(default)]
    pub protocol: Option<S<String>>,
    #[serde(default)]
    pub port_range_min: Option<S<i64>>,
    #[serde(default)]
    pub port_range_max: Option<S<i64>>,
    #[serde(default)]
    pub remote_ip_prefix: Option<S<String>>,
    #[serde(default)]
    pub remote_group: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstance {
    pub name: S<String>,
    pub node: S<String>,
    pub network: S<String>,
    pub address: S<String>,
    #[serde(default)]
    pub mac: Option<S<String>>,
    #[serde(default)]
    pub floating_ip: Option<S<String>>,
    #[serde(default)]
    pub security_groups: Vec<S<String>>,
    /// What the metadata service hands out as `user-data`.
    #[serde(default)]
    pub user_data: Option<S<String>>,
    /// Public keys, as `public-keys` in the metadata.
    #[serde(default)]
    pub ssh_keys: Vec<S<String>>,
}
