//! What tells the audits that part of a lab changed, and which part: the
//! audits re-read only that (see `engine/audit.rs`), and a slow full audit
//! remains as a safety net.
//!
//! - Link, IPv4 address and IPv4 route notifications of every namespace of
//!   every lab, on an rtnetlink socket in an unnamed namespace of the
//!   daemon's: each watched namespace is given an id there, which comes
//!   with its notifications (`NETLINK_LISTEN_ALL_NSID`; see
//!   [`ovslab_netlink::events`] for why not a socket in each). One such
//!   socket per [`IDS_PER_SOCKET`] namespaces: the kernel finds an id by
//!   walking every id of the namespace that holds it, for each id given
//!   and each notice, so ids all in one namespace cost O(n²) to give.
//! - In namespaces with rules (a node's firewall, a router, a qdhcp
//!   namespace), a netfilter socket subscribed to nf_tables commits.
//! - On `/run/netns`, inotify: a namespace deleted. Our sockets in it are
//!   closed at once: a socket holds its namespace, and with it the links
//!   whose loss we look for, alive (an id does not).
//! - Per node, an OVSDB `monitor` of the Open_vSwitch, Bridge, Port and
//!   Interface columns the lab sets (not those ovs-vswitchd keeps writing,
//!   such as statistics).
//! - Per bridge, Open vSwitch's flow monitor ([`FlowMonitor`]): a flow
//!   added, changed or deleted (not learned or expired ones).
//! - A pidfd per OVS daemon of a node: it exited. The daemon also learns
//!   this from the exit of its own children; a pidfd tells it too of the
//!   processes it adopted from an earlier daemon, which are not its
//!   children.
//!
//! Each notice marks its part of its lab [`Dirty`]: a node (its
//! namespaces, instances, routers, Open vSwitch and rules) or the wire (the
//! namespaces no node hosts). A lab's own converges cause notices too;
//! they are not ignored (drift made meanwhile must not be), so the part a
//! converge changed is re-read once after it, which finds nothing to do.
//! Not watched, left to the full audit: ipsets (the kernel sends no
//! notices for them) and a process's sysctls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ovslab_netlink::{events, netns};
use ovslab_openflow::FlowMonitor;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What notices said changed in one lab since its last audit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Nodes whose part of the lab changed.
    pub nodes: BTreeSet<String>,
    /// The namespaces no node hosts (physical, overlay and external
    /// networks, external hosts).
    pub wire: bool,
    /// A process the daemon started exited (DHCP, keepalived): the agents
    /// are looked at, which every audit does.
    pub agents: bool,
    /// Something the watchers cannot place: the whole lab.
    pub all: bool,
    /// A round of the slow full audit found the lab busy (an `up`, a
    /// status query): any converge of the whole lab that ends after this
    /// instant (the round's time less the audit interval: a lab converged
    /// whole that recently is left to the next round) does that round's
    /// work (the earliest is kept).
    pub round: Option<std::time::Instant>,
}

impl Dirty {
    fn merge(&mut self, other: Dirty) {
        self.nodes.extend(other.nodes);
        self.wire |= other.wire;
        self.agents |= other.agents;
        self.all |= other.all;
        self.round = match (self.round, other.round) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn of(part: &Part) -> Dirty {
        let mut dirty = Dirty::default();
        match part {
            Part::Node(node) => {
                dirty.nodes.insert(node.clone());
            }
            Part::Wire => dirty.wire = true,
        }
        dirty
    }
}

/// Where in a lab a watched thing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Node(String),
    Wire,
}

/// What to watch of one lab (see [`Watchers::watch_lab`]).
#[derive(Debug, Default)]
pub struct LabWatch {
    pub lab: String,
    /// Whether this is all of the lab: watchers of its namespaces and
    /// nodes not named stop. Otherwise only those named are looked at.
    pub whole: bool,
    /// Every namespace of the lab that exists: its part, and whether it
    /// holds rules.
    pub namespaces: Vec<(String, Part, bool)>,
    /// Each running node: its name, its OVSDB socket, its bridges'
    /// management sockets, and its OVS daemons' pids.
    pub nodes: Vec<NodeWatch>,
}

