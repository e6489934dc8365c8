//! The seam between the engine and the host: everything a converge, an
//! audit or a `down` does to namespaces, links, OVS processes, OVSDB, flows
//! and iptables goes through [`Host`]. [`RealHost`] is the daemon's (the
//! drivers of [`crate::drivers`] and [`crate::ovs_process`]);
//! `ovslab_reconciler::testing::FakeHost` (feature `testing`) keeps the same
//! "actual state" types in memory, so the engine runs without root.
//!
//! The engine is generic over its host (`Engine<H = RealHost>`), not a
//! `dyn Host`: the set is closed, and the daemon's converge calls the
//! drivers as directly as before.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use ipnet::Ipv4Net;
use ovslab_iptables::{IpSet, Ruleset};
use ovslab_netlink::netns;
use ovslab_topology::metadata::MetadataSpec;
use ovslab_topology::plan::{FlowSpec, NamespaceSpec};

use crate::ReconcileError;
use crate::actual::{ActualNamespace, ActualSwitch};
use crate::agents::Agent;
use crate::diff::{LinkChange, OvsChange};
use crate::drivers::{flows, links, rulesets, switch};
use crate::ovs_process::{NodeOvs, OvsDaemon};

/// A flow read from a bridge: as the planner would have made it (with its
/// cookie) when it is one, and the host's own handle to delete it by.
pub type ReadFlow<F> = (Option<(FlowSpec, u64)>, F);

