//! The lab's processes besides Open vSwitch: each DHCP network's `dnsmasq`
//! (in its qdhcp namespace), each DHCP instance's `udhcpc` (in the
//! instance's namespace) and each HA router copy's `keepalived` (in the
//! copy's namespace). ovslabd starts them as its children, in their
//! namespaces, each from a directory of its own under the lab's run
//! directory, and knows them as it knows the switches: by the pidfile they
//! write there, checked against the record of pid and start time kept
//! beside it, their program name and a command line naming that
//! directory. So a stale pidfile or a pid used again never makes ovslab
//! signal a stranger.
//!
//! The directories have names no topology object can have
//! (`qdhcp-<network uuid>`, `udhcpc.<instance>`,
//! `ha_confs.<node>.<router uuid>`), so they are never taken for a node's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

use crate::ovs_process::{Identity, exited, is_zombie, namespace_of, terminate};

/// The directory of a DHCP client under the lab's run directory.
pub const CLIENT_DIR_PREFIX: &str = "udhcpc.";

/// How long a started dnsmasq or keepalived may take to write its pidfile
/// (dnsmasq has bound its sockets by then, keepalived started its VRRP
/// process).
const READY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    Dnsmasq,
    Udhcpc,
    Keepalived,
}

impl AgentKind {
    pub const ALL: [AgentKind; 3] = [AgentKind::Dnsmasq, AgentKind::Udhcpc, AgentKind::Keepalived];

    /// The program, as `/proc/<pid>/comm` names it.
    pub fn program(self) -> &'static str {
        match self {
            AgentKind::Dnsmasq => "dnsmasq",
            AgentKind::Udhcpc => "udhcpc",
            AgentKind::Keepalived => "keepalived",
        }
    }

    /// Whether it writes its pidfile once ready (udhcpc writes it at once).
    fn waited_for(self) -> bool {
        matches!(self, AgentKind::Dnsmasq | AgentKind::Keepalived)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what}: cannot prepare {path}")]
    Files {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: cannot enter namespace {namespace}")]
    Namespace {
        what: String,
        namespace: String,
        #[source]
        source: ovslab_netlink::NetlinkError,
    },
    #[error("{what}: cannot start {program}")]
    Spawn {
        what: String,
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what}: dnsmasq drops to an unprivileged user and then reads its files in {dir}, \
         but {blocking} is not searchable by other users (mode {mode:o}); make the run \
         directory's parents searchable (chmod o+x)"
    )]
    Unreachable {
        what: String,
        dir: PathBuf,
        blocking: PathBuf,
        mode: u32,
    },
    #[error("{what}: {program} exited at once (see {log})")]
    Exited {
        what: String,
        program: &'static str,
        log: PathBuf,
    },
    #[error(
        "{what}: started again less than {} s ago, and not running (see {log}); next start in {} s at the earliest",
        RESTART_AFTER.as_secs(),
        wait.as_secs_f32().ceil()
    )]
    Waiting {
        what: String,
        log: PathBuf,
        wait: Duration,
    },
}

/// One supervised process: what it is, where it runs, its directory and
/// its arguments (after the program's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub kind: AgentKind,
    /// `dnsmasq of net1`, `udhcpc of instance1`: for messages.
    pub what: String,
    pub namespace: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
}

