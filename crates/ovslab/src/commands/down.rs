//! `ovslab down [LAB]`: remove a lab.

use std::process::ExitCode;

use ovslab_api::DownReport;
use ovslab_topology::printable;

use crate::client::Client;
use crate::commands::{lab_or_only, segment};
use crate::summary;

/// Remove every namespace, link, OVS instance, flow and rule of a lab; default: the only lab running.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Remove every namespace, link, OVS instance, flow and rule of a lab; \
default: the only lab running (with several, name one).\n\n\
Only what the lab itself created goes: the namespaces, processes and run directory recorded in \
its manifest. A namespace that merely has the lab's prefix (`LAB.…`) is left alone and listed. \
A lab the daemon does not know changes nothing and exits 1; parts that cannot be removed are \
reported (exit 1) after everything else has been.\n\n\
Prints a short summary: what was removed by kind (namespaces, processes, directories) and how \
long it took; what was left alone is always listed. -v lists every removal, one per line; \
--json prints the daemon's whole report instead: {\"lab\", \"removed\": [one line per removal], \
\"left_alone\": [...] (left out when empty), \"elapsed_ms\"}.",
    after_help = "Exit status: 0 removed, 1 the lab is not known, the daemon is unreachable or parts are left."
)]
pub struct Args {
    /// The lab to remove; default: the only lab running.
    #[arg(value_name = "LAB")]
    pub lab: Option<String>,
    /// List everything removed, one per line, before the summary.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print the daemon's whole report as JSON.
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let lab = lab_or_only(client, args.lab, "ovslab down LAB")?;
    let report: DownReport = client.delete(&format!("/v1/labs/{}", segment(&lab)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report, args.verbose));
    }
    Ok(ExitCode::SUCCESS)
}

/// Every removal (with `verbose`), what was left alone, then a summary by
/// kind; control characters escaped.
pub fn format_report(report: &DownReport, verbose: bool) -> String {
    let mut out = String::new();
    if verbose {
        for line in &report.removed {
            out.push_str(&printable(line));
            out.push('\n');
        }
    }
    for line in &report.left_alone {
        out.push_str(&format!("left alone: {}\n", printable(line)));
    }
    let lab = printable(&report.lab);
    let took = summary::duration(report.elapsed_ms);
    if report.removed.is_empty() {
        out.push_str(&format!("lab {lab}: nothing to remove ({took})\n"));
    } else {
        out.push_str(&format!(
            "lab {lab}: removed in {took}\n  {}\n",
            summary::by_kind(&report.removed)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(removed: &[&str], left_alone: &[&str]) -> DownReport {
        DownReport {
            lab: "seed".into(),
            removed: removed.iter().map(|c| c.to_string()).collect(),
            left_alone: left_alone.iter().map(|c| c.to_string()).collect(),
            elapsed_ms: 30,
        }
    }

    #[test]
    fn removals_are_summed_up_and_listed_with_verbose() {
        let down = report(
            &[
                "stopped ovs-vswitchd of compute1 (pid 32076)",
                "stopped ovsdb-server of compute1 (pid 32030)",
                "deleted namespace seed.network",
                "removed /run/ovslab/seed",
            ],
            &["namespace seed.x"],
        );
        insta::assert_snapshot!(format_report(&down, false), @r"
        left alone: namespace seed.x
        lab seed: removed in 30 ms
          4 changes: 1 namespace, 2 processes, 1 file or directory
        ");
        insta::assert_snapshot!(format_report(&down, true), @r"
        stopped ovs-vswitchd of compute1 (pid 32076)
        stopped ovsdb-server of compute1 (pid 32030)
        deleted namespace seed.network
        removed /run/ovslab/seed
        left alone: namespace seed.x
        lab seed: removed in 30 ms
          4 changes: 1 namespace, 2 processes, 1 file or directory
        ");
        assert_eq!(
            format_report(&report(&[], &[]), true),
            "lab seed: nothing to remove (30 ms)\n"
        );
    }

    #[test]
    fn removals_are_shown_escaped() {
        let text = format_report(&report(&["deleted\u{7}"], &["namespace x.\u{1b}y"]), true);
        assert_eq!(
            text,
            "deleted\\x07\nleft alone: namespace x.\\x1by\nlab seed: removed in 30 ms\n  1 change: 1 other\n"
        );
    }
}
