//! The completion scripts in real shells: each loads without a word on
//! standard error, and completes subcommands, options, and the names of a
//! running lab and its targets, asked of a (fake) daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::FakeDaemon;

/// The lab the fake daemon runs: the seed's topology under another name.
const LAB: &str = "p16zlab";

fn daemon(tag: &str) -> FakeDaemon {
    let topology = serde_json::json!({
        "topology": ovslab_topology_seed().replace("lab: seed", &format!("lab: {LAB}")),
        "source": "lab.yaml",
    })
    .to_string();
    FakeDaemon::new(
        tag,
        &[
            ("GET /v1/labs", &format!(r#"["{LAB}"]"#)),
            (&format!("GET /v1/labs/{LAB}/topology"), &topology),
        ],
    )
}

fn ovslab_topology_seed() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../lab-topologies/seed.yaml"),
    )
    .unwrap()
}

/// The directory of the `ovslab` binary under test, for `PATH`.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ovslab"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn path_with_ovslab() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Writes `ovslab completions SHELL` into the daemon's scratch directory.
fn script(daemon: &FakeDaemon, shell: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_ovslab"))
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = daemon.dir.join(format!("ovslab.{shell}"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

/// What bash completes for `line` (the cursor at its end), and what it
/// said on standard error while loading the script and completing.
fn bash_completes(daemon: &FakeDaemon, line: &str) -> (Vec<String>, String) {
    let file = script(daemon, "bash");
    let program = format!(
        r#"source {}
line={line:?}
read -ra COMP_WORDS <<<"$line"
[[ $line == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE=$line
COMP_POINT=${{#line}}
_ovslab_dynamic ovslab "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        file.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .env("PATH", path_with_ovslab())
        .env("OVSLAB_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let words = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (words, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bash_completes_subcommands_options_labs_and_targets() {
    let daemon = daemon("bash");
    let cases: &[(&str, &[&str])] = &[
        ("ovslab d", &["down"]),
        ("ovslab s", &["status", "schema"]),
        ("ovslab completions ", &["bash", "zsh", "fish"]),
        ("ovslab down ", &[LAB]),
        ("ovslab check ", &[LAB]),
        ("ovslab exec --lab ", &[LAB]),
        (
            "ovslab exec ",
            &["compute1", "instance1", "router1", "internet"],
        ),
        (
            "ovslab exec --lab p16zlab inst",
            &["instance1", "instance4"],
        ),
        ("ovslab trace instance1 ", &["instance3", "internet"]),
        ("ovslab trace --tcp 22 instance1 ", &["instance3"]),
        ("ovslab node fail ", &["network", "compute2"]),
        ("ovslab down --", &["--json", "--verbose"]),
        ("ovslab graph --format ", &["dot", "mermaid", "svg"]),
    ];
    for (line, want) in cases {
        let (got, stderr) = bash_completes(&daemon, line);
        assert!(stderr.is_empty(), "{line:?}: stderr: {stderr}");
        for w in *want {
            assert!(got.iter().any(|g| g == w), "{line:?}: {w} not in {got:?}");
        }
    }
    // A node is not a lab, and an instance is not a node.
    let (got, _) = bash_completes(&daemon, "ovslab down ");
    assert_eq!(got, [LAB]);
    let (got, _) = bash_completes(&daemon, "ovslab node recover ");
    assert!(!got.iter().any(|g| g.starts_with("instance")), "{got:?}");
}

#[test]
fn bash_completes_nothing_from_a_daemon_that_is_not_there() {
    let daemon = daemon("bash-gone");
    let (got, stderr) = {
        let file = script(&daemon, "bash");
        let out = Command::new("bash")
            .args([
                "--norc",
                "--noprofile",
                "-c",
                &format!(
                    "source {}; COMP_WORDS=(ovslab down ''); COMP_CWORD=2; \
                     _ovslab_dynamic ovslab '' down; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    file.display()
                ),
            ])
            .env("PATH", path_with_ovslab())
            .env("OVSLAB_SOCKET", daemon.dir.join("nothing.sock"))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(stderr.is_empty(), "{stderr}");
    assert!(!got.contains(LAB), "{got}");
}

/// What zsh shows after `line` and a TAB, in an interactive zsh on a
/// pseudo-terminal (zsh/zpty): the completion system for real.
fn zsh_completes(daemon: &FakeDaemon, line: &str, want: &str) -> String {
    let file = script(daemon, "zsh");
    let fpath = daemon.dir.join("zfunc");
    std::fs::create_dir_all(&fpath).unwrap();
    std::fs::copy(&file, fpath.join("_ovslab")).unwrap();
    // Everything the terminal shows for 3 s after the TAB (or until the
    // prompt came back with a list or a completed word, and a moment).
    let driver = format!(
        r#"zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z 'PS1="> "; fpath=({fpath} $fpath); autoload -U compinit; compinit -u -D; zstyle ":completion:*" list-prompt ""; unsetopt beep; print -- READY'
zpty -r -m z out '*READY*'
zpty -w -n z {line:?}$'\t'
screen=""
for i in {{1..30}}; do
    sleep 0.1
    while zpty -r -t z chunk; do screen+=$chunk; done
    [[ $screen == *{want}* ]] && break
done
print -r -- $screen
zpty -d z
"#,
        fpath = fpath.display(),
        want = want,
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &driver])
        .env("PATH", path_with_ovslab())
        .env("OVSLAB_SOCKET", &daemon.socket)
        .env("TERM", "dumb")
        .output()
        .expect("zsh");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
#[ignore = "needs zsh (make deps installs it)"]
fn zsh_completes_subcommands_labs_and_targets() {
    let daemon = daemon("zsh");
    let file = script(&daemon, "zsh");
    // The script loads without a word.
    let out = Command::new("zsh")
        .args([
            "-f",
            "-c",
            &format!(
                "autoload -U compinit; compinit -u -D; source {}",
                file.display()
            ),
        ])
        .output()
        .expect("zsh");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (line, want) in [
        ("ovslab do", "down"),
        ("ovslab down ", LAB),
        ("ovslab exec --lab ", LAB),
        ("ovslab exec inter", "internet"),
        ("ovslab trace instance1 rou", "router1"),
        ("ovslab node fail netw", "network"),
    ] {
        let screen = zsh_completes(&daemon, line, want);
        assert!(screen.contains(want), "{line:?}: {want} not in {screen:?}");
    }
}

#[test]
#[ignore = "needs fish (make deps installs it)"]
fn fish_completes_subcommands_labs_and_targets() {
    let daemon = daemon("fish");
    let file = script(&daemon, "fish");
    for (line, want) in [
        ("ovslab do", "down"),
        ("ovslab down ", LAB),
        ("ovslab exec --lab ", LAB),
        ("ovslab exec ", "instance4"),
        ("ovslab node fail ", "compute2"),
    ] {
        let out = Command::new("fish")
            .args([
                "--no-config",
                "-c",
                &format!("source {}; complete -C {line:?}", file.display()),
            ])
            .env("PATH", path_with_ovslab())
            .env("OVSLAB_SOCKET", &daemon.socket)
            .output()
            .expect("fish");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            got.lines().any(|l| l.split('\t').next() == Some(want)),
            "{line:?}: {want} not in {got}"
        );
    }
}
