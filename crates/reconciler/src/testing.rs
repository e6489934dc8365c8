//! An in-memory [`Host`] for tests without root (feature `testing`): it
//! keeps each namespace's links as an [`ActualNamespace`], each node's
//! database as an [`ActualSwitch`], its bridges' flows and each namespace's
//! ruleset, applies the engine's changes to them as the host would, records
//! every call, and fails a step when told to. Tests break it behind the
//! engine's back (a namespace, a port, the flows, the rules, a daemon) and
//! check that a converge or an audit puts it back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ovslab_iptables::{IpSet, Ruleset};
use ovslab_topology::plan::{
    FlowAction, FlowSpec, MacMatch, MoveField, NamespaceSpec, OvsPort, VlanMatch,
};

use crate::ReconcileError;
use crate::actual::{ActualBridge, ActualLink, ActualNamespace, ActualPort, ActualSwitch};
use crate::agents::{Agent, AgentKind, RESTARTED_FILE};
use crate::diff::{DATAPATH_TYPE, FAIL_MODE, LAB_MARK, LinkChange, OvsChange, PROTOCOLS};
use crate::drivers::flows::describe;
use crate::host::{Host, ReadFlow};
use crate::ovs_process::{NodeOvs, OvsDaemon};

/// What the engine asked of the host, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    CreateNamespace,
    DeleteNamespace,
    ReadLinks,
    ApplyLink,
    EnsureDatabase,
    EnsureVswitchd,
    StopVswitchd,
    StopAndRemove,
    ConnectSwitch,
    ReadSwitch,
    ApplySwitch,
    ReadFlows,
    ApplyFlows,
    ConvergeRuleset,
    ResolveTunnelEndpoints,
    StartAgent,
    StopAgent,
    SignalAgent,
    ServeMetadata,
}

/// One call: its kind and what it was about (a namespace, a node's
/// namespace, `node/bridge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub step: Step,
    pub target: String,
}

/// One namespace as the fake holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNamespace {
    pub inode: u64,
    pub links: ActualNamespace,
    pub ruleset: Option<Ruleset>,
    pub ipsets: Option<Vec<IpSet>>,
}

/// One node's Open vSwitch as the fake holds it. The database outlives its
/// server (it is a file); the flows live in `ovs-vswitchd` and die with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNode {
    pub ovsdb_server: bool,
    pub ovs_vswitchd: bool,
    /// Killed behind the engine's back (its pidfile left behind).
    pub died: Vec<&'static str>,
    pub switch: ActualSwitch,
    /// `(spec, cookie)` by bridge.
    pub flows: BTreeMap<String, Vec<(FlowSpec, u64)>>,
}

/// An agent (dnsmasq, a DHCP client) as the fake holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeAgent {
    pub namespace: String,
    pub running: bool,
    /// Killed behind the engine's back.
    pub died: bool,
    pub files: BTreeMap<String, String>,
    /// Signals it was sent, by name (`SIGHUP`).
    pub signals: Vec<String>,
    /// How many times it was started.
    pub starts: u32,
    /// When it was last started.
    pub started_at: Option<std::time::Instant>,
}

/// Everything the fake holds.
#[derive(Debug, Default)]
pub struct State {
    /// Agents by directory.
    pub agents: BTreeMap<std::path::PathBuf, FakeAgent>,
    /// The metadata service's listeners, by namespace.
    pub metadata: BTreeMap<String, ovslab_topology::metadata::MetadataSpec>,
    /// What each DHCP client gets when it starts: `(namespace, link)` →
    /// address. A client without an entry never gets a lease.
    pub leases: BTreeMap<(String, String), ipnet::Ipv4Net>,
    /// By name.
    pub namespaces: BTreeMap<String, FakeNamespace>,
    /// By the node's namespace.
    pub nodes: BTreeMap<String, FakeNode>,
    pub calls: Vec<Call>,
    /// Steps that fail the next times they are asked for, with how many
    /// more times.
    failing: BTreeMap<Step, u32>,
    /// Calls of a step on one target that always fail.
    failing_on: BTreeSet<(Step, String)>,
    /// veth ends by (namespace, name): the other end.
    peers: BTreeMap<(String, String), (String, String)>,
    /// The host's veths whose other end is in a lab's namespace:
    /// `(ifindex, the other end's ifindex)`.
    pub host_veth_ends: BTreeSet<(u32, u32)>,
    /// Inodes, ifindexes, uuids, ofports, pids.
    counter: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Records a call; fails it if it was told to.
    fn call(&mut self, step: Step, target: &str) -> Result<(), ReconcileError> {
        self.calls.push(Call {
            step,
            target: target.to_string(),
        });
        let injected = || ReconcileError::Io {
            path: format!("fake host: {step:?} {target}"),
            source: std::io::Error::other("failure injected by the test"),
        };
        if self.failing_on.contains(&(step, target.to_string())) {
            return Err(injected());
        }
        if let Some(left) = self.failing.get_mut(&step) {
            *left -= 1;
            if *left == 0 {
                self.failing.remove(&step);
            }
            return Err(injected());
        }
        Ok(())
    }

