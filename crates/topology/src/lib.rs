//! ovslab's topology: what a lab is, as data.
//!
//! - [`parse()`] reads a topology file (YAML) and validates it into a
//!   [`Topology`]; every error names the file, line and column.
//! - [`naming`] derives the names Neutron would give: port UUIDs, `tap`/`qbr`/
//!   `qvb`/`qvo` devices, namespaces, MACs and the lab's flow cookie.
//! - [`identifiers`] settles the derived port UUIDs and MACs of a lab so
//!   that no two collide, when a topology is validated.
//! - [`plan`] turns a topology into the [`plan::DesiredState`]: every
//!   namespace, link, address, route, Open vSwitch row and flow, as pure data.
//! - [`dhcp`] names the DHCP agent's namespaces and ports and writes
//!   dnsmasq's files and command line.
//! - [`keepalived`] names an HA router copy's `ha-` port and writes its
//!   keepalived configuration and command line.
//! - [`metadata`] says where the metadata service answers and what, for
//!   each instance.
//! - [`graph`] draws a planned lab as DOT, Mermaid or a standalone SVG.
//! - [`printable()`] escapes control characters in text from a file or a
//!   client before it is shown or logged; [`shortened`] cuts a long one.
//! - [`json_schema`] is the JSON Schema of a topology file, generated from
//!   the types the parser reads it into.
//!
//! Nothing in this crate touches the host.

pub mod dhcp;
pub mod generate;
pub mod graph;
pub mod identifiers;
pub mod keepalived;
pub mod metadata;
mod model;
pub mod naming;
mod parse;
pub mod plan;
mod printable;
mod schema;
mod validate;

pub use model::*;
pub use parse::{Diagnostic, MESSAGE_MAX, PROBLEMS_SHOWN, PROBLEMS_TEXT, TopologyError, parse};
pub use printable::{is_unsafe, printable, printable_lines, shortened};
pub use schema::json_schema;
pub use validate::{lab_name_problem, object_name_problem, socket_paths_problem};

/// The seed lab's topology file, compiled in as the default lab.
pub const SEED_YAML: &str = include_str!("../../../lab-topologies/seed.yaml");

/// The name under which the seed lab's file is reported in errors.
pub const SEED_SOURCE: &str = "lab-topologies/seed.yaml";

/// The seed lab, parsed and validated.
pub fn seed() -> Topology {
    parse(SEED_SOURCE, SEED_YAML).expect("the compiled-in seed lab is valid")
}
