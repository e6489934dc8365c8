//! Progress of a long `up`, on a terminal only: while the request runs, a
//! second connection asks the daemon every quarter second how far the
//! lab's converge has come (`GET /v1/labs/{lab}/progress`), and one line
//! on standard error, rewritten in place, says so. Nothing is shown for an
//! `up` done within [`QUIET_FOR`], when standard error is not a terminal,
//! or with `--json`; the line is erased before the summary is printed.

use std::io::Write as _;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use ovslab_api::UpProgress;
use ovslab_topology::printable;

use crate::client::{Client, ClientError};
use crate::commands::segment;
use crate::style;

/// An `up` done within this shows no progress at all.
const QUIET_FOR: Duration = Duration::from_millis(700);
/// How often the daemon is asked.
const EVERY: Duration = Duration::from_millis(250);

/// Runs `call` (the `up` request), showing the lab's progress meanwhile
/// when `wanted` and standard error is a terminal.
pub fn while_up<T>(
    client: &Client,
    lab: &str,
    wanted: bool,
    call: impl FnOnce() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    if !wanted || !style::stderr_is_terminal() {
        return call();
    }
    let (done, finished) = mpsc::channel::<()>();
    let watcher = {
        let (client, lab) = (client.clone(), lab.to_string());
        std::thread::spawn(move || watch(&client, &lab, &finished))
    };
    let result = call();
    drop(done);
    let _ = watcher.join();
    result
}

fn watch(client: &Client, lab: &str, finished: &mpsc::Receiver<()>) {
    let started = Instant::now();
    if finished.recv_timeout(QUIET_FOR) != Err(RecvTimeoutError::Timeout) {
        return;
    }
    let path = format!("/v1/labs/{}/progress", segment(lab));
    let mut stderr = std::io::stderr();
    loop {
        // An older daemon has no progress to give: the time alone then.
        let progress = client.get::<UpProgress>(&path).ok();
        let line = format_progress(lab, progress.as_ref(), started.elapsed());
        let _ = write!(stderr, "\r\u{1b}[K{line}");
        let _ = stderr.flush();
        if finished.recv_timeout(EVERY) != Err(RecvTimeoutError::Timeout) {
            break;
        }
    }
    let _ = write!(stderr, "\r\u{1b}[K");
    let _ = stderr.flush();
}

/// `lab seed: up for 3.1 s, 4 phases done (the last: links)`.
pub fn format_progress(lab: &str, progress: Option<&UpProgress>, elapsed: Duration) -> String {
    let took = format!("{:.1} s", elapsed.as_secs_f64());
    let lab = printable(lab);
    match progress.and_then(|p| p.phases.last().map(|last| (p.phases.len(), last))) {
        Some((n, last)) => format!(
            "lab {lab}: up for {took}, {n} phase{} done (the last: {})",
            if n == 1 { "" } else { "s" },
            printable(&last.phase)
        ),
        None => format!("lab {lab}: up for {took}…"),
    }
}

#[cfg(test)]
mod tests {
    use ovslab_api::PhaseDone;

    use super::*;

    #[test]
    fn the_line_names_the_last_phase_done() {
        let p = UpProgress {
            lab: "big".into(),
            phases: ["namespaces", "ovs databases", "links"]
                .map(|phase| PhaseDone {
                    phase: phase.into(),
                    ms: 5,
                })
                .to_vec(),
        };
        assert_eq!(
            format_progress("big", Some(&p), Duration::from_millis(3100)),
            "lab big: up for 3.1 s, 3 phases done (the last: links)"
        );
        assert_eq!(
            format_progress("big", None, Duration::from_secs(12)),
            "lab big: up for 12.0 s…"
        );
    }
}
