//! What the page reads live, on a click: the flows of a bridge
//! (`ovs-ofctl dump-flows`) and a router's nat table (`iptables-save -t
//! nat`), each run in the object's namespace as `ovslab exec` would, with
//! the user's rights, and a deadline.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use ovslab_api::Target;
use serde::Serialize;

/// How long one reading may take.
const DEADLINE: Duration = Duration::from_secs(5);
/// The most text shown (a bridge of a large lab has thousands of flows).
const MOST: usize = 256 << 10;
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, Serialize)]
pub struct Live {
    /// The command run, as a person would type it.
    pub command: String,
    pub text: String,
    /// Why it could not be read (not root, a deadline missed, …).
    pub error: Option<String>,
}

/// The argv for `what` (`flows` of `bridge`, or `nat`).
pub fn argv(what: &str, bridge: &str) -> Vec<String> {
    let words: &[&str] = match what {
        "flows" => &[
            "ovs-ofctl",
            "-O",
            "OpenFlow13",
            "--names",
            "--no-stats",
            "dump-flows",
            bridge,
        ],
        _ => &["iptables-save", "-t", "nat"],
    };
    words.iter().map(|w| w.to_string()).collect()
}

/// Runs the reading in the target's namespace.
pub async fn read(target: &Target, what: &str, bridge: &str) -> Live {
    let argv = argv(what, bridge);
    let command = format!("ovslab exec {} -- {}", target.name, argv.join(" "));
    match run(target, &argv).await {
        Ok(text) => Live {
            command,
            text,
            error: None,
        },
        Err(e) => Live {
            command,
            text: String::new(),
            error: Some(e),
        },
    }
}

async fn run(target: &Target, argv: &[String]) -> Result<String, String> {
    let path = Path::new(NETNS_DIR).join(&target.namespace);
    let namespace = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .envs(target.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls setns(2), one system call that neither allocates nor takes
    // locks, on a descriptor the closure owns.
    unsafe {
        command
            .pre_exec(move || setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    output(command, DEADLINE).await.map_err(|e| match e {
        Failed::Start(_, e) if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32) => {
            format!(
                "entering namespace {}: {e} (reading it live needs root, as `ovslab exec` does)",
                target.namespace
            )
        }
        e => e.to_string(),
    })
}

/// Why a reading gave no text.
#[derive(Debug)]
enum Failed {
    Start(String, io::Error),
    Late(String),
    Status(String, std::process::ExitStatus, String),
    Read(io::Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Start(program, e) => write!(f, "running {program}: {e}"),
            Failed::Late(program) => write!(f, "{program} did not answer within {DEADLINE:?}"),
            Failed::Status(program, status, stderr) => {
                write!(f, "{program} failed ({status}): {}", stderr.trim())
            }
            Failed::Read(e) => write!(f, "reading its output: {e}"),
        }
    }
}

/// The most of a failed reading's stderr kept.
const MOST_STDERR: usize = 16 << 10;

/// Runs `command` (stdin empty) within `deadline`: its stdout as text, cut
/// at [`MOST`] bytes. Reading stops there and the command is killed, so a
/// bridge with millions of flows costs [`MOST`] bytes, not all of them.
async fn output(command: std::process::Command, deadline: Duration) -> Result<String, Failed> {
    use std::process::Stdio;
    let program = command.get_program().to_string_lossy().into_owned();
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| Failed::Start(program.clone(), e))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failed::Read(io::Error::other("no pipe to the command")));
    };
    let pid = child.id();
    let work = async {
        let (out, err) = tokio::join!(
            async {
                let read = read_at_most(stdout, MOST).await;
                if let (Ok((_, true)), Some(pid)) = (&read, pid) {
                    // Enough: the rest is not read. The child is not
                    // reaped yet, so its pid is still its own.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                read
            },
            // All of it, so the command never blocks on a full pipe; the
            // first MOST_STDERR bytes kept.
            drain_keeping(stderr, MOST_STDERR)
        );
        let (out, cut) = out.map_err(Failed::Read)?;
        let err = err.map_err(Failed::Read)?;
        let status = child.wait().await.map_err(Failed::Read)?;
        if !cut && !status.success() {
            return Err(Failed::Status(
                program.clone(),
                status,
                String::from_utf8_lossy(&err).into_owned(),
            ));
        }
        Ok(text(&out, cut))
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| Failed::Late(program.clone()))?
}

/// Up to `most` bytes of `reader`, and whether it had more (then one byte
/// more was read, no further).
async fn read_at_most(
    reader: impl tokio::io::AsyncRead + Unpin,
    most: usize,
) -> io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    reader.take(most as u64 + 1).read_to_end(&mut bytes).await?;
    let cut = bytes.len() > most;
    bytes.truncate(most);
    Ok((bytes, cut))
}

/// All of `reader`, keeping the first `most` bytes.
async fn drain_keeping(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    most: usize,
) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = most.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// The output as text, marked when cut (at a character's boundary).
fn text(bytes: &[u8], cut: bool) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if cut {
        // A character split by the cut became U+FFFD: drop it.
        if text.ends_with('\u{fffd}') {
            text.pop();
        }
        text.push_str("\n… (cut)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_reader_is_read_up_to_the_cut() {
        let (bytes, cut) = read_at_most(tokio::io::repeat(b'x'), 1000).await.unwrap();
        assert_eq!((bytes.len(), cut), (1000, true));
        let (bytes, cut) = read_at_most(&b"flows"[..], 5).await.unwrap();
        assert_eq!((bytes.as_slice(), cut), (&b"flows"[..], false));
        let kept = drain_keeping(&[7u8; 100_000][..], 10).await.unwrap();
        assert_eq!(kept, [7u8; 10]);
    }

    #[tokio::test]
    async fn a_command_that_never_stops_writing_is_cut_and_killed() {
        // `yes` writes for ever: the reading ends at the cut, at once.
        let started = std::time::Instant::now();
        let text = output(std::process::Command::new("yes"), Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            text.ends_with("\n… (cut)"),
            "{:?}",
            &text[text.len() - 20..]
        );
        assert_eq!(text.len(), MOST + "\n… (cut)".len());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_reading_says_how_it_failed() {
        let mut false_ = std::process::Command::new("sh");
        false_.args(["-c", "echo out; echo oops >&2; exit 3"]);
        let e = output(false_, DEADLINE).await.unwrap_err().to_string();
        assert_eq!(e, "sh failed (exit status: 3): oops");
        let mut slow = std::process::Command::new("sleep");
        slow.arg("10");
        let e = output(slow, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(e, Failed::Late(_)), "{e:?}");
        let e = output(std::process::Command::new("/nonexistent/x"), DEADLINE)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("running /nonexistent/x: "), "{e}");
        let ok = output(std::process::Command::new("echo"), DEADLINE)
            .await
            .unwrap();
        assert_eq!(ok, "\n");
    }

    #[test]
    fn a_cut_in_a_character_drops_it() {
        assert_eq!(text("ab€".as_bytes(), false), "ab€");
        assert_eq!(text(&"ab€".as_bytes()[..3], true), "ab\n… (cut)");
    }

    #[test]
    fn only_two_fixed_commands_are_ever_run() {
        assert_eq!(
            argv("flows", "br-int").join(" "),
            "ovs-ofctl -O OpenFlow13 --names --no-stats dump-flows br-int"
        );
        assert_eq!(argv("nat", "ignored").join(" "), "iptables-save -t nat");
        assert_eq!(argv("anything", "x").join(" "), "iptables-save -t nat");
    }
}
