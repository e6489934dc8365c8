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
//! | `GET /v1/labs/{lab}/progress` | — | [`UpProgress`] (the phases of its converge in progress, or of the last one) |
//! | `GET /v1/labs/{lab}/events` | — | a stream: one [`AuditEvent`] per line (JSON), after each audit of the lab, until the lab is removed or the daemon stops; 503 when a quarter of the daemon's connections are streams already |
//! | `POST /v1/labs/{lab}/check` | — | [`CheckReport`] |
//! | `POST /v1/labs/{lab}/trace` | [`TraceRequest`] | [`TraceReport`] |
//! | `POST /v1/labs/{lab}/nodes/{node}/fail` | — | [`NodeReport`] |
//! | `POST /v1/labs/{lab}/nodes/{node}/recover` | — | [`NodeReport`] |
//!
//! Every error is an HTTP error status with an [`ApiError`] body (at most
//! 64 KiB). A change (`POST /v1/labs`, `DELETE`, a node's `fail` or
//! `recover`) is refused with 503 when 4 changes of its lab, or 32 in all,
//! run or wait already.

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
    /// What error messages call the file (its path, usually): one line of
    /// at most [`MAX_SOURCE`] bytes without control characters, else the
    /// daemon refuses the request (400).
    pub source: String,
}

/// The longest [`UpRequest::source`] the daemon accepts, in bytes: it
/// starts every problem line of a refused `up`'s answer, and the daemon's
/// log lines about the `up`. `ovslab up` sends a longer path shortened to its end
/// (`…/labs/big.yaml`).
pub const MAX_SOURCE: usize = 256;

/// What an `up` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpReport {
    pub lab: String,
    /// One line per change made, in order; empty when the lab had converged.
    pub changes: Vec<String>,
    /// What the lab met but left alone: namespaces with the lab's prefix
    /// that it did not create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
}

/// How far the lab's converge (an `up`, or an audit) has come: the phases
/// done so far, in order (`namespaces`, `ovs databases`, `links`, `flows`,
/// …); the list starts again with each converge. Empty when none ran
/// since the daemon started. `ovslab up` shows it on a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpProgress {
    pub lab: String,
    pub phases: Vec<PhaseDone>,
}

/// One phase of a converge, done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseDone {
    pub phase: String,
    /// How long it took.
    pub ms: u64,
}

/// What `ovslab node fail` or `node recover` did to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub lab: String,
    pub node: String,
    /// Whether the node is failed now.
    pub failed: bool,
    /// One line per change made.
    pub changes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
}

/// One audit of a lab, as `GET /v1/labs/{lab}/events` streams it (one
/// JSON object per line): what it repaired, and whether it could.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub lab: String,
    /// When it ended (`2026-11-25T03:59:01Z`).
    pub at: String,
    /// Audits of the lab since the daemon started, this one included.
    pub audit: u64,
    /// Every change it made, one line each as `ovslab up -v` prints them
    /// (`compute1: br-vlan: add flow …`); empty when the lab was as planned.
    pub repairs: Vec<String>,
    /// Why it could not repair the lab; `None` when it could.
    pub error: Option<String>,
    /// How long it took.
    pub ms: u64,
}

/// What a `down` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownReport {
    pub lab: String,
    pub removed: Vec<String>,
    /// What has the lab's prefix but was not made by it, left in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<String>,
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
    /// The DHCP agents' servers, one per DHCP network.
    #[serde(default)]
    pub dhcp: Vec<DhcpStatus>,
    /// Where the metadata service answers: `router router1 on 0.0.0.0:9697
    /// in <namespace>`.
    #[serde(default)]
    pub metadata: Vec<String>,
    /// True when every namespace exists and every node's OVS runs (and
    /// every DHCP network's dnsmasq, and every DHCP instance held its
    /// lease at the last converge).
    pub healthy: bool,
    /// What the daemon's audits found broken and repaired, newest last:
    /// one line per audit that repaired something (`<UTC time> <n>
    /// repaired: <the first changes>`), the last 20.
    #[serde(default)]
    pub repairs: Vec<String>,
    /// Every repair since the daemon started.
    #[serde(default)]
    pub repair_count: u64,
    /// The daemon's audits of this lab since it started; `None` when it
    /// has not audited it (audits off, or none yet).
    #[serde(default)]
    pub audits: Option<AuditStatus>,
    /// Why the last audit could not repair the lab; `None` when it could
    /// (or none ran).
    #[serde(default)]
    pub audit_error: Option<String>,
}

/// How a lab's audits went: each converges the lab against its plan and
/// repairs what differs (see `ovslabd --help`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// Audits run since the daemon started.
    pub count: u64,
    /// When the last one ended (`2026-11-25T03:59:01Z`).
    pub last_at: String,
    /// How long the last one took: the cost of watching the lab.
    pub last_ms: u64,
}

