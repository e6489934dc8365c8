//! The client against a real, private `ovsdb-server`, with `ovs-vsctl` as
//! the independent observer of what the client wrote. They need no root,
//! only Open vSwitch installed (`build.rs` sets `cfg(ovsdb_server)` when it
//! is): without it they are reported as ignored.

use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use ovslab_ovsdb::{Client, OvsdbError};
use ovslab_testkit::OvsSandbox;
use serde_json::{Value, json};

const DB: &str = "Open_vSwitch";

async fn connect(sandbox: &OvsSandbox) -> Client {
    Client::connect(&sandbox.db_socket())
        .await
        .expect("connect to the sandbox's ovsdb-server")
}

/// Bridge names listed by `ovs-vsctl list-br`.
fn vsctl_bridges(sandbox: &OvsSandbox) -> Vec<String> {
    sandbox
        .vsctl(&["list-br"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The names in a monitor's `<table-updates>` for Bridge, new rows only.
fn new_bridge_names(updates: &Value) -> Vec<String> {
    let mut names: Vec<String> = updates["Bridge"]
        .as_object()
        .map(|rows| {
            rows.values()
                .filter_map(|u| u["new"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn list_dbs_names_open_vswitch() {
    let sandbox = OvsSandbox::start_ovsdb();
    let client = connect(&sandbox).await;
    let dbs = client.list_dbs().await.expect("list_dbs");
    assert!(dbs.iter().any(|d| d == DB), "databases: {dbs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn echo_is_answered() {
    let sandbox = OvsSandbox::start_ovsdb();
    let client = connect(&sandbox).await;
    client.echo().await.expect("echo");
    client.clone().echo().await.expect("echo through a clone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn a_transaction_adds_a_bridge_that_vsctl_sees() {
    let sandbox = OvsSandbox::start_ovsdb();
    sandbox.vsctl(&["init"]);
    let client = connect(&sandbox).await;
    let results = client
        .transact(
            DB,
            vec![
                json!({"op": "insert", "table": "Interface",
                       "row": {"name": "br-test", "type": "internal"}, "uuid-name": "iface"}),
                json!({"op": "insert", "table": "Port",
                       "row": {"name": "br-test", "interfaces": ["named-uuid", "iface"]},
                       "uuid-name": "port"}),
                json!({"op": "insert", "table": "Bridge",
                       "row": {"name": "br-test", "ports": ["named-uuid", "port"]},
                       "uuid-name": "bridge"}),
                json!({"op": "mutate", "table": DB, "where": [],
                       "mutations": [["bridges", "insert", ["set", [["named-uuid", "bridge"]]]]]}),
                json!({"op": "comment", "comment": "ovslab-ovsdb test"}),
            ],
        )
        .await
        .expect("transact");
    assert_eq!(results.len(), 5, "results: {results:?}");
    assert_eq!(results[2]["uuid"][0], "uuid", "insert returns the new uuid");
    assert_eq!(results[3]["count"], 1, "the one root row was mutated");
    assert_eq!(vsctl_bridges(&sandbox), vec!["br-test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn a_bad_operation_is_named_by_its_index() {
    let sandbox = OvsSandbox::start_ovsdb();
    let client = connect(&sandbox).await;
    let err = client
        .transact(
            DB,
            vec![
                json!({"op": "select", "table": "Bridge", "where": []}),
                json!({"op": "insert", "table": "No_Such_Table", "row": {}}),
            ],
        )
        .await
        .expect_err("the second operation is invalid");
    let message = err.to_string();
    match err {
        OvsdbError::Transaction {
            index, op, error, ..
        } => {
            assert_eq!((index, op.as_str()), (1, "insert"), "{message}");
            assert!(!error.is_empty(), "{message}");
        }
        other => panic!("expected a transaction error, got {other:?}"),
    }
    assert!(message.contains("operation 1 (insert)"), "{message}");

    // The connection stays usable after a failed transaction.
    client
        .echo()
        .await
        .expect("echo after a failed transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn a_failed_commit_is_named_commit() {
    let sandbox = OvsSandbox::start_ovsdb();
    let client = connect(&sandbox).await;
    // Every operation succeeds, but the row points at a Port that does not
    // exist, so the commit fails and the server appends one more result.
    let missing = "2d5b5a56-4f9e-4f5f-9b8b-1b2d3c4e5f60";
    let err = client
        .transact(
            DB,
            vec![json!({"op": "insert", "table": "Bridge",
                        "row": {"name": "br-x", "ports": ["uuid", missing]}})],
        )
        .await
        .expect_err("referential integrity violation");
    match err {
        OvsdbError::Transaction {
            index,
            op,
            error,
            details,
        } => {
            assert_eq!((index, op.as_str()), (1, "commit"));
            assert_eq!(error, "referential integrity violation");
            assert!(details.is_some_and(|d| d.contains(missing)));
        }
        other => panic!("expected a transaction error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn a_monitor_sees_initial_rows_then_vsctl_changes() {
    let sandbox = OvsSandbox::start_ovsdb();
    sandbox.vsctl(&["init"]);
    sandbox.vsctl(&["add-br", "br-one"]);
    let client = connect(&sandbox).await;
    let mut monitor = client
        .monitor(DB, json!({"Bridge": {"columns": ["name"]}}))
        .await
        .expect("monitor");
    assert_eq!(new_bridge_names(monitor.initial()), vec!["br-one"]);

    sandbox.vsctl(&["add-br", "br-two"]);
    let update = tokio::time::timeout(Duration::from_secs(10), monitor.next())
        .await
        .expect("an update within 10 s")
        .expect("the connection is open");
    assert_eq!(new_bridge_names(&update), vec!["br-two"]);

    monitor.cancel().await.expect("monitor_cancel");
    // Changes after the cancel reach nobody, and the connection carries on.
    sandbox.vsctl(&["add-br", "br-three"]);
    client.echo().await.expect("echo after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(ovsdb_server),
    ignore = "needs ovsdb-server (package openvswitch-switch)"
)]
async fn concurrent_transactions_get_their_own_answers() {
    let sandbox = OvsSandbox::start_ovsdb();
    let client = connect(&sandbox).await;
    // Each transaction inserts a bridge named after its index and selects it
    // back; the unreferenced row is garbage-collected at commit (Bridge is
    // not a root table), so the database stays empty.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let name = format!("br-c{i}");
            let results = client
                .transact(
                    DB,
                    vec![
                        json!({"op": "insert", "table": "Bridge", "row": {"name": name}}),
                        json!({"op": "select", "table": "Bridge",
                               "where": [["name", "==", name]], "columns": ["name"]}),
                    ],
                )
                .await;
            (name, results)
        }
    });
    for (name, results) in join_all(calls).await {
        let results = results.unwrap_or_else(|e| panic!("transaction for {name}: {e}"));
        assert_eq!(
            results[1]["rows"],
            json!([{"name": name}]),
            "answer for {name}"
        );
    }
    assert!(vsctl_bridges(&sandbox).is_empty());
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error_naming_the_path() {
    // No server and no root needed: nothing listens at this path.
    let path = Path::new("/nonexistent/ovslab-ovsdb-test/db.sock");
    let err = Client::connect(path)
        .await
        .expect_err("nothing listens there");
    assert_eq!(
        err.to_string(),
        "cannot connect to OVSDB at /nonexistent/ovslab-ovsdb-test/db.sock"
    );
    match err {
        OvsdbError::Connect { path: p, source } => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