    fn namespace(&mut self, name: &str) -> Result<&mut FakeNamespace, ReconcileError> {
        self.namespaces.get_mut(name).ok_or_else(|| missing(name))
    }

    fn node(&mut self, namespace: &str) -> Result<&mut FakeNode, ReconcileError> {
        self.nodes
            .get_mut(namespace)
            .ok_or_else(|| missing(namespace))
    }

    /// Deletes a link and, for a veth, its other end, with the routes
    /// through each (as the kernel does); ports of a deleted bridge lose
    /// their master.
    fn delete_link(&mut self, namespace: &str, name: &str) {
        fn delete(ns: &mut FakeNamespace, name: &str) {
            let addresses = ns.links.link(name).map(|l| l.addresses.clone());
            let addresses = addresses.unwrap_or_default();
            ns.links
                .routes
                .retain(|r| !addresses.iter().any(|a| a.contains(&r.gateway)));
            ns.links.links.retain(|l| l.name != name);
            for l in &mut ns.links.links {
                if l.master.as_deref() == Some(name) {
                    l.master = None;
                }
            }
        }
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            delete(ns, name);
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(peer) = self.peers.remove(&key) {
            self.peers.remove(&peer);
            if let Some(ns) = self.namespaces.get_mut(&peer.0) {
                delete(ns, &peer.1);
            }
        }
    }