#[derive(Debug)]
pub struct NodeWatch {
    pub node: String,
    pub db_socket: PathBuf,
    pub bridges: Vec<(String, PathBuf)>,
    pub pids: Vec<u32>,
}

/// What watching a lab costs in open descriptors, and its namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub namespaces: usize,
    /// A netfilter socket per namespace with rules, per node an OVSDB
    /// monitor, a flow monitor per bridge and a pidfd per OVS daemon, and
    /// two (the socket and its requests') per [`IDS_PER_SOCKET`]
    /// namespaces, whose routing notices share a socket.
    pub descriptors: usize,
}

impl Footprint {
    pub fn of(desired: &ovslab_topology::plan::DesiredState) -> Self {
        let per_node: usize = desired
            .switches
            .iter()
            .map(|s| 1 + s.bridges.len() + crate::ovs_process::OvsDaemon::ALL.len())
            .sum();
        let namespaces = desired.namespaces.len();
        Footprint {
            namespaces,
            descriptors: desired.rule_namespaces().len()
                + per_node
                + 2 * namespaces.div_ceil(IDS_PER_SOCKET),
        }
    }
}

/// The watchers of every lab, and the notices they gave.
#[derive(Debug, Default)]
pub struct Watchers {
    shared: Shared,
    enabled: AtomicBool,
    state: Arc<Mutex<State>>,
}

/// What the watcher tasks share: where they note what changed.
#[derive(Debug, Default, Clone)]
struct Shared {
    wake: Arc<Notify>,
    dirty: Arc<Mutex<BTreeMap<String, Dirty>>>,
}

impl Shared {
    fn mark(&self, lab: &str, dirty: Dirty) {
        lock(&self.dirty)
            .entry(lab.to_string())
            .or_default()
            .merge(dirty);
        self.wake.notify_one();
    }
}

/// A watcher task and what it was started for.
#[derive(Debug)]
struct Watcher<K> {
    key: K,
    task: JoinHandle<()>,
}

impl<K> Drop for Watcher<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (lab, node, bridge).
type BridgeKey = (String, String, String);

#[derive(Debug, Default)]
struct State {
    /// Namespace → its lab and part.
    owners: BTreeMap<String, (String, Part)>,
    /// Namespace → how it is watched.
    namespaces: BTreeMap<String, Watched>,
    /// A watched namespace's (routing socket, id in that socket's
    /// namespace) → its name: where a routing notice came from.
    ids: HashMap<(u32, i32), String>,
    /// The sockets of the namespaces' routing notices, by number, and
    /// their readers.
    routing: BTreeMap<u32, Routing>,
    /// The number of the next routing socket made.
    next_routing: u32,
    /// How many namespaces' ids one routing socket's namespace holds at
    /// most; 0: [`IDS_PER_SOCKET`].
    ids_per_socket: usize,
    /// (lab, node) → the OVSDB monitor, started for that socket.
    databases: BTreeMap<(String, String), Watcher<PathBuf>>,
    /// (lab, node, bridge) → the flow monitor, and its last notice (0
    /// until the monitor runs).
    bridges: BTreeMap<BridgeKey, (Watcher<PathBuf>, Arc<AtomicU64>)>,
    /// OVS daemon pid → the watcher of its exit.
    processes: BTreeMap<u32, Watcher<String>>,
}

/// How one namespace is watched.
#[derive(Debug)]
struct Watched {
    /// The inode of the namespace this was set up for: a namespace made
    /// again under the same name is watched anew.
    inode: u64,
    /// Its routing socket and its id in that socket's namespace; `None`
    /// when it could not be given one (its routing notices are then not
    /// heard).
    id: Option<(u32, i32)>,
    /// Its last routing notice (see [`Watchers::last_notice`]).
    last: Arc<AtomicU64>,
    /// The watcher of its nf_tables commits, where rules live.
    rules: Option<Watcher<()>>,
}

