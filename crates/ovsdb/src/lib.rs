//! ovslab's own OVSDB client (RFC 7047, JSON-RPC 1.0 over a Unix socket).
//!
//! - [`Client`]: a cheap, cloneable handle; `transact`, `echo`, `list_dbs`
//!   and `monitor`, all usable concurrently.
//! - [`Monitor`]: the initial contents and later updates of one monitor.
//! - [`OvsdbError`]: what can go wrong, naming the socket, method or
//!   operation.
//!
//! Inside, `codec` splits the unframed byte stream into messages,
//! `message` tells JSON-RPC requests, notifications and responses apart, and
//! `connection` is the one task per socket that owns reading and writing
//! (answering the server's `echo` probes and routing monitor updates on its
//! own).
//!
//! Operations are plain `serde_json::Value`s in RFC 7047 §5.2 form; building
//! them is the caller's business.

mod client;
mod codec;
mod connection;
mod error;
mod message;
mod monitor;

#[cfg(test)]
mod fake_server_tests;

pub use client::{Client, DEFAULT_DEADLINE};
pub use codec::MAX_MESSAGE;
pub use connection::MAX_UNSENT;
pub use error::OvsdbError;
pub use monitor::Monitor;

/// The stream splitter and message parser, for the fuzz targets in `fuzz/`
/// only: whatever a server sends, they must not panic.
#[doc(hidden)]
pub mod decode {
    pub use crate::codec::{FrameError, MessageSplitter};
    pub use crate::message::Incoming;
}
