//! One converge of one lab: the phases of `up` (and of every audit), in the
//! order [`Engine::converge`] runs them. Each phase diffs what it wants
//! against what exists, so a converged lab sees no change at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::future::join_all;
use ovslab_netlink::netns;
use ovslab_topology::Topology;
use ovslab_topology::naming;
use ovslab_topology::plan::{
    DesiredState, FirewallSpec, FlowSpec, LocalVlans, NamespaceSpec, OvsBridge, RouterSpec,
    SwitchSpec, namespace_hosts, plan,
};

use super::{Engine, Lab, foreign_warning};
use crate::ReconcileError;
use crate::actual::{ActualNamespace, ActualSwitch};
use crate::diff::{LinkChange, diff_flows, diff_namespace, diff_switch};
use crate::drivers::{flows, rulesets, switch};
use crate::fingerprint::Fingerprint;
use crate::host::Host;
use crate::manifest::{Manifest, Ownership};
use crate::ovs_process::{NodeOvs, OvsDaemon};

/// What a converge did, also when it failed half-way.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// One line per change made.
    pub changes: Lines,
    /// Each OVS daemon started again after it had died (its pidfile left
    /// behind), by node.
    pub restarted: Vec<(String, OvsDaemon)>,
    /// Namespaces with the lab's prefix that are not the lab's.
    pub warnings: Vec<String>,
    /// The DHCP instances without their lease, when the DHCP phase ran.
    pub without_lease: Option<BTreeSet<String>>,
}

/// Lines of text kept as one: the change lines of a converge. An `up` of
/// 10,000 instances makes some 330,000 of them, which as separate
/// `String`s cost the daemon about 11 MB more (a pointer, a length, a
/// capacity and an allocation each) at the peak of its memory, the end of
/// the flows phase.
#[derive(Debug, Default)]
pub(super) struct Lines {
    text: String,
    /// Where each line ends in `text`.
    ends: Vec<u32>,
}

impl Lines {
    pub fn push(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        let end = u32::try_from(self.text.len()).expect("change lines under 4 GiB");
        self.ends.push(end);
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.text[start as usize..end as usize])
    }

    /// The lines, each a `String` (what the API's reports hold).
    pub fn into_vec(self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl<S: AsRef<str>> Extend<S> for Lines {
    fn extend<I: IntoIterator<Item = S>>(&mut self, lines: I) {
        for line in lines {
            self.push(line);
        }
    }
}

/// What a lab keeps from one converge for the next.
struct Known<'a> {
    planned: &'a mut Option<Planned>,
    links_read: &'a mut LinksRead,
    flows_read: &'a mut FlowsRead,
    trust: bool,
}

/// Each namespace whose links a converge read and left as planned: the
/// spec it converged them to (its [`Fingerprint`]), and its watcher's last
/// notice taken before the read (see
/// [`crate::watch::Watchers::last_notice`]).
pub(super) type LinksRead = BTreeMap<String, (Fingerprint, u64)>;

/// Each bridge whose flows a converge read and left as planned, by (node,
/// bridge): what it converged them to, and the flow monitor's last notice
/// taken before the read.
pub(super) type FlowsRead = BTreeMap<(String, String), FlowsKnown>;

#[derive(Debug)]
pub(super) struct FlowsKnown {
    /// The flows wanted, as a [`Fingerprint`].
    wanted: Fingerprint,
    ports: BTreeMap<String, u32>,
    cookie: u64,
    notice: u64,
}

/// What a converge looks at.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope<'a> {
    /// Everything of the lab (`up`, the full audit).
    Full,
    /// What runs on `nodes` and, with `wire`, the namespaces no node hosts;
    /// the agents (DHCP, keepalived, metadata) of the whole lab, which
    /// cost little to look at.
    Part {
        nodes: &'a BTreeSet<String>,
        wire: bool,
    },
}

/// The plan a lab was last converged with, kept for the next converge:
/// planning a lab of 10,000 instances takes a third of a second, and an
/// audit of one node must not.
#[derive(Debug)]
pub(super) struct Planned {
    /// What the plan was made from: the local VLANs read from the switches
    /// and the failed nodes.
    previous: LocalVlans,
    failed: BTreeSet<String>,
    desired: Arc<DesiredState>,
    /// Every namespace of the plan, failed nodes' too.
    names: Arc<BTreeSet<String>>,
    /// The node that hosts each namespace (see [`namespace_hosts`]).
    pub hosts: Arc<BTreeMap<String, String>>,
}

impl Planned {
    fn new(topo: &Topology, previous: LocalVlans, failed: &BTreeSet<String>) -> Planned {
        let mut desired = plan(topo, &previous);
        let names = desired.namespaces.iter().map(|n| n.name.clone()).collect();
        desired.fail_nodes(topo, failed);
        Planned {
            previous,
            failed: failed.clone(),
            desired: Arc::new(desired),
            names: Arc::new(names),
            hosts: Arc::new(namespace_hosts(topo)),
        }
    }

    /// Whether every local VLAN in `read` (what the switches use) is the
    /// one this plan gives that node's network.
    fn gives(&self, read: &LocalVlans) -> bool {
        let by_node: BTreeMap<&str, &BTreeMap<String, u16>> = self
            .desired
            .switches
            .iter()
            .map(|s| (s.node.as_str(), &s.local_vlans))
            .collect();
        read.iter().all(|((node, network), tag)| {
            by_node
                .get(node.as_str())
                .and_then(|vlans| vlans.get(network))
                == Some(tag)
        })
    }

    /// The desired state, for watching the lab.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// The plan as [`plan`] makes it, when no node is failed (a failed
    /// node's part is left out of this one).
    pub fn whole(&self) -> Option<&DesiredState> {
        self.failed.is_empty().then_some(&*self.desired)
    }
}

