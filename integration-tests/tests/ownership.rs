//! What is a lab's is what the lab made, as its manifest records it: `down`
//! never acts on a path or on a name the daemon does not know, namespaces
//! that only share the lab's prefix are neither adopted nor removed, an
//! `up` that waited behind a `down` makes a lab the daemon knows, and the
//! manifest carries a lab across a daemon killed half-way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ovslab_integration_tests::{Daemon, Lab, require_root, run, run_raw, unique_name, wait_until};

/// A namespace made by the test (not by ovslab), removed on drop.
struct Decoy(String);

impl Decoy {
    fn new(name: &str) -> Self {
        run("ip", &["netns", "add", name]);
        Decoy(name.to_string())
    }

    fn inode(&self) -> Option<u64> {
        std::fs::metadata(Path::new("/run/netns").join(&self.0))
            .ok()
            .map(|m| m.ino())
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = run_raw("ip", &["netns", "del", &self.0]);
    }
}

/// A directory made by the test, with a file in it, removed on drop.
struct DecoyDir(PathBuf);

impl DecoyDir {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(path.join("inner")).unwrap();
        std::fs::write(path.join("inner/keep"), "not ovslab's").unwrap();
        DecoyDir(path)
    }

    fn intact(&self) -> bool {
        std::fs::read_to_string(self.0.join("inner/keep")).is_ok_and(|t| t == "not ovslab's")
    }
}

impl Drop for DecoyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn known_labs(daemon: &Daemon) -> String {
    daemon.ovslab_ok(&["status"])
}

