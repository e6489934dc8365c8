//! The metadata service as the instances of a lab reach it: ovslabd
//! listens inside each router's namespace on the metadata proxy's port
//! (where the L3 agent's rules redirect 169.254.169.254:80) and inside each
//! isolated network's qdhcp namespace on 169.254.169.254:80, and answers
//! each request for the instance whose fixed address it comes from
//! ([`ovslab_topology::metadata::answer`]). It plays the proxy, the
//! metadata agent and Nova's metadata API at once; no Python.
//!
//! Instances are untrusted clients: each connection has a deadline, the
//! number of connections at once is bounded, and only `GET` of a short
//! path is answered.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ovslab_topology::metadata::{InstanceMetadata, MetadataSpec, answer};

/// How long one connection may take, request and answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once, per listener.
const CONNECTIONS: usize = 64;
/// The longest path answered.
const MAX_PATH: usize = 256;

type Table = Arc<RwLock<Vec<InstanceMetadata>>>;

/// One listener and what it answers.
#[derive(Debug)]
struct Server {
    listen: SocketAddrV4,
    /// The namespace's inode when the listener was made: a namespace made
    /// again needs a new listener.
    inode: Option<u64>,
    table: Table,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every metadata listener of the daemon, by namespace.
#[derive(Debug, Default)]
pub struct Servers {
    by_namespace: Mutex<HashMap<String, Server>>,
}

impl Servers {
    /// Makes the service answer as `spec` says: a listener made (again, if
    /// its namespace was made again), its instances updated. Returns a
    /// line when it made a listener.
    pub fn ensure(&self, spec: &MetadataSpec) -> std::io::Result<Option<String>> {
        let inode = ovslab_netlink::netns::inode(&spec.namespace);
        let mut servers = self.by_namespace.lock().expect("metadata servers");
        if let Some(s) = servers.get(&spec.namespace)
            && s.listen == spec.listen
            && s.inode == inode
            && !s.task.is_finished()
        {
            *s.table.write().expect("metadata table") = spec.instances.clone();
            return Ok(None);
        }
        servers.remove(&spec.namespace);
        let listener = bind_in(&spec.namespace, spec.listen)?;
        let table: Table = Arc::new(RwLock::new(spec.instances.clone()));
        let task = tokio::spawn(serve(listener, table.clone(), spec.serves.clone()));
        servers.insert(
            spec.namespace.clone(),
            Server {
                listen: spec.listen,
                inode,
                table,
                task,
            },
        );
        Ok(Some(format!(
            "{}: metadata service on {} (for {})",
            spec.namespace, spec.listen, spec.serves
        )))
    }

    /// Stops the listeners of namespaces starting with `prefix` that are
    /// not in `keep`; one line each.
    pub fn retain(&self, prefix: &str, keep: &BTreeSet<String>) -> Vec<String> {
        let mut servers = self.by_namespace.lock().expect("metadata servers");
        let gone: Vec<String> = servers
            .keys()
            .filter(|ns| ns.starts_with(prefix) && !keep.contains(*ns))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|ns| servers.remove(&ns).map(|_| ns))
            .map(|ns| format!("{ns}: metadata service stopped"))
            .collect()
    }
}

/// A listening socket made inside `namespace`.
fn bind_in(namespace: &str, addr: SocketAddrV4) -> std::io::Result<tokio::net::TcpListener> {
    let listener = ovslab_netlink::netns::run_in(namespace, || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .map_err(std::io::Error::other)?;
    tokio::net::TcpListener::from_std(listener)
}

async fn serve(listener: tokio::net::TcpListener, table: Table, serves: String) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(serves, error = %e, "metadata service: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Too many at once: this one is closed unanswered.
            continue;
        };
        let table = table.clone();
        tokio::spawn(async move {
            let source = match peer {
                SocketAddr::V4(a) => *a.ip(),
                SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let service = hyper::service::service_fn(move |req| {
                let table = table.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&table, source, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(slot);
        });
    }
}

fn respond(table: &Table, source: Ipv4Addr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    let path = req.uri().path();
    if req.method() != Method::GET || path.len() > MAX_PATH {
        return reply(StatusCode::BAD_REQUEST, "text/plain", String::new());
    }
    let instances = table.read().expect("metadata table");
    match answer(&instances, source, path) {
        Some((kind, body)) => reply(StatusCode::OK, kind, body),
        None => reply(StatusCode::NOT_FOUND, "text/plain", "404 Not Found".into()),
    }
}