/// A socket that hears the routing notices of the watched namespaces it
/// gave an id.
#[derive(Debug)]
struct Routing {
    socket: Arc<events::AllNamespaces>,
    task: Watcher<()>,
    /// The watched namespaces with an id here.
    given: usize,
}

/// How many namespaces one routing socket hears, at most: the kernel
/// walks every id of a socket's namespace to find one, when it gives an id
/// and on each notice. With all 10,205 of a 10,000-instance lab in one,
/// giving them took 4.4–6.7 s at the end of its `up`.
pub const IDS_PER_SOCKET: usize = 500;

impl State {
    /// Stops watching namespace `ns` (its lab and part stay known).
    fn drop_namespace(&mut self, ns: &str) {
        let Some(Watched { id: Some(key), .. }) = self.namespaces.remove(ns) else {
            return;
        };
        if self.ids.get(&key).is_none_or(|n| n != ns) {
            return;
        }
        self.ids.remove(&key);
        let Some(routing) = self.routing.get_mut(&key.0) else {
            return;
        };
        routing.given = routing.given.saturating_sub(1);
        // A socket left with no namespace to hear goes (one stays for the
        // next lab), and its namespace with it: the ids it gave, which the
        // kernel would walk when it deletes each namespace they name.
        if routing.given == 0 && self.routing.len() > 1 {
            self.routing.remove(&key.0);
        }
    }

    /// Notices may have been lost (the routing socket overflowed or was
    /// made again): nothing read before is trusted, and every lab is
    /// looked at whole.
    fn all_lost(&self, shared: &Shared) {
        for watched in self.namespaces.values() {
            watched.last.store(next_notice(), Ordering::SeqCst);
        }
        let labs: BTreeSet<&String> = self.owners.values().map(|(l, _)| l).collect();
        for lab in labs {
            shared.mark(
                lab,
                Dirty {
                    all: true,
                    ..Dirty::default()
                },
            );
        }
    }

    /// Whether routing notices can be heard: a socket whose reader ended
    /// is dropped (the namespaces it heard get an id again at their lab's
    /// next watch, and every lab is looked at whole), and one is made if
    /// there is none.
    fn routing(&mut self, shared: &Shared, state: &Arc<Mutex<State>>) -> bool {
        let ended: Vec<u32> = self
            .routing
            .iter()
            .filter(|(_, r)| r.task.task.is_finished())
            .map(|(k, _)| *k)
            .collect();
        if !ended.is_empty() {
            for k in &ended {
                self.routing.remove(k);
            }
            self.ids.retain(|(k, _), _| !ended.contains(k));
            for watched in self.namespaces.values_mut() {
                if watched.id.is_some_and(|(k, _)| ended.contains(&k)) {
                    watched.id = None;
                }
            }
            self.all_lost(shared);
        }
        if self.routing.is_empty() {
            self.new_routing(shared, state);
        }
        !self.routing.is_empty()
    }

    /// A routing socket with room for one more namespace: the first with
    /// fewer than [`IDS_PER_SOCKET`], or a new one.
    fn routing_with_room(
        &mut self,
        shared: &Shared,
        state: &Arc<Mutex<State>>,
    ) -> Option<(u32, Arc<events::AllNamespaces>)> {
        let room = match self.ids_per_socket {
            0 => IDS_PER_SOCKET,
            n => n,
        };
        if let Some((k, r)) = self.routing.iter().find(|(_, r)| r.given < room) {
            return Some((*k, r.socket.clone()));
        }
        self.new_routing(shared, state)
    }

