//! `ovslab ui`: a small web server, run by the user, between a browser and
//! the daemon. It serves the page (every asset is compiled in: no CDN, no
//! build step) and a JSON API that forwards to ovslabd over its Unix socket
//! with the user's own rights, so the page can do no more than the user's
//! `ovslab` could:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /assets/{file}` | its script modules and style sheet |
//! | `GET /api/labs` | the labs (`ovslab status`) |
//! | `GET /api/labs/{lab}/picture` | the lab drawn, with each box's details ([`picture::Picture`]) |
//! | `GET /api/labs/{lab}/status` | `ovslab status --json`, its repairs mapped to boxes |
//! | `GET /api/labs/{lab}/events` | server-sent events: one `audit` per audit of the lab, its repairs mapped to boxes |
//! | `POST /api/labs/{lab}/check` | `ovslab check --json` |
//! | `POST /api/labs/{lab}/trace` | `ovslab trace --json`, each hop on its box ([`picture::TraceView`]) |
//! | `GET /api/labs/{lab}/live/{box}` | a bridge's flows (`ovs-ofctl dump-flows`) or a router's nat table (`iptables-save -t nat`), read now |
//!
//! Every request passes [`auth::Gate`] first.

pub mod auth;
pub mod connections;
mod live;
pub mod picture;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    ORIGIN, REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use ovslab_api::{AuditEvent, CheckReport, LabStatus, TraceProtocol, TraceRequest, UpRequest};
use ovslab_topology::{lab_name_problem, object_name_problem};
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::commands::segment;
use auth::{Gate, Knock, Verdict};
use picture::{CheckView, LabPicture, Marks};

/// How long a quick question to the daemon may take (a lab's topology,
/// its status).
pub const QUICK: Duration = Duration::from_secs(10);
/// How long checks and traces may take (a check decides within about
/// 3 s, a trace within a few).
pub const SLOW: Duration = Duration::from_secs(60);
/// How often an idle event stream says it is alive (proxies and browsers
/// drop silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const INDEX: &str = include_str!("assets/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "picture.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/picture.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

/// What every handler reaches.
#[derive(Debug)]
pub struct Ui {
    pub gate: Gate,
    /// For quick questions ([`QUICK`]).
    pub quick: Client,
    /// For checks and traces ([`SLOW`]).
    pub slow: Client,
    /// Each lab's picture, with the topology text it was drawn from: the
    /// 1000-instance lab takes a while to plan and draw, and every request
    /// about a lab needs its picture.
    pub drawn: std::sync::Mutex<std::collections::BTreeMap<String, (String, Arc<LabPicture>)>>,
    /// One permit per live reading running ([`MOST_LIVE`]).
    live: tokio::sync::Semaphore,
}

/// The most live readings (`ovs-ofctl`, `iptables-save`) run at once: each
/// is a process, as root when the ui is; more get 503.
pub const MOST_LIVE: usize = 4;

impl Ui {
    pub fn new(gate: Gate, client: &Client) -> Self {
        Ui {
            gate,
            quick: client.clone().with_deadline(QUICK),
            slow: client.clone().with_deadline(SLOW),
            drawn: Default::default(),
            live: tokio::sync::Semaphore::new(MOST_LIVE),
        }
    }
}

