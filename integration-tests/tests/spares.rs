//! Spare nodes (`ovslabd --spare-nodes N`): a lab's small nodes take the
//! namespaces and Open vSwitch daemons the daemon keeps ready, and work as
//! nodes made from nothing do; what a lab took leaves with the lab, what a
//! daemon keeps leaves with the daemon (or with the next one, after a
//! `kill -9`), and a spare that broke is never taken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovslab_integration_tests::{
    Daemon, Lab, dead, lab_namespaces, processes_naming, require_root, run, spare_namespaces,
    spare_namespaces_on_host, spare_prefix, wait_until,
};

/// The spares' directory of a daemon's run directory.
fn spares_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(".spares")
}

/// The spares ready now: (directory, vswitchd pid).
fn ready(run_dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(spares_dir(run_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.join("ready").exists())
        .filter_map(|p| {
            let pid = std::fs::read_to_string(p.join("ovs-vswitchd.pid")).ok()?;
            Some((p.clone(), pid.trim().parse().ok()?))
        })
        .collect()
}

fn wait_ready(run_dir: &Path, n: usize) -> Vec<(PathBuf, u32)> {
    wait_until(
        Duration::from_secs(30),
        "the spare nodes to be ready",
        || ready(run_dir).len() == n,
    );
    ready(run_dir)
}

fn all_namespaces() -> BTreeSet<String> {
    run("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn namespace_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

const NODES: [&str; 3] = ["network", "compute1", "compute2"];

#[test]
#[ignore = "needs root"]
fn a_lab_takes_spare_nodes_and_works_as_one_made_from_nothing() {
    require_root("a_lab_takes_spare_nodes_and_works_as_one_made_from_nothing");
    let lab = Lab::create_with(
        ovslab_topology::SEED_YAML,
        &["--audit-interval", "0", "--spare-nodes", "3"],
    );
    let run_dir = lab.daemon.run_dir.clone();
    let spares = wait_ready(&run_dir, 3);
    let spare_pids: BTreeSet<u32> = spares.iter().map(|(_, pid)| *pid).collect();
    let spare_names: BTreeSet<String> = spare_namespaces(&run_dir).into_iter().collect();
    assert_eq!(spare_names.len(), 3);
    assert!(spare_names.is_subset(&all_namespaces()));

    let out = lab.up();
    assert_eq!(out.matches("a spare node's").count(), 3, "{out}");
    // Each node's vswitchd is a spare's, started before the `up`.
    for node in NODES {
        let pid = lab.pid(node, "ovs-vswitchd");
        assert!(
            spare_pids.contains(&pid),
            "{node}: vswitchd {pid} is not a spare's"
        );
    }
    assert!(!out.contains("start ovs-vswitchd"), "{out}");
    // The spares' namespaces now go by the nodes' names.
    let names = all_namespaces();
    assert!(spare_names.is_disjoint(&names));
    for node in NODES {
        assert!(names.contains(&lab.ns(node)));
    }
    // The walkthrough's checks, the status, and the OVS tools through the
    // nodes' own run directories.
    lab.daemon.ovslab_ok(&["check", &lab.name]);
    let status = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(
        status.contains("healthy") && !status.contains("unhealthy"),
        "{status}"
    );
    assert!(lab.flows("compute1", "br-int").contains("resubmit(,25)"));
    assert!(lab.vsctl("network", &["list-br"]).contains("br-ex"));

    // A database started again reaches the vswitchd that was a spare's
    // (it reconnects by the path it was started with), and a vswitchd
    // killed is started again in the node's run directory.
    let db = lab.pid("compute2", "ovsdb-server");
    let switch = lab.pid("compute1", "ovs-vswitchd");
    // SAFETY: the node's daemons, by the pids they wrote, still running.
    unsafe {
        libc::kill(db as i32, libc::SIGKILL);
        libc::kill(switch as i32, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(5), "the killed daemons to exit", || {
        dead(db) && dead(switch)
    });
    lab.up();
    wait_until(Duration::from_secs(20), "the checks to pass again", || {
        lab.daemon.ovslab(&["check", &lab.name]).status.success()
    });

    // Taken away again with the lab: nothing of its nodes is left, and
    // the daemon makes new spares.
    let ovs = lab.ovs_pids();
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    assert!(lab_namespaces(&lab.name).is_empty());
    assert!(ovs.iter().all(|pid| dead(*pid)), "{ovs:?}");
    let spares = wait_ready(&run_dir, 3);
    assert!(spares.iter().all(|(_, pid)| !spare_pids.contains(pid)));
    let links: Vec<_> = std::fs::read_dir(spares_dir(&run_dir))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_symlink())
        .collect();
    assert!(links.is_empty(), "links left: {links:?}");

    // The daemon's stop takes its spares with it.
    let names: BTreeSet<String> = spare_namespaces(&run_dir).into_iter().collect();
    let mut lab = lab;
    lab.daemon.stop();
    assert!(names.is_disjoint(&all_namespaces()));
    assert!(spares.iter().all(|(_, pid)| dead(*pid)));
    let needle = format!("{}/", spares_dir(&run_dir).display());
    assert!(processes_naming(&needle).is_empty());
}

#[test]
#[ignore = "needs root"]
fn spares_a_killed_daemon_left_go_and_its_labs_keep_theirs() {
    require_root("spares_a_killed_daemon_left_go_and_its_labs_keep_theirs");
    let options = ["--audit-interval", "0", "--spare-nodes", "2"];
    let mut lab = Lab::create_with(ovslab_topology::SEED_YAML, &options);
    let run_dir = lab.daemon.run_dir.clone();
    wait_ready(&run_dir, 2);
    // Two nodes take a spare, the third is made as without spares.
    let out = lab.up();
    assert_eq!(out.matches("a spare node's").count(), 2, "{out}");
    assert_eq!(out.matches("start ovs-vswitchd").count(), 1, "{out}");
    let nodes: Vec<u32> = NODES.iter().map(|n| lab.pid(n, "ovs-vswitchd")).collect();
    let left = wait_ready(&run_dir, 2);
    let left_namespaces: Vec<(String, Option<u64>)> = spare_namespaces(&run_dir)
        .into_iter()
        .map(|n| {
            let inode = namespace_inode(&n);
            (n, inode)
        })
        .collect();

    lab.daemon.kill9();
    lab.daemon.restart(&options);
    // The new daemon removed the spares the killed one kept, made its own,
    // and knows the lab's nodes, spares' or not, as they run.
    let spares = wait_ready(&run_dir, 2);
    assert!(left.iter().all(|(_, pid)| dead(*pid)), "{left:?}");
    // (The new spares may have the same names: not the same namespaces.)
    assert!(
        left_namespaces
            .iter()
            .all(|(name, inode)| inode.is_some() && namespace_inode(name) != *inode),
        "{left_namespaces:?}"
    );
    assert!(
        spares
            .iter()
            .all(|(_, pid)| !left.iter().any(|(_, p)| p == pid))
    );
    let status = lab.daemon.ovslab_ok(&["status", &lab.name]);
    assert!(
        status.contains("healthy") && !status.contains("unhealthy"),
        "{status}"
    );
    let out = lab.up();
    assert!(!out.contains("start ovs"), "{out}");
    let again: Vec<u32> = NODES.iter().map(|n| lab.pid(n, "ovs-vswitchd")).collect();
    assert_eq!(nodes, again);
    lab.daemon.ovslab_ok(&["check", &lab.name]);
}

#[test]
#[ignore = "needs root"]
fn a_spare_whose_switch_died_is_not_taken() {
    require_root("a_spare_whose_switch_died_is_not_taken");
    let lab = Lab::create_with(
        ovslab_topology::SEED_YAML,
        &["--audit-interval", "0", "--spare-nodes", "1"],
    );
    let run_dir = lab.daemon.run_dir.clone();
    let spares = wait_ready(&run_dir, 1);
    let (dir, pid) = spares[0].clone();
    let name = spare_namespaces(&run_dir).pop().unwrap();
    // SAFETY: the spare's vswitchd, by the pid it wrote, still running.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(
        Duration::from_secs(5),
        "the spare's vswitchd to exit",
        || dead(pid),
    );
    let out = lab.up();
    assert!(!out.contains("a spare node's"), "{out}");
    assert_eq!(out.matches("start ovs-vswitchd").count(), 3, "{out}");
    // The broken spare is gone, whole.
    assert!(!dir.exists());
    assert!(!all_namespaces().contains(&name));
    lab.daemon.ovslab_ok(&["check", &lab.name]);
}

/// A namespace under the name a spare would take (someone else's: the
/// daemon records its own) is passed over and never touched, neither
/// when spares are made nor when the daemon stops.
#[test]
#[ignore = "needs root"]
fn a_namespace_under_a_spare_s_name_is_left_alone() {
    require_root("a_namespace_under_a_spare_s_name_is_left_alone");
    let name = ovslab_integration_tests::unique_name("t");
    // The daemon's spares are `ovslab-spare-<FNV-1a of the run directory>-<id>`,
    // ids from 0.
    let run_dir = std::env::temp_dir()
        .join(format!("ovslab-e2e-{name}"))
        .join("run");
    let prefix = spare_prefix(&run_dir);
    let theirs = format!("{prefix}0");
    struct Namespace(String);
    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = ovslab_integration_tests::run_raw("ip", &["netns", "del", &self.0]);
        }
    }
    run("ip", &["netns", "add", &theirs]);
    let _theirs = Namespace(theirs.clone());
    let inode = namespace_inode(&theirs);
    let mut lab = Lab::create_named(
        &name,
        ovslab_topology::SEED_YAML,
        &["--audit-interval", "0", "--spare-nodes", "1"],
    );
    assert_eq!(lab.daemon.run_dir, run_dir);
    wait_ready(&run_dir, 1);
    let ours = spare_namespaces(&run_dir);
    assert_eq!(ours.len(), 1);
    assert_ne!(ours[0], theirs);
    assert!(ours[0].starts_with(&prefix), "{ours:?}");
    assert_eq!(namespace_inode(&theirs), inode);
    lab.daemon.stop();
    assert_eq!(namespace_inode(&theirs), inode);
    assert!(!all_namespaces().contains(&ours[0]));
}

