//! Reading a topology file: YAML → raw, located structs → validated
//! [`Topology`].

use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::model::Topology;
use crate::printable::{printable, shortened};
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
    /// The file parses but breaks one or more rules. `problems` holds them
    /// all; the text lists the first ones only (see [`PROBLEMS_SHOWN`]).
    #[error("{}", format_invalid(.source_name, .problems))]
    Invalid {
        source_name: String,
        problems: Vec<Diagnostic>,
    },
}

/// The text of a [`TopologyError::Invalid`] lists at most this many
/// problems, and at most [`PROBLEMS_TEXT`] bytes of them; a line counts the
/// rest (`… and 1900 more problems (2000 in all)`). The text is what the
/// daemon answers a refused `up` with: a file can hold thousands of
/// problems (YAML aliases repeat one as often as they like), and each line
/// names the file.
pub const PROBLEMS_SHOWN: usize = 100;

/// See [`PROBLEMS_SHOWN`].
pub const PROBLEMS_TEXT: usize = 32 * 1024;

/// The longest message of a [`Diagnostic`] or a syntax error, in bytes: a
/// value quoted from the file loses its middle beyond it (see
/// [`shortened`]).
pub const MESSAGE_MAX: usize = 1024;

fn format_invalid(source_name: &str, problems: &[Diagnostic]) -> String {
    let name = printable(source_name);
    let mut text = String::new();
    let mut shown = 0;
    for p in problems.iter().take(PROBLEMS_SHOWN) {
        let line = format!("{name}:{}:{}: {}", p.line, p.column, p.message);
        // The first one always, however long the file's name.
        if shown > 0 && text.len() + 1 + line.len() > PROBLEMS_TEXT {
            break;
        }
        if shown > 0 {
            text.push('\n');
        }
        text.push_str(&line);
        shown += 1;
    }
    let more = problems.len() - shown;
    if more > 0 {
        text.push_str(&format!(
            "\n… and {more} more problem{} ({} in all)",
            if more == 1 { "" } else { "s" },
            problems.len()
        ));
    }
    text
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// Parses and validates a topology. `source_name` (a path, usually) is what
/// error messages call the file.
pub fn parse(source_name: &str, text: &str) -> Result<Topology, TopologyError> {
    let raw: RawTopology = serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() as u32, l.column() as u32))
            .unwrap_or((0, 0));
        let message = match cause(&e) {
            serde_saphyr::Error::Budget { breach, .. } => too_much(breach),
            _ => first_line(&e.to_string(), line, column),
        };
        TopologyError::Syntax {
            source_name: source_name.to_string(),
            line,
            column,
            message,
        }
    })?;
    validate::validate(source_name, raw).map_err(|problems| TopologyError::Invalid {
        source_name: source_name.to_string(),
        problems,
    })
}

/// The most text a file's scalars may come to, aliases expanded: twice the
/// largest request ovslabd reads (4 MiB). The generated 10,000-instance lab
/// has 0.8 MB of them. serde-saphyr's default, 64 MiB, let a 1 MB file of
/// aliases take a parse to 70 MB of memory.
pub const SCALAR_BYTES: usize = 8 * 1024 * 1024;

/// The most text anchors may record for aliases to repeat.
pub const ANCHORED_BYTES: usize = 4 * 1024 * 1024;

/// serde-saphyr's limits, with the two on text taken down to what a
/// topology can need (the rest of its defaults already bound a file: 250,000
/// nodes, where the 10,000-instance lab has 121,405; depth 64).
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_total_scalar_bytes: SCALAR_BYTES,
            max_recorded_anchor_bytes: ANCHORED_BYTES,
        },
    }
}

/// serde-saphyr's messages carry a source snippet after the first line, and
/// start with the place (`error: line 2 column 8: `); we print our own
/// `file:line:column` prefix instead. What it quotes from the file is
/// escaped.
fn first_line(message: &str, line: u32, column: u32) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let place = format!("line {line} column {column}: ");
    let first = first.strip_prefix(place.as_str()).unwrap_or(first);
    shortened(&printable(first), MESSAGE_MAX).into_owned()
}

/// The error under serde-saphyr's wrappers (a source snippet, the alias
/// that repeated the value).
fn cause(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = e
    {
        e = error;
    }
    e
}

/// What a file past one of [`options`]' limits is told.
fn too_much(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach::*;
    match breach {
        ScalarBytes { .. } => format!(
            "the file's values come to more than {} MiB of text (aliases expanded), \
             more than a topology may hold",
            SCALAR_BYTES >> 20
        ),
        RecordedAnchorBytes { .. } => format!(
            "anchors record more than {} MiB of text for aliases to repeat, \
             more than a topology may hold",
            ANCHORED_BYTES >> 20
        ),
        other => format!("the file is larger than a topology may be ({other:?})"),
    }
}