impl<H: Host> Engine<H> {
    /// Converges a lab, phase by phase; `outcome` gets what was done, also
    /// the changes made before an error.
    ///
    /// A converge that fails (a daemon that missed a deadline, a socket
    /// that refuses or never appeared, …) asks every OVS daemon of the lab
    /// whether it is hung (killing the hung ones, which the converge then
    /// starts again) and goes once more. Asking on every converge instead
    /// cost each `up` and audit a connection and a request per daemon
    /// (10–20 ms for a 10-node lab).
    ///
    /// With `trust`, a namespace whose plan did not change and whose
    /// watcher heard nothing since the last converge read its links is not
    /// read again (see [`Watchers::last_notice`]); the full audit, the
    /// safety net, trusts nothing.
    ///
    /// [`Watchers::last_notice`]: crate::watch::Watchers::last_notice
    pub(super) async fn converge(
        &self,
        lab: &mut Lab,
        scope: Scope<'_>,
        trust: bool,
        outcome: &mut Outcome,
    ) -> Result<(), ReconcileError> {
        let Lab {
            topology,
            failed,
            manifest,
            planned,
            links_read,
            flows_read,
            ..
        } = lab;
        let mut known = Known {
            planned,
            links_read,
            flows_read,
            trust,
        };
        match self
            .converge_once(
                topology, failed, manifest, &mut known, scope, outcome, false,
            )
            .await
        {
            // Refusals: nothing was tried that a hung daemon could fail.
            Err(e @ (ReconcileError::ForeignNamespaces { .. } | ReconcileError::BadName(_))) => {
                Err(e)
            }
            Err(e) => {
                tracing::warn!(
                    lab = topology.lab,
                    "{e}: looking for hung Open vSwitch daemons, then once more"
                );
                known.trust = false;
                self.converge_once(topology, failed, manifest, &mut known, scope, outcome, true)
                    .await
            }
            done => done,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn converge_once(
        &self,
        topo: &Topology,
        failed: &BTreeSet<String>,
        manifest: &mut Manifest,
        known: &mut Known<'_>,
        scope: Scope<'_>,
        outcome: &mut Outcome,
        look_for_hung: bool,
    ) -> Result<(), ReconcileError> {
        let mut run = Run {
            planned: &mut *known.planned,
            links_read: &mut *known.links_read,
            flows_read: &mut *known.flows_read,
            trust: known.trust,
            scope,
            engine: self,
            host: &self.host,
            topo,
            lab: &topo.lab,
            failed,
            manifest,
            out: outcome,
            clock: Instant::now(),
            look_for_hung,
            deferred: BTreeSet::new(),
            resolve: BTreeSet::new(),
            later_namespaces: Vec::new(),
        };
        run.namespaces().await?;
        run.done("namespaces");
        let mut nodes = run.ovs_databases().await?;
        run.done("ovs databases");
        let (whole, mut switches) = run.plan(&nodes).await?;
        let part;
        let desired = match run.scope {
            Scope::Full => &*whole,
            Scope::Part { nodes, wire } => {
                let hosts = &run.planned.as_ref().expect("planned").hosts;
                part = whole.part(hosts, nodes, wire);
                &part
            }
        };
        run.done("ovsdb read and plan");
        let early = run.bridges_first(desired, &mut nodes, &switches)?;
        let host: &H = run.host;
        // The bare bridges (those phase 2 did not commit already),
        // committed at once: each new vswitchd makes its datapath (and
        // sleeps its 100 ms) on them while links and rules are made.
        let mut cfgs = run.commit_early(&early, &switches).await?;
        for (i, ops) in &early {
            if !ops.is_empty() {
                switches.actual[*i] = host.read_switch(&switches.clients[*i]).await?;
            }
        }
        for (i, cfg) in &nodes.bridged {
            cfgs.entry(*i).or_insert(*cfg);
        }
        run.later_namespaces().await?;
        let created = run.links(desired).await?;
        run.done("links");
        run.rulesets(desired).await?;
        run.done("iptables");
        // The metadata services need only their namespaces and addresses,
        // made above: started here, they start within the vswitchds'
        // 100 ms, not after the last one.
        run.metadata(&whole)?;
        run.done("metadata");
        // Then their ports, whose devices now exist and whose firewalls
        // are written (as Neutron's agent sets up a port's filter before
        // it binds it): still within that sleep, so vswitchd makes bridges
        // and ports in one pass.
        let ports: Vec<(usize, Vec<crate::diff::OvsChange>)> = early
            .iter()
            .map(|(i, _)| {
                (
                    *i,
                    diff_switch(run.lab, &desired.switches[*i], &switches.actual[*i]),
                )
            })
            .filter(|(_, ops)| !ops.is_empty())
            .collect();
        for (i, ops) in &ports {
            let node = &desired.switches[*i].node;
            run.out
                .changes
                .extend(ops.iter().map(|o| format!("{node}: {o}")));
        }
        cfgs.extend(run.commit_early(&ports, &switches).await?);
        // Each such node's flows follow its own vswitchd: the vswitchds
        // end their 100 ms some milliseconds apart, and the last one's
        // flows are then all that is left to do.
        let mut flowed = BTreeSet::new();
        for (i, actual, work, lines) in run.early_flows(desired, &nodes, &cfgs, &switches).await? {
            switches.actual[i] = actual;
            // Waited for above: the wait of phase 5 would only ask again.
            nodes.wait_for_vswitchd.remove(&i);
            run.out.changes.extend(lines);
            run.flows_known(&desired.switches[i].node, work);
            flowed.insert(i);
        }
        run.done("bridges first (beside links and iptables)");
        run.vswitchd(&mut nodes, &mut switches, &flowed).await?;
        run.done("ovs-vswitchd");
        let converged: BTreeSet<usize> = early.iter().map(|(i, _)| *i).collect();
        run.ovsdb_transactions(desired, &mut switches, &created, &converged)
            .await?;
        run.done("ovsdb transactions");
        run.internal_ports(desired).await?;
        run.done("internal ports");
        // Not needed from here on; a 10,000-instance lab's are some 5 MB.
        drop(created);
        run.flows(desired, &nodes, switches, &flowed).await?;
        run.done("flows");
        run.tunnel_endpoints(desired).await?;
        run.done("tunnel endpoints");
        // The agents of the whole lab: few, and cheap to look at. The HA
        // routers' keepalived whatever became of the DHCP agents.
        let dhcp = run.dhcp(&whole).await;
        run.done("dhcp");
        let ha = run.keepalived(&whole).await;
        run.done("keepalived");
        run.failed_nodes_stopped().await;
        dhcp.and(ha)
    }
}

/// The context every phase of one converge shares.
struct Run<'a, H: Host> {
    engine: &'a Engine<H>,
    /// The plan of the last converge, made again when what it was made
    /// from changed.
    planned: &'a mut Option<Planned>,
    links_read: &'a mut LinksRead,
    flows_read: &'a mut FlowsRead,
    /// Whether namespaces and bridges whose watcher heard nothing may go
    /// unread.
    trust: bool,
    scope: Scope<'a>,
    host: &'a Arc<H>,
    topo: &'a Topology,
    lab: &'a str,
    /// Nodes failed on purpose: nothing on them is made or repaired.
    failed: &'a BTreeSet<String>,
    manifest: &'a mut Manifest,
    out: &'a mut Outcome,
    /// When the current phase started.
    clock: Instant,
    /// Whether to ask each OVS daemon whether it is hung first (after a
    /// missed deadline).
    look_for_hung: bool,
    /// Namespaces whose OVS internal ports the links phase could not
    /// configure yet (vswitchd had not made them).
    deferred: BTreeSet<String>,
    /// The namespaces phase 1 left to be made just before the links (see
    /// [`Run::namespaces`]).
    later_namespaces: Vec<String>,
    /// Node namespaces that must resolve their tunnel endpoints: a new
    /// tunnel, or a vswitchd (re)started, whose neighbour cache is empty.
    resolve: BTreeSet<String>,
}

/// Each node's Open vSwitch, as the database phase left it.
struct Nodes {
    ovs: Vec<NodeOvs>,
    /// Nodes (by index) whose vswitchd must be waited for: a database
    /// started under a running vswitchd is reconnected to only after its
    /// back-off (up to 8 s), and until then vswitchd answers no OpenFlow
    /// request.
    wait_for_vswitchd: BTreeSet<usize>,
    /// Nodes (by index) whose vswitchd the database phase started, as
    /// soon as their database answered (see [`Run::ovs_databases`]).
    early: BTreeSet<usize>,
    /// Of those, the nodes whose bare bridges phase 2 committed too, with
    /// the configuration number to wait for.
    bridged: BTreeMap<usize, i64>,
}

/// Each node's OVSDB connection and what its database held when planned.
struct Switches<S> {
    clients: Vec<S>,
    actual: Vec<ActualSwitch>,
}

impl<H: Host> Run<'_, H> {
    /// Logs (at debug) how long a phase took, for profiling.
    fn done(&mut self, phase: &str) {
        tracing::debug!(
            lab = self.lab,
            phase,
            ms = self.clock.elapsed().as_millis() as u64,
            "up phase done"
        );
        self.clock = Instant::now();
    }

    /// Every namespace of the lab's plan (planned now if it never was).
    fn names(&mut self) -> Arc<BTreeSet<String>> {
        let planned = self
            .planned
            .get_or_insert_with(|| Planned::new(self.topo, LocalVlans::new(), self.failed));
        planned.names.clone()
    }

    /// Whether this converge looks at namespace `ns`.
    fn in_scope(&self, ns: &str) -> bool {
        match self.scope {
            Scope::Full => true,
            Scope::Part { nodes, wire } => {
                match self.planned.as_ref().and_then(|p| p.hosts.get(ns)) {
                    Some(node) => nodes.contains(node),
                    None => wire,
                }
            }
        }
    }

    /// Whether this converge looks at node `node`'s Open vSwitch.
    fn node_in_scope(&self, node: &str) -> bool {
        match self.scope {
            Scope::Full => true,
            Scope::Part { nodes, .. } => nodes.contains(node),
        }
    }

    fn save_manifest(&self) -> Result<(), ReconcileError> {
        self.manifest
            .save()
            .map_err(|e| ReconcileError::io(self.manifest.path(), e))
    }