/// A daemon killed with spares, started again with none to keep
/// (`--spare-nodes 0`), still removes the killed one's: their daemons,
/// namespaces and directory.
#[test]
#[ignore = "needs root"]
fn spares_a_killed_daemon_left_go_when_the_next_keeps_none() {
    require_root("spares_a_killed_daemon_left_go_when_the_next_keeps_none");
    let tag = ovslab_integration_tests::unique_name("t");
    let mut daemon = Daemon::start_with(&tag, &["--audit-interval", "0", "--spare-nodes", "2"]);
    let run_dir = daemon.run_dir.clone();
    let left = wait_ready(&run_dir, 2);
    let namespaces = spare_namespaces_on_host(&run_dir);
    assert_eq!(namespaces.len(), 2, "{namespaces:?}");
    let spares = format!("{}/", spares_dir(&run_dir).display());
    assert_eq!(processes_naming(&spares).len(), 4);

    daemon.kill9();
    daemon.restart(&["--audit-interval", "0", "--spare-nodes", "0"]);
    assert!(left.iter().all(|(_, pid)| dead(*pid)), "{left:?}");
    assert!(processes_naming(&spares).is_empty());
    assert_eq!(spare_namespaces_on_host(&run_dir), Vec::<String>::new());
    assert!(!spares_dir(&run_dir).exists());
}