    fn add_link(&mut self, namespace: &str, name: &str, kind: &str) -> Result<(), ReconcileError> {
        let n = self.next();
        let ns = self.namespace(namespace)?;
        if ns.links.link(name).is_some() {
            return Err(ReconcileError::Io {
                path: format!("{namespace}: {name}"),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        ns.links.links.push(ActualLink {
            name: name.to_string(),
            ifindex: n as u32,
            kind: kind.to_string(),
            master: None,
            up: false,
            promisc: false,
            mac: Some([2, 0, 0, 0, (n >> 8) as u8, n as u8]),
            addresses: Vec::new(),
            tx_checksum: true,
            mtu: 1500,
            ipv6_addr_gen_none: false,
            peer_elsewhere: None,
        });
        Ok(())
    }

    fn link(&mut self, namespace: &str, name: &str) -> Result<&mut ActualLink, ReconcileError> {
        self.namespace(namespace)?
            .links
            .links
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| missing(&format!("{namespace}: {name}")))
    }

    fn apply_link(&mut self, namespace: &str, change: &LinkChange) -> Result<(), ReconcileError> {
        match change {
            LinkChange::WriteSysctl { key, value } => {
                self.namespace(namespace)?
                    .links
                    .sysctls
                    .insert(key.clone(), value.clone());
            }
            LinkChange::DeleteLink { name } => self.delete_link(namespace, name),
            LinkChange::CreateBridge { name } => self.add_link(namespace, name, "bridge")?,
            LinkChange::CreateVeth {
                name,
                peer,
                peer_namespace,
            } => {
                // Both ends or neither, as the kernel makes a veth.
                if self.namespace(peer_namespace)?.links.link(peer).is_some() {
                    return Err(ReconcileError::Io {
                        path: format!("{peer_namespace}: {peer}"),
                        source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                    });
                }
                self.add_link(namespace, name, "veth")?;
                self.add_link(peer_namespace, peer, "veth")?;
                let (a, b) = (
                    (namespace.to_string(), name.clone()),
                    (peer_namespace.clone(), peer.clone()),
                );
                self.peers.insert(a.clone(), b.clone());
                self.peers.insert(b, a);
            }
            LinkChange::SetMac { name, mac } => self.link(namespace, name)?.mac = Some(*mac),
            LinkChange::SetMtu { name, mtu } => self.link(namespace, name)?.mtu = *mtu,
            LinkChange::SetIpv6AddrGenNone { name } => {
                self.link(namespace, name)?.ipv6_addr_gen_none = true
            }
            LinkChange::SetMaster { name, master } => {
                self.link(namespace, name)?.master = master.clone()
            }
            LinkChange::SetTxChecksum { name, on } => self.link(namespace, name)?.tx_checksum = *on,
            LinkChange::DelAddress { name, address } => {
                self.link(namespace, name)?
                    .addresses
                    .retain(|a| a != address);
            }
            LinkChange::AddAddress { name, address } => {
                self.link(namespace, name)?.addresses.push(*address)
            }
            LinkChange::SetUp { name } => self.link(namespace, name)?.up = true,
            LinkChange::SetDown { name } => self.link(namespace, name)?.up = false,
            LinkChange::SetPromisc { name } => self.link(namespace, name)?.promisc = true,
            LinkChange::AddRoute { route } => {
                self.namespace(namespace)?.links.routes.push(route.clone())
            }
        }
        Ok(())
    }

    fn port(&mut self, port: &OvsPort) -> ActualPort {
        ActualPort {
            uuid: format!("port-{}", self.next()),
            interface_uuid: format!("interface-{}", self.next()),
            name: port.name.clone(),
            tag: port.tag,
            kind: port.interface_type().to_string(),
            options: port.interface_options(),
            interface_external_ids: port.interface_external_ids.clone(),
            port_other_config: port.port_other_config.clone(),
            ofport: Some(self.next() as i64),
        }
    }

    fn apply_switch(
        &mut self,
        node: &str,
        lab: &str,
        ops: &[OvsChange],
    ) -> Result<(), ReconcileError> {
        // One transaction: worked on a copy, kept only whole.
        let mut switch = self.node(node)?.switch.clone();
        for op in ops {
            match op {
                OvsChange::EnsureRoot => {
                    switch.root_uuid = Some(format!("root-{}", self.next()));
                }
                OvsChange::AddBridge { bridge } => {
                    let internal = OvsPort {
                        name: bridge.name.clone(),
                        tag: None,
                        patch_peer: None,
                        tunnel: None,
                        internal: true,
                        interface_external_ids: BTreeMap::new(),
                        port_other_config: BTreeMap::new(),
                    };
                    let mut ports = vec![self.port(&internal)];
                    ports.extend(bridge.ports.iter().map(|p| self.port(p)));
                    let mut new = ActualBridge {
                        uuid: format!("bridge-{}", self.next()),
                        name: bridge.name.clone(),
                        ports,
                        ..ActualBridge::default()
                    };
                    set_bridge(&mut new, lab, bridge.standalone);
                    switch.bridges.push(new);
                }
                OvsChange::UpdateBridge {
                    uuid, standalone, ..
                } => {
                    let b = bridge_mut(&mut switch, uuid)?;
                    set_bridge(b, lab, *standalone);
                }
                OvsChange::DeleteBridge { uuid, .. } => switch.bridges.retain(|b| &b.uuid != uuid),
                OvsChange::AddPort {
                    bridge_uuid, port, ..
                } => {
                    let port = self.port(port);
                    bridge_mut(&mut switch, bridge_uuid)?.ports.push(port);
                }
                OvsChange::UpdatePort {
                    port_uuid, port, ..
                } => {
                    let mut fresh = self.port(port);
                    let current = switch
                        .bridges
                        .iter_mut()
                        .flat_map(|b| &mut b.ports)
                        .find(|p| &p.uuid == port_uuid)
                        .ok_or_else(|| missing(port_uuid))?;
                    fresh.uuid = current.uuid.clone();
                    fresh.interface_uuid = current.interface_uuid.clone();
                    fresh.ofport = current.ofport;
                    *current = fresh;
                }
                OvsChange::DeletePort {
                    bridge_uuid,
                    port_uuid,
                    ..
                } => bridge_mut(&mut switch, bridge_uuid)?
                    .ports
                    .retain(|p| &p.uuid != port_uuid),
            }
        }
        self.node(node)?.switch = switch;
        Ok(())
    }
}

fn set_bridge(bridge: &mut ActualBridge, lab: &str, standalone: bool) {
    bridge.datapath_type = DATAPATH_TYPE.into();
    bridge.fail_mode = (!standalone).then(|| FAIL_MODE.into());
    bridge.protocols = PROTOCOLS.map(String::from).to_vec();
    bridge.external_ids.insert(LAB_MARK.into(), lab.into());
}

fn bridge_mut<'a>(
    switch: &'a mut ActualSwitch,
    uuid: &str,
) -> Result<&'a mut ActualBridge, ReconcileError> {
    switch
        .bridges
        .iter_mut()
        .find(|b| b.uuid == uuid)
        .ok_or_else(|| missing(uuid))
}

fn missing(what: &str) -> ReconcileError {
    ReconcileError::Io {
        path: what.to_string(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// A flow as the fake holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFlow {
    pub spec: FlowSpec,
    pub cookie: u64,
}

impl fmt::Display for FakeFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", describe(&self.spec))
    }
}

/// The in-memory host (see the module's documentation).
#[derive(Debug, Default)]
pub struct FakeHost {
    state: Mutex<State>,
    exited: tokio::sync::Notify,
    /// Link reads wait while a test holds it (see
    /// [`FakeHost::hold_link_reads`]).
    reads: tokio::sync::RwLock<()>,
    /// Waits for the vswitchd of the node named wait here while a test
    /// holds it (see [`FakeHost::hold_switch_waits`]).
    switch_waits: Mutex<Option<(String, Arc<tokio::sync::RwLock<()>>)>>,
}

impl FakeHost {
    /// Everything the fake holds, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds every link read until the guard is dropped: a converge
    /// waits there, with its lab busy.
    pub async fn hold_link_reads(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.reads.write().await
    }

