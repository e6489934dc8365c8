//! The routing notices of many namespaces, spread over several sockets
//! (each socket's namespace gives ids to a bounded number of them): every
//! watched namespace is still heard, each under its own part, and a socket
//! left with no namespace to hear is closed.

use std::time::{Duration, Instant};

use ovslab_reconciler::watch::{LabWatch, Part, Watchers};
use ovslab_testkit::{TestNetns, require_root, unique_name};

/// Waits until the notices marked every node in `want` of `lab`.
fn heard(watchers: &Watchers, lab: &str, want: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut marked = std::collections::BTreeSet::new();
    while Instant::now() < deadline {
        if let Some(dirty) = watchers.take_dirty().remove(lab) {
            marked.extend(dirty.nodes);
        }
        if want.iter().all(|n| marked.contains(n)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("heard {marked:?}, wanted {want:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn namespaces_beyond_one_sockets_share_are_heard_on_the_next() {
    require_root("namespaces_beyond_one_sockets_share_are_heard_on_the_next");
    let watchers = Watchers::with_ids_per_socket(2);
    watchers.enable();
    let namespaces: Vec<TestNetns> = (0..5).map(|_| TestNetns::new()).collect();
    let nodes: Vec<String> = (0..5).map(|i| format!("node{i}")).collect();
    let lab = unique_name("w");
    watchers.watch_lab(LabWatch {
        lab: lab.clone(),
        whole: true,
        namespaces: namespaces
            .iter()
            .zip(&nodes)
            .map(|(ns, node)| (ns.name.clone(), Part::Node(node.clone()), false))
            .collect(),
        nodes: Vec::new(),
    });
    assert_eq!(watchers.routing_sockets(), 3, "5 namespaces, 2 per socket");
    for ns in &namespaces {
        assert!(
            watchers.last_notice(&ns.name).is_some(),
            "{} is heard",
            ns.name
        );
    }
    // Whatever watching them stirred up is not what is looked for.
    tokio::time::sleep(Duration::from_millis(100)).await;
    watchers.take_dirty();

    for ns in &namespaces {
        ns.exec(&["ip", "link", "set", "lo", "mtu", "9000"]);
    }
    let (w, l, n) = (&watchers, lab.as_str(), nodes.clone());
    tokio::task::block_in_place(|| heard(w, l, &n)).unwrap();

    // One namespace's change marks its own node only, whichever socket
    // heard it.
    namespaces[4].exec(&["ip", "link", "add", "v0", "type", "veth", "peer", "v1"]);
    tokio::task::block_in_place(|| heard(w, l, &n[4..])).unwrap();
    let others = watchers.take_dirty().remove(l).unwrap_or_default();
    assert!(
        others.nodes.iter().all(|node| node == "node4"),
        "{others:?}"
    );

    // Forgotten, the lab leaves one socket (for the next), not three.
    watchers.forget(&lab);
    assert_eq!(watchers.routing_sockets(), 1);
    for ns in &namespaces {
        assert!(watchers.last_notice(&ns.name).is_none());
    }
}
