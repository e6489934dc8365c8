//! `ovslab graph [LAB]`: the lab as a picture (DOT, Mermaid or SVG).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ovslab_api::UpRequest;
use ovslab_topology::Topology;
use ovslab_topology::plan::{LocalVlans, plan};

use crate::BadInput;
use crate::client::Client;
use crate::commands::{lab_or_only, segment};

/// What the picture is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz DOT (`dot -Tpng`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// A standalone SVG image, laid out by ovslab itself.
    Svg,
}

/// Draw a lab: nodes with their bridges, instances, routers and networks.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Draw a lab as people draw a Neutron deployment: one frame per node with its \
OVS bridges (br-int, br-vlan, br-ex) and Linux bridges (qbr…), the instances and routers \
attached to them, the physical network and the external network with its hosts, and every veth \
and patch link labelled with its devices, the local VLAN tag on br-int and the VLAN ids on the \
wire.\n\n\
The picture is drawn from the planned state. With --topology FILE no daemon is needed; \
otherwise the daemon is asked for the topology LAB was brought up with.",
    after_help = "Exit status: 0 drawn, 1 the daemon is unreachable or does not know LAB or \
the file cannot be written, 2 a topology file that does not validate."
)]
pub struct Args {
    /// The running lab to draw (ignored with --topology); default: the
    /// only lab running.
    #[arg(value_name = "LAB")]
    pub lab: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
    /// Write the picture to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Draw this topology file instead of a running lab (no daemon needed).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let topology = match &args.topology {
        Some(file) => read_file(file)?,
        None => {
            let lab = lab_or_only(client, args.lab.clone(), "ovslab graph LAB")?;
            let saved: UpRequest = client.get(&format!("/v1/labs/{}/topology", segment(&lab)))?;
            ovslab_topology::parse(&saved.source, &saved.topology)
                .with_context(|| format!("the daemon's topology of lab {lab}"))?
        }
    };
    let picture = draw(&topology, args.format);
    match &args.output {
        Some(path) => std::fs::write(path, picture)
            .with_context(|| format!("{}: cannot write", path.display()))?,
        None => print!("{picture}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A topology file, parsed and validated; problems are the user's (exit 2).
fn read_file(file: &std::path::Path) -> anyhow::Result<Topology> {
    let name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).map_err(|e| BadInput(format!("{name}: cannot read: {e}")))?;
    Ok(ovslab_topology::parse(&name, &text).map_err(|e| BadInput(e.to_string()))?)
}

/// The picture of a topology as planned from scratch.
pub fn draw(topology: &Topology, format: Format) -> String {
    let state = plan(topology, &LocalVlans::new());
    match format {
        Format::Dot => ovslab_topology::graph::dot(&state, topology),
        Format::Mermaid => ovslab_topology::graph::mermaid(&state, topology),
        Format::Svg => ovslab_topology::graph::svg(&state, topology),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_draws_the_seed_lab() {
        let seed = ovslab_topology::seed();
        assert!(draw(&seed, Format::Dot).starts_with("graph \"seed\" {"));
        assert!(draw(&seed, Format::Mermaid).starts_with("flowchart"));
        assert!(draw(&seed, Format::Svg).starts_with("<svg "));
    }
}