    /// Holds every wait for the vswitchd of node namespace `node` (that
    /// it applied a configuration) until the guard is dropped: as a
    /// vswitchd still in its start-up would.
    pub async fn hold_switch_waits(&self, node: &str) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        let lock = Arc::new(tokio::sync::RwLock::new(()));
        let guard = lock.clone().write_owned().await;
        *self.switch_waits.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((node.to_string(), lock));
        guard
    }

    /// Makes the next call of `step` fail.
    pub fn fail_once(&self, step: Step) {
        self.fail_times(step, 1);
    }

    /// Makes the next `times` calls of `step` fail.
    pub fn fail_times(&self, step: Step, times: u32) {
        *self.state().failing.entry(step).or_default() += times;
    }

    /// Makes every call of `step` fail until [`FakeHost::stop_failing`]: a
    /// converge that fails is tried once more (after looking for hung
    /// daemons), and nodes are converged in parallel, so an `up` surely
    /// fails at `step` only when every call does.
    pub fn fail_always(&self, step: Step) {
        self.state().failing.insert(step, u32::MAX);
    }

    /// Makes every call of `step` on `target` (an agent's `what`, a
    /// namespace, …) fail until [`FakeHost::stop_failing`].
    pub fn fail_on(&self, step: Step, target: &str) {
        self.state().failing_on.insert((step, target.to_string()));
    }

    /// Calls fail no more.
    pub fn stop_failing(&self) {
        let mut state = self.state();
        state.failing.clear();
        state.failing_on.clear();
    }

    /// The calls so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// Whether the fake holds nothing: no namespace, no node.
    pub fn is_empty(&self) -> bool {
        let state = self.state();
        state.namespaces.is_empty() && state.nodes.is_empty() && state.agents.is_empty()
    }

    /// Deletes a namespace behind the engine's back (its veths' other ends
    /// go with it).
    pub fn delete_namespace_behind(&self, name: &str) {
        let mut state = self.state();
        let links: Vec<String> = state
            .namespaces
            .get(name)
            .map(|ns| ns.links.links.iter().map(|l| l.name.clone()).collect())
            .unwrap_or_default();
        for link in links {
            state.delete_link(name, &link);
        }
        state.namespaces.remove(name);
    }

    /// Deletes a namespace's name behind the engine's back while a process
    /// keeps the namespace alive (`ip netns del` of a node's namespace,
    /// its Open vSwitch running in it): the other ends of its veths stay
    /// where they are, their peers out of sight.
    pub fn delete_namespace_held_behind(&self, name: &str) {
        let mut state = self.state();
        state.namespaces.remove(name);
        state
            .peers
            .retain(|(here, _), (there, _)| here != name && there != name);
    }

    /// Adds a veth end behind the engine's back whose other end is in a
    /// namespace that is not the lab's: the host's own (`in_host`) or
    /// another.
    pub fn add_veth_to_elsewhere_behind(&self, namespace: &str, name: &str, in_host: bool) {
        let mut state = self.state();
        let (index, peer) = (state.next() as u32, state.next() as u32);
        if in_host {
            state.host_veth_ends.insert((peer, index));
        }
        if let Some(ns) = state.namespaces.get_mut(namespace) {
            ns.links.links.push(ActualLink {
                name: name.to_string(),
                ifindex: index,
                kind: "veth".to_string(),
                peer_elsewhere: Some(peer),
                ..Default::default()
            });
        }
    }

    /// Deletes a port from a node's database behind the engine's back.
    pub fn delete_port_behind(&self, node_namespace: &str, bridge: &str, port: &str) {
        if let Some(node) = self.state().nodes.get_mut(node_namespace) {
            for b in node.switch.bridges.iter_mut().filter(|b| b.name == bridge) {
                b.ports.retain(|p| p.name != port);
            }
        }
    }

    /// Deletes every flow of a bridge behind the engine's back.
    pub fn delete_flows_behind(&self, node_namespace: &str, bridge: &str) {
        if let Some(node) = self.state().nodes.get_mut(node_namespace) {
            node.flows.remove(bridge);
        }
    }

    /// Empties a namespace's rules behind the engine's back.
    pub fn flush_rules_behind(&self, namespace: &str) {
        if let Some(ns) = self.state().namespaces.get_mut(namespace) {
            ns.ruleset = Some(Ruleset::new());
        }
    }

    /// Kills a node's daemon behind the engine's back (its flows die with
    /// `ovs-vswitchd`).
    pub fn kill_behind(&self, node_namespace: &str, daemon: OvsDaemon) {
        if let Some(node) = self.state().nodes.get_mut(node_namespace) {
            match daemon {
                OvsDaemon::OvsdbServer => node.ovsdb_server = false,
                OvsDaemon::OvsVswitchd => {
                    node.ovs_vswitchd = false;
                    node.flows.clear();
                }
            }
            node.died.push(daemon.program());
        }
        self.exited.notify_one();
    }
}

impl Host for FakeHost {
    type Links = ();
    type Switch = String;
    type Flows = (String, String);
    type Flow = FakeFlow;