    /// Subscribes a new routing socket, from a namespace of its own, and
    /// starts its reader.
    fn new_routing(
        &mut self,
        shared: &Shared,
        state: &Arc<Mutex<State>>,
    ) -> Option<(u32, Arc<events::AllNamespaces>)> {
        let socket = match events::AllNamespaces::subscribe() {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                tracing::warn!(
                    "cannot subscribe to routing notices (audits still find drift): {e}"
                );
                return None;
            }
        };
        let key = self.next_routing;
        self.next_routing += 1;
        let task = tokio::spawn(routing_events(
            socket.clone(),
            key,
            shared.clone(),
            Arc::downgrade(state),
        ));
        self.routing.insert(
            key,
            Routing {
                socket: socket.clone(),
                task: Watcher { key: (), task },
                given: 0,
            },
        );
        Some((key, socket))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long connecting a monitor to an OVS daemon may take.
const MONITOR_CONNECT: Duration = Duration::from_secs(2);

impl Watchers {
    /// Watchers whose routing sockets each hear at most `n` namespaces
    /// (the default is [`IDS_PER_SOCKET`]).
    pub fn with_ids_per_socket(n: usize) -> Self {
        let watchers = Watchers::default();
        lock(&watchers.state).ids_per_socket = n.max(1);
        watchers
    }

    /// How many routing sockets hear the watched namespaces.
    pub fn routing_sockets(&self) -> usize {
        lock(&self.state).routing.len()
    }

    /// Notified when some lab has [`Dirty`] parts.
    pub fn wake(&self) -> Arc<Notify> {
        self.shared.wake.clone()
    }

    /// What changed in each lab since the last call.
    pub fn take_dirty(&self) -> BTreeMap<String, Dirty> {
        std::mem::take(&mut *lock(&self.shared.dirty))
    }

    /// Notes `dirty` for `lab` (again: its audit could not run yet).
    pub fn mark(&self, lab: &str, dirty: Dirty) {
        self.shared.mark(lab, dirty);
    }

