//! The task that owns one OVSDB connection.
//!
//! Only this task reads or writes the socket, so request ids, the table of
//! callers waiting for replies and the table of monitors are plain data with
//! no locks. Callers hand it a [`Call`] with a oneshot for the reply; the
//! task gives every request a fresh integer id and matches responses by it,
//! so any number of concurrent calls share one connection.
//!
//! Reading and writing happen in the same `select!` loop, from a buffer of
//! pending output, so a large request never stops the task from reading
//! (and answering the server's `echo` probes), and a slow server never
//! stops it from accepting calls. Both buffers are bounded: a message that
//! grows past [`crate::codec::MAX_MESSAGE`], or more than [`MAX_UNSENT`]
//! bytes that the server leaves unread, ends the connection. A monitor's
//! connection waits for the server with no deadline, so without them a
//! server that began a message and never ended it, or sent `echo`
//! requests without reading the answers, would grow the daemon without
//! end.
//!
//! The task also does what the server expects of any client without
//! involving callers: it answers `echo` requests (RFC 7047 §4.1.11, which
//! `ovsdb-server` uses as an inactivity probe) and routes `update`
//! notifications (§4.1.6) to the [`crate::Monitor`] whose id they carry.
//!
//! When the connection ends for any reason, every waiting caller gets
//! [`OvsdbError::Closed`], every monitor's stream ends, and later calls fail
//! with `Closed` too; the reason is logged here, once.

use std::collections::HashMap;

use bytes::BytesMut;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::OvsdbError;
use crate::codec::{FrameError, MessageSplitter};
use crate::message::{self, Incoming};

/// Where the reply to a call goes.
pub type Reply = oneshot::Sender<Result<Value, OvsdbError>>;

/// How many calls may queue for the task before callers wait.
pub const CALL_QUEUE: usize = 64;

/// Bytes to make room for before each read. What is buffered is bounded
/// by the longest message accepted ([`crate::codec::MAX_MESSAGE`]) and
/// one read.
const READ_CHUNK: usize = 16 * 1024;

/// The most bytes written to the connection that the server may leave
/// unread: 16 MiB. The largest request ovslab sends, the transaction that
/// builds a node of 1000 instances, is 0.6 MB (measured); the task's own
/// messages (answers to `echo`, `monitor_cancel`) are tens of bytes. A
/// server that leaves more unread does not read what it is sent (while it
/// may still send, say, `echo` requests whose answers would pile up), and
/// the connection is closed.
pub const MAX_UNSENT: usize = 16 << 20;

/// A change to the monitor routing table that must happen in order with a
/// request: a route is added before the `monitor` request is written, so no
/// `update` that follows the reply can arrive before its route exists.
#[derive(Debug)]
pub enum MonitorRoute {
    Add {
        monitor: String,
        updates: mpsc::UnboundedSender<Value>,
    },
    Remove(String),
}

/// One JSON-RPC request from a caller.
#[derive(Debug)]
pub struct Call {
    pub method: &'static str,
    pub params: Value,
    pub reply: Reply,
    pub route: Option<MonitorRoute>,
}

/// A request written to the server whose response has not arrived.
struct Pending {
    method: &'static str,
    /// `None` for requests the task makes on its own and whose answer
    /// nobody waits for.
    reply: Option<Reply>,
    /// The monitor route this request added, dropped again if it fails.
    added_route: Option<String>,
}

/// Why the task stopped.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("every client handle was dropped")]
    ClientsGone,
    #[error("the server closed the connection")]
    Eof,
    #[error("the server closed the connection in the middle of a message")]
    EofMidMessage,
    #[error("reading from the connection failed")]
    Read(#[source] std::io::Error),
    #[error("writing to the connection failed")]
    Write(#[source] std::io::Error),
    #[error(transparent)]
    Frame(FrameError),
    #[error("the server sent a message that is not JSON-RPC")]
    Parse(#[source] serde_json::Error),
    #[error(
        "the server left {0} bytes sent to it unread, more than the {limit} MiB allowed: it does not read",
        limit = MAX_UNSENT >> 20
    )]
    Unread(usize),
}

/// Starts the task for `stream`; `label` (the socket path) names the
/// connection in logs. Returns the sender callers use.
pub fn spawn<S>(stream: S, label: String) -> mpsc::Sender<Call>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (calls_tx, calls) = mpsc::channel(CALL_QUEUE);
    tokio::spawn(run(stream, label, calls));
    calls_tx
}

async fn run<S>(stream: S, label: String, mut calls: mpsc::Receiver<Call>)
where
    S: AsyncRead + AsyncWrite,
{
    let mut state = State::default();
    let ended = state.serve(stream, &mut calls).await;
    match &ended {
        Ended::ClientsGone | Ended::Eof => tracing::debug!("OVSDB {label}: {ended}"),
        _ => tracing::warn!("OVSDB {label}: {}", chain(&ended)),
    }
    for (_, pending) in state.pending.drain() {
        if let Some(reply) = pending.reply {
            let _ = reply.send(Err(OvsdbError::Closed));
        }
    }
    // Dropping the routes ends every monitor's stream.
    state.monitors.clear();
    // Calls already queued get the same answer; later ones fail to send.
    calls.close();
    while let Some(call) = calls.recv().await {
        let _ = call.reply.send(Err(OvsdbError::Closed));
    }
}

/// An error with its sources, for the one log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Default)]
struct State {
    splitter: MessageSplitter,
    /// Encoded messages not yet written.
    out: BytesMut,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Update streams by monitor id.
    monitors: HashMap<String, mpsc::UnboundedSender<Value>>,
}

