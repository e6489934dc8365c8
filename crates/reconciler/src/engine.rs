//! The engine: owns every lab of the daemon and runs `up`, `down`, `status`
//! for them, one operation at a time per lab.
//!
//! `up` converges in phases, each one diffed against what exists so that a
//! converged lab sees no change at all:
//! 1. namespaces (stale ones of the lab removed, missing ones created);
//! 2. each node's `ovsdb-server` and `ovs-vswitchd`;
//! 3. the plan, made with the local VLAN ids the running switches use;
//! 4. links, addresses, routes and sysctls, phase by phase across namespaces;
//! 5. one OVSDB transaction per node, then a wait until vswitchd applied it;
//! 6. one flow batch per bridge, ended by a barrier;
//! 7. iptables rulesets (router NAT, compute-node firewalls), one
//!    `iptables-restore` per namespace, only where they differ.
//!
//! The topology is saved to `<run_root>/<lab>/topology.yaml` before anything
//! is built, so a failed `up` can always be finished by the next `up` or
//! removed by `down`, also after a daemon restart. What the lab creates is
//! written down in its [`Manifest`] first: only what the manifest names is
//! ever taken for the lab's, adopted or removed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use ovslab_api::{
    AuditStatus, CheckReport, CheckResult, DownReport, InstanceStatus, LabStatus, NodeStatus,
    ProcessStatus, RouterStatus, Target, TraceReport, TraceRequest, UpReport,
};
use ovslab_netlink::netns;
use ovslab_topology::naming;
use ovslab_topology::plan::{DesiredState, LocalVlans, plan};
use ovslab_topology::{Topology, format_mac};
use tokio::sync::Mutex;

use crate::ReconcileError;
use crate::diff::{LinkChange, diff_flows, diff_namespace, diff_switch};
use crate::drivers::{flows, links, rulesets, switch};
use crate::manifest::{Manifest, Ownership};
use crate::ovs_process::{Liveness, NodeOvs, OvsDaemon};

/// Where the engine keeps per-node run directories.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `/run/ovslab` by default; nodes run from `<run_root>/<lab>/<node>/`.
    pub run_root: PathBuf,
    /// The OVSDB schema new node databases are created from.
    pub schema: PathBuf,
}

impl EngineConfig {
    pub fn new(run_root: impl Into<PathBuf>) -> Self {
        EngineConfig {
            run_root: run_root.into(),
            schema: PathBuf::from(crate::ovs_process::DEFAULT_SCHEMA),
        }
    }
}

const TOPOLOGY_FILE: &str = "topology.yaml";

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
    /// Audits run, and when the last ended and how long it took.
    audits: u64,
    last_audit: Option<(String, u64)>,
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
            audits: 0,
            last_audit: None,
        }
    }

    fn count_restarts(&mut self, restarted: Vec<(String, OvsDaemon)>) {
        for (node, daemon) in restarted {
            *self.restarts.entry((node, daemon.program())).or_default() += 1;
        }
    }
}

/// Check and trace probes running at once, over all requests: each holds
/// a blocking thread and sockets in the lab's namespaces for up to seconds,
/// so many `ovslab check` at once must queue, not exhaust threads and
/// file descriptors.
static PROBES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PROBES_AT_ONCE);
const PROBES_AT_ONCE: usize = 16;

/// Audits whose repairs `ovslab status` lists.
const REPAIRS_KEPT: usize = 20;

/// Owns every lab of the daemon; all changes go through it.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    labs: Mutex<BTreeMap<String, Arc<Mutex<Lab>>>>,
    /// Kernel notices that wake the audits (only while audits run).
    watchers: crate::watch::Watchers,
    /// Rulesets known to be as wanted, not read again while unchanged.
    rulesets: Arc<rulesets::Verified>,
}

