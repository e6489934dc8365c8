//! `ovslab validate FILE`: parse and validate only; no daemon needed.

use std::path::PathBuf;
use std::process::ExitCode;

use ovslab_topology::{Topology, TopologyError, printable};
use serde::Serialize;

use crate::BadInput;

/// Parse and validate a topology file only (no daemon needed).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Parse and validate a topology file only; nothing is touched and no daemon \
is needed.\n\n\
Prints `FILE: ok (lab NAME: N nodes, M instances)` and exits 0, or one `FILE:LINE:COLUMN: problem` \
line per problem and exits 2 (the first 100 problems; a last line counts the others).\n\n\
--json prints one object on standard output either way: {\"file\", \"valid\": true, \"lab\", \
\"nodes\", \"instances\"}, or {\"file\", \"valid\": false, \"problems\": [{\"line\", \"column\", \
\"message\"}]} with every problem (exit 2; a file that cannot be read has one problem at line 0).",
    after_help = "Exit status: 0 valid, 2 not valid (or unreadable)."
)]
pub struct Args {
    /// The topology file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `validate --json` prints.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub file: String,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// One problem of a file that does not validate.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let parsed = std::fs::read_to_string(&args.file)
        .map_err(|e| Err(format!("cannot read: {e}")))
        .and_then(|text| ovslab_topology::parse(&name, &text).map_err(Ok));
    if args.json {
        let verdict = verdict(&name, &parsed);
        println!("{}", serde_json::to_string_pretty(&verdict)?);
        return Ok(if verdict.valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    match parsed {
        Ok(topology) => {
            println!("{}", summary(&name, &topology));
            Ok(ExitCode::SUCCESS)
        }
        Err(Err(unreadable)) => Err(BadInput(format!("{name}: {unreadable}")).into()),
        Err(Ok(invalid)) => Err(BadInput(invalid.to_string()).into()),
    }
}

/// The JSON verdict on a file: parsed, or why not (`Err(Err(_))`: it
/// could not be read).
pub fn verdict(name: &str, parsed: &Result<Topology, Result<TopologyError, String>>) -> Verdict {
    let mut v = Verdict {
        file: name.to_string(),
        valid: parsed.is_ok(),
        lab: None,
        nodes: None,
        instances: None,
        problems: Vec::new(),
    };
    match parsed {
        Ok(t) => {
            v.lab = Some(t.lab.clone());
            v.nodes = Some(t.nodes.len());
            v.instances = Some(t.instances.len());
        }
        Err(Err(unreadable)) => v.problems.push(Problem {
            line: 0,
            column: 0,
            message: unreadable.clone(),
        }),
        Err(Ok(TopologyError::Syntax {
            line,
            column,
            message,
            ..
        })) => v.problems.push(Problem {
            line: *line,
            column: *column,
            message: message.clone(),
        }),
        Err(Ok(TopologyError::Invalid { problems, .. })) => {
            v.problems = problems
                .iter()
                .map(|p| Problem {
                    line: p.line,
                    column: p.column,
                    message: p.message.clone(),
                })
                .collect();
        }
    }
    v
}

pub fn summary(name: &str, topology: &Topology) -> String {
    let count = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}: ok (lab {}: {}, {})",
        printable(name),
        topology.lab,
        count(topology.nodes.len(), "node"),
        count(topology.instances.len(), "instance")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_verdict_lists_each_problem_where_it_is() {
        let seed = ovslab_topology::seed();
        insta::assert_json_snapshot!(verdict("seed.yaml", &Ok(seed)), @r#"
        {
          "file": "seed.yaml",
          "valid": true,
          "lab": "seed",
          "nodes": 3,
          "instances": 4
        }
        "#);
        let bad =
            ovslab_topology::SEED_YAML.replace("segmentation_id: 102", "segmentation_id: 5000");
        let parsed = ovslab_topology::parse("bad.yaml", &bad).map_err(Ok);
        insta::assert_json_snapshot!(verdict("bad.yaml", &parsed));
        let parsed = ovslab_topology::parse("syntax.yaml", "lab: [").map_err(Ok);
        let v = verdict("syntax.yaml", &parsed);
        assert!(
            !v.valid && v.problems.len() == 1 && v.problems[0].line > 0,
            "{v:?}"
        );
        let v = verdict("gone.yaml", &Err(Err("cannot read: gone".into())));
        assert_eq!((v.valid, v.problems[0].line), (false, 0));
    }

    #[test]
    fn the_seed_lab_is_summed_up() {
        let seed = ovslab_topology::seed();
        assert_eq!(
            summary("seed.yaml", &seed),
            "seed.yaml: ok (lab seed: 3 nodes, 4 instances)"
        );
        let mut one = seed.clone();
        one.nodes.truncate(1);
        one.instances.truncate(1);
        assert_eq!(
            summary("one.yaml", &one),
            "one.yaml: ok (lab seed: 1 node, 1 instance)"
        );
    }
}