impl State {
    async fn serve<S>(&mut self, stream: S, calls: &mut mpsc::Receiver<Call>) -> Ended
    where
        S: AsyncRead + AsyncWrite,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        loop {
            self.splitter.buffer_mut().reserve(READ_CHUNK);
            // All three branches are cancel safe: `recv` loses no call,
            // `read_buf` and `write_buf` move no bytes unless they complete.
            tokio::select! {
                call = calls.recv() => match call {
                    Some(call) => self.start(call),
                    None => return Ended::ClientsGone,
                },
                read = reader.read_buf(self.splitter.buffer_mut()) => match read {
                    Ok(0) if self.splitter.is_mid_message() => return Ended::EofMidMessage,
                    Ok(0) => return Ended::Eof,
                    Ok(_) => {
                        if let Err(ended) = self.dispatch() {
                            return ended;
                        }
                    }
                    Err(e) => return Ended::Read(e),
                },
                written = writer.write_buf(&mut self.out), if !self.out.is_empty() => {
                    if let Err(e) = written {
                        return Ended::Write(e);
                    }
                }
            }
            if self.out.len() > MAX_UNSENT {
                return Ended::Unread(self.out.len());
            }
        }
    }

    /// Queues a caller's request and remembers who waits for it.
    fn start(&mut self, call: Call) {
        let added_route = match call.route {
            Some(MonitorRoute::Add { monitor, updates }) => {
                self.monitors.insert(monitor.clone(), updates);
                Some(monitor)
            }
            Some(MonitorRoute::Remove(monitor)) => {
                self.monitors.remove(&monitor);
                None
            }
            None => None,
        };
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = self.queue(&message::request(id, call.method, &call.params)) {
            if let Some(monitor) = added_route {
                self.monitors.remove(&monitor);
            }
            let _ = call.reply.send(Err(OvsdbError::Decode(e)));
            return;
        }
        self.pending.insert(
            id,
            Pending {
                method: call.method,
                reply: Some(call.reply),
                added_route,
            },
        );
    }

    fn queue(&mut self, message: &Value) -> Result<(), serde_json::Error> {
        let bytes = serde_json::to_vec(message)?;
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Handles every complete message received so far.
    fn dispatch(&mut self) -> Result<(), Ended> {
        while let Some(bytes) = self.splitter.next_message().map_err(Ended::Frame)? {
            match Incoming::parse(&bytes).map_err(Ended::Parse)? {
                Incoming::Response { id, result, error } => self.respond(&id, result, error),
                Incoming::Request { id, method, params } => self.answer(&id, &method, &params),
                Incoming::Notification { method, params } => self.notify(&method, params),
            }
        }
        Ok(())
    }

    /// A response: hand it to the caller that waits for it.
    fn respond(&mut self, id: &Value, result: Value, error: Value) {
        let Some(pending) = id.as_u64().and_then(|id| self.pending.remove(&id)) else {
            tracing::warn!("OVSDB response to unknown request id {id}, ignored");
            return;
        };
        let outcome = if error.is_null() {
            Ok(result)
        } else {
            if let Some(monitor) = pending.added_route {
                self.monitors.remove(&monitor);
            }
            Err(OvsdbError::Rpc {
                method: pending.method.to_string(),
                error,
            })
        };
        match pending.reply {
            // The caller may have given up waiting; nothing to do then.
            Some(reply) => {
                let _ = reply.send(outcome);
            }
            None => {
                if let Err(e) = outcome {
                    tracing::debug!("OVSDB: {e}");
                }
            }
        }
    }

    /// A request of the server's: `echo` is answered with its own params.
    fn answer(&mut self, id: &Value, method: &str, params: &Value) {
        let reply = if method == "echo" {
            message::response(id, params)
        } else {
            tracing::warn!("OVSDB server sent unsupported request {method}");
            message::error_response(id, "unknown method")
        };
        if let Err(e) = self.queue(&reply) {
            tracing::warn!("OVSDB: cannot encode the answer to {method}: {e}");
        }
    }

    /// A notification: `update` goes to its monitor, the rest is logged.
    fn notify(&mut self, method: &str, params: Value) {
        if method != "update" {
            tracing::debug!("OVSDB notification {method} ignored");
            return;
        }
        let Value::Array(mut params) = params else {
            tracing::warn!("OVSDB update without a params array, ignored");
            return;
        };
        if params.len() != 2 {
            tracing::warn!("OVSDB update with {} params, ignored", params.len());
            return;
        }
        let updates = params.pop().unwrap_or_default();
        let Some(monitor) = params.pop().and_then(|v| v.as_str().map(str::to_string)) else {
            tracing::warn!("OVSDB update for a monitor id that is not ours, ignored");
            return;
        };
        let Some(route) = self.monitors.get(&monitor) else {
            tracing::debug!("OVSDB update for cancelled monitor {monitor}, ignored");
            return;
        };
        if route.send(updates).is_err() {
            // The Monitor was dropped without `cancel`: stop the server
            // sending more, answering to nobody.
            self.monitors.remove(&monitor);
            self.cancel_abandoned(&monitor);
        }
    }

    fn cancel_abandoned(&mut self, monitor: &str) {
        let id = self.next_id;
        self.next_id += 1;
        match self.queue(&message::request(id, "monitor_cancel", &json!([monitor]))) {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        method: "monitor_cancel",
                        reply: None,
                        added_route: None,
                    },
                );
            }
            Err(e) => tracing::warn!("OVSDB: cannot encode monitor_cancel: {e}"),
        }
    }
}
