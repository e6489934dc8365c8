//! An async OpenFlow 1.3 client for one bridge.
//!
//! ovs-vswitchd answers OpenFlow on each bridge's management socket
//! (`<rundir>/<bridge>.mgmt`) without any controller configuration. A
//! [`Client`] is a cheap, cloneable handle: the connection itself is owned
//! by a background task (see `connection.rs`) that callers talk to over a
//! channel, so clones can be used from many tasks at once and replies are
//! matched to requests by xid. The connection closes when the last handle
//! is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{self, Command};
pub use crate::connection::{MAX_DUMP_BYTES, MAX_UNSENT};
use crate::consts::OFP_VERSION_1_3;
use crate::error::OpenflowError;
use crate::error_msg::{ErrorMsg, OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE};
use crate::flow::{FlowMod, FlowStats, FlowStatsRequest};
use crate::framing::FrameDecoder;
use crate::message::{FeaturesReply, Hello, Message};

/// How long a request may wait for its reply unless configured otherwise.
/// The largest batch ovslab sends (the 106 flow_mods of a compute node
/// of 50 instances, and its barrier) takes vswitchd under 50 ms even on a
/// loaded host; a switch silent for 5 s is hung, not busy.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle to an OpenFlow 1.3 connection owned by a background task.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    path: Arc<PathBuf>,
    timeout: Duration,
}

impl Client {
    /// Connects to a switch's socket, exchanges hellos and checks that
    /// OpenFlow 1.3 is common to both sides (§6.3.1). The background task
    /// answers the switch's echo requests from then on.
    pub async fn connect(path: &Path) -> Result<Client, OpenflowError> {
        Client::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    /// Like [`Client::connect`]; `timeout` bounds the handshake and every
    /// later request.
    pub async fn connect_with_timeout(
        path: &Path,
        timeout: Duration,
    ) -> Result<Client, OpenflowError> {
        let handshake = async {
            let stream =
                UnixStream::connect(path)
                    .await
                    .map_err(|source| OpenflowError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })?;
            let (mut reader, mut writer) = stream.into_split();
            writer
                .write_all(&Message::Hello(Hello::of13()).encode(0)?)
                .await?;
            let mut decoder = FrameDecoder::new();
            let (xid, hello) = read_hello(&mut reader, &mut decoder).await?;
            if !hello.supports(OFP_VERSION_1_3) {
                let refusal = Message::Error(ErrorMsg {
                    error_type: OFPET_HELLO_FAILED,
                    code: OFPHFC_INCOMPATIBLE,
                    data: b"ovslab speaks only OpenFlow 1.3".to_vec(),
                });
                // Best effort: the error tells the switch's log why we leave.
                let _ = writer.write_all(&refusal.encode(xid)?).await;
                return Err(OpenflowError::Version {
                    peer_versions: hello.versions(),
                });
            }
            Ok((reader, writer, decoder))
        };
        let (reader, writer, decoder) =
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| OpenflowError::Timeout {
                    request: "hello",
                    after: timeout,
                })??;
        let (commands, rx) = mpsc::channel(64);
        connection::spawn(reader, writer, decoder, rx);
        tracing::debug!(path = %path.display(), "openflow 1.3 connection established");
        Ok(Client {
            commands,
            path: Arc::new(path.to_path_buf()),
            timeout,
        })
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks for the switch's features (datapath id, number of tables).
    pub async fn features(&self) -> Result<FeaturesReply, OpenflowError> {
        self.request("features request", Command::Features).await
    }

    /// Returns every flow `req` selects, gathering all parts of a
    /// multipart reply. `FlowStatsRequest::default()` dumps every table.
    pub async fn dump_flows(&self, req: FlowStatsRequest) -> Result<Vec<FlowStats>, OpenflowError> {
        self.request("flow stats request", |reply| Command::DumpFlows(req, reply))
            .await
    }

    /// Sends all flow_mods followed by ONE barrier and waits for the
    /// barrier reply, by which time the switch has processed them all.
    /// Any ERROR replying to a flow_mod of the batch makes this return
    /// [`OpenflowError::Rejected`] listing `(index in mods, error)`; the
    /// other flow_mods have still been applied, since OpenFlow 1.3 has no
    /// transactions without bundles.
    pub async fn apply(&self, mods: Vec<FlowMod>) -> Result<(), OpenflowError> {
        self.request("flow batch and its barrier", |reply| {
            Command::Apply(mods, reply)
        })
        .await
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<(), OpenflowError> {
        self.apply(Vec::new()).await
    }

    /// Sends one command and waits at most the client's timeout for its
    /// answer (the wait for room in the command queue included).
    async fn request<T>(
        &self,
        name: &'static str,
        make: impl FnOnce(oneshot::Sender<Result<T, OpenflowError>>) -> Command,
    ) -> Result<T, OpenflowError> {
        let (tx, rx) = oneshot::channel();
        let answered = async {
            self.commands
                .send(make(tx))
                .await
                .map_err(|_| OpenflowError::Closed)?;
            rx.await.map_err(|_| OpenflowError::Closed)?
        };
        tokio::time::timeout(self.timeout, answered)
            .await
            .map_err(|_| OpenflowError::Timeout {
                request: name,
                after: self.timeout,
            })?
    }
}

/// Reads until the peer's first message, which must be a HELLO.
async fn read_hello(
    reader: &mut OwnedReadHalf,
    decoder: &mut FrameDecoder,
) -> Result<(u32, Hello), OpenflowError> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some((xid, msg)) = decoder.next_message()? {
            return match msg {
                Message::Hello(hello) => Ok((xid, hello)),
                other => Err(OpenflowError::Decode(format!(
                    "expected HELLO as the switch's first message, got type {}",
                    other.msg_type()
                ))),
            };
        }
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Err(OpenflowError::Closed);
        }
        decoder.extend(&buf[..n]);
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