/// A value and where it is in the file (serde-saphyr's [`Spanned`]): a
/// type of this crate, so that the file's JSON Schema (`crate::schema`)
/// describes the value alone. Reads as the `Spanned` it holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub(crate) struct S<T>(pub Spanned<T>);

impl<T> std::ops::Deref for S<T> {
    type Target = Spanned<T>;

    fn deref(&self) -> &Spanned<T> {
        &self.0
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Topology")]
pub(crate) struct RawTopology {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Check")]
pub(crate) struct RawCheck {
    pub name: S<String>,
    pub from: S<String>,
    /// Optional for a DHCP check, whose probe goes to the network's DHCP
    /// server.
    #[serde(default)]
    pub to: Option<S<String>>,
    #[serde(default)]
    #[schemars(extend("enum" = ["icmp", "tcp", "http", "dhcp", null]))]
    pub protocol: Option<S<String>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<S<i64>>,
    #[serde(default)]
    #[schemars(extend("enum" = ["success", "failure", null]))]
    pub expect: Option<S<String>>,
    #[serde(default)]
    pub crosses: Vec<S<String>>,
    #[serde(default)]
    pub avoids: Vec<S<String>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 4094))]
    pub wire_vlan: Option<S<i64>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub wire_vni: Option<S<i64>>,
    #[serde(default)]
    pub arrives_from: Option<S<String>>,
    #[serde(default)]
    pub layer2: Option<S<bool>>,
    #[serde(default)]
    pub path: Option<S<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Node")]
pub(crate) struct RawNode {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    #[schemars(extend("enum" = ["network", "compute"]))]
    pub role: S<String>,
    /// The node's tunnel endpoint on the overlay (the agent's `local_ip`).
    #[serde(default)]
    pub local_ip: Option<S<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Overlay")]
pub(crate) struct RawOverlay {
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: Option<S<String>>,
    pub cidr: S<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Agent")]
pub(crate) struct RawAgent {
    #[serde(default)]
    #[schemars(extend("items" = {"enum": ["vxlan", "gre"]}))]
    pub tunnel_types: Vec<S<String>>,
    #[serde(default)]
    pub l2_population: Option<S<bool>>,
    #[serde(default)]
    pub arp_responder: Option<S<bool>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PhysicalNetwork")]
pub(crate) struct RawPhysicalNetwork {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
pub(crate) struct RawNetwork {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    /// `vlan` (the default), `flat`, `vxlan` or `gre`.
    #[serde(default, rename = "type")]
    #[schemars(extend("enum" = ["vlan", "flat", "vxlan", "gre", null]))]
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
    /// At most five, each once (Neutron's `max_dns_nameservers`).
    #[serde(default)]
    #[schemars(length(max = 5))]
    pub dns_nameservers: Vec<S<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pool")]
pub(crate) struct RawPool {
    pub start: S<String>,
    pub end: S<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExternalNetwork")]
pub(crate) struct RawExternalNetwork {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    pub cidr: S<String>,
    pub gateway: S<String>,
    #[serde(default)]
    pub pool: Option<RawPool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExternalHost")]
pub(crate) struct RawExternalHost {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    pub network: S<String>,
    pub address: S<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PhysicalRouter")]
pub(crate) struct RawPhysicalRouter {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    pub interfaces: Vec<RawGateway>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Gateway")]
pub(crate) struct RawGateway {
    pub network: S<String>,
    pub address: S<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "L3Ha")]
pub(crate) struct RawL3Ha {
    /// `l3_ha_net_cidr` (default 169.254.192.0/18).
    pub cidr: Option<S<String>>,
    /// `l3_ha_network_type` (default: the first tunnel type, else vlan).
    #[schemars(extend("enum" = ["vlan", "flat", "vxlan", "gre", null]))]
    pub network_type: Option<S<String>>,
    /// `l3_ha_network_physical_name`, for a VLAN or flat HA network.
    pub physical_network: Option<S<String>>,
    /// Default: the lowest one no other network of the type uses.
    pub segmentation_id: Option<S<i64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Router")]
pub(crate) struct RawRouter {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SecurityGroup")]
pub(crate) struct RawSecurityGroup {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: S<String>,
    #[serde(default)]
    pub rules: Vec<S<RawRule>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rule")]
pub(crate) struct RawRule {
    #[schemars(extend("enum" = ["ingress", "egress"]))]
    pub direction: S<String>,
    #[serde(default)]
    #[schemars(extend("enum" = ["IPv4", null]))]
    pub ethertype: Option<S<String>>,
    #[serde(default)]
    #[schemars(extend("enum" = ["icmp", "tcp", "udp", null]))]
    pub protocol: Option<S<String>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub port_range_min: Option<S<i64>>,
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub port_range_max: Option<S<i64>>,
    #[serde(default)]
    pub remote_ip_prefix: Option<S<String>>,
    #[serde(default)]
    pub remote_group: Option<S<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Instance")]
pub(crate) struct RawInstance {
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
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
