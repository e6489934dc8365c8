//! `ovslab generate`: print a generated lab for scale tests and benchmarks.

use std::process::ExitCode;

use crate::BadInput;

/// Print a generated lab (N compute nodes with K instances each) for scale tests.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print a generated lab named scale-N-K: nodes `network` and \
compute1…computeN, K instances on each compute node alternating between net1 (192.168.0.0/19, \
VLAN 101) and net2 (192.168.32.0/19, VLAN 102) behind router1, with the seed's external network \
and `internet` host. Bring it up with `ovslab generate … > lab.yaml && ovslab up lab.yaml`.",
    after_help = "Exit status: 0 printed, 2 a bad argument."
)]
pub struct Args {
    /// Number of compute nodes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=999))]
    pub computes: u32,

    /// Number of instances on each compute node.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub instances_per_node: u32,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    let text = ovslab_topology::generate::scale_topology(args.computes, args.instances_per_node);
    // A lab too big for its networks would not validate: say so here.
    ovslab_topology::parse("generated", &text).map_err(|e| BadInput(e.to_string()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
