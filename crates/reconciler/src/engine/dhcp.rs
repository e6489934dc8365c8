//! The DHCP phase of a converge: each DHCP network's dnsmasq with the
//! agent's files, each DHCP instance's udhcpc, the agents no longer wanted
//! stopped, and a bounded wait until every DHCP instance holds its
//! reservation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use ovslab_topology::dhcp::{DhcpClientSpec, DhcpServerSpec};
use ovslab_topology::plan::DesiredState;

use crate::ReconcileError;
use crate::agents::{Agent, AgentKind, CLIENT_DIR_PREFIX, is_dhcp_dir};
use crate::host::Host;

/// How long a converge waits for the DHCP instances' leases.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);

/// A network's dnsmasq, from `<lab dir>/qdhcp-<network uuid>/` (the name
/// of its namespace after the lab's prefix).
pub fn server_agent(lab_dir: &Path, spec: &DhcpServerSpec) -> Agent {
    let dir_name = spec
        .namespace
        .split_once('.')
        .map_or(spec.namespace.as_str(), |(_, rest)| rest);
    let dir = lab_dir.join(dir_name);
    let mut args = spec.dnsmasq_args(&dir);
    // ovslabd supervises it as its child, where the agent's
    // ProcessMonitor watched a daemonised dnsmasq's pidfile.
    args.push("--keep-in-foreground".into());
    Agent {
        kind: AgentKind::Dnsmasq,
        what: format!("dnsmasq of {}", spec.network),
        namespace: spec.namespace.clone(),
        dir,
        args,
    }
}

/// An instance's udhcpc, from `<lab dir>/udhcpc.<instance>/`.
pub fn client_agent(lab_dir: &Path, spec: &DhcpClientSpec, hook: &Path) -> Agent {
    let dir = lab_dir.join(format!("{CLIENT_DIR_PREFIX}{}", spec.instance));
    let mut args = spec.udhcpc_args(&dir, hook);
    args.remove(0);
    Agent {
        kind: AgentKind::Udhcpc,
        what: format!("udhcpc of {}", spec.instance),
        namespace: spec.namespace.clone(),
        dir,
        args,
    }
}

/// What the phase did: lines for the report, and the instances still
/// without their lease.
#[derive(Debug, Default)]
pub struct DhcpOutcome {
    pub changes: Vec<String>,
    pub without_lease: Vec<String>,
}

/// Starts an agent that does not run, saying whether it had died.
async fn start<H: Host>(
    host: &H,
    agent: &Agent,
    out: &mut DhcpOutcome,
) -> Result<(), ReconcileError> {
    let died = host.agent_died(agent);
    host.start_agent(agent).await?;
    out.changes.push(if died {
        format!("start {} again (it had died)", agent.what)
    } else {
        format!("start {}", agent.what)
    });
    Ok(())
}

pub async fn converge<H: Host>(
    host: &H,
    lab: &str,
    lab_dir: &Path,
    hook: Option<&Path>,
    desired: &DesiredState,
) -> Result<DhcpOutcome, ReconcileError> {
    let mut out = DhcpOutcome::default();
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    let mut reloaded = false;

    // The servers first: a client that starts before its server waits a
    // second for its next try.
    for spec in &desired.dhcp_servers {
        let agent = server_agent(lab_dir, spec);
        wanted.insert(agent.dir.clone());
        let mut files = spec.files();
        files.push(("args", agent.args.join("\n") + "\n"));
        let written = host.write_agent_files(&agent, &files)?;
        let running = host.agent_running(&agent);
        if running && written.iter().any(|f| f == "args") {
            // Started with other arguments: start it again.
            out.changes.extend(host.stop_agent(&agent.dir).await);
            host.write_agent_files(&agent, &files)?;
            host.start_agent(&agent).await?;
            out.changes.push(format!("restart {}", agent.what));
        } else if running {
            if !written.is_empty() {
                host.signal_agent(&agent, Signal::SIGHUP);
                reloaded = true;
                out.changes.push(format!(
                    "{}: wrote {}, reloaded (SIGHUP)",
                    agent.what,
                    written.join(", ")
                ));
            }
        } else {
            start(host, &agent, &mut out).await?;
        }
    }

    if reloaded {
        // dnsmasq reads its files again between packets: give it the
        // moment before a client asks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut clients = Vec::new();
    if !desired.dhcp_clients.is_empty() {
        let hook = hook.ok_or_else(|| ReconcileError::NoDhcpHook {
            lab: lab.to_string(),
        })?;
        for spec in &desired.dhcp_clients {
            let agent = client_agent(lab_dir, spec, hook);
            wanted.insert(agent.dir.clone());
            let args = ("args", agent.args.join("\n") + "\n");
            let written = host.write_agent_files(&agent, std::slice::from_ref(&args))?;
            let running = host.agent_running(&agent);
            if running && !written.is_empty() {
                out.changes.extend(host.stop_agent(&agent.dir).await);
                host.write_agent_files(&agent, &[args])?;
            }
            let started = !running || !written.is_empty();
            if started {
                start(host, &agent, &mut out).await?;
            }
            clients.push((spec, agent, started));
        }
    }

    // Agents of networks and instances no longer wanted.
    if let Ok(entries) = std::fs::read_dir(lab_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if is_dhcp_dir(&name) && path.is_dir() && !wanted.contains(&path) {
                out.changes.extend(host.stop_agent(&path).await);
            }
        }
    }

    // Every client holds its reservation, or is asked to renew (once),
    // within a bounded wait.
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    let mut asked: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut missing = Vec::new();
        for (spec, agent, started) in &clients {
            let held = host
                .link_addresses(&spec.namespace, &spec.interface)
                .await
                .map(|a| a.contains(&spec.address))
                .unwrap_or(false);
            if held {
                continue;
            }
            // A running client whose lease went, or whose reservation
            // changed, starts again: a fresh DISCOVER gets the address at
            // once, where a renewal refused would wait seconds.
            if !started && asked.insert(spec.instance.clone()) {
                out.changes.extend(host.stop_agent(&agent.dir).await);
                host.write_agent_files(agent, &[("args", agent.args.join("\n") + "\n")])?;
                host.start_agent(agent).await?;
                out.changes.push(format!(
                    "restart {} (it held no lease for {})",
                    agent.what, spec.address
                ));
            }
            missing.push(spec.instance.clone());
        }
        if missing.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            out.without_lease = missing;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}