    /// Starts watching (the audits call this once): `/run/netns` now, the
    /// labs as [`Watchers::watch_lab`] names them.
    pub fn enable(&self) {
        if self.enabled.swap(true, Ordering::SeqCst) {
            return;
        }
        match events::namespace_deletions() {
            Ok(fd) => {
                tokio::spawn(namespace_deletions(
                    fd,
                    self.shared.clone(),
                    self.state.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                "cannot watch {} for deleted namespaces (audits still find them): {e}",
                netns::NETNS_DIR
            ),
        }
    }

    /// Watches what `lab` names, unless it is watched already: a namespace
    /// made again since its watcher started gets a new one, a monitor whose
    /// connection ended is started again. Watchers of the lab's namespaces
    /// and nodes no longer named stop. Does nothing unless enabled.
    pub fn watch_lab(&self, lab: LabWatch) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let mut state = lock(&self.state);
        let state = &mut *state;
        if lab.whole {
            let named: BTreeSet<&str> = lab.namespaces.iter().map(|(n, ..)| n.as_str()).collect();
            let gone: Vec<String> = state
                .owners
                .iter()
                .filter(|(ns, (l, _))| *l == lab.lab && !named.contains(ns.as_str()))
                .map(|(ns, _)| ns.clone())
                .collect();
            for ns in gone {
                state.owners.remove(&ns);
                state.drop_namespace(&ns);
            }
            let nodes: BTreeSet<&str> = lab.nodes.iter().map(|n| n.node.as_str()).collect();
            state
                .databases
                .retain(|(l, n), _| *l != lab.lab || nodes.contains(n.as_str()));
            state
                .bridges
                .retain(|(l, n, _), _| *l != lab.lab || nodes.contains(n.as_str()));
        }
        let routing = state.routing(&self.shared, &self.state);
        // Namespaces not watched yet (or no longer as they should be).
        let mut fresh = Vec::new();
        for (ns, part, rules) in &lab.namespaces {
            state
                .owners
                .insert(ns.clone(), (lab.lab.clone(), part.clone()));
            let Ok(file) = std::fs::File::open(netns::path(ns)) else {
                continue;
            };
            let Ok(inode) = file.metadata().map(|m| m.ino()) else {
                continue;
            };
            let alive = |w: &Watcher<()>| !w.task.is_finished();
            if state.namespaces.get(ns).is_some_and(|w| {
                w.inode == inode
                    && (w.id.is_some() || !routing)
                    && w.rules.as_ref().is_some_and(alive) == *rules
            }) {
                continue;
            }
            state.drop_namespace(ns);
            let id = routing
                .then(|| state.routing_with_room(&self.shared, &self.state))
                .flatten()
                .and_then(|(key, socket)| match socket.id_of(&file) {
                    Ok(id) => Some((key, id)),
                    Err(e) => {
                        tracing::debug!("cannot give namespace {ns} an id to watch it: {e}");
                        None
                    }
                });
            // Counted at once: the next namespace's socket depends on it.
            if let Some(key) = id
                && state.ids.insert(key, ns.clone()).is_none()
                && let Some(routing) = state.routing.get_mut(&key.0)
            {
                routing.given += 1;
            }
            fresh.push((ns, part, *rules, file, inode, id));
        }
        // Their rules, subscribed to from one thread.
        let files: Vec<&std::fs::File> = fresh
            .iter()
            .filter(|(.., rules, _, _, _)| *rules)
            .map(|(_, _, _, file, _, _)| file)
            .collect();
        let mut subscribed = events::rules(&files).into_iter();
        for (ns, part, rules, _, inode, id) in fresh {
            let rules = rules.then(|| match subscribed.next() {
                Some(Ok(fd)) => Some(Watcher {
                    key: (),
                    task: tokio::spawn(rule_events(
                        lab.lab.clone(),
                        ns.clone(),
                        part.clone(),
                        fd,
                        self.shared.clone(),
                    )),
                }),
                Some(Err(e)) => {
                    tracing::debug!("cannot watch the rules of namespace {ns}: {e}");
                    None
                }
                None => None,
            });
            state.namespaces.insert(
                ns.clone(),
                Watched {
                    inode,
                    id,
                    last: Arc::new(AtomicU64::new(next_notice())),
                    rules: rules.flatten(),
                },
            );
        }
        for node in &lab.nodes {
            let key = (lab.lab.clone(), node.node.clone());
            let live =
                |w: &Watcher<PathBuf>, path: &PathBuf| w.key == *path && !w.task.is_finished();
            if !state
                .databases
                .get(&key)
                .is_some_and(|w| live(w, &node.db_socket))
            {
                let task = tokio::spawn(database_events(
                    lab.lab.clone(),
                    node.node.clone(),
                    node.db_socket.clone(),
                    self.shared.clone(),
                ));
                state.databases.insert(
                    key.clone(),
                    Watcher {
                        key: node.db_socket.clone(),
                        task,
                    },
                );
            }
            let bridges: BTreeSet<&str> = node.bridges.iter().map(|(b, _)| b.as_str()).collect();
            state.bridges.retain(|(l, n, b), _| {
                *l != lab.lab || *n != node.node || bridges.contains(b.as_str())
            });
            for (bridge, path) in &node.bridges {
                let key = (lab.lab.clone(), node.node.clone(), bridge.clone());
                if state.bridges.get(&key).is_some_and(|(w, _)| live(w, path)) {
                    continue;
                }
                let last = Arc::new(AtomicU64::new(0));
                let task = tokio::spawn(flow_events(
                    lab.lab.clone(),
                    node.node.clone(),
                    bridge.clone(),
                    path.clone(),
                    self.shared.clone(),
                    last.clone(),
                ));
                let watcher = Watcher {
                    key: path.clone(),
                    task,
                };
                state.bridges.insert(key, (watcher, last));
            }
            state.processes.retain(|_, w| !w.task.is_finished());
            for &pid in &node.pids {
                if state.processes.contains_key(&pid) {
                    continue;
                }
                match pidfd_open(pid) {
                    Ok(fd) => {
                        let task = tokio::spawn(exit_of(
                            pid,
                            fd,
                            lab.lab.clone(),
                            node.node.clone(),
                            self.shared.clone(),
                        ));
                        state.processes.insert(
                            pid,
                            Watcher {
                                key: lab.lab.clone(),
                                task,
                            },
                        );
                    }
                    Err(e) => tracing::debug!(pid, "cannot watch the process: {e}"),
                }
            }
        }
    }

    /// The number of the last link, address or route notice of namespace
    /// `ns`, unique among all watchers (a new watcher starts with a new
    /// number); `None` when it is not watched. While it stays the same,
    /// nothing changed the namespace's links: a converge that read them
    /// after taking it may trust them next time (see `engine/converge.rs`).
    pub fn last_notice(&self, ns: &str) -> Option<u64> {
        let state = lock(&self.state);
        let watched = state.namespaces.get(ns)?;
        let heard = watched.id.is_some_and(|(key, _)| {
            state
                .routing
                .get(&key)
                .is_some_and(|r| !r.task.task.is_finished())
        });
        heard.then(|| watched.last.load(Ordering::SeqCst))
    }

    /// Like [`Watchers::last_notice`], for the flows of a bridge: `None`
    /// until its flow monitor runs.
    pub fn last_flow_notice(&self, lab: &str, node: &str, bridge: &str) -> Option<u64> {
        let state = lock(&self.state);
        let key = (lab.to_string(), node.to_string(), bridge.to_string());
        let (watcher, last) = state.bridges.get(&key)?;
        let last = last.load(Ordering::SeqCst);
        (!watcher.task.is_finished() && last != 0).then_some(last)
    }

    /// Stops watching namespace `ns` (before the converge deletes it: our
    /// socket would keep it alive).
    pub fn unwatch(&self, ns: &str) {
        let mut state = lock(&self.state);
        state.owners.remove(ns);
        state.drop_namespace(ns);
    }

    /// Stops watching a lab (before `down` removes it: a socket of ours
    /// would keep a namespace alive), and forgets what changed in it.
    pub fn forget(&self, lab: &str) {
        let mut state = lock(&self.state);
        let ours: Vec<String> = state
            .owners
            .iter()
            .filter(|(_, (l, _))| l == lab)
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in ours {
            state.owners.remove(&ns);
            state.drop_namespace(&ns);
        }
        state.databases.retain(|(l, _), _| l != lab);
        state.bridges.retain(|(l, ..), _| l != lab);
        state.processes.retain(|_, w| w.key != lab);
        drop(state);
        lock(&self.shared.dirty).remove(lab);
    }
}

/// pidfd_open(2): a descriptor that polls readable once process `pid` has
/// exited (a zombie counts).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

async fn exit_of(pid: u32, fd: OwnedFd, lab: String, node: String, shared: Shared) {
    // SAFETY: as in `each_read`: the AsyncFd owns the descriptor.
    let Ok(fd) = (unsafe { AsyncFd::register(fd) }) else {
        return;
    };
    if fd.readable().await.is_ok() {
        tracing::debug!(pid, lab, node, "an open vswitch daemon exited");
        shared.mark(&lab, Dirty::of(&Part::Node(node)));
    }
}

/// Reads one datagram or event batch from a non-blocking descriptor.
fn read(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes and outlives the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// How much one read takes: a notice batch is a few hundred bytes, a
/// kernel that ran out of room says so (ENOBUFS) rather than cutting.
const READ_BUFFER: usize = 32 * 1024;

/// Calls `on_read` for every read from `fd` until it fails for good. The
/// buffer exists only while a read is under way: a lab of 10,000
/// namespaces has as many of these tasks, mostly idle.
async fn each_read(fd: OwnedFd, what: &str, mut on_read: impl FnMut(Result<&[u8], ()>)) {
    // SAFETY: `fd` is an owned descriptor that the AsyncFd owns from here
    // on; nothing else closes or replaces it while it is registered.
    let fd = match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("cannot poll {what}: {e}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            match ready.try_io(|fd| read(fd.get_ref(), &mut buf)) {
                Ok(Ok(n)) => on_read(Ok(&buf[..n])),
                // The kernel dropped notices for want of buffer space: some
                // were lost, so something may have happened.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => on_read(Err(())),
                Ok(Err(e)) => {
                    tracing::debug!("{what}: {e}; no longer watched");
                    return;
                }
                Err(_would_block) => break,
            }
        }
    }
}

/// Numbers notices, across every watcher.
static NOTICES: AtomicU64 = AtomicU64::new(1);

fn next_notice() -> u64 {
    NOTICES.fetch_add(1, Ordering::SeqCst)
}

/// Every nf_tables commit in one namespace marks its part.
async fn rule_events(lab: String, namespace: String, part: Part, fd: OwnedFd, shared: Shared) {
    let what = format!("nf_tables notices of {namespace}");
    each_read(fd, &what, |_| {
        tracing::debug!(namespace, "nf_tables notice");
        shared.mark(&lab, Dirty::of(&part));
    })
    .await;
}

/// The routing socket's descriptor, for polling.
struct Notices(Arc<events::AllNamespaces>);

impl AsRawFd for Notices {
    fn as_raw_fd(&self) -> RawFd {
        self.0.notices().as_raw_fd()
    }
}

/// Every routing notice marks the part of the namespace it came from and
/// numbers the namespace's `last`; one whose id no watched namespace has
/// (a namespace given one by someone else, or being deleted) is dropped.
async fn routing_events(
    socket: Arc<events::AllNamespaces>,
    key: u32,
    shared: Shared,
    state: Weak<Mutex<State>>,
) {
    // SAFETY: `Notices` holds the socket, so the descriptor stays open,
    // and is not replaced, for as long as it is registered.
    let fd = match unsafe { AsyncFd::register(Notices(socket)) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot poll the routing notices: {e}");
            return;
        }
    };
    // One task reads them all: the buffer stays.
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        loop {
            let read = ready.try_io(|fd| events::read_notice(fd.get_ref().0.notices(), &mut buf));
            let Some(state) = state.upgrade() else {
                return;
            };
            let state = lock(&state);
            match read {
                Ok(Ok((n, Some(id)))) => {
                    let Some(ns) = state.ids.get(&(key, id)) else {
                        continue;
                    };
                    if let Some(watched) = state.namespaces.get(ns) {
                        watched.last.store(next_notice(), Ordering::SeqCst);
                    }
                    tracing::debug!(
                        namespace = ns,
                        types = ?events::message_types(&buf[..n]),
                        "routing notice"
                    );
                    if let Some((lab, part)) = state.owners.get(ns) {
                        shared.mark(lab, Dirty::of(part));
                    }
                }
                // Without an id: from the socket's own namespace, where
                // nothing happens.
                Ok(Ok((_, None))) => {}
                // The kernel dropped notices for want of buffer space: some
                // were lost, so something may have happened anywhere.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!("routing notices lost: {e}");
                    state.all_lost(&shared);
                }
                Ok(Err(e)) => {
                    tracing::warn!("routing notices: {e}; made again at the next watch");
                    state.all_lost(&shared);
                    return;
                }
                Err(_would_block) => break,
            }
        }
    }
}

