//! A node's Open vSwitch: one `ovsdb-server` and one `ovs-vswitchd`, started
//! inside the node's namespace from `<run_root>/<lab>/<node>/`.
//!
//! Both write pidfiles there; a process counts as the node's only when its
//! pid is alive, its command name matches, its command line names the
//! node's database socket and it started when the record ovslab keeps next
//! to the pidfile (`<program>.start`: pid, start time and namespace,
//! written when ovslabd starts or first adopts it) says, so neither a
//! stale pidfile nor a pid used again can make ovslab signal a stranger.
//! The start time is checked again right before every signal. One that
//! runs in a namespace other than the node's (the node's deleted and made
//! again) is stopped by the next converge and started again
//! ([`NodeOvs::stop_elsewhere`]).
//! With `OVS_RUNDIR` pointing at the run directory, `ovs-vsctl`,
//! `ovs-ofctl` and `ovs-appctl` find the database, the bridges' `.mgmt`
//! sockets and the control sockets without options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    #[error("{program} for node {node} did not finish within {} s; killed (pid {pid})", after.as_secs_f64())]
    Timeout {
        program: String,
        node: String,
        pid: u32,
        after: Duration,
    },
}

/// How long `ovsdb-tool create` may take (it writes a small file).
const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// How long a daemon just started may take to make its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// How long a daemon may take to answer the cheap request that tells a
/// hung daemon from a busy one (an OVSDB `echo`, a unixctl `version`).
/// Both are answered in well under a millisecond by a running daemon,
/// whatever the size of its lab; 2 s leaves room for a loaded host.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// How long a daemon that is not stopped, but missed [`PROBE_DEADLINE`],
/// is given before it is taken for hung: one just started, or applying a
/// large configuration on a loaded host, answers within this.
pub const HUNG_DEADLINE: Duration = Duration::from_secs(10);

/// What the cheap request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Not running as the node's (no pid, or the pid is not ours).
    Dead,
    /// Runs and answered.
    Answering(u32),
    /// Runs and did not answer in time: stopped or stuck. The text says
    /// what it did not answer (`an echo`, `a unixctl version`).
    NotAnswering(u32, &'static str),
    /// Runs, but its socket refuses connections or is missing (e.g. it
    /// was stopped before it made it). Not a sign of a hang while the
    /// daemon starts; in a probe before a converge, where every daemon
    /// had its time to start, it is broken. The text is the error.
    Unreachable(u32, String),
}

impl Liveness {
    /// `running`, `not answering` or `dead`, as `ovslab status` shows it.
    pub fn state(&self) -> &'static str {
        match self {
            Liveness::Dead => "dead",
            Liveness::Answering(_) => "running",
            Liveness::NotAnswering(..) | Liveness::Unreachable(..) => "not answering",
        }
    }

    /// The pid, when the daemon runs.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Liveness::Dead => None,
            Liveness::Answering(pid)
            | Liveness::NotAnswering(pid, _)
            | Liveness::Unreachable(pid, _) => Some(*pid),
        }
    }
}

/// A process as ovslab recorded it: its pid and its start time (field 22
/// of `/proc/<pid>/stat`, in clock ticks since boot), which together name
/// one process for the life of the host: a pid used again has another
/// start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub pid: u32,
    pub start: u64,
}

impl Identity {
    /// The process that has `pid` now, if any.
    pub fn of(pid: u32) -> Option<Identity> {
        start_time(pid).map(|start| Identity { pid, start })
    }

