//! The control socket of `ovs-vswitchd` (what `ovs-appctl` talks to):
//! JSON-RPC 1.0 over a Unix stream socket, one request and one answer,
//! each a bare JSON object. ovslab asks it `ofproto/trace` and `dpif/show`.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of the `ovs-vswitchd` whose pidfile is in `rundir`:
/// `<rundir>/ovs-vswitchd.<pid>.ctl`.
pub fn vswitchd_socket(rundir: &Path) -> io::Result<PathBuf> {
    let pidfile = rundir.join("ovs-vswitchd.pid");
    let pid = std::fs::read_to_string(&pidfile)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", pidfile.display())))?;
    Ok(rundir.join(format!("ovs-vswitchd.{}.ctl", pid.trim())))
}

/// Runs one command; its text answer, or its error text as an error.
pub fn call(socket: &Path, method: &str, params: &[&str]) -> io::Result<String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = json!({ "id": 0, "method": method, "params": params });
    stream.write_all(request.to_string().as_bytes())?;
    let answer: Value = serde_json::Deserializer::from_reader(&stream)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| io::Error::other(format!("{method}: no answer")))?
        .map_err(io::Error::other)?;
    answer_text(method, &answer)
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
        let dir = std::env::temp_dir().join(format!("ovslab-unixctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ovs-vswitchd.42.ctl");
        let _ = std::fs::remove_file(&path);
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
}
