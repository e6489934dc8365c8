//! The API's connections: accepted from the socket, each served by hyper's
//! HTTP/1.1 with a deadline for its request header, at most
//! `--max-connections` at once, and all closed within a bound when the
//! daemon stops.
//!
//! A full table makes room by closing its oldest idle connection (one that
//! waits for a request header: HTTP lets a server close an idle connection at
//! any time); a connection whose request is being answered, or whose answer
//! is not all sent yet, is never closed for another — unless its client has
//! not read that answer within [`ANSWER_TIMEOUT`]. When every connection is
//! busy, a new one gets a 503 and is closed at once. So clients that open
//! connections and send nothing (or half a header) cannot lock others out,
//! and cost at most `--max-connections` file descriptors for at most
//! [`HEADER_TIMEOUT`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::server::Peer;

/// How long a client has to send a whole request header, counted from when
/// it connected or got its last answer: a connection idle that long, or one
/// that sends a header byte by byte, is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to read its whole answer (from when hyper took
/// the last of it) before its connection may be closed to make room for
/// another. A client that reads has it in milliseconds: a 1 MB answer
/// fills the socket's buffer five times.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop lets an idle connection finish what it was doing before
/// it is cut (one with an answer still to send has the stop's grace).
const IDLE_AT_STOP: Duration = Duration::from_millis(500);

/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The most event streams (`GET /v1/labs/{lab}/events`) open at once with
/// `--max-connections max`: a quarter of them (64 of the default 256), at
/// least one, and always fewer than `max`. A stream's connection stays busy
/// for as long as its lab exists, so streams must never take the
/// connections that other requests need.
pub fn max_streams(max: usize) -> usize {
    (max / 4).max(1).min(max.saturating_sub(1))
}

/// What a refused connection reads before it is closed.
const BUSY_ERROR: &str =
    "{\"error\":\"ovslabd is busy: every connection has a request in progress\"}";

/// [`BUSY_ERROR`] as a whole HTTP answer, written to a connection that is refused
/// before it could send its request.
fn busy_answer() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BUSY_ERROR}",
        BUSY_ERROR.len()
    )
}

/// Warnings about refused connections, at most one per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open connections, and how to reach each one.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    /// [`ANSWER_TIMEOUT`] (shorter in tests).
    answer_timeout: Duration,
    table: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    tasks: JoinSet<()>,
    next_id: u64,
    refused: u64,
    warned: Option<Instant>,
}

/// One connection as the table sees it.
#[derive(Debug)]
struct Slot {
    /// [`IDLE`], [`BUSY`], [`SENDING`] or [`CLOSING`]: a connection is
    /// closed to make room only by moving it from idle (or from sending,
    /// late) to closing, and takes a request only by moving it from idle
    /// or sending to busy, so never both.
    state: AtomicU8,
    /// Since when the connection has been [`SENDING`].
    sending_since: Mutex<Instant>,
    /// Wakes the connection's task to close it.
    close: Notify,
}

/// Waits for a request (or has half of its header).
const IDLE: u8 = 0;
/// Answers a request: hyper has not taken the whole answer yet.
const BUSY: u8 = 1;
/// Hyper took the whole answer, but part of it is still in hyper's buffer,
/// waiting for the client to read: closing the connection would cut the
/// answer off. [`Flushed`] turns it idle once the buffer is empty.
const SENDING: u8 = 2;
/// Being closed to make room.
const CLOSING: u8 = 3;

impl Default for Slot {
    fn default() -> Self {
        Slot {
            state: AtomicU8::new(IDLE),
            sending_since: Mutex::new(Instant::now()),
            close: Notify::new(),
        }
    }
}