pub fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/labs", get(labs))
        .route("/api/labs/{lab}/picture", get(picture))
        .route("/api/labs/{lab}/status", get(status))
        .route("/api/labs/{lab}/events", get(events))
        .route("/api/labs/{lab}/check", post(check))
        .route("/api/labs/{lab}/trace", post(trace))
        .route("/api/labs/{lab}/live/{item}", get(live_details))
        .fallback(|| async { UiError::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .layer(middleware::from_fn(hardened))
        .with_state(ui)
}

/// [`Gate::judge`] on every request.
async fn guard(State(ui): State<Arc<Ui>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let knock = Knock {
        get: request.method() == Method::GET,
        post: request.method() == Method::POST,
        host: text(HOST),
        origin: text(ORIGIN),
        query: request.uri().query(),
        cookie: text(COOKIE),
        authorization: text(AUTHORIZATION),
    };
    match ui.gate.judge(&knock) {
        Verdict::Pass => next.run(request).await,
        verdict @ (Verdict::SetCookie | Verdict::Redirect) => {
            let location = without_code(request.uri());
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            if let Ok(location) = HeaderValue::from_str(&location) {
                headers.insert(LOCATION, location);
            }
            if verdict == Verdict::SetCookie
                && let Ok(cookie) = HeaderValue::from_str(&ui.gate.set_cookie())
            {
                headers.insert(SET_COOKIE, cookie);
            }
            response
        }
        Verdict::WrongHost => UiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only to its IP address or localhost (the Host header named another)",
        )
        .into_response(),
        Verdict::WrongOrigin => {
            UiError::new(StatusCode::FORBIDDEN, "a request from another site's page").into_response()
        }
        Verdict::NoToken => UiError::new(
            StatusCode::UNAUTHORIZED,
            "no valid token: open the address `ovslab ui` printed (it carries ?code=…)",
        )
        .into_response(),
        Verdict::CodeSpent => UiError::new(
            StatusCode::UNAUTHORIZED,
            "this address was used once already: its code opens the page only once, for the \
             browser that used it first. Start `ovslab ui` again for a new address",
        )
        .into_response(),
    }
}

/// The same address without its one-time code (the page's own address
/// carries none): `/?code=…&lab=seed` → `/?lab=seed`.
fn without_code(uri: &axum::http::Uri) -> String {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("code="))
        .collect();
    if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    }
}

/// Headers on every answer: only this server's own scripts and styles
/// run, nothing is cached, no address leaks as a Referer.
async fn hardened(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, text)) => ([(CONTENT_TYPE, *kind)], *text).into_response(),
        None => UiError::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// An error answer: `{"error": "…"}`.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        UiError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ClientError> for UiError {
    fn from(e: ClientError) -> Self {
        let status = match e {
            ClientError::Api { .. } => StatusCode::BAD_GATEWAY,
            ClientError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ClientError::Protocol { .. } => StatusCode::GATEWAY_TIMEOUT,
        };
        UiError::new(status, e.to_string())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: ovslab_topology::printable_lines(&self.message).into_owned(),
            }),
        )
            .into_response()
    }
}

/// A lab name from the address, by the topology's rule.
fn lab_name(lab: &str) -> Result<&str, UiError> {
    match lab_name_problem(lab) {
        Some(problem) => Err(UiError::bad(problem)),
        None => Ok(lab),
    }
}

/// The daemon's labs whose names pass the topology's rule (the only ones
/// the other routes take).
async fn labs(State(ui): State<Arc<Ui>>) -> Result<Json<Vec<String>>, UiError> {
    let mut labs: Vec<String> = ui.quick.get_async("/v1/labs").await?;
    labs.retain(|l| lab_name_problem(l).is_none());
    Ok(Json(labs))
}

/// The lab as the daemon has it: its saved topology, planned and drawn
/// (again only when the topology changed).
async fn load(ui: &Ui, lab: &str) -> Result<Arc<LabPicture>, UiError> {
    let saved: UpRequest = ui
        .quick
        .get_async(&format!("/v1/labs/{}/topology", segment(lab)))
        .await?;
    let cached = |drawn: &std::collections::BTreeMap<String, (String, Arc<LabPicture>)>| {
        drawn
            .get(lab)
            .filter(|(text, _)| *text == saved.topology)
            .map(|(_, picture)| picture.clone())
    };
    if let Some(picture) = cached(&ui.drawn.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(picture);
    }
    let topology = ovslab_topology::parse(&saved.source, &saved.topology).map_err(|e| {
        UiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the daemon's topology of lab {lab}: {e}"),
        )
    })?;
    let picture = tokio::task::spawn_blocking(move || LabPicture::new(topology))
        .await
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let picture = Arc::new(picture);
    ui.drawn
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(lab.to_string(), (saved.topology, picture.clone()));
    Ok(picture)
}