impl Engine {
    /// An engine that knows the labs whose topology is saved under the run
    /// root (each with its manifest), and finishes the removals a previous
    /// daemon was killed in.
    pub fn new(config: EngineConfig) -> Self {
        let mut labs = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&config.run_root) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !entry.path().is_dir() || ovslab_topology::lab_name_problem(&name).is_some() {
                    continue;
                }
                if let Some(lab) = adopt(&entry.path(), &name) {
                    tracing::info!(lab = name, "found a lab from a previous run");
                    labs.insert(name, Arc::new(Mutex::new(lab)));
                }
            }
        }
        Engine {
            config,
            labs: Mutex::new(labs),
            watchers: crate::watch::Watchers::default(),
            rulesets: Arc::default(),
        }
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
        let started = Instant::now();
        if fresh {
            // The manifest before the topology: a lab directory with a
            // topology always has one.
            std::fs::create_dir_all(&dir).map_err(|e| ReconcileError::io(&dir, e))?;
            lab.manifest
                .save()
                .map_err(|e| ReconcileError::io(lab.manifest.path(), e))?;
        }
        let file = dir.join(TOPOLOGY_FILE);
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text) {
            std::fs::write(&file, text).map_err(|e| ReconcileError::io(&file, e))?;
        }
        let mut changes = Vec::new();
        let mut restarted = Vec::new();
        let mut warnings = Vec::new();
        let topology = lab.topology.clone();
        let result = self
            .converge(
                &topology,
                &mut lab.manifest,
                &mut changes,
                &mut restarted,
                &mut warnings,
            )
            .await;
        lab.count_restarts(restarted);
        if fresh
            && changes.is_empty()
            && matches!(result, Err(ReconcileError::ForeignNamespaces { .. }))
        {
            // Refused before anything was made: the lab never existed.
            lab.removed = true;
            self.unregister(&name, &entry).await;
            let _ = remove_run_dir(&dir);
            return result.and(Err(ReconcileError::UnknownLab(name)));
        }
        lab.foreign = foreign_names(&warnings);
        self.watch(&lab.topology);
        result?;
        let report = UpReport {
            lab: name,
            changes,
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

    /// Converges a lab, adding one line per change made to `changes` (also
    /// those made before an error), and to `restarted` each OVS daemon it
    /// started again after it had died (its pidfile left behind).
    async fn converge(
        &self,
        topo: &Topology,
        manifest: &mut Manifest,
        changes: &mut Vec<String>,
        restarted: &mut Vec<(String, OvsDaemon)>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ReconcileError> {
        let lab = topo.lab.as_str();
        let mut clock = Instant::now();
        // What this converge changes is not drift for the audit to chase.
        let _quiet = self.watchers.quiet(&naming::namespace_prefix(lab));

        // 1. Namespaces: only those of the manifest are the lab's.
        let first = plan(topo, &LocalVlans::new());
        let wanted: BTreeSet<&str> = first.namespaces.iter().map(|n| n.name.as_str()).collect();
        let prefix = naming::namespace_prefix(lab);
        let mut existing = BTreeSet::new();
        let mut foreign = Vec::new();
        let save = |manifest: &Manifest| {
            manifest
                .save()
                .map_err(|e| ReconcileError::io(manifest.path(), e))
        };
        for name in netns::list()
            .map_err(|e| ReconcileError::io(Path::new(netns::NETNS_DIR), e))?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
        {
            let mounted = netns::exists(&name);
            let inode = mounted.then(|| netns::inode(&name)).flatten();
            match (manifest.ownership(&name, inode), inode) {
                (Ownership::Ours, _) => {
                    existing.insert(name);
                }
                // Made by a converge that was interrupted before it could
                // write the inode down.
                (Ownership::Promised, Some(inode)) => {
                    manifest.made(&name, inode);
                    save(manifest)?;
                    changes.push(format!(
                        "adopt namespace {name} (made before an interruption)"
                    ));
                    existing.insert(name);
                }
                // A create interrupted between making the file and
                // mounting the namespace on it, or a delete between
                // unmounting and removing the file, leaves a plain file:
                // it goes, and the namespace is made again if wanted.
                (Ownership::Promised | Ownership::Replaced, None) => {
                    netns::delete(&name).map_err(ReconcileError::netlink)?;
                    manifest.forget(&name);
                    save(manifest)?;
                    changes.push(format!("remove stale namespace file {name}"));
                }
                (Ownership::Replaced | Ownership::Foreign, _) => foreign.push(name),
            }
        }
        let in_the_way: Vec<String> = foreign
            .iter()
            .filter(|n| wanted.contains(n.as_str()))
            .cloned()
            .collect();
        if !in_the_way.is_empty() {
            return Err(ReconcileError::ForeignNamespaces {
                lab: lab.to_string(),
                names: in_the_way,
            });
        }
        warnings.extend(foreign.iter().map(|n| foreign_warning(n)));
        // Nodes no longer wanted: their Open vSwitch goes before their namespace.
        if let Ok(dir) = std::fs::read_dir(self.lab_dir(lab)) {
            for entry in dir.flatten() {
                let node = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir()
                    && ovslab_topology::object_name_problem(&node).is_none()
                    && topo.node(&node).is_none()
                {
                    let ovs = NodeOvs::new(
                        &self.config.run_root,
                        lab,
                        &node,
                        &naming::namespace(lab, &node),
                    );
                    changes.extend(ovs.stop_and_remove().await);
                    changes.push(format!("removed run directory of node {node}"));
                }
            }
        }
        for ns in existing.iter().filter(|n| !wanted.contains(n.as_str())) {
            netns::delete(ns).map_err(ReconcileError::netlink)?;
            manifest.forget(ns);
            save(manifest)?;
            changes.push(format!("delete namespace {ns}"));
        }
        // New namespaces a few at a time: each costs the kernel a
        // namespace set-up, which runs in parallel on several cores. Each
        // is promised in the manifest before it is made.
        let missing: Vec<&str> = first
            .namespaces
            .iter()
            .map(|ns| ns.name.as_str())
            .filter(|ns| !existing.contains(*ns))
            .collect();
        if !missing.is_empty() {
            manifest.promise(missing.iter().copied());
            save(manifest)?;
        }
        let creations: Vec<_> = missing
            .iter()
            .map(|ns| {
                let name = ns.to_string();
                async move {
                    let task = name.clone();
                    let made = tokio::task::spawn_blocking(move || netns::create(&task))
                        .await
                        .map_err(|e| ReconcileError::Io {
                            path: netns::NETNS_DIR.into(),
                            source: std::io::Error::other(e),
                        })
                        .and_then(|r| r.map_err(ReconcileError::netlink));
                    (name, made)
                }
            })
            .collect();
        let created: Vec<(String, Result<(), ReconcileError>)> = futures::stream::iter(creations)
            .buffered(NAMESPACE_CREATIONS)
            .collect()
            .await;
        let mut failed = None;
        for (name, made) in created {
            match made {
                Ok(()) => {
                    // Without an inode it stays promised: the next converge
                    // adopts it.
                    if let Some(inode) = netns::inode(&name) {
                        manifest.made(&name, inode);
                    }
                    changes.push(format!("create namespace {name}"));
                }
                Err(e) => {
                    manifest.forget(&name);
                    // A file there now is someone else's namespace, made
                    // since the list was read (a failed create removes its
                    // own).
                    let e = if netns::path(&name).exists() {
                        ReconcileError::ForeignNamespaces {
                            lab: lab.to_string(),
                            names: vec![name],
                        }
                    } else {
                        e
                    };
                    failed = failed.or(Some(e));
                }
            }
        }
        if !missing.is_empty() {
            save(manifest)?;
        }
        if let Some(e) = failed {
            return Err(e);
        }

        phase_done(lab, "namespaces", &mut clock);
        // 2. Open vSwitch on every node; a daemon that runs but does not
        // answer is killed first, and started again below like a dead one.
        let nodes: Vec<NodeOvs> = topo
            .nodes
            .iter()
            .map(|n| {
                NodeOvs::new(
                    &self.config.run_root,
                    lab,
                    &n.name,
                    &naming::namespace(lab, &n.name),
                )
            })
            .collect();
        for killed in join_all(nodes.iter().map(NodeOvs::kill_hung)).await {
            changes.extend(killed);
        }
        // Only the databases for now: ovs-vswitchd re-reads every link
        // and address of its namespace on each link change it hears of, so
        // it starts after the links are made (a compute node of a large lab
        // has hundreds), and sees them once.
        let died: Vec<bool> = nodes
            .iter()
            .map(|n| n.died(OvsDaemon::OvsdbServer))
            .collect();
        let results = join_all(nodes.iter().map(|n| n.ensure_database(&self.config.schema))).await;
        // Nodes whose vswitchd must be waited for: a database started under
        // a running vswitchd is reconnected to only after its back-off
        // (up to 8 s), and until then vswitchd answers no OpenFlow request.
        let mut wait_for_vswitchd = BTreeSet::new();
        for (i, ((node, result), died)) in nodes.iter().zip(results).zip(died).enumerate() {
            for daemon in result.map_err(ReconcileError::ovs_process)? {
                wait_for_vswitchd.insert(i);
                changes.push(format!("start {} on {}", daemon.program(), node.node));
                if died {
                    restarted.push((node.node.clone(), daemon));
                }
            }
        }

        phase_done(lab, "ovs processes", &mut clock);
        // 3. The plan, keeping the local VLAN ids in use.
        let clients = join_all(nodes.iter().map(switch::connect)).await;
        let clients: Vec<_> = clients.into_iter().collect::<Result<_, _>>()?;
        let actual_switches = join_all(clients.iter().map(switch::read)).await;
        let mut actual_switches: Vec<_> = actual_switches.into_iter().collect::<Result<_, _>>()?;
        // The datapath options, before vswitchd starts (it reads them once,
        // at start): a vswitchd running without them is restarted.
        for ((node, client), actual) in nodes.iter().zip(&clients).zip(&mut actual_switches) {
            let missing = switch::missing_root_config(actual);
            if missing.is_empty() {
                continue;
            }
            switch::ensure_root_config(client, actual).await?;
            changes.push(format!(
                "{}: set other_config {}",
                node.node,
                missing.join(" ")
            ));
            if let Some(pid) = node.stop_vswitchd().await {
                changes.push(format!(
                    "stopped ovs-vswitchd of {} (pid {pid}) to apply other_config",
                    node.node
                ));
            }
        }
        let mut previous = LocalVlans::new();
        for (node, actual) in nodes.iter().zip(&actual_switches) {
            for (network, tag) in switch::local_vlans(topo, actual) {
                previous.insert((node.node.clone(), network), tag);
            }
        }
        let desired = plan(topo, &previous);

        phase_done(lab, "ovsdb read and plan", &mut clock);
        // 4. Links, addresses, routes, sysctls.
        let (lines, created) = self.converge_links(&desired).await?;
        changes.extend(lines);

        phase_done(lab, "links", &mut clock);
        for (i, node) in nodes.iter().enumerate() {
            let died = node.died(OvsDaemon::OvsVswitchd);
            for daemon in node
                .ensure_vswitchd()
                .map_err(ReconcileError::ovs_process)?
            {
                changes.push(format!("start {} on {}", daemon.program(), node.node));
                wait_for_vswitchd.insert(i);
                if died {
                    restarted.push((node.node.clone(), daemon));
                }
            }
        }
        // A vswitchd started over an existing database first rebuilds its
        // bridges (and their flow sockets) from it.
        let waits = join_all(
            wait_for_vswitchd
                .iter()
                .map(|&i| switch::wait_applied(&clients[i])),
        )
        .await;
        waits.into_iter().collect::<Result<Vec<_>, _>>()?;

        // 5. OVSDB, one transaction per node.
        let ovs_results = join_all(
            desired
                .switches
                .iter()
                .zip(&clients)
                .zip(&actual_switches)
                .map(|((spec, client), actual)| {
                    let created = &created;
                    async move {
                        // A port whose device was just made again (deleted behind
                        // our back): its datapath port still reads the old one,
                        // so the row goes and comes back.
                        let mut actual = std::borrow::Cow::Borrowed(actual);
                        let remade: BTreeSet<&str> = spec
                            .bridges
                            .iter()
                            .flat_map(|b| &b.ports)
                            .filter(|p| p.patch_peer.is_none())
                            .map(|p| p.name.as_str())
                            .filter(|p| created.contains(&(spec.namespace.clone(), p.to_string())))
                            .collect();
                        let mut lines = Vec::new();
                        if !remade.is_empty() {
                            let mut without = spec.clone();
                            for b in &mut without.bridges {
                                b.ports.retain(|p| !remade.contains(p.name.as_str()));
                            }
                            let ops = diff_switch(lab, &without, &actual);
                            if !ops.is_empty() {
                                lines.extend(ops.iter().map(|o| format!("{}: {o}", spec.node)));
                                switch::apply(client, lab, &ops).await?;
                                actual = std::borrow::Cow::Owned(switch::read(client).await?);
                            }
                        }
                        let ops = diff_switch(lab, spec, &actual);
                        if ops.is_empty() {
                            let after = matches!(actual, std::borrow::Cow::Owned(_))
                                .then(|| actual.into_owned());
                            return Ok((lines, after));
                        }
                        lines.extend(ops.iter().map(|o| format!("{}: {o}", spec.node)));
                        switch::apply(client, lab, &ops).await?;
                        let after = switch::read(client).await?;
                        Ok::<_, ReconcileError>((lines, Some(after)))
                    }
                }),
        )
        .await;
        let mut switches_now = Vec::new();
        for (result, before) in ovs_results.into_iter().zip(actual_switches) {
            let (lines, after) = result?;
            changes.extend(lines);
            switches_now.push(after.unwrap_or(before));
        }

        phase_done(lab, "ovsdb transactions", &mut clock);
        // 6. Flows, one batch per bridge.
        let flow_results = join_all(
            desired
                .switches
                .iter()
                .zip(&nodes)
                .zip(&clients)
                .zip(&switches_now)
                .map(|(((spec, node), client), actual)| {
                    self.converge_flows(&desired, spec, node, client, actual)
                }),
        )
        .await;
        for result in flow_results {
            changes.extend(result?);
        }

        phase_done(lab, "flows", &mut clock);
        // 7. iptables: each router's NAT, each compute node's firewall.
        let rulesets = desired
            .routers
            .iter()
            .map(|r| (r.namespace.as_str(), rulesets::router(r), None))
            .chain(desired.firewalls.iter().map(|f| {
                (
                    f.namespace.as_str(),
                    rulesets::firewall(f),
                    Some(rulesets::ipsets(f)),
                )
            }));
        let results = join_all(rulesets.map(|(ns, ruleset, sets)| {
            rulesets::converge(ns, ruleset, sets, self.rulesets.clone())
        }))
        .await;
        for result in results {
            changes.extend(result?);
        }
        phase_done(lab, "iptables", &mut clock);
        Ok(())
    }

    /// Converges every namespace's links; returns what it did, and the
    /// devices it created (namespace, name).
    async fn converge_links(
        &self,
        desired: &DesiredState,
    ) -> Result<(Vec<String>, BTreeSet<(String, String)>), ReconcileError> {
        let handles = Arc::new(links::Handles::default());
        // Bounded: every namespace read holds a netlink connection. Each
        // read is a task of its own, so that every core of the runtime
        // takes part.
        let reads: Vec<_> = desired
            .namespaces
            .iter()
            .map(|ns| {
                let (handles, ns) = (handles.clone(), ns.clone());
                async move {
                    tokio::spawn(async move { links::read(&handles, &ns).await })
                        .await
                        .map_err(|e| ReconcileError::Io {
                            path: netns::NETNS_DIR.into(),
                            source: std::io::Error::other(e),
                        })?
                }
            })
            .collect();
        let actual: Vec<_> = futures::stream::iter(reads)
            .buffered(links::Handles::KEPT / 2)
            .collect()
            .await;
        let mut all: Vec<(&str, LinkChange)> = Vec::new();
        for (ns, actual) in desired.namespaces.iter().zip(actual) {
            let actual = actual?;
            all.extend(
                diff_namespace(ns, Some(&actual))
                    .into_iter()
                    .map(|c| (ns.name.as_str(), c)),
            );
        }
        all.sort_by_key(|(_, c)| c.phase());
        let mut created = BTreeSet::new();
        for (ns, change) in &all {
            if let LinkChange::CreateVeth {
                name,
                peer,
                peer_namespace,
            } = change
            {
                created.insert((ns.to_string(), name.clone()));
                created.insert((peer_namespace.clone(), peer.clone()));
            }
        }
        let lines = all
            .iter()
            .map(|(ns, change)| format!("{ns}: {change}"))
            .collect();
        // Phase by phase; within a phase, namespaces in parallel and each
        // namespace's changes in order.
        for phase in all.chunk_by(|a, b| a.1.phase() == b.1.phase()) {
            let mut by_ns: BTreeMap<&str, Vec<&LinkChange>> = BTreeMap::new();
            for (ns, change) in phase {
                by_ns.entry(ns).or_default().push(change);
            }
            let applies: Vec<_> = by_ns
                .into_iter()
                .map(|(ns, changes)| {
                    let handles = &*handles;
                    async move {
                        for change in changes {
                            links::apply(handles, ns, change).await?;
                        }
                        Ok::<_, ReconcileError>(())
                    }
                })
                .collect();
            let results: Vec<_> = futures::stream::iter(applies)
                .buffer_unordered(links::Handles::KEPT / 2)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<_>, _>>()?;
        }
        Ok((lines, created))
    }

    async fn converge_flows(
        &self,
        desired: &DesiredState,
        spec: &ovslab_topology::plan::SwitchSpec,
        node: &NodeOvs,
        switch: &switch::SwitchClient,
        actual: &crate::actual::ActualSwitch,
    ) -> Result<Vec<String>, ReconcileError> {
        switch::still_connected(switch).await?;
        let mut lines = Vec::new();
        for bridge in &spec.bridges {
            let wanted: Vec<_> = spec
                .flows
                .iter()
                .filter(|f| f.bridge == bridge.name)
                .cloned()
                .collect();
            let client = flows::connect(node, &bridge.name).await?;
            let ports = switch::ofports(actual, &bridge.name);
            let present = flows::read(&client, &bridge.name, &ports).await?;
            let (add, delete) = diff_flows(&wanted, desired.cookie, &present);
            if add.is_empty() && delete.is_empty() {
                continue;
            }
            for f in &delete {
                lines.push(format!("{}: {}: delete flow {f}", spec.node, bridge.name));
            }
            for f in &add {
                lines.push(format!(
                    "{}: {}: add flow {}",
                    spec.node,
                    bridge.name,
                    flows::describe(f)
                ));
            }
            flows::apply(&client, &bridge.name, desired.cookie, &ports, &add, &delete).await?;
        }
        Ok(lines)
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
        self.watchers.forget(&naming::namespace_prefix(lab));
        self.rulesets.forget(&naming::namespace_prefix(lab));
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        let dir = self.lab_dir(lab);
        let mut nodes = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let node = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && ovslab_topology::object_name_problem(&node).is_none() {
                    let ns = naming::namespace(lab, &node);
                    nodes.push(NodeOvs::new(&self.config.run_root, lab, &node, &ns));
                }
            }
        }
        // Every node's processes stop at once.
        for stopped in join_all(nodes.iter().map(NodeOvs::stop_and_remove)).await {
            removed.extend(stopped);
        }
        let (deleted, left_alone, failed) = remove_namespaces(lab, &mut guard.manifest);
        removed.extend(deleted);
        errors.extend(failed);
        if errors.is_empty() {
            match remove_run_dir(&dir) {
                Ok(true) => removed.push(format!("removed {}", dir.display())),
                Ok(false) => {}
                Err(e) => errors.push(format!("{}: {e}", dir.display())),
            }
        }
        if !errors.is_empty() {
            // Still known, so that `down` can be tried again.
            return Err(ReconcileError::Teardown {
                lab: lab.to_string(),
                errors,
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

    /// Checks every lab against its plan and repairs what differs: a dead
    /// `ovsdb-server` or `ovs-vswitchd` is restarted (and its bridges,
    /// ports and flows re-installed), a deleted namespace, link, flow or
    /// iptables rule is put back. It is the same converge as `up`, so it
    /// finds anything `up` would fix. A lab busy with a user's request is
    /// skipped this time. Returns the labs repaired.
    pub async fn audit(&self) -> Vec<String> {
        let entries: Vec<(String, Arc<Mutex<Lab>>)> = self
            .labs
            .lock()
            .await
            .iter()
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        let mut repaired = Vec::new();
        for (name, entry) in entries {
            let Ok(mut lab) = entry.try_lock() else {
                continue;
            };
            if lab.removed {
                continue;
            }
            let topology = lab.topology.clone();
            let started = Instant::now();
            let mut changes = Vec::new();
            let mut restarted = Vec::new();
            let mut warnings = Vec::new();
            let result = self
                .converge(
                    &topology,
                    &mut lab.manifest,
                    &mut changes,
                    &mut restarted,
                    &mut warnings,
                )
                .await;
            lab.count_restarts(restarted);
            let foreign = foreign_names(&warnings);
            if foreign != lab.foreign {
                for warning in &warnings {
                    tracing::warn!(lab = name, "audit: {warning}");
                }
                lab.foreign = foreign;
            }
            self.watch(&topology);
            lab.audits += 1;
            lab.last_audit = Some((utc_now(), started.elapsed().as_millis() as u64));
            if let Err(e) = &result {
                tracing::warn!(lab = name, "audit: cannot repair the lab yet: {e}");
            }
            if changes.is_empty() {
                continue;
            }
            tracing::warn!(
                lab = name,
                repairs = changes.len(),
                "repaired lab {name}, which differed from its plan: {}",
                changes.join("; ")
            );
            lab.repair_count += changes.len() as u64;
            lab.repairs.push_back(repair_summary(&utc_now(), &changes));
            while lab.repairs.len() > REPAIRS_KEPT {
                lab.repairs.pop_front();
            }
            repaired.push(name);
        }
        repaired
    }

    /// Audits every `every` (see [`Engine::audit`]), or less often when an
    /// audit takes long: the pause is at least five times the last audit's
    /// duration, so a large lab never costs more than a fifth of a core.
    /// The next audit starts at once when an Open vSwitch daemon this
    /// process started exits, and when the kernel says a link of a node
    /// or a namespace was deleted (see [`crate::watch`]) — then still
    /// spending at most a fifth of the time auditing.
    ///
    /// `after_each` runs after every audit (the daemon hands the memory an
    /// audit of a large lab freed back to the system there).
    pub fn spawn_audits(
        self: &Arc<Self>,
        every: Duration,
        after_each: fn(),
    ) -> tokio::task::JoinHandle<()> {
        self.watchers.enable();
        let drift = self.watchers.drift();
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = every;
            let mut last = Duration::ZERO;
            let mut ended = Instant::now();
            loop {
                let noticed = tokio::select! {
                    () = tokio::time::sleep(pause) => false,
                    () = crate::ovs_process::exited().notified() => false,
                    () = drift.notified() => true,
                };
                if noticed {
                    let gap = last * 4;
                    if ended.elapsed() < gap {
                        tokio::time::sleep(gap - ended.elapsed()).await;
                    }
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let started = Instant::now();
                engine.audit().await;
                after_each();
                ended = Instant::now();
                last = ended - started;
                pause = every.max(last * 5);
            }
        })
    }

    /// Watches the node namespaces of a lab for lost links, and its OVS
    /// daemons for their exit (when audits run).
    fn watch(&self, topology: &Topology) {
        let namespaces: Vec<String> = topology
            .nodes
            .iter()
            .map(|n| naming::namespace(&topology.lab, &n.name))
            .collect();
        self.watchers.watch(namespaces.iter().map(String::as_str));
        let pids = topology.nodes.iter().zip(&namespaces).flat_map(|(n, ns)| {
            let ovs = NodeOvs::new(&self.config.run_root, &topology.lab, &n.name, ns);
            OvsDaemon::ALL.map(|d| ovs.pid(d))
        });
        self.watchers.watch_processes(pids.flatten());
    }

    /// Labs this daemon manages.
    pub async fn labs(&self) -> Vec<String> {
        self.labs.lock().await.keys().cloned().collect()
    }

    /// How many namespaces each lab's plan has (the daemon's quotas count
    /// them). Waits for a lab busy with an `up` or `down`.
    pub async fn namespace_counts(&self) -> BTreeMap<String, usize> {
        let entries: Vec<(String, Arc<Mutex<Lab>>)> = self
            .labs
            .lock()
            .await
            .iter()
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        let mut counts = BTreeMap::new();
        for (name, entry) in entries {
            let lab = entry.lock().await;
            counts.insert(
                name,
                plan(&lab.topology, &LocalVlans::new()).namespaces.len(),
            );
        }
        counts
    }

    pub async fn status(&self, lab: &str) -> Result<LabStatus, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let lab = entry.lock().await;
        let topo = &lab.topology;
        let namespaces: BTreeSet<String> = netns::list().unwrap_or_default().into_iter().collect();
        let mut healthy = true;
        let mut nodes = Vec::new();
        // Every node at once, each daemon asked a cheap question with a
        // short deadline: a hung one is reported, never waited for.
        let probes = join_all(topo.nodes.iter().map(|node| {
            let ns = naming::namespace(&topo.lab, &node.name);
            let ovs = NodeOvs::new(&self.config.run_root, &topo.lab, &node.name, &ns);
            async move {
                let (ovsdb, vswitchd) = tokio::join!(
                    ovs.probe(OvsDaemon::OvsdbServer, STATUS_DEADLINE),
                    ovs.probe(OvsDaemon::OvsVswitchd, STATUS_DEADLINE)
                );
                let local_vlans = match &ovsdb {
                    Liveness::Answering(_) => {
                        match switch::connect_with_deadline(&ovs, STATUS_DEADLINE).await {
                            Ok(client) => switch::read(&client).await.ok(),
                            Err(_) => None,
                        }
                    }
                    _ => None,
                };
                (ns, [ovsdb, vswitchd], local_vlans)
            }
        }))
        .await;
        for (node, (ns, liveness, actual)) in topo.nodes.iter().zip(probes) {
            let pid = Liveness::pid;
            let (ovsdb, vswitchd) = (pid(&liveness[0]), pid(&liveness[1]));
            let processes = OvsDaemon::ALL
                .iter()
                .zip(&liveness)
                .map(|(daemon, l)| ProcessStatus {
                    program: daemon.program().to_string(),
                    pid: pid(l),
                    running: pid(l).is_some(),
                    state: l.state().to_string(),
                    restarts: lab
                        .restarts
                        .get(&(node.name.clone(), daemon.program()))
                        .copied()
                        .unwrap_or(0),
                })
                .collect();
            let exists = namespaces.contains(&ns);
            healthy &= exists && liveness.iter().all(|l| matches!(l, Liveness::Answering(_)));
            let local_vlans = actual
                .map(|actual| switch::local_vlans(topo, &actual).into_iter().collect())
                .unwrap_or_default();
            nodes.push(NodeStatus {
                name: node.name.clone(),
                role: format!("{:?}", node.role).to_lowercase(),
                namespace: ns,
                namespace_exists: exists,
                ovsdb_server_pid: ovsdb,
                ovs_vswitchd_pid: vswitchd,
                local_vlans,
                processes,
            });
        }
        let instances = topo
            .instances
            .iter()
            .map(|i| {
                let ns = naming::namespace(&topo.lab, &i.name);
                let exists = namespaces.contains(&ns);
                healthy &= exists;
                InstanceStatus {
                    name: i.name.clone(),
                    node: i.node.clone(),
                    network: i.network.clone(),
                    address: i.address.to_string(),
                    mac: format_mac(&i.mac),
                    namespace: ns,
                    namespace_exists: exists,
                }
            })
            .collect();
        let desired = plan(topo, &LocalVlans::new());
        let routers = topo
            .routers
            .iter()
            .map(|r| {
                let ns = ovslab_topology::plan::router_namespace(&topo.lab, &r.name);
                let exists = namespaces.contains(&ns);
                healthy &= exists;
                let addresses = desired
                    .namespace(&ns)
                    .map(|n| {
                        n.links
                            .iter()
                            .flat_map(|l| l.addresses.iter().map(|a| format!("{} {a}", l.name)))
                            .collect()
                    })
                    .unwrap_or_default();
                RouterStatus {
                    name: r.name.clone(),
                    node: r.node.clone(),
                    addresses,
                    namespace: ns,
                    namespace_exists: exists,
                }
            })
            .collect();
        Ok(LabStatus {
            routers,
            lab: topo.lab.clone(),
            source: topo.source.clone(),
            nodes,
            instances,
            healthy,
            repairs: lab.repairs.iter().cloned().collect(),
            repair_count: lab.repair_count,
            audits: lab.last_audit.as_ref().map(|(at, ms)| AuditStatus {
                count: lab.audits,
                last_at: at.clone(),
                last_ms: *ms,
            }),
        })
    }

    /// Runs the lab's declared checks, each with its own probe, all at once
    /// (up to [`PROBES_AT_ONCE`] probes over all requests).
    pub async fn check(&self, lab: &str) -> Result<CheckReport, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let topology = entry.lock().await.topology.clone();
        let started = Instant::now();
        let topology = Arc::new(topology);
        // Checks run at once, except those that listen on the same port in
        // the same namespace, which run one after the other.
        let mut groups: BTreeMap<Option<(String, u16)>, Vec<usize>> = BTreeMap::new();
        for (i, check) in topology.checks.iter().enumerate() {
            match crate::checks::listen_key(&topology, check) {
                Some(key) => groups.entry(Some(key)).or_default().push(i),
                None => groups.entry(None).or_default().push(i),
            }
        }
        let mut batches: Vec<Vec<usize>> = groups
            .remove(&None)
            .unwrap_or_default()
            .into_iter()
            .map(|i| vec![i])
            .collect();
        batches.extend(groups.into_values());
        let runs = batches.into_iter().map(|batch| {
            let topology = topology.clone();
            let tags: Vec<u16> = batch.iter().map(|_| crate::checks::next_tag()).collect();
            async move {
                // Held by the probe's thread, so a request that goes away
                // does not free it early.
                let permit = PROBES.acquire().await;
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    batch
                        .into_iter()
                        .zip(tags)
                        .map(|(i, tag)| {
                            (i, crate::checks::run(&topology, &topology.checks[i], tag))
                        })
                        .collect::<Vec<_>>()
                })
                .await
            }
        });
        let mut indexed = Vec::new();
        for joined in join_all(runs).await {
            match joined {
                Ok(done) => indexed.extend(done),
                Err(e) => tracing::error!(error = %e, "a check task failed"),
            }
        }
        indexed.sort_by_key(|(i, _)| *i);
        let mut results: Vec<CheckResult> = Vec::new();
        for (i, check) in topology.checks.iter().enumerate() {
            match indexed.iter().position(|(j, _)| *j == i) {
                Some(pos) => results.push(indexed[pos].1.clone()),
                None => results.push(CheckResult {
                    name: check.name.clone(),
                    passed: false,
                    detail: "the check's task failed".into(),
                }),
            }
        }
        Ok(CheckReport {
            lab: lab.to_string(),
            results,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Follows one probe through the lab (see [`crate::trace`]).
    pub async fn trace(
        &self,
        lab: &str,
        request: TraceRequest,
    ) -> Result<TraceReport, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let topology = entry.lock().await.topology.clone();
        let run_root = self.config.run_root.clone();
        let tag = crate::checks::next_tag();
        let lab_name = lab.to_string();
        let permit = PROBES.acquire().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::trace::run(&topology, &run_root, &request, tag)
        })
        .await
        .map_err(|e| ReconcileError::Io {
            path: "trace".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ReconcileError::Trace {
            lab: lab_name,
            source,
        })
    }

    /// Resolves a node, instance or physical network to its namespace.
    pub async fn target(&self, lab: &str, name: &str) -> Result<Target, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let guard = entry.lock().await;
        let topo = &guard.topology;
        let mut namespace = naming::namespace(lab, name);
        let (kind, env) = if topo.node(name).is_some() {
            let ovs = NodeOvs::new(&self.config.run_root, lab, name, &namespace);
            ("node", ovs.env())
        } else if topo.instance(name).is_some() {
            ("instance", vec![])
        } else if topo.routers.iter().any(|r| r.name == name) {
            namespace = ovslab_topology::plan::router_namespace(lab, name);
            ("router", vec![])
        } else if topo.external_hosts.iter().any(|h| h.name == name) {
            ("external-host", vec![])
        } else if topo.external_networks.iter().any(|e| e.name == name) {
            ("external-network", vec![])
        } else if topo.physical_networks.iter().any(|p| p.name == name) {
            ("physical-network", vec![])
        } else {
            return Err(ReconcileError::UnknownTarget {
                lab: lab.into(),
                name: name.into(),
            });
        };
        Ok(Target {
            lab: lab.into(),
            name: name.into(),
            kind: kind.into(),
            namespace,
            env,
        })
    }

    /// The saved topology file of a lab as `(source, text)`, so that a client
    /// can draw or inspect exactly what the daemon built.
    pub async fn topology_text(&self, lab: &str) -> Result<(String, String), ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let source = entry.lock().await.topology.source.clone();
        let file = self.lab_dir(lab).join(TOPOLOGY_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| ReconcileError::io(&file, e))?;
        Ok((source, text))
    }

    /// The run directory of a lab's node (for tests and people).
    pub fn node_rundir(&self, lab: &str, node: &str) -> PathBuf {
        naming::node_rundir(&self.config.run_root, lab, node)
    }

    pub fn run_root(&self) -> &Path {
        &self.config.run_root
    }
}

