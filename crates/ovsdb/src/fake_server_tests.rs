//! The client against a scripted server on an in-memory stream: echo
//! probes, out-of-order replies, monitor routing and every way the
//! connection can end, without root or a real `ovsdb-server`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::codec::{MAX_MESSAGE, MessageSplitter};
use crate::connection::MAX_UNSENT;
use crate::{Client, OvsdbError};

/// The server end of an in-memory connection.
struct FakeServer {
    stream: DuplexStream,
    splitter: MessageSplitter,
}

impl FakeServer {
    fn start() -> (Client, FakeServer) {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let client = Client::over(client_end, "fake".into());
        let server = FakeServer {
            stream: server_end,
            splitter: MessageSplitter::default(),
        };
        (client, server)
    }

    /// The next message the client sent.
    async fn recv(&mut self) -> Value {
        let read = async {
            loop {
                if let Some(m) = self
                    .splitter
                    .next_message()
                    .expect("client sends valid framing")
                {
                    return serde_json::from_slice(&m).expect("client sends valid JSON");
                }
                self.splitter.buffer_mut().reserve(1024);
                let n = self
                    .stream
                    .read_buf(self.splitter.buffer_mut())
                    .await
                    .expect("read from client");
                assert!(n > 0, "client closed the connection");
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("client sent nothing within 5 s")
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to client");
    }

    async fn send(&mut self, message: Value) {
        self.send_bytes(message.to_string().as_bytes()).await;
    }

    /// Replies to `request` with `result`.
    async fn reply(&mut self, request: &Value, result: Value) {
        self.send(json!({"id": request["id"], "result": result, "error": null}))
            .await;
    }
}

#[tokio::test]
async fn answers_the_servers_echo_probe_with_its_params() {
    let (_client, mut server) = FakeServer::start();
    server
        .send(json!({"id": "echo", "method": "echo", "params": ["probe", 1]}))
        .await;
    assert_eq!(
        server.recv().await,
        json!({"id": "echo", "result": ["probe", 1], "error": null})
    );
}

#[tokio::test]
async fn unknown_server_requests_get_an_error_response() {
    let (_client, mut server) = FakeServer::start();
    server
        .send(json!({"id": 9, "method": "lock", "params": []}))
        .await;
    let answer = server.recv().await;
    assert_eq!(
        (&answer["id"], &answer["error"]),
        (&json!(9), &json!("unknown method"))
    );
}

#[tokio::test]
async fn replies_in_any_order_reach_their_own_callers() {
    let (client, mut server) = FakeServer::start();
    let calls = tokio::spawn({
        let client = client.clone();
        async move { tokio::join!(client.list_dbs(), client.echo()) }
    });
    let first = server.recv().await;
    let second = server.recv().await;
    let (dbs, echo) = if first["method"] == "list_dbs" {
        (first, second)
    } else {
        (second, first)
    };
    assert_ne!(dbs["id"], echo["id"], "request ids must differ");
    // Echo first, split across writes, then list_dbs.
    let echo_reply = json!({"id": echo["id"], "result": echo["params"], "error": null}).to_string();
    for b in echo_reply.as_bytes() {
        server.send_bytes(&[*b]).await;
    }
    server.reply(&dbs, json!(["Open_vSwitch", "_Server"])).await;
    let (dbs, echo) = calls.await.expect("join");
    assert_eq!(dbs.expect("list_dbs"), vec!["Open_vSwitch", "_Server"]);
    echo.expect("echo");
}

#[tokio::test]
async fn an_error_response_names_the_method() {
    let (client, mut server) = FakeServer::start();
    let call = tokio::spawn(async move { client.list_dbs().await });
    let request = server.recv().await;
    server
        .send(json!({"id": request["id"], "result": null, "error": {"error": "oops", "details": "why"}}))
        .await;
    let err = call.await.expect("join").expect_err("rpc error");
    assert_eq!(err.to_string(), "OVSDB list_dbs request failed: oops: why");
}

#[tokio::test]
async fn transact_sends_db_then_ops_and_reports_failed_operations() {
    let (client, mut server) = FakeServer::start();
    let call = tokio::spawn(async move {
        client
            .transact(
                "Open_vSwitch",
                vec![
                    json!({"op": "comment", "comment": "x"}),
                    json!({"op": "insert"}),
                ],
            )
            .await
    });
    let request = server.recv().await;
    assert_eq!(request["method"], "transact");
    assert_eq!(
        request["params"],
        json!(["Open_vSwitch", {"op": "comment", "comment": "x"}, {"op": "insert"}])
    );
    server
        .reply(
            &request,
            json!([{}, {"error": "syntax error", "details": "no table"}]),
        )
        .await;
    match call.await.expect("join") {
        Err(OvsdbError::Transaction { index: 1, op, .. }) => assert_eq!(op, "insert"),
        other => panic!("expected a transaction error at 1, got {other:?}"),
    }
}

#[tokio::test]
async fn updates_reach_their_monitor_and_cancel_stops_them() {
    let (client, mut server) = FakeServer::start();
    let monitor = tokio::spawn({
        let client = client.clone();
        async move { client.monitor("Open_vSwitch", json!({"Bridge": {}})).await }
    });
    let request = server.recv().await;
    assert_eq!(request["method"], "monitor");
    let id = request["params"][1].clone();
    server
        .reply(&request, json!({"Bridge": {"u1": {"new": {}}}}))
        .await;
    let mut monitor = monitor.await.expect("join").expect("monitor");
    assert_eq!(monitor.initial(), &json!({"Bridge": {"u1": {"new": {}}}}));
    assert_eq!(json!(monitor.id()), id);

    server
        .send(json!({"id": null, "method": "update", "params": ["someone-else", {"x": 1}]}))
        .await;
    server
        .send(json!({"id": null, "method": "update", "params": [id, {"Bridge": {"u2": {}}}]}))
        .await;
    let update = tokio::time::timeout(Duration::from_secs(5), monitor.next())
        .await
        .expect("update within 5 s");
    assert_eq!(update, Some(json!({"Bridge": {"u2": {}}})));

    let cancel = tokio::spawn(monitor.cancel());
    let request = server.recv().await;
    assert_eq!(
        (&request["method"], &request["params"]),
        (&json!("monitor_cancel"), &json!([id]))
    );
    server.reply(&request, json!({})).await;
    cancel.await.expect("join").expect("cancel");

    // Late updates for the cancelled monitor are dropped; the connection
    // carries on.
    server
        .send(json!({"id": null, "method": "update", "params": [id, {}]}))
        .await;
    let echo = tokio::spawn(async move { client.echo().await });
    let request = server.recv().await;
    assert_eq!(request["method"], "echo");
    server.reply(&request, request["params"].clone()).await;
    echo.await.expect("join").expect("echo");
}

#[tokio::test]
async fn a_dropped_monitor_is_cancelled_on_its_next_update() {
    let (client, mut server) = FakeServer::start();
    let monitor = tokio::spawn({
        let client = client.clone();
        async move { client.monitor("Open_vSwitch", json!({})).await }
    });
    let request = server.recv().await;
    let id = request["params"][1].clone();
    server.reply(&request, json!({})).await;
    drop(monitor.await.expect("join").expect("monitor"));
    server
        .send(json!({"id": null, "method": "update", "params": [id, {}]}))
        .await;
    let cancel = server.recv().await;
    assert_eq!(
        (&cancel["method"], &cancel["params"]),
        (&json!("monitor_cancel"), &json!([id]))
    );
}

#[tokio::test]
async fn a_closed_connection_fails_pending_and_later_calls() {
    let (client, mut server) = FakeServer::start();
    let monitor = tokio::spawn({
        let client = client.clone();
        async move { client.monitor("Open_vSwitch", json!({})).await }
    });
    let request = server.recv().await;
    server.reply(&request, json!({})).await;
    let mut monitor = monitor.await.expect("join").expect("monitor");

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    server.recv().await;
    drop(server);
    assert!(matches!(
        pending.await.expect("join"),
        Err(OvsdbError::Closed)
    ));
    assert!(matches!(client.echo().await, Err(OvsdbError::Closed)));
    assert_eq!(monitor.next().await, None);
}

#[tokio::test]
async fn garbage_on_the_stream_closes_the_connection() {
    let (client, mut server) = FakeServer::start();
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    server.recv().await;
    server.send_bytes(b"{}  not json").await;
    assert!(matches!(
        pending.await.expect("join"),
        Err(OvsdbError::Closed)
    ));
}

#[tokio::test]
async fn a_server_that_never_answers_fails_each_call_at_its_deadline() {
    let (client, mut server) = FakeServer::start();
    let client = client.with_deadline(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = client
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "select", "table": "Bridge", "where": []})],
        )
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            err,
            OvsdbError::Timeout {
                method: "transact",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        err.to_string(),
        "OVSDB did not answer the transact request within 0.2 s"
    );
    // The late answer goes to nobody, and the connection still serves.
    let late = server.recv().await;
    server.reply(&late, json!([{"rows": []}])).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.echo().await }
    });
    let echo = server.recv().await;
    server.reply(&echo, echo["params"].clone()).await;
    call.await.expect("join").expect("echo after a timeout");
    // Silence again: echo times out too.
    assert!(client.echo().await.expect_err("silent").is_timeout());
}