    /// 1. Namespaces: stale ones of the lab removed (with the Open vSwitch
    ///    of nodes no longer wanted), missing ones created. Only those of
    ///    the manifest are the lab's. Only the nodes' namespaces are made
    ///    here: the others are made just before the links (phase 4), so
    ///    that the nodes' Open vSwitch, on the critical path of an `up`
    ///    from nothing, starts that much sooner and does not share the
    ///    cores with them.
    async fn namespaces(&mut self) -> Result<(), ReconcileError> {
        let lab = self.lab;
        let names = self.names();
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let prefix = naming::namespace_prefix(lab);
        let mut existing = BTreeSet::new();
        let mut foreign = Vec::new();
        let listed: Vec<String> = self
            .host
            .list_namespaces()
            .map_err(|e| ReconcileError::io(Path::new(netns::NETNS_DIR), e))?
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && self.in_scope(n))
            .collect();
        for name in listed {
            let inode = self
                .host
                .namespace_inode(&name)
                .map_err(|e| ReconcileError::io(&netns::path(&name), e))?;
            match (self.manifest.ownership(&name, inode), inode) {
                (Ownership::Ours, _) => {
                    existing.insert(name);
                }
                // Made by a converge that was interrupted before it could
                // write the inode down.
                (Ownership::Promised, Some(inode)) => {
                    self.manifest.made(&name, inode);
                    self.save_manifest()?;
                    self.out.changes.push(format!(
                        "adopt namespace {name} (made before an interruption)"
                    ));
                    existing.insert(name);
                }
                // A create interrupted between making the file and
                // mounting the namespace on it, or a delete between
                // unmounting and removing the file, leaves a plain file:
                // it goes, and the namespace is made again if wanted.
                (Ownership::Promised | Ownership::Replaced, None) => {
                    self.host.delete_namespace(&name)?;
                    self.manifest.forget(&name);
                    self.save_manifest()?;
                    self.out
                        .changes
                        .push(format!("remove stale namespace file {name}"));
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
        self.out
            .warnings
            .extend(foreign.iter().map(|n| foreign_warning(n)));
        // Only a converge of the whole lab removes what it no longer wants.
        let whole = matches!(self.scope, Scope::Full);
        // Nodes no longer wanted: their Open vSwitch goes before their namespace.
        let dir = whole.then(|| std::fs::read_dir(self.engine.lab_dir(lab)).ok());
        if let Some(Some(dir)) = dir {
            for entry in dir.flatten() {
                let node = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir()
                    && ovslab_topology::object_name_problem(&node).is_none()
                    && !self.topo.switch_hosts().any(|h| h == node)
                {
                    let ovs = NodeOvs::new(
                        &self.engine.config.run_root,
                        lab,
                        &node,
                        &naming::namespace(lab, &node),
                    );
                    self.out
                        .changes
                        .extend(self.host.stop_and_remove(&ovs).await);
                    self.out
                        .changes
                        .push(format!("removed run directory of node {node}"));
                }
            }
        }
        for ns in existing
            .iter()
            .filter(|n| whole && !wanted.contains(n.as_str()))
        {
            // Our notice sockets in it would keep it alive.
            self.engine.watchers.unwatch(ns);
            self.host.delete_namespace(ns)?;
            self.manifest.forget(ns);
            self.save_manifest()?;
            self.out.changes.push(format!("delete namespace {ns}"));
        }
        let on_failed = ovslab_topology::plan::namespaces_on(self.topo, self.failed);
        let missing: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|ns| !existing.contains(*ns) && !on_failed.contains(*ns) && self.in_scope(ns))
            .collect();
        // A namespace made again may hold veths whose other end, in a
        // namespace no node hosts (a physical network's), outlived the one
        // deleted (kept alive by a process in it): that end is deleted, to
        // be made again with its peer, only if this converge reads it.
        if let Scope::Part { nodes, wire: false } = self.scope
            && !missing.is_empty()
        {
            self.scope = Scope::Part { nodes, wire: true };
        }
        // The nodes' own first: their Open vSwitch starts in them next.
        let nodes: BTreeSet<String> = self
            .topo
            .switch_hosts()
            .map(|n| naming::namespace(lab, n))
            .collect();
        let (first, later): (Vec<&str>, Vec<&str>) =
            missing.iter().partition(|ns| nodes.contains(**ns));
        self.later_namespaces = later.iter().map(|ns| ns.to_string()).collect();
        let first = self.take_spares(first).await?;
        self.create_namespaces(&first).await
    }

    /// Spare nodes (see [`crate::spare`]) taken for the new nodes among
    /// `missing` that have no run directory yet and hold few links (those
    /// [`Run::bridges_first`] would start early): each is promised in the
    /// manifest first, as a namespace made is. Returns the namespaces
    /// still to make.
    async fn take_spares<'n>(
        &mut self,
        missing: Vec<&'n str>,
    ) -> Result<Vec<&'n str>, ReconcileError> {
        let Some(spares) = self.engine.spares.clone().filter(|s| s.ready() > 0) else {
            return Ok(missing);
        };
        let Some(planned) = self.planned.as_ref() else {
            return Ok(missing);
        };
        let (desired, hosts) = (planned.desired.clone(), planned.hosts.clone());
        let mut left = Vec::new();
        for ns in missing {
            let Some(node) = hosts.get(ns) else {
                left.push(ns);
                continue;
            };
            let rundir = naming::node_rundir(&self.engine.config.run_root, self.lab, node);
            if spares.ready() == 0 || rundir.exists() || !few_links(&desired, ns) {
                left.push(ns);
                continue;
            }
            self.manifest.promise([ns]);
            self.save_manifest()?;
            match spares.take(node, ns, &rundir).await {
                Some(inode) => {
                    self.manifest.made(ns, inode);
                    self.save_manifest()?;
                    self.out.changes.push(format!(
                        "create namespace {ns} (a spare node's, Open vSwitch running)"
                    ));
                }
                None => left.push(ns),
            }
        }
        Ok(left)
    }

    /// Makes the namespaces phase 1 left for later.
    async fn later_namespaces(&mut self) -> Result<(), ReconcileError> {
        let later = std::mem::take(&mut self.later_namespaces);
        let later: Vec<&str> = later.iter().map(String::as_str).collect();
        self.create_namespaces(&later).await
    }

    /// New namespaces a few at a time: each costs the kernel a namespace
    /// set-up, which runs in parallel on several cores. Each is promised in
    /// the manifest before it is made.
    async fn create_namespaces(&mut self, missing: &[&str]) -> Result<(), ReconcileError> {
        if missing.is_empty() {
            return Ok(());
        }
        self.manifest.promise(missing.iter().copied());
        self.save_manifest()?;
        let creations: Vec<_> = missing
            .iter()
            .map(|ns| {
                let name = ns.to_string();
                let host = self.host.clone();
                async move {
                    let task = name.clone();
                    let made = tokio::task::spawn_blocking(move || host.create_namespace(&task))
                        .await
                        .map_err(|source| ReconcileError::Task {
                            of: format!("namespace {name}"),
                            what: "namespace creation",
                            source,
                        })
                        .and_then(|r| r);
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
                    if let Ok(Some(inode)) = self.host.namespace_inode(&name) {
                        self.manifest.made(&name, inode);
                    }
                    self.out.changes.push(format!("create namespace {name}"));
                }
                Err(e) => {
                    self.manifest.forget(&name);
                    // A file there now is someone else's namespace, made
                    // since the list was read (a failed create removes its
                    // own).
                    let e = if self.host.namespace_file_exists(&name) {
                        ReconcileError::ForeignNamespaces {
                            lab: self.lab.to_string(),
                            names: vec![name],
                        }
                    } else {
                        e
                    };
                    failed = failed.or(Some(e));
                }
            }
        }
        self.save_manifest()?;
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// 2. Each node's `ovsdb-server`; a daemon that runs but does not
    ///    answer is killed first, and started again like a dead one, and
    ///    one that runs in a namespace no longer the node's is stopped
    ///    first, and started again in the node's.
    ///
    /// A node whose database this starts, and whose namespace holds few
    /// links (see [`Run::bridges_first`]), gets its root settings, its
    /// `ovs-vswitchd` and its bare bridges the moment its own database
    /// answers (see [`head_start`]): the vswitchd's fixed 100 ms (see
    /// there) is the critical path of an `up` from nothing, and starts
    /// that much sooner than after every database and the plan. Every other vswitchd starts after the links are made: it
    /// re-reads every link and address of its namespace on each link
    /// change it hears of (a compute node of a large lab has hundreds), and
    /// so sees them once.
    async fn ovs_databases(&mut self) -> Result<Nodes, ReconcileError> {
        let ovs: Vec<NodeOvs> = self
            .topo
            .switch_hosts()
            .filter(|n| !self.failed.contains(*n) && self.node_in_scope(n))
            .map(|n| {
                NodeOvs::new(
                    &self.engine.config.run_root,
                    self.lab,
                    n,
                    &naming::namespace(self.lab, n),
                )
            })
            .collect();
        let host = &**self.host;
        if self.look_for_hung {
            for killed in join_all(ovs.iter().map(|n| host.kill_hung(n))).await {
                self.out.changes.extend(killed);
            }
        }
        for stopped in join_all(ovs.iter().map(|n| host.stop_elsewhere(n))).await {
            self.out.changes.extend(stopped);
        }
        let died: Vec<(bool, bool)> = ovs
            .iter()
            .map(|n| {
                (
                    host.died(n, OvsDaemon::OvsdbServer),
                    host.died(n, OvsDaemon::OvsVswitchd),
                )
            })
            .collect();
        // Made by phase 1 (from the topology alone): how many links each
        // node's namespace will hold does not depend on what is read later.
        let desired = self.planned.as_ref().map(|p| p.desired.clone());
        let (schema, lab) = (&self.engine.config.schema, self.lab);
        let desired = desired.as_deref();
        let results = join_all(ovs.iter().map(|n| async move {
            let started = host.ensure_database(n, schema).await?;
            // Looked for only then (rare): every audit passes here too.
            let spec = match started.is_empty() {
                true => None,
                false => desired.and_then(|d| {
                    let spec = d.switches.iter().find(|s| s.node == n.node)?;
                    few_links(d, &n.namespace).then_some(spec)
                }),
            };
            let early = match spec {
                Some(spec) => head_start(host, lab, n, spec).await?,
                None => None,
            };
            Ok::<_, ReconcileError>((started, early))
        }))
        .await;
        let mut nodes = Nodes {
            ovs: Vec::new(),
            wait_for_vswitchd: BTreeSet::new(),
            early: BTreeSet::new(),
            bridged: BTreeMap::new(),
        };
        for (i, ((node, result), (db_died, switch_died))) in
            ovs.iter().zip(results).zip(died).enumerate()
        {
            let (started, early) = result?;
            for daemon in started {
                nodes.wait_for_vswitchd.insert(i);
                self.started(node, daemon, db_died);
            }
            if let Some((changes, started, cfg)) = early {
                self.out.changes.extend(changes);
                if !started.is_empty() {
                    nodes.early.insert(i);
                }
                if let Some(cfg) = cfg {
                    nodes.bridged.insert(i, cfg);
                }
                for daemon in started {
                    self.resolve.insert(node.namespace.clone());
                    self.started(node, daemon, switch_died);
                }
            }
        }
        nodes.ovs = ovs;
        Ok(nodes)
    }

    /// Notes that `daemon` was started on `node`, again if it had `died`.
    fn started(&mut self, node: &NodeOvs, daemon: OvsDaemon, died: bool) {
        self.out
            .changes
            .push(format!("start {} on {}", daemon.program(), node.node));
        if died {
            self.out.restarted.push((node.node.clone(), daemon));
        }
    }

    /// 3. The plan, made with the local VLAN ids the running switches use.
    ///    The datapath options are set here too, before vswitchd starts
    ///    (it reads them once, at start): a vswitchd running without them
    ///    is stopped, to be started again in phase 5.
    async fn plan(
        &mut self,
        nodes: &Nodes,
    ) -> Result<(Arc<DesiredState>, Switches<H::Switch>), ReconcileError> {
        let host = &**self.host;
        let clients = join_all(nodes.ovs.iter().map(|n| host.connect_switch(n))).await;
        let clients: Vec<_> = clients.into_iter().collect::<Result<_, _>>()?;
        // A bounded number at once: each read's reply is parsed whole, and
        // 201 of them at once cost a 10,000-instance lab's audit some 60 MB.
        let actual = node_by_node(
            clients.iter().map(|c| host.read_switch(c)).collect(),
            nodes_at_once(),
        )
        .await;
        let mut actual: Vec<_> = actual.into_iter().collect::<Result<_, _>>()?;
        for ((node, client), actual) in nodes.ovs.iter().zip(&clients).zip(&mut actual) {
            let (changes, config_set) = root_settings(host, self.lab, node, client, actual).await?;
            self.out.changes.extend(changes);
            if !config_set {
                continue;
            }
            if let Some(pid) = host.stop_vswitchd(node).await {
                self.out.changes.push(format!(
                    "stopped ovs-vswitchd of {} (pid {pid}) to apply other_config",
                    node.node
                ));
            }
        }
        // The local VLANs of the nodes read now, and of the others as the
        // last plan had them.
        let mut previous: LocalVlans = match (self.scope, self.planned.as_ref()) {
            (Scope::Part { nodes, .. }, Some(p)) => p
                .previous
                .iter()
                .filter(|((node, _), _)| !nodes.contains(node))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            _ => LocalVlans::new(),
        };
        for (node, actual) in nodes.ovs.iter().zip(&actual) {
            for (network, tag) in switch::local_vlans(self.topo, actual) {
                previous.insert((node.node.clone(), network), tag);
            }
        }
        let same = self.planned.as_mut().is_some_and(|p| {
            if p.failed != *self.failed {
                return false;
            }
            if p.previous != previous && p.gives(&previous) {
                // The switches hold the local VLANs this plan gave them (the
                // first audit after an `up` from nothing reads them for the
                // first time): planning again would make the same plan, and
                // at 10,000 instances cost the audit some 80 MB while made.
                p.previous = previous.clone();
            }
            p.previous == previous
        });
        if !same {
            // The old plan goes before the new one is made: a plan of
            // 10,000 instances is about 50 MB.
            *self.planned = None;
            *self.planned = Some(Planned::new(self.topo, previous, self.failed));
        }
        let desired = self.planned.as_ref().expect("just planned").desired.clone();
        Ok((desired, Switches { clients, actual }))
    }

    /// 4a. Bridges first: a node whose database has no bridge yet (a lab
    ///     coming up from nothing) and whose namespace holds few links gets
    ///     its `ovs-vswitchd` now and, to commit beside phases 4 and 4b,
    ///     its bridges without their ports. Creating the userspace datapath
    ///     costs each vswitchd a fixed 100 ms (it sleeps to estimate the
    ///     TSC frequency), which then passes while links and rules are made
    ///     instead of after them. Not where links are many: a running
    ///     vswitchd re-reads every link of its namespace on each link
    ///     change, which made the 1000-instance `up` 5 s → 24 s. Returns
    ///     the changes to commit, by node index: none for a node whose
    ///     bridges phase 2 committed already (see [`head_start`]). The
    ///     converge commits them at once, and the node's ports once links
    ///     and rules are made, both without waiting; then it waits for each
    ///     node's vswitchd to apply them and writes that node's flows (see
    ///     [`Run::early_flows`]), and phases 6 and 7 leave these nodes
    ///     alone.
    fn bridges_first(
        &mut self,
        desired: &DesiredState,
        nodes: &mut Nodes,
        switches: &Switches<H::Switch>,
    ) -> Result<Vec<(usize, Vec<crate::diff::OvsChange>)>, ReconcileError> {
        let host = &**self.host;
        let mut early = Vec::new();
        for (i, (spec, node)) in desired.switches.iter().zip(&nodes.ovs).enumerate() {
            // Every converge passes here: the cheap test first, the search
            // through the namespaces only for a node with no bridge.
            let actual = &switches.actual[i];
            let bridged = nodes.bridged.contains_key(&i);
            if !bridged && !actual.bridges.is_empty() {
                continue;
            }
            if !bridged && !few_links(desired, &spec.namespace) {
                continue;
            }
            // A vswitchd phase 2 started with its database is waited for
            // already; any other is started now.
            if !nodes.early.contains(&i) {
                let died = host.died(node, OvsDaemon::OvsVswitchd);
                let started = host.ensure_vswitchd(node)?;
                if started.is_empty() {
                    continue;
                }
                for daemon in started {
                    nodes.wait_for_vswitchd.insert(i);
                    self.resolve.insert(node.namespace.clone());
                    self.started(node, daemon, died);
                }
            }
            // Nothing for a node phase 2 gave its bridges already.
            let ops = diff_switch(self.lab, &bare(spec), actual);
            self.out
                .changes
                .extend(ops.iter().map(|o| format!("{}: {o}", spec.node)));
            early.push((i, ops));
        }
        Ok(early)
    }

    /// Commits each node's `ops` (see [`Run::bridges_first`]) without
    /// waiting for its vswitchd; returns the configuration number to wait
    /// for, by node index (nodes without ops left out).
    async fn commit_early(
        &self,
        ops: &[(usize, Vec<crate::diff::OvsChange>)],
        switches: &Switches<H::Switch>,
    ) -> Result<BTreeMap<usize, i64>, ReconcileError> {
        let (host, lab) = (&**self.host, self.lab);
        let ops: Vec<&(usize, Vec<crate::diff::OvsChange>)> =
            ops.iter().filter(|(_, ops)| !ops.is_empty()).collect();
        let commits = node_by_node(
            ops.iter()
                .map(|(i, ops)| host.commit_switch(&switches.clients[*i], lab, ops))
                .collect(),
            nodes_at_once(),
        )
        .await;
        let mut cfgs = BTreeMap::new();
        for ((i, _), cfg) in ops.iter().zip(commits) {
            cfgs.insert(*i, cfg?);
        }
        Ok(cfgs)
    }

    /// 4. Links, addresses, routes and sysctls, phase by phase across
    ///    namespaces. Returns the devices created, (namespace, name).
    async fn links(
        &mut self,
        desired: &DesiredState,
    ) -> Result<BTreeSet<(String, String)>, ReconcileError> {
        let watchers = &self.engine.watchers;
        // Taken before anything is read: a notice after this is news next
        // time, our own changes' included.
        let last: BTreeMap<&str, Option<u64>> = desired
            .namespaces
            .iter()
            .map(|ns| (ns.name.as_str(), watchers.last_notice(&ns.name)))
            .collect();
        let trusted: BTreeSet<String> = if self.trust {
            desired
                .namespaces
                .iter()
                .filter(|ns| {
                    let seen = last[ns.name.as_str()];
                    self.links_read
                        .get(&ns.name)
                        .is_some_and(|(spec, n)| seen == Some(*n) && *spec == Fingerprint::of(*ns))
                })
                .map(|ns| ns.name.clone())
                .collect()
        } else {
            BTreeSet::new()
        };
        let LinksDone {
            lines,
            created,
            deferred,
            read,
            warnings,
        } = converge_links(self.host, desired, &trusted).await?;
        self.out.changes.extend(lines);
        self.out.warnings.extend(warnings);
        self.deferred = deferred;
        for ns in desired
            .namespaces
            .iter()
            .filter(|ns| read.contains(&ns.name))
        {
            match last[ns.name.as_str()] {
                Some(n) => {
                    self.links_read
                        .insert(ns.name.clone(), (Fingerprint::of(ns), n));
                }
                None => {
                    self.links_read.remove(&ns.name);
                }
            }
        }
        if matches!(self.scope, Scope::Full) {
            let planned: BTreeSet<&str> = last.keys().copied().collect();
            self.links_read
                .retain(|ns, _| planned.contains(ns.as_str()));
        }
        Ok(created)
    }

    /// 6b. The internal ports of OVS bridges that carry an address (a
    ///     node's tunnel endpoint on br-overlay): `ovs-vswitchd` makes
    ///     their tap devices when the transaction is applied, so they are
    ///     configured after it.
    async fn internal_ports(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let only = DesiredState {
            namespaces: desired
                .namespaces
                .iter()
                .filter(|ns| self.deferred.contains(&ns.name))
                .cloned()
                .collect(),
            lab: desired.lab.clone(),
            cookie: desired.cookie,
            switches: Vec::new(),
            routers: Vec::new(),
            firewalls: Vec::new(),
            dhcp_servers: Vec::new(),
            dhcp_clients: Vec::new(),
            metadata: Vec::new(),
            keepalived: Vec::new(),
        };
        let done = converge_links(self.host, &only, &BTreeSet::new()).await?;
        self.out.changes.extend(done.lines);
        self.out.warnings.extend(done.warnings);
        Ok(())
    }

    /// 5. Each node's `ovs-vswitchd`, then a wait for those started (a
    ///    vswitchd started over an existing database first rebuilds its
    ///    bridges, and their flow sockets, from it).
    async fn vswitchd(
        &mut self,
        nodes: &mut Nodes,
        switches: &mut Switches<H::Switch>,
        flowed: &BTreeSet<usize>,
    ) -> Result<(), ReconcileError> {
        let host = &**self.host;
        for (i, node) in nodes.ovs.iter().enumerate() {
            // Started, waited for and given its flows moments ago (phase
            // 4): asking again would cost the tail of an `up` some file
            // reads per node, and a vswitchd lost since is its watcher's
            // (pidfd) to report.
            if flowed.contains(&i) {
                continue;
            }
            let died = host.died(node, OvsDaemon::OvsVswitchd);
            for daemon in host.ensure_vswitchd(node)? {
                nodes.wait_for_vswitchd.insert(i);
                self.resolve.insert(node.namespace.clone());
                self.started(node, daemon, died);
            }
        }
        let waits = join_all(
            nodes
                .wait_for_vswitchd
                .iter()
                .map(|&i| host.wait_applied(&switches.clients[i])),
        )
        .await;
        waits.into_iter().collect::<Result<Vec<_>, _>>()?;
        // A switch read before its vswitchd applied it may lack its ports'
        // OpenFlow numbers (a vswitchd killed before it gave them, its
        // ports committed by the converge that failed): read again where
        // there are ports, or the flows could not name them.
        for &i in &nodes.wait_for_vswitchd {
            if switches.actual[i]
                .bridges
                .iter()
                .any(|b| !b.ports.is_empty())
            {
                switches.actual[i] = host.read_switch(&switches.clients[i]).await?;
            }
        }
        Ok(())
    }

    /// 6. OVSDB, one transaction per node; `switches` is left with each
    ///    node's switch as it is now.
    async fn ovsdb_transactions(
        &mut self,
        desired: &DesiredState,
        switches: &mut Switches<H::Switch>,
        created: &BTreeSet<(String, String)>,
        converged: &BTreeSet<usize>,
    ) -> Result<(), ReconcileError> {
        let (lab, host) = (self.lab, &**self.host);
        for (spec, actual) in desired.switches.iter().zip(&switches.actual) {
            let new_tunnel = spec.bridges.iter().any(|b| {
                b.ports.iter().any(|p| {
                    p.tunnel.is_some()
                        && actual
                            .bridge(&b.name)
                            .and_then(|a| a.port(&p.name))
                            .is_none()
                })
            });
            if new_tunnel {
                self.resolve.insert(spec.namespace.clone());
            }
        }
        let results = node_by_node(
            desired
                .switches
                .iter()
                .zip(&switches.clients)
                .zip(&switches.actual)
                .enumerate()
                .map(|(i, ((spec, client), actual))| async move {
                    if converged.contains(&i) {
                        return Ok((Vec::new(), None));
                    }
                    converge_switch(host, lab, spec, client, actual, created).await
                })
                .collect(),
            nodes_at_once(),
        )
        .await;
        for (result, actual) in results.into_iter().zip(&mut switches.actual) {
            let (lines, after) = result?;
            self.out.changes.extend(lines);
            if let Some(after) = after {
                *actual = after;
            }
        }
        Ok(())
    }

    /// 7. Flows, one batch per bridge, ended by a barrier; but for the
    ///    nodes `flowed` already (see [`Run::early_flows`]).
    async fn flows(
        &mut self,
        desired: &DesiredState,
        nodes: &Nodes,
        switches: Switches<H::Switch>,
        flowed: &BTreeSet<usize>,
    ) -> Result<(), ReconcileError> {
        let host = &**self.host;
        let Switches { clients, actual } = switches;
        let work: Vec<Vec<BridgeFlows>> = desired
            .switches
            .iter()
            .zip(&actual)
            .enumerate()
            .map(|(i, (spec, actual))| match flowed.contains(&i) {
                true => Vec::new(),
                false => self.flow_work(spec, actual),
            })
            .collect();
        // What the flows need of the switches read (their ports) is in
        // `work` now: the read goes before the flows' own reads come in
        // (some 20 MB for a 10,000-instance lab, at the daemon's peak).
        drop(actual);
        let results = node_by_node(
            desired
                .switches
                .iter()
                .zip(&nodes.ovs)
                .zip(&clients)
                .zip(&work)
                .enumerate()
                .map(|(i, (((spec, node), client), bridges))| async move {
                    match flowed.contains(&i) {
                        true => Ok(Vec::new()),
                        false => {
                            converge_flows(host, spec, node, client, bridges, Bridges::OneByOne)
                                .await
                        }
                    }
                })
                .collect(),
            nodes_at_once(),
        )
        .await;
        for result in results {
            self.out.changes.extend(result?);
        }
        for (i, (spec, bridges)) in desired.switches.iter().zip(work).enumerate() {
            if !flowed.contains(&i) {
                self.flows_known(&spec.node, bridges);
            }
        }
        if matches!(self.scope, Scope::Full) {
            let nodes: BTreeSet<&str> = desired.switches.iter().map(|s| s.node.as_str()).collect();
            self.flows_read
                .retain(|(node, _), _| nodes.contains(node.as_str()));
        }
        Ok(())
    }

    /// The flows of each node phase 2 started early (see
    /// [`Run::bridges_first`]), each as soon as its vswitchd has applied
    /// configuration `cfgs[i]`: by node index, the switch read then, the
    /// bridges converged and the change lines.
    async fn early_flows(
        &self,
        desired: &DesiredState,
        nodes: &Nodes,
        cfgs: &BTreeMap<usize, i64>,
        switches: &Switches<H::Switch>,
    ) -> Result<Vec<EarlyFlows>, ReconcileError> {
        let host = &**self.host;
        let results = node_by_node(
            cfgs.iter()
                .map(|(&i, &cfg)| async move {
                    let (spec, client) = (&desired.switches[i], &switches.clients[i]);
                    host.wait_switch(client, cfg).await?;
                    let actual = host.read_switch(client).await?;
                    let work = self.flow_work(spec, &actual);
                    let lines =
                        converge_flows(host, spec, &nodes.ovs[i], client, &work, Bridges::AtOnce)
                            .await?;
                    Ok((i, actual, work, lines))
                })
                .collect(),
            nodes_at_once(),
        )
        .await;
        results.into_iter().collect()
    }

    /// The bridges of `spec` whose flows are to be read: those not trusted
    /// (see [`FlowsRead`]), with the notice number taken before the read.
    fn flow_work(&self, spec: &SwitchSpec, actual: &ActualSwitch) -> Vec<BridgeFlows> {
        let watchers = &self.engine.watchers;
        let mut bridges = Vec::new();
        for bridge in &spec.bridges {
            let of_bridge = spec.flows.iter().filter(|f| f.bridge == bridge.name);
            let fingerprint = Fingerprint::of_all(of_bridge.clone());
            let ports = switch::ofports(actual, &bridge.name);
            let notice = watchers.last_flow_notice(self.lab, &spec.node, &bridge.name);
            let key = (spec.node.clone(), bridge.name.clone());
            let trusted = self.trust
                && notice.is_some()
                && self.flows_read.get(&key).is_some_and(|r| {
                    Some(r.notice) == notice
                        && r.cookie == bridge.cookie
                        && r.ports == ports
                        && r.wanted == fingerprint
                });
            if !trusted {
                bridges.push(BridgeFlows {
                    bridge: bridge.name.clone(),
                    cookie: bridge.cookie,
                    wanted: of_bridge.cloned().collect(),
                    fingerprint,
                    ports,
                    notice,
                });
            }
        }
        bridges
    }

    /// Notes what `node`'s bridges converged in `work` now hold (or
    /// forgets a bridge with no flow notice yet: it is read next time).
    fn flows_known(&mut self, node: &str, work: Vec<BridgeFlows>) {
        for b in work {
            let key = (node.to_string(), b.bridge);
            match b.notice {
                Some(notice) => {
                    let read = FlowsKnown {
                        wanted: b.fingerprint,
                        ports: b.ports,
                        cookie: b.cookie,
                        notice,
                    };
                    self.flows_read.insert(key, read);
                }
                None => {
                    self.flows_read.remove(&key);
                }
            }
        }
    }

    /// 9. Each node with a new tunnel, or a vswitchd (re)started, resolves
    ///    its remote endpoints now (see [`Host::resolve_tunnel_endpoints`]),
    ///    so that the first packets through a tunnel are not dropped.
    async fn tunnel_endpoints(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        let host = &**self.host;
        let wanted = &self.resolve;
        let run_root = &self.engine.config.run_root;
        let nodes: Vec<(NodeOvs, Vec<std::net::Ipv4Addr>)> = desired
            .switches
            .iter()
            .filter(|s| wanted.contains(&s.namespace))
            .filter_map(|s| {
                let mut remotes: Vec<std::net::Ipv4Addr> = s
                    .bridges
                    .iter()
                    .flat_map(|b| &b.ports)
                    .filter_map(|p| p.tunnel.as_ref().map(|t| t.remote_ip))
                    .collect();
                remotes.sort();
                remotes.dedup();
                let node = NodeOvs::new(run_root, self.lab, &s.node, &s.namespace);
                (!remotes.is_empty()).then_some((node, remotes))
            })
            .collect();
        let resolves = nodes
            .iter()
            .map(|(node, remotes)| host.resolve_tunnel_endpoints(node, remotes.clone()))
            .collect();
        for result in node_by_node(resolves, nodes_at_once()).await {
            result?;
        }
        Ok(())
    }

    /// 10. DHCP (see [`super::dhcp`]): an instance still without its lease
    ///     is reported, not held against the converge.
    async fn dhcp(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        let lab_dir = self.engine.lab_dir(self.lab);
        let hook = self.engine.config.dhcp_hook.as_deref();
        let done = super::dhcp::converge(&**self.host, self.lab, &lab_dir, hook, desired).await?;
        self.out.changes.extend(done.changes);
        for instance in &done.without_lease {
            self.out.warnings.push(format!(
                "instance {instance} holds no DHCP lease after {} s",
                super::dhcp::LEASE_WAIT.as_secs()
            ));
        }
        self.out.without_lease = Some(done.without_lease.into_iter().collect());
        done.failed.map_or(Ok(()), Err)
    }

    /// 11. A node failed on purpose runs no Open vSwitch: one still running
    ///     (a `node fail` cut short after it recorded the node, before it
    ///     stopped it) is stopped, its ports having gone down above.
    async fn failed_nodes_stopped(&mut self) {
        for node in self.failed {
            let namespace = naming::namespace(self.lab, node);
            let ovs = NodeOvs::new(&self.engine.config.run_root, self.lab, node, &namespace);
            self.out.changes.extend(self.host.stop_ovs(&ovs).await);
        }
    }

    /// 10b. keepalived of each HA router copy (see [`super::ha`]).
    async fn keepalived(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        let lab_dir = self.engine.lab_dir(self.lab);
        let (changes, failed) =
            super::ha::converge(&**self.host, self.lab, &lab_dir, desired).await;
        self.out.changes.extend(changes);
        failed.map_or(Ok(()), Err)
    }

    /// 4c. The metadata service: a listener in each router's namespace and
    ///     each isolated network's qdhcp namespace, answering for the
    ///     instances there; others of the lab stopped. The listeners are
    ///     the daemon's own (a daemon started again makes them again), not
    ///     part of the lab: they are logged, not reported as changes.
    fn metadata(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        let mut keep = BTreeSet::new();
        for spec in &desired.metadata {
            keep.insert(spec.namespace.clone());
            if let Some(line) = self.host.serve_metadata(spec)? {
                tracing::info!(lab = self.lab, "{line}");
            }
        }
        let prefix = naming::namespace_prefix(self.lab);
        for line in self.host.stop_metadata(&prefix, &keep) {
            tracing::info!(lab = self.lab, "{line}");
        }
        Ok(())
    }

    /// 4b. iptables: each router's NAT, each compute node's firewall, one
    ///     `iptables-restore` per namespace, only where they differ; before
    ///     the switches take the new ports (set their tags), as Neutron's
    ///     agent sets up port filters before it binds devices.
    async fn rulesets(&mut self, desired: &DesiredState) -> Result<(), ReconcileError> {
        // Each ruleset is made from its spec only when its turn comes: a
        // compute node's firewall is some 200 kB of rules and ipset
        // members at 10,000 instances, and 200 of them made at once were
        // the largest part of a full audit's peak.
        enum Rules<'a> {
            Router(&'a RouterSpec),
            Firewall(&'a FirewallSpec),
            Dhcp,
        }
        let rules = desired
            .routers
            .iter()
            .map(|r| (r.namespace.as_str(), Rules::Router(r)))
            .chain(
                desired
                    .firewalls
                    .iter()
                    .map(|f| (f.namespace.as_str(), Rules::Firewall(f))),
            )
            .chain(
                desired
                    .dhcp_servers
                    .iter()
                    .map(|d| (d.namespace.as_str(), Rules::Dhcp)),
            );
        let host = &**self.host;
        let results = node_by_node(
            rules
                .map(|(ns, rules)| async move {
                    let (ruleset, sets) = match rules {
                        Rules::Router(r) => (rulesets::router(r), None),
                        Rules::Firewall(f) => (rulesets::firewall(f), Some(rulesets::ipsets(f))),
                        Rules::Dhcp => (ovslab_iptables::dhcp_ruleset(), None),
                    };
                    host.converge_ruleset(ns, ruleset, sets).await
                })
                .collect(),
            nodes_at_once(),
        )
        .await;
        for result in results {
            self.out.changes.extend(result?);
        }
        Ok(())
    }
}

/// The most links a node's namespace may hold for its vswitchd to start
/// before they are made (see [`Run::bridges_first`]): the seed's and the
/// Guide's nodes (up to about a dozen), not a node of ten instances (four
/// links each).
const BRIDGES_FIRST_MAX_LINKS: usize = 16;

/// Whether namespace `namespace` holds few enough links for its vswitchd
/// to start before they are made (see [`BRIDGES_FIRST_MAX_LINKS`]).
fn few_links(desired: &DesiredState, namespace: &str) -> bool {
    desired
        .namespaces
        .iter()
        .find(|n| n.name == namespace)
        .map_or(0, |n| n.links.len())
        <= BRIDGES_FIRST_MAX_LINKS
}

/// The root row of `node`'s database as the node's vswitchd must find it
/// when it starts: the datapath options (it reads them once), and the
/// identity `ovs-ctl` would have given it. Returns the change lines, and
/// whether the datapath options were set (a vswitchd running without them
/// must start again).
async fn root_settings<H: Host>(
    host: &H,
    lab: &str,
    node: &NodeOvs,
    client: &H::Switch,
    actual: &mut ActualSwitch,
) -> Result<(Vec<String>, bool), ReconcileError> {
    let mut changes = Vec::new();
    let missing = switch::missing_root_config(actual);
    if !missing.is_empty() {
        host.ensure_root_config(client, actual).await?;
        changes.push(format!(
            "{}: set other_config {}",
            node.node,
            missing.join(" ")
        ));
    }
    let wanted = crate::actual::RootIdentity {
        ovs_version: crate::ovs_process::installed_version().await,
        system_id: Some(naming::object_uuid(lab, "system-id", &node.node).to_string()),
    };
    if actual.root_identity != wanted {
        host.ensure_root_identity(client, actual, &wanted).await?;
        changes.push(format!(
            "{}: set ovs_version and external_ids:system-id",
            node.node
        ));
    }
    Ok((changes, !missing.is_empty()))
}

/// Phase 2's early start of a node whose database it just started (see
/// [`Run::ovs_databases`]): its root settings, then its vswitchd, if its
/// database holds no bridge yet; then, the vswitchd started, its bridges
/// as `spec` (made in phase 1) has them, bare: the new vswitchd makes its
/// datapath (and sleeps its 100 ms, see [`Run::bridges_first`]) on them
/// as soon as it has read them, rather than after every node's database
/// and the plan. Returns the change lines, the daemons started and the
/// configuration number of the bridges, or nothing when the node is left
/// to the later phases.
async fn head_start<H: Host>(
    host: &H,
    lab: &str,
    node: &NodeOvs,
    spec: &SwitchSpec,
) -> Result<Option<HeadStart>, ReconcileError> {
    let client = host.connect_switch(node).await?;
    let mut actual = host.read_switch(&client).await?;
    if !actual.bridges.is_empty() {
        return Ok(None);
    }
    let (mut changes, _) = root_settings(host, lab, node, &client, &mut actual).await?;
    let started = host.ensure_vswitchd(node)?;
    if started.is_empty() {
        return Ok(Some((changes, started, None)));
    }
    let ops = diff_switch(lab, &bare(spec), &actual);
    let cfg = host.commit_switch(&client, lab, &ops).await?;
    changes.extend(ops.iter().map(|o| format!("{}: {o}", node.node)));
    Ok(Some((changes, started, Some(cfg))))
}

/// What [`head_start`] did: the change lines, the daemons started, and
/// the configuration number of the bridges it committed.
type HeadStart = (Vec<String>, Vec<OvsDaemon>, Option<i64>);

/// A node's switch with its bridges alone: no ports, no flows.
fn bare(spec: &SwitchSpec) -> SwitchSpec {
    SwitchSpec {
        node: spec.node.clone(),
        namespace: spec.namespace.clone(),
        bridges: spec
            .bridges
            .iter()
            .map(|b| OvsBridge {
                ports: Vec::new(),
                ..b.clone()
            })
            .collect(),
        flows: Vec::new(),
        local_vlans: BTreeMap::new(),
    }
}

/// How many nodes' switches, flows, rulesets or tunnel endpoints are worked
/// on at once. Each starts a process or talks to one whose other end must
/// keep up (`ovs-vswitchd` drops a connection that has not said hello
/// within 1 s; an OVSDB transaction gets 5 s, `iptables-restore` 10 s):
/// 200 at once on two cores time out, where a few per core finish as fast
/// in all; at least 16, so that labs of a dozen nodes still go at once.
fn nodes_at_once() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (4 * cores).max(16)
}