async fn picture(
    State(ui): State<Arc<Ui>>,
    Path(lab): Path<String>,
) -> Result<Json<picture::Picture>, UiError> {
    let lab = lab_name(&lab)?;
    Ok(Json(load(&ui, lab).await?.picture()))
}

#[derive(Debug, Serialize)]
struct StatusView {
    status: LabStatus,
    /// The boxes each line of `status.repairs` is about, in its order.
    repairs: Vec<Marks>,
}

async fn status(
    State(ui): State<Arc<Ui>>,
    Path(lab): Path<String>,
) -> Result<Json<StatusView>, UiError> {
    let lab = lab_name(&lab)?;
    let picture = load(&ui, lab).await?;
    let status: LabStatus = ui
        .quick
        .get_async(&format!("/v1/labs/{}", segment(lab)))
        .await?;
    let repairs = status
        .repairs
        .iter()
        .map(|line| {
            // `<time> <n> repaired: a; b; …`: each change on its own.
            let changes = line
                .split_once(" repaired: ")
                .map_or(line.as_str(), |(_, c)| c);
            let mut marks = Marks::default();
            for change in changes.split("; ") {
                let m = picture.marks_of_repair(change);
                marks.boxes.extend(m.boxes);
                marks.clusters.extend(m.clusters);
            }
            marks
        })
        .collect();
    Ok(Json(StatusView { status, repairs }))
}

#[derive(Debug, Serialize)]
struct CheckResultView {
    name: String,
    passed: bool,
    detail: String,
    /// The declared check, when the topology still has it.
    check: Option<CheckView>,
}

#[derive(Debug, Serialize)]
struct ChecksView {
    lab: String,
    elapsed_ms: u64,
    results: Vec<CheckResultView>,
}

async fn check(
    State(ui): State<Arc<Ui>>,
    Path(lab): Path<String>,
) -> Result<Json<ChecksView>, UiError> {
    let lab = lab_name(&lab)?;
    let checks = load(&ui, lab).await?.checks();
    let report: CheckReport = ui
        .slow
        .post_async(&format!("/v1/labs/{}/check", segment(lab)), &())
        .await?;
    let results = report
        .results
        .into_iter()
        .map(|r| CheckResultView {
            check: checks.iter().find(|c| c.name == r.name).cloned(),
            name: r.name,
            passed: r.passed,
            detail: r.detail,
        })
        .collect();
    Ok(Json(ChecksView {
        lab: report.lab,
        elapsed_ms: report.elapsed_ms,
        results,
    }))
}

/// A trace as the page asks for it.
#[derive(Debug, Deserialize)]
pub struct TraceForm {
    pub from: String,
    pub to: String,
    /// `icmp`, `tcp` or `udp`.
    pub protocol: String,
    pub port: Option<u16>,
}

/// The daemon's request for a trace form, every field checked.
pub fn trace_request(form: TraceForm) -> Result<TraceRequest, String> {
    if let Some(problem) = object_name_problem(&form.from) {
        return Err(problem);
    }
    if form.to.parse::<std::net::Ipv4Addr>().is_err()
        && let Some(problem) = object_name_problem(&form.to)
    {
        return Err(problem);
    }
    let port = || match form.port {
        Some(p) if p > 0 => Ok(p),
        _ => Err(format!("a {} trace needs a port (1–65535)", form.protocol)),
    };
    let protocol = match form.protocol.as_str() {
        "icmp" => TraceProtocol::Icmp,
        "tcp" => TraceProtocol::Tcp(port()?),
        "udp" => TraceProtocol::Udp(port()?),
        other => {
            return Err(format!(
                "unknown protocol `{}`: icmp, tcp or udp",
                ovslab_topology::printable(other)
            ));
        }
    };
    Ok(TraceRequest {
        from: form.from,
        to: form.to,
        protocol,
    })
}

