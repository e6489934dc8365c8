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
    let path = Path::new("/run/netns").join(&target.namespace);
    let namespace = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls setns(2), one system call that neither allocates nor takes
    // locks, on a descriptor the closure owns.
    unsafe {
        command
            .pre_exec(move || setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
    }
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .map_err(|_| format!("{} did not answer within {DEADLINE:?}", argv[0]))?
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::EPERM as i32 => format!(
                "entering namespace {}: {e} (reading it live needs root, as `ovslab exec` does)",
                target.namespace
            ),
            _ => format!("running {}: {e}", argv[0]),
        })?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            argv[0],
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if text.len() > MOST {
        let mut end = MOST;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n… (cut)");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_two_fixed_commands_are_ever_run() {
        assert_eq!(
            super::argv("flows", "br-int").join(" "),
            "ovs-ofctl -O OpenFlow13 --names --no-stats dump-flows br-int"
        );
        assert_eq!(
            super::argv("nat", "ignored").join(" "),
            "iptables-save -t nat"
        );
        assert_eq!(
            super::argv("anything", "x").join(" "),
            "iptables-save -t nat"
        );
    }
}
