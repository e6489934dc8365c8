//! `ovslab down [LAB]`: remove a lab.

use std::process::ExitCode;

use ovslab_api::DownReport;
use ovslab_topology::printable;

use crate::client::Client;
use crate::commands::segment;

/// Remove every namespace, link, OVS instance, flow and rule of a lab; default: seed.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Remove every namespace, link, OVS instance, flow and rule of a lab; \
default: seed.\n\n\
Only what the lab itself created goes: the namespaces, processes and run directory recorded in \
its manifest. A namespace that merely has the lab's prefix (`LAB.…`) is left alone and listed. \
A lab the daemon does not know changes nothing and exits 1; parts that cannot be removed are \
reported (exit 1) after everything else has been.",
    after_help = "Exit status: 0 removed, 1 the lab is not known, the daemon is unreachable or parts are left."
)]
pub struct Args {
    /// The lab to remove.
    #[arg(value_name = "LAB", default_value = "seed")]
    pub lab: String,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let report: DownReport = client.delete(&format!("/v1/labs/{}", segment(&args.lab)))?;
    print!("{}", format_report(&report));
    Ok(ExitCode::SUCCESS)
}

/// One line per object removed, then a summary, control characters escaped.
pub fn format_report(report: &DownReport) -> String {
    let mut out = String::new();
    for line in &report.removed {
        out.push_str(&printable(line));
        out.push('\n');
    }
    for line in &report.left_alone {
        out.push_str(&format!("left alone: {}\n", printable(line)));
    }
    let lab = printable(&report.lab);
    let summary = if report.removed.is_empty() {
        format!("lab {lab}: nothing to remove ({} ms)", report.elapsed_ms)
    } else {
        format!("lab {lab}: removed in {} ms", report.elapsed_ms)
    };
    out.push_str(&summary);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_listed_then_summed_up() {
        let report = DownReport {
            lab: "seed".into(),
            removed: vec!["deleted namespace seed.network".into()],
            left_alone: vec![],
            elapsed_ms: 30,
        };
        assert_eq!(
            format_report(&report),
            "deleted namespace seed.network\nlab seed: removed in 30 ms\n"
        );
        let report = DownReport {
            lab: "seed".into(),
            removed: vec!["deleted\u{7}".into()],
            left_alone: vec!["namespace x.\u{1b}y".into()],
            elapsed_ms: 2,
        };
        assert_eq!(
            format_report(&report),
            "deleted\\x07\nleft alone: namespace x.\\x1by\nlab seed: removed in 2 ms\n"
        );
        let report = DownReport {
            lab: "seed".into(),
            removed: vec![],
            left_alone: vec![],
            elapsed_ms: 1,
        };
        assert_eq!(
            format_report(&report),
            "lab seed: nothing to remove (1 ms)\n"
        );
    }
}
