//! `ovslab`: the command line of ovslab. It validates topology files itself
//! and asks the daemon, `ovslabd`, for everything that touches the host.
//!
//! - [`commands`]: one module per verb, each with one `exec()`.
//! - [`client`]: the HTTP client for the daemon's Unix socket.

mod client;
mod commands;
mod completion;
mod manual;
mod progress;
mod style;
mod summary;
mod target;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ovslab_api::{DEFAULT_SOCKET, SOCKET_ENV};
use ovslab_topology::printable_lines;

use crate::client::Client;
use crate::commands::{
    capture, check, complete, completions, down, exec, generate, graph, man, node, schema, status,
    trace, ui, up, validate,
};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  failure: ovslabd cannot be reached or refused the request, the lab did not converge, no lab
     runs and the command named none, …
  2  bad input: a topology file that does not validate, a bad argument, several labs run and the
     command named none
  `ovslab exec` exits with CMD's status (126/127 when CMD cannot be run).

The daemon, ovslabd, must be running for up, down, status, exec, check, trace, ui, capture, node and graph (without --topology): start it with `ovslabd`
(foreground) or `systemctl start ovslabd`.";

/// Build and explore OpenStack Neutron "classic Open vSwitch" labs in network
/// namespaces.
#[derive(Debug, Parser)]
#[command(name = "ovslab", version = ovslab_version::VERSION, after_help = AFTER_HELP)]
pub struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Up(up::Args),
    Down(down::Args),
    Status(status::Args),
    Exec(exec::Args),
    Check(check::Args),
    Trace(trace::Args),
    Ui(ui::Args),
    Capture(capture::Args),
    Validate(validate::Args),
    Generate(generate::Args),
    Graph(graph::Args),
    Node(node::Args),
    Schema(schema::Args),
    Completions(completions::Args),
    /// Names for shell completion, from the running daemon.
    #[command(name = "__complete", hide = true)]
    Complete(complete::Args),
    /// Write the manual pages into a directory.
    #[command(name = "__man", hide = true)]
    Man(man::Args),
}