/// A lab from a previous run, found in its run directory `dir`: its saved
/// topology and its manifest. A lab of an ovslab that kept no manifest
/// gets one naming the namespaces of its plan that exist. A directory with
/// a manifest and no topology is a `down` that a killed daemon left
/// unfinished: it is finished here.
fn adopt(dir: &Path, name: &str) -> Option<Lab> {
    let manifest = match Manifest::load(dir, name) {
        Ok(manifest) => manifest,
        Err(e) => {
            tracing::warn!(
                lab = name,
                "ignoring {}: {e}",
                dir.join(crate::manifest::MANIFEST_FILE).display()
            );
            return None;
        }
    };
    let file = dir.join(TOPOLOGY_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(_) => {
            if let Some(mut manifest) = manifest {
                tracing::info!(lab = name, "finishing the removal of the lab");
                let (_, left_alone, errors) = remove_namespaces(name, &mut manifest);
                for line in left_alone.iter().chain(&errors) {
                    tracing::warn!(lab = name, "{line}");
                }
                if errors.is_empty() {
                    let _ = remove_run_dir(dir);
                }
            } else {
                // An `up` killed before it wrote anything.
                let _ = std::fs::remove_dir(dir);
            }
            return None;
        }
    };
    let topology = match ovslab_topology::parse(&file.display().to_string(), &text) {
        Ok(topology) if topology.lab == name => topology,
        Ok(topology) => {
            tracing::warn!(file = %file.display(), "ignoring saved topology of lab `{}` in lab `{name}`'s directory", topology.lab);
            return None;
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "ignoring saved topology");
            return None;
        }
    };
    let manifest = match manifest {
        Some(manifest) => manifest,
        None => {
            let mut manifest = Manifest::new(dir, name);
            for ns in plan(&topology, &LocalVlans::new()).namespaces {
                if let Some(inode) = netns::exists(&ns.name)
                    .then(|| netns::inode(&ns.name))
                    .flatten()
                {
                    manifest.made(&ns.name, inode);
                }
            }
            if let Err(e) = manifest.save() {
                tracing::warn!(
                    lab = name,
                    "cannot write {}: {e}",
                    manifest.path().display()
                );
                return None;
            }
            tracing::info!(
                lab = name,
                "wrote the manifest of a lab from before manifests"
            );
            manifest
        }
    };
    Some(Lab::new(topology, manifest))
}

