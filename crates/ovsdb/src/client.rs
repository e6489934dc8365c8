//! [`Client`]: the handle callers use, one method per RFC 7047 §4.1 method
//! that ovslab needs.
//!
//! A `Client` is only a sender to the connection task (see
//! [`crate::connection`]), so cloning it is cheap and every clone shares the
//! one connection; the task stops when the last clone (and the last
//! [`Monitor`]) is dropped.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{self, Call, MonitorRoute};
use crate::{Monitor, OvsdbError};

/// How long a request may wait for its answer unless the caller says
/// otherwise. The largest transaction ovslab sends (a compute node of 50
/// instances built from scratch: 156 operations) is answered in at most
/// 0.3 s even while ten nodes are built at once on two cores; a server that
/// has not answered in 5 s is hung (stopped or stuck), not busy.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// A connection to one `ovsdb-server`.
#[derive(Debug, Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
    /// Source of monitor ids, unique per connection (RFC 7047 §4.1.5 lets
    /// the client choose any JSON value).
    next_monitor: Arc<AtomicU64>,
    /// How long each request may wait for its answer.
    deadline: Duration,
}

impl Client {
    /// Connects to the server's Unix socket (`--remote=punix:PATH`); the
    /// connect and every later request are bounded by [`DEFAULT_DEADLINE`].
    pub async fn connect(path: &Path) -> Result<Client, OvsdbError> {
        Client::connect_with_deadline(path, DEFAULT_DEADLINE).await
    }

    /// Like [`Client::connect`], with `deadline` for the connect and for
    /// each request's answer.
    pub async fn connect_with_deadline(
        path: &Path,
        deadline: Duration,
    ) -> Result<Client, OvsdbError> {
        // A stopped server's listening socket still accepts connections
        // (the kernel completes them) until its backlog is full; then
        // connect blocks.
        let stream = tokio::time::timeout(deadline, UnixStream::connect(path))
            .await
            .map_err(|_| OvsdbError::Timeout {
                method: "connect",
                after: deadline,
            })?
            .map_err(|source| OvsdbError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Client::over(stream, path.display().to_string()).with_deadline(deadline))
    }

