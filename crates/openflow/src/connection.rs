//! The task that owns an OpenFlow connection after the handshake.
//!
//! One task reads the socket and routes replies to waiting callers by xid;
//! a second task only writes. Keeping the writes apart matters: OVS stops
//! reading a connection while about 100 of its replies wait to be sent
//! (connmgr's reply limit), so a large batch of flow_mods that all fail
//! would deadlock a connection that wrote the whole batch before reading.
//!
//! What the switch can make the task hold is bounded: a flow dump's reply
//! by [`MAX_DUMP_BYTES`] (and a dump nobody waits for any more is dropped
//! as its next part arrives), what waits to be written by [`MAX_UNSENT`]
//! (a switch that sends echo requests and reads nothing would otherwise
//! pile up their replies), each message by OpenFlow's 16-bit length.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::OpenflowError;
use crate::error_msg::ErrorMsg;
use crate::flow::{FlowMod, FlowStats, FlowStatsRequest};
use crate::framing::FrameDecoder;
use crate::message::{
    FeaturesReply, Message, MultipartReply, MultipartReplyBody, MultipartRequest,
    MultipartRequestBody,
};

type Reply<T> = oneshot::Sender<Result<T, OpenflowError>>;

/// The most a flow dump's reply may carry, counted in OpenFlow bytes: 64
/// MiB. The largest bridge of a lab is a br-tun with l2population, with a
/// unicast flow and an ARP reply per remote port: about 10,000 flows on
/// the network node of the 10,000-instance lab, 20,000 at the 20,000
/// namespaces the daemon allows, whose dump is 3.8 MB (measured,
/// `a_dump_of_the_largest_lab_bridge_is_well_under_the_cap`). A reply
/// still growing past seventeen times that is a switch gone wrong, and
/// the dump fails instead of gathering it.
pub const MAX_DUMP_BYTES: usize = 64 << 20;

/// The most bytes that may wait to be written to the switch: 64 MiB. The
/// largest batch, the flows of that br-tun from nothing, is about as large
/// as its dump; an echo reply is a few bytes. A switch that leaves more
/// unread does not read (while it may still send echo requests whose
/// replies would pile up), and the connection is closed.
pub const MAX_UNSENT: usize = 64 << 20;

/// A request from a [`crate::Client`] handle.
#[derive(Debug)]
pub(crate) enum Command {
    Features(Reply<FeaturesReply>),
    DumpFlows(FlowStatsRequest, Reply<Vec<FlowStats>>),
    /// flow_mods followed by one barrier; an empty batch is a bare barrier.
    Apply(Vec<FlowMod>, Reply<()>),
}

/// What a caller waits for, keyed by the xid of its final reply.
#[derive(Debug)]
enum Pending {
    Features(Reply<FeaturesReply>),
    Flows {
        flows: Vec<FlowStats>,
        /// The OpenFlow bytes of the parts received so far.
        bytes: usize,
        reply: Reply<Vec<FlowStats>>,
    },
    Barrier {
        /// xids of the batch's flow_mods, in batch order.
        members: Vec<u32>,
        errors: Vec<(usize, ErrorMsg)>,
        reply: Reply<()>,
    },
}

impl Pending {
    fn abandoned(&self) -> bool {
        match self {
            Pending::Features(reply) => reply.is_closed(),
            Pending::Flows { reply, .. } => reply.is_closed(),
            Pending::Barrier { reply, .. } => reply.is_closed(),
        }
    }
}

/// Starts the reader and writer tasks for a connection that finished its
/// handshake; `decoder` holds any bytes read past the hello.
pub(crate) fn spawn(
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    decoder: FrameDecoder,
    commands: mpsc::Receiver<Command>,
) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let unsent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(write_loop(writer, out_rx, unsent.clone()));
    let dispatcher = Dispatcher::new(
        commands,
        reader,
        Output {
            queue: out_tx,
            unsent,
            writer: Some(writer),
        },
        decoder,
    );
    tokio::spawn(dispatcher.run());
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    unsent: Arc<AtomicUsize>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = writer.write_all(&bytes).await {
            warn!(error = %e, "openflow write failed; closing the connection");
            return;
        }
        unsent.fetch_sub(bytes.len(), Ordering::Relaxed);
    }
}