#[test]
#[ignore = "needs root"]
fn down_acts_on_no_path_and_no_unknown_name() {
    require_root("down_acts_on_no_path_and_no_unknown_name");
    let outside = DecoyDir::new(std::env::temp_dir().join(unique_name("decoy-dir")));
    let daemon = Daemon::start(&unique_name("t"));
    // A directory in the run directory that no lab made.
    let inside = DecoyDir::new(daemon.run_dir.join("not-a-lab"));
    let outside_path = outside.0.display().to_string();
    for name in [
        outside_path.as_str(),
        "..",
        "../run",
        ".",
        "not-a-lab",
        "never-made",
    ] {
        let out = daemon.ovslab(&["down", name]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "`ovslab down {name}` should change nothing and fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(outside.intact(), "`down {name}` touched {outside_path}");
        assert!(inside.intact(), "`down {name}` touched the run directory");
        assert!(daemon.socket.exists(), "`down {name}` removed the socket");
    }
    let said = stderr(&daemon.ovslab(&["down", "never-made"]));
    assert!(said.contains("not known"), "{said}");
    let said = stderr(&daemon.ovslab(&["down", &outside_path]));
    assert!(said.contains("a name starts with a letter"), "{said}");
}

#[test]
#[ignore = "needs root"]
fn namespaces_with_the_labs_prefix_that_it_did_not_make_are_left_alone() {
    require_root("namespaces_with_the_labs_prefix_that_it_did_not_make_are_left_alone");
    let lab = Lab::create(ovslab_topology::SEED_YAML);
    // `<lab>.blue` looks like a node of the lab, but the host made it.
    let decoy = Decoy::new(&lab.ns("blue"));
    let inode = decoy.inode();
    let up = lab.up();
    assert!(
        up.contains(&format!(
            "warning: namespace {} has the lab's prefix",
            decoy.0
        )),
        "{up}"
    );
    let down = lab.daemon.ovslab_ok(&["down", "-v", &lab.name]);
    assert!(
        down.contains(&format!("left alone: namespace {}", decoy.0)),
        "{down}"
    );
    assert_eq!(lab.namespaces(), vec![decoy.0.clone()]);
    assert_eq!(decoy.inode(), inode, "the decoy was made again");
}

#[test]
#[ignore = "needs root"]
fn an_up_never_adopts_a_namespace_it_did_not_make() {
    require_root("an_up_never_adopts_a_namespace_it_did_not_make");
    let lab = Lab::create(ovslab_topology::SEED_YAML);
    // The namespace a node of the lab would have, made by someone else.
    let decoy = Decoy::new(&lab.ns("compute1"));
    let inode = decoy.inode();
    let out = lab.daemon.ovslab(&["up", lab.file.to_str().unwrap()]);
    assert!(!out.status.success(), "up adopted {}", decoy.0);
    let said = stderr(&out);
    assert!(
        said.contains(&decoy.0) && said.contains("not made by this lab"),
        "{said}"
    );
    // Refused before anything was made: no other namespace, no run
    // directory, no lab.
    assert_eq!(lab.namespaces(), vec![decoy.0.clone()]);
    assert_eq!(decoy.inode(), inode);
    assert!(!lab.daemon.run_dir.join(&lab.name).exists());
    assert!(!known_labs(&lab.daemon).contains(&lab.name));
    assert_eq!(
        lab.daemon.ovslab(&["down", &lab.name]).status.code(),
        Some(1)
    );
    assert_eq!(decoy.inode(), inode, "down removed the decoy");
}

#[test]
#[ignore = "needs root"]
fn an_up_that_waited_behind_a_down_makes_a_lab_the_daemon_knows() {
    require_root("an_up_that_waited_behind_a_down_makes_a_lab_the_daemon_knows");
    let lab = Lab::seed_audited("0.2");
    // A stopped vswitchd makes the `down` wait for it, so that the `up`
    // arrives while the `down` holds the lab.
    let vswitchd = lab.pid("compute2", "ovs-vswitchd") as i32;
    // SAFETY: a pid from the lab's own pidfile, a process of this test's lab.
    unsafe { libc::kill(vswitchd, libc::SIGSTOP) };
    let down = {
        let (socket, name) = (lab.daemon.socket.clone(), lab.name.clone());
        std::thread::spawn(move || {
            std::process::Command::new(ovslab_integration_tests::bin("ovslab"))
                .args(["--socket", socket.to_str().unwrap(), "down", &name])
                .output()
                .unwrap()
        })
    };
    // The `down` has started (it takes the lab's lock the moment after it
    // says so, and holds it while it waits for the stopped vswitchd).
    let started = format!("down {}: starting", lab.name);
    wait_until(Duration::from_secs(10), "the down to start", || {
        lab.daemon.log().contains(&started)
    });
    std::thread::sleep(Duration::from_millis(50));
    let up = lab.up();
    let down = down.join().unwrap();
    // SAFETY: as above; the process is gone or still ours.
    unsafe { libc::kill(vswitchd, libc::SIGCONT) };
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        up.contains("create namespace"),
        "the up did not follow the down: {up}"
    );
    // The lab the up made is known, healthy, watched and audited: a qvo
    // deleted behind its back is audited and put back.
    let labs = known_labs(&lab.daemon);
    assert!(labs.contains(&lab.name), "the daemon lost the lab: {labs}");
    let audits = || -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&lab.daemon.ovslab_ok(&["status", &lab.name, "--json"])).unwrap();
        assert_eq!(status["healthy"], true, "{status}");
        status["audits"]["count"].as_u64().unwrap_or(0)
    };
    let first = audits();
    let qvo = lab.plug("instance3").qvo;
    run(
        "ip",
        &["-n", &lab.ns("compute2"), "link", "del", qvo.as_str()],
    );
    wait_until(Duration::from_secs(10), "audits of the new lab", || {
        audits() > first
    });
    wait_until(Duration::from_secs(10), "the qvo back", || {
        run_raw("ip", &["-n", &lab.ns("compute2"), "link", "show", &qvo])
            .status
            .success()
    });
    assert!(lab.ping("instance1", "192.168.1.12", 2));
}

