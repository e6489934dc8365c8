//! Watching a bridge's flow table: Open vSwitch's flow monitor extension
//! (`NXST_FLOW_MONITOR`, described in OVS's `nicira-ext.h`), which is what
//! `ovs-ofctl monitor BRIDGE watch:` uses.
//!
//! OVS offers the Nicira form of the monitor on OpenFlow 1.0 to 1.2 only
//! (OpenFlow 1.3 has an ONF form with OpenFlow 1.4 bodies), so the monitor
//! connection speaks OpenFlow 1.0 — every bridge of a lab accepts it
//! (`protocols=[OpenFlow10, OpenFlow13]`, as Neutron's agent sets). Only
//! the framing and the few fixed-layout messages below are used; the flows
//! themselves are read with OpenFlow 1.3 by [`crate::Client`].
//!
//! A [`FlowMonitor`] reports that the table changed, not how: whoever
//! listens reads the flows again. Flows that come and go by themselves are
//! not news: a flow with a timeout (what a `learn()` action installs) and
//! a flow that expired.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::OpenflowError;

const OFP10_VERSION: u8 = 0x01;
const OFPT_HELLO: u8 = 0;
const OFPT_ERROR: u8 = 1;
const OFPT_ECHO_REQUEST: u8 = 2;
const OFPT_ECHO_REPLY: u8 = 3;
const OFPT_VENDOR: u8 = 4;
const OFPT10_STATS_REQUEST: u8 = 16;
const OFPT10_STATS_REPLY: u8 = 17;
const OFPST_VENDOR: u16 = 0xffff;
const NX_VENDOR_ID: u32 = 0x0000_2320;
const NXST_FLOW_MONITOR: u32 = 2;
const NXT_FLOW_MONITOR_PAUSED: u32 = 22;
const NXT_FLOW_MONITOR_RESUMED: u32 = 23;
/// `NXFMF_ADD | NXFMF_DELETE | NXFMF_MODIFY`: every change, no initial
/// dump, no actions.
const WATCH_CHANGES: u16 = (1 << 1) | (1 << 2) | (1 << 3);
const OFPP10_NONE: u16 = 0xffff;
const ALL_TABLES: u8 = 0xff;
/// A stats reply's header in OpenFlow 1.0 with a Nicira subtype: header,
/// stats type and flags, vendor, subtype, pad (`nicira10_stats_msg`).
const NX10_STATS_HEADER: usize = 24;
const HEADER: usize = 8;
/// `nx_flow_update_full` without its match: length, event, reason,
/// priority, idle and hard timeouts, match length, table, pad, cookie.
const UPDATE_FULL: usize = 24;
const NXFME_DELETED: u16 = 1;
const NXFME_ABBREV: u16 = 3;
/// `OFPRR_IDLE_TIMEOUT`, `OFPRR_HARD_TIMEOUT`: a flow that expired.
const EXPIRED: [u16; 2] = [0, 1];