impl Agent {
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("pid")
    }

    fn record(&self) -> PathBuf {
        self.dir.join("pid.start")
    }

    /// `<pid> <start time> <namespace inode>`: the namespace the agent was
    /// started in, written when ovslabd starts it.
    fn netns_record(&self) -> PathBuf {
        self.dir.join("pid.netns")
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.kind.program()))
    }

    /// The process, if it runs as this agent. The record ovslabd wrote
    /// when it started the process (`pid.start`: its pid and start time)
    /// says which one it is: the pidfile does not, since dnsmasq hands it
    /// to `nobody` before dropping its privileges, and a process running
    /// as `nobody` could name another there (a process of its own, named
    /// and argued like the agent) to have that one stopped instead. The
    /// pidfile stands in only where there is no record (an agent started
    /// by an older ovslabd), and only if root owns it. Either way the
    /// process must run the agent's program with its directory on its
    /// command line.
    pub fn identity(&self) -> Option<Identity> {
        if let Some(recorded) = self.read_record() {
            return (recorded.is_current() && self.runs_here(recorded.pid)).then_some(recorded);
        }
        let pid = self.pidfile_pid(true)?;
        let identity = Identity::of(pid)?;
        if !self.runs_here(pid) {
            return None;
        }
        let _ = self.write_record(identity);
        Some(identity)
    }

    /// The pid in the agent's pidfile: a short file, not a symbolic link,
    /// and (if `root_only`) owned by root.
    fn pidfile_pid(&self, root_only: bool) -> Option<u32> {
        pid_in(&self.pidfile(), root_only)
    }

    /// The agent's own children that outlived it: keepalived's VRRP
    /// process (`pid-vrrp`, root's), which leaves only after it gave up
    /// the router's addresses. While it runs, a new keepalived sees "the
    /// daemon is already running" and exits at once.
    fn leftovers(&self) -> Vec<Identity> {
        if self.kind != AgentKind::Keepalived {
            return Vec::new();
        }
        pid_in(&self.dir.join("pid-vrrp"), true)
            .and_then(Identity::of)
            .filter(|i| self.runs_here(i.pid))
            .into_iter()
            .collect()
    }

    /// Whether the agent is ready: it runs, and wrote its own pid in its
    /// pidfile (dnsmasq does once its sockets are bound).
    fn ready(&self) -> bool {
        self.identity()
            .is_some_and(|i| self.pidfile_pid(false) == Some(i.pid))
    }

    /// The process ovslabd started as this agent, as it recorded it then:
    /// `pid.start`, or, should that be gone, the same pid and start time
    /// at the head of `pid.netns` (written with it). Without either, an
    /// agent whose pidfile went too could not be found, and ran on
    /// untracked, beside the one started in its place.
    fn read_record(&self) -> Option<Identity> {
        [self.record(), self.netns_record()]
            .iter()
            .find_map(|path| {
                let text = std::fs::read_to_string(path).ok()?;
                let mut w = text.split_whitespace();
                Some(Identity {
                    pid: w.next()?.parse().ok()?,
                    start: w.next()?.parse().ok()?,
                })
            })
    }

    /// The process to stop ([`Agent::identity`]): as recorded when it was
    /// started, whether or not it wrote its pidfile yet.
    fn to_stop(&self) -> Option<Identity> {
        self.identity()
    }

    /// Whether `pid` runs the agent's program with a file of the agent's
    /// directory on its command line (`…/dhcp/net1/`, not `…/dhcp/net10/`).
    fn runs_here(&self, pid: u32) -> bool {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != self.kind.program() || is_zombie(pid) {
            return false;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let dir = format!("{}/", self.dir.display());
        cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&dir))
    }

    fn write_record(&self, identity: Identity) -> std::io::Result<()> {
        crate::files::replace(
            &self.record(),
            format!("{} {}\n", identity.pid, identity.start),
        )
    }

    /// Whether the process runs in the agent's namespace as it is now: a
    /// namespace deleted and made again leaves the process in the old one.
    ///
    /// The kernel shows the namespace of another user's process (dnsmasq,
    /// once it dropped to `nobody`) only to `CAP_SYS_PTRACE`, which the
    /// unit does not give: then the namespace it was started in, recorded
    /// at its start, stands in (an agent never changes its namespace).
    /// Without that, every audit under the unit took a running dnsmasq for
    /// one in a namespace that is gone and started it again.
    pub fn in_its_namespace(&self, identity: Identity) -> bool {
        namespace_of(identity, || self.started_in(identity))
            .is_some_and(|ino| ovslab_netlink::netns::inode(&self.namespace) == Some(ino))
    }

    /// The inode of the namespace this very process was started in, as
    /// recorded then.
    fn started_in(&self, identity: Identity) -> Option<u64> {
        let text = std::fs::read_to_string(self.netns_record()).ok()?;
        let mut w = text.split_whitespace();
        let (pid, start): (u32, u64) = (w.next()?.parse().ok()?, w.next()?.parse().ok()?);
        let ino: u64 = w.next()?.parse().ok()?;
        (pid == identity.pid && start == identity.start).then_some(ino)
    }

    /// Whether it runs, in its namespace, and is not stopped (`SIGSTOP`,
    /// or a debugger): a frozen dnsmasq answers no client and a frozen
    /// keepalived keeps its addresses while the other copy takes them, so
    /// one is stopped and started again like one that died. keepalived's
    /// work is done by its child (VRRP), which counts too.
    pub fn running(&self) -> bool {
        self.identity()
            .is_some_and(|i| self.in_its_namespace(i) && !frozen(i.pid))
    }

    /// How long ago ovslabd last started it again after it died, if its
    /// last start was such a restart: the age of its [`RESTARTED_FILE`].
    pub fn restarted_ago(&self) -> Option<Duration> {
        let modified = std::fs::metadata(self.dir.join(RESTARTED_FILE))
            .ok()?
            .modified()
            .ok()?;
        Some(modified.elapsed().unwrap_or_default())
    }

    /// Whether it died: it was started (its pidfile or start record is
    /// there) but no live agent is.
    pub fn died(&self) -> bool {
        (self.pidfile().exists() || self.read_record().is_some()) && self.identity().is_none()
    }

    /// Writes `files` into the agent's directory (made if missing), each
    /// only when its content differs; returns the names written. The
    /// directory and files are readable by all: dnsmasq reads its files
    /// again on SIGHUP, after it dropped its privileges.
    pub fn write_files(&self, files: &[(&str, String)]) -> Result<Vec<String>, AgentError> {
        let err = |path: &Path| {
            let (what, path) = (self.what.clone(), path.to_path_buf());
            move |source| AgentError::Files { what, path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(err(&self.dir))?;
        // The lab's directory (ours; 0700 under the unit's umask) must let
        // dnsmasq through to its own, without letting anyone list it.
        if let Some(lab_dir) = self.dir.parent()
            && let Ok(meta) = std::fs::metadata(lab_dir)
            && meta.permissions().mode() & 0o011 != 0o011
        {
            let mode = meta.permissions().mode() | 0o011;
            std::fs::set_permissions(lab_dir, std::fs::Permissions::from_mode(mode))
                .map_err(err(lab_dir))?;
        }
        let mut written = Vec::new();
        for (name, content) in files {
            let path = self.dir.join(name);
            if std::fs::read_to_string(&path).is_ok_and(|c| &c == content) {
                continue;
            }
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
            f.write_all(content.as_bytes()).map_err(err(&tmp))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(err(&path))?;
            written.push(name.to_string());
        }
        Ok(written)
    }

    /// Starts the agent in its namespace, as a child of ovslabd whose exit
    /// wakes the audits; a dnsmasq is waited for until it wrote its
    /// pidfile (bounded).
    pub async fn start(&self) -> Result<(), AgentError> {
        // One left in a namespace that is gone, or one that never got
        // ready, goes first.
        if let Some(old) = self.to_stop() {
            terminate(old).await;
        }
        for leftover in self.leftovers() {
            terminate(leftover).await;
        }
        self.write_files(&[])?;
        let _ = std::fs::remove_file(self.pidfile());
        let log = std::fs::File::create(self.log()).map_err(|source| AgentError::Files {
            what: self.what.clone(),
            path: self.log(),
            source,
        })?;
        if self.kind == AgentKind::Dnsmasq {
            self.check_reachable()?;
        }
        let program = self.kind.program();
        let mut cmd = Command::new(program);
        cmd.args(&self.args)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|source| AgentError::Files {
                what: self.what.clone(),
                path: self.log(),
                source,
            })?)
            .stderr(log)
            .kill_on_drop(false);
        let namespace = ovslab_netlink::netns::inode(&self.namespace);
        let spawned =
            crate::ovs_process::spawn_in(&mut cmd, &self.namespace).map_err(|source| {
                AgentError::Namespace {
                    what: self.what.clone(),
                    namespace: self.namespace.clone(),
                    source,
                }
            })?;
        let mut child = spawned.map_err(|source| AgentError::Spawn {
            what: self.what.clone(),
            program,
            source,
        })?;
        let started = child.id().and_then(Identity::of);
        if let Some(identity) = started {
            // Without its record the agent could not be told from another
            // process later: not left running.
            if let Err(source) = self.write_record(identity) {
                terminate(identity).await;
                return Err(AgentError::Files {
                    what: self.what.clone(),
                    path: self.record(),
                    source,
                });
            }
            if let Some(ino) = namespace {
                let _ = crate::files::replace(
                    &self.netns_record(),
                    format!("{} {} {ino}\n", identity.pid, identity.start),
                );
            }
        }
        let what = self.what.clone();
        let gone = Arc::new(AtomicBool::new(false));
        let gone_too = gone.clone();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::info!(what, %status, "agent exited"),
                Err(e) => tracing::warn!(what, error = %e, "cannot wait for agent"),
            }
            gone_too.store(true, Ordering::Release);
            // An exit ovslabd caused (a stop, a restart) needs no audit:
            // one woken by each made a restart a loop.
            if !started.is_some_and(crate::ovs_process::stopped_by_us) {
                exited().notify_one();
            }
        });
        tracing::info!(what = self.what, "started");
        if self.kind.waited_for() {
            let deadline = tokio::time::Instant::now() + READY;
            while !self.ready() {
                if gone.load(Ordering::Acquire) || tokio::time::Instant::now() > deadline {
                    // Not left running untracked: undone, like any step
                    // that failed half-way.
                    if let Some(identity) = started {
                        terminate(identity).await;
                    }
                    return Err(AgentError::Exited {
                        what: self.what.clone(),
                        program,
                        log: self.log(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Whether an unprivileged user can reach the agent's directory (every
    /// directory above it searchable by others), as dnsmasq must after
    /// it dropped its privileges.
    fn check_reachable(&self) -> Result<(), AgentError> {
        use std::os::unix::fs::PermissionsExt;
        for dir in self.dir.ancestors() {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o001 == 0 {
                return Err(AgentError::Unreachable {
                    what: self.what.clone(),
                    dir: self.dir.clone(),
                    blocking: dir.to_path_buf(),
                    mode,
                });
            }
        }
        Ok(())
    }

    /// Sends `signal` to the agent, if it runs; whether it was sent.
    pub fn signal(&self, signal: Signal) -> bool {
        self.identity().is_some_and(|i| i.signal(signal))
    }

    /// Stops the agent (if it runs) and removes its directory; what it
    /// did.
    pub async fn stop_and_remove(&self) -> Vec<String> {
        stop_in(&self.dir).await
    }
}

/// Stops whatever agent runs from `dir` (its pidfile and record tell,
/// with its program read from the process) and removes the directory.
pub async fn stop_in(dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    for kind in AgentKind::ALL {
        let agent = Agent {
            kind,
            what: String::new(),
            namespace: String::new(),
            dir: dir.to_path_buf(),
            args: Vec::new(),
        };
        if let Some(identity) = agent.to_stop() {
            terminate(identity).await;
            done.push(format!(
                "stopped {} (pid {}) of {}",
                kind.program(),
                identity.pid,
                dir.display()
            ));
        }
        for leftover in agent.leftovers() {
            terminate(leftover).await;
        }
    }
    if std::fs::remove_dir_all(dir).is_ok() {
        done.push(format!("removed {}", dir.display()));
    }
    done
}

/// The pid in a pidfile: a short file, not a symbolic link, and (if
/// `root_only`) owned by root.
fn pid_in(path: &Path, root_only: bool) -> Option<u32> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || (root_only && meta.uid() != 0) {
        return None;
    }
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// An agent started again after it died, that dies again sooner than
/// this after, is started again only once this much time has passed
/// since (at the next audit after it: the full one comes every few tens
/// of seconds). An agent that cannot run (a port taken, a broken binary)
/// so costs one start a while, not one per audit that its exits woke; one
/// killed now and then is started again at once.
pub const RESTART_AFTER: Duration = Duration::from_secs(10);

/// The file in an agent's directory that says its last start was a
/// restart after it died; written then, gone with the directory when the
/// agent is stopped.
pub const RESTARTED_FILE: &str = "restarted";

/// Fails, saying how long it waits, if a dead agent may not be started
/// again yet ([`RESTART_AFTER`]): the converge goes on with the other
/// agents, and the lab's status shows why this one does not run.
pub fn restart_allowed<H: crate::host::Host>(host: &H, agent: &Agent) -> Result<(), AgentError> {
    if !host.agent_died(agent) {
        return Ok(());
    }
    let Some(ago) = host.agent_restarted_ago(agent) else {
        return Ok(());
    };
    match RESTART_AFTER.checked_sub(ago).filter(|w| !w.is_zero()) {
        None => Ok(()),
        Some(wait) => Err(AgentError::Waiting {
            what: agent.what.clone(),
            log: agent.log(),
            wait,
        }),
    }
}

/// Marks the agent as started again after it died ([`RESTARTED_FILE`]),
/// just before it is.
pub fn mark_restart<H: crate::host::Host>(
    host: &H,
    agent: &Agent,
) -> Result<(), crate::ReconcileError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    host.write_agent_files(agent, &[(RESTARTED_FILE, format!("{}\n", now.as_nanos()))])?;
    Ok(())
}

/// Whether `pid` or one of its children is stopped.
fn frozen(pid: u32) -> bool {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .any(crate::ovs_process::is_stopped)
}

/// Whether a run-directory entry of a lab is an agent's (not a node's).
pub fn is_agent_dir(name: &str) -> bool {
    is_dhcp_dir(name) || name.starts_with(ovslab_topology::keepalived::CONF_DIR_PREFIX)
}

/// Whether a run-directory entry of a lab is a DHCP server's or client's.
pub fn is_dhcp_dir(name: &str) -> bool {
    name.starts_with(ovslab_topology::dhcp::QDHCP) || name.starts_with(CLIENT_DIR_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn agent(dir: PathBuf) -> Agent {
        Agent {
            kind: AgentKind::Dnsmasq,
            what: "dnsmasq of net1".into(),
            namespace: "x".into(),
            dir,
            args: vec![],
        }
    }

    /// The fake dnsmasq of network `x` in `namespace`, from `dir`.
    fn dnsmasq_of_x(namespace: &str, dir: &Path, args: Vec<String>) -> Agent {
        Agent {
            kind: AgentKind::Dnsmasq,
            what: "dnsmasq of x".into(),
            namespace: namespace.to_string(),
            dir: dir.to_path_buf(),
            args,
        }
    }

    /// A test's directory under the temporary one, removed when the test
    /// ends, pass or fail, with every process whose command line names it
    /// (the test's agents) killed first.
    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            TempRoot(root)
        }
    }

    impl std::ops::Deref for TempRoot {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl AsRef<Path> for TempRoot {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let needle = format!("{}/", self.0.display());
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                if std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                {
                    // SAFETY: a process this test started (its command
                    // line names the test's own directory), by its pid.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A dnsmasq that never writes its pidfile fails its start and is not
    /// left running, untracked, for the next converge to start another
    /// beside it.
    /// A directory `ovslab-agent-<tag>-<pid>` (searchable by all, as the
    /// run directory) whose `bin/dnsmasq` is a shell script of `body`, put
    /// first in this test process's PATH.
    fn fake_dnsmasq_first_in_path(tag: &str, body: &str) -> TempRoot {
        let root = TempRoot::new(&format!("ovslab-agent-{tag}"));
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let fake = bin.join("dnsmasq");
        std::fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // SAFETY: nextest runs each test in a process of its own; nothing
        // else reads the environment meanwhile.
        unsafe { std::env::set_var("PATH", path) };
        root
    }

    #[tokio::test]
    #[ignore = "needs root"]
    async fn an_agent_that_never_gets_ready_is_not_left_running() {
        ovslab_testkit::require_root("an_agent_that_never_gets_ready_is_not_left_running");
        let ns = ovslab_testkit::TestNetns::new();
        let root = fake_dnsmasq_first_in_path("ready", "while :; do sleep 0.1; done");
        let dir = root.join("qdhcp-x");
        let a = dnsmasq_of_x(&ns.name, &dir, vec![dir.display().to_string()]);
        let err = a.start().await.unwrap_err();
        assert!(matches!(err, AgentError::Exited { .. }), "{err}");
        let started = a.read_record().expect("the start was recorded");
        let gone = !started.is_current() || is_zombie(started.pid);
        stop_in(&dir).await;
        assert!(gone, "the dnsmasq that never got ready still runs");
    }

    /// A frozen agent (SIGSTOP) counts as not running, so the converge
    /// stops it and starts another: a frozen dnsmasq answered no client
    /// and a frozen keepalived kept its addresses beside the copy that
    /// took over, while `status` said healthy.
    #[tokio::test]
    #[ignore = "needs root"]
    async fn a_frozen_agent_is_not_running_and_is_replaced() {
        ovslab_testkit::require_root("a_frozen_agent_is_not_running_and_is_replaced");
        let ns = ovslab_testkit::TestNetns::new();
        let root = fake_dnsmasq_first_in_path(
            "frozen",
            "echo $$ > \"${1#--pid-file=}\"\nwhile :; do sleep 0.1; done",
        );
        let dir = root.join("qdhcp-x");
        let a = dnsmasq_of_x(
            &ns.name,
            &dir,
            vec![format!("--pid-file={}/pid", dir.display())],
        );
        a.start().await.unwrap();
        assert!(a.running());
        let first = a.identity().unwrap();
        first.signal(Signal::SIGSTOP);
        let mut frozen = false;
        for _ in 0..100 {
            if crate::ovs_process::is_stopped(first.pid) {
                frozen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(frozen);
        let seen_running = a.running();
        a.start().await.unwrap();
        let second = a.identity();
        let first_gone = !first.alive();
        stop_in(&dir).await;
        assert!(!seen_running, "a frozen agent counted as running");
        assert!(first_gone, "the frozen agent was left");
        assert!(second.is_some_and(|s| s != first), "{second:?}");
    }

    /// A process running as `nobody` can write dnsmasq's pidfile (dnsmasq
    /// hands it over before dropping its privileges). Naming a process of
    /// its own there, programmed and argued like the agent, must not make
    /// ovslabd take it for the agent: the record written at the start
    /// says which process it is, and `down` stops that one.
    #[tokio::test]
    async fn the_pidfile_cannot_name_another_process_as_the_agent() {
        let root = TempRoot::new("ovslab-agent-pid");
        let bin = root.join("bin");
        let dir = root.join("qdhcp-x");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let fake = bin.join("dnsmasq");
        std::fs::write(&fake, "#!/bin/sh\nwhile :; do sleep 0.1; done\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pid_arg = format!("--pid-file={}/pid", dir.display());
        let spawn = || {
            std::process::Command::new(&fake)
                .arg(&pid_arg)
                .spawn()
                .unwrap()
        };
        /// Killed and reaped however the test ends.
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let (real, impostor) = (Reaped(spawn()), Reaped(spawn()));
        let a = agent(dir.clone());
        let of = |child: &std::process::Child| {
            // The shell names itself after the script once it runs it.
            for _ in 0..200 {
                let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id()));
                if comm.is_ok_and(|c| c.trim() == "dnsmasq") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Identity::of(child.id()).unwrap()
        };
        let (real_id, impostor_id) = (of(&real.0), of(&impostor.0));

        // No record (an agent of an older ovslabd): a pidfile that is not
        // root's names nobody; as root, one chowned to `nobody` stands in
        // for dnsmasq's.
        std::fs::write(a.pidfile(), format!("{}\n", impostor_id.pid)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(a.pidfile(), Some(65534), Some(65534)).unwrap();
        }
        assert_eq!(a.identity(), None, "a pidfile not root's is not believed");

        // The record of the start names the agent, whatever the pidfile says.
        a.write_record(real_id).unwrap();
        assert_eq!(a.identity(), Some(real_id));
        assert!(!a.ready(), "its pidfile does not name it");
        let done = stop_in(&dir).await;
        assert!(
            done.iter()
                .any(|d| d.contains(&format!("(pid {})", real_id.pid))),
            "{done:?}"
        );
        let impostor_runs = impostor_id.is_current() && !is_zombie(impostor_id.pid);
        let real_runs = real_id.is_current() && !is_zombie(real_id.pid);
        drop((real, impostor));
        let _ = std::fs::remove_dir_all(&root);
        assert!(impostor_runs, "the process the pidfile named was stopped");
        assert!(!real_runs, "the agent still runs");
    }

    #[test]
    fn the_namespace_recorded_at_start_is_this_processs_only() {
        let dir = std::env::temp_dir().join(format!("ovslab-agent-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = agent(dir.clone());
        std::fs::write(a.netns_record(), "42 1000 4026531840\n").unwrap();
        let me = |pid, start| Identity { pid, start };
        assert_eq!(a.started_in(me(42, 1000)), Some(4026531840));
        assert_eq!(
            a.started_in(me(42, 1001)),
            None,
            "another process with that pid"
        );
        assert_eq!(a.started_in(me(43, 1000)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lab_directory_is_opened_to_dnsmasq_and_a_closed_parent_is_named() {
        let root = TempRoot::new("ovslab-agents");
        let lab = root.join("lab");
        std::fs::create_dir_all(&lab).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&lab, std::fs::Permissions::from_mode(0o700)).unwrap();
        let a = agent(lab.join("qdhcp-1"));
        a.write_files(&[("host", "x\n".into())]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The lab directory: searchable, not readable, by others.
        assert_eq!(mode(&lab), 0o711);
        assert_eq!(mode(&a.dir), 0o755);
        assert_eq!(mode(&a.dir.join("host")), 0o644);
        assert!(a.check_reachable().is_ok());
        // A parent that is not ours and closed: refused, naming it.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        match a.check_reachable() {
            Err(AgentError::Unreachable { blocking, mode, .. }) => {
                assert_eq!((blocking, mode), (root.clone(), 0o700));
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