/// Runs `work` (one future per node), at most `at_once` at a time; the
/// results in order.
async fn node_by_node<F: Future>(work: Vec<F>, at_once: usize) -> Vec<F::Output> {
    futures::stream::iter(work)
        .buffered(at_once)
        .collect()
        .await
}

/// What [`converge_links`] did.
#[derive(Default)]
struct LinksDone {
    /// One line per change made.
    lines: Vec<String>,
    /// The devices it created: (namespace, name).
    created: BTreeSet<(String, String)>,
    /// The namespaces whose OVS internal ports were missing.
    deferred: BTreeSet<String>,
    /// The namespaces it read.
    read: BTreeSet<String>,
    /// What differs from the plan and was left alone, and why.
    warnings: Vec<String>,
}

/// Converges every namespace's links but those `trusted` to be as planned
/// (read only when a veth's end in a namespace read is missing: then its
/// peer's namespace is read too).
async fn converge_links<H: Host>(
    host: &Arc<H>,
    desired: &DesiredState,
    trusted: &BTreeSet<String>,
) -> Result<LinksDone, ReconcileError> {
    let handles = Arc::new(H::Links::default());
    let mut read: Vec<&NamespaceSpec> = desired
        .namespaces
        .iter()
        .filter(|ns| !trusted.contains(&ns.name))
        .collect();
    let mut actual = read_namespaces(host, &handles, &read).await?;
    // A veth whose end in a namespace read is missing: its other end, in
    // a trusted namespace, must be looked at too.
    let reading: BTreeMap<&str, usize> = read
        .iter()
        .enumerate()
        .map(|(i, ns)| (ns.name.as_str(), i))
        .collect();
    let mut more: BTreeSet<&str> = BTreeSet::new();
    for ns in &desired.namespaces {
        for v in &ns.veths {
            let (here, there) = (ns.name.as_str(), v.peer_namespace.as_str());
            match (reading.get(here), reading.get(there)) {
                (Some(&i), None) if actual[i].link(&v.name).is_none() => {
                    more.insert(there);
                }
                (None, Some(&j)) if actual[j].link(&v.peer).is_none() => {
                    more.insert(here);
                }
                _ => {}
            }
        }
    }
    if !more.is_empty() {
        let extra: Vec<&NamespaceSpec> = desired
            .namespaces
            .iter()
            .filter(|ns| more.contains(ns.name.as_str()))
            .collect();
        actual.extend(read_namespaces(host, &handles, &extra).await?);
        read.extend(extra);
    }
    let names: BTreeSet<String> = read.iter().map(|ns| ns.name.clone()).collect();
    let mut done = apply_links(host, &handles, &read, actual).await?;
    done.read = names;
    Ok(done)
}

