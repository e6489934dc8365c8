//! The command line's conventions, end to end against a fake daemon (a
//! Unix socket answering canned JSON, recording what was asked): which lab
//! a command means when none is named, and what `up`, `down`, `status`
//! and `check` print — the summary, `-v`, `--json` — when the output is
//! not a terminal (no colour, no progress).

mod common;

use common::FakeDaemon;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a command printed and how it ended, for one snapshot.
fn outcome(out: &std::process::Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr)
    )
}

const CHECK_REPORT: &str = r#"{"lab":"LAB","results":[
    {"name":"snat","passed":true,"detail":"reached 203.0.113.1 from 203.0.113.101"},
    {"name":"isolated","passed":false,"detail":"expected no answer: answered"}],
    "elapsed_ms":2100}"#;

fn check_report(lab: &str) -> String {
    CHECK_REPORT.replace("LAB", lab)
}

#[test]
fn a_command_without_a_lab_means_the_only_lab_running() {
    let daemon = FakeDaemon::new(
        "only",
        &[
            ("GET /v1/labs", r#"["scale-10-10"]"#),
            (
                "POST /v1/labs/scale-10-10/check",
                &check_report("scale-10-10"),
            ),
        ],
    );
    let out = daemon.ovslab(&["check"]);
    assert_eq!(
        daemon.asked(),
        ["GET /v1/labs", "POST /v1/labs/scale-10-10/check"]
    );
    insta::assert_snapshot!(outcome(&out), @r"
    exit 1
    --- stdout
    PASS  snat      reached 203.0.113.1 from 203.0.113.101
    FAIL  isolated  expected no answer: answered
    lab scale-10-10: 1 of 2 checks passed in 2100 ms
    --- stderr
    ");
}

#[test]
fn a_named_lab_is_used_without_asking_which_run() {
    let daemon = FakeDaemon::new(
        "named",
        &[("POST /v1/labs/other/check", &check_report("other"))],
    );
    daemon.ovslab(&["check", "other"]);
    assert_eq!(daemon.asked(), ["POST /v1/labs/other/check"]);
}

#[test]
fn several_labs_are_listed_and_none_is_chosen() {
    let daemon = FakeDaemon::new("several", &[("GET /v1/labs", r#"["a","b"]"#)]);
    for (args, usage) in [
        (&["check"][..], "ovslab check LAB"),
        (&["down"], "ovslab down LAB"),
        (
            &["exec", "instance1", "--", "true"],
            "ovslab exec --lab LAB TARGET -- CMD",
        ),
        (
            &["trace", "instance1", "instance2"],
            "ovslab trace --lab LAB SRC DST",
        ),
        (&["graph"], "ovslab graph LAB"),
        (
            &["node", "fail", "compute1"],
            "ovslab node fail --lab LAB NODE",
        ),
    ] {
        let out = daemon.ovslab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", outcome(&out));
        assert_eq!(
            text(&out.stderr),
            format!("2 labs are running (a, b): say which, as in `{usage}`\n"),
            "{args:?}"
        );
    }
    // Nothing but the list was asked for.
    assert!(daemon.asked().iter().all(|a| a == "GET /v1/labs"));
}

#[test]
fn no_lab_running_is_a_failure_that_says_how_to_start_one() {
    let daemon = FakeDaemon::new("none", &[("GET /v1/labs", "[]")]);
    let out = daemon.ovslab(&["down"]);
    insta::assert_snapshot!(outcome(&out), @r"
    exit 1
    --- stdout
    --- stderr
    ovslab: no lab is running: bring one up with `ovslab up [TOPOLOGY]`, or name one
    ");
}

#[test]
fn status_shows_the_only_lab_but_its_json_lists_the_labs() {
    let status = r#"{"lab":"only","source":"only.yaml","nodes":[],"instances":[],
        "healthy":true,"repairs":[],"repair_count":0,"audits":null,"audit_error":null}"#;
    let daemon = FakeDaemon::new(
        "status",
        &[
            ("GET /v1/labs", r#"["only"]"#),
            ("GET /v1/labs/only", status),
        ],
    );
    let out = daemon.ovslab(&["status"]);
    assert!(out.status.success(), "{}", outcome(&out));
    assert!(
        text(&out.stdout).starts_with("lab only (from only.yaml): healthy\n"),
        "{}",
        outcome(&out)
    );
    let out = daemon.ovslab(&["status", "--json"]);
    assert_eq!(text(&out.stdout), "[\n  \"only\"\n]\n");
}

/// An `up` of the seed lab that made five changes and met a stranger.
const UP_REPORT: &str = r#"{"lab":"seed","changes":[
    "create namespace seed.network",
    "seed.network: create veth eth1 <-> network (in seed.physnet1)",
    "seed.network: set eth1 up",
    "start ovsdb-server on network",
    "network: br-int: add flow table=0, priority=0, actions=drop"],
    "warnings":["namespace seed.x has the lab's prefix but was not made by it: left alone"],
    "elapsed_ms":341}"#;

#[test]
fn up_prints_a_summary_every_change_with_verbose_and_the_report_as_json() {
    let daemon = FakeDaemon::new("up", &[("POST /v1/labs", UP_REPORT)]);
    insta::assert_snapshot!("up_summary", outcome(&daemon.ovslab(&["up"])));
    insta::assert_snapshot!("up_verbose", outcome(&daemon.ovslab(&["up", "-v"])));
    insta::assert_snapshot!("up_json", outcome(&daemon.ovslab(&["up", "--json"])));
    // The seed stays the default for `up`: the list of labs is not asked.
    assert!(daemon.asked().iter().all(|a| a == "POST /v1/labs"));
}

const DOWN_REPORT: &str = r#"{"lab":"seed","removed":[
    "stopped ovs-vswitchd of compute1 (pid 32076)",
    "stopped ovsdb-server of compute1 (pid 32030)",
    "deleted namespace seed.compute1",
    "deleted namespace seed.network",
    "removed /run/ovslab/seed"],"elapsed_ms":106}"#;

#[test]
fn down_prints_a_summary_every_removal_with_verbose_and_the_report_as_json() {
    let daemon = FakeDaemon::new(
        "down",
        &[
            ("GET /v1/labs", r#"["seed"]"#),
            ("DELETE /v1/labs/seed", DOWN_REPORT),
        ],
    );
    insta::assert_snapshot!("down_summary", outcome(&daemon.ovslab(&["down"])));
    insta::assert_snapshot!("down_verbose", outcome(&daemon.ovslab(&["down", "-v"])));
    insta::assert_snapshot!("down_json", outcome(&daemon.ovslab(&["down", "--json"])));
}

#[test]
fn piped_output_has_no_colour_and_no_progress() {
    let daemon = FakeDaemon::new(
        "plain",
        &[
            ("GET /v1/labs", r#"["seed"]"#),
            ("POST /v1/labs/seed/check", &check_report("seed")),
            ("POST /v1/labs", UP_REPORT),
        ],
    );
    for args in [&["check"][..], &["up"]] {
        let out = daemon.ovslab(args);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains('\u{1b}'), "{args:?}: {all:?}");
    }
    assert!(!daemon.asked().iter().any(|a| a.ends_with("/progress")));
}

/// A socket that is not ovslabd's (`--socket`, `$OVSLAB_SOCKET`) answers
/// a namespace path and `LD_PRELOAD`: `exec` enters nothing, runs nothing
/// and passes on only Open vSwitch's directories.
#[test]
fn exec_takes_only_a_namespace_name_and_ovs_directories_from_the_socket() {
    let daemon = FakeDaemon::new(
        "hostile-target",
        &[
            (
                "GET /v1/labs/seed/targets/compute1",
                r#"{"lab":"seed","name":"compute1","kind":"node","namespace":"/proc/self/ns/net",
                    "env":[["LD_PRELOAD","/tmp/evil.so"]]}"#,
            ),
            (
                "GET /v1/labs/seed/targets/compute2",
                r#"{"lab":"seed","name":"compute2","kind":"node",
                    "namespace":"seed.no-such-namespace-of-this-test",
                    "env":[["LD_PRELOAD","/tmp/evil.so"],["OVS_RUNDIR","/run/ovslab/seed/compute2"]]}"#,
            ),
            (
                "GET /v1/labs",
                "[\"seed\",\"\\u001b]0;PWNED\\u0007\",\"a\\tb\"]",
            ),
        ],
    );
    let out = daemon.ovslab(&["exec", "--lab", "seed", "compute1", "--", "echo", "ran"]);
    assert_eq!(out.status.code(), Some(1), "{}", outcome(&out));
    assert!(text(&out.stdout).is_empty(), "{}", outcome(&out));
    assert!(
        text(&out.stderr).contains("namespace `/proc/self/ns/net` for compute1: it is a path"),
        "{}",
        outcome(&out)
    );
    let out = daemon.ovslab(&["exec", "--lab", "seed", "compute2", "--", "echo", "ran"]);
    assert_eq!(out.status.code(), Some(1), "{}", outcome(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: ignored environment from the daemon's answer: LD_PRELOAD"),
        "{stderr}"
    );
    assert!(stderr.contains("does not exist"), "{stderr}");

    // `__complete labs` offers only names that pass the topology's rule.
    let out = daemon.ovslab(&["__complete", "labs"]);
    assert_eq!(
        text(&out.stdout),
        "seed\trunning lab\n",
        "{}",
        outcome(&out)
    );
}
