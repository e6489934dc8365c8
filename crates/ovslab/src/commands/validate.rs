//! `ovslab validate FILE`: parse and validate only; no daemon needed.

use std::path::PathBuf;
use std::process::ExitCode;

use ovslab_topology::{Topology, printable};

use crate::BadInput;

/// Parse and validate a topology file only (no daemon needed).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Parse and validate a topology file only; nothing is touched and no daemon \
is needed.\n\n\
Prints `FILE: ok (lab NAME: N nodes, M instances)` and exits 0, or one `FILE:LINE:COLUMN: problem` \
line per problem and exits 2.",
    after_help = "Exit status: 0 valid, 2 not valid (or unreadable)."
)]
pub struct Args {
    /// The topology file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| BadInput(format!("{name}: cannot read: {e}")))?;
    let topology = ovslab_topology::parse(&name, &text).map_err(|e| BadInput(e.to_string()))?;
    println!("{}", summary(&name, &topology));
    Ok(ExitCode::SUCCESS)
}

pub fn summary(name: &str, topology: &Topology) -> String {
    format!(
        "{}: ok (lab {}: {} nodes, {} instances)",
        printable(name),
        topology.lab,
        topology.nodes.len(),
        topology.instances.len()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_lab_is_summed_up() {
        let seed = ovslab_topology::seed();
        assert_eq!(
            super::summary("seed.yaml", &seed),
            "seed.yaml: ok (lab seed: 3 nodes, 4 instances)"
        );
    }
}
