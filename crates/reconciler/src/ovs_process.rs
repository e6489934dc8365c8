//! A node's Open vSwitch: one `ovsdb-server` and one `ovs-vswitchd`, started
//! inside the node's namespace from `<run_root>/<lab>/<node>/`.
//!
//! Both write pidfiles there; a process counts as the node's only when its
//! pid is alive, its command name matches and it lives in the node's
//! namespace, so a stale pidfile can never make ovslab signal a stranger.
//! With `OVS_RUNDIR` pointing at the run directory, `ovs-vsctl`,
//! `ovs-ofctl` and `ovs-appctl` find the database, the bridges' `.mgmt`
//! sockets and the control sockets without options.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// Where Debian installs the schema the database is created from.
pub const DEFAULT_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

#[derive(Debug, thiserror::Error)]
pub enum OvsProcessError {
    #[error("cannot create run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program} for node {node}")]
    Spawn {
        program: String,
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} for node {node} failed: {detail}")]
    Failed {
        program: String,
        node: String,
        detail: String,
    },
    #[error("cannot enter namespace {namespace}")]
    Namespace {
        namespace: String,
        #[source]
        source: ovslab_netlink::NetlinkError,
    },
}

/// Notified whenever an Open vSwitch daemon this process started exits
/// (stopped on purpose or not); the audits wake on it.
pub fn exited() -> &'static tokio::sync::Notify {
    static EXITED: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    EXITED.get_or_init(tokio::sync::Notify::new)
}

/// The two daemons of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvsDaemon {
    OvsdbServer,
    OvsVswitchd,
}

impl OvsDaemon {
    pub const ALL: [OvsDaemon; 2] = [OvsDaemon::OvsdbServer, OvsDaemon::OvsVswitchd];

    pub fn program(self) -> &'static str {
        match self {
            OvsDaemon::OvsdbServer => "ovsdb-server",
            OvsDaemon::OvsVswitchd => "ovs-vswitchd",
        }
    }
}

/// One node's Open vSwitch files and processes.
#[derive(Debug, Clone)]
pub struct NodeOvs {
    pub node: String,
    pub namespace: String,
    pub rundir: PathBuf,
}

impl NodeOvs {
    pub fn new(run_root: &Path, lab: &str, node: &str, namespace: &str) -> Self {
        NodeOvs {
            node: node.to_string(),
            namespace: namespace.to_string(),
            rundir: ovslab_topology::naming::node_rundir(run_root, lab, node),
        }
    }

