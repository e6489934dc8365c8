//! `ovslab node fail|recover [--lab LAB] NODE`: fail a node on purpose, and
//! bring it back.

use std::process::ExitCode;

use ovslab_api::NodeReport;
use ovslab_topology::printable;

use crate::client::Client;
use crate::commands::{lab_or_only, segment};

/// Fail a node of a lab on purpose, or bring it back.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Fail a node of a lab on purpose, or bring it back.\n\n\
`fail` makes the node behave as a host that died: its ports on the lab's switches (physical \
network, overlay, external network) go down, and everything that runs on it stops — its Open \
vSwitch, its DHCP servers, its instances' DHCP clients, its HA router copies' keepalived, the \
metadata service in its namespaces. Audits leave a failed node alone (but stop its Open vSwitch \
if they find it running); `ovslab status` shows it failed. `recover` boots it again: its ports come up, Open vSwitch starts over its database and \
gets its flows back, and every agent starts afresh (keepalived as BACKUP: an HA router stays on \
the node that took it over). A failed node stays failed across daemon restarts and `up`. Failing a failed node, or \
recovering a live one, finishes what an earlier call cut short (a daemon stopped half-way) and \
otherwise changes nothing.",
    after_help = "Examples:\n  ovslab node fail network1\n  ovslab status\n  ovslab node recover network1\n\n\
Exit status: 0 done (or nothing to do), 1 the lab or node is not known or the daemon is unreachable."
)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Fail a node: its uplinks stop carrying frames and its processes stop.
    Fail(NodeArgs),
    /// Bring a failed node back, as a boot would.
    Recover(NodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The lab the node belongs to; default: the only lab running.
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,
    /// A network or compute node of the lab.
    #[arg(value_name = "NODE")]
    pub node: String,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let (verb, args) = match args.action {
        Action::Fail(a) => ("fail", a),
        Action::Recover(a) => ("recover", a),
    };
    let lab = lab_or_only(
        client,
        args.lab,
        &format!("ovslab node {verb} --lab LAB NODE"),
    )?;
    let report: NodeReport = client.post(
        &format!(
            "/v1/labs/{}/nodes/{}/{verb}",
            segment(&lab),
            segment(&args.node)
        ),
        &(),
    )?;
    print!("{}", format_report(&report));
    Ok(ExitCode::SUCCESS)
}

/// One line per change, the warnings, then a summary; control characters
/// escaped.
pub fn format_report(report: &NodeReport) -> String {
    let mut out = String::new();
    for line in &report.changes {
        out.push_str(&printable(line));
        out.push('\n');
    }
    for line in &report.warnings {
        out.push_str(&format!("warning: {}\n", printable(line)));
    }
    let state = if report.failed { "failed" } else { "up" };
    let summary = if report.changes.is_empty() {
        format!("already {state}")
    } else {
        format!("{state} in {} ms", report.elapsed_ms)
    };
    out.push_str(&format!(
        "node {} of lab {}: {summary}\n",
        printable(&report.node),
        printable(&report.lab)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lists_changes_then_sums_up() {
        let report = NodeReport {
            lab: "ha".into(),
            node: "network1".into(),
            failed: true,
            changes: vec!["failed node network1".into(), "set network1 down".into()],
            warnings: vec![],
            elapsed_ms: 40,
        };
        assert_eq!(
            format_report(&report),
            "failed node network1\nset network1 down\nnode network1 of lab ha: failed in 40 ms\n"
        );
        let report = NodeReport {
            failed: false,
            changes: vec![],
            ..report
        };
        assert_eq!(
            format_report(&report),
            "node network1 of lab ha: already up\n"
        );
    }
}
