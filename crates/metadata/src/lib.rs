//! The metadata service as the instances of a lab reach it: ovslabd
//! listens inside each router's namespace on the metadata proxy's port
//! (where the L3 agent's rules redirect 169.254.169.254:80) and inside each
//! isolated network's qdhcp namespace on 169.254.169.254:80, and answers
//! each request for the instance whose fixed address it comes from
//! ([`ovslab_topology::metadata::answer`]). It plays the proxy, the
//! metadata agent and Nova's metadata API at once; no Python.
//!
//! Instances are untrusted clients: each connection has a deadline, the
//! number of connections at once is bounded in all and for each source
//! address, each source's requests are bounded in rate, and only `GET` of
//! a short path is answered.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ovslab_topology::metadata::{InstanceMetadata, MetadataSpec, answer};

/// How long one connection may take, request and answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once, per listener.
const CONNECTIONS: usize = 64;
/// Connections served at once from one source address: one instance
/// cannot take a listener's every connection from the others behind it.
pub const CONNECTIONS_PER_SOURCE: usize = 8;
/// Requests a source may make each second, on average; beyond its burst
/// it gets 429. cloud-init reads a few dozen paths at boot; a flood of
/// pipelined requests from one instance took 40 % of a core of ovslabd,
/// whose audits count their CPU.
pub const REQUESTS_PER_SECOND: f64 = 50.0;
/// Requests a source may make at once, from a full bucket.
pub const REQUEST_BURST: f64 = 100.0;
/// Sources remembered per listener, at most: idle ones are forgotten
/// beyond it.
const SOURCES: usize = 4096;
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

/// What a listener knows of one source address.
#[derive(Debug)]
struct Source {
    connections: usize,
    tokens: f64,
    filled: Instant,
}

/// Each source's connections and request budget (a token bucket).
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<Ipv4Addr, Source>>);

impl Sources {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Source>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection from `source`, if it may have one more.
    fn connect(&self, source: Ipv4Addr) -> bool {
        let mut table = self.table();
        if table.len() >= SOURCES && !table.contains_key(&source) {
            table.retain(|_, s| s.connections > 0);
        }
        let s = table.entry(source).or_insert_with(|| Source {
            connections: 0,
            tokens: REQUEST_BURST,
            filled: Instant::now(),
        });
        if s.connections >= CONNECTIONS_PER_SOURCE {
            return false;
        }
        s.connections += 1;
        true
    }

    fn disconnect(&self, source: Ipv4Addr) {
        if let Some(s) = self.table().get_mut(&source) {
            s.connections = s.connections.saturating_sub(1);
        }
    }

    /// Whether `source` may make one more request now.
    fn request(&self, source: Ipv4Addr) -> bool {
        let mut table = self.table();
        let Some(s) = table.get_mut(&source) else {
            return false;
        };
        let now = Instant::now();
        let earned = now.duration_since(s.filled).as_secs_f64() * REQUESTS_PER_SECOND;
        s.tokens = (s.tokens + earned).min(REQUEST_BURST);
        s.filled = now;
        if s.tokens < 1.0 {
            return false;
        }
        s.tokens -= 1.0;
        true
    }
}

async fn serve(listener: tokio::net::TcpListener, table: Table, serves: String) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    let sources = Arc::new(Sources::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(serves, error = %e, "metadata service: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = match peer {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Too many at once: this one is closed unanswered.
            continue;
        };
        if !sources.connect(source) {
            // Too many from this source: closed unanswered, leaving the
            // room to the others.
            continue;
        }
        let (table, sources) = (table.clone(), sources.clone());
        tokio::spawn(async move {
            let for_requests = sources.clone();
            let service = hyper::service::service_fn(move |req| {
                let (table, sources) = (table.clone(), for_requests.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(if sources.request(source) {
                        respond(&table, source, &req)
                    } else {
                        too_many()
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            sources.disconnect(source);
            drop(slot);
        });
    }
}

/// 429, and the connection closed: the source asked too fast.
fn too_many() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("content-type", "text/plain")
        .header("connection", "close")
        .header("retry-after", "1")
        .body(Full::new(Bytes::from_static(b"429 Too Many Requests")))
        .expect("a valid response")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A listener on 127.0.0.1 answering for no instance (every path 404).
    async fn listener() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Table::default(), "test".into()));
        at
    }

    /// A (blocking) connection to `at` from the loopback address `from`.
    async fn connect_from(from: Ipv4Addr, at: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
        let stream = socket.connect(at).await.unwrap().into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    }

    /// Sends one GET and reads the status line of its answer, or `None`
    /// when the connection was closed unanswered.
    fn status_of(stream: &mut TcpStream) -> Option<String> {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).unwrap_or(0);
        (n > 0).then(|| {
            String::from_utf8_lossy(&answer[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
    }

    /// One instance holding connections leaves the listener's others to
    /// the rest: past CONNECTIONS_PER_SOURCE its next is closed
    /// unanswered, while another source is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_cannot_take_every_connection() {
        let at = listener().await;
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS_PER_SOURCE {
            held.push(connect_from(Ipv4Addr::LOCALHOST, at).await);
        }
        let one_more = connect_from(Ipv4Addr::LOCALHOST, at).await;
        let other = connect_from(Ipv4Addr::new(127, 0, 0, 2), at).await;
        tokio::task::spawn_blocking(move || {
            let (mut one_more, mut other) = (one_more, other);
            assert_eq!(status_of(&mut one_more), None, "one more connection served");
            assert_eq!(
                status_of(&mut other).as_deref(),
                Some("HTTP/1.1 404 Not Found")
            );
            drop(held);
        })
        .await
        .unwrap();
    }

    /// A source asking faster than REQUESTS_PER_SECOND gets its burst,
    /// then 429 and a closed connection; others are answered meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_that_asks_too_fast_gets_429() {
        let at = listener().await;
        let stream = connect_from(Ipv4Addr::LOCALHOST, at).await;
        let other = connect_from(Ipv4Addr::new(127, 0, 0, 3), at).await;
        tokio::task::spawn_blocking(move || {
            let (mut stream, mut other) = (stream, other);
            let mut answered = 0;
            let last = loop {
                match status_of(&mut stream) {
                    Some(s) if s.contains("404") => answered += 1,
                    other => break other,
                }
                assert!(answered <= 2 * REQUEST_BURST as usize, "never refused");
            };
            assert_eq!(last.as_deref(), Some("HTTP/1.1 429 Too Many Requests"));
            assert!(answered >= REQUEST_BURST as usize, "{answered} answered");
            assert_eq!(status_of(&mut stream), None, "the connection stays open");
            assert_eq!(
                status_of(&mut other).as_deref(),
                Some("HTTP/1.1 404 Not Found")
            );
        })
        .await
        .unwrap();
    }
}
