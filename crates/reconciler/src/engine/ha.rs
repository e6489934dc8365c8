//! The HA phase of a converge: each HA router copy's keepalived with the
//! configuration the L3 agent writes, reloaded (SIGHUP) when it changes —
//! keepalived keeps its state across a reload, so an edit never fails the
//! router over — and the copies no longer wanted stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use ovslab_topology::Topology;
use ovslab_topology::keepalived::{CONF_DIR_PREFIX, HaPort, KeepalivedSpec, copy_dir_name};
use ovslab_topology::plan::{DesiredState, router_copies};

use crate::ReconcileError;
use crate::agents::{Agent, AgentKind, mark_restart, restart_allowed};
use crate::host::Host;

/// An HA router copy's keepalived, from `<lab dir>/ha_confs.<node>.<router uuid>/`.
pub fn agent(lab_dir: &Path, lab: &str, spec: &KeepalivedSpec) -> Agent {
    let dir = lab_dir.join(spec.dir_name(lab));
    Agent {
        kind: AgentKind::Keepalived,
        what: format!("keepalived of router {} on {}", spec.router, spec.node),
        namespace: spec.namespace.clone(),
        args: spec.keepalived_args(&dir),
        dir,
    }
}

/// Each copy's keepalived set up on its own: the changes, and the first
/// copy that could not be (the others' errors are logged).
pub async fn converge<H: Host>(
    host: &H,
    lab: &str,
    lab_dir: &Path,
    desired: &DesiredState,
) -> (Vec<String>, Option<ReconcileError>) {
    let mut changes = Vec::new();
    let mut failed = None;
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    for spec in &desired.keepalived {
        let agent = agent(lab_dir, lab, spec);
        wanted.insert(agent.dir.clone());
        if let Err(e) = copy(host, spec, &agent, &mut changes).await {
            match failed {
                None => failed = Some(e),
                Some(_) => tracing::warn!(error = %e, "keepalived"),
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(lab_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(CONF_DIR_PREFIX) && path.is_dir() && !wanted.contains(&path) {
                changes.extend(host.stop_agent(&path).await);
            }
        }
    }
    (changes, failed)
}

/// One copy's keepalived: its configuration written, and it started,
/// restarted (other arguments) or reloaded (another configuration).
async fn copy<H: Host>(
    host: &H,
    spec: &KeepalivedSpec,
    agent: &Agent,
    changes: &mut Vec<String>,
) -> Result<(), ReconcileError> {
    let files = [
        ("keepalived.conf", spec.config()),
        ("args", agent.args.join("\n") + "\n"),
    ];
    let written = host.write_agent_files(agent, &files)?;
    let running = host.agent_running(agent);
    if running && written.iter().any(|f| f == "args") {
        changes.extend(host.stop_agent(&agent.dir).await);
        host.write_agent_files(agent, &files)?;
        host.start_agent(agent).await?;
        changes.push(format!("restart {}", agent.what));
    } else if running {
        if !written.is_empty() {
            host.signal_agent(agent, Signal::SIGHUP);
            changes.push(format!(
                "{}: wrote keepalived.conf, reloaded (SIGHUP)",
                agent.what
            ));
        }
    } else {
        restart_allowed(host, agent)?;
        let died = host.agent_died(agent);
        if died {
            mark_restart(host, agent)?;
        }
        host.start_agent(agent).await?;
        changes.push(if died {
            format!("start {} again (it had died)", agent.what)
        } else {
            format!("start {}", agent.what)
        });
    }
    Ok(())
}

/// Each HA router copy's state as the L3 agent reports it
/// (`l3-agent-list-hosting-router`): `active` where keepalived holds the
/// primary VIP on the copy's `ha-` port, `standby` where it runs without
/// it, `unknown` where it does not run (or its node is failed).
pub async fn states<H: Host>(
    host: &H,
    topo: &Topology,
    lab_dir: &Path,
    failed: &BTreeSet<String>,
) -> BTreeMap<(String, String), &'static str> {
    let lab = topo.lab.as_str();
    let mut out = BTreeMap::new();
    for router in &topo.routers {
        let Some(ha) = &router.ha else {
            continue;
        };
        for (node, namespace) in router_copies(lab, router) {
            let key = (router.name.clone(), node.to_string());
            let dir = lab_dir.join(copy_dir_name(lab, &router.name, node));
            let running = host.agent_running(&Agent {
                kind: AgentKind::Keepalived,
                what: String::new(),
                namespace: namespace.clone(),
                dir,
                args: Vec::new(),
            });
            if failed.contains(node) || !running {
                out.insert(key, "unknown");
                continue;
            }
            let device = HaPort::of(router, node).device;
            let held = host
                .link_addresses(&namespace, &device)
                .await
                .is_ok_and(|a| a.contains(&ha.vip));
            out.insert(key, if held { "active" } else { "standby" });
        }
    }
    out
}

/// The node of each HA router's active copy, where exactly one copy is
/// active.
pub fn active_nodes(states: &BTreeMap<(String, String), &'static str>) -> BTreeMap<String, String> {
    let mut active: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((router, node), state) in states {
        if *state == "active" {
            active.entry(router.clone()).or_default().push(node.clone());
        }
    }
    active
        .into_iter()
        .filter(|(_, nodes)| nodes.len() == 1)
        .map(|(router, mut nodes)| (router, nodes.remove(0)))
        .collect()
}
