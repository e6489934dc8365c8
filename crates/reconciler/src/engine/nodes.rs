//! Failing a node on purpose and bringing it back (`ovslab node fail`,
//! `ovslab node recover`), and what HA routers need of the engine: a wait
//! for their masters after `up`, and the lab as its active copies route it.
//!
//! A failed node behaves as a host that died: its ports on the lab's
//! switches (physical network, overlay, external network) go down, so no
//! frame leaves or reaches it, and everything running on it stops — its
//! Open vSwitch, its DHCP servers and its instances' DHCP clients, its
//! router copies' keepalived, the metadata service in its namespaces.
//! Converges leave what lives on it alone (see
//! [`ovslab_topology::plan::DesiredState::fail_nodes`]), so audits do not
//! "repair" it. Recovering it is its boot: the ports come up, Open vSwitch
//! starts again over its database and gets its flows back, and every agent
//! starts afresh — keepalived as BACKUP, so a recovered node never takes
//! an HA router back (`nopreempt`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ovslab_api::NodeReport;
use ovslab_topology::Topology;
use ovslab_topology::naming;

use super::converge::{Outcome, Scope};
use super::{Engine, FAILED_FILE, Lab, foreign_names};
use crate::ReconcileError;
use crate::host::Host;
use crate::ovs_process::NodeOvs;

/// How long `up` waits for every HA router to have one master: keepalived
/// in BACKUP waits three advertisements (2 s apart) and its skew before it
/// takes over.
pub const MASTER_WAIT: Duration = Duration::from_secs(12);

impl<H: Host> Engine<H> {
    /// Records `failed` as the lab's failed nodes, on disk first.
    pub(super) fn save_failed(
        &self,
        lab_name: &str,
        lab: &mut Lab,
        failed: BTreeSet<String>,
    ) -> Result<(), ReconcileError> {
        let file = self.lab_dir(lab_name).join(FAILED_FILE);
        if failed.is_empty() {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ReconcileError::io(&file, e));
                }
                _ => {}
            }
        } else {
            let text: String = failed.iter().map(|n| format!("{n}\n")).collect();
            crate::files::replace(&file, text).map_err(|e| ReconcileError::io(&file, e))?;
        }
        lab.failed = failed;
        Ok(())
    }

    /// Fails `node` of `lab` on purpose, or brings it back (`fail` false).
    /// Failing a failed node, or recovering a live one, converges the lab
    /// all the same: it finishes what a daemon stopped half-way left (a
    /// failed node's Open vSwitch still running, a recovered node's agents
    /// not started), and changes nothing otherwise.
    pub async fn set_node_failed(
        &self,
        lab_name: &str,
        node: &str,
        fail: bool,
    ) -> Result<NodeReport, ReconcileError> {
        let started = Instant::now();
        let entry = self
            .entry(lab_name)
            .await
            .ok_or_else(|| ReconcileError::UnknownLab(lab_name.into()))?;
        let mut lab = entry.lock().await;
        if lab.removed {
            return Err(ReconcileError::UnknownLab(lab_name.into()));
        }
        if lab.topology.node(node).is_none() {
            return Err(ReconcileError::UnknownNode {
                lab: lab_name.into(),
                node: node.into(),
            });
        }
        let mut changes = Vec::new();
        let mut warnings = Vec::new();
        if lab.failed.contains(node) != fail {
            let mut failed = lab.failed.clone();
            if fail {
                failed.insert(node.to_string());
            } else {
                failed.remove(node);
            }
            self.save_failed(lab_name, &mut lab, failed)?;
            changes.push(format!(
                "{} node {node}",
                if fail { "failed" } else { "recovering" }
            ));
        }
        let topology = lab.topology.clone();
        let failed = lab.failed.clone();
        let mut outcome = Outcome::default();
        let result = self
            .converge(&mut lab, Scope::Full, true, &mut outcome)
            .await;
        let Outcome {
            changes: made,
            restarted: _,
            warnings: met,
            without_lease,
        } = outcome;
        lab.note_leases(without_lease);
        changes.extend(made.into_vec());
        lab.foreign = foreign_names(&met);
        warnings.extend(met);
        if fail {
            // Its Open vSwitch last (the converge's last step, and here
            // for a converge that failed before it): the ports it held went
            // down first, so nothing it sends on its way out reaches the lab.
            let ovs = NodeOvs::new(
                &self.config.run_root,
                lab_name,
                node,
                &naming::namespace(lab_name, node),
            );
            changes.extend(self.host.stop_ovs(&ovs).await);
        }
        result?;
        if !fail && !changes.is_empty() {
            warnings.extend(self.wait_for_masters(&topology, &failed).await);
        }
        let report = NodeReport {
            lab: lab_name.to_string(),
            node: node.to_string(),
            failed: fail,
            changes,
            warnings,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            lab = lab_name,
            node,
            failed = fail,
            ms = report.elapsed_ms,
            "node {}",
            if fail { "failed" } else { "recovered" }
        );
        Ok(report)
    }

    /// Waits (at most [`MASTER_WAIT`]) until every HA router with a live
    /// copy has exactly one active copy; a warning for each that has not.
    pub(super) async fn wait_for_masters(
        &self,
        topo: &Topology,
        failed: &BTreeSet<String>,
    ) -> Vec<String> {
        let routers: Vec<&str> = topo
            .routers
            .iter()
            .filter(|r| r.ha.is_some() && r.nodes.iter().any(|n| !failed.contains(n)))
            .map(|r| r.name.as_str())
            .collect();
        if routers.is_empty() {
            return Vec::new();
        }
        let lab_dir = self.lab_dir(&topo.lab);
        let deadline = tokio::time::Instant::now() + MASTER_WAIT;
        loop {
            let states = super::ha::states(&*self.host, topo, &lab_dir, failed).await;
            let mut actives: BTreeMap<&str, usize> = routers.iter().map(|r| (*r, 0)).collect();
            for ((router, _), state) in &states {
                if *state == "active"
                    && let Some(n) = actives.get_mut(router.as_str())
                {
                    *n += 1;
                }
            }
            let unsettled: Vec<(&str, usize)> =
                actives.into_iter().filter(|(_, n)| *n != 1).collect();
            if unsettled.is_empty() {
                return Vec::new();
            }
            if tokio::time::Instant::now() >= deadline {
                return unsettled
                    .into_iter()
                    .map(|(router, n)| {
                        format!(
                            "HA router {router} has {n} active copies after {} s (keepalived decides)",
                            MASTER_WAIT.as_secs()
                        )
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The lab's topology with each HA router's active copy first (see
    /// [`Topology::hosting`]), as checks, traces and `exec` see it.
    pub(super) async fn hosting(&self, lab: &Lab) -> Topology {
        if !lab.topology.routers.iter().any(|r| r.ha.is_some()) {
            return lab.topology.clone();
        }
        let states = super::ha::states(
            &*self.host,
            &lab.topology,
            &self.lab_dir(&lab.topology.lab),
            &lab.failed,
        )
        .await;
        lab.topology.hosting(&super::ha::active_nodes(&states))
    }
}
