//! Wire types of the `ovslabd` API: JSON over HTTP/1.1 on a Unix socket
//! (`/run/ovslab/ovslabd.sock` by default).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/labs` | [`UpRequest`] | [`UpReport`] |
//! | `DELETE /v1/labs/{lab}` | — | [`DownReport`] |
//! | `GET /v1/labs` | — | `Vec<String>` (lab names) |
//! | `GET /v1/labs/{lab}` | — | [`LabStatus`] |
//! | `GET /v1/labs/{lab}/targets/{name}` | — | [`Target`] |
//! | `GET /v1/labs/{lab}/topology` | — | [`UpRequest`] (the saved topology file) |
//!
//! Every error is an HTTP error status with an [`ApiError`] body.

use serde::{Deserialize, Serialize};

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/ovslab/ovslabd.sock";
/// Environment variable overriding the socket path.
pub const SOCKET_ENV: &str = "OVSLAB_SOCKET";

/// Bring a lab up or converge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpRequest {
    /// The topology file's text (YAML).
    pub topology: String,
    /// What error messages call the file (its path, usually).
    pub source: String,
}

/// What an `up` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpReport {
    pub lab: String,
    /// One line per change made, in order; empty when the lab had converged.
    pub changes: Vec<String>,
    pub elapsed_ms: u64,
}

/// What a `down` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownReport {
    pub lab: String,
    pub removed: Vec<String>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabStatus {
    pub lab: String,
    pub source: String,
    pub nodes: Vec<NodeStatus>,
    pub instances: Vec<InstanceStatus>,
    #[serde(default)]
    pub routers: Vec<RouterStatus>,
    /// True when every namespace exists and every node's OVS runs.
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterStatus {
    pub name: String,
    pub node: String,
    /// `qr-…` and `qg-…` addresses as planned, e.g. `192.168.1.1/24`.
    pub addresses: Vec<String>,
    pub namespace: String,
    pub namespace_exists: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub namespace: String,
    pub namespace_exists: bool,
    pub ovsdb_server_pid: Option<u32>,
    pub ovs_vswitchd_pid: Option<u32>,
    /// Node-local VLAN tag per network.
    pub local_vlans: Vec<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub node: String,
    pub network: String,
    pub address: String,
    pub mac: String,
    pub namespace: String,
    pub namespace_exists: bool,
}

/// What `ovslab check` found: one result per declared check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub lab: String,
    pub results: Vec<CheckResult>,
    pub elapsed_ms: u64,
}

impl CheckReport {
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What the probe saw, in words: replies, uplinks crossed with their
    /// VLAN ids, the source address at the destination; and why it failed.
    pub detail: String,
}

/// Where `ovslab exec` runs a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub lab: String,
    pub name: String,
    /// "node", "instance", "router", "external-host", …
    pub kind: String,
    pub namespace: String,
    /// Environment for the command (for nodes: `OVS_RUNDIR` and friends, so
    /// `ovs-vsctl`, `ovs-ofctl` and `ovs-appctl` work unmodified).
    pub env: Vec<(String, String)>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
