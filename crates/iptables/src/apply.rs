//! Reading and converging a namespace's iptables with the real tools.
//!
//! Blocking (`std::process`): callers on a tokio runtime use
//! `spawn_blocking`. The children are started in the namespace by
//! [`ovslab_netlink::netns::spawn_in`], from a short-lived thread that
//! entered it (cheaper than `setns` between fork and exec: no fork of the
//! daemon's memory).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::IptablesError;
use crate::diff::diff;
use crate::ruleset::Ruleset;
use crate::save::Saved;

const SAVE: &str = "iptables-save";
const RESTORE: &str = "iptables-restore";

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// False when everything already matched and nothing was run.
    pub changed: bool,
    /// One human line per change (see [`Plan::changes`](crate::Plan::changes)).
    pub changes: Vec<String>,
    /// Tables written: `iptables-restore` commits each as one nf_tables
    /// transaction.
    pub tables_written: u32,
}

/// Parsed `iptables-save` of namespace `ns`.
pub fn read(ns: &str) -> Result<Saved, IptablesError> {
    let text = run_for_output(ns, SAVE, &[])?;
    Saved::parse(&text, &format!("namespace {ns}"))
}

/// Makes our part of namespace `ns`'s iptables exactly `ruleset`: reads
/// `iptables-save`, compares (only chains named `neutron-*`, their rules,
/// built-in jumps to them, and stale ones), and when anything differs runs
/// one `iptables-restore --noflush -w` that rewrites only what differs.
/// When nothing differs nothing runs, so every counter is kept.
pub fn apply(ns: &str, ruleset: &Ruleset) -> Result<Applied, IptablesError> {
    ruleset.validate()?;
    let saved = read(ns)?;
    let plan = diff(&saved, ruleset);
    let Some(batch) = plan.restore else {
        tracing::debug!(namespace = ns, "iptables already converged");
        return Ok(Applied::default());
    };
    tracing::debug!(namespace = ns, batch = %batch, "iptables-restore");
    restore(ns, &batch)?;
    for change in &plan.changes {
        tracing::info!(namespace = ns, "iptables {change}");
    }
    Ok(Applied {
        changed: true,
        changes: plan.changes,
        tables_written: batch.lines().filter(|l| *l == "COMMIT").count() as u32,
    })
}

/// Feeds `batch` to `iptables-restore --noflush -w` inside `ns`.
fn restore(ns: &str, batch: &str) -> Result<(), IptablesError> {
    let (out, written) = run_with_input(ns, RESTORE, &["--noflush", "-w"], batch)?;
    let spawn_err = |source| IptablesError::Spawn {
        namespace: ns.to_string(),
        command: RESTORE,
        source,
    };
    if out.status.success() {
        // A child that succeeded has read its whole input.
        return written.map_err(spawn_err);
    }
    // On failure a broken pipe only means the child stopped reading early.
    if let Err(e) = written
        && e.kind() != ErrorKind::BrokenPipe
    {
        return Err(spawn_err(e));
    }
    let stderr = restore_message(&String::from_utf8_lossy(&out.stderr));
    Err(IptablesError::Restore {
        namespace: ns.to_string(),
        status: out.status.to_string(),
        input_line: failing_line(&stderr, batch),
        stderr,
    })
}

/// How long one `iptables-save`, `iptables-restore` or `ipset` may run.
/// The largest batch of a large lab (the firewall of a compute node of 50
/// instances) is written in tens of milliseconds; `-w` may wait for the
/// xtables lock behind other namespaces' commands, so the bound is
/// generous: a command still running after 10 s is stuck, and is killed.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `program args` inside `ns` with `input` on its stdin; its output,
/// and whether all of the input was written. Killed (by the pid of our
/// own, not yet reaped, child) and reaped when it outlives [`DEADLINE`].
pub(crate) fn run_with_input(
    ns: &str,
    program: &'static str,
    args: &[&str],
    input: &str,
) -> Result<(std::process::Output, std::io::Result<()>), IptablesError> {
    run(ns, program, args, Some(input), DEADLINE)
}