impl Slot {
    fn swap(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn sending_since(&self) -> MutexGuard<'_, Instant> {
        self.sending_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection closing if its client has left an answer
    /// unread for longer than `answer_timeout`.
    fn close_if_unread(&self, answer_timeout: Duration) -> bool {
        self.state.load(Ordering::Acquire) == SENDING
            && self.sending_since().elapsed() > answer_timeout
            && self.swap(SENDING, CLOSING)
    }
}

/// Removes a connection from the table when its task ends.
struct Leave {
    table: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Marks a connection busy while a request is answered, until hyper took
/// the whole answer (or dropped it: its client went away); then sending,
/// until hyper has written it all.
struct Busy(Arc<Slot>);

impl Busy {
    /// `None` when the connection is being closed to make room.
    fn new(slot: &Arc<Slot>) -> Option<Self> {
        // A request can come while the last answer is still being sent.
        (slot.swap(IDLE, BUSY) || slot.swap(SENDING, BUSY)).then(|| Busy(slot.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.sending_since() = Instant::now();
        self.0.swap(BUSY, SENDING);
    }
}

/// A connection's socket as hyper sees it. hyper flushes the socket only
/// once its own buffer is empty (`Buffered::poll_flush`): a flush done
/// means that the answer taken is all written (to the socket's buffer,
/// which a close does not discard), and ends [`SENDING`].
struct Flushed {
    stream: UnixStream,
    slot: Arc<Slot>,
}

impl tokio::io::AsyncRead for Flushed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Flushed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let flushed = std::pin::Pin::new(&mut self.stream).poll_flush(cx);
        if let std::task::Poll::Ready(Ok(())) = flushed {
            self.slot.swap(SENDING, IDLE);
        }
        flushed
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
            answer_timeout: ANSWER_TIMEOUT,
            table: Arc::default(),
            tasks: JoinSet::new(),
            next_id: 0,
            refused: 0,
            warned: None,
        }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        // A panic elsewhere while the table was locked leaves it usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts and serves connections until `stop` says so (or is dropped).
    pub async fn accept_until(
        &mut self,
        listener: &UnixListener,
        router: &Router,
        stop: &mut watch::Receiver<bool>,
    ) {
        loop {
            while self.tasks.try_join_next().is_some() {}
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.admit(stream, router, stop.clone()),
                    Err(e) => {
                        // Out of file descriptors (EMFILE, ENFILE) or a
                        // connection that went before it was accepted: wait
                        // a little rather than spin on the same error.
                        self.warn(format_args!("accepting a connection: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// Serves a new connection if there is room, or makes room by closing
    /// the oldest idle one (or one whose client did not read its answer in
    /// time), or refuses it.
    fn admit(&mut self, stream: UnixStream, router: &Router, stop: watch::Receiver<bool>) {
        let answer_timeout = self.answer_timeout;
        let full = {
            let mut table = self.table();
            if table.len() >= self.max {
                let idle = table
                    .iter()
                    .find(|(_, slot)| slot.swap(IDLE, CLOSING))
                    .or_else(|| {
                        table
                            .iter()
                            .find(|(_, slot)| slot.close_if_unread(answer_timeout))
                    })
                    .map(|(id, _)| *id);
                match idle.and_then(|id| table.remove(&id)) {
                    Some(slot) => {
                        slot.close.notify_one();
                        false
                    }
                    None => true,
                }
            } else {
                false
            }
        };
        if full {
            // Best effort and never waiting: a client that does not read
            // its answer finds the connection closed.
            let _ = stream.try_write(busy_answer().as_bytes());
            self.refused += 1;
            let max = self.max;
            self.warn(format_args!(
                "{max} connections, each with a request in progress (--max-connections): refused a new one"
            ));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let slot = Arc::new(Slot::default());
        self.table().insert(id, slot.clone());
        let table = self.table.clone();
        let router = router.clone();
        self.tasks.spawn(async move {
            // Leaves the table however the task ends (also by a panic or
            // an abort at the end of a stop).
            let _leave = Leave { table, id };
            serve(stream, router, slot, stop).await;
        });
    }

    /// A warning about the connections, at most once per [`WARN_EVERY`]
    /// (a client opening thousands must not flood the journal).
    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        if self.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        self.warned = Some(Instant::now());
        let refused = std::mem::take(&mut self.refused);
        tracing::warn!("{what} ({refused} refused since the last warning)");
    }

    /// After `stop`: waits until every connection has answered its request
    /// in progress and closed (idle ones close at once), but not past
    /// `deadline`; then closes the rest. Returns how many were cut off.
    pub async fn close(mut self, deadline: tokio::time::Instant) -> usize {
        let drained = tokio::time::timeout_at(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            return 0;
        }
        let cut = self.tasks.len();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        cut
    }
}

/// An answer's body, keeping its connection busy until it was all taken
/// (then [`SENDING`] until it was all written).
struct Answering {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Answering {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The answer of a connection closed to make room, to a request that came
/// at that very moment.
fn busy_response() -> Response {
    Response::builder()
        .status(hyper::StatusCode::SERVICE_UNAVAILABLE)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONNECTION, "close")
        .body(Body::from(BUSY_ERROR))
        .unwrap_or_default()
}

/// Serves one connection until it closes, is closed to make room, or the
/// daemon stops (then the request in progress is answered first).
async fn serve(
    stream: UnixStream,
    router: Router,
    slot: Arc<Slot>,
    mut stop: watch::Receiver<bool>,
) {
    let peer = Peer::of(&stream);
    let for_requests = slot.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = Busy::new(&for_requests);
        let mut router = router.clone();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let Some(busy) = busy else {
                // Chosen to make room just before this request came.
                return Ok(busy_response());
            };
            let response: Response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            // Busy until hyper took the whole answer, then sending until
            // hyper wrote it all: a connection closed to make room, or by a
            // stop, never loses an answer half-written.
            Ok::<_, Infallible>(response.map(|body| Body::new(Answering { body, _busy: busy })))
        }
    });
    let io = Flushed {
        stream,
        slot: slot.clone(),
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = pin!(connection);
    let mut stopping = false;
    // Armed by a stop: the moment an idle connection (one waiting for a
    // header, or with half of one) is cut.
    let mut idle_cut = pin!(tokio::time::sleep(Duration::MAX));
    loop {
        if !stopping && *stop.borrow_and_update() {
            // hyper closes after the answer in progress, or at once when
            // nothing was read; half a header would hold it until the
            // header deadline, so idle connections get a moment only.
            stopping = true;
            connection.as_mut().graceful_shutdown();
            idle_cut
                .as_mut()
                .reset(tokio::time::Instant::now() + IDLE_AT_STOP);
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection of pid {:?}: {e}", peer.pid);
                }
                return;
            }
            _ = slot.close.notified() => {
                tracing::debug!("closed a connection of pid {:?} to make room", peer.pid);
                return;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() {
                    // The daemon is gone: nothing will answer.
                    return;
                }
            }
            () = idle_cut.as_mut(), if stopping => {
                if slot.swap(IDLE, CLOSING) {
                    return;
                }
                // A request came meanwhile, or an answer is still being
                // sent: the stop's grace bounds it.
                idle_cut.as_mut().reset(tokio::time::Instant::now() + HEADER_TIMEOUT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The size of `GET /big`'s answer: five times a socket's buffer.
    const BIG: usize = 1 << 20;

    /// Connections served on a socket of their own: `GET /big` answers
    /// [`BIG`] bytes, `POST /wait` waits for ever.
    struct Served {
        dir: std::path::PathBuf,
        socket: std::path::PathBuf,
        server: tokio::task::JoinHandle<()>,
    }

    impl Served {
        fn start(max: usize, answer_timeout: Duration) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ovslabd-connections-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let socket = dir.join("s.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let router = Router::new()
                .route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }))
                .route("/wait", axum::routing::post(std::future::pending::<String>));
            let server = tokio::spawn(async move {
                let (_stop, mut stop) = watch::channel(false);
                let mut connections = Connections::new(max);
                connections.answer_timeout = answer_timeout;
                connections
                    .accept_until(&listener, &router, &mut stop)
                    .await;
            });
            Served {
                dir,
                socket,
                server,
            }
        }

        async fn connect(&self) -> UnixStream {
            UnixStream::connect(&self.socket).await.unwrap()
        }

        /// A connection that asked for `GET /big` and read 1 KiB of it.
        async fn slow_reader(&self) -> UnixStream {
            let mut slow = self.connect().await;
            slow.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut first = [0; 1024];
            slow.read_exact(&mut first).await.unwrap();
            assert!(first.starts_with(b"HTTP/1.1 200"));
            // hyper takes the whole answer at once, and waits for the client.
            tokio::time::sleep(Duration::from_millis(200)).await;
            slow
        }

        /// A connection whose request is in progress (its body never ends).
        async fn busy(&self) -> UnixStream {
            let mut busy = self.connect().await;
            busy.write_all(b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            busy
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.server.abort();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// What is left of an answer of which 1 KiB was read: its length, up to
    /// the connection's end.
    async fn rest_of(mut stream: UnixStream) -> usize {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the connection did not end")
            .unwrap();
        rest.len()
    }

    /// A client that reads its 1 MB answer slowly got 219,132 of its
    /// 1,007,827 bytes, then its connection was closed to make room for
    /// four others (`--max-connections 4`): the connection counted as idle
    /// once hyper had taken the answer, not once it had written it.
    #[tokio::test]
    async fn a_slow_reader_gets_its_whole_answer_while_others_make_room() {
        let served = Served::start(4, ANSWER_TIMEOUT);
        let slow = served.slow_reader().await;
        let mut others = Vec::new();
        for _ in 0..4 {
            others.push(served.connect().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = 1024 + rest_of(slow).await;
        assert!(got > BIG, "the answer was cut off after {got} bytes");
    }

    /// A client that never reads its answer holds its connection for
    /// [`ANSWER_TIMEOUT`] at most, when others need it.
    #[tokio::test]
    async fn an_answer_left_unread_gives_way_after_its_deadline() {
        let served = Served::start(4, Duration::from_millis(300));
        let slow = served.slow_reader().await;
        let mut busy = Vec::new();
        for _ in 0..3 {
            busy.push(served.busy().await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The table is full: three busy, one sending for too long.
        let mut new = served.connect().await;
        new.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), new.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let got = 1024 + rest_of(slow).await;
        assert!(got < BIG, "the unread answer held its connection");
    }

    #[test]
    fn streams_take_a_quarter_of_the_connections_and_never_all() {
        assert_eq!(max_streams(DEFAULT_MAX_CONNECTIONS), 64);
        assert_eq!(max_streams(8), 2);
        assert_eq!(max_streams(4), 1);
        assert_eq!(max_streams(2), 1);
        assert_eq!(max_streams(1), 0);
    }

    #[test]
    fn the_busy_answer_says_its_length() {
        let text = busy_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let error: ovslab_api::ApiError = serde_json::from_str(body).unwrap();
        assert!(error.error.contains("busy"));
    }
}