/// Why the dispatcher stopped; only logged, since waiting callers all get
/// [`OpenflowError::Closed`].
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("every client handle was dropped")]
    ClientsGone,
    #[error("the switch closed the connection")]
    Eof,
    #[error("reading the socket failed: {0}")]
    Io(std::io::Error),
    #[error("the switch sent a corrupt stream: {0}")]
    Decode(crate::wire::DecodeError),
    #[error("the writer task ended")]
    WriterGone,
    #[error(
        "the switch left {0} bytes sent to it unread, more than the {limit} MiB allowed: it does not read",
        limit = MAX_UNSENT >> 20
    )]
    Unread(usize),
}

/// The way to the writer task: its queue, and how many bytes in it are
/// not written yet.
struct Output {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    unsent: Arc<AtomicUsize>,
    /// Aborted when the dispatcher stops: a writer blocked on a switch
    /// that does not read would otherwise keep the socket open (and the
    /// queue) until the switch went away.
    writer: Option<JoinHandle<()>>,
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

struct Dispatcher {
    commands: mpsc::Receiver<Command>,
    reader: OwnedReadHalf,
    out: Output,
    decoder: FrameDecoder,
    next_xid: u32,
    pending: HashMap<u32, Pending>,
    /// flow_mod xid → (barrier xid, index in batch).
    members: HashMap<u32, (u32, usize)>,
}

impl Dispatcher {
    fn new(
        commands: mpsc::Receiver<Command>,
        reader: OwnedReadHalf,
        out: Output,
        decoder: FrameDecoder,
    ) -> Dispatcher {
        Dispatcher {
            commands,
            reader,
            out,
            decoder,
            next_xid: 1,
            pending: HashMap::new(),
            members: HashMap::new(),
        }
    }

