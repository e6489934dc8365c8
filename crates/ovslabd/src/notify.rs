//! Telling systemd where the daemon is (`sd_notify(3)`), by hand: one
//! datagram of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`, a
//! file path or, when it starts with `@`, an abstract address.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// What the daemon tells systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up (or a reload) finished: `systemctl start` returns.
    Ready,
    /// A reload began; `READY=1` ends it.
    Reloading,
    /// A stop began.
    Stopping,
    /// One line for `systemctl status`.
    Status(&'a str),
}

/// The datagram for `states`: one `KEY=VALUE` line each. A status never
/// spans lines (a newline would start another assignment).
/// `RELOADING=1` carries `MONOTONIC_USEC=`, as systemd asks of it.
pub fn message(states: &[State]) -> String {
    let mut text = String::new();
    for state in states {
        match state {
            State::Ready => text.push_str("READY=1\n"),
            State::Reloading => {
                text.push_str("RELOADING=1\n");
                text.push_str(&format!("MONOTONIC_USEC={}\n", monotonic_usec()));
            }
            State::Stopping => text.push_str("STOPPING=1\n"),
            State::Status(status) => {
                text.push_str("STATUS=");
                text.push_str(&status.replace(['\n', '\r'], " "));
                text.push('\n');
            }
        }
    }
    text
}

/// The address `$NOTIFY_SOCKET` names: `@name` is abstract, anything else a
/// path.
pub fn address(socket: &OsStr) -> std::io::Result<SocketAddr> {
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(socket),
    }
}

/// Sends `states` to the notify socket `socket`.
pub fn send_to(socket: &OsStr, states: &[State]) -> std::io::Result<()> {
    let address = address(socket)?;
    let datagram = UnixDatagram::unbound()?;
    let text = message(states);
    let sent = datagram.send_to_addr(text.as_bytes(), &address)?;
    if sent != text.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            text.len()
        )));
    }
    Ok(())
}

/// Tells systemd `states` when it started the daemon with `Type=notify`
/// (`$NOTIFY_SOCKET` set); does nothing otherwise. A failure is logged, not
/// fatal: the daemon works without a supervisor.
pub fn notify(states: &[State]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&socket, states) {
        tracing::warn!(
            "telling systemd {:?} failed: {e}",
            message(states).trim_end()
        );
    }
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn each_state_is_one_line() {
        assert_eq!(
            message(&[
                State::Ready,
                State::Status("1 lab, 4 instances, all healthy")
            ]),
            "READY=1\nSTATUS=1 lab, 4 instances, all healthy\n"
        );
        assert_eq!(message(&[State::Stopping]), "STOPPING=1\n");
        let reloading = message(&[State::Reloading]);
        let lines: Vec<&str> = reloading.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn a_status_never_spans_lines() {
        assert_eq!(
            message(&[State::Status("not healthy:\nseed\r\nREADY=1")]),
            "STATUS=not healthy: seed  READY=1\n"
        );
    }

    #[test]
    fn a_datagram_reaches_a_socket_file() {
        let dir = std::env::temp_dir().join(format!("ovslabd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), &[State::Ready, State::Status("2 labs")]).unwrap();
        let got = receive(&systemd);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, "READY=1\nSTATUS=2 labs\n");
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        let name = format!("ovslabd-notify-test-{}", std::process::id());
        let systemd =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_to(OsStr::new(&format!("@{name}")), &[State::Stopping]).unwrap();
        assert_eq!(receive(&systemd), "STOPPING=1\n");
    }

    #[test]
    fn nobody_listening_is_an_error() {
        let name = format!("ovslabd-notify-nobody-{}", std::process::id());
        assert!(send_to(OsStr::new(&format!("@{name}")), &[State::Ready]).is_err());
        assert!(
            send_to(
                OsStr::new("/nonexistent/ovslab/notify.sock"),
                &[State::Ready]
            )
            .is_err()
        );
    }
}
