//! The control socket of `ovs-vswitchd` (what `ovs-appctl` talks to):
//! JSON-RPC 1.0 over a Unix stream socket, one request and one answer,
//! each a bare JSON object. ovslab asks it `ofproto/trace` and `dpif/show`.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one command may take: `ofproto/trace` and `dpif/show` are
/// answered in milliseconds by a running vswitchd.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of the `ovs-vswitchd` whose pidfile is in `rundir`:
/// `<rundir>/ovs-vswitchd.<pid>.ctl`.
pub fn vswitchd_socket(rundir: &Path) -> io::Result<PathBuf> {
    let pidfile = rundir.join("ovs-vswitchd.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", pidfile.display())))?;
    Ok(rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim())))
}

/// Runs one command; its text answer, or its error text as an error. The
/// whole exchange is bounded by `TIMEOUT` (see [`call_within`]).
pub fn call(socket: &Path, method: &str, params: &[&str]) -> io::Result<String> {
    call_within(socket, method, params, TIMEOUT)
}

/// Like [`call`], the whole exchange bounded by `deadline` (not each read:
/// a daemon trickling its answer a byte at a time is cut off too); an
/// error of kind [`io::ErrorKind::TimedOut`] when it is not answered in
/// time.
pub fn call_within(
    socket: &Path,
    method: &str,
    params: &[&str],
    deadline: Duration,
) -> io::Result<String> {
    use std::io::Read;
    let until = std::time::Instant::now() + deadline;
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{}: {method} not answered within {} s",
                socket.display(),
                deadline.as_secs_f64()
            ),
        )
    };
    let left = || {
        until
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
    };
    let mut stream = connect_now(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    stream.set_write_timeout(Some(left().ok_or_else(timed_out)?))?;
    let request = json!({ "id": 0, "method": method, "params": params });
    stream.write_all(request.to_string().as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left().ok_or_else(timed_out)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::other(format!("{method}: no answer")));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(answer) = parse_answer(&buf) {
            return answer_text(method, &answer?);
        }
    }
}

/// The answer in `buf`, once it holds a whole JSON value.
fn parse_answer(buf: &[u8]) -> Option<io::Result<Value>> {
    match serde_json::Deserializer::from_slice(buf)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(answer)) => Some(Ok(answer)),
        Some(Err(e)) if e.is_eof() => None,
        Some(Err(e)) => Some(Err(io::Error::other(e))),
        None => None,
    }
}

/// Like [`call`], from async code, the whole exchange (connect included)
/// bounded by `deadline`: an error of kind [`io::ErrorKind::TimedOut`]
/// when the daemon does not answer in time. The connect never blocks: a
/// socket whose backlog is full (a stopped daemon asked many times)
/// refuses at once.
pub async fn call_async(
    socket: &Path,
    method: &str,
    params: &[&str],
    deadline: Duration,
) -> io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
        let request = json!({ "id": 0, "method": method, "params": params });
        stream.write_all(request.to_string().as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::other(format!("{method}: no answer")));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(answer) = parse_answer(&buf) {
                return answer_text(method, &answer?);
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{}: {method} not answered within {} s",
                    socket.display(),
                    deadline.as_secs_f64()
                ),
            )
        })?
}

/// Connects without ever blocking: a blocking connect to a socket whose
/// backlog is full (a stopped daemon asked many times) waits until the
/// daemon accepts, that is forever; a non-blocking one fails at once
/// (`EAGAIN`). A Unix stream connect never completes later, so a socket
/// that connected is made blocking again, with the caller's timeouts.
fn connect_now(socket: &Path) -> io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect};
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(socket)?,
    )?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn answer_text(method: &str, answer: &Value) -> io::Result<String> {
    match (answer.get("result"), answer.get("error")) {
        (_, Some(error)) if !error.is_null() => Err(io::Error::other(format!(
            "{method}: {}",
            error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string)
                .trim()
        ))),
        (Some(Value::String(text)), _) => Ok(text.clone()),
        _ => Err(io::Error::other(format!(
            "{method}: malformed answer {answer}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    /// A directory of this test's own and the path of a vswitchd's control
    /// socket (of pid `pid`) in it, free.
    fn socket_path(test: &str, pid: u32) -> (PathBuf, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("ovslab-unixctl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("ovs-vswitchd.{pid}.ctl"));
        let _ = std::fs::remove_file(&path);
        (dir, path)
    }

    #[test]
    fn results_and_errors_are_told_apart() {
        let ok = json!({"id": 0, "result": "Datapath actions: drop\n", "error": null});
        assert_eq!(answer_text("m", &ok).unwrap(), "Datapath actions: drop\n");
        let err = json!({"id": 0, "result": null, "error": "no bridge named br-x\n"});
        assert_eq!(
            answer_text("ofproto/trace", &err).unwrap_err().to_string(),
            "ofproto/trace: no bridge named br-x"
        );
        assert!(answer_text("m", &json!({"id": 0})).is_err());
    }

    #[test]
    fn one_request_one_answer_over_a_real_socket() {
        let (dir, path) = socket_path("one", 42);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).unwrap();
            let request: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(request["method"], "dpif/show");
            // Answer in two pieces, as a stream may deliver it.
            conn.write_all(br#"{"id":0,"result":"br-int:"#).unwrap();
            conn.write_all(br#"\n","error":null}"#).unwrap();
        });
        std::fs::write(dir.join("ovs-vswitchd.pid"), "42\n").unwrap();
        let socket = vswitchd_socket(&dir).unwrap();
        assert_eq!(socket, path);
        assert_eq!(call(&socket, "dpif/show", &[]).unwrap(), "br-int:\n");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_backlog_refuses_at_once_instead_of_blocking() {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
        };
        let (dir, path) = socket_path("full", 9);
        // A listener nobody accepts on, with the smallest backlog.
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            &UnixAddr::new(&path).unwrap(),
        )
        .unwrap();
        listen(&listener, Backlog::new(1).unwrap()).unwrap();
        let started = std::time::Instant::now();
        let mut held = Vec::new();
        let refused = loop {
            match connect_now(&path) {
                Ok(stream) => held.push(stream),
                Err(e) => break e,
            }
            assert!(held.len() < 100, "the backlog never filled");
        };
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock, "{refused}");
        assert!(call(&path, "version", &[]).is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_daemon_that_never_answers_times_out() {
        let (dir, path) = socket_path("mute", 7);
        // Listening, never accepting: what a stopped vswitchd leaves.
        let _listener = UnixListener::bind(&path).unwrap();
        let started = std::time::Instant::now();
        let err = call_async(&path, "version", &[], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A daemon that trickles its answer a byte at a time never completes
    /// it: the deadline bounds the whole call, not each read.
    #[test]
    fn an_answer_trickled_forever_is_cut_off_at_the_deadline() {
        let (dir, path) = socket_path("drip", 6);
        let listener = UnixListener::bind(&path).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).unwrap();
                let _ = conn.write_all(br#"{"id":0,"result":""#);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if conn.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        let started = std::time::Instant::now();
        let err = call_within(&path, "version", &[], Duration::from_millis(300)).unwrap_err();
        let took = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_answer_in_pieces_is_read_whole() {
        let (dir, path) = socket_path("async", 8);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(br#"{"id":0,"result":"ovs-vs"#).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            conn.write_all(br#"witchd 3.1\n","error":null}"#).unwrap();
        });
        let answer = call_async(&path, "version", &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer, "ovs-vswitchd 3.1\n");
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