    /// Runs until every client handle is dropped or the connection ends.
    /// Dropping `pending` then tells every waiting caller `Closed`, and
    /// dropping `out` stops the writer.
    async fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        // Bytes read together with the peer's hello.
        let stop = match self.drain() {
            Err(stop) => stop,
            Ok(()) => loop {
                tokio::select! {
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => if let Err(stop) = self.command(cmd) { break stop },
                        None => break Stop::ClientsGone,
                    },
                    read = self.reader.read(&mut buf) => match read {
                        Ok(0) => break Stop::Eof,
                        Ok(n) => {
                            self.decoder.extend(&buf[..n]);
                            if let Err(stop) = self.drain() { break stop }
                        }
                        Err(e) => break Stop::Io(e),
                    },
                }
            },
        };
        match stop {
            Stop::ClientsGone => debug!("openflow client dropped; closing the connection"),
            other => {
                warn!(reason = %other, pending = self.pending.len(), "openflow connection ended")
            }
        }
    }

    fn alloc_xid(&mut self) -> u32 {
        loop {
            let xid = self.next_xid;
            self.next_xid = self.next_xid.wrapping_add(1);
            if xid != 0 && !self.pending.contains_key(&xid) && !self.members.contains_key(&xid) {
                return xid;
            }
        }
    }

    /// Drops the state of requests whose caller stopped waiting (timed out
    /// or was cancelled), so a switch that never answers cannot make the
    /// maps grow without bound. A late reply is then ignored.
    fn forget_abandoned(&mut self) {
        let abandoned: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.abandoned())
            .map(|(xid, _)| *xid)
            .collect();
        for xid in abandoned {
            if let Some(Pending::Barrier { members, .. }) = self.pending.remove(&xid) {
                for m in &members {
                    self.members.remove(m);
                }
            }
        }
    }

    /// Queues `bytes` for the writer; more than [`MAX_UNSENT`] unwritten
    /// ends the connection.
    fn send(&self, bytes: Vec<u8>) -> Result<(), Stop> {
        let unsent = self.out.unsent.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
        if unsent > MAX_UNSENT {
            return Err(Stop::Unread(unsent));
        }
        self.out.queue.send(bytes).map_err(|_| Stop::WriterGone)
    }

    fn command(&mut self, cmd: Command) -> Result<(), Stop> {
        self.forget_abandoned();
        match cmd {
            Command::Features(reply) => {
                let xid = self.alloc_xid();
                match Message::FeaturesRequest.encode(xid) {
                    Ok(bytes) => {
                        self.pending.insert(xid, Pending::Features(reply));
                        self.send(bytes)
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        Ok(())
                    }
                }
            }
            Command::DumpFlows(req, reply) => {
                let xid = self.alloc_xid();
                let msg = Message::MultipartRequest(MultipartRequest {
                    flags: 0,
                    body: MultipartRequestBody::Flow(req),
                });
                match msg.encode(xid) {
                    Ok(bytes) => {
                        let flows = Vec::new();
                        let pending = Pending::Flows {
                            flows,
                            bytes: 0,
                            reply,
                        };
                        self.pending.insert(xid, pending);
                        self.send(bytes)
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        Ok(())
                    }
                }
            }
            Command::Apply(mods, reply) => self.apply(mods, reply),
        }
    }

    /// Encodes the whole batch before sending anything, so a batch with an
    /// unencodable flow_mod is refused without touching the switch.
    fn apply(&mut self, mods: Vec<FlowMod>, reply: Reply<()>) -> Result<(), Stop> {
        let members: Vec<u32> = mods.iter().map(|_| self.alloc_xid()).collect();
        let barrier_xid = self.alloc_xid();
        let mut bytes = Vec::new();
        let encoded = mods
            .into_iter()
            .zip(&members)
            .try_for_each(|(fm, xid)| Message::FlowMod(fm).encode_into(*xid, &mut bytes))
            .and_then(|()| Message::BarrierRequest.encode_into(barrier_xid, &mut bytes));
        if let Err(e) = encoded {
            let _ = reply.send(Err(e.into()));
            return Ok(());
        }
        for (i, xid) in members.iter().enumerate() {
            self.members.insert(*xid, (barrier_xid, i));
        }
        self.pending.insert(
            barrier_xid,
            Pending::Barrier {
                members,
                errors: Vec::new(),
                reply,
            },
        );
        self.send(bytes)
    }

    /// Handles every whole message buffered.
    fn drain(&mut self) -> Result<(), Stop> {
        while let Some(frame) = self.decoder.next_frame().map_err(Stop::Decode)? {
            let (xid, msg) = Message::decode(&frame).map_err(Stop::Decode)?;
            self.incoming(xid, msg, frame.len())?;
        }
        Ok(())
    }

    /// One message from the switch, `len` bytes long.
    fn incoming(&mut self, xid: u32, msg: Message, len: usize) -> Result<(), Stop> {
        match msg {
            Message::EchoRequest(data) => {
                let reply = Message::EchoReply(data).encode(xid);
                match reply {
                    Ok(bytes) => self.send(bytes)?,
                    Err(e) => warn!(error = %e, "cannot answer echo request"),
                }
            }
            Message::Error(err) => self.error(xid, err),
            Message::FeaturesReply(features) => match self.pending.remove(&xid) {
                Some(Pending::Features(reply)) => {
                    let _ = reply.send(Ok(features));
                }
                other => self.unexpected(xid, "features reply", other),
            },
            Message::MultipartReply(part) => self.multipart(xid, part, len),
            Message::BarrierReply => match self.pending.remove(&xid) {
                Some(Pending::Barrier {
                    members,
                    errors,
                    reply,
                }) => {
                    for m in &members {
                        self.members.remove(m);
                    }
                    let result = if errors.is_empty() {
                        Ok(())
                    } else {
                        Err(OpenflowError::Rejected { errors })
                    };
                    let _ = reply.send(result);
                }
                other => self.unexpected(xid, "barrier reply", other),
            },
            other => debug!(
                xid,
                msg_type = other.msg_type(),
                "ignoring unsolicited message"
            ),
        }
        Ok(())
    }

    fn error(&mut self, xid: u32, err: ErrorMsg) {
        if let Some(&(barrier_xid, index)) = self.members.get(&xid)
            && let Some(Pending::Barrier { errors, .. }) = self.pending.get_mut(&barrier_xid)
        {
            errors.push((index, err));
            return;
        }
        let errors = vec![(0, err)];
        match self.pending.remove(&xid) {
            Some(Pending::Features(reply)) => {
                let _ = reply.send(Err(OpenflowError::Rejected { errors }));
            }
            Some(Pending::Flows { reply, .. }) => {
                let _ = reply.send(Err(OpenflowError::Rejected { errors }));
            }
            Some(Pending::Barrier { reply, members, .. }) => {
                for m in &members {
                    self.members.remove(m);
                }
                let _ = reply.send(Err(OpenflowError::Rejected { errors }));
            }
            None => {
                warn!(xid, error = %errors[0].1, "error from the switch for no pending request")
            }
        }
    }

    /// A part of a flow dump's reply, `len` bytes long: gathered until the
    /// last, unless nobody waits for the dump any more (dropped at once,
    /// its later parts ignored) or the reply passes [`MAX_DUMP_BYTES`]
    /// (the dump fails).
    fn multipart(&mut self, xid: u32, part: MultipartReply, len: usize) {
        let more = part.more();
        let Some(Pending::Flows {
            flows,
            bytes,
            reply,
        }) = self.pending.get_mut(&xid)
        else {
            let other = self.pending.remove(&xid);
            self.unexpected(xid, "multipart reply", other);
            return;
        };
        if reply.is_closed() {
            debug!(xid, "flow dump abandoned by its caller; dropping its reply");
            self.pending.remove(&xid);
            return;
        }
        *bytes += len;
        if *bytes > MAX_DUMP_BYTES {
            let received = *bytes;
            if let Some(Pending::Flows { reply, .. }) = self.pending.remove(&xid) {
                let _ = reply.send(Err(OpenflowError::ReplyTooLarge {
                    request: "flow stats request",
                    received,
                    limit: MAX_DUMP_BYTES,
                }));
            }
            return;
        }
        match part.body {
            MultipartReplyBody::Flow(part_flows) => {
                flows.extend(part_flows);
                if more {
                    return;
                }
                if let Some(Pending::Flows { flows, reply, .. }) = self.pending.remove(&xid) {
                    let _ = reply.send(Ok(flows));
                }
            }
            MultipartReplyBody::Other { mp_type, .. } => {
                if let Some(Pending::Flows { reply, .. }) = self.pending.remove(&xid) {
                    let _ = reply.send(Err(OpenflowError::Decode(format!(
                        "multipart reply of type {mp_type} to a flow stats request"
                    ))));
                }
            }
        }
    }

    /// A reply that does not fit what waits for its xid: the waiter (if
    /// any) is told, the message is otherwise dropped.
    fn unexpected(&mut self, xid: u32, what: &str, pending: Option<Pending>) {
        let err = || OpenflowError::Decode(format!("unexpected {what} for xid {xid}"));
        match pending {
            None => debug!(
                xid,
                what, "reply for no pending request (caller timed out?)"
            ),
            Some(Pending::Features(reply)) => {
                let _ = reply.send(Err(err()));
            }
            Some(Pending::Flows { reply, .. }) => {
                let _ = reply.send(Err(err()));
            }
            Some(Pending::Barrier { reply, members, .. }) => {
                for m in &members {
                    self.members.remove(m);
                }
                let _ = reply.send(Err(err()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::OFPMPF_REPLY_MORE;
    use crate::oxm::Match;

    /// A dispatcher on one end of a socket pair whose writer never runs.
    fn dispatcher() -> (Dispatcher, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        let (reader, _writer) = tokio::net::UnixStream::from_std(ours)
            .expect("tokio socket")
            .into_split();
        let (queue, written) = mpsc::unbounded_channel();
        let (_commands_tx, commands) = mpsc::channel(1);
        let out = Output {
            queue,
            unsent: Arc::new(AtomicUsize::new(0)),
            writer: None,
        };
        (
            Dispatcher::new(commands, reader, out, FrameDecoder::new()),
            written,
        )
    }

    fn part(more: bool) -> Message {
        let flow = FlowStats {
            table_id: 0,
            duration_sec: 1,
            duration_nsec: 0,
            priority: 1,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: 0,
            packet_count: 0,
            byte_count: 0,
            match_: Match::new().in_port(1),
            instructions: vec![],
        };
        Message::MultipartReply(MultipartReply {
            flags: if more { OFPMPF_REPLY_MORE } else { 0 },
            body: MultipartReplyBody::Flow(vec![flow]),
        })
    }

    /// A dump whose caller stopped waiting (its deadline passed) is
    /// dropped when its next part arrives, and its later parts are
    /// ignored: a switch that goes on sending parts no longer grows it
    /// until the next command comes.
    #[tokio::test]
    async fn an_abandoned_dump_is_dropped_at_its_next_part() {
        let (mut d, _written) = dispatcher();
        let (reply, answer) = oneshot::channel();
        d.command(Command::DumpFlows(FlowStatsRequest::default(), reply))
            .expect("sent");
        let xid = *d.pending.keys().next().expect("the dump waits");
        d.incoming(xid, part(true), 100).expect("a part");
        assert!(
            matches!(d.pending.get(&xid), Some(Pending::Flows { flows, .. }) if flows.len() == 1)
        );
        drop(answer);
        for _ in 0..3 {
            d.incoming(xid, part(true), 100).expect("a part");
            assert!(d.pending.is_empty(), "the abandoned dump is kept");
        }
    }
}