    fn list_namespaces(&self) -> std::io::Result<Vec<String>> {
        Ok(self.state().namespaces.keys().cloned().collect())
    }

    fn namespace_inode(&self, name: &str) -> std::io::Result<Option<u64>> {
        Ok(self.state().namespaces.get(name).map(|ns| ns.inode))
    }

    fn namespace_file_exists(&self, name: &str) -> bool {
        self.state().namespaces.contains_key(name)
    }

    fn create_namespace(&self, name: &str) -> Result<(), ReconcileError> {
        let mut state = self.state();
        state.call(Step::CreateNamespace, name)?;
        if state.namespaces.contains_key(name) {
            return Err(ReconcileError::Io {
                path: name.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        let inode = state.next();
        state.namespaces.insert(
            name.to_string(),
            FakeNamespace {
                inode,
                ..FakeNamespace::default()
            },
        );
        Ok(())
    }

    fn delete_namespace(&self, name: &str) -> Result<(), ReconcileError> {
        self.state().call(Step::DeleteNamespace, name)?;
        self.delete_namespace_behind(name);
        Ok(())
    }

    async fn read_links(
        &self,
        _links: &(),
        spec: &NamespaceSpec,
    ) -> Result<ActualNamespace, ReconcileError> {
        drop(self.reads.read().await);
        let mut state = self.state();
        state.call(Step::ReadLinks, &spec.name)?;
        Ok(state.namespace(&spec.name)?.links.clone())
    }

    async fn apply_link(
        &self,
        _links: &(),
        namespace: &str,
        change: &LinkChange,
    ) -> Result<(), ReconcileError> {
        let mut state = self.state();
        state.call(Step::ApplyLink, namespace)?;
        state.apply_link(namespace, change)
    }

    fn links_at_once(&self) -> usize {
        4
    }

    async fn host_veth_ends(&self) -> Result<BTreeSet<(u32, u32)>, ReconcileError> {
        Ok(self.state().host_veth_ends.clone())
    }

    async fn kill_hung(&self, _node: &NodeOvs) -> Vec<String> {
        Vec::new()
    }

    async fn stop_elsewhere(&self, _node: &NodeOvs) -> Vec<String> {
        Vec::new()
    }

    fn died(&self, node: &NodeOvs, daemon: OvsDaemon) -> bool {
        self.state()
            .nodes
            .get(&node.namespace)
            .is_some_and(|n| n.died.contains(&daemon.program()))
    }

    async fn ensure_database(
        &self,
        node: &NodeOvs,
        _schema: &Path,
    ) -> Result<Vec<OvsDaemon>, ReconcileError> {
        let mut state = self.state();
        state.call(Step::EnsureDatabase, &node.namespace)?;
        // The engine finds a lab's nodes by their run directories.
        std::fs::create_dir_all(&node.rundir).map_err(|e| ReconcileError::io(&node.rundir, e))?;
        let n = state.nodes.entry(node.namespace.clone()).or_default();
        if n.ovsdb_server {
            return Ok(Vec::new());
        }
        n.ovsdb_server = true;
        n.died.retain(|d| *d != OvsDaemon::OvsdbServer.program());
        Ok(vec![OvsDaemon::OvsdbServer])
    }

    fn ensure_vswitchd(&self, node: &NodeOvs) -> Result<Vec<OvsDaemon>, ReconcileError> {
        let mut state = self.state();
        state.call(Step::EnsureVswitchd, &node.namespace)?;
        let n = state.node(&node.namespace)?;
        if n.ovs_vswitchd {
            return Ok(Vec::new());
        }
        // A real vswitchd reads the datapath options once, when it starts.
        if !crate::drivers::switch::missing_root_config(&n.switch).is_empty() {
            return Err(missing(&format!(
                "{}: datapath options, before ovs-vswitchd starts",
                node.namespace
            )));
        }
        n.ovs_vswitchd = true;
        n.died.retain(|d| *d != OvsDaemon::OvsVswitchd.program());
        Ok(vec![OvsDaemon::OvsVswitchd])
    }

    async fn stop_vswitchd(&self, node: &NodeOvs) -> Option<u32> {
        let mut state = self.state();
        state.call(Step::StopVswitchd, &node.namespace).ok()?;
        let pid = state.next() as u32;
        let n = state.nodes.get_mut(&node.namespace)?;
        if !n.ovs_vswitchd {
            return None;
        }
        n.ovs_vswitchd = false;
        n.flows.clear();
        Some(pid)
    }

    async fn stop_ovs(&self, node: &NodeOvs) -> Vec<String> {
        let mut state = self.state();
        let mut lines = Vec::new();
        if let Some(n) = state.nodes.get_mut(&node.namespace) {
            for (running, program) in [
                (&mut n.ovsdb_server, "ovsdb-server"),
                (&mut n.ovs_vswitchd, "ovs-vswitchd"),
            ] {
                if std::mem::take(running) {
                    lines.push(format!("stopped {program} of {}", node.node));
                }
            }
            n.flows.clear();
        }
        lines
    }

    async fn stop_and_remove(&self, node: &NodeOvs) -> Vec<String> {
        let mut state = self.state();
        if state.call(Step::StopAndRemove, &node.namespace).is_err() {
            return Vec::new();
        }
        let mut lines = Vec::new();
        if let Some(n) = state.nodes.remove(&node.namespace) {
            for (running, program) in [
                (n.ovsdb_server, "ovsdb-server"),
                (n.ovs_vswitchd, "ovs-vswitchd"),
            ] {
                if running {
                    lines.push(format!("stopped {program} of {}", node.node));
                }
            }
        }
        if std::fs::remove_dir_all(&node.rundir).is_ok() {
            lines.push(format!("removed {}", node.rundir.display()));
        }
        lines
    }

    async fn connect_switch(&self, node: &NodeOvs) -> Result<String, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ConnectSwitch, &node.namespace)?;
        if !state.node(&node.namespace)?.ovsdb_server {
            return Err(missing(&format!("{}: db.sock", node.namespace)));
        }
        Ok(node.namespace.clone())
    }

    async fn read_switch(&self, node: &String) -> Result<ActualSwitch, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ReadSwitch, node)?;
        Ok(state.node(node)?.switch.clone())
    }

    async fn apply_switch(
        &self,
        node: &String,
        lab: &str,
        ops: &[OvsChange],
    ) -> Result<(), ReconcileError> {
        let mut state = self.state();
        state.call(Step::ApplySwitch, node)?;
        state.apply_switch(node, lab, ops)
    }

    async fn commit_switch(
        &self,
        node: &String,
        lab: &str,
        ops: &[OvsChange],
    ) -> Result<i64, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ApplySwitch, node)?;
        state.apply_switch(node, lab, ops)?;
        Ok(0)
    }

    async fn wait_switch(&self, node: &String, _cfg: i64) -> Result<(), ReconcileError> {
        let held = self
            .switch_waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(held, _)| held == node)
            .map(|(_, lock)| lock.clone());
        if let Some(lock) = held {
            drop(lock.read().await);
        }
        Ok(())
    }

    async fn ensure_root_config(
        &self,
        node: &String,
        actual: &mut ActualSwitch,
    ) -> Result<(), ReconcileError> {
        let mut state = self.state();
        let root = format!("root-{}", state.next());
        let switch = &mut state.node(node)?.switch;
        switch.root_uuid.get_or_insert(root);
        for (k, v) in crate::diff::ROOT_OTHER_CONFIG {
            switch
                .root_other_config
                .insert(k.to_string(), v.to_string());
        }
        *actual = switch.clone();
        Ok(())
    }

    async fn ensure_root_identity(
        &self,
        node: &String,
        actual: &mut ActualSwitch,
        wanted: &crate::actual::RootIdentity,
    ) -> Result<(), ReconcileError> {
        let mut state = self.state();
        let switch = &mut state.node(node)?.switch;
        switch.root_identity = wanted.clone();
        *actual = switch.clone();
        Ok(())
    }

    async fn wait_applied(&self, _node: &String) -> Result<(), ReconcileError> {
        Ok(())
    }

    async fn still_connected(&self, _node: &String) -> Result<(), ReconcileError> {
        Ok(())
    }

    async fn connect_flows(
        &self,
        node: &NodeOvs,
        bridge: &str,
    ) -> Result<(String, String), ReconcileError> {
        let mut state = self.state();
        if !state.node(&node.namespace)?.ovs_vswitchd {
            return Err(missing(&format!("{}: {bridge}.mgmt", node.namespace)));
        }
        Ok((node.namespace.clone(), bridge.to_string()))
    }

    async fn read_flows(
        &self,
        (node, bridge): &(String, String),
        _bridge: &str,
        _ports: &BTreeMap<String, u32>,
    ) -> Result<Vec<ReadFlow<FakeFlow>>, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ReadFlows, &format!("{node}/{bridge}"))?;
        let flows = state.node(node)?.flows.get(bridge).cloned();
        Ok(flows
            .unwrap_or_default()
            .into_iter()
            .map(|(spec, cookie)| (Some((spec.clone(), cookie)), FakeFlow { spec, cookie }))
            .collect())
    }

    async fn apply_flows(
        &self,
        (node, bridge): &(String, String),
        _bridge: &str,
        cookie: u64,
        _ports: &BTreeMap<String, u32>,
        add: &[FlowSpec],
        delete: &[&FakeFlow],
    ) -> Result<(), ReconcileError> {
        let mut state = self.state();
        state.call(Step::ApplyFlows, &format!("{node}/{bridge}"))?;
        let flows = state.node(node)?.flows.entry(bridge.clone()).or_default();
        flows.retain(|(spec, c)| !delete.iter().any(|d| &d.spec == spec && d.cookie == *c));
        flows.extend(add.iter().map(|spec| (spec.clone(), cookie)));
        Ok(())
    }

    async fn converge_ruleset(
        &self,
        namespace: &str,
        ruleset: Ruleset,
        sets: Option<Vec<IpSet>>,
    ) -> Result<Vec<String>, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ConvergeRuleset, namespace)?;
        let ns = state.namespace(namespace)?;
        if ns.ruleset.as_ref() == Some(&ruleset) && ns.ipsets == sets {
            return Ok(Vec::new());
        }
        ns.ruleset = Some(ruleset);
        ns.ipsets = sets;
        Ok(vec![format!("{namespace}: iptables: restored")])
    }

    async fn resolve_tunnel_endpoints(
        &self,
        node: &NodeOvs,
        _remotes: Vec<std::net::Ipv4Addr>,
    ) -> Result<(), ReconcileError> {
        self.state()
            .call(Step::ResolveTunnelEndpoints, &node.namespace)
            .map(|_| ())
    }

    fn forget(&self, _prefix: &str) {}

    fn exited(&self) -> &tokio::sync::Notify {
        &self.exited
    }

    fn serve_metadata(
        &self,
        spec: &ovslab_topology::metadata::MetadataSpec,
    ) -> Result<Option<String>, ReconcileError> {
        let mut state = self.state();
        state.call(Step::ServeMetadata, &spec.namespace)?;
        if !state.namespaces.contains_key(&spec.namespace) {
            return Err(missing(&spec.namespace));
        }
        let new = !state.metadata.contains_key(&spec.namespace);
        state.metadata.insert(spec.namespace.clone(), spec.clone());
        Ok(new.then(|| format!("{}: metadata service on {}", spec.namespace, spec.listen)))
    }

    fn stop_metadata(
        &self,
        prefix: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> Vec<String> {
        let mut state = self.state();
        let gone: Vec<String> = state
            .metadata
            .keys()
            .filter(|n| n.starts_with(prefix) && !keep.contains(*n))
            .cloned()
            .collect();
        for ns in &gone {
            state.metadata.remove(ns);
        }
        gone.into_iter()
            .map(|ns| format!("{ns}: metadata service stopped"))
            .collect()
    }

    fn agent_running(&self, agent: &Agent) -> bool {
        self.state()
            .agents
            .get(&agent.dir)
            .is_some_and(|a| a.running && a.namespace == agent.namespace)
    }

    fn agent_died(&self, agent: &Agent) -> bool {
        self.state().agents.get(&agent.dir).is_some_and(|a| a.died)
    }

    fn agent_restarted_ago(&self, agent: &Agent) -> Option<std::time::Duration> {
        let state = self.state();
        let a = state.agents.get(&agent.dir)?;
        a.files.contains_key(RESTARTED_FILE).then_some(())?;
        a.started_at.map(|t| t.elapsed())
    }

    fn write_agent_files(
        &self,
        agent: &Agent,
        files: &[(&str, String)],
    ) -> Result<Vec<String>, ReconcileError> {
        // The directory is real (the engine finds agents by their
        // directories); what runs from it is not.
        std::fs::create_dir_all(&agent.dir).map_err(|e| ReconcileError::io(&agent.dir, e))?;
        let mut state = self.state();
        let a = state.agents.entry(agent.dir.clone()).or_default();
        let mut written = Vec::new();
        for (name, content) in files {
            if a.files.get(*name) != Some(content) {
                a.files.insert(name.to_string(), content.clone());
                written.push(name.to_string());
            }
        }
        Ok(written)
    }

    async fn start_agent(&self, agent: &Agent) -> Result<(), ReconcileError> {
        let mut state = self.state();
        state.call(Step::StartAgent, &agent.what)?;
        if !state.namespaces.contains_key(&agent.namespace) {
            return Err(missing(&agent.namespace));
        }
        let a = state.agents.entry(agent.dir.clone()).or_default();
        a.namespace = agent.namespace.clone();
        a.running = true;
        a.died = false;
        a.starts += 1;
        a.started_at = Some(std::time::Instant::now());
        // A DHCP client binds its lease at once, if the test gave it one.
        if agent.kind == AgentKind::Udhcpc {
            let link = agent
                .args
                .windows(2)
                .find(|w| w[0] == "-i")
                .map(|w| w[1].clone())
                .unwrap_or_default();
            let key = (agent.namespace.clone(), link.clone());
            if let Some(address) = state.leases.get(&key).copied()
                && let Ok(ns) = state.namespace(&agent.namespace)
                && let Some(l) = ns.links.links.iter_mut().find(|l| l.name == link)
            {
                l.addresses = vec![address];
            }
        }
        Ok(())
    }

    fn signal_agent(&self, agent: &Agent, signal: nix::sys::signal::Signal) -> bool {
        let mut state = self.state();
        let _ = state.call(Step::SignalAgent, &agent.what);
        match state.agents.get_mut(&agent.dir) {
            Some(a) if a.running => {
                a.signals.push(signal.as_str().to_string());
                true
            }
            _ => false,
        }
    }

    async fn stop_agent(&self, dir: &Path) -> Vec<String> {
        let mut state = self.state();
        let _ = state.call(Step::StopAgent, &dir.display().to_string());
        let _ = std::fs::remove_dir_all(dir);
        match state.agents.remove(dir) {
            Some(a) if a.running => vec![format!("stopped agent of {}", dir.display())],
            _ => Vec::new(),
        }
    }

    async fn link_addresses(
        &self,
        namespace: &str,
        link: &str,
    ) -> Result<Vec<ipnet::Ipv4Net>, ReconcileError> {
        let mut state = self.state();
        let ns = state.namespace(namespace)?;
        Ok(ns
            .links
            .link(link)
            .map(|l| l.addresses.clone())
            .unwrap_or_default())
    }
}

