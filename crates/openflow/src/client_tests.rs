//! The client against a scripted fake switch on a Unix socket: protocol
//! behaviour that needs no root and no OVS (echo, xid routing, multipart
//! gathering, errors in a batch, timeouts, version refusal).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::*;
use crate::action::Action;
use crate::consts::OFPMPF_REPLY_MORE;
use crate::message::{HelloElement, MultipartReply, MultipartReplyBody, MultipartRequestBody};
use crate::oxm::Match;

/// A socket path in a fresh temporary directory, removed on drop.
struct TempSocket {
    dir: PathBuf,
}

impl TempSocket {
    fn new(name: &str) -> TempSocket {
        let dir =
            std::env::temp_dir().join(format!("ovslab-openflow-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempSocket { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("br.mgmt")
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The switch side of one connection.
struct FakeSwitch {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl FakeSwitch {
    async fn accept(listener: &UnixListener) -> FakeSwitch {
        let (stream, _) = listener.accept().await.expect("accept");
        FakeSwitch {
            stream,
            decoder: FrameDecoder::new(),
        }
    }

    async fn recv(&mut self) -> (u32, Message) {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self
                .decoder
                .next_message()
                .expect("client sends valid messages")
            {
                return m;
            }
            let n = self.stream.read(&mut buf).await.expect("read");
            assert_ne!(n, 0, "client closed the connection");
            self.decoder.extend(&buf[..n]);
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, xid: u32, msg: Message) {
        let bytes = msg.encode(xid).expect("encode");
        self.send_bytes(&bytes).await;
    }

    /// Sends the switch's hello and checks the client's.
    async fn handshake(&mut self) {
        self.send(1, Message::Hello(ovs_hello())).await;
        let (_, msg) = self.recv().await;
        assert_eq!(msg, Message::Hello(Hello::of13()));
    }
}

/// What OVS sends when it allows OpenFlow 1.0 to 1.5.
fn ovs_hello() -> Hello {
    Hello {
        version: 6,
        elements: vec![HelloElement::VersionBitmap(vec![0b111_1110])],
    }
}

async fn setup(name: &str) -> (TempSocket, Client, FakeSwitch) {
    let sock = TempSocket::new(name);
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    let connecting =
        tokio::spawn(
            async move { Client::connect_with_timeout(&path, Duration::from_secs(5)).await },
        );
    let mut switch = FakeSwitch::accept(&listener).await;
    switch.handshake().await;
    let client = connecting.await.expect("join").expect("connect");
    (sock, client, switch)
}

fn features() -> FeaturesReply {
    FeaturesReply {
        datapath_id: 0x42,
        n_buffers: 0,
        n_tables: 254,
        auxiliary_id: 0,
        capabilities: 0,
        reserved: 0,
    }
}

#[tokio::test]
async fn answers_echo_and_routes_features_by_xid() {
    let (_sock, client, mut switch) = setup("echo").await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.features().await }
    });
    let (xid, msg) = switch.recv().await;
    assert_eq!(msg, Message::FeaturesRequest);
    // An echo request and an unrelated message arrive before the reply.
    switch
        .send(0xee, Message::EchoRequest(b"ping".to_vec()))
        .await;
    switch
        .send(
            0,
            Message::Unknown {
                msg_type: 12,
                body: vec![0; 8],
            },
        )
        .await;
    assert_eq!(
        switch.recv().await,
        (0xee, Message::EchoReply(b"ping".to_vec()))
    );
    switch.send(xid, Message::FeaturesReply(features())).await;
    let got = asking.await.expect("join").expect("features");
    assert_eq!(got.datapath_id, 0x42);
}

fn stats(priority: u16) -> FlowStats {
    FlowStats {
        table_id: 0,
        duration_sec: 1,
        duration_nsec: 0,
        priority,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: 0,
        cookie: 0,
        packet_count: 0,
        byte_count: 0,
        match_: Match::new().in_port(u32::from(priority)),
        instructions: vec![],
    }
}

#[tokio::test]
async fn gathers_multipart_parts_sent_byte_by_byte_and_merged() {
    let (_sock, client, mut switch) = setup("multipart").await;
    let dumping = tokio::spawn(async move { client.dump_flows(FlowStatsRequest::default()).await });
    let (xid, msg) = switch.recv().await;
    let Message::MultipartRequest(req) = msg else {
        panic!("expected a multipart request, got {msg:?}");
    };
    assert_eq!(
        req.body,
        MultipartRequestBody::Flow(FlowStatsRequest::default())
    );
    let part = |flags, flows| {
        Message::MultipartReply(MultipartReply {
            flags,
            body: MultipartReplyBody::Flow(flows),
        })
        .encode(xid)
        .expect("encode")
    };
    // First part one byte at a time, the next two in a single write.
    for b in part(OFPMPF_REPLY_MORE, vec![stats(1), stats(2)]) {
        switch.send_bytes(&[b]).await;
    }
    let mut merged = part(OFPMPF_REPLY_MORE, vec![stats(3)]);
    merged.extend(part(0, vec![stats(4)]));
    switch.send_bytes(&merged).await;
    let flows = dumping.await.expect("join").expect("dump");
    let priorities: Vec<u16> = flows.iter().map(|f| f.priority).collect();
    assert_eq!(priorities, [1, 2, 3, 4]);
}

#[tokio::test]
async fn errors_in_a_batch_carry_their_index() {
    let (_sock, client, mut switch) = setup("batch").await;
    let mods: Vec<FlowMod> = (0..3)
        .map(|i| FlowMod::add(0, i, Match::new(), vec![Action::normal()]))
        .collect();
    let applying = tokio::spawn({
        let client = client.clone();
        let mods = mods.clone();
        async move { client.apply(mods).await }
    });
    let mut xids = Vec::new();
    for fm in &mods {
        let (xid, msg) = switch.recv().await;
        assert_eq!(msg, Message::FlowMod(fm.clone()));
        xids.push(xid);
    }
    let (barrier_xid, msg) = switch.recv().await;
    assert_eq!(msg, Message::BarrierRequest);
    let bad = ErrorMsg {
        error_type: 5,
        code: 1,
        data: vec![],
    };
    switch.send(xids[2], Message::Error(bad.clone())).await;
    switch.send(barrier_xid, Message::BarrierReply).await;
    let err = applying.await.expect("join").expect_err("rejected");
    match err {
        OpenflowError::Rejected { errors } => assert_eq!(errors, [(2, bad)]),
        other => panic!("expected Rejected, got {other:?}"),
    }

    // The next batch is clean.
    let applying = tokio::spawn(async move { client.barrier().await });
    let (xid, msg) = switch.recv().await;
    assert_eq!(msg, Message::BarrierRequest);
    switch.send(xid, Message::BarrierReply).await;
    applying.await.expect("join").expect("barrier");
}

#[tokio::test]
async fn a_switch_without_openflow13_is_refused() {
    let sock = TempSocket::new("version");
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    let connecting = tokio::spawn(async move { Client::connect(&path).await });
    let mut switch = FakeSwitch::accept(&listener).await;
    switch
        .send(
            1,
            Message::Hello(Hello {
                version: 1,
                elements: vec![],
            }),
        )
        .await;
    let _ = switch.recv().await; // our hello
    let (_, refusal) = switch.recv().await;
    assert!(
        matches!(
            refusal,
            Message::Error(ErrorMsg {
                error_type: 0,
                code: 0,
                ..
            })
        ),
        "{refusal:?}"
    );
    let err = connecting.await.expect("join").expect_err("version");
    assert!(
        matches!(&err, OpenflowError::Version { peer_versions } if peer_versions == &[1]),
        "{err:?}"
    );
}

#[tokio::test]
async fn silence_times_out_and_a_closed_switch_is_reported() {
    let sock = TempSocket::new("timeout");
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    let connecting = tokio::spawn(async move {
        Client::connect_with_timeout(&path, Duration::from_millis(200)).await
    });
    let mut switch = FakeSwitch::accept(&listener).await;
    switch.handshake().await;
    let client = connecting.await.expect("join").expect("connect");

    let err = client.features().await.expect_err("no answer");
    assert!(
        matches!(
            err,
            OpenflowError::Timeout {
                request: "features request",
                ..
            }
        ),
        "{err:?}"
    );
    // The late reply is ignored and the connection keeps working.
    let (xid, _) = switch.recv().await;
    switch.send(xid, Message::FeaturesReply(features())).await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.features().await }
    });
    let (xid, _) = switch.recv().await;
    switch.send(xid, Message::FeaturesReply(features())).await;
    asking.await.expect("join").expect("features");

    drop(switch);
    let err = client.features().await.expect_err("closed");
    assert!(matches!(err, OpenflowError::Closed), "{err:?}");
}

