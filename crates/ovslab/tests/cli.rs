//! The `ovslab` binary, end to end, without a daemon.

use std::path::PathBuf;

use assert_cmd::Command;

fn ovslab() -> Command {
    let mut c = Command::cargo_bin("ovslab").unwrap();
    c.env_remove("OVSLAB_SOCKET");
    c
}

fn seed_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../lab-topologies/seed.yaml")
}

/// A scratch directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ovslab-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn validate_accepts_the_seed_lab() {
    let file = seed_file();
    let out = ovslab().arg("validate").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{}: ok (lab seed: 3 nodes, 4 instances)\n", file.display())
    );
}

#[test]
fn validate_reports_a_duplicate_instance_with_its_line_and_exits_2() {
    let scratch = Scratch::new("dup");
    let file = scratch.0.join("bad.yaml");
    let text = ovslab_topology_seed_with_duplicate();
    std::fs::write(&file, text).unwrap();
    let out = ovslab().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with(&format!("{}:", file.display())), "{err}");
    let line_no = err.split(':').nth(1).unwrap();
    assert!(line_no.parse::<u32>().is_ok(), "no line number in: {err}");
    assert!(err.contains("instance1"), "{err}");
}

/// The seed lab with `instance1` declared twice.
fn ovslab_topology_seed_with_duplicate() -> String {
    let seed = std::fs::read_to_string(seed_file()).unwrap();
    seed.replacen(
        "instances:\n",
        "instances:\n  - name: instance1\n    node: compute2\n    network: net1\n    address: 192.168.1.50\n",
        1,
    )
}

#[test]
fn validate_of_a_missing_file_exits_2() {
    let out = ovslab()
        .args(["validate", "/nonexistent/lab.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("/nonexistent/lab.yaml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn up_without_a_daemon_says_how_to_start_it_and_exits_1() {
    let scratch = Scratch::new("nodaemon");
    let socket = scratch.0.join("missing.sock");
    let out = ovslab()
        .env("OVSLAB_SOCKET", &socket)
        .arg("up")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach ovslabd at {}", socket.display())),
        "{err}"
    );
    assert!(err.contains("start it with `ovslabd`"), "{err}");
}

#[test]
fn up_of_a_bad_file_exits_2_without_asking_the_daemon() {
    let scratch = Scratch::new("badup");
    let file = scratch.0.join("bad.yaml");
    std::fs::write(&file, ovslab_topology_seed_with_duplicate()).unwrap();
    // The socket does not exist: had ovslab tried it, it would say so and exit 1.
    let out = ovslab()
        .env("OVSLAB_SOCKET", scratch.0.join("missing.sock"))
        .arg("up")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!("{}:", file.display())),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn help_lists_every_verb_and_the_exit_codes() {
    let out = ovslab().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for verb in [
        "up", "down", "status", "exec", "validate", "generate", "graph",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "{verb} missing from:\n{help}"
        );
    }
    assert!(help.contains("Exit status:"), "{help}");
}

#[test]
fn generate_prints_a_valid_lab() {
    let scratch = Scratch::new("gen");
    let out = ovslab()
        .args(["generate", "--computes", "2", "--instances-per-node", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let file = scratch.0.join("scale.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let out = ovslab().arg("validate").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("ok (lab scale-2-3: 3 nodes, 6 instances)\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_argument_exits_2() {
    let out = ovslab().args(["status", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn graph_draws_a_topology_file_as_dot_without_a_daemon() {
    let scratch = Scratch::new("graphdot");
    let out = ovslab()
        .env("OVSLAB_SOCKET", scratch.0.join("missing.sock"))
        .args(["graph", "--format", "dot", "--topology"])
        .arg(seed_file())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("graph \"seed\" {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    for name in [
        "compute1",
        "br-int",
        "br-ex",
        "instance4",
        "vlan 101,102",
        "tag 1",
    ] {
        assert!(dot.contains(name), "{name} missing from:\n{dot}");
    }
}

#[test]
fn graph_writes_an_svg_file() {
    let scratch = Scratch::new("graphsvg");
    let file = scratch.0.join("seed.svg");
    let out = ovslab()
        .args(["graph", "--format", "svg", "-o"])
        .arg(&file)
        .arg("--topology")
        .arg(seed_file())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let svg = std::fs::read_to_string(&file).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.contains(">compute2</text>"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn graph_of_a_bad_file_exits_2() {
    let scratch = Scratch::new("graphbad");
    let file = scratch.0.join("bad.yaml");
    std::fs::write(&file, ovslab_topology_seed_with_duplicate()).unwrap();
    let out = ovslab()
        .env("OVSLAB_SOCKET", scratch.0.join("missing.sock"))
        .args(["graph", "--topology"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!("{}:", file.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn graph_of_a_running_lab_without_a_daemon_exits_1() {
    let scratch = Scratch::new("graphnodaemon");
    let out = ovslab()
        .env("OVSLAB_SOCKET", scratch.0.join("missing.sock"))
        .args(["graph", "seed"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach ovslabd"),
        "{}",
        stderr(&out)
    );
}

/// Whether `text` holds a character that could act on a terminal.
fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

#[test]
fn validate_shows_escape_sequences_from_the_file_escaped() {
    let scratch = Scratch::new("escape");
    // A file name, an instance name and a check name, each with ESC (YAML's
    // `\e` in a double-quoted string), BEL or CR.
    let file = scratch.0.join("evil\u{1b}[2J.yaml");
    let seed = std::fs::read_to_string(seed_file()).unwrap();
    let text = seed
        .replace("instance4", "\"inst\\e]0;owned\\a\"")
        .replace("  - name: snat\n", "  - name: \"snat\\e[1A\\r\"\n");
    std::fs::write(&file, text).unwrap();
    let out = ovslab().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !has_control(&err),
        "a control character reached the terminal: {err:?}"
    );
    assert!(err.contains("evil\\x1b[2J.yaml:"), "{err}");
    assert!(err.contains("instance `inst\\x1b]0;owned\\x07`"), "{err}");
    assert!(
        err.contains("check `snat\\x1b[1A\\x0d`: the name holds a control character"),
        "{err}"
    );
}

#[test]
fn errors_quoting_what_the_user_gave_are_escaped() {
    // Not a file: the CLI's own message quotes the argument.
    let out = ovslab()
        .arg("validate")
        .arg("/nonexistent/\u{1b}[2Jx.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(!has_control(&err), "{err:?}");
    assert!(
        err.contains("/nonexistent/\\x1b[2Jx.yaml: cannot read"),
        "{err}"
    );
    // No daemon: the message quotes the socket.
    let out = ovslab()
        .args(["--socket", "/nonexistent/\u{1b}]0;t\u{7}.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(!has_control(&err), "{err:?}");
    assert!(err.contains("/nonexistent/\\x1b]0;t\\x07.sock"), "{err}");
}

#[test]
fn version_names_the_git_commit() {
    let out = ovslab().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    let rest = text
        .strip_prefix(&format!("ovslab {} (git ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{text}"));
    let commit = rest.strip_suffix(")\n").unwrap_or_else(|| panic!("{text}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
}
