//! [`Monitor`]: one RFC 7047 §4.1.5 monitor and its stream of updates.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::connection::MonitorRoute;
use crate::{Client, OvsdbError};

/// A monitor registered with the server: the table contents when it was
/// made, then every change as `<table-updates>` (RFC 7047 §4.1.6).
///
/// Updates queue without bound until [`Monitor::next`] takes them, so a
/// slow reader never blocks the shared connection. Dropping a `Monitor`
/// without [`Monitor::cancel`] is allowed: the connection cancels it on the
/// server when the next update for it arrives.
#[derive(Debug)]
pub struct Monitor {
    id: String,
    initial: Value,
    updates: mpsc::UnboundedReceiver<Value>,
    /// Keeps the connection alive for as long as the monitor is.
    client: Client,
}

impl Monitor {
    pub(crate) fn new(
        id: String,
        initial: Value,
        updates: mpsc::UnboundedReceiver<Value>,
        client: Client,
    ) -> Self {
        Monitor {
            id,
            initial,
            updates,
            client,
        }
    }

    /// The `<json-value>` id this monitor has on the wire.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The initial `<table-updates>`: every selected row as an insert.
    pub fn initial(&self) -> &Value {
        &self.initial
    }

    /// The next `<table-updates>`, or `None` once the connection closed.
    pub async fn next(&mut self) -> Option<Value> {
        self.updates.recv().await
    }

    /// RFC 7047 §4.1.7 `monitor_cancel`: the server stops sending updates.
    pub async fn cancel(self) -> Result<(), OvsdbError> {
        let route = MonitorRoute::Remove(self.id.clone());
        self.client
            .call("monitor_cancel", json!([self.id]), Some(route))
            .await?;
        Ok(())
    }
}
