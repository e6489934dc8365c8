//! The daemon's command line.

use std::path::PathBuf;

use clap::Parser;
use ovslab_api::{DEFAULT_SOCKET, SOCKET_ENV};

/// The ovslab daemon: builds OpenStack Neutron "classic Open vSwitch" labs in
/// network namespaces and owns them.
#[derive(Debug, Parser)]
#[command(
    name = "ovslabd",
    version = ovslab_version::VERSION,
    long_about = "The ovslab daemon: builds OpenStack Neutron \"classic Open vSwitch\" labs in \
network namespaces and owns them.\n\n\
It runs in the foreground and serves the ovslab API (JSON over HTTP) on a Unix socket; the \
`ovslab` command line talks to it. At start it adopts the labs of a previous run found under \
--run-dir, then brings up every *.yaml under --labs-dir (a file that fails is logged and skipped) and \
takes down the labs whose file left --labs-dir while it was away.",
    after_help = "\
Signals:
  SIGTERM, SIGINT  stop: remove the socket, close idle connections, let the requests in flight
                   (and the ups and downs they started) finish for at most --stop-grace seconds,
                   abandon what is left (like a crash: `ovslab up` finishes such a lab, `ovslab
                   down` removes it), apply --on-exit, exit 0 (a second signal exits at once)
  SIGHUP           reload: bring up every *.yaml under --labs-dir again (in place), and take down
                   the labs that came from a file of --labs-dir which is gone (recorded in
                   <run-dir>/from-labs-dir; labs made with `ovslab up` are never touched)

With --on-exit keep (the default) labs are NOT torn down when the daemon exits: a lab outlives the
daemon, and the next ovslabd adopts it from --run-dir. `ovslab down LAB` removes a lab. With
--on-exit down (what systemd/ovslabd.service uses) a stop removes every lab. The file
<run-dir>/.on-exit-once (`keep` or `down`, root's) overrides --on-exit for one stop: the Debian
package writes `keep` before the restart of an upgrade, which the new daemon's labs survive, and
`down` before the stop of a removal.

Self-healing: the daemon watches what it built — link, address and route notices and nf_tables
commits in every lab namespace, namespace deletions, each node's OVSDB (monitor) and each bridge's
flows (flow monitor), its OVS daemons' exits — and converges at once, as `up` does, the part of a
lab a notice concerns (a node, or the shared networks). As a safety net, every lab is converged
whole at start and every --audit-interval seconds. What differed is repaired and logged, and
`ovslab status` lists it.

systemd: with Type=notify ($NOTIFY_SOCKET), READY=1 is sent once every lab of --labs-dir was
brought up (or failed, logged), STATUS= says how many labs and instances run and whether they are
healthy (after each up, down and reload, and every 5 s), RELOADING=1 on SIGHUP until READY=1 again,
STOPPING=1 on a stop. Logs go to the journal when stderr is connected to it ($JOURNAL_STREAM).

Limits: a client must send its whole request header within 5 s of connecting (or of its last
answer), and its body within 10 s more, at most 4 MiB (else 408 or 413); names in paths and bodies
must follow the topology file's rules, an `up`'s `source` must be one printable line of at most 256
bytes, and a trace's port 1-65535 (else 400). A refused topology's answer lists its first 100
problems (at most 32 KiB of them; a last line counts the rest), and no error answer passes 64 KiB.
A client has 10 s to read its answer before its connection may be closed to make room. Event
streams (`ovslab ui`) take at most a quarter of --max-connections (64 of 256); more are refused
(503), so that other requests always find a connection. An `up` or `down` runs to its end even
when its client goes away; at most 4 changes of one lab, and 32 in all, run or wait at once, and
one more is refused (503). At most 16 check or trace probes run at once; more wait their turn.

Access: the socket has mode 0660 (group `ovslab` when that group exists); requests from users
other than root, the daemon's own user and members of group `ovslab` are refused with 403.

Exit status: 0 after a requested stop, 1 when the daemon cannot start (another daemon answers
on the socket, a directory cannot be made, …)."
)]
pub struct Config {
    /// The API socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Where labs run: nodes run their Open vSwitch from DIR/LAB/NODE/.
    /// One daemon per directory: a second one on it refuses to start.
    #[arg(long, value_name = "DIR", default_value = "/run/ovslab")]
    pub run_dir: PathBuf,

    /// Topology files (*.yaml) brought up at start; a missing directory is fine.
    #[arg(long, value_name = "DIR", default_value = "/etc/ovslab/labs")]
    pub labs_dir: PathBuf,

    /// What happens to the labs when the daemon stops: `keep` leaves them
    /// running (the next ovslabd adopts them), `down` removes them all (what
    /// the systemd unit asks for).
    #[arg(long, value_name = "WHAT", default_value = "keep", value_parser = ["keep", "down"])]
    pub on_exit: String,

    /// Seconds between full audits of every lab, the safety net beside
    /// the audits that notices start (a dead OVS process restarted,
    /// anything deleted or changed behind the daemon's back repaired); 0
    /// turns all audits and watching off. A lab whose full audit takes
    /// long is audited less often (at most 0.5 % of the time).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub audit_interval: f64,

