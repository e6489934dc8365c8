//! `ovslab schema`: the JSON Schema of topology files.

use std::process::ExitCode;

/// Print the JSON Schema of topology files (for editors; no daemon needed).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print the JSON Schema (draft 2020-12) of topology files, generated from the \
types the parser reads them into: the fields of each object, which are required, their types, \
the closed sets of words (role, type, protocol, …), name patterns and ranges that do not depend \
on the rest of the file, and no unknown field anywhere. `ovslab validate` checks everything else \
(unique names, addresses in their subnets, references between objects).\n\n\
Editors with the YAML language server complete and check a lab file that starts with\n  \
# yaml-language-server: $schema=./topology.schema.json\n\
after `ovslab schema > topology.schema.json` (the package installs it as \
/usr/share/ovslab/topology.schema.json).",
    after_help = "Exit status: 0 printed."
)]
pub struct Args {}

pub fn exec(_args: Args) -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(&ovslab_topology::json_schema())?
    );
    Ok(ExitCode::SUCCESS)
}