/// What the engine does to the host. Every change is idempotent on the
/// host's side or diffed by the engine first; reads return the types of
/// [`crate::actual`] that [`crate::diff`] compares.
pub trait Host: Send + Sync + 'static {
    /// Connections to one converge's namespaces (one per namespace, kept
    /// for the converge).
    type Links: Default + Send + Sync + 'static;
    /// A connection to one node's database.
    type Switch: Send + Sync;
    /// A connection to one bridge's OpenFlow socket.
    type Flows: Send + Sync;
    /// A flow as read, kept whole to be deleted exactly.
    type Flow: Display + Send + Sync;

    // Namespaces.

    /// The names of every named network namespace.
    fn list_namespaces(&self) -> std::io::Result<Vec<String>>;
    /// The inode of a mounted namespace; `None` when there is none (or only
    /// the plain file an interrupted create or delete leaves); an error
    /// when its path holds something else, or could not be looked at:
    /// never to be taken for a stale file and removed.
    fn namespace_inode(&self, name: &str) -> std::io::Result<Option<u64>>;
    /// Whether anything (a namespace or a plain file) is at its path.
    fn namespace_file_exists(&self, name: &str) -> bool;
    /// Blocking: runs on a blocking thread.
    fn create_namespace(&self, name: &str) -> Result<(), ReconcileError>;
    fn delete_namespace(&self, name: &str) -> Result<(), ReconcileError>;

    // Links, addresses, routes and sysctls.

    fn read_links(
        &self,
        links: &Self::Links,
        spec: &NamespaceSpec,
    ) -> impl Future<Output = Result<ActualNamespace, ReconcileError>> + Send;
    fn apply_link(
        &self,
        links: &Self::Links,
        namespace: &str,
        change: &LinkChange,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// How many namespaces' links are read or changed at once.
    fn links_at_once(&self) -> usize;
    /// The veths of the host's own namespace whose other end is elsewhere:
    /// `(ifindex, the other end's ifindex)`. A lab's link whose other end
    /// is one of these is never deleted.
    fn host_veth_ends(
        &self,
    ) -> impl Future<Output = Result<std::collections::BTreeSet<(u32, u32)>, ReconcileError>> + Send;

    // Each node's OVS processes.

    /// Kills a daemon that runs but does not answer; what it did.
    fn kill_hung(&self, node: &NodeOvs) -> impl Future<Output = Vec<String>> + Send;
    /// Stops the daemons that run in a namespace other than the node's as
    /// it is now (see [`NodeOvs::stop_elsewhere`]); what it did.
    fn stop_elsewhere(&self, node: &NodeOvs) -> impl Future<Output = Vec<String>> + Send;
    /// Whether the daemon died (rather than was never started or stopped).
    fn died(&self, node: &NodeOvs, daemon: OvsDaemon) -> bool;
    /// Starts `ovsdb-server` (its database made first) unless it runs.
    fn ensure_database(
        &self,
        node: &NodeOvs,
        schema: &Path,
    ) -> impl Future<Output = Result<Vec<OvsDaemon>, ReconcileError>> + Send;
    /// Starts `ovs-vswitchd` unless it runs.
    fn ensure_vswitchd(&self, node: &NodeOvs) -> Result<Vec<OvsDaemon>, ReconcileError>;
    /// Stops `ovs-vswitchd`; the pid it had, if it ran.
    fn stop_vswitchd(&self, node: &NodeOvs) -> impl Future<Output = Option<u32>> + Send;
    /// Stops both daemons and removes the node's run directory.
    fn stop_and_remove(&self, node: &NodeOvs) -> impl Future<Output = Vec<String>> + Send;
    /// Stops both daemons, keeping the run directory and its database (a
    /// node failed on purpose).
    fn stop_ovs(&self, node: &NodeOvs) -> impl Future<Output = Vec<String>> + Send;

    // Each node's database.

    fn connect_switch(
        &self,
        node: &NodeOvs,
    ) -> impl Future<Output = Result<Self::Switch, ReconcileError>> + Send;
    fn read_switch(
        &self,
        switch: &Self::Switch,
    ) -> impl Future<Output = Result<ActualSwitch, ReconcileError>> + Send;
    /// Commits `ops` in one transaction, and waits until vswitchd has
    /// applied it.
    fn apply_switch(
        &self,
        switch: &Self::Switch,
        lab: &str,
        ops: &[OvsChange],
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// Commits `ops` in one transaction, without waiting for vswitchd;
    /// returns the configuration number [`Host::wait_switch`] waits for.
    fn commit_switch(
        &self,
        switch: &Self::Switch,
        lab: &str,
        ops: &[OvsChange],
    ) -> impl Future<Output = Result<i64, ReconcileError>> + Send;
    /// Waits until vswitchd has applied configuration `cfg`.
    fn wait_switch(
        &self,
        switch: &Self::Switch,
        cfg: i64,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// Sets the root row's datapath options (made if missing); updates
    /// `actual`.
    fn ensure_root_config(
        &self,
        switch: &Self::Switch,
        actual: &mut ActualSwitch,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// Sets the root row's `ovs_version` and `system-id`; updates `actual`.
    fn ensure_root_identity(
        &self,
        switch: &Self::Switch,
        actual: &mut ActualSwitch,
        wanted: &crate::actual::RootIdentity,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// Waits until vswitchd applied the database.
    fn wait_applied(
        &self,
        switch: &Self::Switch,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
    fn still_connected(
        &self,
        switch: &Self::Switch,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;

    // Each bridge's flows.

    fn connect_flows(
        &self,
        node: &NodeOvs,
        bridge: &str,
    ) -> impl Future<Output = Result<Self::Flows, ReconcileError>> + Send;
    fn read_flows(
        &self,
        flows: &Self::Flows,
        bridge: &str,
        ports: &BTreeMap<String, u32>,
    ) -> impl Future<Output = Result<Vec<ReadFlow<Self::Flow>>, ReconcileError>> + Send;
    /// Deletes `delete` and adds `add` (with `cookie`) in one batch.
    fn apply_flows(
        &self,
        flows: &Self::Flows,
        bridge: &str,
        cookie: u64,
        ports: &BTreeMap<String, u32>,
        add: &[FlowSpec],
        delete: &[&Self::Flow],
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;

    // iptables.

    /// Makes the namespace's rules of ours `ruleset` (and its ipsets
    /// `sets`); one line per change.
    fn converge_ruleset(
        &self,
        namespace: &str,
        ruleset: Ruleset,
        sets: Option<Vec<IpSet>>,
    ) -> impl Future<Output = Result<Vec<String>, ReconcileError>> + Send;
    /// Has `node` resolve the tunnel endpoints `remotes` now, rather than
    /// on the first packet to each, and waits (a bounded while) until its
    /// vswitchd knows them all (see [`RealHost`]'s implementation).
    fn resolve_tunnel_endpoints(
        &self,
        node: &NodeOvs,
        remotes: Vec<std::net::Ipv4Addr>,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;

    /// Forgets what it knows of the namespaces starting with `prefix` (a
    /// lab going down).
    fn forget(&self, prefix: &str);

    /// Notified whenever an Open vSwitch daemon this host started exits
    /// (on purpose or not): the audits wake on it.
    fn exited(&self) -> &tokio::sync::Notify;

    /// Has the metadata service answer as `spec` says (a listener in its
    /// namespace); a line when it made one.
    fn serve_metadata(&self, spec: &MetadataSpec) -> Result<Option<String>, ReconcileError>;
    /// Stops the metadata listeners in namespaces starting with `prefix`
    /// but not in `keep`.
    fn stop_metadata(&self, prefix: &str, keep: &BTreeSet<String>) -> Vec<String>;

    /// Whether the agent (dnsmasq, a DHCP client) runs.
    fn agent_running(&self, agent: &Agent) -> bool;
    /// Whether it died: started once, gone now.
    fn agent_died(&self, agent: &Agent) -> bool;
    /// How long ago ovslabd last started it again after it died, if its
    /// last start was such a restart (the agent's `restarted` file).
    fn agent_restarted_ago(&self, agent: &Agent) -> Option<std::time::Duration>;
    /// Writes the agent's files where they differ; the names written.
    fn write_agent_files(
        &self,
        agent: &Agent,
        files: &[(&str, String)],
    ) -> Result<Vec<String>, ReconcileError>;
    /// Starts the agent (it does not run).
    fn start_agent(&self, agent: &Agent)
    -> impl Future<Output = Result<(), ReconcileError>> + Send;
    /// Signals the agent, if it runs; whether it did.
    fn signal_agent(&self, agent: &Agent, signal: nix::sys::signal::Signal) -> bool;
    /// Stops the agent that runs from `dir` and removes the directory.
    fn stop_agent(&self, dir: &Path) -> impl Future<Output = Vec<String>> + Send;
    /// The IPv4 addresses link `link` of `namespace` holds.
    fn link_addresses(
        &self,
        namespace: &str,
        link: &str,
    ) -> impl Future<Output = Result<Vec<Ipv4Net>, ReconcileError>> + Send;
}

/// How long a converge waits for a node to resolve its tunnel endpoints.
const RESOLVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an endpoint may stay unresolved before the kernel is made to
/// ARP for it again (then three times as long between tries).
const ASK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The discard service (RFC 863): what the datagrams that make a node
/// resolve its tunnel endpoints are sent to.
const DISCARD_PORT: u16 = 9;

/// The host itself: netlink, the OVS processes, OVSDB, OpenFlow and
/// iptables, through the drivers.
#[derive(Debug, Default)]
pub struct RealHost {
    /// Rulesets known to be as wanted, not read again while unchanged.
    rulesets: Arc<rulesets::Verified>,
    /// The metadata service's listeners, in the labs' namespaces.
    metadata: ovslab_metadata::Servers,
}

impl Host for RealHost {
    type Links = links::Handles;
    type Switch = switch::SwitchClient;
    type Flows = flows::FlowClient;
    type Flow = flows::PresentFlow;

    fn list_namespaces(&self) -> std::io::Result<Vec<String>> {
        netns::list()
    }

    fn namespace_inode(&self, name: &str) -> std::io::Result<Option<u64>> {
        netns::mounted_inode(name)
    }

    fn namespace_file_exists(&self, name: &str) -> bool {
        netns::path(name).exists()
    }

    fn create_namespace(&self, name: &str) -> Result<(), ReconcileError> {
        netns::create(name).map_err(ReconcileError::netlink)
    }

    fn delete_namespace(&self, name: &str) -> Result<(), ReconcileError> {
        netns::delete(name).map_err(ReconcileError::netlink)
    }

    async fn read_links(
        &self,
        links: &links::Handles,
        spec: &NamespaceSpec,
    ) -> Result<ActualNamespace, ReconcileError> {
        links::read(links, spec).await
    }

    async fn apply_link(
        &self,
        links: &links::Handles,
        namespace: &str,
        change: &LinkChange,
    ) -> Result<(), ReconcileError> {
        links::apply(links, namespace, change).await
    }

    fn links_at_once(&self) -> usize {
        // Every namespace read holds a netlink connection.
        links::Handles::KEPT / 2
    }

    async fn host_veth_ends(
        &self,
    ) -> Result<std::collections::BTreeSet<(u32, u32)>, ReconcileError> {
        links::host_veth_ends().await
    }

    async fn kill_hung(&self, node: &NodeOvs) -> Vec<String> {
        node.kill_hung().await
    }

    async fn stop_elsewhere(&self, node: &NodeOvs) -> Vec<String> {
        node.stop_elsewhere().await
    }

    fn died(&self, node: &NodeOvs, daemon: OvsDaemon) -> bool {
        node.died(daemon)
    }

    async fn ensure_database(
        &self,
        node: &NodeOvs,
        schema: &Path,
    ) -> Result<Vec<OvsDaemon>, ReconcileError> {
        node.ensure_database(schema)
            .await
            .map_err(ReconcileError::ovs_process)
    }

    fn ensure_vswitchd(&self, node: &NodeOvs) -> Result<Vec<OvsDaemon>, ReconcileError> {
        node.ensure_vswitchd().map_err(ReconcileError::ovs_process)
    }

    async fn stop_vswitchd(&self, node: &NodeOvs) -> Option<u32> {
        node.stop_vswitchd().await
    }

    async fn stop_and_remove(&self, node: &NodeOvs) -> Vec<String> {
        node.stop_and_remove().await
    }

    async fn stop_ovs(&self, node: &NodeOvs) -> Vec<String> {
        node.stop().await
    }

    async fn connect_switch(&self, node: &NodeOvs) -> Result<switch::SwitchClient, ReconcileError> {
        switch::connect(node).await
    }

    async fn read_switch(
        &self,
        client: &switch::SwitchClient,
    ) -> Result<ActualSwitch, ReconcileError> {
        switch::read(client).await
    }

    async fn apply_switch(
        &self,
        client: &switch::SwitchClient,
        lab: &str,
        ops: &[OvsChange],
    ) -> Result<(), ReconcileError> {
        switch::apply(client, lab, ops).await
    }

    async fn commit_switch(
        &self,
        client: &switch::SwitchClient,
        lab: &str,
        ops: &[OvsChange],
    ) -> Result<i64, ReconcileError> {
        switch::commit(client, lab, ops).await
    }

    async fn wait_switch(
        &self,
        client: &switch::SwitchClient,
        cfg: i64,
    ) -> Result<(), ReconcileError> {
        switch::wait(client, cfg).await
    }

    async fn ensure_root_config(
        &self,
        client: &switch::SwitchClient,
        actual: &mut ActualSwitch,
    ) -> Result<(), ReconcileError> {
        switch::ensure_root_config(client, actual).await
    }

    async fn ensure_root_identity(
        &self,
        client: &switch::SwitchClient,
        actual: &mut ActualSwitch,
        wanted: &crate::actual::RootIdentity,
    ) -> Result<(), ReconcileError> {
        switch::ensure_root_identity(client, actual, wanted).await
    }

    async fn wait_applied(&self, client: &switch::SwitchClient) -> Result<(), ReconcileError> {
        switch::wait_applied(client).await
    }

    async fn still_connected(&self, client: &switch::SwitchClient) -> Result<(), ReconcileError> {
        switch::still_connected(client).await
    }

    async fn connect_flows(
        &self,
        node: &NodeOvs,
        bridge: &str,
    ) -> Result<flows::FlowClient, ReconcileError> {
        flows::connect(node, bridge).await
    }

    async fn read_flows(
        &self,
        client: &flows::FlowClient,
        bridge: &str,
        ports: &BTreeMap<String, u32>,
    ) -> Result<Vec<ReadFlow<flows::PresentFlow>>, ReconcileError> {
        flows::read(client, bridge, ports).await
    }

    async fn apply_flows(
        &self,
        client: &flows::FlowClient,
        bridge: &str,
        cookie: u64,
        ports: &BTreeMap<String, u32>,
        add: &[FlowSpec],
        delete: &[&flows::PresentFlow],
    ) -> Result<(), ReconcileError> {
        flows::apply(client, bridge, cookie, ports, add, delete).await
    }

    async fn converge_ruleset(
        &self,
        namespace: &str,
        ruleset: Ruleset,
        sets: Option<Vec<IpSet>>,
    ) -> Result<Vec<String>, ReconcileError> {
        rulesets::converge(namespace, ruleset, sets, self.rulesets.clone()).await
    }

    /// The userspace datapath resolves a tunnel's remote endpoint with its
    /// own ARP when a packet first needs it, and drops that packet
    /// meanwhile (the kernel would queue it). A datagram from the node's
    /// kernel to each endpoint's discard port makes the kernel ARP for it
    /// through br-overlay, and vswitchd learns the answer on the way
    /// (`tnl/neigh/show`), so a lab's first probes are not lost. The
    /// remote kernel answers "port unreachable".
    ///
    /// Then it asks vswitchd (`tnl/neigh/show`) until every endpoint is
    /// listed, for at most `RESOLVE_DEADLINE`; an endpoint missing after
    /// `ASK_AGAIN_AFTER` is deleted from the kernel's neighbour table and
    /// sent to again, so that the kernel ARPs for it (docs/design.md,
    /// "Tunnels use OVS's userspace tunneling"). An endpoint still
    /// unresolved at the deadline is left to the first packet (and the
    /// audit), not held against the converge.
    async fn resolve_tunnel_endpoints(
        &self,
        node: &NodeOvs,
        remotes: Vec<std::net::Ipv4Addr>,
    ) -> Result<(), ReconcileError> {
        send_to_discard(node, &remotes).await?;
        let Ok(socket) = ovslab_unixctl::vswitchd_socket(&node.rundir) else {
            return Ok(());
        };
        let start = tokio::time::Instant::now();
        let until = start + RESOLVE_DEADLINE;
        let mut nudge = start + ASK_AGAIN_AFTER;
        while tokio::time::Instant::now() < until {
            let known =
                ovslab_unixctl::call_async(&socket, "tnl/neigh/show", &[], RESOLVE_DEADLINE)
                    .await
                    .unwrap_or_default();
            let listed: Vec<&str> = known
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let missing: Vec<std::net::Ipv4Addr> = remotes
                .iter()
                .filter(|r| !listed.contains(&r.to_string().as_str()))
                .copied()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= nudge {
                // The kernel sends no ARP request for a neighbour it
                // learned from that neighbour's own request (nodes that
                // resolve each other at once do): it uses the entry and
                // checks it only 5 s later, so no reply passes vswitchd to
                // be snooped. Forgotten, the next datagram asks again.
                tracing::debug!(node = node.node, ?missing, "asking the kernel to ARP again");
                let forget = async {
                    if let Ok(nl) = ovslab_netlink::Netlink::connect(&node.namespace).await {
                        for remote in &missing {
                            let _ = nl
                                .forget_neighbour(ovslab_topology::naming::BR_OVERLAY, *remote)
                                .await;
                        }
                    }
                };
                // Within the resolution's own deadline: the kernel holds
                // its lock for seconds while a large lab goes.
                let _ = tokio::time::timeout_at(until, forget).await;
                send_to_discard(node, &missing).await?;
                nudge = tokio::time::Instant::now() + ASK_AGAIN_AFTER * 3;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::debug!(
            node = node.node,
            "tunnel endpoints not all resolved in time"
        );
        Ok(())
    }

    fn forget(&self, prefix: &str) {
        self.rulesets.forget(prefix);
        self.metadata.retain(prefix, &Default::default());
    }

    fn serve_metadata(&self, spec: &MetadataSpec) -> Result<Option<String>, ReconcileError> {
        self.metadata
            .ensure(spec)
            .map_err(|e| ReconcileError::io(Path::new(&spec.namespace), e))
    }

    fn stop_metadata(&self, prefix: &str, keep: &BTreeSet<String>) -> Vec<String> {
        self.metadata.retain(prefix, keep)
    }

    fn agent_running(&self, agent: &Agent) -> bool {
        agent.running()
    }

    fn agent_died(&self, agent: &Agent) -> bool {
        agent.died()
    }

    fn agent_restarted_ago(&self, agent: &Agent) -> Option<std::time::Duration> {
        agent.restarted_ago()
    }

    fn write_agent_files(
        &self,
        agent: &Agent,
        files: &[(&str, String)],
    ) -> Result<Vec<String>, ReconcileError> {
        Ok(agent.write_files(files)?)
    }

    async fn start_agent(&self, agent: &Agent) -> Result<(), ReconcileError> {
        Ok(agent.start().await?)
    }

    fn signal_agent(&self, agent: &Agent, signal: nix::sys::signal::Signal) -> bool {
        agent.signal(signal)
    }

    async fn stop_agent(&self, dir: &Path) -> Vec<String> {
        crate::agents::stop_in(dir).await
    }

    async fn link_addresses(
        &self,
        namespace: &str,
        link: &str,
    ) -> Result<Vec<Ipv4Net>, ReconcileError> {
        let read = async {
            let nl = ovslab_netlink::Netlink::connect(namespace).await?;
            Ok::<_, ReconcileError>(nl.link(link).await?.addresses)
        };
        tokio::time::timeout(links::DEADLINE, read)
            .await
            .map_err(|_| {
                ReconcileError::Netlink(ovslab_netlink::NetlinkError::Timeout {
                    namespace: namespace.to_string(),
                    what: format!("read the addresses of {link}"),
                    after: links::DEADLINE,
                })
            })?
    }

    fn exited(&self) -> &tokio::sync::Notify {
        // The reaper of each child notifies the process-wide one: the
        // daemons outlive any one `NodeOvs` value.
        crate::ovs_process::exited()
    }
}

/// An empty datagram from node's namespace to each remote's discard port:
/// the kernel ARPs (through br-overlay) for a remote it does not know, and
/// vswitchd snoops the answer. The remote answers "port unreachable".
async fn send_to_discard(
    node: &NodeOvs,
    remotes: &[std::net::Ipv4Addr],
) -> Result<(), ReconcileError> {
    let ns = node.namespace.clone();
    let sent = remotes.to_vec();
    tokio::task::spawn_blocking(move || {
        netns::run_in(&ns, || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for remote in sent {
                // Best effort: an endpoint not answering is the
                // audit's business, not this one's.
                let _ = socket.send_to(&[], (remote, DISCARD_PORT));
            }
            Ok(())
        })
    })
    .await
    .map_err(|source| ReconcileError::Task {
        of: format!("namespace {}", node.namespace),
        what: "tunnel endpoint resolution",
        source,
    })?
    .map_err(ReconcileError::netlink)
}