/// The columns of a node's database that the lab sets (see
/// `drivers::switch::read`): a change of any other (statistics, status,
/// `cur_cfg`) is not drift. Changes only, without the tables' initial
/// contents: the watcher has no use for them, and a node of 50 instances
/// would otherwise send (and the daemon keep) a hundred kilobytes of rows.
fn monitored_columns() -> serde_json::Value {
    let select = json!({"initial": false, "insert": true, "delete": true, "modify": true});
    json!({
        "Open_vSwitch": {"columns": ["bridges", "other_config", "external_ids", "ovs_version"],
                         "select": select},
        "Bridge": {"columns": ["name", "ports", "datapath_type", "fail_mode", "protocols",
                               "external_ids", "other_config"],
                   "select": select},
        "Port": {"columns": ["name", "interfaces", "tag", "other_config"], "select": select},
        "Interface": {"columns": ["name", "type", "options", "external_ids", "ofport"],
                      "select": select},
    })
}

/// A node's OVSDB monitor: every update marks the node. A monitor that
/// cannot start is left to the next audit, which starts it again; one that
/// ends (the server went away) marks the node.
async fn database_events(lab: String, node: String, socket: PathBuf, shared: Shared) {
    let client = match ovslab_ovsdb::Client::connect_with_deadline(&socket, MONITOR_CONNECT).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(lab, node, "cannot monitor the database: {e}");
            return;
        }
    };
    let mut monitor = match client.monitor("Open_vSwitch", monitored_columns()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(lab, node, "cannot monitor the database: {e}");
            return;
        }
    };
    while monitor.next().await.is_some() {
        tracing::debug!(lab, node, "database changed");
        shared.mark(&lab, Dirty::of(&Part::Node(node.clone())));
    }
    tracing::debug!(lab, node, "the database monitor ended");
    shared.mark(&lab, Dirty::of(&Part::Node(node)));
}

