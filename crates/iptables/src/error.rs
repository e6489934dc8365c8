//! Why reading, checking or applying a ruleset failed.

use std::io;

use ovslab_netlink::NetlinkError;

/// Every variant names the namespace and the command, or the ruleset item,
/// it was working on, so the message alone says where to look.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The child could not be placed into the namespace.
    #[error("namespace {namespace}: cannot prepare `{command}` to run inside it")]
    Enter {
        namespace: String,
        command: &'static str,
        #[source]
        source: NetlinkError,
    },
    /// The kernel refused an ipset request (or the namespace was gone).
    #[error("namespace {namespace}: ipset {what}")]
    Ipset {
        namespace: String,
        what: String,
        #[source]
        source: NetlinkError,
    },
    /// The program could not be started or talked to.
    #[error("namespace {namespace}: cannot run `{command}`")]
    Spawn {
        namespace: String,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    /// The program did not finish within its deadline; it was killed.
    #[error("namespace {namespace}: `{command}` did not finish within {} s; killed (pid {pid})", after.as_secs_f64())]
    Timeout {
        namespace: String,
        command: &'static str,
        pid: u32,
        after: std::time::Duration,
    },
    /// `iptables-save` exited with an error.
    #[error("namespace {namespace}: `{command}` failed ({status}): {stderr}")]
    Command {
        namespace: String,
        command: &'static str,
        status: String,
        stderr: String,
    },
    /// `iptables-restore` refused the batch. Nothing of the failing table
    /// was changed (each `COMMIT` is atomic); `input_line` is the line of
    /// our input that its message points at, when it names one.
    #[error(
        "namespace {namespace}: `iptables-restore --noflush -w` failed ({status}): {stderr}{}",
        input_line.as_deref().map(|l| format!(" (input: `{l}`)")).unwrap_or_default()
    )]
    Restore {
        namespace: String,
        status: String,
        stderr: String,
        input_line: Option<String>,
    },
    /// A line of `iptables-save` output this crate does not understand.
    #[error("{origin}: iptables-save line {line}: {reason}: `{text}`")]
    Parse {
        origin: String,
        line: usize,
        reason: &'static str,
        text: String,
    },
    /// A hand-built ruleset that would not converge or would touch chains
    /// that are not ours.
    #[error("ruleset: table {table}, chain {chain}: {reason}")]
    Invalid {
        table: &'static str,
        chain: String,
        reason: String,
    },
}