/// Whether the host's `iptables` is iptables-nft (`iptables-save
/// --version` says `nf_tables`), asked within `DEADLINE` in the
/// daemon's own namespace; false if it cannot tell.
pub fn is_nf_tables() -> bool {
    let child = Command::new(SAVE)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let stdout = child.stdout.take();
    let exited = AtomicBool::new(false);
    let until = Instant::now() + DEADLINE;
    std::thread::scope(|s| {
        let pumped = s.spawn(|| pump([None, stdout.map(file), None], b"", until, &exited));
        if !matches!(wait_until(&mut child, DEADLINE), Ok(Some(_))) {
            // Our child, not yet reaped: its pid is still its own.
            let _ = child.kill();
            let _ = child.wait();
        }
        exited.store(true, Ordering::Release);
        pumped
            .join()
            .is_ok_and(|(out, _, _)| String::from_utf8_lossy(&out).contains("nf_tables"))
    })
}

/// Runs `program args` inside `ns`; its stdout, or an error with its stderr.
pub(crate) fn run_for_output(
    ns: &str,
    program: &'static str,
    args: &[&str],
) -> Result<String, IptablesError> {
    let (out, _) = run(ns, program, args, None, DEADLINE)?;
    if !out.status.success() {
        return Err(IptablesError::Command {
            namespace: ns.to_string(),
            command: program,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args` inside `ns`, `input` (if any) on its stdin, for at
/// most `deadline`.
fn run(
    ns: &str,
    program: &'static str,
    args: &[&str],
    input: Option<&str>,
    deadline: Duration,
) -> Result<(std::process::Output, std::io::Result<()>), IptablesError> {
    let spawn_err = |source| IptablesError::Spawn {
        namespace: ns.to_string(),
        command: program,
        source,
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(ns, program, &mut cmd)?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // Write and read from another thread while this one watches the clock,
    // so a large input cannot deadlock against a child blocked on its
    // stderr, and a stuck child cannot hold this thread.
    let until = Instant::now() + deadline;
    let exited = AtomicBool::new(false);
    std::thread::scope(|s| {
        let pumped = s.spawn(|| {
            let input = input.map(str::as_bytes).unwrap_or_default();
            pump(
                [stdin.map(file), stdout.map(file), stderr.map(file)],
                input,
                until,
                &exited,
            )
        });
        let status = wait_until(&mut child, deadline).map_err(spawn_err);
        let timed_out = matches!(status, Ok(None));
        if timed_out {
            // Our child, not yet reaped: its pid is still its own.
            let _ = child.kill();
            let _ = child.wait();
        }
        exited.store(true, Ordering::Release);
        let (stdout, stderr, written) = pumped.join().unwrap_or_else(|_| {
            (
                Vec::new(),
                Vec::new(),
                Err(std::io::Error::other("the pipes' thread panicked")),
            )
        });
        match status? {
            Some(status) => Ok((
                std::process::Output {
                    status,
                    stdout,
                    stderr,
                },
                written,
            )),
            None => Err(IptablesError::Timeout {
                namespace: ns.to_string(),
                command: program,
                pid: child.id(),
                after: deadline,
            }),
        }
    })
}

/// A pipe end as a plain file, to be used with `poll`.
fn file(pipe: impl Into<std::os::fd::OwnedFd>) -> File {
    File::from(pipe.into())
}

/// How long a child's pipes are read after it exited: a process it
/// started (a `modprobe` of iptables-legacy's) may hold them open long
/// after it is gone.
const PIPES_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Writes `input` to the child's stdin (`pipes[0]`, closed once all is
/// written) and reads its stdout and stderr (`pipes[1]`, `pipes[2]`), from
/// one thread with `poll`, until every pipe is done, `until` passes, or
/// [`PIPES_AFTER_EXIT`] passed since `exited` was set; returns what was
/// read, and whether all of `input` was written.
fn pump(
    mut pipes: [Option<File>; 3],
    input: &[u8],
    until: Instant,
    exited: &AtomicBool,
) -> (Vec<u8>, Vec<u8>, std::io::Result<()>) {
    use std::os::fd::AsRawFd;
    let mut read = [Vec::new(), Vec::new()];
    let mut written = 0;
    let mut write_result = Ok(());
    if input.is_empty() {
        pipes[0] = None;
    }
    for pipe in pipes.iter().flatten() {
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl(2) on a descriptor `pipe` owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let mut exited_at = None;
    let mut chunk = [0u8; 16 * 1024];
    while pipes.iter().any(Option::is_some) {
        let now = Instant::now();
        if exited.load(Ordering::Acquire) {
            exited_at.get_or_insert(now);
        }
        let end = exited_at.map_or(until, |at| until.min(at + PIPES_AFTER_EXIT));
        if now >= end {
            if pipes[0].is_some() && write_result.is_ok() {
                write_result = Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "the input was not all read in time",
                ));
            }
            break;
        }
        let mut fds: Vec<(usize, libc::pollfd)> = pipes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.as_raw_fd())))
            .map(|(i, fd)| {
                let events = if i == 0 { libc::POLLOUT } else { libc::POLLIN };
                (
                    i,
                    libc::pollfd {
                        fd,
                        events,
                        revents: 0,
                    },
                )
            })
            .collect();
        let mut polled: Vec<libc::pollfd> = fds.iter().map(|(_, p)| *p).collect();
        // Short slices: `exited` is looked at between them.
        let slice = (end - now).min(Duration::from_millis(20));
        // SAFETY: poll(2) on an array of `polled.len()` valid pollfds.
        let n = unsafe {
            libc::poll(
                polled.as_mut_ptr(),
                polled.len() as libc::nfds_t,
                slice.as_millis().max(1) as libc::c_int,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for ((i, _), p) in fds.iter_mut().zip(&polled) {
            if p.revents == 0 {
                continue;
            }
            let i = *i;
            let Some(pipe) = pipes[i].as_mut() else {
                continue;
            };
            if i == 0 {
                match pipe.write(&input[written..]) {
                    Ok(n) => {
                        written += n;
                        if written == input.len() {
                            pipes[0] = None;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        write_result = Err(e);
                        pipes[0] = None;
                    }
                }
            } else {
                match pipe.read(&mut chunk) {
                    Ok(0) => pipes[i] = None,
                    Ok(n) => read[i - 1].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => pipes[i] = None,
                }
            }
        }
    }
    let [stdout, stderr] = read;
    (stdout, stderr, write_result)
}

/// Waits for `child` to exit, at most `deadline`: its status, or `None`
/// when it still runs.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        std::thread::sleep(pause);
        // Short commands are seen soon, long ones without spinning.
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// `iptables-restore`'s complaint without its usage hint, on one line.
fn restore_message(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `iptables-restore -h'"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The input line `Error occurred at line: N` points at.
fn failing_line(message: &str, batch: &str) -> Option<String> {
    let (_, after) = message.split_once("Error occurred at line: ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    batch.lines().nth(n.checked_sub(1)?).map(str::to_string)
}

fn spawn(
    ns: &str,
    program: &'static str,
    cmd: &mut Command,
) -> Result<std::process::Child, IptablesError> {
    ovslab_netlink::netns::spawn_in(cmd, ns)
        .map_err(|source| IptablesError::Enter {
            namespace: ns.to_string(),
            command: program,
            source,
        })?
        .map_err(|source| IptablesError::Spawn {
            namespace: ns.to_string(),
            command: program,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDERR: &str = "iptables-restore v1.8.9 (nf_tables): Bad IP address \"203.0.113.300\"\n\
                          Error occurred at line: 3\n\
                          Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n";

    fn piped(program: &str, args: &[&str]) -> std::process::Child {
        Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the child")
    }

    /// A process the child started that keeps the child's pipes open (a
    /// `modprobe` of iptables-legacy's) holds their reading only
    /// [`PIPES_AFTER_EXIT`] beyond the child's exit, not until it ends.
    #[test]
    fn pipes_held_by_a_grandchild_are_read_only_briefly_after_the_child_exits() {
        let mut child = piped("sh", &["-c", "sleep 5 & echo hi"]);
        let pipes = [
            None,
            child.stdout.take().map(file),
            child.stderr.take().map(file),
        ];
        drop(child.stdin.take());
        let exited = AtomicBool::new(false);
        let started = Instant::now();
        std::thread::scope(|s| {
            let pumped = s.spawn(|| pump(pipes, b"", started + Duration::from_secs(30), &exited));
            child.wait().unwrap();
            exited.store(true, Ordering::Release);
            let (stdout, _, written) = pumped.join().unwrap();
            assert_eq!(stdout, b"hi\n");
            assert!(written.is_ok());
        });
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    /// An input far larger than a pipe goes through whole while the
    /// output is read, from one thread.
    #[test]
    fn a_large_input_goes_through_whole() {
        let mut child = piped("cat", &[]);
        let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let pipes = [
            child.stdin.take().map(file),
            child.stdout.take().map(file),
            child.stderr.take().map(file),
        ];
        let exited = AtomicBool::new(false);
        let (stdout, stderr, written) = pump(
            pipes,
            &input,
            Instant::now() + Duration::from_secs(30),
            &exited,
        );
        assert!(child.wait().unwrap().success());
        written.unwrap();
        assert!(stderr.is_empty());
        assert!(stdout == input, "{} of {} bytes", stdout.len(), input.len());
    }

    #[test]
    fn a_child_is_waited_for_at_most_its_deadline() {
        let mut quick = Command::new("true").spawn().expect("start true");
        let status = wait_until(&mut quick, Duration::from_secs(5)).unwrap();
        assert!(status.is_some_and(|s| s.success()));
        let mut slow = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let started = Instant::now();
        assert!(
            wait_until(&mut slow, Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        slow.kill().unwrap();
        slow.wait().unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn a_stuck_command_in_a_namespace_is_killed_and_reaped_at_its_deadline() {
        ovslab_testkit::require_root(
            "a_stuck_command_in_a_namespace_is_killed_and_reaped_at_its_deadline",
        );
        let ns = ovslab_testkit::TestNetns::new();
        let started = Instant::now();
        let err = run(&ns.name, "sleep", &["30"], None, Duration::from_millis(300))
            .expect_err("sleep 30 outlives 0.3 s");
        let IptablesError::Timeout { pid, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the killed child was not reaped"
        );
        assert!(
            err.to_string()
                .contains("`sleep` did not finish within 0.3 s")
        );
        let (out, written) = run(&ns.name, "cat", &[], Some("through"), DEADLINE).unwrap();
        written.unwrap();
        assert_eq!(out.stdout, b"through");
    }

    #[test]
    fn message_drops_the_usage_hint() {
        assert_eq!(
            restore_message(STDERR),
            "iptables-restore v1.8.9 (nf_tables): Bad IP address \"203.0.113.300\"; \
             Error occurred at line: 3"
        );
    }

    #[test]
    fn failing_line_is_found_in_the_batch() {
        let batch =
            "*nat\n:neutron-x - [0:0]\n-A neutron-x -j SNAT --to-source 203.0.113.300\nCOMMIT\n";
        assert_eq!(
            failing_line(&restore_message(STDERR), batch).as_deref(),
            Some("-A neutron-x -j SNAT --to-source 203.0.113.300")
        );
        assert_eq!(failing_line("no line here", batch), None);
        assert_eq!(failing_line("Error occurred at line: 0", batch), None);
    }

    #[test]
    fn restore_error_names_namespace_and_line() {
        let err = IptablesError::Restore {
            namespace: "qrouter-x".into(),
            status: "exit status: 2".into(),
            stderr: "Bad IP address".into(),
            input_line: Some("-A neutron-x -j DROP".into()),
        };
        assert_eq!(
            err.to_string(),
            "namespace qrouter-x: `iptables-restore --noflush -w` failed (exit status: 2): \
             Bad IP address (input: `-A neutron-x -j DROP`)"
        );
    }
}
