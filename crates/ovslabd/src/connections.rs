//! The API's connections: accepted from the socket, each served by hyper's
//! HTTP/1.1 with a deadline for its request header, at most
//! `--max-connections` at once, and all closed within a bound when the
//! daemon stops.
//!
//! A full table makes room by closing its oldest idle connection (one that
//! waits for a request header: HTTP lets a server close an idle connection at
//! any time); a connection whose request is being answered is never closed
//! for another. When every connection is busy, a new one gets a 503 and is
//! closed at once. So clients that open connections and send nothing (or
//! half a header) cannot lock others out, and cost at most
//! `--max-connections` file descriptors for at most [`HEADER_TIMEOUT`].

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

/// How long a stop lets a connection without a request in progress finish
/// what it was doing (writing its last answer) before it is cut.
const IDLE_AT_STOP: Duration = Duration::from_millis(500);

/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

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
    table: Arc<Mutex<BTreeMap<u64, Arc<Slot>>>>,
    tasks: JoinSet<()>,
    next_id: u64,
    refused: u64,
    warned: Option<Instant>,
}

/// One connection as the table sees it.
#[derive(Debug, Default)]
struct Slot {
    /// [`IDLE`], [`BUSY`] or [`CLOSING`]: a connection is closed to make
    /// room only by moving it from idle to closing, and takes a request
    /// only by moving it from idle to busy, so never both.
    state: AtomicU8,
    /// Wakes the connection's task to close it.
    close: Notify,
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const CLOSING: u8 = 2;

impl Slot {
    fn swap(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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

/// Marks a connection busy while a request is answered, also when the
/// answer is dropped half-way (its client went away).
struct Busy(Arc<Slot>);

impl Busy {
    /// `None` when the connection is being closed to make room.
    fn new(slot: &Arc<Slot>) -> Option<Self> {
        slot.swap(IDLE, BUSY).then(|| Busy(slot.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.swap(BUSY, IDLE);
    }
}

impl Connections {
    pub fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
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
    /// the oldest idle one, or refuses it.
    fn admit(&mut self, stream: UnixStream, router: &Router, stop: watch::Receiver<bool>) {
        let full = {
            let mut table = self.table();
            if table.len() >= self.max {
                let idle = table
                    .iter()
                    .find(|(_, slot)| slot.swap(IDLE, CLOSING))
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

/// An answer's body, keeping its connection busy until it was all taken.
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
            // Busy until hyper took the whole answer: a connection closed to
            // make room, or by a stop, never loses an answer half-written.
            Ok::<_, Infallible>(response.map(|body| Body::new(Answering { body, _busy: busy })))
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
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
                tracing::debug!("closed an idle connection of pid {:?} to make room", peer.pid);
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
                // A request came meanwhile: the stop's grace bounds it.
                idle_cut.as_mut().reset(tokio::time::Instant::now() + HEADER_TIMEOUT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_says_its_length() {
        let text = busy_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let error: ovslab_api::ApiError = serde_json::from_str(body).unwrap();
        assert!(error.error.contains("busy"));
    }
}