/// Reads the links of `namespaces`, a bounded number at once: every read
/// holds a netlink connection. Each read is a task of its own, so that
/// every core of the runtime takes part.
async fn read_namespaces<H: Host>(
    host: &Arc<H>,
    handles: &Arc<H::Links>,
    namespaces: &[&NamespaceSpec],
) -> Result<Vec<ActualNamespace>, ReconcileError> {
    let at_once = host.links_at_once();
    // A chunk at a time: each read takes a copy of its namespace's plan (a
    // task must own what it reads). Made all at once, the copies of a
    // 10,000-instance lab's plan cost a full audit's links phase some
    // 30 MB.
    let mut actual = Vec::with_capacity(namespaces.len());
    for chunk in namespaces.chunks(at_once * READS_PER_CHUNK) {
        let reads: Vec<_> = chunk
            .iter()
            .map(|ns| {
                let (host, handles, ns) = (host.clone(), handles.clone(), (*ns).clone());
                let namespace = ns.name.clone();
                async move {
                    tokio::spawn(async move { host.read_links(&handles, &ns).await })
                        .await
                        .map_err(|source| ReconcileError::Task {
                            of: format!("namespace {namespace}"),
                            what: "link read",
                            source,
                        })?
                }
            })
            .collect();
        let read: Vec<_> = futures::stream::iter(reads)
            .buffered(at_once)
            .collect()
            .await;
        for namespace in read {
            actual.push(namespace?);
        }
    }
    Ok(actual)
}

