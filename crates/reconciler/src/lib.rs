//! The reconciler: the desired state (pure data, from the planner) is diffed
//! against the actual state (read through the drivers) and only the
//! difference is applied.
//!
//! - [`diff`]: pure diffs, unit-tested without root.
//! - [`actual`]: what exists, as data.
//! - [`drivers`]: reading and applying through netlink, OVSDB and OpenFlow.
//! - [`ovs_process`]: each node's `ovsdb-server` and `ovs-vswitchd`.
//! - [`engine`]: `up`, `down`, `status` for every lab of the daemon.

pub mod actual;
pub mod checks;
pub mod diff;
pub mod drivers;
pub mod engine;
pub mod manifest;
pub mod ovs_process;
pub mod probes;
pub mod trace;
pub mod unixctl;
pub mod watch;

use std::path::Path;

pub use engine::{Engine, EngineConfig};

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
    #[error("node {node}: {message}")]
    Switch { node: String, message: String },
    #[error("lab `{lab}`: {source}")]
    Trace {
        lab: String,
        #[source]
        source: trace::TraceError,
    },
    #[error("removing lab `{lab}` left errors: {}", errors.join("; "))]
    Teardown { lab: String, errors: Vec<String> },
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
}
