//! The ERROR message (OpenFlow 1.3.5 §7.4.4) and readable names for its
//! type/code pairs, so logs say `BAD_MATCH/BAD_PREREQ` instead of `4/9`.

use std::fmt;

/// An ERROR from the switch. `data` holds (at least the first 64 bytes of)
/// the request that failed; for `error_type` 0xffff (experimenter) `code`
/// is the experimenter's code and `data` starts with its 32-bit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorMsg {
    pub error_type: u16,
    pub code: u16,
    pub data: Vec<u8>,
}

/// Error type: hello protocol failed.
pub const OFPET_HELLO_FAILED: u16 = 0;
/// Error type: request was not understood.
pub const OFPET_BAD_REQUEST: u16 = 1;
/// Error type: error in an action.
pub const OFPET_BAD_ACTION: u16 = 2;
/// Error type: error in an instruction.
pub const OFPET_BAD_INSTRUCTION: u16 = 3;
/// Error type: error in the match.
pub const OFPET_BAD_MATCH: u16 = 4;
/// Error type: problem modifying a flow entry.
pub const OFPET_FLOW_MOD_FAILED: u16 = 5;
/// HELLO_FAILED code: no compatible version.
pub const OFPHFC_INCOMPATIBLE: u16 = 0;
/// BAD_MATCH code: a field's prerequisite is missing.
pub const OFPBMC_BAD_PREREQ: u16 = 9;

/// Names of error types and, per type, of their codes (§7.4.4).
const NAMES: &[(&str, &[&str])] = &[
    ("HELLO_FAILED", &["INCOMPATIBLE", "EPERM"]),
    (
        "BAD_REQUEST",
        &[
            "BAD_VERSION",
            "BAD_TYPE",
            "BAD_MULTIPART",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "EPERM",
            "BAD_LEN",
            "BUFFER_EMPTY",
            "BUFFER_UNKNOWN",
            "BAD_TABLE_ID",
            "IS_SLAVE",
            "BAD_PORT",
            "BAD_PACKET",
            "MULTIPART_BUFFER_OVERFLOW",
        ],
    ),
    (
        "BAD_ACTION",
        &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_OUT_PORT",
            "BAD_ARGUMENT",
            "EPERM",
            "TOO_MANY",
            "BAD_QUEUE",
            "BAD_OUT_GROUP",
            "MATCH_INCONSISTENT",
            "UNSUPPORTED_ORDER",
            "BAD_TAG",
            "BAD_SET_TYPE",
            "BAD_SET_LEN",
            "BAD_SET_ARGUMENT",
        ],
    ),
    (
        "BAD_INSTRUCTION",
        &[
            "UNKNOWN_INST",
            "UNSUP_INST",
            "BAD_TABLE_ID",
            "UNSUP_METADATA",
            "UNSUP_METADATA_MASK",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_LEN",
            "EPERM",
        ],
    ),
    (
        "BAD_MATCH",
        &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_TAG",
            "BAD_DL_ADDR_MASK",
            "BAD_NW_ADDR_MASK",
            "BAD_WILDCARDS",
            "BAD_FIELD",
            "BAD_VALUE",
            "BAD_MASK",
            "BAD_PREREQ",
            "DUP_FIELD",
            "EPERM",
        ],
    ),
    (
        "FLOW_MOD_FAILED",
        &[
            "UNKNOWN",
            "TABLE_FULL",
            "BAD_TABLE_ID",
            "OVERLAP",
            "EPERM",
            "BAD_TIMEOUT",
            "BAD_COMMAND",
            "BAD_FLAGS",
        ],
    ),
    (
        "GROUP_MOD_FAILED",
        &[
            "GROUP_EXISTS",
            "INVALID_GROUP",
            "WEIGHT_UNSUPPORTED",
            "OUT_OF_GROUPS",
            "OUT_OF_BUCKETS",
            "CHAINING_UNSUPPORTED",
            "WATCH_UNSUPPORTED",
            "LOOP",
            "UNKNOWN_GROUP",
            "CHAINED_GROUP",
            "BAD_TYPE",
            "BAD_COMMAND",
            "BAD_BUCKET",
            "BAD_WATCH",
            "EPERM",
        ],
    ),
    (
        "PORT_MOD_FAILED",
        &[
            "BAD_PORT",
            "BAD_HW_ADDR",
            "BAD_CONFIG",
            "BAD_ADVERTISE",
            "EPERM",
        ],
    ),
    ("TABLE_MOD_FAILED", &["BAD_TABLE", "BAD_CONFIG", "EPERM"]),
    ("QUEUE_OP_FAILED", &["BAD_PORT", "BAD_QUEUE", "EPERM"]),
    ("SWITCH_CONFIG_FAILED", &["BAD_FLAGS", "BAD_LEN", "EPERM"]),
    ("ROLE_REQUEST_FAILED", &["STALE", "UNSUP", "BAD_ROLE"]),
    (
        "METER_MOD_FAILED",
        &[
            "UNKNOWN",
            "METER_EXISTS",
            "INVALID_METER",
            "UNKNOWN_METER",
            "BAD_COMMAND",
            "BAD_FLAGS",
            "BAD_RATE",
            "BAD_BURST",
            "BAD_BAND",
            "BAD_BAND_VALUE",
            "OUT_OF_METERS",
            "OUT_OF_BANDS",
        ],
    ),
    (
        "TABLE_FEATURES_FAILED",
        &[
            "BAD_TABLE",
            "BAD_METADATA",
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_ARGUMENT",
            "EPERM",
        ],
    ),
];