/// How many reads at once (times [`Host::links_at_once`]) one chunk of
/// [`read_namespaces`] holds.
const READS_PER_CHUNK: usize = 8;

/// Diffs the namespaces read against their plan and applies the changes,
/// phase by phase.
async fn apply_links<H: Host>(
    host: &Arc<H>,
    handles: &Arc<H::Links>,
    namespaces: &[&NamespaceSpec],
    mut actual: Vec<ActualNamespace>,
) -> Result<LinksDone, ReconcileError> {
    let at_once = host.links_at_once();
    let mut all: Vec<(&str, LinkChange)> = Vec::new();
    // Each end this deletes whose other end is in another namespace:
    // (namespace, name) → (its ifindex, the other end's).
    let mut ends_elsewhere: BTreeMap<(&str, String), (u32, u32)> = BTreeMap::new();
    // A veth end whose peer is not where the plan puts it (the other
    // namespace was deleted and made again while a process kept the old
    // one alive) is deleted, to be made again with its peer.
    let index: BTreeMap<&str, usize> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| (ns.name.as_str(), i))
        .collect();
    for (i, ns) in namespaces.iter().enumerate() {
        for v in &ns.veths {
            let Some(&j) = index.get(v.peer_namespace.as_str()) else {
                continue;
            };
            let (here, there) = (actual[i].link(&v.name), actual[j].link(&v.peer));
            let (k, name, namespace) = match (here, there) {
                (Some(_), None) => (i, &v.name, &ns.name),
                (None, Some(_)) => (j, &v.peer, &v.peer_namespace),
                _ => continue,
            };
            // The routes through it go with it: made again in this pass.
            let gone: Vec<_> = actual[k]
                .link(name)
                .map(|l| l.addresses.clone())
                .unwrap_or_default();
            actual[k]
                .routes
                .retain(|r| !gone.iter().any(|a| a.contains(&r.gateway)));
            if let Some(l) = actual[k].link(name)
                && let Some(peer) = l.peer_elsewhere
            {
                ends_elsewhere.insert((namespace.as_str(), name.clone()), (l.ifindex, peer));
            }
            actual[k].links.retain(|l| &l.name != name);
            all.push((
                namespace.as_str(),
                LinkChange::DeleteLink { name: name.clone() },
            ));
        }
    }
    let mut deferred = BTreeSet::new();
    for (ns, actual) in namespaces.iter().zip(actual) {
        if ns.ovs_internal.iter().any(|p| actual.link(p).is_none()) {
            deferred.insert(ns.name.clone());
        }
        for change in diff_namespace(ns, Some(&actual)) {
            if let LinkChange::DeleteLink { name } = &change
                && let Some(l) = actual.link(name)
                && let Some(peer) = l.peer_elsewhere
            {
                ends_elsewhere.insert((ns.name.as_str(), name.clone()), (l.ifindex, peer));
            }
            all.push((ns.name.as_str(), change));
        }
    }
    // Deleting a veth end deletes the other with it: one whose other end
    // is in the host's own namespace (someone wired the lab to the host)
    // is not the lab's to delete.
    let mut warnings = Vec::new();
    if !ends_elsewhere.is_empty() {
        let host_ends = host.host_veth_ends().await?;
        all.retain(|(ns, change)| {
            let LinkChange::DeleteLink { name } = change else {
                return true;
            };
            let Some(&(index, peer)) = ends_elsewhere.get(&(*ns, name.clone())) else {
                return true;
            };
            if !host_ends.contains(&(peer, index)) {
                return true;
            }
            warnings.push(format!(
                "{ns}: link {name} left alone: its other end is in the host's namespace"
            ));
            false
        });
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
                        host.apply_link(handles, ns, change).await?;
                    }
                    Ok::<_, ReconcileError>(())
                }
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(applies)
            .buffer_unordered(at_once)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    Ok(LinksDone {
        lines,
        created,
        deferred,
        warnings,
        ..LinksDone::default()
    })
}

