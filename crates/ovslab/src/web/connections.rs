//! The page's connections: accepted from the TCP listener, each served by
//! hyper's HTTP/1.1 with a deadline for its request header, at most
//! [`MOST_CONNECTIONS`] at once. Anyone who can connect can try to hold
//! connections open (the gate only runs once a whole request header has
//! come): a client that sends nothing, or half a header, is closed after
//! [`HEADER_TIMEOUT`], and one beyond the cap is refused at once, so such a
//! client costs at most [`MOST_CONNECTIONS`] descriptors, for a bounded
//! time. The header deadline applies only while a request header is read:
//! an event stream, whose answer never ends, stays open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service as _;

/// How long a client has to send a whole request header, counted from
/// when it connected or got its last answer.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections served at once. A page uses a few (the browser
/// opens up to six per server, one of them holding the event stream).
pub const MOST_CONNECTIONS: usize = 128;

/// Warnings about connections, at most one per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a connection is refused for want of room.
const BUSY_ERROR: &str = "{\"error\":\"ovslab ui is busy: too many connections are open\"}";

/// [`BUSY_ERROR`] as a whole HTTP answer, written to a refused connection
/// before it is closed.
fn busy_answer() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BUSY_ERROR}",
        BUSY_ERROR.len()
    )
}

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: HEADER_TIMEOUT,
            connections: MOST_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` for as long as the future is polled.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let room = Arc::new(Semaphore::new(limits.connections.max(1)));
    let mut warned: Option<Instant> = None;
    let mut warn = |what: std::fmt::Arguments<'_>| {
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            warned = Some(Instant::now());
            eprintln!("ovslab ui: warning: {what}");
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE), or a connection gone
                // before it was accepted: wait a little rather than spin.
                warn(format_args!("accepting a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = room.clone().try_acquire_owned() else {
            // Best effort and never waiting, then closed.
            let _ = stream.try_write(busy_answer().as_bytes());
            warn(format_args!(
                "{} connections open: refused a new one",
                limits.connections
            ));
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            connection(stream, router, limits.header_timeout).await;
            drop(slot);
        });
    }
}

/// Serves one connection until it closes, or its client is too slow with
/// a request header.
async fn connection(stream: TcpStream, router: Router, header_timeout: Duration) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        async move {
            let response = match router.call(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response)
        }
    });
    // Errors are the client's (gone, too slow, not HTTP): nothing to do.
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Raises this process's soft limit of open descriptors to its hard limit
/// (often 1024 → 524288 on a desktop): [`MOST_CONNECTIONS`], the daemon's
/// connections and the live readings' pipes must never find the table
/// full. Returns the soft limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `limit`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with `limits` on a free loopback port: `GET /` answers
    /// `ok`, `GET /events` an event stream that never ends.
    async fn start(limits: Limits) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "ok" })).route(
            "/events",
            get(|| async {
                let ticks = futures::stream::unfold(0u64, |n| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok::<_, Infallible>(format!(": tick {n}\n\n")), n + 1))
                });
                Body::from_stream(ticks)
            }),
        );
        (address, tokio::spawn(serve(listener, router, limits)))
    }

    /// What the server sends before it closes, within `within`; `None`
    /// when it was still open then.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
        match read {
            Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
            Err(_) => None,
        }
    }

    async fn get_ok(address: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("an answer")
    }

    #[tokio::test]
    async fn half_a_header_is_closed_after_the_header_timeout() {
        let timeout = Duration::from_millis(300);
        let (address, server) = start(Limits {
            header_timeout: timeout,
            connections: 8,
        })
        .await;
        let mut slow = TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x").await.unwrap();
        let closed = until_closed(&mut slow, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "still open after 5 s");
        let took = started.elapsed();
        // Closed by the timeout (not at once, and well before the 5 s the
        // test waits).
        assert!(took >= timeout && took < Duration::from_secs(4), "{took:?}");
        // A connection that sends nothing is closed as well.
        let mut idle = TcpStream::connect(address).await.unwrap();
        assert!(
            until_closed(&mut idle, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(get_ok(address).await.ends_with("\r\n\r\nok"));
        server.abort();
    }

    #[tokio::test]
    async fn an_event_stream_outlives_the_header_timeout() {
        let (address, server) = start(Limits {
            header_timeout: Duration::from_millis(300),
            connections: 8,
        })
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Ten times the header timeout: still open, still ticking.
        assert_eq!(
            until_closed(&mut stream, Duration::from_secs(3)).await,
            None
        );
        let mut tick = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut tick))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        server.abort();
    }

    #[tokio::test]
    async fn a_connection_beyond_the_cap_is_closed_at_once() {
        let (address, server) = start(Limits {
            header_timeout: Duration::from_secs(30),
            connections: 2,
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(address).await.unwrap());
        }
        let mut third = TcpStream::connect(address).await.unwrap();
        let refused = until_closed(&mut third, Duration::from_secs(2))
            .await
            .expect("closed at once");
        assert!(
            refused.starts_with("HTTP/1.1 503 ") && refused.contains("too many connections"),
            "{refused}"
        );
        // One of the two goes: a normal request is served again (once the
        // server has seen it go).
        drop(held.pop());
        let started = Instant::now();
        loop {
            let answer = get_ok(address).await;
            if answer.ends_with("\r\n\r\nok") {
                break;
            }
            assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
            assert!(started.elapsed() < Duration::from_secs(5), "still refused");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_one() {
        let soft = raise_descriptor_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `limit`, which outlives the call.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        assert_eq!(read, 0);
        assert_eq!((soft, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