    /// Whether `pid` is still this process (not gone, not used again).
    pub fn is_current(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Sends `signal` if the pid is still this process; false if not (then
    /// nothing is sent).
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) -> bool {
        if !self.is_current() {
            return false;
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal).is_ok()
    }

    /// Whether the process still runs (exists and is not a zombie).
    pub(crate) fn alive(&self) -> bool {
        self.is_current() && !is_zombie(self.pid)
    }
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Field 22 of `/proc/<pid>/stat`: when the process started.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: count fields from the last `)`, which ends it.
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state): field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Starts `cmd` inside namespace `name`, registered with the caller's
/// runtime (which reaps it): spawned from a thread that entered the
/// namespace (see [`ovslab_netlink::netns::spawn_in`]), so that nothing
/// runs between fork and exec and the standard library can use
/// `posix_spawn`. Setting the namespace between fork and exec instead made
/// every start copy the daemon's page tables: 2–4 ms each, one node after
/// another, on the critical path of an `up` from nothing.
///
/// The spawning thread blocks until the child has called `exec`, and an
/// `up` from nothing starts its daemons while both cores run the ones
/// started before: the child waited up to 5 ms for a core to do it. So
/// the thread (made for this spawn) takes a higher priority, which the
/// child inherits, and the child is given the daemon's own back once it
/// runs its program: only the `exec` goes first.
pub(crate) fn spawn_in(
    cmd: &mut Command,
    name: &str,
) -> Result<std::io::Result<tokio::process::Child>, ovslab_netlink::NetlinkError> {
    let runtime = tokio::runtime::Handle::current();
    ovslab_netlink::netns::run_in(name, || {
        let _runtime = runtime.enter();
        // SAFETY: getpriority(2) of the calling thread.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let boosted = set_nice(0, (nice - SPAWN_BOOST).max(-20));
        let child = cmd.spawn();
        if boosted && let Some(pid) = child.as_ref().ok().and_then(|c| c.id()) {
            set_nice(pid, nice);
        }
        Ok(child)
    })
}

/// How much higher a daemon's priority is until it runs its program (see
/// [`spawn_in`]), in nice steps.
const SPAWN_BOOST: libc::c_int = 10;

/// Sets the nice value of thread `tid` (0: the calling one); false if it
/// could not (without `CAP_SYS_NICE`, a value below the current one).
fn set_nice(tid: u32, nice: libc::c_int) -> bool {
    // SAFETY: setpriority(2) with plain integers; on Linux PRIO_PROCESS
    // with a thread id sets that thread's nice value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0 }
}

/// A schema file as it is on disk now: its path, size and modification
/// time (a package upgrade that replaces it makes another key).
type SchemaKey = (PathBuf, u64, std::time::SystemTime);

fn schema_key(schema: &Path) -> Option<SchemaKey> {
    let meta = std::fs::metadata(schema).ok()?;
    Some((schema.to_path_buf(), meta.len(), meta.modified().ok()?))
}

/// The empty databases `ovsdb-tool create` made, by schema. Every node's
/// database starts the same (the schema, in OVSDB's file format), so one
/// run of the tool serves the daemon's life: copying its output saves each
/// node from nothing a process start (about 10 ms, on the critical path of
/// an `up`, before `ovsdb-server` can start).
fn empty_databases() -> &'static std::sync::Mutex<BTreeMap<SchemaKey, Arc<Vec<u8>>>> {
    static EMPTY: std::sync::OnceLock<std::sync::Mutex<BTreeMap<SchemaKey, Arc<Vec<u8>>>>> =
        std::sync::OnceLock::new();
    EMPTY.get_or_init(Default::default)
}

fn empty_database(key: &SchemaKey) -> Option<Arc<Vec<u8>>> {
    empty_databases()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned()
}

