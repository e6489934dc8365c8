//! The one error type of this crate.
//!
//! Messages are lowercase, name the socket, method or operation involved, and
//! leave the underlying cause to [`std::error::Error::source`] so that an
//! error chain printed by the daemon reads
//! `cannot connect to OVSDB at /run/…/db.sock: No such file or directory`
//! without saying anything twice.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Everything that can go wrong talking to an `ovsdb-server`.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    /// The Unix socket could not be opened (server not running, wrong path,
    /// permissions).
    #[error("cannot connect to OVSDB at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON value could not be encoded, or a reply did not have the shape
    /// RFC 7047 gives it (for example `list_dbs` not returning strings).
    #[error("malformed OVSDB JSON")]
    Decode(#[from] serde_json::Error),

    /// A reply was valid JSON but not what the method promises.
    #[error("unexpected OVSDB {method} reply: {detail}")]
    Protocol { method: String, detail: String },

    /// The connection ended (EOF, I/O error, an undecodable stream, a
    /// message over the size limit, a server that does not read) before
    /// the reply arrived, or had already ended when the request was made.
    /// The reason is logged by the connection task.
    #[error("OVSDB connection closed")]
    Closed,

    /// The server did not answer within the client's deadline: it is
    /// stopped, stuck, or far busier than any request of ovslab should
    /// make it. The connection stays open; a later answer is dropped.
    #[error("OVSDB did not answer the {method} request within {}", seconds(after))]
    Timeout {
        method: &'static str,
        after: Duration,
    },

    /// The server answered the JSON-RPC request itself with an error
    /// (RFC 7047 §4.1: e.g. `unknown database`).
    #[error("OVSDB {method} request failed: {}", describe(error))]
    Rpc { method: String, error: Value },

    /// One operation of a transaction, or its commit, failed (RFC 7047
    /// §4.1.3); the whole transaction was rolled back. `index` is the
    /// operation's position in the request; an index equal to the number
    /// of operations means the commit itself failed (e.g. a referential
    /// integrity violation), and `op` is then `"commit"`.
    #[error(
        "OVSDB transaction failed at operation {index} ({op}): {error}{}",
        details.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Transaction {
        index: usize,
        op: String,
        error: String,
        details: Option<String>,
    },
}

/// A deadline as people say it: `5 s`, `0.2 s`.
fn seconds(d: &Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl OvsdbError {
    /// Whether the server did not answer in time (rather than refused or
    /// went away): the sign of a hung `ovsdb-server`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, OvsdbError::Timeout { .. })
    }
}

/// Renders an RPC error value: RFC 7047 errors are objects with an `error`
/// string and an optional `details` string; anything else is shown as JSON.
fn describe(error: &Value) -> String {
    match (
        error.get("error").and_then(Value::as_str),
        error.get("details").and_then(Value::as_str),
    ) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_string(),
        _ => match error.as_str() {
            Some(s) => s.to_string(),
            None => error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_error_names_the_socket_and_leaves_the_cause_to_source() {
        let e = OvsdbError::Connect {
            path: "/run/ovslab/db.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to OVSDB at /run/ovslab/db.sock"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn rpc_errors_show_error_and_details() {
        let e = OvsdbError::Rpc {
            method: "monitor".into(),
            error: json!({"error": "unknown database", "details": "db Nope"}),
        };
        assert_eq!(
            e.to_string(),
            "OVSDB monitor request failed: unknown database: db Nope"
        );
        let e = OvsdbError::Rpc {
            method: "echo".into(),
            error: json!("bad"),
        };
        assert_eq!(e.to_string(), "OVSDB echo request failed: bad");
    }

    #[test]
    fn timeouts_name_the_method_and_the_deadline() {
        let e = OvsdbError::Timeout {
            method: "transact",
            after: Duration::from_secs(5),
        };
        assert_eq!(
            e.to_string(),
            "OVSDB did not answer the transact request within 5 s"
        );
        assert!(e.is_timeout());
        let e = OvsdbError::Timeout {
            method: "echo",
            after: Duration::from_millis(200),
        };
        assert_eq!(
            e.to_string(),
            "OVSDB did not answer the echo request within 0.2 s"
        );
    }

    #[test]
    fn transaction_errors_name_the_operation() {
        let e = OvsdbError::Transaction {
            index: 2,
            op: "insert".into(),
            error: "constraint violation".into(),
            details: Some("duplicate name".into()),
        };
        assert_eq!(
            e.to_string(),
            "OVSDB transaction failed at operation 2 (insert): constraint violation: duplicate name"
        );
        let e = OvsdbError::Transaction {
            index: 0,
            op: "select".into(),
            error: "unknown table".into(),
            details: None,
        };
        assert_eq!(
            e.to_string(),
            "OVSDB transaction failed at operation 0 (select): unknown table"
        );
    }
}