    /// Seconds a stop (SIGTERM, SIGINT) gives the requests in flight, and
    /// the ups and downs they started, before it abandons them and applies
    /// --on-exit.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    pub stop_grace: f64,

    /// The most connections served at once. A new one beyond closes the
    /// oldest idle connection (one waiting for a request, else one whose
    /// client has left its answer unread for 10 s), or is refused with 503
    /// when every connection has a request in progress. Event streams may
    /// hold at most a quarter of them.
    #[arg(long, value_name = "N", default_value_t = crate::connections::DEFAULT_MAX_CONNECTIONS,
          value_parser = at_least_one)]
    pub max_connections: usize,

    /// The most labs this daemon runs; an `up` of one more is refused
    /// (409) before it creates anything.
    #[arg(long, value_name = "N", default_value_t = crate::quota::DEFAULT_MAX_LABS)]
    pub max_labs: usize,

    /// The most network namespaces all labs have together (a lab has one
    /// per node, instance, router, external host and network; the
    /// 1000-instance lab of `ovslab generate --computes 20
    /// --instances-per-node 50` has 1025); an `up` past it is refused (409)
    /// before it creates anything.
    #[arg(long, value_name = "N", default_value_t = crate::quota::DEFAULT_MAX_NAMESPACES)]
    pub max_namespaces: usize,

    /// Spare nodes to keep ready (0-16): namespaces with their Open
    /// vSwitch started and its userspace datapath made once, which the
    /// next labs' small nodes (at most 16 links, as the seed's and the
    /// Networking Guide's) take instead of starting their own. A seed `up`
    /// from nothing then skips the vswitchds' 100 ms datapath start and
    /// the OVS daemons' own starts. Each spare holds about 7 MiB of its own
    /// (20 MiB of RSS with the libraries it shares). Taken ones are made
    /// again once no spare has been taken for 2 s. The daemon removes its
    /// spares when it stops (and those a killed daemon left, when it
    /// starts, whatever N).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=16))]
    pub spare_nodes: u8,

    /// What to log: a level (error, warn, info, debug, trace) or tracing
    /// directives such as `info,ovslab_reconciler=debug`.
    #[arg(long, value_name = "FILTER", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Print the manual page ovslabd(8), generated from these definitions,
    /// and exit (`make man`).
    #[arg(long, hide = true)]
    pub man_page: bool,
}

/// The manual page `ovslabd(8)`: this command line, its long help and its
/// notes (signals, systemd, limits, access, exit status).
pub fn man_page() -> String {
    use clap::CommandFactory;
    let mut out = b".\\\" -*- coding: UTF-8 -*-\n".to_vec();
    clap_mangen::Man::new(Config::command())
        .section("8")
        .source(format!("ovslab {}", env!("CARGO_PKG_VERSION")))
        .manual("ovslab manual")
        .render(&mut out)
        .expect("writing to memory");
    let mut page = String::from_utf8(out).expect("UTF-8");
    page.push_str(
        ".SH FILES\n.TP\n\\fI/etc/ovslab/labs/*.yaml\\fR\nThe labs the service brings up (--labs-dir).\n\
         .TP\n\\fI/etc/default/ovslabd\\fR\nOVSLABD_ON_EXIT (down or keep), OVSLABD_AUDIT_INTERVAL \
         and OVSLABD_SPARE_NODES (3 unless set) for the systemd unit ovslabd.service.\n\
         .TP\n\\fI/run/ovslab/\\fR\nThe run directory: the API socket, each lab's directory \
         (its manifest and topology, each node's Open vSwitch database, sockets and logs), \
         and the spare nodes' (.spares/).\n\
         .SH SEE ALSO\n\\fBovslab\\fR(1), \\fBovslab-topology\\fR(5), \\fBsystemctl\\fR(1), \
         \\fBovs-vswitchd\\fR(8), \\fBovsdb-server\\fR(1)\n",
    );
    page
}

/// A number of seconds: finite, not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        Ok(_) => Err("must be a number of seconds, 0 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A count that must not be 0.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn the_manual_page_has_the_options_and_the_notes() {
        let page = man_page();
        assert!(page.starts_with(".\\\" -*- coding: UTF-8 -*-\n"), "{page}");
        assert!(page.contains("\n.TH ovslabd 8 "), "{page}");
        for text in ["\\-\\-on\\-exit", "Signals:", "SEE ALSO"] {
            assert!(page.contains(text), "{text} missing: {page}");
        }
        assert!(
            !page.contains("man\\-page"),
            "the hidden flag is documented"
        );
    }

    #[test]
    fn directories_can_be_overridden() {
        let c = Config::try_parse_from([
            "ovslabd",
            "--socket",
            "/tmp/s.sock",
            "--run-dir",
            "/tmp/run",
            "--labs-dir",
            "/tmp/labs",
            "--log-level",
            "debug",
            "--audit-interval",
            "0",
        ])
        .unwrap();
        assert_eq!(c.audit_interval, 0.0);
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(c.run_dir, PathBuf::from("/tmp/run"));
        assert_eq!(c.labs_dir, PathBuf::from("/tmp/labs"));
        assert_eq!(c.log_level, "debug");
    }
}