/// One bridge's flow monitor, on a connection of its own.
#[derive(Debug)]
pub struct FlowMonitor {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl FlowMonitor {
    /// Connects to a bridge's management socket, says hello in OpenFlow
    /// 1.0 and starts a monitor of every table for every change; `timeout`
    /// bounds all of that, up to the switch's (empty) first reply.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<FlowMonitor, OpenflowError> {
        let start = async {
            let mut stream =
                UnixStream::connect(path)
                    .await
                    .map_err(|source| OpenflowError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })?;
            stream.write_all(&header(OFPT_HELLO, HEADER, 0)).await?;
            let mut monitor = FlowMonitor {
                stream,
                buf: Vec::new(),
            };
            let hello = monitor.frame().await?;
            if hello[1] != OFPT_HELLO || hello[0] < OFP10_VERSION {
                return Err(OpenflowError::Decode(format!(
                    "expected a hello, got message type {} version {}",
                    hello[1], hello[0]
                )));
            }
            monitor.stream.write_all(&monitor_request(1)).await?;
            // The reply to the request itself (empty without
            // NXFMF_INITIAL), or an error.
            loop {
                let frame = monitor.frame().await?;
                match frame[1] {
                    OFPT_ERROR => return Err(refused(&frame)),
                    OFPT10_STATS_REPLY if frame.len() >= NX10_STATS_HEADER => break,
                    _ => monitor.answer(&frame).await?,
                }
            }
            Ok(monitor)
        };
        tokio::time::timeout(timeout, start)
            .await
            .map_err(|_| OpenflowError::Timeout {
                request: "flow monitor",
                after: timeout,
            })?
    }

    /// Waits until the flow table changes (or the switch paused the
    /// monitor, after which its view is incomplete). An error means the
    /// connection is gone: the switch went away.
    pub async fn changed(&mut self) -> Result<(), OpenflowError> {
        loop {
            let frame = self.frame().await?;
            let news = match frame[1] {
                OFPT10_STATS_REPLY => updates_are_news(&frame),
                OFPT_VENDOR => matches!(
                    vendor_subtype(&frame),
                    Some(NXT_FLOW_MONITOR_PAUSED | NXT_FLOW_MONITOR_RESUMED)
                ),
                _ => {
                    self.answer(&frame).await?;
                    false
                }
            };
            if news {
                return Ok(());
            }
        }
    }

    /// Answers an echo request; ignores anything else.
    async fn answer(&mut self, frame: &[u8]) -> Result<(), OpenflowError> {
        if frame[1] == OFPT_ECHO_REQUEST {
            let mut reply = frame.to_vec();
            reply[0] = OFP10_VERSION;
            reply[1] = OFPT_ECHO_REPLY;
            self.stream.write_all(&reply).await?;
        }
        Ok(())
    }

    /// The next whole message.
    async fn frame(&mut self) -> Result<Vec<u8>, OpenflowError> {
        loop {
            if self.buf.len() >= HEADER {
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if len < HEADER {
                    return Err(OpenflowError::Decode(format!("message length {len}")));
                }
                if self.buf.len() >= len {
                    return Ok(self.buf.drain(..len).collect());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(OpenflowError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An OpenFlow 1.0 header.
fn header(msg_type: u8, len: usize, xid: u32) -> Vec<u8> {
    let mut out = vec![OFP10_VERSION, msg_type];
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&xid.to_be_bytes());
    out
}

/// `NXST_FLOW_MONITOR` request with one `nx_flow_monitor_request`: every
/// table, any output port, an empty match.
fn monitor_request(xid: u32) -> Vec<u8> {
    let len = NX10_STATS_HEADER + 16;
    let mut out = header(OFPT10_STATS_REQUEST, len, xid);
    out.extend_from_slice(&OFPST_VENDOR.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // flags
    out.extend_from_slice(&NX_VENDOR_ID.to_be_bytes());
    out.extend_from_slice(&NXST_FLOW_MONITOR.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // pad
    out.extend_from_slice(&1u32.to_be_bytes()); // monitor id
    out.extend_from_slice(&WATCH_CHANGES.to_be_bytes());
    out.extend_from_slice(&OFPP10_NONE.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // match_len
    out.push(ALL_TABLES);
    out.extend_from_slice(&[0; 5]);
    out
}

/// The subtype of a Nicira vendor message (`nicira_header`).
fn vendor_subtype(frame: &[u8]) -> Option<u32> {
    let vendor = u32::from_be_bytes(frame.get(8..12)?.try_into().ok()?);
    let subtype = u32::from_be_bytes(frame.get(12..16)?.try_into().ok()?);
    (vendor == NX_VENDOR_ID).then_some(subtype)
}

/// Whether a monitor reply tells of a change someone made: any update but
/// those of flows with a timeout (learned) and of expired flows.
fn updates_are_news(frame: &[u8]) -> bool {
    let Some(mut rest) = frame.get(NX10_STATS_HEADER..) else {
        return false;
    };
    while rest.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let event = u16::from_be_bytes([rest[2], rest[3]]);
        if len < 4 || len > rest.len() {
            // Malformed: better read the flows again than miss a change.
            return true;
        }
        let update = &rest[..len];
        rest = &rest[len..];
        if event == NXFME_ABBREV || update.len() < UPDATE_FULL {
            return true;
        }
        let field = |at: usize| u16::from_be_bytes([update[at], update[at + 1]]);
        let (reason, idle, hard) = (field(4), field(8), field(10));
        let learned = idle != 0 || hard != 0;
        let expired = event == NXFME_DELETED && EXPIRED.contains(&reason);
        if !learned && !expired {
            return true;
        }
    }
    false
}

/// The switch's error, as the monitor's refusal.
fn refused(frame: &[u8]) -> OpenflowError {
    let field = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0)
    };
    OpenflowError::Decode(format!(
        "the switch refused the flow monitor: error type {} code {}",
        field(8),
        field(10)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A monitor reply holding `updates` (each: event, reason, idle, hard).
    fn reply(updates: &[(u16, u16, u16, u16)]) -> Vec<u8> {
        let mut body = Vec::new();
        for &(event, reason, idle, hard) in updates {
            body.extend_from_slice(&(UPDATE_FULL as u16).to_be_bytes());
            body.extend_from_slice(&event.to_be_bytes());
            body.extend_from_slice(&reason.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes()); // priority
            body.extend_from_slice(&idle.to_be_bytes());
            body.extend_from_slice(&hard.to_be_bytes());
            body.extend_from_slice(&0u16.to_be_bytes()); // match_len
            body.extend_from_slice(&[20, 0]);
            body.extend_from_slice(&[0; 8]);
        }
        let mut out = header(OFPT10_STATS_REPLY, NX10_STATS_HEADER + body.len(), 0);
        out.extend_from_slice(&OFPST_VENDOR.to_be_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&NX_VENDOR_ID.to_be_bytes());
        out.extend_from_slice(&NXST_FLOW_MONITOR.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn the_request_is_a_nicira_stats_request_of_40_bytes() {
        let r = monitor_request(7);
        assert_eq!(r.len(), 40);
        assert_eq!(&r[..8], &[1, 16, 0, 40, 0, 0, 0, 7]);
        assert_eq!(&r[8..10], &[0xff, 0xff], "OFPST_VENDOR");
        assert_eq!(&r[12..20], &[0, 0, 0x23, 0x20, 0, 0, 0, 2]);
        assert_eq!(&r[28..30], &[0, 0b1110], "add, delete, modify");
        assert_eq!(r[34], 0xff, "every table");
    }

    #[test]
    fn a_change_someone_made_is_news_learned_and_expired_flows_are_not() {
        assert!(!updates_are_news(&reply(&[])), "the empty first reply");
        assert!(updates_are_news(&reply(&[(0, 0, 0, 0)])), "added");
        assert!(updates_are_news(&reply(&[(1, 2, 0, 0)])), "deleted");
        assert!(updates_are_news(&reply(&[(2, 0, 0, 0)])), "modified");
        assert!(!updates_are_news(&reply(&[(0, 0, 0, 300)])), "learned");
        assert!(!updates_are_news(&reply(&[(1, 1, 0, 300)])), "expired");
        assert!(
            updates_are_news(&reply(&[(0, 0, 0, 300), (1, 2, 0, 0)])),
            "a deletion after a learned flow"
        );
        let mut cut = reply(&[(0, 0, 0, 0)]);
        cut[NX10_STATS_HEADER + 1] = 200;
        assert!(updates_are_news(&cut), "malformed is news");
    }

    #[test]
    fn pauses_are_vendor_messages_of_nicira() {
        let mut paused = header(OFPT_VENDOR, 16, 0);
        paused.extend_from_slice(&NX_VENDOR_ID.to_be_bytes());
        paused.extend_from_slice(&NXT_FLOW_MONITOR_PAUSED.to_be_bytes());
        assert_eq!(vendor_subtype(&paused), Some(NXT_FLOW_MONITOR_PAUSED));
    }
}