    pub fn db_socket(&self) -> PathBuf {
        self.rundir.join("db.sock")
    }

    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.rundir.join(format!("{bridge}.mgmt"))
    }

    fn pidfile(&self, daemon: OvsDaemon) -> PathBuf {
        self.rundir.join(format!("{}.pid", daemon.program()))
    }

    /// The environment under which the OVS tools find this node's files.
    pub fn env(&self) -> Vec<(String, String)> {
        let dir = self.rundir.display().to_string();
        ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"]
            .into_iter()
            .map(|k| (k.to_string(), dir.clone()))
            .collect()
    }

    /// The daemon's pid, if it runs as this node's (see the module doc).
    pub fn pid(&self, daemon: OvsDaemon) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pidfile(daemon))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        // A zombie (dead, and not reaped: PID 1 here does not reap the
        // orphans of an earlier ovslabd) is dead.
        if comm.trim() != daemon.program() || is_zombie(pid) {
            return None;
        }
        let ns_inode = std::fs::metadata(ovslab_netlink::netns::path(&self.namespace))
            .ok()?
            .ino();
        let proc_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        (proc_ns.to_string_lossy() == format!("net:[{ns_inode}]")).then_some(pid)
    }

    /// Whether the daemon died: its pidfile is left behind (a clean exit
    /// removes it, and so does `down`), but it does not run.
    pub fn died(&self, daemon: OvsDaemon) -> bool {
        self.pidfile(daemon).exists() && self.pid(daemon).is_none()
    }

    /// Starts whichever daemon is not running; returns what it started.
    pub async fn ensure_running(&self, schema: &Path) -> Result<Vec<OvsDaemon>, OvsProcessError> {
        let mut started = self.ensure_database(schema).await?;
        started.extend(self.ensure_vswitchd()?);
        Ok(started)
    }

    /// Starts `ovsdb-server` (creating the database first) unless it runs,
    /// and waits for its socket.
    pub async fn ensure_database(&self, schema: &Path) -> Result<Vec<OvsDaemon>, OvsProcessError> {
        std::fs::create_dir_all(&self.rundir).map_err(|source| OvsProcessError::RunDir {
            path: self.rundir.clone(),
            source,
        })?;
        if self.pid(OvsDaemon::OvsdbServer).is_some() {
            return Ok(Vec::new());
        }
        self.create_database(schema).await?;
        self.spawn(OvsDaemon::OvsdbServer)?;
        self.wait_for_socket(&self.db_socket(), OvsDaemon::OvsdbServer)
            .await?;
        Ok(vec![OvsDaemon::OvsdbServer])
    }

    /// Starts `ovs-vswitchd` unless it runs (the database must run).
    pub fn ensure_vswitchd(&self) -> Result<Vec<OvsDaemon>, OvsProcessError> {
        if self.pid(OvsDaemon::OvsVswitchd).is_some() {
            return Ok(Vec::new());
        }
        self.spawn(OvsDaemon::OvsVswitchd)?;
        Ok(vec![OvsDaemon::OvsVswitchd])
    }

    async fn create_database(&self, schema: &Path) -> Result<(), OvsProcessError> {
        let db = self.rundir.join("conf.db");
        if db.exists() {
            return Ok(());
        }
        let out = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(schema)
            .output()
            .await
            .map_err(|source| OvsProcessError::Spawn {
                program: "ovsdb-tool".into(),
                node: self.node.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(OvsProcessError::Failed {
                program: "ovsdb-tool create".into(),
                node: self.node.clone(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn spawn(&self, daemon: OvsDaemon) -> Result<(), OvsProcessError> {
        let program = daemon.program();
        let _ = std::fs::remove_file(self.pidfile(daemon));
        let mut cmd = Command::new(program);
        match daemon {
            OvsDaemon::OvsdbServer => {
                cmd.arg(self.rundir.join("conf.db"))
                    .arg(format!("--remote=punix:{}", self.db_socket().display()));
            }
            OvsDaemon::OvsVswitchd => {
                cmd.arg(format!("unix:{}", self.db_socket().display()));
            }
        }
        cmd.args(["--pidfile", "--log-file", "--no-chdir", "-vconsole:off"])
            .envs(self.env())
            .current_dir(&self.rundir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        ovslab_netlink::netns::command_in(cmd.as_std_mut(), &self.namespace).map_err(|source| {
            OvsProcessError::Namespace {
                namespace: self.namespace.clone(),
                source,
            }
        })?;
        let mut child = cmd.spawn().map_err(|source| OvsProcessError::Spawn {
            program: program.into(),
            node: self.node.clone(),
            source,
        })?;
        let node = self.node.clone();
        // Reap the child whenever it ends, so it never lingers as a zombie,
        // and wake the audits: a node lost its switch.
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(node, program, %status, "open vswitch daemon exited"),
                Err(e) => {
                    tracing::warn!(node, program, error = %e, "cannot wait for open vswitch daemon")
                }
            }
            exited().notify_one();
        });
        tracing::info!(node = self.node, program, "started");
        Ok(())
    }

    async fn wait_for_socket(
        &self,
        socket: &Path,
        daemon: OvsDaemon,
    ) -> Result<(), OvsProcessError> {
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(OvsProcessError::Failed {
            program: daemon.program().into(),
            node: self.node.clone(),
            detail: format!(
                "{} did not appear within 5 s (see {})",
                socket.display(),
                self.rundir
                    .join(format!("{}.log", daemon.program()))
                    .display()
            ),
        })
    }

    /// Stops `ovs-vswitchd` if it runs (to be started again with options
    /// it reads only at start); returns its pid.
    pub async fn stop_vswitchd(&self) -> Option<u32> {
        let pid = self.pid(OvsDaemon::OvsVswitchd)?;
        terminate(pid).await;
        let _ = std::fs::remove_file(self.pidfile(OvsDaemon::OvsVswitchd));
        Some(pid)
    }

    /// Stops both daemons (vswitchd first) by the pids they wrote, waiting
    /// for each to exit; then removes the run directory.
    pub async fn stop_and_remove(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        for daemon in [OvsDaemon::OvsVswitchd, OvsDaemon::OvsdbServer] {
            if let Some(pid) = self.pid(daemon) {
                terminate(pid).await;
                stopped.push(format!(
                    "stopped {} of {} (pid {pid})",
                    daemon.program(),
                    self.node
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&self.rundir);
        stopped
    }
}

/// SIGTERM, then SIGKILL after 2 s; returns once the process is gone from
/// the process table (or after 3 more seconds, with a warning).
async fn terminate(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid_t = Pid::from_raw(pid as i32);
    let _ = kill(pid_t, Signal::SIGTERM);
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    let mut waited = 0;
    while alive() && waited < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    if alive() {
        let _ = kill(pid_t, Signal::SIGKILL);
        for _ in 0..100 {
            if !alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Dead; wait (briefly) until its parent — our reaper task, or init for
    // a process adopted from an earlier daemon — has reaped it, so that
    // nothing of the lab is left in the process table when `down` returns.
    // ovs-vswitchd's leader can exit before its datapath threads do, so
    // this may take a moment.
    for _ in 0..600 {
        if !Path::new(&format!("/proc/{pid}")).exists() || fully_exited_orphan(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!(
        pid,
        "process still in the process table 3 s after it was stopped"
    );
}

/// A zombie with no thread left whose parent is not this daemon (a process
/// adopted from an earlier run): whether its parent reaps it is not ours to
/// wait for.
fn fully_exited_orphan(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    field("State:").starts_with('Z')
        && field("Threads:") == "1"
        && field("PPid:") != std::process::id().to_string()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
