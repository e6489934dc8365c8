//! A small HTTP/1.1 client for the daemon's Unix socket (hyper over a tokio
//! `UnixStream`). Each call opens one connection, sends one request and
//! waits for the whole answer, which may hold at most [`MOST_ANSWER`] bytes
//! ([`MOST_ERROR`] for an error): what answers on the socket is not
//! necessarily ovslabd, and an endless answer must not eat the memory.

use std::fmt;
use std::io::ErrorKind;
use std::path::PathBuf;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ovslab_api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::target::Checked;

/// The most an answer's body may hold. ovslabd's largest (the
/// 1000-instance lab's status, check or trace report) are a few MiB.
pub const MOST_ANSWER: usize = 64 << 20;

/// The most an error answer's body may hold: ovslabd's message is at most
/// 64 KiB, which JSON may escape to twice that (`\` and `"`), in
/// `{"error":…}`.
pub const MOST_ERROR: usize = (128 << 10) + 1024;

/// Why a request got no answer worth having.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing answers on the socket.
    Unreachable {
        socket: PathBuf,
        kind: ErrorKind,
        detail: String,
    },
    /// The daemon answered with an error status; its [`ApiError`] text.
    Api { message: String },
    /// The exchange broke (connection reset, an answer that is not JSON, …).
    Protocol { socket: PathBuf, detail: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable {
                socket,
                kind,
                detail,
            } => {
                let socket = socket.display();
                match kind {
                    ErrorKind::NotFound => write!(
                        f,
                        "cannot reach ovslabd at {socket}: no such file — start it with `ovslabd` \
                         (foreground) or `systemctl start ovslabd`"
                    ),
                    ErrorKind::ConnectionRefused => write!(
                        f,
                        "cannot reach ovslabd at {socket}: connection refused (a stale \
                         socket: no daemon listens) — start it with `ovslabd` (foreground) or `systemctl start ovslabd`"
                    ),
                    ErrorKind::PermissionDenied => write!(
                        f,
                        "cannot reach ovslabd at {socket}: permission denied — run ovslab as root \
                         or as the user ovslabd runs as"
                    ),
                    _ => write!(
                        f,
                        "cannot reach ovslabd at {socket}: {detail} — is it running? Start it with \
                         `ovslabd` (foreground) or `systemctl start ovslabd`"
                    ),
                }
            }
            ClientError::Api { message, .. } => f.write_str(message),
            ClientError::Protocol { socket, detail } => {
                write!(f, "talking to ovslabd at {}: {detail}", socket.display())
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The daemon, as seen from the command line.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// How long a request may take, when bounded (shell completion must
    /// never hang a prompt); by default a request waits for its answer.
    deadline: Option<std::time::Duration>,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client {
            socket,
            deadline: None,
        }
    }

    /// The same daemon, each request given at most `deadline`.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None)
    }

    /// Where a lab's node, instance, router, physical router or external host lives
    /// (`exec` and `capture` enter its namespace), checked ([`Checked`]):
    /// a namespace that is not a single name is a protocol error.
    pub fn target(&self, lab: &str, name: &str) -> Result<Checked, ClientError> {
        let answer = self.get(&target_path(lab, name))?;
        Checked::new(answer).map_err(|e| self.protocol(e))
    }

    /// [`Client::target`] from async code.
    pub async fn target_async(&self, lab: &str, name: &str) -> Result<Checked, ClientError> {
        let answer = self.get_async(&target_path(lab, name)).await?;
        Checked::new(answer).map_err(|e| self.protocol(e))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("encoding the request: {e}")))?;
        self.call(Method::POST, path, Some(body))
    }

    /// [`Client::get`] from async code (`ovslab ui` serves many requests at
    /// once), within the client's deadline when it has one.
    pub async fn get_async<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call_async(Method::GET, path, None).await
    }

    /// [`Client::post`] from async code.
    pub async fn post_async<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("encoding the request: {e}")))?;
        self.call_async(Method::POST, path, Some(body)).await
    }

    async fn call_async<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = match self.deadline {
            None => exchange.await?,
            Some(deadline) => tokio::time::timeout(deadline, exchange)
                .await
                .map_err(|_| self.protocol(format!("no answer within {deadline:?}")))??,
        };
        decode(status, &bytes).map_err(|e| match e {
            Decoded::Api(message) => ClientError::Api { message },
            Decoded::Garbled(detail) => self.protocol(detail),
        })
    }

    /// An HTTP/1 connection to the daemon's socket: the sender, and the
    /// connection to drive while it is used.
    async fn connect(
        &self,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Full<Bytes>>,
            hyper::client::conn::http1::Connection<TokioIo<UnixStream>, Full<Bytes>>,
        ),
        ClientError,
    > {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    kind: e.kind(),
                    detail: e.to_string(),
                })?;
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e.to_string()))
    }

    /// A streaming answer (`GET /v1/labs/{lab}/events`): its body, read as
    /// it comes, once the daemon said yes within the client's deadline.
    pub async fn stream(&self, path: &str) -> Result<hyper::body::Incoming, ClientError> {
        let open = async {
            let (mut sender, connection) = self.connect().await?;
            // Lives as long as the body is read.
            tokio::spawn(connection);
            let request = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header(HOST, "ovslabd")
                .body(Full::new(Bytes::new()))
                .map_err(|e| self.protocol(format!("building the request: {e}")))?;
            sender
                .send_request(request)
                .await
                .map_err(|e| self.protocol(e.to_string()))
        };
        let response = match self.deadline {
            None => open.await?,
            Some(deadline) => tokio::time::timeout(deadline, open)
                .await
                .map_err(|_| self.protocol(format!("no answer within {deadline:?}")))??,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let bytes = self.read_body(response.into_body(), MOST_ERROR).await?;
        match decode::<serde_json::Value>(status, &bytes) {
            Err(Decoded::Api(message)) => Err(ClientError::Api { message }),
            Err(Decoded::Garbled(detail)) => Err(self.protocol(detail)),
            Ok(_) => Err(self.protocol(format!("unexpected status {status}"))),
        }
    }

    /// Runs one request on a runtime of its own: the command line does one
    /// thing at a time, and stays synchronous around it.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.protocol(format!("starting the async runtime: {e}")))?;
        let exchange = self.exchange(method, path, body);
        let (status, bytes) = match self.deadline {
            None => runtime.block_on(exchange)?,
            Some(deadline) => runtime
                .block_on(async { tokio::time::timeout(deadline, exchange).await })
                .map_err(|_| self.protocol(format!("no answer within {deadline:?}")))??,
        };
        decode(status, &bytes).map_err(|e| match e {
            Decoded::Api(message) => ClientError::Api { message },
            Decoded::Garbled(detail) => self.protocol(detail),
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (mut sender, connection) = self.connect().await?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "ovslabd");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e.to_string()))?;
        let status = response.status();
        let most = if status.is_success() {
            MOST_ANSWER
        } else {
            MOST_ERROR
        };
        let bytes = self.read_body(response.into_body(), most).await?;
        drop(sender);
        let _ = driver.await;
        Ok((status, bytes))
    }

    /// A whole body, if it holds at most `most` bytes; reading stops as
    /// soon as it would hold more.
    async fn read_body(
        &self,
        body: hyper::body::Incoming,
        most: usize,
    ) -> Result<Bytes, ClientError> {
        match Limited::new(body, most).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(self.protocol(format!(
                "the answer is longer than {} (ovslabd's never are): stopped reading it",
                size(most)
            ))),
            Err(e) => Err(self.protocol(format!("reading the answer: {e}"))),
        }
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            detail,
        }
    }
}