async fn trace(
    State(ui): State<Arc<Ui>>,
    Path(lab): Path<String>,
    form: Result<Json<TraceForm>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<picture::TraceView>, UiError> {
    let lab = lab_name(&lab)?;
    let Json(form) = form.map_err(|e| UiError::bad(e.body_text()))?;
    let request = trace_request(form).map_err(UiError::bad)?;
    let picture = load(&ui, lab).await?;
    let report = ui
        .slow
        .post_async(&format!("/v1/labs/{}/trace", segment(lab)), &request)
        .await?;
    Ok(Json(picture.trace_view(report)))
}

async fn live_details(
    State(ui): State<Arc<Ui>>,
    Path((lab, item)): Path<(String, usize)>,
) -> Result<Json<live::Live>, UiError> {
    let lab = lab_name(&lab)?;
    let Ok(_running) = ui.live.try_acquire() else {
        return Err(UiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MOST_LIVE} live readings run already: try again in a moment"),
        ));
    };
    let picture = load(&ui, lab).await?;
    if item >= picture.graph.nodes.len() {
        return Err(UiError::new(StatusCode::NOT_FOUND, "no such box"));
    }
    let asked = picture.box_view(item);
    let Some(what) = asked.live else {
        return Err(UiError::bad("this box has nothing to read live"));
    };
    let target = if what == "flows" {
        asked.object.clone()
    } else {
        // A router's box is named after the router.
        asked.label[0].clone()
    };
    // What the daemon's answer held beyond the OVS directories is dropped
    // (and the page has no one to warn).
    let target = ui
        .quick
        .target_async(lab, &target)
        .await
        .map_err(UiError::from)?
        .target;
    Ok(Json(live::read(&target, what, &asked.label[0]).await))
}

/// One audit, as the page gets it.
#[derive(Debug, Serialize)]
struct AuditView {
    event: AuditEvent,
    /// The boxes its repairs are about.
    marks: Marks,
}

/// Server-sent events: the daemon's audit events of the lab, each with its
/// repairs mapped to boxes, and a comment every [`KEEP_ALIVE`].
async fn events(State(ui): State<Arc<Ui>>, Path(lab): Path<String>) -> Result<Response, UiError> {
    let lab = lab_name(&lab)?.to_string();
    let picture = load(&ui, &lab).await?;
    let body = ui
        .quick
        .stream(&format!("/v1/labs/{}/events", segment(&lab)))
        .await?;
    let state = Relay {
        body,
        lines: Lines::new(MOST_EVENT_LINE),
        picture,
        lab,
    };
    let stream = futures::stream::unfold(state, |mut relay| async move {
        let chunk = relay.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), relay))
    });
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// The most one line of the daemon's event stream may hold: an audit's
/// event is a few KiB (its repairs), and what answers on the socket must
/// not make the ui buffer without end.
const MOST_EVENT_LINE: usize = 1 << 20;

/// The lines of a byte stream, as they come, each at most `most` bytes.
#[derive(Debug)]
struct Lines {
    buffer: Vec<u8>,
    most: usize,
}

/// A line longer than [`Lines`] takes.
#[derive(Debug, PartialEq, Eq)]
struct LineTooLong;

impl Lines {
    fn new(most: usize) -> Self {
        Lines {
            buffer: Vec::new(),
            most,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole line (without its newline); `None` until one came.
    /// Once a line has more than `most` bytes, whole or not, an error:
    /// the buffer holds at most `most` bytes and the last piece pushed.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.buffer.iter().position(|&b| b == b'\n') {
            Some(end) if end > self.most => Err(LineTooLong),
            Some(end) => {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                Ok(Some(line))
            }
            None if self.buffer.len() > self.most => Err(LineTooLong),
            None => Ok(None),
        }
    }
}

/// The daemon's stream, turned into the page's.
struct Relay {
    body: hyper::body::Incoming,
    lines: Lines,
    picture: Arc<LabPicture>,
    lab: String,
}