/// One Open vSwitch daemon of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// `ovsdb-server` or `ovs-vswitchd`.
    pub program: String,
    /// The pid its pidfile names, when that process runs as the node's
    /// (alive, not a zombie, the right program, in the node's namespace).
    pub pid: Option<u32>,
    pub running: bool,
    /// `running` (answered a cheap request in time), `not answering`
    /// (runs, but did not answer within its deadline: stopped or stuck; the
    /// next audit kills and restarts it) or `dead`.
    #[serde(default)]
    pub state: String,
    /// How often the daemon started it again after it had died (found by
    /// an audit or an `up`), since the daemon started.
    pub restarts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterStatus {
    pub name: String,
    /// The node of its active copy (a legacy router's only one; an HA
    /// router's where keepalived holds the VIP, empty when none does).
    pub node: String,
    /// `qr-…` and `qg-…` addresses as planned, e.g. `192.168.1.1/24`.
    pub addresses: Vec<String>,
    /// The active copy's namespace.
    pub namespace: String,
    pub namespace_exists: bool,
    /// An HA router's copies, as `l3-agent-list-hosting-router` lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<RouterCopyStatus>,
}

/// One copy of an HA router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterCopyStatus {
    pub node: String,
    pub namespace: String,
    pub namespace_exists: bool,
    /// `active` (keepalived holds the primary VIP here), `standby`, or
    /// `unknown` (keepalived not running, or the node failed).
    pub ha_state: String,
    pub keepalived_pid: Option<u32>,
}

/// One DHCP network's server, as `dhcp-agent-list-hosting-net` and the
/// lease file show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpStatus {
    pub network: String,
    /// The node whose DHCP agent serves it.
    pub node: String,
    pub namespace: String,
    pub namespace_exists: bool,
    /// The DHCP port's address, e.g. `192.168.1.2/24`.
    pub address: String,
    pub dnsmasq_pid: Option<u32>,
    /// What dnsmasq's lease file holds: `192.168.1.11 fa:16:3e:…`.
    pub leases: Vec<String>,
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
    /// `ovsdb-server`, then `ovs-vswitchd`.
    #[serde(default)]
    pub processes: Vec<ProcessStatus>,
    /// Failed on purpose (`ovslab node fail`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
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
    /// On a DHCP network: whether the instance held its lease (its
    /// reservation on its NIC) when the daemon last converged the lab (an
    /// `up`, an audit: a lease lost is heard at once while audits run).
    /// Absent on other networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_lease: Option<bool>,
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

/// Follow one probe through a lab (`ovslab trace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// An instance or external host.
    pub from: String,
    /// A target name (instance, external host, router) or an IPv4 address.
    pub to: String,
    pub protocol: TraceProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    Icmp,
    Tcp(u16),
    Udp(u16),
    /// An HTTP GET of `/latest/meta-data/instance-id` to the port (the
    /// metadata service).
    Http(u16),
    /// A DHCP exchange from the source instance to its network's DHCP
    /// server (the request's `to` is not used).
    Dhcp,
}

impl TraceProtocol {
    /// The port a TCP, UDP or HTTP probe goes to. The daemon refuses 0
    /// (400), as a topology file's checks do: a port is 1–65535.
    pub fn port(&self) -> Option<u16> {
        match self {
            TraceProtocol::Tcp(port) | TraceProtocol::Udp(port) | TraceProtocol::Http(port) => {
                Some(*port)
            }
            TraceProtocol::Icmp | TraceProtocol::Dhcp => None,
        }
    }
}

impl std::fmt::Display for TraceProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceProtocol::Icmp => f.write_str("ICMP echo"),
            TraceProtocol::Tcp(port) => write!(f, "TCP port {port}"),
            TraceProtocol::Udp(port) => write!(f, "UDP port {port}"),
            TraceProtocol::Http(port) => write!(f, "HTTP GET to port {port}"),
            TraceProtocol::Dhcp => f.write_str("DHCP, DISCOVER to ACK"),
        }
    }
}

/// What `ovslab trace` saw: every device the probe and its answer crossed,
/// in path order, with what each Open vSwitch bridge did on the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReport {
    pub lab: String,
    pub from: String,
    pub to: String,
    /// The address the probe was sent to.
    pub destination: String,
    pub protocol: TraceProtocol,
    /// The probe's tag: ICMP identifier or TCP/UDP source port.
    pub tag: u16,
    /// Whether the source got an answer.
    pub answered: bool,
    /// The request's hops, then the answer's.
    pub hops: Vec<TraceHop>,
    /// The conclusions: network node crossed or not, NAT, tags on the wire.
    pub conclusions: Vec<String>,
    /// Set when the request did not arrive.
    pub lost: Option<TraceLoss>,
    pub elapsed_ms: u64,
}

