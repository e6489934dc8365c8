//! Reading and converging a namespace's iptables with the real tools.
//!
//! Blocking (`std::process`): callers on a tokio runtime use
//! `spawn_blocking`. The children are started in the namespace by
//! [`ovslab_netlink::netns::spawn_in`], from a short-lived thread that
//! entered it (cheaper than `setns` between fork and exec: no fork of the
//! daemon's memory).

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use crate::IptablesError;
use crate::diff::diff;
use crate::ruleset::Ruleset;
use crate::save::Saved;

const SAVE: &str = "iptables-save";
const RESTORE: &str = "iptables-restore";

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// False when everything already matched and nothing was run.
    pub changed: bool,
    /// One human line per change (see [`Plan::changes`](crate::Plan::changes)).
    pub changes: Vec<String>,
    /// Tables written: `iptables-restore` commits each as one nf_tables
    /// transaction.
    pub tables_written: u32,
}

/// Parsed `iptables-save` of namespace `ns`.
pub fn read(ns: &str) -> Result<Saved, IptablesError> {
    let text = run_for_output(ns, SAVE, &[])?;
    Saved::parse(&text, &format!("namespace {ns}"))
}

/// Makes our part of namespace `ns`'s iptables exactly `ruleset`: reads
/// `iptables-save`, compares (only chains named `neutron-*`, their rules,
/// built-in jumps to them, and stale ones), and when anything differs runs
/// one `iptables-restore --noflush -w` that rewrites only what differs.
/// When nothing differs nothing runs, so every counter is kept.
pub fn apply(ns: &str, ruleset: &Ruleset) -> Result<Applied, IptablesError> {
    ruleset.validate()?;
    let saved = read(ns)?;
    let plan = diff(&saved, ruleset);
    let Some(batch) = plan.restore else {
        tracing::debug!(namespace = ns, "iptables already converged");
        return Ok(Applied::default());
    };
    tracing::debug!(namespace = ns, batch = %batch, "iptables-restore");
    restore(ns, &batch)?;
    for change in &plan.changes {
        tracing::info!(namespace = ns, "iptables {change}");
    }
    Ok(Applied {
        changed: true,
        changes: plan.changes,
        tables_written: batch.lines().filter(|l| *l == "COMMIT").count() as u32,
    })
}

/// Feeds `batch` to `iptables-restore --noflush -w` inside `ns`.
fn restore(ns: &str, batch: &str) -> Result<(), IptablesError> {
    let (out, written) = run_with_input(ns, RESTORE, &["--noflush", "-w"], batch)?;
    let spawn_err = |source| IptablesError::Spawn {
        namespace: ns.to_string(),
        command: RESTORE,
        source,
    };
    if out.status.success() {
        // A child that succeeded has read its whole input.
        return written.map_err(spawn_err);
    }
    // On failure a broken pipe only means the child stopped reading early.
    if let Err(e) = written
        && e.kind() != ErrorKind::BrokenPipe
    {
        return Err(spawn_err(e));
    }
    let stderr = restore_message(&String::from_utf8_lossy(&out.stderr));
    Err(IptablesError::Restore {
        namespace: ns.to_string(),
        status: out.status.to_string(),
        input_line: failing_line(&stderr, batch),
        stderr,
    })
}

/// Runs `program args` inside `ns` with `input` on its stdin; its output,
/// and whether all of the input was written.
pub(crate) fn run_with_input(
    ns: &str,
    program: &'static str,
    args: &[&str],
    input: &str,
) -> Result<(std::process::Output, std::io::Result<()>), IptablesError> {
    let spawn_err = |source| IptablesError::Spawn {
        namespace: ns.to_string(),
        command: program,
        source,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(ns, program, &mut cmd)?;
    // Write from another thread while this one collects the output, so a
    // large input cannot deadlock against a child blocked on its stderr.
    let stdin = child.stdin.take();
    let (out, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || match stdin {
            Some(mut stdin) => stdin.write_all(input.as_bytes()),
            None => Ok(()),
        });
        let out = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked")));
        (out, written)
    });
    Ok((out.map_err(spawn_err)?, written))
}

/// Runs `program args` inside `ns`; its stdout, or an error with its stderr.
pub(crate) fn run_for_output(
    ns: &str,
    program: &'static str,
    args: &[&str],
) -> Result<String, IptablesError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn(ns, program, &mut cmd)?
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn {
            namespace: ns.to_string(),
            command: program,
            source,
        })?;
    if !out.status.success() {
        return Err(IptablesError::Command {
            namespace: ns.to_string(),
            command: program,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore`'s complaint without its usage hint, on one line.
fn restore_message(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `iptables-restore -h'"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The input line `Error occurred at line: N` points at.
fn failing_line(message: &str, batch: &str) -> Option<String> {
    let (_, after) = message.split_once("Error occurred at line: ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    batch.lines().nth(n.checked_sub(1)?).map(str::to_string)
}

fn spawn(
    ns: &str,
    program: &'static str,
    cmd: &mut Command,
) -> Result<std::process::Child, IptablesError> {
    ovslab_netlink::netns::spawn_in(cmd, ns)
        .map_err(|source| IptablesError::Enter {
            namespace: ns.to_string(),
            command: program,
            source,
        })?
        .map_err(|source| IptablesError::Spawn {
            namespace: ns.to_string(),
            command: program,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDERR: &str = "iptables-restore v1.8.9 (nf_tables): Bad IP address \"203.0.113.300\"\n\
                          Error occurred at line: 3\n\
                          Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n";

    #[test]
    fn message_drops_the_usage_hint() {
        assert_eq!(
            restore_message(STDERR),
            "iptables-restore v1.8.9 (nf_tables): Bad IP address \"203.0.113.300\"; \
             Error occurred at line: 3"
        );
    }

    #[test]
    fn failing_line_is_found_in_the_batch() {
        let batch =
            "*nat\n:neutron-x - [0:0]\n-A neutron-x -j SNAT --to-source 203.0.113.300\nCOMMIT\n";
        assert_eq!(
            failing_line(&restore_message(STDERR), batch).as_deref(),
            Some("-A neutron-x -j SNAT --to-source 203.0.113.300")
        );
        assert_eq!(failing_line("no line here", batch), None);
        assert_eq!(failing_line("Error occurred at line: 0", batch), None);
    }

    #[test]
    fn restore_error_names_namespace_and_line() {
        let err = IptablesError::Restore {
            namespace: "qrouter-x".into(),
            status: "exit status: 2".into(),
            stderr: "Bad IP address".into(),
            input_line: Some("-A neutron-x -j DROP".into()),
        };
        assert_eq!(
            err.to_string(),
            "namespace qrouter-x: `iptables-restore --noflush -w` failed (exit status: 2): \
             Bad IP address (input: `-A neutron-x -j DROP`)"
        );
    }
}
