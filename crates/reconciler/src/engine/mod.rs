//! The engine: owns every lab of the daemon and runs `up`, `down`, `status`
//! for them, one operation at a time per lab.
//!
//! `up` converges in phases (see `converge.rs`), each one diffed against what
//! exists so that a converged lab sees no change at all, in this order:
//! 1. namespaces (stale ones of the lab removed, missing ones created);
//! 2. each node's `ovsdb-server` (a hung one killed and restarted);
//! 3. the plan, made with the local VLAN ids the running switches use (and
//!    the datapath options vswitchd must start with);
//! 4. links, addresses, routes and sysctls, phase by phase across namespaces;
//! 5. each node's `ovs-vswitchd`, started once its links exist;
//! 6. one OVSDB transaction per node, then a wait until vswitchd applied it;
//! 7. one flow batch per bridge, ended by a barrier;
//! 8. iptables rulesets (router NAT, compute-node firewalls), one
//!    `iptables-restore` per namespace, only where they differ.
//!
//! Audits run the same converge again (`audit.rs`); queries read a lab
//! without changing it (`queries.rs`); `removal.rs` finds the labs of a
//! previous run and takes a lab's namespaces and run directory away.
//!
//! The topology is saved to `<run_root>/<lab>/topology.yaml` before anything
//! is built, so a failed `up` can always be finished by the next `up` or
//! removed by `down`, also after a daemon restart. What the lab creates is
//! written down in its [`Manifest`] first: only what the manifest names is
//! ever taken for the lab's, adopted or removed.

mod audit;
mod converge;
mod dhcp;
mod ha;
mod nodes;
mod queries;
mod removal;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use ovslab_api::{AuditEvent, DownReport, UpReport};
use ovslab_topology::Topology;
use ovslab_topology::naming;
use ovslab_topology::plan::{LocalVlans, plan};
use tokio::sync::Mutex;

use crate::host::{Host, RealHost};
use crate::manifest::Manifest;
use crate::ovs_process::{NodeOvs, OvsDaemon};
use crate::{ReconcileError, TeardownFailure};
use converge::{Outcome, Scope};
use removal::{adopt, remove_namespaces, remove_run_dir};

/// Where the engine keeps per-node run directories.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `/run/ovslab` by default; nodes run from `<run_root>/<lab>/<node>/`.
    pub run_root: PathBuf,
    /// The OVSDB schema new node databases are created from.
    pub schema: PathBuf,
    /// What an instance's DHCP client runs at each lease event (ovslabd
    /// itself, under [its hook's name]); without it, DHCP networks cannot
    /// be brought up.
    pub dhcp_hook: Option<PathBuf>,
    /// How many spare nodes to keep ready (see [`crate::spare`]); only
    /// over the real host.
    pub spare_nodes: usize,
}

impl EngineConfig {
    pub fn new(run_root: impl Into<PathBuf>) -> Self {
        EngineConfig {
            run_root: run_root.into(),
            schema: PathBuf::from(crate::ovs_process::DEFAULT_SCHEMA),
            dhcp_hook: None,
            spare_nodes: 0,
        }
    }
}

const TOPOLOGY_FILE: &str = "topology.yaml";
/// Where the saved topology came from (`ovslab status` names it after a
/// restart as before it). Its dot keeps it apart from the nodes'
/// directories: no object name has one.
const SOURCE_FILE: &str = "source.txt";

/// The nodes of a lab failed on purpose, one per line, beside its topology.
const FAILED_FILE: &str = ovslab_topology::naming::FAILED_NODES_RECORD;

