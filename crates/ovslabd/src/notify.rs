//! Telling systemd where the daemon is (`sd_notify(3)`) through the
//! `sd-notify` crate: the states the daemon reports, and a status line that
//! can never start another assignment.

use sd_notify::NotifyState;

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

/// Calls `f` with the notifications `states` make. A status never spans
/// lines (a newline would start another assignment); `RELOADING=1` carries
/// `MONOTONIC_USEC=`, as systemd asks of it.
fn with_notifications<R>(states: &[State], f: impl FnOnce(&[NotifyState]) -> R) -> R {
    let statuses: Vec<String> = states
        .iter()
        .filter_map(|state| match state {
            State::Status(text) => Some(text.replace(['\n', '\r'], " ")),
            _ => None,
        })
        .collect();
    let mut statuses = statuses.iter();
    let mut notifications = Vec::with_capacity(states.len() + 1);
    for state in states {
        match state {
            State::Ready => notifications.push(NotifyState::Ready),
            State::Reloading => {
                notifications.push(NotifyState::Reloading);
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    notifications.push(now);
                }
            }
            State::Stopping => notifications.push(NotifyState::Stopping),
            State::Status(_) => notifications.push(NotifyState::Status(
                statuses.next().expect("one per status"),
            )),
        }
    }
    f(&notifications)
}

/// The datagram `states` make: one `KEY=VALUE` line each.
pub fn message(states: &[State]) -> String {
    with_notifications(states, |notifications| {
        notifications.iter().map(|n| format!("{n}\n")).collect()
    })
}

/// Tells systemd `states` when it started the daemon with `Type=notify`
/// (`$NOTIFY_SOCKET` set); does nothing otherwise. A failure is logged, not
/// fatal: the daemon works without a supervisor.
pub fn notify(states: &[State]) {
    if let Err(e) = with_notifications(states, sd_notify::notify) {
        tracing::warn!(
            "telling systemd {:?} failed: {e}",
            message(states).trim_end()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