/// Converges one node's database in one transaction. Returns what it did,
/// and the switch read again if it changed anything.
///
/// A port whose device was just made again (deleted behind our back) has a
/// datapath port that still reads the old one, so its row goes in a first
/// transaction and comes back in the second.
async fn converge_switch<H: Host>(
    host: &H,
    lab: &str,
    spec: &SwitchSpec,
    client: &H::Switch,
    actual: &ActualSwitch,
    created: &BTreeSet<(String, String)>,
) -> Result<(Vec<String>, Option<ActualSwitch>), ReconcileError> {
    let remade: BTreeSet<&str> = spec
        .bridges
        .iter()
        .flat_map(|b| &b.ports)
        .filter(|p| p.patch_peer.is_none())
        .map(|p| p.name.as_str())
        .filter(|p| created.contains(&(spec.namespace.clone(), p.to_string())))
        .collect();
    let mut lines = Vec::new();
    let mut reread = None;
    if !remade.is_empty() {
        let mut without = spec.clone();
        for b in &mut without.bridges {
            b.ports.retain(|p| !remade.contains(p.name.as_str()));
        }
        let ops = diff_switch(lab, &without, actual);
        if !ops.is_empty() {
            lines.extend(ops.iter().map(|o| format!("{}: {o}", spec.node)));
            host.apply_switch(client, lab, &ops).await?;
            reread = Some(host.read_switch(client).await?);
        }
    }
    let ops = diff_switch(lab, spec, reread.as_ref().unwrap_or(actual));
    if ops.is_empty() {
        return Ok((lines, reread));
    }
    lines.extend(ops.iter().map(|o| format!("{}: {o}", spec.node)));
    host.apply_switch(client, lab, &ops).await?;
    Ok((lines, Some(host.read_switch(client).await?)))
}