/// The lab's manifest, as JSON.
fn manifest(lab: &Lab) -> serde_json::Value {
    let file = lab.daemon.run_dir.join(&lab.name).join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

fn write_manifest(lab: &Lab, value: &serde_json::Value) {
    let file = lab.daemon.run_dir.join(&lab.name).join("manifest.json");
    std::fs::write(file, serde_json::to_string(value).unwrap()).unwrap();
}

#[test]
#[ignore = "needs root"]
fn the_manifest_names_every_namespace_with_its_inode_and_survives_a_killed_daemon() {
    require_root("the_manifest_names_every_namespace_with_its_inode_and_survives_a_killed_daemon");
    let mut lab = Lab::seed();
    let recorded = manifest(&lab)["namespaces"].clone();
    let mut namespaces = lab.namespaces();
    namespaces.sort();
    let names: Vec<String> = recorded.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, namespaces);
    for ns in &namespaces {
        let inode = std::fs::metadata(Path::new("/run/netns").join(ns))
            .unwrap()
            .ino();
        assert_eq!(recorded[ns].as_u64(), Some(inode), "{ns}");
    }

    // Killed between promising a namespace and writing its inode down: the
    // next daemon adopts it. And a promised namespace whose file was made
    // but never mounted goes.
    let mut edited = manifest(&lab);
    let instance1 = lab.ns("instance1");
    edited["namespaces"][&instance1] = serde_json::Value::Null;
    let ghost = lab.ns("ghost");
    std::fs::write(Path::new("/run/netns").join(&ghost), "").unwrap();
    edited["namespaces"][&ghost] = serde_json::Value::Null;
    write_manifest(&lab, &edited);
    lab.daemon.kill9();
    lab.daemon.restart(&["--audit-interval", "0"]);
    let up = lab.up();
    assert!(up.contains(&format!("adopt namespace {instance1}")), "{up}");
    assert!(
        up.contains(&format!("remove stale namespace file {ghost}")),
        "{up}"
    );
    assert!(!up.contains("create namespace"), "{up}");
    assert!(!Path::new("/run/netns").join(&ghost).exists());
    assert!(manifest(&lab)["namespaces"][&instance1].as_u64().is_some());

    // A lab of an ovslab that kept no manifest is adopted with one.
    std::fs::remove_file(lab.daemon.run_dir.join(&lab.name).join("manifest.json")).unwrap();
    lab.daemon.kill9();
    lab.daemon.restart(&["--audit-interval", "0"]);
    assert!(known_labs(&lab.daemon).contains(&lab.name));
    assert_eq!(manifest(&lab)["namespaces"], recorded);
    assert!(lab.ping("instance1", "192.168.1.12", 2));

    // Killed in a delete between unmounting a namespace and removing its
    // file: the plain file left is the lab's to remove.
    let instance2 = lab.ns("instance2");
    run("umount", &["-l", &format!("/run/netns/{instance2}")]);
    let down = lab.daemon.ovslab_ok(&["down", "-v", &lab.name]);
    assert!(
        down.contains(&format!("removed stale namespace file {instance2}")),
        "{down}"
    );
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert!(!lab.daemon.run_dir.join(&lab.name).exists());
}

#[test]
#[ignore = "needs root"]
fn a_run_directory_too_long_for_the_labs_sockets_refuses_up_before_anything_is_made() {
    require_root(
        "a_run_directory_too_long_for_the_labs_sockets_refuses_up_before_anything_is_made",
    );
    // `--on-exit down`: an `up` wrongly let through leaves nothing.
    let daemon = Daemon::start_with(
        &unique_name("t"),
        &["--audit-interval", "0", "--on-exit", "down"],
    );
    // 61 characters: with the node `compute1`, its sockets fit under the
    // default /run/ovslab (so the file is valid), not under this daemon's
    // longer run directory.
    let unique = unique_name("t");
    let name = format!("{unique}{}", "x".repeat(61 - unique.len()));
    let file = daemon.dir.join("long.yaml");
    std::fs::write(
        &file,
        ovslab_integration_tests::rename_lab(ovslab_topology::SEED_YAML, &name),
    )
    .unwrap();
    daemon.ovslab_ok(&["validate", file.to_str().unwrap()]);
    let out = daemon.ovslab(&["up", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "up of {name} under {}",
        daemon.run_dir.display()
    );
    let said = stderr(&out);
    assert!(said.contains("socket"), "{said}");
    let namespaces = run("ip", &["netns", "list"]);
    assert!(!namespaces.contains(&name), "{namespaces}");
    assert!(!daemon.run_dir.join(&name).exists());
    assert!(!known_labs(&daemon).contains(&name));
}