/// A bridge's flow monitor: every change someone made marks the node and
/// is numbered in `last` (from the moment the monitor runs).
async fn flow_events(
    lab: String,
    node: String,
    bridge: String,
    path: PathBuf,
    shared: Shared,
    last: Arc<AtomicU64>,
) {
    let mut monitor = match FlowMonitor::connect(&path, MONITOR_CONNECT).await {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(lab, node, bridge, "cannot monitor the flows: {e}");
            return;
        }
    };
    last.store(next_notice(), Ordering::SeqCst);
    let ended = loop {
        if let Err(e) = monitor.changed().await {
            break e;
        }
        last.store(next_notice(), Ordering::SeqCst);
        tracing::debug!(lab, node, bridge, "flows changed");
        shared.mark(&lab, Dirty::of(&Part::Node(node.clone())));
    };
    tracing::debug!(lab, node, bridge, "the flow monitor ended: {ended}");
    shared.mark(&lab, Dirty::of(&Part::Node(node)));
}

/// Deleted namespaces: our sockets in them close first, then their part is
/// marked (a namespace of no known lab, but with a lab's name, marks
/// nothing: audits of its lab, if any, look at every namespace anyway).
async fn namespace_deletions(fd: OwnedFd, shared: Shared, state: Arc<Mutex<State>>) {
    each_read(fd, netns::NETNS_DIR, |read| match read {
        Ok(events) => {
            for name in events::deleted_names(events) {
                let mut state = lock(&state);
                // Dropping the watcher closes its sockets.
                state.drop_namespace(&name);
                if let Some((lab, part)) = state.owners.get(&name) {
                    tracing::debug!(namespace = name, "namespace deleted");
                    shared.mark(lab, Dirty::of(part));
                }
            }
        }
        Err(()) => {
            let labs: BTreeSet<String> = lock(&state)
                .owners
                .values()
                .map(|(l, _)| l.clone())
                .collect();
            for lab in labs {
                shared.mark(
                    &lab,
                    Dirty {
                        all: true,
                        ..Dirty::default()
                    },
                );
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_add_up_per_lab_until_taken() {
        let watchers = Watchers::default();
        watchers.mark("a", Dirty::of(&Part::Node("compute1".into())));
        watchers.mark("a", Dirty::of(&Part::Node("compute2".into())));
        watchers.mark("a", Dirty::of(&Part::Wire));
        watchers.mark(
            "b",
            Dirty {
                agents: true,
                ..Dirty::default()
            },
        );
        let dirty = watchers.take_dirty();
        assert_eq!(
            dirty["a"],
            Dirty {
                nodes: ["compute1".to_string(), "compute2".to_string()].into(),
                wire: true,
                agents: false,
                all: false,
                round: None,
            }
        );
        assert!(dirty["b"].agents && dirty["b"].nodes.is_empty());
        assert!(watchers.take_dirty().is_empty(), "taken once");
    }

    #[test]
    fn a_forgotten_lab_has_nothing_left_to_audit() {
        let watchers = Watchers::default();
        watchers.mark("a", Dirty::of(&Part::Wire));
        watchers.mark("b", Dirty::of(&Part::Wire));
        watchers.forget("a");
        assert_eq!(watchers.take_dirty().keys().collect::<Vec<_>>(), vec!["b"]);
    }
}