/// What [`Run::early_flows`] did for one node: its index, its switch as
/// read, its bridges' flows converged and the change lines.
type EarlyFlows = (usize, ActualSwitch, Vec<BridgeFlows>, Vec<String>);

/// One bridge's flows to converge.
struct BridgeFlows {
    bridge: String,
    cookie: u64,
    wanted: Vec<FlowSpec>,
    /// `wanted`'s, for [`FlowsKnown`].
    fingerprint: Fingerprint,
    ports: BTreeMap<String, u32>,
    /// The bridge's last flow notice, taken before the read.
    notice: Option<u64>,
}

/// How a node's bridges' flows are converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bridges {
    /// Side by side: a small node just started (see [`Run::early_flows`]),
    /// whose flows are on the critical path of an `up` from nothing.
    AtOnce,
    /// One after another: the bridges of a large node hold thousands of
    /// flows each, read at the daemon's peak of memory (a 10,000-instance
    /// lab's peak went 184 → 200 MiB with them side by side).
    OneByOne,
}
/// Converges the flows of one node's `bridges`, one batch per bridge.
async fn converge_flows<H: Host>(
    host: &H,
    spec: &SwitchSpec,
    node: &NodeOvs,
    switch: &H::Switch,
    bridges: &[BridgeFlows],
    how: Bridges,
) -> Result<Vec<String>, ReconcileError> {
    if how == Bridges::OneByOne {
        host.still_connected(switch).await?;
        let mut lines = Vec::new();
        for b in bridges {
            lines.extend(converge_bridge_flows(host, spec, node, b).await?);
        }
        return Ok(lines);
    }
    // Beside the check that the database still answers: a node whose
    // database died fails at once, not after an OpenFlow timeout.
    let bridges = join_all(
        bridges
            .iter()
            .map(|b| converge_bridge_flows(host, spec, node, b)),
    );
    let (_, done) = futures::try_join!(host.still_connected(switch), async {
        bridges.await.into_iter().collect::<Result<Vec<_>, _>>()
    })?;
    Ok(done.into_iter().flatten().collect())
}

/// Converges one bridge's flows in one batch; the change lines.
async fn converge_bridge_flows<H: Host>(
    host: &H,
    spec: &SwitchSpec,
    node: &NodeOvs,
    b: &BridgeFlows,
) -> Result<Vec<String>, ReconcileError> {
    let client = host.connect_flows(node, &b.bridge).await?;
    let present = host.read_flows(&client, &b.bridge, &b.ports).await?;
    let (add, delete) = diff_flows(&b.wanted, b.cookie, &present);
    let mut lines = Vec::new();
    if add.is_empty() && delete.is_empty() {
        return Ok(lines);
    }
    for f in &delete {
        lines.push(format!("{}: {}: delete flow {f}", spec.node, b.bridge));
    }
    for f in &add {
        lines.push(format!(
            "{}: {}: add flow {}",
            spec.node,
            b.bridge,
            flows::describe(f)
        ));
    }
    host.apply_flows(&client, &b.bridge, b.cookie, &b.ports, &add, &delete)
        .await?;
    Ok(lines)
}

/// Namespaces created at the same time.
const NAMESPACE_CREATIONS: usize = 8;

#[cfg(test)]
mod tests {
    use super::{Lines, Planned};
    use std::collections::BTreeSet;

    #[test]
    fn a_plan_gives_the_local_vlans_it_allocated_and_no_others() {
        let topo = ovslab_topology::parse("seed.yaml", ovslab_topology::SEED_YAML).unwrap();
        let planned = Planned::new(&topo, Default::default(), &BTreeSet::new());
        let mut read: ovslab_topology::plan::LocalVlans = planned
            .desired
            .switches
            .iter()
            .flat_map(|s| {
                s.local_vlans
                    .iter()
                    .map(|(net, tag)| ((s.node.clone(), net.clone()), *tag))
            })
            .collect();
        assert!(!read.is_empty());
        assert!(planned.gives(&read));
        // A switch that has not taken every network yet.
        let first = read.keys().next().unwrap().clone();
        let tag = read.remove(&first).unwrap();
        assert!(planned.gives(&read));
        // A tag changed behind the daemon's back, or a node it does not know.
        read.insert(first.clone(), tag + 100);
        assert!(!planned.gives(&read));
        read.insert(first, tag);
        read.insert(("elsewhere".into(), "net1".into()), 1);
        assert!(!planned.gives(&read));
    }

    #[test]
    fn lines_come_back_as_they_went_in() {
        let mut lines = Lines::default();
        assert!(lines.is_empty());
        assert_eq!(lines.iter().count(), 0);
        lines.push("create namespace seed.compute1");
        lines.push(String::new());
        lines.extend(["compute1: add port qvo…", "ünïcode ✓"]);
        lines.extend(vec![String::from("last")]);
        assert!(!lines.is_empty());
        let want = [
            "create namespace seed.compute1",
            "",
            "compute1: add port qvo…",
            "ünïcode ✓",
            "last",
        ];
        assert_eq!(lines.iter().collect::<Vec<_>>(), want);
        assert_eq!(lines.into_vec(), want.map(String::from));
    }
}
