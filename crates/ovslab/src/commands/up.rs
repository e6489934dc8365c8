//! `ovslab up [TOPOLOGY]`: create or converge a lab.

use std::path::Path;
use std::process::ExitCode;

use ovslab_api::{MAX_SOURCE, UpReport, UpRequest};
use ovslab_topology::{Topology, printable};

use crate::client::Client;
use crate::{BadInput, summary};

/// Create or converge a lab from a file path or a known lab name; default: the seed lab.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Create or converge a lab from a file path or a known lab name; default: the \
seed lab (compiled in).\n\n\
The file is validated here first: a file that does not validate is reported as file:line:column: \
problem (exit 2) and the daemon is not asked. Returns when the lab has converged, with a short \
summary: what the lab has, how long it took, and what changed by kind (namespaces, links, flows, \
OVSDB, iptables, processes, …); a second `up` of an unchanged lab changes nothing and says so. \
Warnings (a namespace with the lab's prefix that it did not make, an instance without its DHCP \
lease) are always shown. -v lists every change, one per line; --json prints the daemon's whole \
report instead: {\"lab\", \"changes\": [one line per change], \"warnings\": [...] (left out when \
empty), \"elapsed_ms\"}.\n\n\
On a terminal, an `up` that takes more than a moment shows the phase it is in on standard error \
(namespaces, links, flows, …); never when standard error is not a terminal, nor with --json.",
    after_help = "Exit status: 0 converged, 1 the daemon is unreachable or the lab did not converge, 2 the \
topology does not validate (or is neither a file nor a known lab name)."
)]
pub struct Args {
    /// A topology file, or a known lab name (`seed`).
    #[arg(value_name = "TOPOLOGY")]
    pub topology: Option<String>,
    /// List every change made, one per line, before the summary.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the daemon's whole report as JSON (every change).
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
}

/// Labs compiled into ovslab, by name.
const KNOWN_LABS: &[(&str, &str, &str)] = &[(
    "seed",
    ovslab_topology::SEED_SOURCE,
    ovslab_topology::SEED_YAML,
)];

/// The topology to send: what errors call it, and its text.
pub fn resolve(topology: Option<&str>) -> Result<(String, String), BadInput> {
    let Some(arg) = topology else {
        let (_, source, text) = KNOWN_LABS[0];
        return Ok((source.to_string(), text.to_string()));
    };
    let path = Path::new(arg);
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BadInput(format!("{arg}: cannot read: {e}")))?;
        return Ok((arg.to_string(), text));
    }
    if let Some((_, source, text)) = KNOWN_LABS.iter().find(|(name, _, _)| *name == arg) {
        return Ok((source.to_string(), text.to_string()));
    }
    let known: Vec<&str> = KNOWN_LABS.iter().map(|(n, _, _)| *n).collect();
    Err(BadInput(format!(
        "{arg}: no such file, and not a known lab name (known: {})",
        known.join(", ")
    )))
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let (source, text) = resolve(args.topology.as_deref())?;
    let topology = ovslab_topology::parse(&source, &text).map_err(|e| BadInput(e.to_string()))?;
    let report: UpReport = crate::progress::while_up(client, &topology.lab, !args.json, || {
        client.post(
            "/v1/labs",
            &UpRequest {
                topology: text,
                source: source_for_the_daemon(&source),
            },
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report, &topology, args.verbose));
    }
    Ok(ExitCode::SUCCESS)
}

/// What the daemon is told the file is called: the path as given, its
/// control characters escaped, and at most [`MAX_SOURCE`] bytes, the most
/// the daemon accepts (a longer path keeps its end: `…/labs/big.yaml`).
pub fn source_for_the_daemon(path: &str) -> String {
    let name = printable(path);
    if name.len() <= MAX_SOURCE {
        return name.into_owned();
    }
    let mut start = name.len() - (MAX_SOURCE - '…'.len_utf8());
    while !name.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &name[start..])
}