/// `GET` this for a lab's target.
fn target_path(lab: &str, name: &str) -> String {
    format!(
        "/v1/labs/{}/targets/{}",
        crate::commands::segment(lab),
        crate::commands::segment(name)
    )
}

/// `bytes` as a person reads it: `64 MiB`, `129 KiB`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    }
}

enum Decoded {
    Api(String),
    Garbled(String),
}

/// An answer: its JSON body when the status is a success, else the
/// [`ApiError`] text (or whatever the body says).
fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, Decoded> {
    if !status.is_success() {
        let message = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => e.error,
            Err(_) if body.is_empty() => format!("ovslabd answered {status}"),
            Err(_) => format!(
                "ovslabd answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            ),
        };
        return Err(Decoded::Api(message));
    }
    serde_json::from_slice(body).map_err(|e| Decoded::Garbled(format!("unexpected answer ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_says_how_to_start_the_daemon() {
        let e = ClientError::Unreachable {
            socket: "/run/ovslab/ovslabd.sock".into(),
            kind: ErrorKind::NotFound,
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach ovslabd at /run/ovslab/ovslabd.sock: no such file — start it with \
             `ovslabd` (foreground) or `systemctl start ovslabd`"
        );
    }

    #[test]
    fn error_answers_give_the_api_error_text() {
        let body = br#"{"error":"lab `x` is not known to this daemon"}"#;
        match decode::<Vec<String>>(StatusCode::NOT_FOUND, body) {
            Err(Decoded::Api(m)) => assert_eq!(m, "lab `x` is not known to this daemon"),
            _ => panic!("expected an API error"),
        }
        match decode::<Vec<String>>(StatusCode::BAD_GATEWAY, b"") {
            Err(Decoded::Api(m)) => assert_eq!(m, "ovslabd answered 502 Bad Gateway"),
            _ => panic!("expected an API error"),
        }
    }

    #[test]
    fn success_answers_are_decoded() {
        let labs: Vec<String> = decode(StatusCode::OK, br#"["seed"]"#).ok().unwrap();
        assert_eq!(labs, ["seed"]);
        assert!(matches!(
            decode::<Vec<String>>(StatusCode::OK, b"nope"),
            Err(Decoded::Garbled(_))
        ));
    }

    /// A fake daemon on a Unix socket in a directory of its own: each
    /// connection's request head is read, then `answer` writes to it.
    struct Fake {
        dir: PathBuf,
        socket: PathBuf,
    }

    impl Fake {
        fn start(answer: fn(&mut std::os::unix::net::UnixStream) -> std::io::Result<()>) -> Fake {
            use std::io::BufRead as _;
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ovslab-client-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let socket = dir.join("s.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { break };
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    // Until the client goes away (EPIPE).
                    let _ = answer(&mut stream);
                }
            });
            Fake { dir, socket }
        }

        fn client(&self) -> Client {
            Client::new(self.socket.clone()).with_deadline(std::time::Duration::from_secs(60))
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A JSON array that never ends, in chunks.
    fn endless(stream: &mut std::os::unix::net::UnixStream) -> std::io::Result<()> {
        use std::io::Write as _;
        stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n[\r\n")?;
        let item = "\"x\",".repeat(16 << 10);
        loop {
            write!(stream, "{:x}\r\n{item}\r\n", item.len())?;
        }
    }

    /// An error answer of 1 MiB.
    fn long_error(stream: &mut std::os::unix::net::UnixStream) -> std::io::Result<()> {
        use std::io::Write as _;
        let body = format!("{{\"error\":\"{}\"}}", "e".repeat(1 << 20));
        write!(
            stream,
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn is_too_long(e: &ClientError, most: &str) -> bool {
        matches!(e, ClientError::Protocol { detail, .. }
            if *detail == format!("the answer is longer than {most} (ovslabd's never are): stopped reading it"))
    }

    #[test]
    fn an_endless_answer_is_cut_at_64_mib() {
        let fake = Fake::start(endless);
        let e = fake.client().get::<Vec<String>>("/v1/labs").unwrap_err();
        assert!(is_too_long(&e, "64 MiB"), "{e:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = runtime
            .block_on(fake.client().get_async::<Vec<String>>("/v1/labs"))
            .unwrap_err();
        assert!(is_too_long(&e, "64 MiB"), "{e:?}");
    }

    #[test]
    fn a_long_error_answer_is_cut_at_129_kib() {
        let fake = Fake::start(long_error);
        let e = fake.client().get::<Vec<String>>("/v1/labs").unwrap_err();
        assert!(is_too_long(&e, "129 KiB"), "{e:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = runtime
            .block_on(fake.client().stream("/v1/labs/seed/events"))
            .unwrap_err();
        assert!(is_too_long(&e, "129 KiB"), "{e:?}");
    }

    #[test]
    fn answers_within_the_bounds_are_read() {
        let fake = Fake::start(|stream| {
            use std::io::Write as _;
            let body = format!("[\"{}\"]", "l".repeat(8 << 20));
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        });
        let labs: Vec<String> = fake.client().get("/v1/labs").unwrap();
        assert!(labs[0].len() == 8 << 20);
        let fake = Fake::start(|stream| {
            use std::io::Write as _;
            let body = format!("{{\"error\":\"{}\"}}", "\\\"".repeat(32 << 10));
            write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        });
        match fake.client().get::<Vec<String>>("/v1/labs").unwrap_err() {
            // Each `"` escaped: the body is twice the message.
            ClientError::Api { message } => assert!(message == "\"".repeat(32 << 10)),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_target_naming_a_path_is_a_protocol_error() {
        let fake = Fake::start(|stream| {
            use std::io::Write as _;
            let body = r#"{"lab":"seed","name":"compute1","kind":"node",
                "namespace":"../../proc/self/ns/net","env":[]}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        });
        let e = fake.client().target("seed", "compute1").unwrap_err();
        assert!(
            matches!(&e, ClientError::Protocol { detail, .. } if detail.contains("not a single name")),
            "{e:?}"
        );
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(size(MOST_ANSWER), "64 MiB");
        assert_eq!(size(MOST_ERROR), "129 KiB");
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(size(1000), "1 KiB");
    }

    #[test]
    fn a_missing_socket_is_reported_as_unreachable() {
        let client = Client::new("/nonexistent/ovslab/ovslabd.sock".into());
        let e = client.get::<Vec<String>>("/v1/labs").unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Unreachable {
                    kind: ErrorKind::NotFound,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
