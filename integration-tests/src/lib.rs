//! Fixtures for the end-to-end tests: a private `ovslabd` per test and labs
//! under unique names, built and checked through the real binaries, observed
//! with `ip`, `ovs-vsctl`, `ovs-ofctl`, `ping` and `tcpdump`.
//!
//! The binaries must be built first (`cargo build --workspace --bins`;
//! `make test` does it). Every fixture removes what it made, also when the
//! test fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use ovslab_testkit::{require_root, run, run_raw, unique_name, wait_until};

pub mod webdriver;

/// The directory holding the workspace's built binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// A private `ovslabd` with its own socket and run directory.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Set once the child was reaped: never signal its pid again.
    stopped: bool,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
}

impl Daemon {
    /// A daemon that does not audit its labs: tests that break a lab by
    /// hand to see a check or trace fail need it to stay broken.
    pub fn start(tag: &str) -> Self {
        Self::start_with(tag, &["--audit-interval", "0"])
    }

    /// A daemon with extra options (e.g. `--audit-interval 0.2`).
    pub fn start_with(tag: &str, options: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("ovslab-e2e-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("ovslabd.sock");
        let run_dir = dir.join("run");
        let child = Self::spawn(&dir, &socket, &run_dir, options);
        let daemon = Daemon {
            child,
            stopped: false,
            dir,
            socket,
            run_dir,
        };
        daemon.wait_for_socket();
        daemon
    }

    fn spawn(dir: &Path, socket: &Path, run_dir: &Path, options: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("ovslabd.log"))
            .unwrap();
        Command::new(bin("ovslabd"))
            .arg("--socket")
            .arg(socket)
            .arg("--run-dir")
            .arg(run_dir)
            .arg("--labs-dir")
            .arg(dir.join("no-labs"))
            .args(options)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ovslabd")
    }