/// One observation of the probe on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHop {
    /// Numbered from 1 over the whole trace.
    pub number: usize,
    /// "request" or "reply".
    pub leg: String,
    /// The topology object whose namespace holds the device: a node, an
    /// instance, a router, an external host, a physical or external network.
    pub place: String,
    pub namespace: String,
    pub device: String,
    /// "in" (received by the device) or "out" (sent by it).
    pub direction: String,
    /// The 802.1Q VLAN id on this device, if the frame was tagged. This and
    /// the addresses are the probe's frame: on an overlay uplink, the one
    /// inside the tunnel (see `encapsulation`).
    pub vlan: Option<u16>,
    pub src_mac: String,
    pub dst_mac: String,
    pub src_ip: String,
    pub dst_ip: String,
    /// When the frame crossed this device inside a tunnel (VXLAN, GRE, on
    /// a node's overlay uplink): the tunnel and its outer addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<TraceEncapsulation>,
    /// Microseconds since the probe was sent (the kernel's receive clock;
    /// devices joined by a veth may differ by some microseconds either way).
    pub time_us: i64,
    /// When the device is an Open vSwitch port the frame entered: what the
    /// bridges did with it (`ofproto/trace`).
    pub bridge: Option<BridgeTrace>,
    /// What changed since the previous hop: a VLAN rewrite, NAT.
    pub notes: Vec<String>,
    /// A copy that a switch flooded away from the path to the destination.
    #[serde(default)]
    pub flooded: bool,
}

/// The tunnel a hop's frame travelled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEncapsulation {
    /// "vxlan" or "gre".
    pub kind: String,
    /// The VXLAN network identifier or the GRE key (Open vSwitch's
    /// `tun_id`, Neutron's segmentation id); `None` for GRE without a key.
    pub key: Option<u32>,
    /// The outer IPv4 source and destination: the tunnel endpoints.
    pub src_ip: String,
    pub dst_ip: String,
}

impl std::fmt::Display for TraceEncapsulation {
    /// `vxlan 101, 172.16.0.11 → 172.16.0.12`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(key) => write!(f, "{} {key}", self.kind)?,
            None => write!(f, "{} without key", self.kind)?,
        }
        write!(f, ", {} → {}", self.src_ip, self.dst_ip)
    }
}

/// The flows an Open vSwitch took for a frame, bridge by bridge (patch
/// ports lead from one bridge to the next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeTrace {
    /// The bridge the frame entered.
    pub bridge: String,
    pub flows: Vec<FlowStep>,
    /// The datapath actions OVS chose (`Datapath actions:`).
    pub datapath_actions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStep {
    pub bridge: String,
    pub table: u8,
    /// `None` when no flow matched.
    pub priority: Option<u16>,
    /// The flow's match, as OVS prints it, with port numbers named.
    #[serde(rename = "match")]
    pub matches: String,
    /// The flow's actions, VLAN rewrites spelled `mod_vlan_vid:N`.
    pub actions: Vec<String>,
    /// What OVS said about them ("forwarding to learned port", …).
    pub notes: Vec<String>,
}

/// Where a lost request was last seen, and what should have come next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLoss {
    /// `place device direction`, or "nowhere" when it never left.
    pub last_seen: String,
    /// The next device on the expected path.
    pub next_expected: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hop_json(encapsulation: &str) -> String {
        format!(
            r#"{{"number":1,"leg":"request","place":"compute1","namespace":"seed.compute1",
            "device":"eth3","direction":"out","vlan":null,"src_mac":"fa:16:3e:00:00:01",
            "dst_mac":"fa:16:3e:00:00:02","src_ip":"192.168.1.11","dst_ip":"192.168.1.12",
            "time_us":10,"bridge":null,"notes":[]{encapsulation}}}"#
        )
    }

    #[test]
    fn a_hop_without_a_tunnel_reads_and_writes_as_before() {
        // What an older daemon sends: no `encapsulation`.
        let hop: TraceHop = serde_json::from_str(&hop_json("")).unwrap();
        assert_eq!(hop.encapsulation, None);
        let written = serde_json::to_string(&hop).unwrap();
        assert!(!written.contains("encapsulation"), "{written}");
    }

    #[test]
    fn a_hop_in_a_tunnel_carries_its_kind_key_and_endpoints() {
        let tunnel = r#","encapsulation":{"kind":"vxlan","key":101,"src_ip":"172.16.0.11","dst_ip":"172.16.0.12"}"#;
        let hop: TraceHop = serde_json::from_str(&hop_json(tunnel)).unwrap();
        let e = hop.encapsulation.clone().unwrap();
        assert_eq!(e.to_string(), "vxlan 101, 172.16.0.11 → 172.16.0.12");
        let again: TraceHop = serde_json::from_str(&serde_json::to_string(&hop).unwrap()).unwrap();
        assert_eq!(again, hop);
        let keyless = TraceEncapsulation {
            kind: "gre".into(),
            key: None,
            ..e
        };
        assert_eq!(
            keyless.to_string(),
            "gre without key, 172.16.0.11 → 172.16.0.12"
        );
    }
}
