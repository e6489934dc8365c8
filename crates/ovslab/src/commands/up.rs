//! `ovslab up [TOPOLOGY]`: create or converge a lab.

use std::path::Path;
use std::process::ExitCode;

use ovslab_api::{UpReport, UpRequest};
use ovslab_topology::printable;

use crate::BadInput;
use crate::client::Client;

/// Create or converge a lab from a file path or a known lab name; default: the seed lab.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Create or converge a lab from a file path or a known lab name; default: the \
seed lab (compiled in).\n\n\
The file is validated here first: a file that does not validate is reported as file:line:column: \
problem (exit 2) and the daemon is not asked. Returns when the lab has converged, printing one line \
per change made; a second `up` of an unchanged lab changes nothing.",
    after_help = "Exit status: 0 converged, 1 the daemon is unreachable or the lab did not converge, 2 the \
topology does not validate (or is neither a file nor a known lab name)."
)]
pub struct Args {
    /// A topology file, or a known lab name (`seed`).
    #[arg(value_name = "TOPOLOGY")]
    pub topology: Option<String>,
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
    ovslab_topology::parse(&source, &text).map_err(|e| BadInput(e.to_string()))?;
    let report: UpReport = client.post(
        "/v1/labs",
        &UpRequest {
            topology: text,
            source,
        },
    )?;
    print!("{}", format_report(&report));
    Ok(ExitCode::SUCCESS)
}

/// One line per change, then a summary, control characters escaped.
pub fn format_report(report: &UpReport) -> String {
    let mut out = String::new();
    for change in &report.changes {
        out.push_str(&printable(change));
        out.push('\n');
    }
    for warning in &report.warnings {
        out.push_str(&format!("warning: {}\n", printable(warning)));
    }
    let lab = printable(&report.lab);
    let n = report.changes.len();
    let summary = match n {
        0 => format!(
            "lab {lab}: no changes (already converged) in {} ms",
            report.elapsed_ms
        ),
        1 => format!("lab {lab}: converged, 1 change in {} ms", report.elapsed_ms),
        n => format!(
            "lab {lab}: converged, {n} changes in {} ms",
            report.elapsed_ms
        ),
    };
    out.push_str(&summary);
    out.push('\n');
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
    fn a_converged_lab_says_so() {
        let report = UpReport {
            lab: "seed".into(),
            changes: vec![],
            warnings: vec![],
            elapsed_ms: 4,
        };
        assert_eq!(
            format_report(&report),
            "lab seed: no changes (already converged) in 4 ms\n"
        );
    }

    #[test]
    fn changes_are_shown_escaped() {
        let report = UpReport {
            lab: "seed".into(),
            changes: vec!["create\u{1b}[2K\rnothing".into()],
            warnings: vec![],
            elapsed_ms: 1,
        };
        assert_eq!(
            format_report(&report),
            "create\\x1b[2K\\x0dnothing\nlab seed: converged, 1 change in 1 ms\n"
        );
    }

    #[test]
    fn changes_are_listed_one_per_line() {
        let report = UpReport {
            lab: "seed".into(),
            changes: vec![
                "create namespace seed.network".into(),
                "start ovsdb-server on network".into(),
            ],
            warnings: vec![],
            elapsed_ms: 812,
        };
        assert_eq!(
            format_report(&report),
            "create namespace seed.network\nstart ovsdb-server on network\nlab seed: converged, 2 changes in 812 ms\n"
        );
    }
}
