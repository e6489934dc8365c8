//! Fixtures for ovslab's root tests.
//!
//! Everything here is for tests only: it shells out to `ip`, `ovsdb-tool`,
//! `ovsdb-server`, `ovs-vswitchd`, `ovs-vsctl` and `ovs-ofctl`, which are the
//! independent observers the product itself never uses. Every fixture removes
//! what it made when dropped, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root.
///
/// Root tests are marked `#[ignore = "needs root"]`, so a plain `cargo
/// test` reports them as ignored, never as passed; `make test` runs them
/// (`--run-ignored all`) and needs root. One asked for without root fails
/// here, saying why, instead of failing somewhere less clear.
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{test} needs root: run it as root (`make test` does), or leave it ignored"
    );
}

/// A name unique to this process and call, short enough for interface and
/// namespace names: `<prefix><pid>x<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

/// Polls `check` until it returns true or `timeout` passes; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command and returns its output; panics with stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = run_raw(program, args);
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its raw output, whatever its exit status.
pub fn run_raw(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A private network namespace made with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new() -> Self {
        let name = unique_name("ovslab-t-");
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        TestNetns { name }
    }

    /// Runs `args` inside the namespace and returns stdout; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Default for TestNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = run_raw("ip", &["netns", "del", &self.name]);
    }
}

/// A private `ovsdb-server` (and optionally `ovs-vswitchd`) in its own run
/// directory; with vswitchd, in its own namespace too.
///
/// The userspace datapath creates tap devices in the namespace vswitchd runs
/// in, so vswitchd never runs in the host's namespace, and needs root. A
/// database alone needs neither: `ovsdb-server` only listens on a socket in
/// the run directory, so `start_ovsdb` works for any user. Processes are
/// stopped by the pids they wrote, never by name.
#[derive(Debug)]
pub struct OvsSandbox {
    pub dir: PathBuf,
    pub netns: Option<TestNetns>,
    with_vswitchd: bool,
}

impl OvsSandbox {
    /// Starts `ovsdb-server` only, in the caller's namespace, as the
    /// caller (no root needed).
    pub fn start_ovsdb() -> Self {
        Self::start_inner(false)
    }

    /// Starts `ovsdb-server` and `ovs-vswitchd`.
    pub fn start() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(with_vswitchd: bool) -> Self {
        let netns = with_vswitchd.then(TestNetns::new);
        let dir = std::env::temp_dir().join(format!("{}-ovs", unique_name("ovslab-t-")));
        std::fs::create_dir_all(&dir).expect("create sandbox dir");
        let sandbox = OvsSandbox {
            dir,
            netns,
            with_vswitchd,
        };
        let d = sandbox.dir.display().to_string();
        run(
            "ovsdb-tool",
            &[
                "create",
                &format!("{d}/conf.db"),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        );
        sandbox.exec(&[
            "ovsdb-server",
            &format!("{d}/conf.db"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--log-file={d}/ovsdb-server.log"),
            "--detach",
            "--no-chdir",
        ]);
        if with_vswitchd {
            sandbox.exec(&[
                "env",
                &format!("OVS_RUNDIR={d}"),
                "ovs-vswitchd",
                &format!("unix:{d}/db.sock"),
                &format!("--pidfile={d}/ovs-vswitchd.pid"),
                &format!("--unixctl={d}/ovs-vswitchd.ctl"),
                &format!("--log-file={d}/ovs-vswitchd.log"),
                "--detach",
                "--no-chdir",
            ]);
            sandbox.vsctl(&["init"]);
        }
        sandbox
    }

    /// Runs `args` in the sandbox's namespace (the caller's when it has
    /// none); panics on failure.
    fn exec(&self, args: &[&str]) -> String {
        match &self.netns {
            Some(netns) => netns.exec(args),
            None => run(args[0], &args[1..]),
        }
    }

    /// `unix:` path of the database socket.
    pub fn db_socket(&self) -> PathBuf {
        self.dir.join("db.sock")
    }

    /// Management socket of a bridge (`<dir>/<bridge>.mgmt`).
    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.dir.join(format!("{bridge}.mgmt"))
    }

    /// Adds a userspace bridge speaking OpenFlow 1.3 with `fail_mode=secure`.
    pub fn add_bridge(&self, bridge: &str) {
        self.vsctl(&[
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            "fail_mode=secure",
        ]);
        let mgmt = self.mgmt_socket(bridge);
        wait_until(Duration::from_secs(10), "bridge management socket", || {
            mgmt.exists()
        });
    }

    /// Runs `ovs-vsctl` against this sandbox (with `--no-wait` when there
    /// is no vswitchd) and returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.db_socket().display());
        // Generous: a vswitchd creating a bridge waits for the kernel's
        // RTNL lock, which a lab being built beside it holds for long.
        let mut full = vec![db.as_str(), "--timeout=30"];
        if !self.with_vswitchd {
            full.push("--no-wait");
        }
        full.extend_from_slice(args);
        run("ovs-vsctl", &full)
    }

    /// Runs `ovs-ofctl -O OpenFlow13 <cmd> <bridge mgmt socket> <rest>`.
    pub fn ofctl(&self, cmd: &str, bridge: &str, rest: &[&str]) -> String {
        let target = format!("unix:{}", self.mgmt_socket(bridge).display());
        let mut full = vec!["-O", "OpenFlow13", cmd, target.as_str()];
        full.extend_from_slice(rest);
        run("ovs-ofctl", &full)
    }

    fn stop(&self, daemon: &str) {
        let pidfile = self.dir.join(format!("{daemon}.pid"));
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            // SAFETY: kill with a pid we started and read from its pidfile.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let proc_dir = Path::new("/proc").join(pid.to_string());
            let deadline = Instant::now() + Duration::from_secs(5);
            while proc_dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if proc_dir.exists() {
                // SAFETY: as above; the process ignored SIGTERM.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        if self.with_vswitchd {
            self.stop("ovs-vswitchd");
        }
        self.stop("ovsdb-server");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The status code and body of a raw HTTP/1.1 answer read whole from a
/// socket (0 and an empty body when there was none).
pub fn http_answer(answer: &str) -> (u16, String) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
