//! JSON-RPC 1.0 messages as OVSDB uses them (RFC 7047 §4).
//!
//! Three shapes travel in both directions: requests (`method`, `params`,
//! non-null `id`), notifications (the same with a null `id`) and responses
//! (`result`, `error`, `id`). This module only tells them apart and writes
//! them; what each method means is the connection's business.

use serde::Deserialize;
use serde_json::{Value, json};

/// A message received from the server.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A reply to one of our requests. Exactly one of `result` and `error`
    /// is meaningful: `error` is null on success.
    Response {
        id: Value,
        result: Value,
        error: Value,
    },
    /// The server asks something of us (in practice only `echo`, its
    /// inactivity probe) and expects a response with the same `id`.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// The server tells us something (`update` for monitors, `locked`,
    /// `stolen`) and expects no response.
    Notification { method: String, params: Value },
}

/// Every member any of the three shapes may have; absent members are null.
#[derive(Deserialize)]
struct Raw {
    method: Option<String>,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Value,
}

impl Incoming {
    /// Parses one complete message as split off the stream.
    pub fn parse(bytes: &[u8]) -> Result<Incoming, serde_json::Error> {
        let raw: Raw = serde_json::from_slice(bytes)?;
        Ok(match raw.method {
            Some(method) if raw.id.is_null() => Incoming::Notification {
                method,
                params: raw.params,
            },
            Some(method) => Incoming::Request {
                id: raw.id,
                method,
                params: raw.params,
            },
            None => Incoming::Response {
                id: raw.id,
                result: raw.result,
                error: raw.error,
            },
        })
    }
}

/// A request with an integer id (RFC 7047 §4.1).
pub fn request(id: u64, method: &str, params: &Value) -> Value {
    json!({"id": id, "method": method, "params": params})
}

/// A successful response to a request of the server's.
pub fn response(id: &Value, result: &Value) -> Value {
    json!({"id": id, "result": result, "error": null})
}

/// An error response, for requests we do not understand.
pub fn error_response(id: &Value, error: &str) -> Value {
    json!({"id": id, "result": null, "error": error})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_three_shapes_apart() {
        assert_eq!(
            Incoming::parse(br#"{"id":3,"result":["Open_vSwitch"],"error":null}"#).expect("parse"),
            Incoming::Response {
                id: json!(3),
                result: json!(["Open_vSwitch"]),
                error: Value::Null
            }
        );
        assert_eq!(
            Incoming::parse(br#"{"id":"echo","method":"echo","params":[]}"#).expect("parse"),
            Incoming::Request {
                id: json!("echo"),
                method: "echo".into(),
                params: json!([])
            }
        );
        assert_eq!(
            Incoming::parse(br#"{"id":null,"method":"update","params":["m1",{}]}"#).expect("parse"),
            Incoming::Notification {
                method: "update".into(),
                params: json!(["m1", {}])
            }
        );
    }

    #[test]
    fn error_responses_keep_the_error() {
        let got =
            Incoming::parse(br#"{"id":7,"result":null,"error":{"error":"unknown database"}}"#)
                .expect("parse");
        assert_eq!(
            got,
            Incoming::Response {
                id: json!(7),
                result: Value::Null,
                error: json!({"error": "unknown database"})
            }
        );
    }

    #[test]
    fn rejects_non_objects() {
        assert!(Incoming::parse(b"[1,2]").is_err());
    }

    #[test]
    fn writes_requests_and_responses() {
        assert_eq!(
            request(4, "transact", &json!(["Open_vSwitch"])),
            json!({"id": 4, "method": "transact", "params": ["Open_vSwitch"]})
        );
        assert_eq!(
            response(&json!("echo"), &json!([])),
            json!({"id": "echo", "result": [], "error": null})
        );
        assert_eq!(
            error_response(&json!(1), "unknown method"),
            json!({"id": 1, "result": null, "error": "unknown method"})
        );
    }
}
