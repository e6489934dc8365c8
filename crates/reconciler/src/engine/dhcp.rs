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
use crate::agents::{
    Agent, AgentKind, CLIENT_DIR_PREFIX, is_dhcp_dir, mark_restart, restart_allowed,
};
use crate::host::Host;

/// How long a converge waits for the DHCP instances' leases.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);

/// A running DHCP client without its lease is started again at most this
/// often (a fresh DISCOVER gets a reservation at once, where a renewal
/// refused waits); in between it goes on asking by itself.
pub const LEASE_RETRY: Duration = Duration::from_secs(30);

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
    /// The first agent that could not be set up; the others were, each
    /// on its own (one dnsmasq that cannot start held back every other
    /// agent's repair).
    pub failed: Option<ReconcileError>,
}

impl DhcpOutcome {
    /// Keeps the first error; logs the others.
    fn fail(&mut self, error: ReconcileError) {
        match &self.failed {
            None => self.failed = Some(error),
            Some(_) => tracing::warn!(error = %error, "dhcp"),
        }
    }
}

/// Starts an agent that does not run, saying whether it had died; one
/// that died again soon after it was started again waits
/// ([`crate::agents::RESTART_AFTER`]).
async fn start<H: Host>(
    host: &H,
    agent: &Agent,
    out: &mut DhcpOutcome,
) -> Result<(), ReconcileError> {
    restart_allowed(host, agent)?;
    let died = host.agent_died(agent);
    if died {
        mark_restart(host, agent)?;
    }
    host.start_agent(agent).await?;
    out.changes.push(if died {
        format!("start {} again (it had died)", agent.what)
    } else {
        format!("start {}", agent.what)
    });
    Ok(())
}

/// One network's dnsmasq: its files written, and it started, restarted
/// (other arguments) or reloaded (other files); whether it was reloaded.
async fn server<H: Host>(
    host: &H,
    spec: &DhcpServerSpec,
    agent: &Agent,
    out: &mut DhcpOutcome,
) -> Result<bool, ReconcileError> {
    let mut files = spec.files();
    files.push(("args", agent.args.join("\n") + "\n"));
    let written = host.write_agent_files(agent, &files)?;
    let running = host.agent_running(agent);
    if running && written.iter().any(|f| f == "args") {
        // Started with other arguments: start it again.
        out.changes.extend(host.stop_agent(&agent.dir).await);
        host.write_agent_files(agent, &files)?;
        host.start_agent(agent).await?;
        out.changes.push(format!("restart {}", agent.what));
    } else if running {
        if !written.is_empty() {
            host.signal_agent(agent, Signal::SIGHUP);
            out.changes.push(format!(
                "{}: wrote {}, reloaded (SIGHUP)",
                agent.what,
                written.join(", ")
            ));
            return Ok(true);
        }
    } else {
        start(host, agent, out).await?;
    }
    Ok(false)
}

/// One instance's udhcpc: started where it does not run, or runs with
/// other arguments; whether it was.
async fn client<H: Host>(
    host: &H,
    agent: &Agent,
    out: &mut DhcpOutcome,
) -> Result<bool, ReconcileError> {
    let args = ("args", agent.args.join("\n") + "\n");
    let written = host.write_agent_files(agent, std::slice::from_ref(&args))?;
    let running = host.agent_running(agent);
    if running && !written.is_empty() {
        out.changes.extend(host.stop_agent(&agent.dir).await);
        host.write_agent_files(agent, &[args])?;
    }
    let started = !running || !written.is_empty();
    if started {
        start(host, agent, out).await?;
    }
    Ok(started)
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
        match server(host, spec, &agent, &mut out).await {
            Ok(signalled) => reloaded |= signalled,
            Err(e) => out.fail(e),
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
            match client(host, &agent, &mut out).await {
                Ok(started) => clients.push((spec, agent, started)),
                Err(e) => out.fail(e),
            }
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
    let mut hupped: BTreeSet<String> = BTreeSet::new();
    // Worth waiting for only when something was started or reloaded: an
    // audit that finds a lease gone and changes nothing says so at once,
    // rather than holding the lab for the whole wait.
    let mut acted = !out.changes.is_empty();
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
            // Once in LEASE_RETRY: each restart made another audit (its
            // address going and coming), which restarted it again.
            let lately = host
                .agent_restarted_ago(agent)
                .is_some_and(|ago| ago < LEASE_RETRY);
            if !started && !lately && asked.insert(spec.instance.clone()) {
                acted = true;
                // dnsmasq keeps an address declined for 10 minutes, and
                // any instance may decline its neighbour's (a DECLINE
                // naming the other's MAC): a reload forgets it.
                if let Some(server) = desired
                    .dhcp_servers
                    .iter()
                    .find(|s| s.subnet.contains(&spec.address.addr()))
                    && hupped.insert(server.network.clone())
                {
                    let server = server_agent(lab_dir, server);
                    if host.signal_agent(&server, Signal::SIGHUP) {
                        out.changes.push(format!(
                            "{}: reloaded (SIGHUP) for {}, which held no lease",
                            server.what, spec.instance
                        ));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                out.changes.extend(host.stop_agent(&agent.dir).await);
                let restarted = async {
                    host.write_agent_files(agent, &[("args", agent.args.join("\n") + "\n")])?;
                    mark_restart(host, agent)?;
                    host.start_agent(agent).await
                };
                match restarted.await {
                    Ok(()) => out.changes.push(format!(
                        "restart {} (it held no lease for {})",
                        agent.what, spec.address
                    )),
                    Err(e) => out.fail(e),
                }
            }
            missing.push(spec.instance.clone());
        }
        if missing.is_empty() {
            break;
        }
        if !acted || tokio::time::Instant::now() >= deadline {
            out.without_lease = missing;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}