#[tokio::test]
async fn first_message_must_be_hello() {
    let sock = TempSocket::new("nohello");
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    let connecting = tokio::spawn(async move { Client::connect(&path).await });
    let mut switch = FakeSwitch::accept(&listener).await;
    switch.send(1, Message::BarrierReply).await;
    let err = connecting.await.expect("join").expect_err("not a hello");
    assert!(matches!(err, OpenflowError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn a_silent_switch_bounds_the_handshake_and_every_batch() {
    let sock = TempSocket::new("silent");
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    // Accepted, never greeted: a stopped vswitchd's socket still accepts.
    let connecting = tokio::spawn(async move {
        Client::connect_with_timeout(&path, Duration::from_millis(200)).await
    });
    let _silent = listener.accept().await.expect("accept");
    let err = connecting.await.expect("join").expect_err("no hello");
    assert!(
        matches!(
            err,
            OpenflowError::Timeout {
                request: "hello",
                ..
            }
        ),
        "{err:?}"
    );

    let path = sock.path();
    let connecting = tokio::spawn(async move {
        Client::connect_with_timeout(&path, Duration::from_millis(200)).await
    });
    let mut switch = FakeSwitch::accept(&listener).await;
    switch.handshake().await;
    let client = connecting.await.expect("join").expect("connect");
    let started = std::time::Instant::now();
    let err = client.barrier().await.expect_err("no barrier reply");
    assert!(
        matches!(
            err,
            OpenflowError::Timeout {
                request: "flow batch and its barrier",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = client
        .dump_flows(FlowStatsRequest::default())
        .await
        .expect_err("no stats reply");
    assert!(err.is_timeout(), "{err:?}");
}

/// A switch that answers a flow dump with parts flagged "more" for ever:
/// the dump fails once the reply passes `MAX_DUMP_BYTES`, without waiting
/// for its deadline, and the connection still serves. It once gathered
/// every part for as long as the switch sent them.
#[tokio::test]
async fn a_dump_that_never_ends_fails_past_the_cap() {
    use crate::connection::MAX_DUMP_BYTES;
    let sock = TempSocket::new("endless");
    let listener = UnixListener::bind(sock.path()).expect("bind");
    let path = sock.path();
    let connecting =
        tokio::spawn(
            async move { Client::connect_with_timeout(&path, Duration::from_secs(60)).await },
        );
    let mut switch = FakeSwitch::accept(&listener).await;
    switch.handshake().await;
    let client = connecting.await.expect("join").expect("connect");
    let dumping = tokio::spawn({
        let client = client.clone();
        async move { client.dump_flows(FlowStatsRequest::default()).await }
    });
    let (xid, _) = switch.recv().await;
    // As many flows as fit one part, sent again and again.
    let flows: Vec<FlowStats> = (0..600).map(stats).collect();
    let part = Message::MultipartReply(MultipartReply {
        flags: OFPMPF_REPLY_MORE,
        body: MultipartReplyBody::Flow(flows),
    })
    .encode(xid)
    .expect("encode");
    let mut sent = 0;
    while !dumping.is_finished() && sent <= 2 * MAX_DUMP_BYTES {
        switch.send_bytes(&part).await;
        sent += part.len();
    }
    let dumped = tokio::time::timeout(Duration::from_secs(5), dumping)
        .await
        .unwrap_or_else(|_| panic!("the dump still gathers after {sent} bytes"))
        .expect("join");
    let err = dumped.expect_err("too large");
    assert!(
        matches!(err, OpenflowError::ReplyTooLarge { received, .. } if received > MAX_DUMP_BYTES),
        "{err:?}"
    );
    // Past the cap by no more than the socket's buffers hold.
    assert!(sent <= MAX_DUMP_BYTES + (1 << 20), "{sent} bytes sent");
    // Its later parts are ignored; the next request is answered.
    switch.send_bytes(&part).await;
    let asking = tokio::spawn(async move { client.features().await });
    let (xid, _) = switch.recv().await;
    switch.send(xid, Message::FeaturesReply(features())).await;
    asking.await.expect("join").expect("features");
}

/// A switch that sends echo requests and never reads: once their replies
/// waiting to be written pass `MAX_UNSENT`, the client closes the
/// connection (its writer, blocked on the full socket, too), and later
/// requests fail with `Closed`. The replies once piled up for as long as
/// the switch asked, and the writer kept the socket open.
#[tokio::test]
async fn a_switch_that_reads_nothing_is_cut_off_when_too_much_waits_for_it() {
    use crate::connection::MAX_UNSENT;
    let (_sock, client, mut switch) = setup("unread").await;
    let echo = Message::EchoRequest(vec![7; 65_000])
        .encode(0xee)
        .expect("encode");
    let mut sent = 0;
    let closed = loop {
        let write = switch.stream.write_all(&echo);
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
    let err = client.features().await.expect_err("closed");
    assert!(matches!(err, OpenflowError::Closed), "{err:?}");
}