#[tokio::test]
async fn connecting_to_a_stopped_server_is_bounded() {
    // A listening socket nobody accepts on: what a stopped ovsdb-server
    // leaves. The connect completes (the kernel queues it), the first
    // request is never answered.
    let dir = std::env::temp_dir().join(format!("ovslab-ovsdb-stopped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("db.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let started = std::time::Instant::now();
    let outcome = async {
        let client = Client::connect_with_deadline(&path, Duration::from_millis(200)).await?;
        client.echo().await
    }
    .await;
    let err = outcome.expect_err("nobody answers");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that begins an answer and never ends it: the client closes
/// the connection once the message passes `MAX_MESSAGE`, and the caller
/// hears `Closed` at once. It once buffered whatever the server sent, for
/// as long as it sent it (a monitor's connection has no deadline).
#[tokio::test]
async fn a_message_longer_than_the_limit_closes_the_connection() {
    let (client, mut server) = FakeServer::start();
    let client = client.with_deadline(Duration::from_secs(30));
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.list_dbs().await }
    });
    let request = server.recv().await;
    let start = format!(r#"{{"id":{},"result":["#, request["id"]);
    server.send_bytes(start.as_bytes()).await;
    let string = [b"\"".as_slice(), &[b'a'; 64 * 1024]].concat();
    let mut sent = start.len();
    let mut chunk = string.as_slice();
    let closed = loop {
        if server.stream.write_all(chunk).await.is_err() {
            break true;
        }
        sent += chunk.len();
        chunk = &string[1..];
        if sent > 2 * MAX_MESSAGE {
            break false;
        }
    };
    assert!(
        closed,
        "the client still read after {sent} bytes of one message"
    );
    assert!(
        sent <= MAX_MESSAGE + 256 * 1024,
        "closed after {sent} bytes"
    );
    assert!(matches!(
        pending.await.expect("join"),
        Err(OvsdbError::Closed)
    ));
    assert!(matches!(client.echo().await, Err(OvsdbError::Closed)));
}

/// A server that sends `echo` requests and never reads the answers: the
/// client closes the connection once `MAX_UNSENT` bytes wait to be sent,
/// instead of queueing answers for as long as the server asks.
#[tokio::test]
async fn a_server_that_reads_nothing_is_cut_off_when_too_much_waits_for_it() {
    let (client, mut server) = FakeServer::start();
    let echo = json!({"id": "echo", "method": "echo", "params": ["x".repeat(60 * 1024)]})
        .to_string()
        .into_bytes();
    let mut sent = 0;
    let closed = loop {
        let write = server.stream.write_all(&echo);
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(())) => sent += echo.len(),
            Ok(Err(_)) => break true,
            // Nobody reads, yet the connection is not closed.
            Err(_) => break false,
        }
        if sent > 2 * MAX_UNSENT {
            break false;
        }
    };
    assert!(
        closed,
        "the client did not close after {sent} bytes of echo requests"
    );
    assert!(matches!(client.echo().await, Err(OvsdbError::Closed)));
}
