//! The daemon as a service: the systemd unit verifies, `--on-exit down`
//! removes the labs on a stop, and the API socket belongs to the group
//! whose members may use it. (`make test-container` boots a real systemd
//! with the unit; see scripts/test-container.sh.)

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use ovslab_integration_tests::{Lab, require_root, run_raw, wait_until};

/// The unit, its ExecStart pointed at the built daemon, as
/// `systemd-analyze verify` checks it (a broken directive fails it).
#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/ovslabd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify") && text.contains("ExecReload="));
    let daemon = ovslab_integration_tests::bin("ovslabd");
    let dir = std::env::temp_dir().join(format!("ovslab-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("ovslabd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/ovslabd", daemon.to_str().unwrap()),
    )
    .unwrap();
    let out = run_raw("systemd-analyze", &["verify", copy.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root"]
fn a_stop_with_on_exit_down_removes_every_lab() {
    require_root("a_stop_with_on_exit_down_removes_every_lab");
    let mut lab = Lab::create_with(
        ovslab_topology::SEED_YAML,
        &["--audit-interval", "0", "--on-exit", "down"],
    );
    lab.up();
    assert!(!lab.namespaces().is_empty());
    let status = lab.daemon.stop();
    assert!(status.success(), "{status}");
    assert!(lab.namespaces().is_empty(), "{:?}", lab.namespaces());
    assert!(!lab.daemon.run_dir.join(&lab.name).exists());
}

#[test]
#[ignore = "needs root"]
fn the_socket_belongs_to_the_api_group_when_it_exists() {
    require_root("the_socket_belongs_to_the_api_group_when_it_exists");
    // Whatever group `ovslab` is here (if any), the socket carries it.
    let group = run_raw("getent", &["group", "ovslab"]);
    let gid = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse::<u32>().ok());
    let lab = Lab::create(ovslab_topology::SEED_YAML);
    let meta = std::fs::metadata(&lab.daemon.socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid.unwrap_or(0));
}

/// A lab file put under `--labs-dir` comes up on SIGHUP, and once the file
/// is removed the next SIGHUP takes that lab down (the daemon records which
/// labs came from the directory in `<run-dir>/from-labs-dir`).
#[test]
#[ignore = "needs root"]
fn a_reload_brings_up_new_lab_files_and_removes_labs_whose_file_is_gone() {
    require_root("a_reload_brings_up_new_lab_files_and_removes_labs_whose_file_is_gone");
    let lab = Lab::create(ovslab_topology::SEED_YAML);
    let labs_dir = lab.daemon.dir.join("no-labs");
    std::fs::create_dir_all(&labs_dir).unwrap();
    let file = labs_dir.join("lab.yaml");
    std::fs::copy(&lab.file, &file).unwrap();
    let hangup = |daemon: &ovslab_integration_tests::Daemon| {
        // SAFETY: signalling the daemon this test started, by its pid.
        unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    };

    hangup(&lab.daemon);
    wait_until(Duration::from_secs(60), "the lab from the labs dir", || {
        lab.namespaces().contains(&lab.ns("instance1"))
    });
    let record = std::fs::read_to_string(lab.daemon.run_dir.join("from-labs-dir")).unwrap();
    assert!(record.starts_with(&format!("{}\t", lab.name)), "{record}");

    std::fs::remove_file(&file).unwrap();
    hangup(&lab.daemon);
    wait_until(Duration::from_secs(60), "the lab removed", || {
        lab.namespaces().is_empty()
    });
    assert!(
        lab.daemon
            .log()
            .contains(&format!("was removed: removing lab {}", lab.name)),
        "{}",
        lab.daemon.log()
    );
    wait_until(Duration::from_secs(20), "the record emptied", || {
        std::fs::read_to_string(lab.daemon.run_dir.join("from-labs-dir")).unwrap() == ""
    });
}