fn keep_empty_database(key: SchemaKey, bytes: Vec<u8>) {
    empty_databases()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::new(bytes));
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

    /// A node whose files are in `rundir` (a spare node's, see
    /// [`crate::spare`]).
    pub fn at(node: &str, namespace: &str, rundir: PathBuf) -> Self {
        NodeOvs {
            node: node.to_string(),
            namespace: namespace.to_string(),
            rundir,
        }
    }

    pub fn db_socket(&self) -> PathBuf {
        self.rundir.join("db.sock")
    }

    /// Where the node's daemons were started, when that is not its run
    /// directory: a spare node's directory, moved here when a lab took
    /// it (see [`crate::spare`]). The daemons' command lines and own
    /// paths still name it; a symbolic link there leads here. Only a
    /// directory of the run root's spares (`<run-root>/.spares/<id>`, the
    /// id a number, the node's directory being `<run-root>/<lab>/<node>`)
    /// is one.
    pub fn origin(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.rundir.join(ORIGIN_FILE)).ok()?;
        let origin = PathBuf::from(text.trim_end_matches('\n'));
        let spares = self
            .rundir
            .parent()?
            .parent()?
            .join(crate::spare::SPARES_DIR);
        let id = origin.file_name()?.to_str()?;
        (origin.parent() == Some(spares.as_path()) && id.parse::<u64>().is_ok()).then_some(origin)
    }

    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.rundir.join(format!("{bridge}.mgmt"))
    }

    fn pidfile(&self, daemon: OvsDaemon) -> PathBuf {
        self.rundir.join(format!("{}.pid", daemon.program()))
    }

    /// The record of the process ovslab started or adopted: `pid start`,
    /// then the inode of the namespace it runs in when that was readable.
    fn record(&self, daemon: OvsDaemon) -> PathBuf {
        self.rundir.join(format!("{}.start", daemon.program()))
    }

    fn read_record(&self, daemon: OvsDaemon) -> Option<Identity> {
        self.read_full_record(daemon).map(|(identity, _)| identity)
    }

    fn read_full_record(&self, daemon: OvsDaemon) -> Option<(Identity, Option<u64>)> {
        let text = std::fs::read_to_string(self.record(daemon)).ok()?;
        let mut words = text.split_whitespace();
        let identity = Identity {
            pid: words.next()?.parse().ok()?,
            start: words.next()?.parse().ok()?,
        };
        Some((identity, words.next().and_then(|w| w.parse().ok())))
    }

    fn write_record(&self, daemon: OvsDaemon, identity: Identity) {
        let file = self.record(daemon);
        let text = match proc_namespace(identity.pid) {
            Ok(inode) => format!("{} {} {inode}\n", identity.pid, identity.start),
            Err(_) => format!("{} {}\n", identity.pid, identity.start),
        };
        if let Err(e) = crate::files::replace(&file, text) {
            tracing::warn!(file = %file.display(), error = %e, "cannot record an open vswitch daemon");
        }
    }

    /// The inode of the namespace the daemon `identity` names runs in (see
    /// [`namespace_of`]), falling back on its record.
    fn namespace_of(&self, daemon: OvsDaemon, identity: Identity) -> Option<u64> {
        namespace_of(identity, || {
            self.read_full_record(daemon)
                .filter(|(recorded, _)| *recorded == identity)
                .and_then(|(_, inode)| inode)
        })
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
        self.identity(daemon).map(|i| i.pid)
    }

    /// The daemon's pid and start time, if it runs as this node's: the
    /// pidfile names it, it is the right program in the node's namespace,
    /// and it is the process recorded when ovslabd started it. A running
    /// daemon with no record (started by an ovslabd that kept none, or whose
    /// record was lost) is adopted: recorded now.
    pub fn identity(&self, daemon: OvsDaemon) -> Option<Identity> {
        let pid: u32 = std::fs::read_to_string(self.pidfile(daemon))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let identity = Identity::of(pid)?;
        match self.read_record(daemon) {
            Some(recorded) if recorded.pid == pid => {
                if recorded != identity {
                    // The pid was used again by a process started later.
                    return None;
                }
            }
            _ => {
                if !self.runs_here(daemon, pid) {
                    return None;
                }
                self.write_record(daemon, identity);
                return Some(identity);
            }
        }
        self.runs_here(daemon, pid).then_some(identity)
    }

    /// The daemon to stop: as its pidfile names it ([`NodeOvs::identity`]),
    /// or, before it wrote one, as recorded when it was started, if that
    /// very process (pid and start time) still runs as this node's.
    fn running(&self, daemon: OvsDaemon) -> Option<Identity> {
        self.identity(daemon).or_else(|| {
            self.read_record(daemon)
                .filter(|r| r.is_current() && self.runs_here(daemon, r.pid))
        })
    }

    /// Whether `pid` is a live `daemon` of this node: the right program,
    /// not a zombie, and started on this node's database socket (its
    /// command line names it; the run directory is the node's own). The
    /// command line, unlike `/proc/<pid>/ns/net`, is readable for any
    /// process without `CAP_SYS_PTRACE`, so that the service can recognise
    /// switches started by an ovslabd with more capabilities (run by hand).
    fn runs_here(&self, daemon: OvsDaemon, pid: u32) -> bool {
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            return false;
        };
        // A zombie (dead, and not reaped: PID 1 here does not reap the
        // orphans of an earlier ovslabd) is dead.
        if comm.trim() != daemon.program() || is_zombie(pid) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let wanted = |socket: &Path| match daemon {
            OvsDaemon::OvsdbServer => format!("--remote=punix:{}", socket.display()),
            OvsDaemon::OvsVswitchd => format!("unix:{}", socket.display()),
        };
        let names = |wanted: String| {
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == wanted.as_bytes())
        };
        names(wanted(&self.db_socket()))
            || self
                .origin()
                .is_some_and(|origin| names(wanted(&origin.join("db.sock"))))
    }

    /// Asks the daemon a cheap question with `deadline`: an OVSDB `echo`
    /// for `ovsdb-server`, a unixctl `version` for `ovs-vswitchd`.
    pub async fn probe(&self, daemon: OvsDaemon, deadline: Duration) -> Liveness {
        let Some(identity) = self.identity(daemon) else {
            return Liveness::Dead;
        };
        let pid = identity.pid;
        match daemon {
            OvsDaemon::OvsdbServer => {
                let client =
                    ovslab_ovsdb::Client::connect_with_deadline(&self.db_socket(), deadline).await;
                match client {
                    Ok(client) => match client.echo().await {
                        Err(e) if e.is_timeout() => Liveness::NotAnswering(pid, "an echo"),
                        // An answer, even an odd one, is an answer.
                        _ => Liveness::Answering(pid),
                    },
                    Err(e) if e.is_timeout() => Liveness::NotAnswering(pid, "a connection"),
                    Err(e) => Liveness::Unreachable(pid, chain(&e)),
                }
            }
            OvsDaemon::OvsVswitchd => {
                let socket = self.rundir.join(format!("ovs-vswitchd.{pid}.ctl"));
                match ovslab_unixctl::call_async(&socket, "version", &[], deadline).await {
                    Ok(_) => Liveness::Answering(pid),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        Liveness::NotAnswering(pid, "a unixctl version")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Other => Liveness::Answering(pid),
                    Err(e) => Liveness::Unreachable(pid, e.to_string()),
                }
            }
        }
    }

    /// Kills (SIGKILL, by its verified pid) each daemon of the node that
    /// is hung: stopped (SIGSTOP) and not answering a cheap request within
    /// [`PROBE_DEADLINE`], or not answering it within [`HUNG_DEADLINE`]
    /// either (a busy daemon is not killed for being slow); its
    /// pidfile stays, so the converge that follows starts it again and
    /// counts a restart. Returns one line per daemon killed.
    pub async fn kill_hung(&self) -> Vec<String> {
        let probes = OvsDaemon::ALL.map(|d| self.probe(d, PROBE_DEADLINE));
        let [ovsdb, vswitchd] = probes;
        let (ovsdb, vswitchd) = tokio::join!(ovsdb, vswitchd);
        let mut killed = Vec::new();
        for (daemon, liveness) in OvsDaemon::ALL.into_iter().zip([ovsdb, vswitchd]) {
            let (pid, why) = match liveness {
                Liveness::NotAnswering(pid, what) if is_stopped(pid) => (
                    pid,
                    format!(
                        "it is stopped and did not answer {what} within {} s",
                        PROBE_DEADLINE.as_secs_f64()
                    ),
                ),
                Liveness::Unreachable(pid, error) if is_stopped(pid) => {
                    (pid, format!("it is stopped and cannot be reached: {error}"))
                }
                // Slow, perhaps busy: a second, longer chance.
                Liveness::NotAnswering(..) => match self.probe(daemon, HUNG_DEADLINE).await {
                    Liveness::NotAnswering(pid, what) => (
                        pid,
                        format!(
                            "it did not answer {what} within {} s",
                            HUNG_DEADLINE.as_secs_f64()
                        ),
                    ),
                    _ => continue,
                },
                // Running, but its socket refuses or is not there yet (a
                // daemon just started makes it): reported by `status`,
                // and whatever needs the socket fails and is tried again.
                Liveness::Unreachable(..) | Liveness::Dead | Liveness::Answering(_) => continue,
            };
            let Some(identity) = self.identity(daemon).filter(|i| i.pid == pid) else {
                continue;
            };
            tracing::warn!(
                node = self.node,
                program = daemon.program(),
                pid,
                "{why}: killing it, to be started again"
            );
            kill(identity).await;
            killed.push(format!(
                "killed {} of {} (pid {pid}): {why}",
                daemon.program(),
                self.node
            ));
        }
        killed
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
        if let Some(origin) = self.origin() {
            crate::spare::repair_link(&origin, &self.rundir);
        }
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

    /// Makes the node's empty database: a copy of the one `ovsdb-tool
    /// create` made from this schema for an earlier node (see
    /// [`empty_database`]), or, the first time, `ovsdb-tool create` itself.
    async fn create_database(&self, schema: &Path) -> Result<(), OvsProcessError> {
        let db = self.rundir.join("conf.db");
        if db.exists() {
            return Ok(());
        }
        let key = schema_key(schema);
        if let Some(bytes) = key.as_ref().and_then(empty_database) {
            // Whole or not at all: a database cut short by a crash would
            // keep ovsdb-server from starting.
            return crate::files::replace(&db, &*bytes).map_err(|source| OvsProcessError::RunDir {
                path: db.clone(),
                source,
            });
        }
        let spawn_err = |source| OvsProcessError::Spawn {
            program: "ovsdb-tool".into(),
            node: self.node.clone(),
            source,
        };
        let child = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(schema)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id().unwrap_or(0);
        // On timeout the child is dropped, and with it killed (by the pid
        // tokio holds, which cannot have been used again: not yet reaped)
        // and reaped in the background.
        let out = tokio::time::timeout(TOOL_DEADLINE, child.wait_with_output())
            .await
            .map_err(|_| OvsProcessError::Timeout {
                program: "ovsdb-tool create".into(),
                node: self.node.clone(),
                pid,
                after: TOOL_DEADLINE,
            })?
            .map_err(spawn_err)?;
        if !out.status.success() {
            return Err(OvsProcessError::Failed {
                program: "ovsdb-tool create".into(),
                node: self.node.clone(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if let (Some(key), Ok(bytes)) = (key, std::fs::read(&db)) {
            keep_empty_database(key, bytes);
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
        let spawned =
            spawn_in(&mut cmd, &self.namespace).map_err(|source| OvsProcessError::Namespace {
                namespace: self.namespace.clone(),
                source,
            })?;
        let mut child = spawned.map_err(|source| OvsProcessError::Spawn {
            program: program.into(),
            node: self.node.clone(),
            source,
        })?;
        // Our own child: its pid cannot be used again before the task
        // below reaps it, so its start time read now is its own.
        if let Some(identity) = child.id().and_then(Identity::of) {
            self.write_record(daemon, identity);
        }
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
        let started = tokio::time::Instant::now();
        while started.elapsed() < SOCKET_WAIT {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            // Gone after it wrote its pidfile: no socket will come.
            if self.died(daemon) {
                return Err(OvsProcessError::Failed {
                    program: daemon.program().into(),
                    node: self.node.clone(),
                    detail: format!(
                        "exited before it made {} (see {})",
                        socket.display(),
                        self.rundir
                            .join(format!("{}.log", daemon.program()))
                            .display()
                    ),
                });
            }
            // A daemon makes its socket some 10 ms after it starts, on the
            // critical path of an `up` from nothing: asked often at first,
            // more often than the runtime's timer (whole milliseconds) can
            // wake, so from a blocking thread.
            if started.elapsed() < Duration::from_millis(50) {
                let _ =
                    tokio::task::spawn_blocking(|| std::thread::sleep(SOCKET_ASKED_EVERY)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Err(OvsProcessError::Failed {
            program: daemon.program().into(),
            node: self.node.clone(),
            detail: format!(
                "{} did not appear within {} s (see {})",
                socket.display(),
                SOCKET_WAIT.as_secs(),
                self.rundir
                    .join(format!("{}.log", daemon.program()))
                    .display()
            ),
        })
    }

    /// Stops the node's daemons that run in a namespace other than the
    /// node's as it is now, vswitchd first, waiting for each to exit, and
    /// removes their pidfiles, so that they are started again in it. A
    /// node's namespace deleted behind ovslab's back (`ip netns del`) lives
    /// on, unnamed, while its daemons run in it, and the converge makes a
    /// new one under the name: a vswitchd left in the old one switches
    /// nothing of the node's, and its `ovsdb-server` keeps the database
    /// locked. Returns one line per daemon stopped.
    pub async fn stop_elsewhere(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        let Some(now) = ovslab_netlink::netns::inode(&self.namespace) else {
            return stopped;
        };
        for daemon in [OvsDaemon::OvsVswitchd, OvsDaemon::OvsdbServer] {
            let Some(identity) = self.running(daemon) else {
                continue;
            };
            if self
                .namespace_of(daemon, identity)
                .is_none_or(|inode| inode == now)
            {
                continue;
            }
            tracing::warn!(
                node = self.node,
                program = daemon.program(),
                pid = identity.pid,
                "runs in a namespace that is no longer the node's: stopping it, to be started again"
            );
            terminate(identity).await;
            let _ = std::fs::remove_file(self.pidfile(daemon));
            stopped.push(format!(
                "stopped {} of {} (pid {}): it ran in a namespace no longer the node's",
                daemon.program(),
                self.node,
                identity.pid
            ));
        }
        stopped
    }

    /// Stops `ovs-vswitchd` if it runs (to be started again with options
    /// it reads only at start); returns its pid.
    pub async fn stop_vswitchd(&self) -> Option<u32> {
        let identity = self.running(OvsDaemon::OvsVswitchd)?;
        terminate(identity).await;
        let _ = std::fs::remove_file(self.pidfile(OvsDaemon::OvsVswitchd));
        Some(identity.pid)
    }

    /// Stops both daemons (vswitchd first) by the pids they wrote, waiting
    /// for each to exit; then removes the run directory.
    pub async fn stop_and_remove(&self) -> Vec<String> {
        let stopped = self.stop().await;
        let origin = self.origin();
        let _ = std::fs::remove_dir_all(&self.rundir);
        if let Some(origin) = origin {
            crate::spare::remove_link(&origin, &self.rundir);
        }
        stopped
    }

    /// Stops both daemons (vswitchd first) by the pids they wrote, waiting
    /// for each to exit, and removes their pidfiles (they did not die: they
    /// are started again as new, not counted as restarts). A daemon started
    /// a moment ago may not have written its pidfile yet (a converge that
    /// fails just after starting it, and undoes what it made): the record
    /// this process made when it started it names it then.
    pub async fn stop(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        for daemon in [OvsDaemon::OvsVswitchd, OvsDaemon::OvsdbServer] {
            if let Some(identity) = self.running(daemon) {
                terminate(identity).await;
                stopped.push(format!(
                    "stopped {} of {} (pid {})",
                    daemon.program(),
                    self.node,
                    identity.pid
                ));
            }
            let _ = std::fs::remove_file(self.pidfile(daemon));
        }
        stopped
    }
}

/// The file in a node's run directory that names its [`NodeOvs::origin`].
pub const ORIGIN_FILE: &str = "spare-origin";

/// How often a daemon's socket is looked for in its first 50 ms.
const SOCKET_ASKED_EVERY: Duration = Duration::from_micros(200);

/// How long a daemon asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a killed process may take to leave the process table.
const REAP_WAIT: Duration = Duration::from_secs(3);

/// SIGTERM (with SIGCONT, so that a stopped process acts on it), then
/// SIGKILL after [`STOP_GRACE`]; returns once the process is gone from the
/// process table (or after [`REAP_WAIT`] more, with a warning). Every
/// signal goes only to the process `identity` names.
pub(crate) async fn terminate(identity: Identity) {
    use nix::sys::signal::Signal;
    expected_exits().insert(identity);
    identity.signal(Signal::SIGTERM);
    identity.signal(Signal::SIGCONT);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while identity.alive() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if identity.alive() {
        tracing::warn!(
            pid = identity.pid,
            "did not stop within {} s of SIGTERM: killed",
            STOP_GRACE.as_secs()
        );
    }
    kill(identity).await;
}

/// The processes [`terminate`] stopped: their exit is no news for the
/// audits. Kept until their waiter asks ([`stopped_by_us`]), or bounded
/// for processes nobody waits for (adopted from an earlier daemon).
fn expected_exits() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<Identity>> {
    static EXPECTED: std::sync::Mutex<std::collections::BTreeSet<Identity>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut set = EXPECTED.lock().unwrap_or_else(|e| e.into_inner());
    if set.len() > 4096 {
        set.clear();
    }
    set
}

/// Whether `identity` exited because ovslabd stopped it (asked once).
pub(crate) fn stopped_by_us(identity: Identity) -> bool {
    expected_exits().remove(&identity)
}

/// SIGKILL (which works on a stopped process too), then waits until the
/// process is gone from the process table.
async fn kill(identity: Identity) {
    if identity.alive() {
        identity.signal(nix::sys::signal::Signal::SIGKILL);
    }
    // Dead; wait (briefly) until its parent — our reaper task, or init for
    // a process adopted from an earlier daemon — has reaped it, so that
    // nothing of the lab is left in the process table when `down` returns.
    // ovs-vswitchd's leader can exit before its datapath threads do, so
    // this may take a moment.
    let deadline = tokio::time::Instant::now() + REAP_WAIT;
    while tokio::time::Instant::now() < deadline {
        if !identity.is_current() || fully_exited_orphan(identity.pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::warn!(
        pid = identity.pid,
        "process still in the process table {} s after it was killed",
        REAP_WAIT.as_secs()
    );
}

/// The inode of the network namespace process `pid` runs in.
fn proc_namespace(pid: u32) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|meta| meta.ino())
}

/// The inode of the network namespace the process `identity` runs in: read
/// from `/proc`, or, where that is closed to this process (the kernel
/// shows another user's process's namespace, or that of a process started
/// by an ovslabd with more capabilities, only to `CAP_SYS_PTRACE`),
/// `recorded`: the namespace written down when it was started (a daemon or
/// agent never changes its namespace). `None` if neither says.
pub(crate) fn namespace_of(
    identity: Identity,
    recorded: impl FnOnce() -> Option<u64>,
) -> Option<u64> {
    match proc_namespace(identity.pid) {
        Ok(inode) => Some(inode),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => recorded(),
        Err(_) => None,
    }
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

/// Whether `pid` is stopped (SIGSTOP, or a debugger): it answers nothing
/// until it is continued, however long one waits.
pub fn is_stopped(pid: u32) -> bool {
    process_state(pid).is_some_and(|s| s == 'T' || s == 't')
}

/// The state letter of field 3 of `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The version of the installed Open vSwitch (`ovs-vswitchd --version`:
/// `ovs-vswitchd (Open vSwitch) 3.1.0`), asked once, within 5 s; `None`
/// when it cannot be told.
pub async fn installed_version() -> Option<String> {
    static VERSION: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    VERSION
        .get_or_init(|| async {
            let run = tokio::process::Command::new("ovs-vswitchd")
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .ok()?
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .split_whitespace()
                .last()
                .map(str::to_string)
        })
        .await
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sleep` child, reaped by a thread of its own (as the daemon's
    /// reaper task does for the OVS daemons), so that `kill` sees it go.
    fn sleeper() -> (Identity, std::thread::JoinHandle<()>) {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let identity = Identity::of(child.id()).expect("its start time");
        let reaper = std::thread::spawn(move || {
            let _ = child.wait();
        });
        (identity, reaper)
    }

    /// Field 19 of `/proc/<pid>/stat`: its (main thread's) nice value.
    fn nice_of(pid: u32) -> i64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, rest) = stat.rsplit_once(')').unwrap();
        rest.split_whitespace().nth(16).unwrap().parse().unwrap()
    }

    #[tokio::test]
    #[ignore = "needs root"]
    async fn a_daemon_runs_at_the_daemon_s_priority_after_its_boosted_start() {
        ovslab_testkit::require_root(
            "a_daemon_runs_at_the_daemon_s_priority_after_its_boosted_start",
        );
        let ns = ovslab_testkit::TestNetns::new();
        let mut cmd = Command::new("sleep");
        cmd.arg("30").kill_on_drop(true);
        let mut child = spawn_in(&mut cmd, &ns.name).unwrap().unwrap();
        let pid = child.id().unwrap();
        let mine = nice_of(std::process::id());
        assert_eq!(nice_of(pid), mine, "the spawn's higher priority stayed");
        // The boost was the spawning thread's, made for the spawn: this
        // thread's own is untouched.
        // SAFETY: getpriority(2) of the calling thread.
        let here = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(i64::from(here), mine);
        child.kill().await.unwrap();
    }

    /// Only a spare's directory of the same run root is a node's origin:
    /// the file that names it cannot point the daemon anywhere else.
    #[test]
    fn only_a_spare_of_the_run_root_is_an_origin() {
        let root = crate::files::test_dir("ovs-origin");
        let node = NodeOvs::new(&root, "lab", "node", "lab.node");
        std::fs::create_dir_all(&node.rundir).unwrap();
        assert_eq!(node.origin(), None);
        let spare = root.join(crate::spare::SPARES_DIR).join("3");
        for (text, wanted) in [
            (format!("{}\n", spare.display()), Some(spare.clone())),
            ("/etc\n".to_string(), None),
            (format!("{}\n", root.join("other/3").display()), None),
            ("relative/3\n".to_string(), None),
            // The run root itself, or a name that is no spare's id.
            (format!("{}\n", spare.with_file_name("..").display()), None),
            (format!("{}\n", spare.with_file_name("x").display()), None),
        ] {
            std::fs::write(node.rundir.join(ORIGIN_FILE), text).unwrap();
            assert_eq!(node.origin(), wanted);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_start_time_is_field_22_of_stat() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        let field22: u64 = after_name
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(start_time(me), Some(field22));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_pid_whose_start_time_differs_is_never_signalled() {
        let (identity, reaper) = sleeper();
        let stranger = Identity {
            pid: identity.pid,
            start: identity.start + 1,
        };
        assert!(!stranger.is_current());
        assert!(!stranger.signal(nix::sys::signal::Signal::SIGKILL));
        kill(stranger).await;
        assert!(identity.alive(), "a process of the same pid was signalled");

        // A pidfile naming it with a record that says another start: the
        // node does not count it as its daemon.
        let dir = crate::files::test_dir("ovs-reused");
        let node = NodeOvs {
            node: "compute1".into(),
            namespace: "nonexistent-ns".into(),
            rundir: dir.clone(),
        };
        std::fs::write(
            node.pidfile(OvsDaemon::OvsdbServer),
            format!("{}\n", identity.pid),
        )
        .unwrap();
        node.write_record(OvsDaemon::OvsdbServer, stranger);
        assert_eq!(node.identity(OvsDaemon::OvsdbServer), None);
        assert_eq!(
            node.probe(OvsDaemon::OvsdbServer, PROBE_DEADLINE).await,
            Liveness::Dead
        );
        assert!(node.kill_hung().await.is_empty());
        assert!(identity.alive());

        kill(identity).await;
        assert!(!identity.alive());
        reaper.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_stopped_process_is_terminated_in_bounded_time() {
        let (identity, reaper) = sleeper();
        assert!(identity.signal(nix::sys::signal::Signal::SIGSTOP));
        let started = std::time::Instant::now();
        terminate(identity).await;
        assert!(!identity.is_current(), "still in the process table");
        // SIGCONT let it act on SIGTERM at once, long before SIGKILL.
        assert!(started.elapsed() < STOP_GRACE, "{:?}", started.elapsed());
        reaper.join().unwrap();
    }

    #[tokio::test]
    async fn a_stopped_process_is_killed_at_once() {
        let (identity, reaper) = sleeper();
        assert!(identity.signal(nix::sys::signal::Signal::SIGSTOP));
        let started = std::time::Instant::now();
        kill(identity).await;
        assert!(!identity.is_current());
        assert!(started.elapsed() < REAP_WAIT);
        reaper.join().unwrap();
    }

    #[tokio::test]
    async fn a_stopped_process_is_told_from_a_running_one() {
        let (identity, reaper) = sleeper();
        assert!(!is_stopped(identity.pid));
        assert!(identity.signal(nix::sys::signal::Signal::SIGSTOP));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_stopped(identity.pid) {
            assert!(std::time::Instant::now() < deadline, "never seen stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(identity.signal(nix::sys::signal::Signal::SIGCONT));
        while is_stopped(identity.pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "never seen running again"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill(identity).await;
        reaper.join().unwrap();
        assert!(
            !is_stopped(identity.pid),
            "a process that is gone is not stopped"
        );
    }
}
