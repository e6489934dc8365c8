//! `ovslab __complete labs|targets|nodes [--lab LAB]` (hidden): the names
//! a completion script offers, asked of the running daemon, one per line
//! as `NAME<TAB>DESCRIPTION`. Silent (and exit 1) when the daemon does not
//! answer within a second, or no single lab is meant: a prompt must never
//! hang nor show an error.

use std::process::ExitCode;
use std::time::Duration;

use ovslab_api::UpRequest;
use ovslab_topology::{NodeRole, Topology};

use crate::client::Client;
use crate::commands::segment;

/// What a completion script asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// The running labs.
    Labs,
    /// A lab's nodes, instances, routers (and HA router copies),
    /// physical routers and external hosts.
    Targets,
    /// A lab's nodes.
    Nodes,
}

/// Names for shell completion, from the running daemon.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub what: What,
    /// The lab whose names; default: the only lab running.
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,
}

/// How long the daemon has to answer a completion.
const DEADLINE: Duration = Duration::from_secs(1);

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let client = client.clone().with_deadline(DEADLINE);
    let Ok(lines) = names(&client, &args) else {
        return Ok(ExitCode::FAILURE);
    };
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn names(client: &Client, args: &Args) -> anyhow::Result<Vec<String>> {
    let labs: Vec<String> = match (&args.lab, args.what) {
        (Some(lab), What::Targets | What::Nodes) => vec![lab.clone()],
        _ => client.get("/v1/labs")?,
    };
    if args.what == What::Labs {
        return Ok(lab_lines(&labs));
    }
    let [lab] = labs.as_slice() else {
        anyhow::bail!("no single lab");
    };
    let saved: UpRequest = client.get(&format!("/v1/labs/{}/topology", segment(lab)))?;
    let topology = ovslab_topology::parse(&saved.source, &saved.topology)?;
    Ok(match args.what {
        What::Nodes => nodes(&topology),
        _ => targets(&topology),
    })
}

/// The labs offered, one line each: only names that pass the topology's
/// rule, so that a socket answering escape sequences or tabs cannot write
/// them into a completion menu.
fn lab_lines(labs: &[String]) -> Vec<String> {
    labs.iter()
        .filter(|l| ovslab_topology::lab_name_problem(l).is_none())
        .map(|l| format!("{l}\trunning lab"))
        .collect()
}

fn nodes(t: &Topology) -> Vec<String> {
    t.nodes
        .iter()
        .map(|n| {
            let role = match n.role {
                NodeRole::Network => "network node",
                NodeRole::Compute => "compute node",
            };
            format!("{}\t{role}", n.name)
        })
        .collect()
}

/// Every name `exec`, `capture` and `trace` take, with what it is.
pub fn targets(t: &Topology) -> Vec<String> {
    let mut out = nodes(t);
    for i in &t.instances {
        out.push(format!("{}\tinstance on {}", i.name, i.node));
    }
    for r in &t.routers {
        if r.ha.is_some() {
            out.push(format!("{}\tHA router (its active copy)", r.name));
            for node in &r.nodes {
                out.push(format!("{}@{node}\tHA router copy on {node}", r.name));
            }
        } else {
            out.push(format!("{}\trouter on {}", r.name, r.node()));
        }
    }
    for r in &t.physical_routers {
        out.push(format!("{}\tphysical router", r.name));
    }
    for h in &t.external_hosts {
        out.push(format!("{}\texternal host", h.name));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_lab_names_that_pass_the_rule_are_offered() {
        let labs: Vec<String> = [
            "seed",
            "\u{1b}]0;PWNED\u{7}\u{1b}[2Jred",
            "a\tb",
            "two\nlines",
            "../etc",
            "lab-2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            super::lab_lines(&labs),
            ["seed\trunning lab", "lab-2\trunning lab"]
        );
    }

    #[test]
    fn the_seed_labs_targets_are_its_nodes_instances_router_and_host() {
        let names: Vec<String> = super::targets(&ovslab_topology::seed())
            .into_iter()
            .map(|l| l.replace('\t', " | "))
            .collect();
        insta::assert_snapshot!(names.join("\n"), @r"
        network | network node
        compute1 | compute node
        compute2 | compute node
        instance1 | instance on compute1
        instance2 | instance on compute2
        instance3 | instance on compute2
        instance4 | instance on compute1
        router1 | router on network
        internet | external host
        ");
    }
}
