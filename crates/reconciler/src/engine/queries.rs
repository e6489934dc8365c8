//! What the engine answers about a lab without changing it: its status, its
//! checks, a trace, where a name lives, its saved topology.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use ovslab_api::{
    AuditStatus, CheckReport, CheckResult, DhcpStatus, InstanceStatus, LabStatus, NodeStatus,
    ProcessStatus, RouterCopyStatus, RouterStatus, Target, TraceReport, TraceRequest,
};
use ovslab_netlink::netns;
use ovslab_topology::format_mac;
use ovslab_topology::keepalived::copy_dir_name;
use ovslab_topology::naming;
use ovslab_topology::plan::{LocalVlans, plan, router_copies};

use super::{Engine, TOPOLOGY_FILE};
use crate::ReconcileError;
use crate::drivers::switch;
use crate::host::Host;
use crate::ovs_process::{Liveness, NodeOvs, OvsDaemon};

/// Queries read the host itself, whatever the engine's host: they move to
/// a crate of their own (issue #12).
impl<H: Host> Engine<H> {
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
        // Physical routers with an Open vSwitch are listed with the nodes.
        let hosts: Vec<(&str, String)> = topo
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), format!("{:?}", n.role).to_lowercase()))
            .chain(
                topo.switch_hosts()
                    .skip(topo.nodes.len())
                    .map(|r| (r, "physical-router".to_string())),
            )
            .collect();
        let probes = join_all(hosts.iter().map(|(name, _)| {
            let ns = naming::namespace(&topo.lab, name);
            let ovs = NodeOvs::new(&self.config.run_root, &topo.lab, name, &ns);
            async move {
                let (ovsdb, vswitchd) = tokio::join!(
                    ovs.probe(OvsDaemon::OvsdbServer, STATUS_DEADLINE),
                    ovs.probe(OvsDaemon::OvsVswitchd, STATUS_DEADLINE)
                );
                let local_vlans = match &ovsdb {
                    Liveness::Answering(_) => {
                        match switch::connect_with_deadline(&ovs, STATUS_DEADLINE).await {
                            Ok(client) => switch::read_local_vlans(&client, topo).await.ok(),
                            Err(_) => None,
                        }
                    }
                    _ => None,
                };
                (ns, [ovsdb, vswitchd], local_vlans)
            }
        }))
        .await;
        for ((name, role), (ns, liveness, actual)) in hosts.iter().zip(probes) {
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
                        .get(&(name.to_string(), daemon.program()))
                        .copied()
                        .unwrap_or(0),
                })
                .collect();
            let exists = namespaces.contains(&ns);
            let failed = lab.failed.contains(*name);
            // A node failed on purpose is as it should be.
            healthy &=
                failed || (exists && liveness.iter().all(|l| matches!(l, Liveness::Answering(_))));
            let local_vlans = actual
                .map(|vlans| vlans.into_iter().collect())
                .unwrap_or_default();
            nodes.push(NodeStatus {
                name: name.to_string(),
                role: role.clone(),
                namespace: ns,
                namespace_exists: exists,
                ovsdb_server_pid: ovsdb,
                ovs_vswitchd_pid: vswitchd,
                local_vlans,
                processes,
                failed,
            });
        }
        let instances = topo
            .instances
            .iter()
            .map(|i| {
                let ns = naming::namespace(&topo.lab, &i.name);
                let exists = namespaces.contains(&ns);
                let dhcp = topo.network(&i.network).is_some_and(|n| n.dhcp);
                let dhcp_lease = dhcp.then(|| !lab.without_lease.contains(&i.name));
                // An instance of a node failed on purpose is as it should be.
                healthy &= exists && (dhcp_lease != Some(false) || lab.failed.contains(&i.node));
                InstanceStatus {
                    name: i.name.clone(),
                    node: i.node.clone(),
                    network: i.network.clone(),
                    address: i.address.to_string(),
                    mac: format_mac(&i.mac),
                    namespace: ns,
                    namespace_exists: exists,
                    dhcp_lease,
                }
            })
            .collect();
        // The routers' addresses, from the plan the lab keeps: planning
        // a 10,000-instance lab again cost each `status` about 50 MB.
        let fresh;
        let desired = match lab.planned.as_ref().and_then(|p| p.whole()) {
            Some(kept) => kept,
            None => {
                fresh = plan(topo, &LocalVlans::new());
                &fresh
            }
        };
        let lab_dir = self.lab_dir(&topo.lab);
        let ha_states = super::ha::states(&*self.host, topo, &lab_dir, &lab.failed).await;
        let active = super::ha::active_nodes(&ha_states);
        let routers = topo
            .routers
            .iter()
            .map(|r| {
                let copies: Vec<RouterCopyStatus> = match &r.ha {
                    None => Vec::new(),
                    Some(_) => router_copies(&topo.lab, r)
                        .into_iter()
                        .map(|(node, ns)| {
                            let state = ha_states
                                .get(&(r.name.clone(), node.to_string()))
                                .copied()
                                .unwrap_or("unknown");
                            let failed = lab.failed.contains(node);
                            let exists = namespaces.contains(&ns);
                            healthy &= failed || (exists && state != "unknown");
                            let dir = lab_dir.join(copy_dir_name(&topo.lab, &r.name, node));
                            let pid = std::fs::read_to_string(dir.join("pid"))
                                .ok()
                                .and_then(|p| p.trim().parse().ok())
                                .filter(|_| state != "unknown");
                            RouterCopyStatus {
                                node: node.to_string(),
                                namespace: ns,
                                namespace_exists: exists,
                                ha_state: state.to_string(),
                                keepalived_pid: pid,
                            }
                        })
                        .collect(),
                };
                let node = match &r.ha {
                    None => r.node().to_string(),
                    Some(_) => active.get(&r.name).cloned().unwrap_or_default(),
                };
                if r.ha.is_some()
                    && node.is_empty()
                    && r.nodes.iter().any(|n| !lab.failed.contains(n))
                {
                    healthy = false;
                }
                let ns = if node.is_empty() {
                    String::new()
                } else {
                    ovslab_topology::plan::router_namespace_on(&topo.lab, r, &node)
                };
                let exists = namespaces.contains(&ns);
                if r.ha.is_none() {
                    healthy &= lab.failed.contains(&node) || exists;
                }
                let addresses = match desired.keepalived.iter().find(|k| k.router == r.name) {
                    Some(k) => k
                        .excluded
                        .iter()
                        .map(|(a, dev)| format!("{dev} {a}"))
                        .collect(),
                    None => desired
                        .namespace(&ns)
                        .map(|n| {
                            n.links
                                .iter()
                                .flat_map(|l| l.addresses.iter().map(|a| format!("{} {a}", l.name)))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                RouterStatus {
                    name: r.name.clone(),
                    node,
                    addresses,
                    namespace: ns,
                    namespace_exists: exists,
                    copies,
                }
            })
            .collect();
        let dhcp = desired
            .dhcp_servers
            .iter()
            .map(|s| {
                let agent = super::dhcp::server_agent(&lab_dir, s);
                let exists = namespaces.contains(&s.namespace);
                // Frozen or in a namespace that is gone, it serves nobody.
                let pid = agent.identity().filter(|_| agent.running()).map(|i| i.pid);
                healthy &= lab.failed.contains(&s.node) || (exists && pid.is_some());
                let address = desired
                    .namespace(&s.namespace)
                    .and_then(|n| n.links.first())
                    .and_then(|l| l.addresses.first())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                // `<expiry> <mac> <ip> <hostname> <client id>` per lease.
                let leases = std::fs::read_to_string(agent.dir.join("leases"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        (w.len() >= 3).then(|| format!("{} {}", w[2], w[1]))
                    })
                    .collect();
                DhcpStatus {
                    network: s.network.clone(),
                    node: s.node.clone(),
                    namespace: s.namespace.clone(),
                    namespace_exists: exists,
                    address,
                    dnsmasq_pid: pid,
                    leases,
                }
            })
            .collect();
        let metadata = desired
            .metadata
            .iter()
            .map(|m| format!("{} on {} in {}", m.serves, m.listen, m.namespace))
            .collect();
        Ok(LabStatus {
            routers,
            dhcp,
            metadata,
            lab: topo.lab.clone(),
            source: topo.source.clone(),
            nodes,
            instances,
            healthy: healthy && lab.unreadable.is_none(),
            repairs: lab.repairs.iter().cloned().collect(),
            repair_count: lab.repair_count,
            audit_error: match &lab.unreadable {
                Some(error) => Some(format!(
                    "its saved topology cannot be read ({error}): not audited; \
                     `ovslab down {0}` removes it, an `up` of lab {0} takes it over",
                    topo.lab
                )),
                None => lab.audit_failure.as_ref().map(|f| f.error.clone()),
            },
            audits: lab.last_audit.as_ref().map(|(at, ms)| AuditStatus {
                count: lab.audits,
                last_at: at.clone(),
                last_ms: *ms,
            }),
        })
    }

    /// Runs the lab's declared checks, each with its own probe, all at once
    /// (up to `PROBES_AT_ONCE` probes over all requests). Checks that
    /// connect to the same port of the same destination share its
    /// listener ([`ovslab_probe::probes::listen`]), so none waits for
    /// another.
    pub async fn check(&self, lab: &str) -> Result<CheckReport, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let topology = {
            let lab = entry.lock().await;
            self.hosting(&lab).await
        };
        let started = Instant::now();
        let topology = Arc::new(topology);
        let runs = (0..topology.checks.len()).map(|i| {
            let topology = topology.clone();
            let tag = ovslab_probe::checks::next_tag();
            async move {
                // Held by the probe's thread, so a request that goes away
                // does not free it early.
                let permit = PROBES.acquire().await;
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    ovslab_probe::checks::run(&topology, &topology.checks[i], tag)
                })
                .await
            }
        });
        let mut results: Vec<CheckResult> = Vec::new();
        for (check, joined) in topology.checks.iter().zip(join_all(runs).await) {
            results.push(joined.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a check task failed");
                CheckResult {
                    name: check.name.clone(),
                    passed: false,
                    detail: "the check's task failed".into(),
                }
            }));
        }
        Ok(CheckReport {
            lab: lab.to_string(),
            results,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Follows one probe through the lab (see `ovslab_probe::trace`).
    pub async fn trace(
        &self,
        lab: &str,
        request: TraceRequest,
    ) -> Result<TraceReport, ReconcileError> {
        let entry = self
            .entry(lab)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab.into()))?;
        let topology = {
            let lab = entry.lock().await;
            self.hosting(&lab).await
        };
        let run_root = self.config.run_root.clone();
        let tag = ovslab_probe::checks::next_tag();
        let lab_name = lab.to_string();
        let permit = PROBES.acquire().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            ovslab_probe::trace::run(&topology, &run_root, &request, tag)
        })
        .await
        .map_err(|source| ReconcileError::Task {
            of: format!("lab {lab}"),
            what: "trace",
            source,
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
        // `ROUTER@NODE`: a router's copy on a node.
        if let Some((router, node)) = name.split_once('@') {
            let copy = topo.router(router).and_then(|r| {
                router_copies(lab, r)
                    .into_iter()
                    .find(|(n, _)| *n == node)
                    .map(|(_, ns)| ns)
            });
            let Some(namespace) = copy else {
                return Err(ReconcileError::UnknownTarget {
                    lab: lab.into(),
                    name: name.into(),
                });
            };
            return Ok(Target {
                lab: lab.into(),
                name: name.into(),
                kind: "router".into(),
                namespace,
                env: vec![],
            });
        }
        let (kind, env) = if topo.node(name).is_some() {
            let ovs = NodeOvs::new(&self.config.run_root, lab, name, &namespace);
            ("node", ovs.env())
        } else if let Some(router) = topo.physical_router(name) {
            let ovs = NodeOvs::new(&self.config.run_root, lab, name, &namespace);
            let env = if router.on_physical_network(topo) {
                ovs.env()
            } else {
                vec![]
            };
            ("physical-router", env)
        } else if topo.instance(name).is_some() {
            ("instance", vec![])
        } else if topo.routers.iter().any(|r| r.name == name) {
            // An HA router's active copy (its first when none is active).
            let hosting = self.hosting(&guard).await;
            let router = hosting.router(name).expect("a router of the topology");
            namespace = ovslab_topology::plan::active_router_namespace(lab, router);
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
}

/// Check and trace probes running at once, over all requests: each holds
/// a blocking thread and sockets in the lab's namespaces for up to seconds,
/// so many `ovslab check` at once must queue, not exhaust threads and
/// file descriptors.
static PROBES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PROBES_AT_ONCE);
const PROBES_AT_ONCE: usize = 16;

/// How long `status` waits for each OVS daemon's answer: short, since
/// a running daemon answers in well under a millisecond and a hung one
/// must not hold `status` (nor the lab's lock) for long.
const STATUS_DEADLINE: Duration = Duration::from_secs(1);