/// A daemon stopped while it makes its spares (at several points of the
/// making) leaves none behind: the spares being made are finished, then
/// removed with the others.
#[test]
#[ignore = "needs root"]
fn a_daemon_stopped_while_making_its_spares_leaves_none() {
    require_root("a_daemon_stopped_while_making_its_spares_leaves_none");
    let tag = ovslab_integration_tests::unique_name("t");
    let options = ["--audit-interval", "0", "--spare-nodes", "3"];
    let mut daemon = Daemon::start_with(&tag, &options);
    let run_dir = daemon.run_dir.clone();
    let spares = format!("{}/", spares_dir(&run_dir).display());
    for (round, after_ms) in [0, 2, 5, 10, 20, 40, 70, 100, 150].into_iter().enumerate() {
        if round > 0 {
            daemon.restart(&options);
        }
        std::thread::sleep(Duration::from_millis(after_ms));
        assert!(daemon.stop().success());
        assert_eq!(
            spare_namespaces_on_host(&run_dir),
            Vec::<String>::new(),
            "stopped {after_ms} ms after it answered"
        );
        assert_eq!(
            processes_naming(&spares),
            Vec::new(),
            "stopped {after_ms} ms after it answered"
        );
        assert!(!spares_dir(&run_dir).exists());
    }
}
