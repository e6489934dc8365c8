//! The reconciler: the desired state (pure data, from the planner) is diffed
//! against the actual state (read through the drivers) and only the
//! difference is applied.
//!
//! - [`diff`]: pure diffs, unit-tested without root.
//! - [`actual`]: what exists, as data.
//! - [`host`]: the seam between the engine and the host: the [`Host`]
//!   trait and [`RealHost`], which calls the drivers; `testing` (feature
//!   `testing`) has the in-memory `FakeHost` the tests under `tests/` use.
//! - [`drivers`]: reading and applying through netlink, OVSDB and OpenFlow.
//! - [`ovs_process`]: each node's `ovsdb-server` and `ovs-vswitchd`.
//! - [`manifest`]: what a lab created (its namespaces with their inodes),
//!   so that nothing else is ever taken for the lab's.
//! - [`files`]: the run directory's records, replaced whole.
//! - [`engine`]: the registry of labs, `up` and `down` (`engine/mod.rs`);
//!   the converge's phases (`converge.rs`); audits (`audit.rs`); `status`,
//!   `check`, `trace`, `target` (`queries.rs`); finding and removing labs
//!   (`removal.rs`).
//! - [`watch`]: kernel notices that wake the audits.
//!
//! A lab's checks and traces (`ovslab-probe`) and OVS's control socket
//! (`ovslab-unixctl`) are crates of their own: they read the lab's state,
//! not the reconciler's internals.

pub mod actual;
pub mod agents;
pub mod diff;
pub mod drivers;
pub mod engine;
pub mod files;
pub mod fingerprint;
pub mod host;
pub mod manifest;
pub mod ovs_process;
pub mod spare;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

use std::path::Path;
use std::time::Duration;