/// Deletes the namespaces of a lab's manifest that are still the ones it
/// made. Returns what was deleted, what was left alone (the manifest's
/// namespaces replaced by someone else's, and namespaces with the lab's
/// prefix it never made), and the errors.
fn remove_namespaces(
    lab: &str,
    manifest: &mut Manifest,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut deleted, mut left_alone, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let recorded: Vec<(String, Option<u64>)> = manifest
        .namespaces()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
    for (ns, _) in &recorded {
        let present = netns::path(ns).exists();
        let inode = netns::exists(ns).then(|| netns::inode(ns)).flatten();
        let ownership = manifest.ownership(ns, inode);
        if !present {
            manifest.forget(ns);
            continue;
        }
        // The lab's; or, not being a mounted namespace, the plain file that
        // an interrupted create or delete of the lab's leaves.
        let ours = match ownership {
            Ownership::Ours | Ownership::Promised => true,
            Ownership::Replaced => inode.is_none(),
            Ownership::Foreign => false,
        };
        if ours {
            match netns::delete(ns) {
                Ok(()) => {
                    deleted.push(match inode {
                        Some(_) => format!("deleted namespace {ns}"),
                        None => format!("removed stale namespace file {ns}"),
                    });
                    manifest.forget(ns);
                }
                Err(e) => errors.push(format!("namespace {ns}: {e}")),
            }
        } else if ownership == Ownership::Replaced {
            left_alone.push(format!(
                "namespace {ns}: not the namespace the lab made (made again by someone else)"
            ));
            manifest.forget(ns);
        }
    }
    let prefix = naming::namespace_prefix(lab);
    match netns::list() {
        Ok(list) => left_alone.extend(
            list.iter()
                .filter(|n| n.starts_with(&prefix) && !recorded.iter().any(|(r, _)| r == *n))
                .map(|n| foreign_warning(n)),
        ),
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = manifest.save() {
        errors.push(format!("{}: {e}", manifest.path().display()));
    }
    (deleted, left_alone, errors)
}

/// Removes a lab's run directory, the manifest last, so that a daemon
/// killed half-way still finds what the lab was. `false`: it was gone.
fn remove_run_dir(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == crate::manifest::MANIFEST_FILE {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    match std::fs::remove_file(dir.join(crate::manifest::MANIFEST_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_dir(dir)?;
    Ok(true)
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

/// One audit's repairs on one line: the time, how many, the first few.
fn repair_summary(at: &str, changes: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = format!("{at} {} repaired: ", changes.len());
    text.push_str(
        &changes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if changes.len() > SHOWN {
        text.push_str(&format!("; … {} more", changes.len() - SHOWN));
    }
    text
}

/// The current time as `2026-11-25T03:59:01Z`.
fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// Seconds since the epoch as `2026-11-25T03:59:01Z`.
fn utc(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// How long `status` waits for each OVS daemon's answer: short, since
/// a running daemon answers in well under a millisecond and a hung one
/// must not hold `status` (nor the lab's lock) for long.
const STATUS_DEADLINE: Duration = Duration::from_secs(1);

/// Namespaces created at the same time.
const NAMESPACE_CREATIONS: usize = 8;

/// Logs (at debug) how long a phase of `up` took, for profiling.
fn phase_done(lab: &str, phase: &str, clock: &mut Instant) {
    tracing::debug!(
        lab,
        phase,
        ms = clock.elapsed().as_millis() as u64,
        "up phase done"
    );
    *clock = Instant::now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_iso_8601() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_575_333), "2026-11-25T02:55:33Z");
    }

    #[test]
    fn an_audit_is_summed_up_in_one_line() {
        let changes: Vec<String> = (1..=6).map(|i| format!("change {i}")).collect();
        assert_eq!(
            repair_summary("T", &changes),
            "T 6 repaired: change 1; change 2; change 3; change 4; … 2 more"
        );
        assert_eq!(repair_summary("T", &changes[..1]), "T 1 repaired: change 1");
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