impl ErrorMsg {
    /// The spec's name of the error type without its `OFPET_` prefix,
    /// e.g. `BAD_MATCH`.
    pub fn type_name(&self) -> Option<&'static str> {
        if self.error_type == 0xffff {
            return Some("EXPERIMENTER");
        }
        NAMES
            .get(usize::from(self.error_type))
            .map(|(name, _)| *name)
    }

    /// The spec's name of the code without its prefix, e.g. `BAD_PREREQ`.
    pub fn code_name(&self) -> Option<&'static str> {
        let (_, codes) = NAMES.get(usize::from(self.error_type))?;
        codes.get(usize::from(self.code)).copied()
    }

    /// The xid of the failed request, read from the copy of its header in
    /// `data`.
    pub fn failed_xid(&self) -> Option<u32> {
        let b = self.data.get(4..8)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The message type of the failed request.
    pub fn failed_type(&self) -> Option<u8> {
        self.data.get(1).copied()
    }
}

/// `BAD_MATCH/BAD_PREREQ`, or numbers where no name is known.
impl fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.type_name() {
            Some(name) => write!(f, "{name}/")?,
            None => write!(f, "type {}/", self.error_type)?,
        }
        match self.code_name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "code {}", self.code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(error_type: u16, code: u16) -> ErrorMsg {
        ErrorMsg {
            error_type,
            code,
            data: vec![],
        }
    }

    #[test]
    fn names_of_common_errors() {
        assert_eq!(
            err(OFPET_BAD_MATCH, OFPBMC_BAD_PREREQ).to_string(),
            "BAD_MATCH/BAD_PREREQ"
        );
        assert_eq!(
            err(OFPET_HELLO_FAILED, OFPHFC_INCOMPATIBLE).to_string(),
            "HELLO_FAILED/INCOMPATIBLE"
        );
        assert_eq!(err(5, 2).to_string(), "FLOW_MOD_FAILED/BAD_TABLE_ID");
        assert_eq!(err(2, 4).to_string(), "BAD_ACTION/BAD_OUT_PORT");
        assert_eq!(err(13, 5).to_string(), "TABLE_FEATURES_FAILED/EPERM");
        assert_eq!(err(4, 99).to_string(), "BAD_MATCH/code 99");
        assert_eq!(err(99, 1).to_string(), "type 99/code 1");
        assert_eq!(err(0xffff, 1).to_string(), "EXPERIMENTER/code 1");
    }

    #[test]
    fn failed_request_is_read_from_data() {
        let e = ErrorMsg {
            error_type: 4,
            code: 9,
            data: vec![4, 14, 0, 80, 0, 0, 0, 42, 0],
        };
        assert_eq!(e.failed_xid(), Some(42));
        assert_eq!(e.failed_type(), Some(14));
        assert_eq!(err(4, 9).failed_xid(), None);
    }
}