    /// Until the daemon accepts connections: its socket file appears at
    /// `bind`, a moment before it listens.
    fn wait_for_socket(&self) {
        wait_until(Duration::from_secs(20), "ovslabd's socket", || {
            std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
    }

    /// `kill -9` of the daemon (by the pid this fixture started); its labs
    /// and their OVS processes stay, and so does a stale socket file.
    pub fn kill9(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// A clean stop (SIGTERM), waiting for the daemon to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    fn signal_and_wait(&mut self, signal: i32) -> std::process::ExitStatus {
        if !self.stopped {
            // SAFETY: signalling the daemon this fixture started, by its
            // pid, which is not reaped yet (so not reused).
            unsafe { libc::kill(self.child.id() as i32, signal) };
        }
        self.stopped = true;
        self.child.wait().expect("wait for ovslabd")
    }

    /// Starts a new daemon on the same socket and run directory (after
    /// [`Daemon::kill9`]), which adopts the labs it finds.
    pub fn restart(&mut self, options: &[&str]) {
        let _ = std::fs::remove_file(&self.socket);
        self.child = Self::spawn(&self.dir, &self.socket, &self.run_dir, options);
        self.stopped = false;
        self.wait_for_socket();
    }

    /// Runs the CLI against this daemon.
    pub fn ovslab(&self, args: &[&str]) -> Output {
        Command::new(bin("ovslab"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ovslab")
    }

    /// Runs the CLI and returns stdout; panics with both streams on failure.
    pub fn ovslab_ok(&self, args: &[&str]) -> String {
        let out = self.ovslab(args);
        assert!(
            out.status.success(),
            "ovslab {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ovslabd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's `--labs-dir` (it does not exist until a test makes it).
    pub fn labs_dir(&self) -> PathBuf {
        self.dir.join("no-labs")
    }

    /// SIGHUP: the daemon brings up every file of its labs directory again.
    pub fn reload(&self) {
        assert!(!self.stopped, "the daemon was stopped");
        // SAFETY: signalling the daemon this fixture started, by its pid,
        // which is not reaped yet (so not reused).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's side of a failed test (its directory goes next).
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- the last lines of ovslabd's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if !self.stopped {
            self.stop();
        }
        // Spare nodes (`--spare-nodes`) a dead daemon left, and the
        // processes of any a lab took: their command lines name the
        // spares' directory.
        let spares = self.run_dir.join(".spares");
        for (pid, start) in processes_naming(&format!("{}/", spares.display())) {
            if process_start(pid) == Some(start) {
                // SAFETY: a process of this test's daemon, by its pid,
                // whose start time shows it is still the one found.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let mut namespaces = spare_namespaces(&self.run_dir);
        namespaces.extend(spare_namespaces_on_host(&self.run_dir));
        for ns in namespaces {
            let _ = run_raw("ip", &["netns", "del", &ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The namespaces of the spare nodes under `run_dir` (`--spare-nodes`),
/// as each spare's directory records them.
pub fn spare_namespaces(run_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run_dir.join(".spares")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("namespace")).ok())
        .filter_map(|text| text.lines().next().map(str::to_string))
        .collect()
}

/// The start of every spare node's namespace name of a daemon on
/// `run_dir`: `ovslab-spare-`, the FNV-1a hash of the run directory, `-`
/// (as `crates/reconciler/src/spare.rs` names them; ids follow).
pub fn spare_prefix(run_dir: &Path) -> String {
    let hash = run_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
        });
    format!("ovslab-spare-{hash:08x}-")
}

/// Every namespace on the host named as a spare of a daemon on `run_dir`,
/// recorded by a spare's directory or not.
pub fn spare_namespaces_on_host(run_dir: &Path) -> Vec<String> {
    let prefix = spare_prefix(run_dir);
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// A lab under a unique name, built from the seed (or any topology text with
/// `lab: seed`), removed on drop whatever happened.
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    pub file: PathBuf,
    pub daemon: Daemon,
}

impl Lab {
    /// The seed lab under a unique name, up.
    pub fn seed() -> Self {
        Self::from_yaml(ovslab_topology::SEED_YAML)
    }

    /// `yaml` (whose first `lab:` line is replaced by a unique name), up.
    pub fn from_yaml(yaml: &str) -> Self {
        let lab = Self::create(yaml);
        lab.up();
        lab
    }

    /// The seed lab, up, under a daemon that audits it every `interval`
    /// seconds (and so repairs it).
    pub fn seed_audited(interval: &str) -> Self {
        let lab = Self::create_with(ovslab_topology::SEED_YAML, &["--audit-interval", interval]);
        lab.up();
        lab
    }

    /// Like [`Lab::from_yaml`], but does not bring it up.
    pub fn create(yaml: &str) -> Self {
        Self::create_with(yaml, &["--audit-interval", "0"])
    }

    /// Like [`Lab::create`], with the daemon's options.
    pub fn create_with(yaml: &str, options: &[&str]) -> Self {
        Self::create_named(&unique_name("t"), yaml, options)
    }

    /// Like [`Lab::create_with`], under a name of the test's choosing (a
    /// golden test needs the names derived from it to stay the same);
    /// no other test may use it.
    pub fn create_named(name: &str, yaml: &str, options: &[&str]) -> Self {
        let name = name.to_string();
        // A fixed name may be another run's on this host (two suites at
        // once): say so, rather than take its directory and namespaces.
        let left = lab_namespaces(&name);
        let dir = std::env::temp_dir().join(format!("ovslab-e2e-{name}"));
        assert!(
            left.is_empty() && !dir.exists(),
            "lab {name} is in use on this host (namespaces {left:?}, {}): another run of \
             the suite, or one that was killed; take it down (ovslab --socket {} down {name}) \
             or remove them by hand",
            dir.display(),
            dir.join("ovslabd.sock").display()
        );
        let daemon = Daemon::start_with(&name, options);
        let text = rename_lab(yaml, &name);
        let file = daemon.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        Lab { name, file, daemon }
    }

    /// `ovslab up -v FILE`; returns stdout: every change, then the summary.
    pub fn up(&self) -> String {
        self.daemon
            .ovslab_ok(&["up", "-v", self.file.to_str().unwrap()])
    }

    /// The namespace of a node, instance or physical network.
    pub fn ns(&self, object: &str) -> String {
        format!("{}.{object}", self.name)
    }

    /// The lab's topology as its file says now, validated: where the
    /// lab's derived names (devices, MACs) are read.
    pub fn topology(&self) -> ovslab_topology::Topology {
        let text = std::fs::read_to_string(&self.file).unwrap();
        ovslab_topology::parse(&self.file.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The hybrid plug (tap, qbr, qvb, qvo) of one of the lab's instances.
    pub fn plug(&self, instance: &str) -> ovslab_topology::naming::HybridPlug {
        let topo = self.topology();
        let i = topo.instance(instance).expect("an instance of the lab");
        i.plug()
    }

    /// The `qrouter-<uuid>` namespace of a router.
    pub fn router_ns(&self, router: &str) -> String {
        ovslab_topology::plan::router_namespace(&self.name, router)
    }

    /// Every namespace of this lab that exists.
    pub fn namespaces(&self) -> Vec<String> {
        lab_namespaces(&self.name)
    }

    /// Runs a command inside an object's namespace with `ip netns exec` (an
    /// observer independent of ovslab).
    pub fn in_ns(&self, object: &str, args: &[&str]) -> Output {
        let ns = self.ns(object);
        let mut full = vec!["netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run_raw("ip", &full)
    }

    /// `ping -c COUNT` from an instance; true when every reply came back.
    pub fn ping(&self, from: &str, to: &str, count: u32) -> bool {
        let count = count.to_string();
        self.in_ns(from, &["ping", "-c", &count, "-i", "0.2", "-W", "2", to])
            .status
            .success()
    }

    /// The node's run directory.
    pub fn rundir(&self, node: &str) -> PathBuf {
        self.daemon.run_dir.join(&self.name).join(node)
    }

    /// The pid a node's OVS daemon (`ovsdb-server`, `ovs-vswitchd`) wrote.
    pub fn pid(&self, node: &str, program: &str) -> u32 {
        let file = self.rundir(node).join(format!("{program}.pid"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// `ovs-vsctl --db=unix:<rundir>/db.sock ARGS` from the host.
    pub fn vsctl(&self, node: &str, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.rundir(node).join("db.sock").display());
        let mut full = vec![db.as_str()];
        full.extend_from_slice(args);
        run("ovs-vsctl", &full)
    }

    /// `ovs-appctl` against a node's `ovs-vswitchd` (its control socket in
    /// the node's run directory); returns stdout.
    pub fn appctl(&self, node: &str, args: &[&str]) -> String {
        let rundir = self.rundir(node);
        let pid = std::fs::read_to_string(rundir.join("ovs-vswitchd.pid")).unwrap();
        let target = rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim()));
        let target = target.to_str().unwrap();
        let mut full = vec!["-t", target];
        full.extend_from_slice(args);
        run("ovs-appctl", &full)
    }

    /// `ovs-ofctl -O OpenFlow13 dump-flows` of a node's bridge, ports by
    /// name, without statistics.
    pub fn flows(&self, node: &str, bridge: &str) -> String {
        let target = format!(
            "unix:{}",
            self.rundir(node).join(format!("{bridge}.mgmt")).display()
        );
        run(
            "ovs-ofctl",
            &[
                "-O",
                "OpenFlow13",
                "--names",
                "--no-stats",
                "dump-flows",
                &target,
            ],
        )
    }

    /// `ovs-ofctl del-flows` of the flows of a node's bridge matching
    /// `spec` (breaking the lab behind the daemon's back).
    pub fn del_flows(&self, node: &str, bridge: &str, spec: &str) {
        let target = format!(
            "unix:{}",
            self.rundir(node).join(format!("{bridge}.mgmt")).display()
        );
        run(
            "ovs-ofctl",
            &["-O", "OpenFlow13", "del-flows", &target, spec],
        );
    }

    /// Every link of every namespace of the lab: (namespace, name) → ifindex.
    pub fn links(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for ns in self.namespaces() {
            let json = run("ip", &["-n", &ns, "-j", "link"]);
            let links: serde_json::Value = serde_json::from_str(&json).unwrap();
            for l in links.as_array().unwrap() {
                out.insert(
                    (ns.clone(), l["ifname"].as_str().unwrap().to_string()),
                    l["ifindex"].as_u64().unwrap(),
                );
            }
        }
        out
    }

    /// The pids the lab's pidfiles name (every node's OVS daemons).
    pub fn ovs_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let Ok(nodes) = std::fs::read_dir(self.daemon.run_dir.join(&self.name)) else {
            return pids;
        };
        for node in nodes.flatten() {
            for program in ["ovsdb-server", "ovs-vswitchd"] {
                if let Some(pid) =
                    std::fs::read_to_string(node.path().join(format!("{program}.pid")))
                        .ok()
                        .and_then(|p| p.trim().parse().ok())
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Starts `tcpdump -e -n` on an interface inside an object's namespace.
    pub fn capture(&self, object: &str, iface: &str, filter: &str) -> Capture {
        Capture::start(&self.ns(object), iface, filter)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.daemon.ovslab(&["down", &self.name]);
        if !out.status.success() {
            eprintln!(
                "ovslab down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Whatever `down` missed (it is a bug, and the tests that check
        // `down` will say so, or the daemon was dead): remove it here so
        // nothing is left behind. The lab's processes are those whose
        // command line names its run directory, unique to this test.
        let lab_dir = format!("{}/", self.daemon.run_dir.join(&self.name).display());
        for (pid, start) in processes_naming(&lab_dir) {
            if process_start(pid) == Some(start) {
                // SAFETY: a process of this test's lab, by its pid, whose
                // start time shows it is still the one found.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        for ns in self.namespaces() {
            let _ = run_raw("ip", &["netns", "del", &ns]);
        }
    }
}

/// Processes (pid, start time) with `needle` in their command line.
pub fn processes_naming(needle: &str) -> Vec<(u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .filter_map(|pid| Some((pid, process_start(pid)?)))
        .collect()
}

/// A process's start time (clock ticks after boot), which tells it from a
/// later process given the same pid.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Every namespace of lab `lab` that exists (its names start `LAB.`).
pub fn lab_namespaces(lab: &str) -> Vec<String> {
    let prefix = format!("{lab}.");
    run("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The links present in both maps (see [`Lab::links`]) whose ifindex
/// changed, that is, that were deleted and made again.
pub fn recreated(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> Vec<String> {
    before
        .iter()
        .filter_map(|(key, index)| {
            let now = after.get(key)?;
            (now != index).then(|| format!("{}/{}: {index} → {now}", key.0, key.1))
        })
        .collect()
}

/// Whether a process is gone, or a zombie (dead; PID 1 on this machine
/// does not reap the orphans of a killed daemon).
pub fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Replaces the `lab:` line of a topology.
pub fn rename_lab(yaml: &str, name: &str) -> String {
    yaml.lines()
        .map(|l| {
            if l.starts_with("lab:") {
                format!("lab: {name}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A running `tcpdump -e -n -l` in a namespace.
#[derive(Debug)]
pub struct Capture {
    child: Child,
}

impl Capture {
    pub fn start(namespace: &str, iface: &str, filter: &str) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", namespace, "tcpdump", "-e", "-n", "-l", "-i", iface,
            ])
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        // tcpdump says "listening on" once the capture is active.
        let stderr = child.stderr.take().unwrap();
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("tcpdump in {namespace} on {iface} exited before listening");
            }
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = reader.read_to_string(&mut sink);
        });
        Capture { child }
    }

    /// Stops the capture and returns one line per packet.
    pub fn finish(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling the tcpdump this capture started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        let _ = self.child.wait();
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: as above; a capture not finished is stopped here.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
