//! `ovslab generate`: print a generated lab for scale tests and benchmarks.

use std::process::ExitCode;

use crate::BadInput;

/// Print a generated lab (N compute nodes with K instances each) for scale tests.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print a generated lab named scale-N-K: nodes `network` and \
compute1…computeN, K instances on each compute node alternating between net1 (192.168.0.0/19, \
VLAN 101) and net2 (192.168.32.0/19, VLAN 102), or larger halves of 172.16.0.0/12 when the \
instances do not fit, behind router1, with the seed's external network and `internet` host. With --network-type vxlan or gre, net1 and net2 are tunnel networks \
(VNI or key 101 and 102) with l2population, and the lab is scale-vxlan-N-K or scale-gre-N-K. Bring it up with `ovslab generate … > lab.yaml && ovslab up lab.yaml`.",
    after_help = "Exit status: 0 printed, 2 a bad argument."
)]
pub struct Args {
    /// Number of compute nodes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=999))]
    pub computes: u32,

    /// Number of instances on each compute node.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub instances_per_node: u32,

    /// The networks' type: vlan (on physnet1), or vxlan or gre (tunnels
    /// over an overlay 10.255.0.0/16, with l2population; the lab is then
    /// named scale-vxlan-N-K or scale-gre-N-K).
    #[arg(long, value_name = "TYPE", default_value = "vlan", value_parser = ["vlan", "vxlan", "gre"])]
    pub network_type: String,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    use ovslab_topology::TunnelType;
    let tunnel = match args.network_type.as_str() {
        "vxlan" => Some(TunnelType::Vxlan),
        "gre" => Some(TunnelType::Gre),
        _ => None,
    };
    let text = ovslab_topology::generate::scale_topology_of(
        args.computes,
        args.instances_per_node,
        tunnel,
    );
    // A lab too big for its networks would not validate: say so here.
    ovslab_topology::parse("generated", &text).map_err(|e| BadInput(e.to_string()))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