/// A failure caused by what the user gave (exit status 2); its message is
/// printed as it is (topology errors already read `file:line:column: …`),
/// control characters escaped.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(cli.socket);
    let result = match cli.command {
        Command::Up(args) => up::exec(&client, args),
        Command::Down(args) => down::exec(&client, args),
        Command::Status(args) => status::exec(&client, args),
        Command::Exec(args) => exec::exec(&client, args),
        Command::Check(args) => check::exec(&client, args),
        Command::Trace(args) => trace::exec(&client, args),
        Command::Ui(args) => ui::exec(&client, args),
        Command::Capture(args) => capture::exec(&client, args),
        Command::Validate(args) => validate::exec(args),
        Command::Generate(args) => generate::exec(args),
        Command::Graph(args) => graph::exec(&client, args),
        Command::Node(args) => node::exec(&client, args),
        Command::Schema(args) => schema::exec(args),
        Command::Completions(args) => completions::exec(args),
        Command::Complete(args) => complete::exec(&client, args),
        Command::Man(args) => man::exec(args),
    };
    match result {
        Ok(code) => code,
        // Errors quote paths, names and the daemon's messages: escaped, so
        // that none can drive the terminal.
        Err(e) if e.is::<BadInput>() => {
            eprintln!("{}", printable_lines(&e.to_string()));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ovslab: {}", printable_lines(&format!("{e:#}")));
            exec::exit_code(&e).map_or(ExitCode::FAILURE, ExitCode::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ovslab").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_defaults_to_the_seed_lab_and_takes_a_file() {
        let Command::Up(a) = parse(&["up"]).command else {
            panic!()
        };
        assert_eq!(a.topology, None);
        let Command::Up(a) = parse(&["up", "lab.yaml"]).command else {
            panic!()
        };
        assert_eq!(a.topology.as_deref(), Some("lab.yaml"));
    }

    #[test]
    fn down_takes_an_optional_lab_and_verbose_or_json() {
        let Command::Down(a) = parse(&["down"]).command else {
            panic!()
        };
        assert_eq!((a.lab, a.verbose, a.json), (None, false, false));
        let Command::Down(a) = parse(&["down", "other", "-v"]).command else {
            panic!()
        };
        assert_eq!((a.lab.as_deref(), a.verbose), (Some("other"), true));
        assert!(Cli::try_parse_from(["ovslab", "down", "-v", "--json"]).is_err());
    }

    #[test]
    fn up_takes_verbose_or_json() {
        let Command::Up(a) = parse(&["up", "--verbose"]).command else {
            panic!()
        };
        assert!(a.verbose && !a.json);
        let Command::Up(a) = parse(&["up", "x.yaml", "--json"]).command else {
            panic!()
        };
        assert!(a.json && !a.verbose);
        assert!(Cli::try_parse_from(["ovslab", "up", "-v", "--json"]).is_err());
    }

    #[test]
    fn status_takes_an_optional_lab_and_json() {
        let Command::Status(a) = parse(&["status"]).command else {
            panic!()
        };
        assert_eq!((a.lab, a.json), (None, false));
        let Command::Status(a) = parse(&["status", "seed", "--json"]).command else {
            panic!()
        };
        assert_eq!((a.lab.as_deref(), a.json), (Some("seed"), true));
    }

    #[test]
    fn exec_takes_the_command_after_the_double_dash() {
        let Command::Exec(a) =
            parse(&["exec", "instance1", "--", "ping", "-c", "1", "203.0.113.1"]).command
        else {
            panic!()
        };
        assert_eq!(a.lab, None);
        assert_eq!(a.target, "instance1");
        assert_eq!(a.command, ["ping", "-c", "1", "203.0.113.1"]);
        let Command::Exec(a) = parse(&[
            "exec",
            "--lab",
            "x",
            "compute1",
            "--",
            "ovs-vsctl",
            "--help",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(a.lab.as_deref(), Some("x"));
        assert_eq!(a.command, ["ovs-vsctl", "--help"]);
    }

    #[test]
    fn exec_also_takes_the_command_without_the_double_dash() {
        let Command::Exec(a) = parse(&["exec", "instance1", "ip", "-j", "addr"]).command else {
            panic!()
        };
        assert_eq!(a.command, ["ip", "-j", "addr"]);
    }

    #[test]
    fn exec_needs_a_command() {
        assert!(Cli::try_parse_from(["ovslab", "exec", "instance1"]).is_err());
        assert!(Cli::try_parse_from(["ovslab", "exec", "instance1", "--"]).is_err());
    }

    #[test]
    fn the_socket_is_global() {
        let cli = parse(&["status", "--socket", "/tmp/s.sock"]);
        assert_eq!(cli.socket, PathBuf::from("/tmp/s.sock"));
        let cli = parse(&["--socket", "/tmp/t.sock", "down"]);
        assert_eq!(cli.socket, PathBuf::from("/tmp/t.sock"));
    }

    #[test]
    fn graph_defaults_to_the_only_lab_as_dot() {
        let Command::Graph(a) = parse(&["graph"]).command else {
            panic!()
        };
        assert_eq!((a.lab, a.format), (None, graph::Format::Dot));
        let Command::Graph(a) = parse(&[
            "graph",
            "--topology",
            "x.yaml",
            "--format",
            "svg",
            "-o",
            "x.svg",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(a.format, graph::Format::Svg);
        assert_eq!(a.topology, Some(PathBuf::from("x.yaml")));
        assert_eq!(a.output, Some(PathBuf::from("x.svg")));
    }

    #[test]
    fn trace_takes_two_ends_and_one_protocol() {
        let Command::Trace(a) = parse(&["trace", "instance1", "instance3"]).command else {
            panic!()
        };
        assert_eq!(
            (a.lab.as_deref(), a.from.as_str(), a.to.as_deref()),
            (None, "instance1", Some("instance3"))
        );
        assert_eq!((a.tcp, a.udp, a.json), (None, None, false));
        let Command::Trace(a) = parse(&[
            "trace",
            "--lab",
            "x",
            "internet",
            "203.0.113.102",
            "--tcp",
            "22",
            "--json",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(
            (a.lab.as_deref(), a.tcp, a.json),
            (Some("x"), Some(22), true)
        );
        assert!(
            Cli::try_parse_from(["ovslab", "trace", "a", "b", "--tcp", "1", "--udp", "2"]).is_err()
        );
        assert!(Cli::try_parse_from(["ovslab", "trace", "a"]).is_err());
        // A DHCP trace has no destination; the others need one.
        let Command::Trace(a) = parse(&["trace", "instance3", "--dhcp"]).command else {
            panic!()
        };
        assert!(a.dhcp && a.to.is_none());
        assert!(Cli::try_parse_from(["ovslab", "trace", "a", "b", "--dhcp"]).is_err());
        assert!(
            Cli::try_parse_from(["ovslab", "trace", "a", "b", "--http", "80", "--tcp", "1"])
                .is_err()
        );
        let Command::Trace(a) = parse(&["trace", "a", "169.254.169.254", "--http", "80"]).command
        else {
            panic!()
        };
        assert_eq!(a.http, Some(80));
    }

    #[test]
    fn capture_takes_a_target_an_interface_and_limits() {
        let Command::Capture(a) = parse(&["capture", "compute1", "eth1"]).command else {
            panic!()
        };
        assert_eq!(
            (a.lab.as_deref(), a.target.as_str(), a.interface.as_str()),
            (None, "compute1", "eth1")
        );
        assert_eq!((a.write, a.count, a.seconds), (None, None, None));
        let Command::Capture(a) = parse(&[
            "capture", "--lab", "x", "network", "eth1", "-w", "n.pcap", "-c", "5",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(a.write, Some(PathBuf::from("n.pcap")));
        assert_eq!(a.count, Some(5));
        assert!(Cli::try_parse_from(["ovslab", "capture", "compute1"]).is_err());
    }

    #[test]
    fn validate_needs_a_file() {
        assert!(Cli::try_parse_from(["ovslab", "validate"]).is_err());
        let Command::Validate(a) = parse(&["validate", "x.yaml"]).command else {
            panic!()
        };
        assert_eq!(a.file, PathBuf::from("x.yaml"));
    }
}