    /// Starts a client over any byte stream; `label` names it in logs.
    pub(crate) fn over<S>(stream: S, label: String) -> Client
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Client {
            calls: connection::spawn(stream, label),
            next_monitor: Arc::new(AtomicU64::new(0)),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The same connection, whose requests wait at most `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> Client {
        self.deadline = deadline;
        self
    }

    /// Sends one request and waits for its result, at most the client's
    /// deadline: a request that was not answered by then fails with
    /// [`OvsdbError::Timeout`]. Its answer, should it come later, is
    /// dropped by the connection task (nobody waits for it any more).
    pub(crate) async fn call(
        &self,
        method: &'static str,
        params: Value,
        route: Option<MonitorRoute>,
    ) -> Result<Value, OvsdbError> {
        let call = async {
            let (reply, answer) = oneshot::channel();
            self.calls
                .send(Call {
                    method,
                    params,
                    reply,
                    route,
                })
                .await
                .map_err(|_| OvsdbError::Closed)?;
            answer.await.map_err(|_| OvsdbError::Closed)?
        };
        tokio::time::timeout(self.deadline, call)
            .await
            .map_err(|_| OvsdbError::Timeout {
                method,
                after: self.deadline,
            })?
    }

    /// RFC 7047 §4.1.3 `transact`: runs `ops` atomically on `db` and returns
    /// one result per operation.
    ///
    /// If any result (or the extra one a failed commit appends) carries an
    /// `error`, the server has rolled the whole transaction back, and this
    /// returns [`OvsdbError::Transaction`] naming the first failing
    /// operation.
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let kinds: Vec<String> = ops
            .iter()
            .map(|op| {
                op.get("op")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(Value::from(db));
        params.extend(ops);
        let result = self.call("transact", Value::Array(params), None).await?;
        let Value::Array(results) = result else {
            return Err(OvsdbError::Protocol {
                method: "transact".into(),
                detail: format!("expected an array of results, got {result}"),
            });
        };
        check_results(&kinds, &results)?;
        Ok(results)
    }

    /// RFC 7047 §4.1.11 `echo`: checks that the server is alive and answers.
    pub async fn echo(&self) -> Result<(), OvsdbError> {
        let params = json!(["ovslab"]);
        let result = self.call("echo", params.clone(), None).await?;
        if result != params {
            return Err(OvsdbError::Protocol {
                method: "echo".into(),
                detail: format!("sent {params}, got back {result}"),
            });
        }
        Ok(())
    }

    /// RFC 7047 §4.1.1 `list_dbs`: the names of the server's databases.
    pub async fn list_dbs(&self) -> Result<Vec<String>, OvsdbError> {
        let result = self.call("list_dbs", json!([]), None).await?;
        Ok(serde_json::from_value(result)?)
    }

    /// RFC 7047 §4.1.5 `monitor`: `requests` is the `<monitor-requests>`
    /// object (table name to request). Returns the initial contents and the
    /// stream of later `update` notifications (§4.1.6) for this monitor.
    pub async fn monitor(&self, db: &str, requests: Value) -> Result<Monitor, OvsdbError> {
        let n = self.next_monitor.fetch_add(1, Ordering::Relaxed);
        let id = format!("ovslab-monitor-{n}");
        // Unbounded so that a Monitor nobody reads can never stall the
        // connection task, and with it every other caller.
        let (updates_tx, updates) = mpsc::unbounded_channel();
        let route = MonitorRoute::Add {
            monitor: id.clone(),
            updates: updates_tx,
        };
        let initial = self
            .call("monitor", json!([db, id, requests]), Some(route))
            .await?;
        if !initial.is_object() {
            return Err(OvsdbError::Protocol {
                method: "monitor".into(),
                detail: format!("expected table-updates, got {initial}"),
            });
        }
        Ok(Monitor::new(id, initial, updates, self.clone()))
    }
}

/// Finds the first failed operation in `transact` results (RFC 7047 §4.1.3:
/// a failed operation's result has an `error` member; one more result than
/// operations reports a failed commit).
fn check_results(kinds: &[String], results: &[Value]) -> Result<(), OvsdbError> {
    let failed = results
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.get("error").filter(|e| !e.is_null()).map(|e| (i, r, e)));
    let Some((index, result, error)) = failed else {
        return Ok(());
    };
    Err(OvsdbError::Transaction {
        index,
        op: kinds
            .get(index)
            .cloned()
            .unwrap_or_else(|| "commit".to_string()),
        error: error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string),
        details: result
            .get("details")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn successful_results_pass() {
        let results = [json!({"uuid": ["uuid", "x"]}), json!({"count": 1})];
        assert!(check_results(&kinds(&["insert", "mutate"]), &results).is_ok());
    }

    #[test]
    fn the_first_failed_operation_is_named() {
        let results = [
            json!({"rows": []}),
            json!({"error": "constraint violation", "details": "bad name"}),
            Value::Null,
        ];
        let Err(OvsdbError::Transaction {
            index,
            op,
            error,
            details,
        }) = check_results(&kinds(&["select", "insert", "mutate"]), &results)
        else {
            panic!("expected a transaction error");
        };
        assert_eq!(
            (index, op.as_str(), error.as_str()),
            (1, "insert", "constraint violation")
        );
        assert_eq!(details.as_deref(), Some("bad name"));
    }

    #[test]
    fn a_failed_commit_is_named_commit() {
        let results = [
            json!({"uuid": ["uuid", "x"]}),
            json!({"error": "referential integrity violation"}),
        ];
        let Err(OvsdbError::Transaction {
            index, op, details, ..
        }) = check_results(&kinds(&["insert"]), &results)
        else {
            panic!("expected a transaction error");
        };
        assert_eq!((index, op.as_str(), details), (1, "commit", None));
    }
}