/// The failed nodes recorded in a lab's directory.
fn read_failed(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join(FAILED_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug)]
struct Lab {
    topology: Topology,
    /// What the lab created (see [`crate::manifest`]).
    manifest: Manifest,
    /// Set by `down` once the lab is gone: whoever waited for its lock
    /// (an `up`, an audit) must not build on this entry, which is no longer
    /// in the registry.
    removed: bool,
    /// Namespaces with the lab's prefix that are not the lab's, as last
    /// reported (an audit logs them when they change, not every time).
    foreign: BTreeSet<String>,
    /// What audits found broken and repaired, newest last (at most
    /// [`REPAIRS_KEPT`]), and how many repairs there were in all.
    repairs: VecDeque<String>,
    repair_count: u64,
    /// Starts of an OVS daemon that had died, by (node, program).
    restarts: BTreeMap<(String, &'static str), u64>,
    /// When the last converge of the whole lab (an `up`, a full audit)
    /// ended (see [`crate::watch::Dirty::round`]).
    whole_converged: Option<Instant>,
    /// Audits run, and when the last ended and how long it took.
    audits: u64,
    last_audit: Option<(String, u64)>,
    /// Why the last audit could not repair the lab (`None`: it could).
    audit_failure: Option<audit::Failure>,
    /// Nodes failed on purpose (`ovslab node fail`), kept in
    /// [`FAILED_FILE`] so that a restarted daemon leaves them failed.
    failed: BTreeSet<String>,
    /// The plan of the last converge (see [`converge::Planned`]); `None`
    /// once the topology changed.
    planned: Option<converge::Planned>,
    /// The namespaces whose links the last converges read (see
    /// [`converge::LinksRead`]).
    links_read: converge::LinksRead,
    /// The bridges whose flows the last converges read (see
    /// [`converge::FlowsRead`]).
    flows_read: converge::FlowsRead,
    /// The DHCP instances the last converge left without their lease
    /// (`ovslab status` tells them, without reading every instance).
    without_lease: BTreeSet<String>,
    /// Why the saved topology of a lab found at start could not be read:
    /// the lab is known (its manifest says what is its), so that `down`
    /// can remove it and `up` can take it over, but nothing converges it.
    unreadable: Option<String>,
}

impl Lab {
    fn new(topology: Topology, manifest: Manifest) -> Self {
        Lab {
            topology,
            manifest,
            removed: false,
            foreign: BTreeSet::new(),
            repairs: VecDeque::new(),
            repair_count: 0,
            restarts: BTreeMap::new(),
            whole_converged: None,
            audits: 0,
            last_audit: None,
            audit_failure: None,
            failed: BTreeSet::new(),
            planned: None,
            links_read: BTreeMap::new(),
            flows_read: BTreeMap::new(),
            without_lease: BTreeSet::new(),
            unreadable: None,
        }
    }

    /// Keeps what the DHCP phase of a converge found, when it ran.
    fn note_leases(&mut self, without_lease: Option<BTreeSet<String>>) {
        if let Some(without) = without_lease {
            self.without_lease = without;
        }
    }

    fn count_restarts(&mut self, restarted: Vec<(String, OvsDaemon)>) {
        for (node, daemon) in restarted {
            *self.restarts.entry((node, daemon.program())).or_default() += 1;
        }
    }
}

/// Audits whose repairs `ovslab status` lists.
const REPAIRS_KEPT: usize = 20;

/// Owns every lab of the daemon; all changes go through it, and reach the
/// host through `H` (see [`crate::host`]).
#[derive(Debug)]
pub struct Engine<H: Host = RealHost> {
    config: EngineConfig,
    labs: Mutex<BTreeMap<String, Arc<Mutex<Lab>>>>,
    /// Kernel notices that wake the audits (only while audits run).
    watchers: crate::watch::Watchers,
    /// Notified when an audit repaired a lab, or could not.
    health: Arc<tokio::sync::Notify>,
    host: Arc<H>,
    /// Every audit's outcome, for whoever listens (see [`Engine::subscribe`]).
    events: tokio::sync::broadcast::Sender<AuditEvent>,
    /// The spare nodes new labs' small nodes take (`--spare-nodes`).
    spares: Option<Arc<crate::spare::Spares>>,
}

/// Audit events a slow listener may fall behind by before it misses some.
const EVENTS_KEPT: usize = 64;

impl Engine {
    /// An engine over the host itself that knows the labs whose topology
    /// is saved under the run root (each with its manifest), and finishes
    /// the removals a previous daemon was killed in.
    pub fn new(config: EngineConfig) -> Self {
        // Kept even when it keeps none: the daemon clears what an earlier
        // one left.
        let spares = Some(Arc::new(crate::spare::Spares::new(
            &config.run_root,
            &config.schema,
            config.spare_nodes,
        )));
        Engine {
            spares,
            ..Engine::with_host(config, RealHost::default())
        }
    }

