//! `ovslab exec [--lab LAB] TARGET -- CMD…`: run a command in the network
//! namespace of a node, instance, router, physical router or external host.
//!
//! The daemon says which namespace (and, for nodes, the environment that
//! points `ovs-vsctl` and friends at the node's Open vSwitch); this process
//! then enters the namespace and replaces itself with CMD, so CMD's exit
//! status and signals are its own, as with `ip netns exec`.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::anyhow;
use nix::sched::{CloneFlags, setns};
use ovslab_api::Target;

use crate::client::Client;
use crate::commands::lab_or_only;

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Run CMD in the namespace of a node, instance, router, physical router or external host of a lab.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Run CMD in the namespace of a node, instance, router, physical router or external host \
named in the topology; the exit status is CMD's.\n\n\
In a node, the standard ovs-vsctl, ovs-ofctl and ovs-appctl work unmodified (OVS_RUNDIR and \
friends point at the node's Open vSwitch). Entering a namespace needs root (CAP_SYS_ADMIN).\n\n\
Examples:\n  ovslab exec instance1 -- ping -c 1 203.0.113.1\n  ovslab exec compute1 -- ovs-vsctl show\n  \
ovslab exec --lab mylab network -- ip netns identify",
    override_usage = "ovslab exec [--lab LAB] TARGET -- CMD...",
    after_help = "Exit status: CMD's; 1 when the daemon is unreachable, the target is unknown or its \
namespace cannot be entered; 126 when CMD cannot be run, 127 when it is not found."
)]
pub struct Args {
    /// The lab the target belongs to; default: the only lab running.
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,

    /// A node, instance, router, physical router or external host of the
    /// lab; an HA router is its active copy, ROUTER@NODE its copy on NODE.
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// The command and its arguments (after `--`).
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let lab = lab_or_only(client, args.lab, "ovslab exec --lab LAB TARGET -- CMD")?;
    let checked = client.target(&lab, &args.target)?;
    if let Some(warning) = checked.warning() {
        eprintln!("{warning}");
    }
    let target = checked.target;
    let ns_path = Path::new(NETNS_DIR).join(&target.namespace);
    let namespace = File::open(&ns_path).map_err(|e| namespace_error(&target, &ns_path, e))?;
    let mut command = build_command(&args.command, &target);
    let program = args.command[0].to_string_lossy().into_owned();
    // SAFETY: the closure runs between fork and exec (here: just before our
    // own exec, since `exec()` does not fork). It only calls setns(2), a
    // single system call that neither allocates nor takes locks, on a file
    // descriptor the closure owns; the error conversion does not allocate.
    unsafe {
        command
            .pre_exec(move || setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    // Only returns on failure.
    let e = command.exec();
    Err(exec_failure(&program, &target, e))
}

/// CMD with the target's environment, stdio inherited.
fn build_command(argv: &[OsString], target: &Target) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command.envs(target.env.iter().map(|(k, v)| (k, v)));
    command
}

fn namespace_error(target: &Target, path: &Path, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        anyhow!(
            "{} {} of lab {}: its namespace {} does not exist ({} is missing) — bring the lab up with `ovslab up`",
            target.kind,
            target.name,
            target.lab,
            target.namespace,
            path.display()
        )
    } else {
        anyhow!("opening {}: {e}", path.display())
    }
}

/// An `exec` that failed: the status a shell would give (126 cannot run,
/// 127 not found), or 1 when the namespace could not be entered.
#[derive(Debug)]
struct ExecFailure {
    code: u8,
    message: String,
}

impl std::fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExecFailure {}

fn exec_failure(program: &str, target: &Target, e: io::Error) -> anyhow::Error {
    let (code, message) = match e.raw_os_error() {
        Some(libc_eperm) if libc_eperm == nix::errno::Errno::EPERM as i32 => (
            1,
            format!(
                "entering namespace {} of {}: {e} (needs root or CAP_SYS_ADMIN)",
                target.namespace, target.name
            ),
        ),
        _ if e.kind() == io::ErrorKind::NotFound => (127, format!("{program}: command not found")),
        _ => (
            126,
            format!("cannot run {program} in {}: {e}", target.namespace),
        ),
    };
    anyhow::Error::new(ExecFailure { code, message })
}

/// The exit status for an error of this command, when it has its own.
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.downcast_ref::<ExecFailure>().map(|f| f.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_target() -> Target {
        Target {
            lab: "seed".into(),
            name: "compute1".into(),
            kind: "node".into(),
            namespace: "seed.compute1".into(),
            env: vec![("OVS_RUNDIR".into(), "/run/ovslab/seed/compute1".into())],
        }
    }

    #[test]
    fn the_command_gets_the_targets_environment() {
        let argv: Vec<OsString> = ["ovs-vsctl", "show"].map(OsString::from).to_vec();
        let command = build_command(&argv, &node_target());
        assert_eq!(command.get_program(), "ovs-vsctl");
        assert_eq!(command.get_args().collect::<Vec<_>>(), ["show"]);
        let envs: Vec<_> = command.get_envs().collect();
        assert_eq!(
            envs,
            [(
                std::ffi::OsStr::new("OVS_RUNDIR"),
                Some(std::ffi::OsStr::new("/run/ovslab/seed/compute1"))
            )]
        );
    }

    #[test]
    fn a_missing_namespace_says_to_bring_the_lab_up() {
        let e = namespace_error(
            &node_target(),
            Path::new("/run/netns/seed.compute1"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "node compute1 of lab seed: its namespace seed.compute1 does not exist"
            ),
            "{text}"
        );
        assert!(text.contains("ovslab up"), "{text}");
    }

    #[test]
    fn exec_failures_map_to_shell_statuses() {
        let t = node_target();
        let e = exec_failure("nope", &t, io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(exit_code(&e), Some(127));
        assert_eq!(e.to_string(), "nope: command not found");
        let e = exec_failure(
            "x",
            &t,
            io::Error::from_raw_os_error(nix::errno::Errno::EACCES as i32),
        );
        assert_eq!(exit_code(&e), Some(126));
        let e = exec_failure(
            "x",
            &t,
            io::Error::from_raw_os_error(nix::errno::Errno::EPERM as i32),
        );
        assert_eq!(exit_code(&e), Some(1));
        assert!(e.to_string().contains("CAP_SYS_ADMIN"));
    }
}