/// The changes (with `verbose`), the warnings, then a summary: what the
/// lab has and what changed by kind. Control characters escaped.
pub fn format_report(report: &UpReport, topology: &Topology, verbose: bool) -> String {
    let mut out = String::new();
    if verbose {
        for change in &report.changes {
            out.push_str(&printable(change));
            out.push('\n');
        }
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {}\n", printable(warning)));
    }
    out.push_str(&format!(
        "lab {}: converged in {}: {}\n",
        printable(&report.lab),
        summary::duration(report.elapsed_ms),
        summary::contents(topology)
    ));
    if report.changes.is_empty() {
        out.push_str("  no changes (already converged)\n");
    } else {
        out.push_str(&format!("  {}\n", summary::by_kind(&report.changes)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_argument_and_the_name_seed_mean_the_compiled_in_seed() {
        for arg in [None, Some("seed")] {
            let (source, text) = resolve(arg).unwrap();
            assert_eq!(source, ovslab_topology::SEED_SOURCE);
            assert_eq!(text, ovslab_topology::SEED_YAML);
        }
    }

    #[test]
    fn an_unknown_name_is_bad_input() {
        let e = resolve(Some("/nonexistent/lab.yaml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/lab.yaml: no such file, and not a known lab name (known: seed)"
        );
    }

    #[test]
    fn a_file_is_read_and_named_as_given() {
        let path =
            std::env::temp_dir().join(format!("ovslab-up-resolve-{}.yaml", std::process::id()));
        std::fs::write(&path, "lab: x\n").unwrap();
        let arg = path.to_str().unwrap();
        let (source, text) = resolve(Some(arg)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((source.as_str(), text.as_str()), (arg, "lab: x\n"));
    }

    #[test]
    fn the_daemon_is_sent_a_short_printable_name() {
        assert_eq!(source_for_the_daemon("labs/seed.yaml"), "labs/seed.yaml");
        assert_eq!(
            source_for_the_daemon("a\nb\u{1b}.yaml"),
            "a\\x0ab\\x1b.yaml"
        );
        let deep = format!("/home/me/{}lab.yaml", "très-long/".repeat(400));
        let sent = source_for_the_daemon(&deep);
        assert!(sent.len() <= MAX_SOURCE, "{}", sent.len());
        assert!(sent.starts_with('…'), "{sent}");
        assert!(sent.ends_with("très-long/lab.yaml"), "{sent}");
    }

    fn report(changes: &[&str], warnings: &[&str], elapsed_ms: u64) -> UpReport {
        UpReport {
            lab: "seed".into(),
            changes: changes.iter().map(|c| c.to_string()).collect(),
            warnings: warnings.iter().map(|c| c.to_string()).collect(),
            elapsed_ms,
        }
    }

    #[test]
    fn a_converged_lab_says_so() {
        let seed = ovslab_topology::seed();
        insta::assert_snapshot!(format_report(&report(&[], &[], 4), &seed, false), @r"
        lab seed: converged in 4 ms: 3 nodes, 4 instances, 1 router, 2 networks, 1 external network, 1 external host, 12 checks
          no changes (already converged)
        ");
    }

    #[test]
    fn changes_are_summed_up_by_kind_and_listed_with_verbose() {
        let seed = ovslab_topology::seed();
        let up = report(
            &[
                "create namespace seed.network",
                "start ovsdb-server on network",
                "seed.network: create veth eth1 <-> network (in seed.physnet1)",
                "seed.network: set eth1 up",
                "network: br-int: add flow table=0, priority=0, actions=drop",
            ],
            &["namespace seed.x has the lab's prefix but was not made by it: left alone"],
            12_345,
        );
        insta::assert_snapshot!(format_report(&up, &seed, false), @r"
        warning: namespace seed.x has the lab's prefix but was not made by it: left alone
        lab seed: converged in 12.3 s: 3 nodes, 4 instances, 1 router, 2 networks, 1 external network, 1 external host, 12 checks
          5 changes: 1 namespace, 1 link, 1 link setting, 1 flow, 1 process
        ");
        insta::assert_snapshot!(format_report(&up, &seed, true), @r"
        create namespace seed.network
        start ovsdb-server on network
        seed.network: create veth eth1 <-> network (in seed.physnet1)
        seed.network: set eth1 up
        network: br-int: add flow table=0, priority=0, actions=drop
        warning: namespace seed.x has the lab's prefix but was not made by it: left alone
        lab seed: converged in 12.3 s: 3 nodes, 4 instances, 1 router, 2 networks, 1 external network, 1 external host, 12 checks
          5 changes: 1 namespace, 1 link, 1 link setting, 1 flow, 1 process
        ");
    }

    #[test]
    fn changes_are_shown_escaped() {
        let up = report(&["create\u{1b}[2K\rnothing"], &["left\u{7}"], 1);
        let text = format_report(&up, &ovslab_topology::seed(), true);
        assert!(
            text.starts_with("create\\x1b[2K\\x0dnothing\nwarning: left\\x07\n"),
            "{text}"
        );
    }
}
