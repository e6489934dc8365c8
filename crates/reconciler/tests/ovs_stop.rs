//! Stopping a node's Open vSwitch finds every daemon this process started,
//! even one that has not written its pidfile yet: a converge that fails a
//! moment after starting it undoes what it made, and a daemon it missed
//! would outlive its lab.

use std::time::{Duration, Instant};

use ovslab_reconciler::ovs_process::{NodeOvs, OvsDaemon};
use ovslab_testkit::{TestNetns, require_root, unique_name};

/// Whether `pid` is still an `ovs-vswitchd`.
fn is_vswitchd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == OvsDaemon::OvsVswitchd.program())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_vswitchd_without_its_pidfile_yet_is_stopped_by_its_record() {
    require_root("a_vswitchd_without_its_pidfile_yet_is_stopped_by_its_record");
    let ns = TestNetns::new();
    let dir = std::env::temp_dir().join(unique_name("ovslab-stop-"));
    let node = NodeOvs {
        node: "compute1".into(),
        namespace: ns.name.clone(),
        rundir: dir.join("compute1"),
    };
    std::fs::create_dir_all(&node.rundir).unwrap();
    // No database: it runs, trying to connect to one.
    assert_eq!(
        node.ensure_vswitchd().unwrap(),
        vec![OvsDaemon::OvsVswitchd]
    );
    let pidfile = node.rundir.join("ovs-vswitchd.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pidfile from ovs-vswitchd");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // As just after its start: no pidfile written yet.
    std::fs::remove_file(&pidfile).unwrap();
    assert_eq!(node.pid(OvsDaemon::OvsVswitchd), None);

    let stopped = node.stop().await;
    let gone = !is_vswitchd(pid);
    if !gone {
        // SAFETY: the vswitchd this test started, checked just above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "ovs-vswitchd (pid {pid}) outlived stop: {stopped:?}");
    assert_eq!(
        stopped,
        [format!("stopped ovs-vswitchd of compute1 (pid {pid})")]
    );
}
