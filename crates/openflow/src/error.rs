//! The errors of talking OpenFlow to a switch.

use std::path::PathBuf;
use std::time::Duration;

use crate::error_msg::ErrorMsg;
use crate::wire::{DecodeError, EncodeError};

/// Why an OpenFlow request failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenflowError {
    /// The management socket could not be opened (no such bridge, vswitchd
    /// not running, permissions).
    #[error("cannot connect to openflow socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed during the handshake.
    #[error("i/o error on the openflow connection")]
    Io(#[from] std::io::Error),
    /// The switch sent bytes that are not OpenFlow 1.3.
    #[error("malformed openflow message: {0}")]
    Decode(String),
    /// A message too large for OpenFlow's length fields.
    #[error("cannot encode openflow message: {0}")]
    Encode(String),
    /// The connection is gone; reconnect.
    #[error("openflow connection closed")]
    Closed,
    /// The switch does not offer OpenFlow 1.3 (set the bridge's
    /// `protocols` to include OpenFlow13).
    #[error("switch does not speak OpenFlow 1.3; its hello offers wire versions {peer_versions:?}")]
    Version { peer_versions: Vec<u8> },
    /// The switch answered with ERROR messages. Each entry is the index of
    /// the failed message in the request (the flow_mod's position in the
    /// batch given to `apply`; 0 for single requests) and the error.
    #[error("{}", rejected_summary(errors))]
    Rejected { errors: Vec<(usize, ErrorMsg)> },
    /// The switch's reply to `request` grew past `limit` bytes, far more
    /// than any lab's bridge holds: it was dropped, not gathered further.
    #[error(
        "the switch's reply to the {request} passed {received} bytes, more than the {} MiB accepted",
        limit >> 20
    )]
    ReplyTooLarge {
        request: &'static str,
        received: usize,
        limit: usize,
    },
    /// The switch did not answer `request` within the client's deadline:
    /// vswitchd is stopped or stuck.
    #[error("the switch did not answer the {request} within {} s", after.as_secs_f64())]
    Timeout {
        request: &'static str,
        after: Duration,
    },
}

impl OpenflowError {
    /// Whether the switch did not answer in time: the sign of a hung
    /// `ovs-vswitchd`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, OpenflowError::Timeout { .. })
    }
}

fn rejected_summary(errors: &[(usize, ErrorMsg)]) -> String {
    match errors {
        [] => "switch rejected the request".to_string(),
        [(i, e)] => format!("switch rejected message #{i}: {e}"),
        [(i, e), rest @ ..] => format!(
            "switch rejected message #{i}: {e} (and {} more)",
            rest.len()
        ),
    }
}

impl From<DecodeError> for OpenflowError {
    fn from(e: DecodeError) -> Self {
        OpenflowError::Decode(e.to_string())
    }
}

impl From<EncodeError> for OpenflowError {
    fn from(e: EncodeError) -> Self {
        OpenflowError::Encode(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_name_the_request_and_the_deadline() {
        let e = OpenflowError::Timeout {
            request: "flow stats request",
            after: Duration::from_secs(10),
        };
        assert_eq!(
            e.to_string(),
            "the switch did not answer the flow stats request within 10 s"
        );
        assert!(e.is_timeout());
    }

    #[test]
    fn rejected_names_index_and_error() {
        let e = |code| ErrorMsg {
            error_type: 4,
            code,
            data: vec![],
        };
        let one = OpenflowError::Rejected {
            errors: vec![(3, e(9))],
        };
        assert_eq!(
            one.to_string(),
            "switch rejected message #3: BAD_MATCH/BAD_PREREQ"
        );
        let two = OpenflowError::Rejected {
            errors: vec![(3, e(9)), (5, e(6))],
        };
        assert_eq!(
            two.to_string(),
            "switch rejected message #3: BAD_MATCH/BAD_PREREQ (and 1 more)"
        );
    }
}
