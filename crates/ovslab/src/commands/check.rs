//! `ovslab check [LAB]`: run the lab's declared checks.

use std::process::ExitCode;

use ovslab_api::CheckReport;
use ovslab_topology::printable;

use crate::client::Client;
use crate::commands::{lab_or_only, segment};
use crate::style::Style;

/// Run the topology's `checks`; one line per check, exit 0 only if all pass.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Run the topology's `checks` (see docs/topology.md): each sends a real probe \
(ICMP echo, or a TCP connection to a listener the check opens at the destination) while the \
uplinks of the nodes named in `crosses`/`avoids` (eth1, and eth3 where tunnels run) and the \
destination's NIC are watched. All checks run at once. A check that expects an answer ends as soon \
as it comes (and fails without one after 2 s, and 50 ms more per node); a check with `expect: failure` decides after 1 s \
without an answer. One line per check: PASS or FAIL, its name, and what the probe saw.",
    after_help = "Exit status: 0 every check passed, 1 a check failed or the daemon is unreachable."
)]
pub struct Args {
    /// The lab whose checks to run; default: the only lab running.
    #[arg(value_name = "LAB")]
    pub lab: Option<String>,
    /// Print the report as JSON: {"lab", "results": [{"name", "passed",
    /// "detail"}], "elapsed_ms"}.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let lab = lab_or_only(client, args.lab, "ovslab check LAB")?;
    let report: CheckReport = client.post(&format!("/v1/labs/{}/check", segment(&lab)), &())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report, Style::for_stdout()));
    }
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per check, then a summary. Names and details are escaped: a
/// check's name is the file's text, a detail may quote what a probe saw.
pub fn format_report(report: &CheckReport, style: Style) -> String {
    let names: Vec<_> = report.results.iter().map(|r| printable(&r.name)).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (r, name) in report.results.iter().zip(&names) {
        let verdict = if r.passed {
            style.good("PASS")
        } else {
            style.bad("FAIL")
        };
        out.push_str(&format!(
            "{verdict}  {name:width$}  {}\n",
            printable(&r.detail)
        ));
    }
    let failed = report.results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!(
        "lab {}: {} of {} checks passed in {} ms\n",
        printable(&report.lab),
        report.results.len() - failed,
        report.results.len(),
        report.elapsed_ms
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovslab_api::CheckResult;

    #[test]
    fn one_line_per_check_then_a_summary() {
        let report = CheckReport {
            lab: "seed".into(),
            results: vec![
                CheckResult {
                    name: "snat".into(),
                    passed: true,
                    detail: "reached".into(),
                },
                CheckResult {
                    name: "east-west".into(),
                    passed: false,
                    detail: "expected an answer: no answer".into(),
                },
            ],
            elapsed_ms: 2100,
        };
        assert_eq!(
            format_report(&report, Style::plain()),
            "PASS  snat       reached\nFAIL  east-west  expected an answer: no answer\n\
             lab seed: 1 of 2 checks passed in 2100 ms\n"
        );
        assert!(!report.all_passed());
    }

    #[test]
    fn names_and_details_are_shown_escaped() {
        let report = CheckReport {
            lab: "seed".into(),
            results: vec![CheckResult {
                name: "x\u{1b}]0;owned\u{7}".into(),
                passed: false,
                detail: "saw\rPASS".into(),
            }],
            elapsed_ms: 1,
        };
        assert_eq!(
            format_report(&report, Style::plain()),
            "FAIL  x\\x1b]0;owned\\x07  saw\\x0dPASS\nlab seed: 0 of 1 checks passed in 1 ms\n"
        );
    }
}