impl FakeHost {
    /// Kills an agent behind the engine's back.
    pub fn kill_agent_behind(&self, dir: &Path) {
        if let Some(a) = self.state().agents.get_mut(dir) {
            a.running = false;
            a.died = true;
        }
        self.exited.notify_one();
    }
}

/// Liberty's br-tun (`br_tun.py`, the reference's listing) with the ARP
/// responder and l2population, for the flow driver's tests with and
/// without a real vswitchd: patch-int is port 1, two VXLAN tunnels ports 2
/// and 3, VNI 0x64 is local VLAN 1, and a remote port fa:16:3e:00:00:22 /
/// 192.168.1.22 sits behind vxlan-0a000002.
pub fn liberty_br_tun() -> Vec<FlowSpec> {
    let remote_mac = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x22];
    let remote_ip: Ipv4Addr = "192.168.1.22".parse().expect("ip");
    let flow = |table, priority, actions| FlowSpec {
        bridge: "br-tun".into(),
        table,
        priority,
        actions,
        ..FlowSpec::default()
    };
    let from = |port: &str, table| FlowSpec {
        in_port: Some(port.into()),
        ..flow(0, 1, vec![FlowAction::Resubmit(table)])
    };
    let to_tunnels = |ports: &[&str]| {
        let mut a = vec![FlowAction::StripVlan, FlowAction::SetTunnel(0x64)];
        a.extend(ports.iter().map(|p| FlowAction::Output(p.to_string())));
        a
    };
    vec![
        from("patch-int", 2),
        from("vxlan-0a000002", 4),
        from("vxlan-0a000003", 4),
        flow(0, 0, vec![]),
        FlowSpec {
            arp: true,
            dl_dst: Some(MacMatch::Exact([0xff; 6])),
            ..flow(2, 1, vec![FlowAction::Resubmit(21)])
        },
        FlowSpec {
            dl_dst: Some(MacMatch::Unicast),
            ..flow(2, 0, vec![FlowAction::Resubmit(20)])
        },
        FlowSpec {
            dl_dst: Some(MacMatch::Multicast),
            ..flow(2, 0, vec![FlowAction::Resubmit(22)])
        },
        flow(3, 0, vec![]),
        FlowSpec {
            tun_id: Some(0x64),
            ..flow(
                4,
                1,
                vec![
                    FlowAction::PushVlan,
                    FlowAction::ModVlanVid(1),
                    FlowAction::Resubmit(10),
                ],
            )
        },
        flow(4, 0, vec![]),
        flow(6, 0, vec![]),
        flow(
            10,
            1,
            vec![
                FlowAction::LearnFromTunnel,
                FlowAction::Output("patch-int".into()),
            ],
        ),
        FlowSpec {
            dl_vlan: Some(VlanMatch::Id(1)),
            dl_dst: Some(MacMatch::Exact(remote_mac)),
            ..flow(20, 2, to_tunnels(&["vxlan-0a000002"]))
        },
        flow(20, 0, vec![FlowAction::Resubmit(22)]),
        FlowSpec {
            arp: true,
            dl_vlan: Some(VlanMatch::Id(1)),
            arp_tpa: Some(remote_ip),
            ..flow(
                21,
                1,
                vec![
                    FlowAction::Move(MoveField::EthSrc, MoveField::EthDst),
                    FlowAction::SetEthSrc(remote_mac),
                    FlowAction::SetArpOp(2),
                    FlowAction::Move(MoveField::ArpSha, MoveField::ArpTha),
                    FlowAction::Move(MoveField::ArpSpa, MoveField::ArpTpa),
                    FlowAction::SetArpSha(remote_mac),
                    FlowAction::SetArpSpa(remote_ip),
                    FlowAction::InPort,
                ],
            )
        },
        flow(21, 0, vec![FlowAction::Resubmit(22)]),
        // mod-flows left it at OpenFlow's default priority.
        FlowSpec {
            dl_vlan: Some(VlanMatch::Id(1)),
            ..flow(
                22,
                0x8000,
                to_tunnels(&["vxlan-0a000002", "vxlan-0a000003"]),
            )
        },
        flow(22, 0, vec![]),
    ]
}