impl Relay {
    /// The next text for the browser; `None` when the daemon's stream
    /// ended, or sent a line longer than [`MOST_EVENT_LINE`] (the page
    /// connects again).
    async fn next_chunk(&mut self) -> Option<String> {
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => {
                    let Ok(event) = serde_json::from_slice::<AuditEvent>(&line) else {
                        continue;
                    };
                    let mut marks = Marks::default();
                    for repair in &event.repairs {
                        let m = self.picture.marks_of_repair(repair);
                        marks.boxes.extend(m.boxes);
                        marks.clusters.extend(m.clusters);
                    }
                    let data = serde_json::to_string(&AuditView { event, marks }).ok()?;
                    return Some(format!("event: audit\ndata: {data}\n\n"));
                }
                Ok(None) => {}
                Err(LineTooLong) => {
                    eprintln!(
                        "ovslab ui: the daemon's event stream of lab {} sent a line longer than \
                         {} (ovslabd's never are): ended the page's stream",
                        self.lab,
                        crate::client::size(MOST_EVENT_LINE)
                    );
                    return None;
                }
            }
            match tokio::time::timeout(KEEP_ALIVE, self.body.frame()).await {
                Err(_) => return Some(": alive\n\n".to_string()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Ok(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(protocol: &str, port: Option<u16>) -> TraceForm {
        TraceForm {
            from: "instance1".into(),
            to: "instance2".into(),
            protocol: protocol.into(),
            port,
        }
    }

    #[test]
    fn the_code_leaves_the_address_and_the_rest_stays() {
        let uri = |u: &str| u.parse::<axum::http::Uri>().unwrap();
        assert_eq!(without_code(&uri("/?code=abc&lab=seed")), "/?lab=seed");
        assert_eq!(without_code(&uri("/?code=abc")), "/");
        assert_eq!(without_code(&uri("/x?a=1&code=abc&b=2")), "/x?a=1&b=2");
    }

    /// A ui whose daemon is not there, with token `s3cr3t` on port 8080.
    fn lonely_ui() -> Arc<Ui> {
        let client = Client::new("/nonexistent/ovslabd.sock".into());
        Arc::new(Ui::new(
            Gate::new(
                auth::Token::from_text("s3cr3t"),
                auth::Token::from_text("c0de"),
                8080,
            ),
            &client,
        ))
    }

    /// One GET through the router with these headers (and `Host`): its
    /// status, headers and body.
    async fn send(
        ui: &Arc<Ui>,
        path: &str,
        headers: &[(axum::http::HeaderName, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        use tower_service::Service as _;
        let mut request = Request::builder().uri(path).header(HOST, "127.0.0.1:8080");
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Body::empty()).unwrap();
        let Ok(response) = router(ui.clone()).call(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// One request through the router, authenticated: its status and body.
    async fn ask(ui: &Arc<Ui>, path: &str) -> (StatusCode, String) {
        let (status, _, body) = send(ui, path, &[(AUTHORIZATION, "Bearer s3cr3t")]).await;
        (status, body)
    }

    #[tokio::test]
    async fn the_printed_address_opens_the_page_once() {
        let ui = lonely_ui();
        let (status, headers, _) = send(&ui, "/?code=c0de&lab=seed", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[LOCATION], "/?lab=seed");
        assert_eq!(
            headers[SET_COOKIE],
            "ovslab-ui-8080=s3cr3t; Path=/; HttpOnly; SameSite=Strict"
        );
        // The page, with the cookie.
        let cookie = [(COOKIE, "ovslab-ui-8080=s3cr3t")];
        let (status, _, body) = send(&ui, "/?lab=seed", &cookie).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<html"), "{body:.80}");
        // The address again: on with the cookie, refused without.
        let (status, headers, _) = send(&ui, "/?code=c0de&lab=seed", &cookie).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[LOCATION], "/?lab=seed");
        assert!(!headers.contains_key(SET_COOKIE));
        let (status, headers, body) = send(&ui, "/?code=c0de&lab=seed", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!headers.contains_key(SET_COOKIE));
        assert!(
            body.contains("used once already") && body.contains("Start `ovslab ui` again"),
            "{body}"
        );
        // The code is not the token.
        let (status, _, _) = send(&ui, "/", &[(AUTHORIZATION, "Bearer c0de")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn at_most_four_live_readings_run_at_once() {
        let ui = lonely_ui();
        let running = ui.live.try_acquire_many(MOST_LIVE as u32).unwrap();
        let (status, body) = ask(&ui, "/api/labs/seed/live/0").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"error":"4 live readings run already: try again in a moment"}"#
        );
        drop(running);
        // One ends: the next goes on (to a daemon that is not there).
        let (status, body) = ask(&ui, "/api/labs/seed/live/0").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("cannot reach ovslabd"), "{body}");
        assert_eq!(ui.live.available_permits(), MOST_LIVE, "given back");
    }

    #[test]
    fn event_lines_are_split_and_bounded() {
        let mut lines = Lines::new(8);
        lines.push(b"one\ntw");
        assert_eq!(lines.next_line(), Ok(Some(b"one".to_vec())));
        assert_eq!(lines.next_line(), Ok(None));
        lines.push(b"o\n\nthree\n");
        assert_eq!(lines.next_line(), Ok(Some(b"two".to_vec())));
        assert_eq!(lines.next_line(), Ok(Some(Vec::new())));
        assert_eq!(lines.next_line(), Ok(Some(b"three".to_vec())));
        assert_eq!(lines.next_line(), Ok(None));
        // Exactly the most is a line; one more is not, whole or not.
        lines.push(b"12345678\n");
        assert_eq!(lines.next_line(), Ok(Some(b"12345678".to_vec())));
        lines.push(b"123456789\n");
        assert_eq!(lines.next_line(), Err(LineTooLong));
        let mut endless = Lines::new(MOST_EVENT_LINE);
        let piece = vec![b'x'; 64 << 10];
        let mut pushed = 0;
        let error = loop {
            endless.push(&piece);
            pushed += piece.len();
            match endless.next_line() {
                Ok(None) => continue,
                other => break other,
            }
        };
        assert_eq!(error, Err(LineTooLong));
        assert_eq!(pushed, MOST_EVENT_LINE + piece.len(), "stopped at once");
    }

    #[test]
    fn trace_forms_are_checked_at_the_edge() {
        assert_eq!(
            trace_request(form("icmp", None)).unwrap().protocol,
            TraceProtocol::Icmp
        );
        assert_eq!(
            trace_request(form("tcp", Some(22))).unwrap().protocol,
            TraceProtocol::Tcp(22)
        );
        assert!(trace_request(form("tcp", None)).is_err());
        assert!(trace_request(form("udp", Some(0))).is_err());
        assert!(trace_request(form("http", Some(80))).is_err());
        let mut to_address = form("icmp", None);
        to_address.to = "203.0.113.102".into();
        assert!(trace_request(to_address).is_ok());
        for bad in ["../x", "a b", "", "-rf", "x\u{1b}"] {
            let mut f = form("icmp", None);
            f.from = bad.into();
            assert!(trace_request(f).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_asset_is_compiled_in_and_the_page_loads_only_them() {
        for needed in ["/assets/app.js", "/assets/app.css"] {
            assert!(INDEX.contains(needed), "{needed}");
        }
        for (name, ..) in ASSETS {
            let used = INDEX.contains(&format!("/assets/{name}"))
                || ASSETS
                    .iter()
                    .any(|(_, _, text)| text.contains(&format!("./{name}")));
            assert!(used, "{name} is never loaded");
        }
        // No CDN, no other site: the page works offline.
        for (_, _, text) in ASSETS.iter().chain([&("index.html", "", INDEX)]) {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"),
                "{text:.80}"
            );
        }
    }
}