    /// The spare nodes (on the host itself; none for a fake host): the
    /// daemon clears what an earlier one left, keeps `spare_nodes` of them
    /// filled, and removes them when it stops (see [`crate::spare`]).
    pub fn spares(&self) -> Option<Arc<crate::spare::Spares>> {
        self.spares.clone()
    }
}

impl<H: Host> Engine<H> {
    /// An engine over `host` (see [`Engine::new`]).
    pub fn with_host(config: EngineConfig, host: H) -> Self {
        let mut labs = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&config.run_root) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !entry.path().is_dir() || ovslab_topology::lab_name_problem(&name).is_some() {
                    continue;
                }
                if let Some(lab) = adopt(&host, &entry.path(), &name) {
                    tracing::info!(lab = name, "found a lab from a previous run");
                    labs.insert(name, Arc::new(Mutex::new(lab)));
                }
            }
        }
        Engine {
            config,
            labs: Mutex::new(labs),
            watchers: crate::watch::Watchers::default(),
            health: Arc::default(),
            host: Arc::new(host),
            events: tokio::sync::broadcast::channel(EVENTS_KEPT).0,
            spares: None,
        }
    }

    /// The outcome of every audit from now on, of every lab (one
    /// [`AuditEvent`] each, sent once the audit has recorded its repairs).
    /// A listener that falls more than `EVENTS_KEPT` behind is told how
    /// many it missed (`RecvError::Lagged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AuditEvent> {
        self.events.subscribe()
    }

    /// Notified when an audit repaired a lab, found it could not, or
    /// could again: what may change a lab's health without a request.
    pub fn health_changes(&self) -> Arc<tokio::sync::Notify> {
        self.health.clone()
    }

    /// The host the engine changes.
    pub fn host(&self) -> &H {
        &self.host
    }

    fn lab_dir(&self, lab: &str) -> PathBuf {
        self.config.run_root.join(lab)
    }

    async fn entry(&self, lab: &str) -> Option<Arc<Mutex<Lab>>> {
        self.labs.lock().await.get(lab).cloned()
    }

    /// Creates or converges a lab; `text` is the topology file as given, saved
    /// so that the lab can be finished or removed after a restart.
    pub async fn up(&self, topology: Topology, text: &str) -> Result<UpReport, ReconcileError> {
        let name = topology.lab.clone();
        if let Some(problem) = ovslab_topology::lab_name_problem(&name) {
            return Err(ReconcileError::BadName(problem));
        }
        // Validation assumed the default run directory; this one may be
        // longer.
        if let Some(problem) =
            ovslab_topology::socket_paths_problem(&self.config.run_root, &topology)
        {
            return Err(ReconcileError::BadName(problem));
        }
        let dir = self.lab_dir(&name);
        // The lab's entry, locked; a `down` that held it while this waited
        // has taken it out of the registry, so the next one is fresh.
        let (entry, mut lab, fresh) = loop {
            let (entry, fresh) = {
                let mut labs = self.labs.lock().await;
                match labs.get(&name) {
                    Some(entry) => (entry.clone(), false),
                    None => {
                        let lab = Lab::new(topology.clone(), Manifest::new(&dir, &name));
                        let entry = Arc::new(Mutex::new(lab));
                        labs.insert(name.clone(), entry.clone());
                        (entry, true)
                    }
                }
            };
            let lab = entry.clone().lock_owned().await;
            if !lab.removed {
                break (entry, lab, fresh);
            }
        };
        lab.topology = topology;
        lab.planned = None;
        lab.unreadable = None;
        let started = Instant::now();
        // Whether this `up` made the lab's directory: a lab this daemon
        // could not adopt at start (its saved topology no longer reads)
        // left one, with the manifest that says which namespaces are its.
        let mut made_dir = false;
        if fresh {
            // The manifest before the topology: a lab directory with a
            // topology always has one.
            made_dir = !dir.exists();
            std::fs::create_dir_all(&dir).map_err(|e| ReconcileError::io(&dir, e))?;
            let path = dir.join(crate::manifest::MANIFEST_FILE);
            match Manifest::load(&dir, &name) {
                // Taken over, never written over: its namespaces stay the
                // lab's, and its processes are found by their records.
                Ok(Some(left)) => {
                    tracing::warn!(
                        lab = name,
                        "taking over the records of a lab of that name that was not adopted at start"
                    );
                    lab.manifest = left;
                }
                Ok(None) => lab
                    .manifest
                    .save()
                    .map_err(|e| ReconcileError::io(lab.manifest.path(), e))?,
                Err(e) => {
                    lab.removed = true;
                    self.unregister(&name, &entry).await;
                    return Err(ReconcileError::io(&path, e));
                }
            }
        }
        for (name, content) in [(TOPOLOGY_FILE, text), (SOURCE_FILE, &lab.topology.source)] {
            let file = dir.join(name);
            if std::fs::read_to_string(&file).ok().as_deref() != Some(content) {
                crate::files::replace(&file, content).map_err(|e| ReconcileError::io(&file, e))?;
            }
        }
        // A node failed on purpose that the new topology no longer has is
        // forgotten.
        let nodes: BTreeSet<String> = lab.topology.nodes.iter().map(|n| n.name.clone()).collect();
        if lab.failed.iter().any(|n| !nodes.contains(n)) {
            let failed = lab.failed.intersection(&nodes).cloned().collect();
            self.save_failed(&name, &mut lab, failed)?;
        }
        let mut outcome = Outcome::default();
        let topology = lab.topology.clone();
        let failed = lab.failed.clone();
        let result = self
            .converge(&mut lab, Scope::Full, true, &mut outcome)
            .await;
        if result.is_ok() {
            lab.whole_converged = Some(Instant::now());
        }
        let Outcome {
            changes,
            restarted,
            warnings,
            without_lease,
        } = outcome;
        lab.count_restarts(restarted);
        lab.note_leases(without_lease);
        if fresh
            && changes.is_empty()
            && matches!(result, Err(ReconcileError::ForeignNamespaces { .. }))
        {
            // Refused before anything was made: the lab never existed.
            lab.removed = true;
            self.unregister(&name, &entry).await;
            if made_dir {
                let _ = remove_run_dir(&dir);
            }
            return result.and(Err(ReconcileError::UnknownLab(name)));
        }
        lab.foreign = foreign_names(&warnings);
        let watching = Instant::now();
        self.watch(&lab);
        tracing::debug!(
            lab = name,
            ms = watching.elapsed().as_millis() as u64,
            "up: watching the lab"
        );
        result?;
        let mut warnings = warnings;
        warnings.extend(self.wait_for_masters(&topology, &failed).await);
        let report = UpReport {
            lab: name,
            changes: changes.into_vec(),
            warnings,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            lab = report.lab,
            changes = report.changes.len(),
            ms = report.elapsed_ms,
            "up"
        );
        Ok(report)
    }

    /// Takes a lab's entry out of the registry, if it is still this one.
    async fn unregister(&self, name: &str, entry: &Arc<Mutex<Lab>>) {
        let mut labs = self.labs.lock().await;
        if labs.get(name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            labs.remove(name);
        }
    }

    /// Removes everything a lab made: its nodes' Open vSwitch processes (by
    /// their pids), every namespace its manifest names and that is still
    /// the one it made (which takes their links along), and its run
    /// directory. A namespace that only has the lab's prefix is left alone
    /// and reported. A lab this daemon does not know changes nothing.
    /// Continues past errors and tolerates what is already gone.
    pub async fn down(&self, lab: &str) -> Result<DownReport, ReconcileError> {
        if let Some(problem) = ovslab_topology::lab_name_problem(lab) {
            return Err(ReconcileError::BadName(problem));
        }
        let started = Instant::now();
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let mut guard = entry.lock().await;
        if guard.removed {
            // Removed by another `down` while this one waited.
            return Err(ReconcileError::UnknownLab(lab.into()));
        }
        // Our sockets in its namespaces would keep them alive.
        self.watchers.forget(lab);
        self.host.forget(&naming::namespace_prefix(lab));
        let mut removed = Vec::new();
        let dir = self.lab_dir(lab);
        let mut nodes = Vec::new();
        let mut agents = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let node = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && crate::agents::is_agent_dir(&node) {
                    agents.push(entry.path());
                } else if entry.path().is_dir()
                    && ovslab_topology::object_name_problem(&node).is_none()
                {
                    let ns = naming::namespace(lab, &node);
                    nodes.push(NodeOvs::new(&self.config.run_root, lab, &node, &ns));
                }
            }
        }
        // The DHCP servers and clients first, then every node's processes,
        // each set at once.
        for stopped in join_all(agents.iter().map(|a| self.host.stop_agent(a))).await {
            removed.extend(stopped);
        }
        for stopped in join_all(nodes.iter().map(|n| self.host.stop_and_remove(n))).await {
            removed.extend(stopped);
        }
        let (deleted, left_alone, mut failures) =
            remove_namespaces(&*self.host, lab, &mut guard.manifest);
        removed.extend(deleted);
        if failures.is_empty() {
            match remove_run_dir(&dir) {
                Ok(true) => removed.push(format!("removed {}", dir.display())),
                Ok(false) => {}
                Err(source) => failures.push(TeardownFailure::RunDir { path: dir, source }),
            }
        }
        if !failures.is_empty() {
            // Still known, so that `down` can be tried again.
            return Err(ReconcileError::Teardown {
                lab: lab.to_string(),
                failures,
            });
        }
        // Forgotten before the lock goes, so nobody finds it half removed;
        // whoever waited for the lock sees `removed` and starts afresh.
        guard.removed = true;
        self.unregister(lab, &entry).await;
        drop(guard);
        Ok(DownReport {
            lab: lab.to_string(),
            removed,
            left_alone,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Every lab's entry as the registry holds them now (the registry is
    /// not held while they are used).
    async fn entries(&self) -> Vec<(String, Arc<Mutex<Lab>>)> {
        let labs = self.labs.lock().await;
        labs.iter()
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect()
    }

    /// Labs this daemon manages.
    pub async fn labs(&self) -> Vec<String> {
        self.labs.lock().await.keys().cloned().collect()
    }

    /// What each lab's plan takes of the host: namespaces, and descriptors
    /// to watch them (the daemon's quotas count both). Waits for a lab busy with an `up` or `down`.
    pub async fn footprints(&self) -> BTreeMap<String, crate::watch::Footprint> {
        let mut footprints = BTreeMap::new();
        for (name, entry) in self.entries().await {
            let lab = entry.lock().await;
            let desired = plan(&lab.topology, &LocalVlans::new());
            footprints.insert(name, crate::watch::Footprint::of(&desired));
        }
        footprints
    }

    /// The run directory of a lab's node (for tests and people).
    pub fn node_rundir(&self, lab: &str, node: &str) -> PathBuf {
        naming::node_rundir(&self.config.run_root, lab, node)
    }

    pub fn run_root(&self) -> &Path {
        &self.config.run_root
    }
}

/// How a namespace that has the lab's prefix but is not the lab's is
/// reported.
fn foreign_warning(namespace: &str) -> String {
    format!("namespace {namespace} has the lab's prefix but was not made by it: left alone")
}

/// The namespaces named by [`foreign_warning`]s.
fn foreign_names(warnings: &[String]) -> BTreeSet<String> {
    warnings
        .iter()
        .filter_map(|w| w.strip_prefix("namespace "))
        .filter_map(|w| w.split_once(' '))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// The current time as `2026-11-25T03:59:01Z`.
fn utc_now() -> String {
    utc(std::time::SystemTime::now())
}

/// A time as `2026-11-25T03:59:01Z` (RFC 3339, whole seconds, UTC).
fn utc(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_iso_8601() {
        let at = |secs| utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_575_333), "2026-11-25T02:55:33Z");
    }

    #[tokio::test]
    async fn the_saved_topology_is_read_back_with_its_source() {
        let root = std::env::temp_dir().join(format!("ovslab-engine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("seed");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(TOPOLOGY_FILE);
        std::fs::write(&file, ovslab_topology::SEED_YAML).unwrap();
        let engine = Engine::new(EngineConfig::new(&root));
        let (source, text) = engine.topology_text("seed").await.unwrap();
        assert_eq!(source, file.display().to_string());
        assert_eq!(text, ovslab_topology::SEED_YAML);
        assert!(matches!(
            engine.topology_text("other").await,
            Err(ReconcileError::UnknownLab(_))
        ));
        let _ = std::fs::remove_dir_all(&root);
    }
}