pub use engine::{Engine, EngineConfig};
pub use host::{Host, RealHost};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("lab `{0}` is not known to this daemon")]
    UnknownLab(String),
    #[error("{0}")]
    BadName(String),
    #[error(
        "lab `{lab}`: namespace{} {} already exist{} and {} not made by this lab; nothing was changed for {}: remove {} or rename the lab",
        if names.len() == 1 { "" } else { "s" },
        names.join(", "),
        if names.len() == 1 { "s" } else { "" },
        if names.len() == 1 { "was" } else { "were" },
        if names.len() == 1 { "it" } else { "them" },
        if names.len() == 1 { "it" } else { "them" }
    )]
    ForeignNamespaces { lab: String, names: Vec<String> },
    #[error("lab `{lab}` has no target named `{name}`")]
    UnknownTarget { lab: String, name: String },
    #[error("lab `{lab}` has no node named `{node}`")]
    UnknownNode { lab: String, node: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] ovslab_netlink::NetlinkError),
    #[error(transparent)]
    Iptables(#[from] ovslab_iptables::IptablesError),
    #[error(transparent)]
    OvsProcess(#[from] ovs_process::OvsProcessError),
    #[error(transparent)]
    Agent(#[from] agents::AgentError),
    /// DHCP is wanted, but the engine was given no hook for the clients.
    #[error("lab `{lab}` has DHCP networks, but this daemon has no DHCP client hook")]
    NoDhcpHook { lab: String },
    #[error("node {node}: {source}")]
    Ovsdb {
        node: String,
        #[source]
        source: ovslab_ovsdb::OvsdbError,
    },
    #[error("node {node}: bridge {bridge}: {source}")]
    Openflow {
        node: String,
        bridge: String,
        #[source]
        source: ovslab_openflow::OpenflowError,
    },
    /// OVSDB answered, but not with what was asked for.
    #[error("node {node}: {what}")]
    UnexpectedReply { node: String, what: String },
    /// `ovs-vswitchd` died before it applied the configuration written.
    #[error("node {node}: ovs-vswitchd exited before it applied configuration {cfg}")]
    VswitchdExited { node: String, cfg: i64 },
    /// `ovs-vswitchd` answers but has not applied the configuration written.
    #[error("node {node}: ovs-vswitchd did not apply configuration {cfg} within {} s", after.as_secs())]
    NotApplied {
        node: String,
        cfg: i64,
        after: Duration,
    },
    /// A flow of the plan names a port that has no OpenFlow number yet.
    #[error(
        "node {node}: {bridge}: flow {flow} names port {port}, which has no OpenFlow number yet"
    )]
    PortWithoutNumber {
        node: String,
        bridge: String,
        flow: String,
        port: String,
    },
    /// A flow of the plan that OpenFlow cannot express, e.g. a `move:`
    /// between fields of different widths.
    #[error("node {node}: {bridge}: flow {flow} cannot be installed: {reason}")]
    FlowNotBuildable {
        node: String,
        bridge: String,
        flow: String,
        reason: String,
    },
    /// A task the work was handed to panicked or was cancelled; `of`
    /// says whose (`namespace seed.compute1`, `lab seed`).
    #[error("{of}: the {what} task failed: {source}")]
    Task {
        of: String,
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// An Open vSwitch daemon did not answer a request within its
    /// deadline: it is stopped or stuck. The audit kills and restarts it.
    #[error("{program} of {node} did not answer {request} within {} s", after.as_secs_f64())]
    NotAnswering {
        node: String,
        program: &'static str,
        request: String,
        after: Duration,
    },
    #[error("lab `{lab}`: {source}")]
    Trace {
        lab: String,
        #[source]
        source: ovslab_probe::trace::TraceError,
    },
    #[error(
        "removing lab `{lab}` left errors: {}",
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Teardown {
        lab: String,
        failures: Vec<TeardownFailure>,
    },
}

/// One thing a `down` could not remove; the lab stays known, so that
/// `down` can be tried again.
#[derive(Debug, thiserror::Error)]
pub enum TeardownFailure {
    #[error("namespace {name}: {source}")]
    Namespace {
        name: String,
        #[source]
        source: Box<ReconcileError>,
    },
    #[error("listing namespaces: {0}")]
    ListNamespaces(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    Manifest {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    RunDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReconcileError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ReconcileError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn netlink(e: ovslab_netlink::NetlinkError) -> Self {
        ReconcileError::Netlink(e)
    }

    pub(crate) fn ovs_process(e: ovs_process::OvsProcessError) -> Self {
        ReconcileError::OvsProcess(e)
    }

    /// An OVSDB error of `node`'s `ovsdb-server`; a missed deadline is
    /// [`ReconcileError::NotAnswering`].
    pub(crate) fn ovsdb(node: &str, source: ovslab_ovsdb::OvsdbError) -> Self {
        match source {
            ovslab_ovsdb::OvsdbError::Timeout { method, after } => ReconcileError::NotAnswering {
                node: node.to_string(),
                program: ovs_process::OvsDaemon::OvsdbServer.program(),
                request: format!("a {method}"),
                after,
            },
            source => ReconcileError::Ovsdb {
                node: node.to_string(),
                source,
            },
        }
    }

    /// An OpenFlow error of `node`'s `ovs-vswitchd` on `bridge`; a missed
    /// deadline is [`ReconcileError::NotAnswering`].
    pub(crate) fn openflow(
        node: &str,
        bridge: &str,
        source: ovslab_openflow::OpenflowError,
    ) -> Self {
        match source {
            ovslab_openflow::OpenflowError::Timeout { request, after } => {
                ReconcileError::NotAnswering {
                    node: node.to_string(),
                    program: ovs_process::OvsDaemon::OvsVswitchd.program(),
                    request: format!("the {request} on {bridge}"),
                    after,
                }
            }
            source => ReconcileError::Openflow {
                node: node.to_string(),
                bridge: bridge.to_string(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_keep_their_kind_and_their_source() {
        let e = ReconcileError::NotApplied {
            node: "compute1".into(),
            cfg: 7,
            after: Duration::from_secs(30),
        };
        assert_eq!(
            e.to_string(),
            "node compute1: ovs-vswitchd did not apply configuration 7 within 30 s"
        );
        let e = ReconcileError::PortWithoutNumber {
            node: "compute1".into(),
            bridge: "br-int".into(),
            flow: "table=0, priority=3".into(),
            port: "int-br-vlan".into(),
        };
        assert!(e.to_string().contains("names port int-br-vlan"), "{e}");
        let e = ReconcileError::FlowNotBuildable {
            node: "network".into(),
            bridge: "br-tun".into(),
            flow: "table=21, priority=1,arp".into(),
            reason: "move from NXM_OF_ETH_SRC to NXM_OF_ARP_SPA: the fields differ in width".into(),
        };
        assert_eq!(
            e.to_string(),
            "node network: br-tun: flow table=21, priority=1,arp cannot be installed: \
             move from NXM_OF_ETH_SRC to NXM_OF_ARP_SPA: the fields differ in width"
        );
        // A task that panicked is carried as such, its JoinError the source.
        let join = tokio::spawn(async { panic!("boom") }).await.unwrap_err();
        let e = ReconcileError::Task {
            of: "namespace lab.compute1".into(),
            what: "iptables",
            source: join,
        };
        assert!(
            e.to_string()
                .starts_with("namespace lab.compute1: the iptables task failed"),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("the JoinError");
        assert!(
            source
                .downcast_ref::<tokio::task::JoinError>()
                .is_some_and(|j| j.is_panic())
        );
    }

    #[test]
    fn a_missed_deadline_names_the_daemon_and_the_node() {
        let e = ReconcileError::ovsdb(
            "compute1",
            ovslab_ovsdb::OvsdbError::Timeout {
                method: "transact",
                after: Duration::from_secs(5),
            },
        );
        assert_eq!(
            e.to_string(),
            "ovsdb-server of compute1 did not answer a transact within 5 s"
        );
        let e = ReconcileError::openflow(
            "network1",
            "br-int",
            ovslab_openflow::OpenflowError::Timeout {
                request: "flow stats request",
                after: Duration::from_secs(10),
            },
        );
        assert_eq!(
            e.to_string(),
            "ovs-vswitchd of network1 did not answer the flow stats request on br-int within 10 s"
        );
    }
}
