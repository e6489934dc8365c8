//! The `ovslabd` binary, end to end: start, answer, refuse garbage, stop.
//!
//! Needs no root (no lab is built), except the access check, which runs a
//! client as another user. The `ovslab` binary must be built too
//! (`cargo test -p ovslab -p ovslabd` and `make test` build it).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ovslab_testkit::{http_answer, require_root, unique_name, wait_until};

const START: Duration = Duration::from_secs(20);

/// The `ovslab` binary, built next to `ovslabd`.
fn ovslab_bin() -> PathBuf {
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_ovslabd"));
    let cli = daemon.with_file_name("ovslab");
    assert!(
        cli.exists(),
        "{} is not built: run `cargo test -p ovslab -p ovslabd` or `cargo build --workspace --bins`",
        cli.display()
    );
    cli
}

/// A private daemon with its own directory; killed by its pid and cleaned up
/// on drop, whatever happened.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A daemon with more options (e.g. `--max-labs 0`).
    fn start_with(options: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique_name("ovslabd-test-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        let child = spawn_daemon(&dir, &socket, options);
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            socket,
        };
        daemon.wait_for_socket();
        daemon
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + START;
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "ovslabd exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ovslabd did not listen within {START:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ovslabd.log")).unwrap_or_default()
    }

    fn ovslab(&self, args: &[&str]) -> Output {
        Command::new(ovslab_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let mut status = None;
        wait_until(START, "ovslabd to exit after SIGTERM", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i32, libc::SIGKILL);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_daemon(dir: &Path, socket: &Path, options: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("ovslabd.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_ovslabd"))
        .arg("--socket")
        .arg(socket)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--labs-dir")
        .arg(dir.join("none"))
        .args(options)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start ovslabd")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on the pid of a child this test started and has not
    // yet reaped, so the pid cannot have been reused.
    unsafe { libc::kill(pid, sig) };
}

/// One raw HTTP/1.1 exchange; returns the status code and the body.
fn http(socket: &Path, request: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(START)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    http_answer(&answer)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serves_refuses_garbage_and_stops_cleanly_on_sigterm() {
    let mut daemon = Daemon::start();

    // The socket is private to its owner and group.
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);

    // No labs yet: through the CLI, and on the wire.
    let out = daemon.ovslab(&["status"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        daemon.log()
    );
    assert_eq!(text(&out.stdout), "no labs\n");
    let (status, body) = http(
        &daemon.socket,
        "GET /v1/labs HTTP/1.1\r\nHost: ovslabd\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "[]"));

    // Malformed JSON: 400 with an ApiError, and the daemon carries on.
    let garbage = "{\"topology\": ";
    let (status, body) = http(
        &daemon.socket,
        &format!(
            "POST /v1/labs HTTP/1.1\r\nHost: ovslabd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{garbage}",
            garbage.len()
        ),
    );
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("malformed request body"),
        "{body}"
    );

    // A topology that does not validate: 400 with file:line:column.
    let request = serde_json::json!({ "topology": "lab: x\n", "source": "bad.yaml" }).to_string();
    let (status, body) = http(
        &daemon.socket,
        &format!(
            "POST /v1/labs HTTP/1.1\r\nHost: ovslabd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{request}",
            request.len()
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad.yaml:1:"), "{body}");

    // Unknown labs and routes: 404 with an ApiError.
    let out = daemon.ovslab(&["status", "nosuchlab"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("lab `nosuchlab` is not known"),
        "{}",
        text(&out.stderr)
    );
    let out = daemon.ovslab(&["graph", "nosuchlab"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("lab `nosuchlab` is not known"),
        "{}",
        text(&out.stderr)
    );
    let (status, body) = http(
        &daemon.socket,
        "GET /v2/x HTTP/1.1\r\nHost: ovslabd\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // The event stream of a lab that is not there, or of a bad name.
    let (status, body) = http(
        &daemon.socket,
        "GET /v1/labs/nosuchlab/events HTTP/1.1\r\nHost: ovslabd\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("lab `nosuchlab` is not known"), "{body}");
    let (status, body) = http(
        &daemon.socket,
        "GET /v1/labs/a%2Fb/events HTTP/1.1\r\nHost: ovslabd\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");

    assert!(daemon.running(), "ovslabd died:\n{}", daemon.log());
    let out = daemon.ovslab(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&out.stdout).unwrap(),
        Vec::<String>::new()
    );

    // A second daemon on the same socket refuses to start, and leaves it alone.
    let second = Command::new(env!("CARGO_BIN_EXE_ovslabd"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("--run-dir")
        .arg(daemon.dir.join("run2"))
        .arg("--labs-dir")
        .arg(daemon.dir.join("none"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains("another ovslabd answers"),
        "{}",
        text(&second.stderr)
    );
    assert!(daemon.ovslab(&["status"]).status.success());

    // A second daemon on the same run directory (another socket) refuses to
    // start, and leaves the directory alone: the one-time stop request that
    // is there for the first (as the package's prerm writes it) stays.
    let run_dir = daemon.dir.join("run");
    let once = run_dir.join(".on-exit-once");
    std::fs::write(&once, "keep\n").unwrap();
    let mut second = Command::new(env!("CARGO_BIN_EXE_ovslabd"))
        .arg("--socket")
        .arg(daemon.dir.join("s2.sock"))
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--labs-dir")
        .arg(daemon.dir.join("none"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if second.try_wait().unwrap().is_none() {
        signal(second.id() as i32, libc::SIGKILL);
        let _ = second.wait();
        panic!("a second ovslabd started on the run directory of the first");
    }
    let second = second.wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let pid = daemon.child.as_ref().unwrap().id();
    assert!(
        text(&second.stderr).contains(&format!(
            "another ovslabd (pid {pid}) uses the run directory {}",
            run_dir.display()
        )),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(std::fs::read_to_string(&once).unwrap(), "keep\n");
    assert!(!daemon.dir.join("s2.sock").exists());
    std::fs::remove_file(&once).unwrap();
    assert!(daemon.ovslab(&["status"]).status.success());

    // SIGTERM: exit 0, socket gone.
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(!daemon.socket.exists(), "the socket was left behind");
    let out = daemon.ovslab(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("start it with"),
        "{}",
        text(&out.stderr)
    );
}

/// One `POST` with a JSON body; returns the status code and the body.
fn post(socket: &Path, path: &str, body: &str) -> (u16, String) {
    http(
        socket,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: ovslabd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A refused `up` is answered in a few kilobytes, whatever it sends: a
/// request of 117 KB (a `source` of 32 KiB, 2000 bad checks) was answered
/// with 131 MB, the `source` before each problem, and the daemon's memory
/// went from 13 to 399 MB.
#[test]
fn a_refused_up_is_answered_in_few_bytes() {
    let daemon = Daemon::start();
    let checks: String = (0..2000)
        .map(|i| format!("  - {{name: c{i}, from: nowhere{i}, to: internet}}\n"))
        .collect();
    let topology =
        ovslab_topology::SEED_YAML.replacen("checks:\n", &format!("checks:\n{checks}"), 1);
    let body =
        |source: &str| serde_json::json!({ "topology": topology, "source": source }).to_string();
    let error = |answer: &str| -> String {
        let error: serde_json::Value = serde_json::from_str(answer).unwrap();
        error["error"].as_str().unwrap().to_string()
    };

    let (status, answer) = post(&daemon.socket, "/v1/labs", &body(&"s".repeat(32 * 1024)));
    assert_eq!(status, 400);
    assert!(answer.len() < 1024, "{} bytes", answer.len());
    assert!(
        error(&answer).starts_with("`source` is 32768 bytes long; at most 256 are accepted"),
        "{answer}"
    );

    let (status, answer) = post(
        &daemon.socket,
        "/v1/labs",
        &body("x\u{1b}]0;owned\u{7}.yaml"),
    );
    assert_eq!(status, 400);
    assert!(
        error(&answer).contains("control character \\x1b"),
        "{answer}"
    );

    let (status, answer) = post(&daemon.socket, "/v1/labs", &body("bad.yaml"));
    assert_eq!(status, 400);
    assert!(answer.len() < 40 * 1024, "{} bytes", answer.len());
    let text = error(&answer);
    assert!(text.starts_with("bad.yaml:"), "{text}");
    assert!(text.contains(" more problems (2000 in all)"), "{text}");
    assert!(
        daemon.ovslab(&["status"]).status.success(),
        "{}",
        daemon.log()
    );
}

/// `ovslab up` of a file whose path is longer than the daemon takes as a
/// `source` sends the path's end, and the daemon takes it: here it goes on
/// to the quota, which refuses the lab before anything is made.
#[test]
fn a_long_path_reaches_the_daemon_shortened() {
    let daemon = Daemon::start_with(&["--max-labs", "0"]);
    let mut dir = daemon.dir.clone();
    for _ in 0..3 {
        dir.push("d".repeat(100));
    }
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seed.yaml");
    std::fs::write(&file, ovslab_topology::SEED_YAML).unwrap();
    assert!(file.as_os_str().len() > 300);
    let out = daemon.ovslab(&["up", file.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--max-labs 0"), "{stderr}");
    let log = daemon.log();
    let source = log
        .split("up seed (from ")
        .nth(1)
        .and_then(|rest| rest.split("): starting").next())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(source.starts_with('…'), "{source}");
    assert!(source.ends_with("dddd/seed.yaml"), "{source}");
    assert!(source.len() <= ovslab_api::MAX_SOURCE, "{source}");
}

/// A trace to port 0 is refused where it enters, as a check's port is
/// in a topology file.
#[test]
fn a_trace_to_port_0_is_refused() {
    let daemon = Daemon::start();
    for protocol in ["tcp", "udp", "http"] {
        let body =
            format!("{{\"from\": \"a\", \"to\": \"b\", \"protocol\": {{\"{protocol}\": 0}}}}");
        let (status, answer) = post(&daemon.socket, "/v1/labs/nosuchlab/trace", &body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("port 0: a port is 1–65535"), "{answer}");
    }
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = std::env::temp_dir().join(unique_name("ovslabd-stale-"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("s.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut daemon = Daemon {
        child: Some(spawn_daemon(&dir, &socket, &[])),
        dir,
        socket,
    };
    daemon.wait_for_socket();
    assert!(
        daemon.ovslab(&["status"]).status.success(),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate().code(), Some(0));
}

#[test]
#[ignore = "needs root"]
fn other_users_are_refused_with_403() {
    require_root("other_users_are_refused_with_403");
    let daemon = Daemon::start();
    // Let anyone connect, so that the daemon's own check is what refuses.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(ovslab_bin())
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("permission denied: ovslabd serves root"),
        "{err}"
    );
    assert!(err.contains("uid 65534"), "{err}");
}
