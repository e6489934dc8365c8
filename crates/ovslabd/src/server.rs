//! The API: routes (the table in [`ovslab_api`]), who may call them, what
//! they accept (names by the topology's rules, bodies by size and time), and
//! the run loop with its bounded stop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ovslab_api::{ApiError, MAX_SOURCE, TraceRequest, UpRequest};
use ovslab_probe::trace::TraceError;
use ovslab_reconciler::{Engine, EngineConfig, ReconcileError};
use ovslab_topology::{
    is_unsafe, lab_name_problem, object_name_problem, printable_lines as printable, shortened,
};
use tokio::net::UnixStream;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;

use crate::actions::{Action, ActionError, Changes, Reply, Unfinished, error_chain};
use crate::config::Config;
use crate::connections::Connections;
use crate::notify::{State as Notify, notify};
use crate::on_exit::{self, OnExit};
use crate::quota::Quotas;
use crate::{labs_dir, socket};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    // Before anything touches the run directory; held until the end,
    // past the labs' removal of a stop with `--on-exit down`.
    let _run_lock = crate::run_lock::take(&config.run_dir)?;
    // One spelling of the run directory whatever the path given (Debian's
    // `/var/run` is `/run`): the labs' processes are known by the paths in
    // their command lines, and a daemon started on another spelling took
    // them for strangers and started a second set.
    config.run_dir = std::fs::canonicalize(&config.run_dir)
        .with_context(|| format!("resolving the run directory {}", config.run_dir.display()))?;
    let mut stop_signals = StopSignals::new()?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut engine_config = EngineConfig::new(&config.run_dir);
    engine_config.dhcp_hook =
        Some(crate::dhcp_hook::install(&config.run_dir).with_context(|| {
            format!("installing the DHCP hook in {}", config.run_dir.display())
        })?);
    engine_config.spare_nodes = usize::from(config.spare_nodes);
    let engine = Arc::new(Engine::new(engine_config));
    // A killed daemon's spares go before new ones are made, whether this
    // one keeps any or not.
    let spares = engine.spares();
    if let Some(spares) = &spares {
        for line in spares.clear().await {
            tracing::info!("{line} (left by an earlier daemon)");
        }
    }
    // Asked once per run (`ovs-vswitchd --version`), and otherwise by the
    // first `up`, on its critical path.
    tokio::spawn(ovslab_reconciler::ovs_process::installed_version());
    on_exit::forget_stale(&config.run_dir);
    // Before anything else runs: the labs adopted from a previous run.
    let descriptors = crate::quota::raise_descriptor_limit();
    tracing::debug!(descriptors, "descriptor limit");
    let quotas = Arc::new(
        Quotas::new(
            config.max_labs,
            config.max_namespaces,
            engine.footprints().await,
        )
        .with_descriptors(descriptors),
    );
    let (listener, socket_file) = socket::bind(&config.socket, group_id(API_GROUP))?;
    // Made from here on: every way out below stops and clears them.
    let mut filling = spares
        .clone()
        .filter(|s| s.wanted() > 0)
        .map(|spares| tokio::spawn(async move { spares.keep_filled().await }));
    let status_changed = Arc::new(tokio::sync::Notify::new());
    let status_updates = tokio::spawn(report_status(engine.clone(), status_changed.clone()));
    let audits = (config.audit_interval > 0.0).then(|| {
        engine.spawn_audits(
            std::time::Duration::from_secs_f64(config.audit_interval),
            crate::actions::release_freed_memory,
        )
    });
    tracing::info!(
        "ovslabd {} listening on {} (run directory {}, labs directory {})",
        ovslab_version::VERSION,
        config.socket.display(),
        config.run_dir.display(),
        config.labs_dir.display()
    );

    // Labs from --labs-dir come up while the API already answers.
    let stopping = Arc::new(AtomicBool::new(false));
    let owned = Arc::new(tokio::sync::Mutex::new(labs_dir::Owned::load(
        &config.run_dir,
    )));
    let labs_dir_pass = |why| {
        bring_up_labs_dir(
            engine.clone(),
            quotas.clone(),
            config.labs_dir.clone(),
            owned.clone(),
            stopping.clone(),
            status_changed.clone(),
            why,
        )
    };
    let mut work = JoinSet::new();
    work.spawn(labs_dir_pass("start"));

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let app = App {
        engine: engine.clone(),
        quotas: quotas.clone(),
        changes: Changes::default(),
        stopping: stop_rx.clone(),
        streams: Streams::new(crate::connections::max_streams(config.max_connections)),
    };
    let router = router(app.clone(), Access::for_this_process()).layer(
        middleware::from_fn_with_state(status_changed.clone(), status_after_changes),
    );
    let mut connections = Connections::new(config.max_connections);
    let mut serve = pin!(async move {
        connections
            .accept_until(&listener, &router, &mut stop_rx)
            .await;
        (connections, listener)
    });

    let first = loop {
        tokio::select! {
            _ = &mut serve => {
                remove_spares(spares.as_deref(), filling.take()).await;
                anyhow::bail!("the API server stopped by itself")
            }
            name = stop_signals.next() => break name,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: bringing the labs in line with {} again", config.labs_dir.display());
                notify(&[Notify::Reloading]);
                work.spawn(labs_dir_pass("reload"));
            }
            Some(_) = work.join_next() => {}
        }
    };

    let (on_exit, requested) =
        on_exit::for_this_stop(&config.run_dir, OnExit::from_flag(&config.on_exit));
    let source = if requested {
        format!("{} asks", on_exit::ONCE_FILE)
    } else {
        "--on-exit".to_string()
    };
    tracing::info!(
        "{first}: stopping; finishing the requests in flight for at most {} s ({})",
        config.stop_grace,
        match on_exit {
            OnExit::Down => format!("then removing every lab: {source} down"),
            OnExit::Keep => {
                format!("labs stay up: {source} keep; `ovslab down` removes them")
            }
        }
    );
    notify(&[Notify::Stopping]);
    stopping.store(true, Ordering::Relaxed);
    if let Some(audits) = audits {
        audits.abort();
    }
    status_updates.abort();
    let _ = stop_tx.send(true);
    let (connections, listener) = serve.await;
    // New clients find no socket (rather than a refusing one) from now on.
    drop(listener);
    drop(socket_file);
    // One bound for all that is in flight: requests, the `up`s and `down`s
    // they started (which go on without their client), a labs directory
    // pass. What is not done by then is abandoned, like at a crash.
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(config.stop_grace);
    let drain = async {
        let cut = connections.close(deadline).await;
        let abandoned = app.changes.finish(deadline).await;
        let passes = tokio::time::timeout_at(deadline, async {
            while work.join_next().await.is_some() {}
        })
        .await;
        if passes.is_err() {
            work.abort_all();
            while work.join_next().await.is_some() {}
            tracing::warn!("abandoned the pass over the labs directory in progress");
        }
        if cut > 0 {
            tracing::warn!("closed {cut} connection(s) whose request was not answered in time");
        }
        if abandoned > 0 {
            tracing::warn!(
                "abandoned {abandoned} up/down in progress (`ovslab up` finishes such a lab, `ovslab down` removes it)"
            );
        }
    };
    tokio::select! {
        () = drain => {}
        again = stop_signals.next() => tracing::warn!("{again} again: exiting without waiting"),
    }
    if requested {
        on_exit::used(&config.run_dir);
    }
    if on_exit == OnExit::Down {
        for lab in engine.labs().await {
            tracing::info!("stopping with {source} down: removing lab {lab}");
            if let Err(e) = engine.down(&lab).await {
                tracing::error!("removing lab {lab}: {}", error_chain(&e));
            }
        }
    }
    remove_spares(spares.as_deref(), filling).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a stopping daemon waits for the spares being made.
const SPARES_MADE_WITHIN: Duration = Duration::from_secs(10);

/// Stops making spares (those being made are finished, for at most
/// [`SPARES_MADE_WITHIN`]) and removes them all, by the records in their
/// directories.
async fn remove_spares(
    spares: Option<&ovslab_reconciler::spare::Spares>,
    filling: Option<tokio::task::JoinHandle<()>>,
) {
    let Some(spares) = spares else {
        return;
    };
    if let Some(mut filling) = filling {
        spares.stop();
        if tokio::time::timeout(SPARES_MADE_WITHIN, &mut filling)
            .await
            .is_err()
        {
            tracing::warn!("spare nodes still being made after {SPARES_MADE_WITHIN:?}: abandoned");
            filling.abort();
            let _ = filling.await;
        }
    }
    for line in spares.clear().await {
        tracing::debug!("{line}");
    }
}

/// What every request handler can reach.
#[derive(Debug, Clone)]
pub struct App {
    engine: Arc<Engine>,
    quotas: Arc<Quotas>,
    changes: Changes,
    /// Turns true when the daemon stops: streams end then.
    stopping: tokio::sync::watch::Receiver<bool>,
    streams: Streams,
}

/// The event streams open at once, at most
/// [`crate::connections::max_streams`]: a stream holds its connection for
/// as long as the lab exists, and with no bound, streams could take every
/// connection and lock every other client (root's `down` too) out.
#[derive(Debug, Clone)]
struct Streams {
    open: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Streams {
    fn new(max: usize) -> Self {
        Streams {
            open: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Room for one more stream, held until it ends; a 503 when none is left.
    fn open(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Failure> {
        self.open.clone().try_acquire_owned().map_err(|_| Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "{} event streams are open, the most ovslabd serves at once (a quarter of \
                 --max-connections, so that other requests always find a connection): close \
                 one (a page of `ovslab ui`) and try again",
                self.max
            ),
        })
    }
}

/// One pass over the labs directory (at start, and on each SIGHUP; one at a
/// time), then `READY=1` with the new status.
async fn bring_up_labs_dir(
    engine: Arc<Engine>,
    quotas: Arc<Quotas>,
    dir: PathBuf,
    owned: Arc<tokio::sync::Mutex<labs_dir::Owned>>,
    stopping: Arc<AtomicBool>,
    status_changed: Arc<tokio::sync::Notify>,
    why: &'static str,
) {
    let mut owned = owned.lock().await;
    let up = labs_dir::sync(&engine, &quotas, &dir, &mut owned, &stopping).await;
    drop(owned);
    let status = status_line(&engine).await;
    tracing::info!("{why}: {up} lab(s) of {} up; {status}", dir.display());
    if !stopping.load(Ordering::Relaxed) {
        notify(&[Notify::Ready, Notify::Status(&status)]);
    }
    status_changed.notify_one();
}

/// Keeps systemd's `STATUS=` current: the labs, their instances, health;
/// at once after a lab was brought up or removed, and after an audit that
/// repaired a lab or could not (health changes by itself, and the audits
/// are told of it). Nothing runs while nothing happens: reading the health
/// of a 1000-instance lab every few seconds cost 1 % of a core.
async fn report_status(engine: Arc<Engine>, changed: Arc<tokio::sync::Notify>) {
    let health = engine.health_changes();
    loop {
        notify(&[Notify::Status(&status_line(&engine).await)]);
        tokio::select! {
            _ = changed.notified() => {}
            _ = health.notified() => {}
        }
    }
}

/// Wakes [`report_status`] after each request that changes the labs.
async fn status_after_changes(
    State(changed): State<Arc<tokio::sync::Notify>>,
    request: Request,
    next: Next,
) -> Response {
    let changes = match *request.method() {
        Method::POST => request.uri().path() == "/v1/labs",
        Method::DELETE => true,
        _ => false,
    };
    let response = next.run(request).await;
    if changes {
        changed.notify_one();
    }
    response
}

/// `2 labs, 104 instances, all healthy` (or which are not).
pub async fn status_line(engine: &Engine) -> String {
    let labs = engine.labs().await;
    let mut instances = 0;
    let mut unhealthy = Vec::new();
    for lab in &labs {
        match engine.status(lab).await {
            Ok(s) => {
                instances += s.instances.len();
                if !s.healthy {
                    unhealthy.push(lab.clone());
                }
            }
            Err(_) => unhealthy.push(lab.clone()),
        }
    }
    let health = if unhealthy.is_empty() {
        "all healthy".to_string()
    } else {
        format!("not healthy: {}", unhealthy.join(", "))
    };
    format!(
        "{} lab{}, {instances} instances, {health}",
        labs.len(),
        if labs.len() == 1 { "" } else { "s" }
    )
}

/// SIGTERM and SIGINT, both meaning "stop".
#[derive(Debug)]
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The credentials of the process at the other end of a connection
/// (`SO_PEERCRED`), taken when the connection is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials of a connection's other end.
    pub fn of(stream: &UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
            },
            Err(e) => {
                tracing::warn!("cannot read the credentials of a connection: {e}");
                Peer {
                    uid: None,
                    gid: None,
                    pid: None,
                }
            }
        }
    }
}

/// Who may use the API: root, the user the daemon runs as, and members of
/// the group `ovslab` (when it exists), by the peer's gid or its
/// supplementary groups (`Groups:` in `/proc/<pid>/status`).
#[derive(Debug, Clone, Copy)]
pub struct Access {
    daemon_uid: u32,
    group: Option<u32>,
}

/// The group whose members may use the API (`make install` creates it).
pub const API_GROUP: &str = "ovslab";

impl Access {
    fn for_this_process() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let daemon_uid = unsafe { libc::geteuid() };
        Access {
            daemon_uid,
            group: group_id(API_GROUP),
        }
    }

    pub fn allows(&self, peer: &Peer) -> bool {
        if matches!(peer.uid, Some(uid) if uid == 0 || uid == self.daemon_uid) {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        peer.gid == Some(group)
            || peer
                .pid
                .is_some_and(|pid| supplementary_groups(pid).contains(&group))
    }
}

/// The gid of a group, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A process's supplementary groups (empty when it is gone).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses requests from peers that [`Access`] does not allow.
async fn authorize(
    State(access): State<Access>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if access.allows(&peer) {
        return next.run(request).await;
    }
    tracing::warn!(
        "refused {} {} from uid {:?} (pid {:?})",
        request.method(),
        request.uri(),
        peer.uid,
        peer.pid
    );
    Failure {
        status: StatusCode::FORBIDDEN,
        message: format!(
            "permission denied: ovslabd serves root, uid {} and the group `ovslab` only (you are uid {})",
            access.daemon_uid,
            peer.uid
                .map_or_else(|| "unknown".to_string(), |u| u.to_string())
        ),
    }
    .into_response()
}

/// The routes of the API; see [`ovslab_api`] for the table.
pub fn router(app: App, access: Access) -> Router {
    Router::new()
        .route("/v1/labs", get(list_labs).post(up))
        .route("/v1/labs/{lab}", get(status).delete(down))
        .route("/v1/labs/{lab}/targets/{name}", get(target))
        .route("/v1/labs/{lab}/check", post(check))
        .route("/v1/labs/{lab}/trace", post(trace))
        .route("/v1/labs/{lab}/topology", get(topology))
        .route("/v1/labs/{lab}/progress", get(progress))
        .route("/v1/labs/{lab}/events", get(events))
        .route("/v1/labs/{lab}/nodes/{node}/fail", post(fail_node))
        .route("/v1/labs/{lab}/nodes/{node}/recover", post(recover_node))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
        .layer(middleware::from_fn_with_state(access, authorize))
}

/// The largest request body: a topology file, as JSON. The 1000-instance
/// lab's file is 122 KiB.
pub const MAX_BODY: usize = 4 << 20;

/// How long a client has to send the whole body of its request, once its
/// header arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = Result<Json<Reply>, Failure>;

/// Runs a query; it is dropped, and stops, when its client goes away.
async fn perform(app: &App, action: Action) -> Answer {
    action
        .run(&app.engine, &app.quotas)
        .await
        .map(Json)
        .map_err(Failure::from)
}

/// Runs a change to its end, even when its client goes away meanwhile.
async fn change(app: &App, action: Action) -> Answer {
    // Every change names its lab.
    let lab = action.lab().unwrap_or_default().to_string();
    let (engine, quotas) = (app.engine.clone(), app.quotas.clone());
    let done = app
        .changes
        .run(&lab, async move { action.run(&engine, &quotas).await })
        .await;
    match done {
        Ok(result) => result.map(Json).map_err(Failure::from),
        Err(unfinished) => Err(Failure {
            status: match unfinished {
                Unfinished::Stopping | Unfinished::LabBusy { .. } | Unfinished::Busy { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Unfinished::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            },
            message: unfinished.to_string(),
        }),
    }
}

async fn up(State(app): State<App>, request: Request) -> Answer {
    let body = read_body(request).await?;
    let request: UpRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure::bad_request(format!(
            "malformed request body (expected an UpRequest): {e}"
        ))
    })?;
    if let Some(problem) = source_problem(&request.source) {
        return Err(Failure::bad_request(problem));
    }
    let topology = ovslab_topology::parse(&request.source, &request.topology)
        .map_err(|e| Failure::bad_request(e.to_string()))?;
    checked(&topology.lab, lab_name_problem)?;
    let action = Action::Up {
        topology: Box::new(topology),
        text: request.topology,
    };
    change(&app, action).await
}

/// Why an `up`'s `source` is refused, if it is: it starts every problem
/// line of the answer and every log line about the lab, so it must be short
/// ([`MAX_SOURCE`]) and one printable line.
fn source_problem(source: &str) -> Option<String> {
    if source.len() > MAX_SOURCE {
        return Some(format!(
            "`source` is {} bytes long; at most {MAX_SOURCE} are accepted (it names the topology \
             file in error messages: send a shorter name)",
            source.len()
        ));
    }
    let c = source.chars().find(|c| is_unsafe(*c))?;
    Some(format!(
        "`source` holds the control character {}: it names the topology file in error \
         messages, and must be one line of printable text",
        ovslab_topology::printable(&c.to_string())
    ))
}

async fn down(State(app): State<App>, lab: Result<Path<String>, PathRejection>) -> Answer {
    let lab = lab_of(lab)?;
    change(&app, Action::Down { lab }).await
}

async fn list_labs(State(app): State<App>) -> Answer {
    perform(&app, Action::ListLabs).await
}

async fn status(State(app): State<App>, lab: Result<Path<String>, PathRejection>) -> Answer {
    let lab = lab_of(lab)?;
    perform(&app, Action::Status { lab }).await
}

async fn target(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let Path((lab, name)) = path.map_err(|e| Failure::bad_request(e.body_text()))?;
    checked(&lab, lab_name_problem)?;
    // `ROUTER@NODE` names a router's copy on a node.
    for part in name.splitn(2, '@') {
        checked(part, object_name_problem)?;
    }
    perform(&app, Action::Target { lab, name }).await
}

async fn fail_node(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (lab, node) = lab_and_node(path)?;
    change(
        &app,
        Action::Node {
            lab,
            node,
            fail: true,
        },
    )
    .await
}

async fn recover_node(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (lab, node) = lab_and_node(path)?;
    change(
        &app,
        Action::Node {
            lab,
            node,
            fail: false,
        },
    )
    .await
}

/// The `{lab}` and `{node}` of a path, each checked by its rule.
fn lab_and_node(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), Failure> {
    let Path((lab, node)) = path.map_err(|e| Failure::bad_request(e.body_text()))?;
    checked(&lab, lab_name_problem)?;
    checked(&node, object_name_problem)?;
    Ok((lab, node))
}

async fn progress(State(app): State<App>, lab: Result<Path<String>, PathRejection>) -> Answer {
    let lab = lab_of(lab)?;
    perform(&app, Action::Progress { lab }).await
}

/// How often an event stream looks whether its lab is still there.
const EVENTS_LAB_CHECK: Duration = Duration::from_secs(5);

/// `GET /v1/labs/{lab}/events`: one [`ovslab_api::AuditEvent`] per line
/// after each audit of the lab, for as long as the client reads, the lab
/// exists and the daemon runs (a stop ends the stream at once, so it never
/// holds the stop for its grace). At most [`Streams`] at once.
async fn events(
    State(app): State<App>,
    lab: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let lab = lab_of(lab)?;
    if !app.engine.labs().await.contains(&lab) {
        return Err(ReconcileError::UnknownLab(lab).into());
    }
    let room = app.streams.open()?;
    let state = EventStream {
        _room: room,
        lab,
        events: app.engine.subscribe(),
        engine: app.engine.clone(),
        stopping: app.stopping.clone(),
        next_lab_check: tokio::time::Instant::now() + EVENTS_LAB_CHECK,
    };
    let lines = futures::stream::unfold(state, |mut s| async move {
        let line = s.next_line().await?;
        Some((Ok::<_, std::convert::Infallible>(line), s))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

/// What [`events`] streams from.
struct EventStream {
    /// Given back when the stream ends or its client goes.
    _room: tokio::sync::OwnedSemaphorePermit,
    lab: String,
    events: tokio::sync::broadcast::Receiver<ovslab_api::AuditEvent>,
    engine: Arc<Engine>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// When the stream next looks for its lab: a deadline kept across
    /// events, so that other labs' audits never put the look off.
    next_lab_check: tokio::time::Instant,
}

impl EventStream {
    /// The next line for the client; `None` ends the stream.
    async fn next_line(&mut self) -> Option<String> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if *self.stopping.borrow() {
                return None;
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) if event.lab == self.lab => {
                        let mut line = serde_json::to_string(&event).ok()?;
                        line.push('\n');
                        return Some(line);
                    }
                    Ok(_) => {}
                    // A slow reader misses audits; the next one says how
                    // the lab is.
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(lab = self.lab, "an event stream missed {missed} audits");
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.stopping.changed() => return None,
                () = tokio::time::sleep_until(self.next_lab_check) => {
                    self.next_lab_check = tokio::time::Instant::now() + EVENTS_LAB_CHECK;
                    if !self.engine.labs().await.contains(&self.lab) {
                        return None;
                    }
                }
            }
        }
    }
}

async fn check(State(app): State<App>, lab: Result<Path<String>, PathRejection>) -> Answer {
    let lab = lab_of(lab)?;
    perform(&app, Action::Check { lab }).await
}

async fn trace(
    State(app): State<App>,
    lab: Result<Path<String>, PathRejection>,
    request: Request,
) -> Answer {
    let lab = lab_of(lab)?;
    let body = read_body(request).await?;
    let request: TraceRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure::bad_request(format!(
            "malformed request body (expected a TraceRequest): {e}"
        ))
    })?;
    checked(&request.from, object_name_problem)?;
    if request.protocol.port() == Some(0) {
        return Err(Failure::bad_request(format!(
            "{}: a port is 1–65535",
            request.protocol
        )));
    }
    // An address, or the name of what has one.
    if request.to.parse::<Ipv4Addr>().is_err() {
        checked(&request.to, object_name_problem)?;
    }
    perform(&app, Action::Trace { lab, request }).await
}

async fn topology(State(app): State<App>, lab: Result<Path<String>, PathRejection>) -> Answer {
    let lab = lab_of(lab)?;
    perform(&app, Action::Topology { lab }).await
}

/// The `{lab}` of a path, checked by the topology's rule for lab names
/// before it is used for anything (a path, a namespace name, a log line).
fn lab_of(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    let Path(lab) = path.map_err(|e| Failure::bad_request(e.body_text()))?;
    checked(&lab, lab_name_problem)?;
    Ok(lab)
}

/// Names longer than this are quoted only in part in an answer.
const NAME_SHOWN: usize = 80;

/// `Ok` when `rule` finds no problem with `name`, else a 400 saying it.
fn checked(name: &str, rule: fn(&str) -> Option<String>) -> Result<(), Failure> {
    let problem = if name.chars().count() > NAME_SHOWN {
        let start: String = name.chars().take(NAME_SHOWN).chain(['…']).collect();
        rule(&start).map(|p| format!("{p} ({} bytes given)", name.len()))
    } else {
        rule(name)
    };
    match problem {
        Some(problem) => Err(Failure::bad_request(problem)),
        None => Ok(()),
    }
}

/// The body of a request, refused when longer than [`MAX_BODY`] (413) or
/// slower than [`BODY_TIMEOUT`] (408).
async fn read_body(request: Request) -> Result<Bytes, Failure> {
    let too_large = || Failure {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the request body is larger than {} MiB, the most ovslabd reads",
            MAX_BODY >> 20
        ),
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Failure::bad_request(format!(
            "reading the request body: {e}"
        ))),
        Err(_) => Err(Failure {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        }),
    }
}

async fn no_such_route(method: Method, uri: Uri) -> Failure {
    Failure {
        status: StatusCode::NOT_FOUND,
        message: format!("no such API route: {method} {uri}"),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    Failure {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{uri} does not accept {method}"),
    }
}

/// An error answer: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad_request(message: String) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }
}

impl From<ActionError> for Failure {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Refused(refused) => Failure {
                status: StatusCode::CONFLICT,
                message: refused.to_string(),
            },
            ActionError::Engine(e) => e.into(),
        }
    }
}

impl From<ReconcileError> for Failure {
    fn from(e: ReconcileError) -> Self {
        let status = match e {
            ReconcileError::UnknownLab(_)
            | ReconcileError::UnknownTarget { .. }
            | ReconcileError::UnknownNode { .. } => StatusCode::NOT_FOUND,
            ReconcileError::BadName(_)
            | ReconcileError::Trace {
                source: TraceError::BadSource(_) | TraceError::BadDestination(_),
                ..
            } => StatusCode::BAD_REQUEST,
            ReconcileError::ForeignNamespaces { .. } => StatusCode::CONFLICT,
            // A lab's component missed its deadline: the lab is there, but
            // cannot answer now (the audit restarts it).
            ReconcileError::NotAnswering { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure {
            status,
            message: error_chain(&e),
        }
    }
}

/// The longest error message answered, in bytes; a longer one loses its
/// middle. Messages quote what a client sent (a `source`, a name, a value
/// of its topology); a refused topology's problems are fewer already
/// ([`ovslab_topology::PROBLEMS_TEXT`]).
const MAX_ERROR: usize = 64 * 1024;

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                error: shortened(&printable(&self.message), MAX_ERROR).into_owned(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> Peer {
        Peer {
            uid: Some(uid),
            gid: Some(uid),
            pid: Some(1),
        }
    }

    #[test]
    fn groups_are_found_by_name() {
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-of-ovslab"), None);
        assert_eq!(group_id("bad\0name"), None);
    }

    #[test]
    fn root_and_the_daemons_user_are_allowed_others_are_not() {
        let access = Access {
            daemon_uid: 1000,
            group: None,
        };
        assert!(access.allows(&peer(0)));
        assert!(access.allows(&peer(1000)));
        assert!(!access.allows(&peer(1001)));
        let with_group = Access {
            daemon_uid: 1000,
            group: Some(1001),
        };
        assert!(with_group.allows(&peer(1001)), "by primary gid");
        assert!(!with_group.allows(&peer(1002)));
        assert!(!access.allows(&Peer {
            uid: None,
            gid: None,
            pid: None
        }));
    }

    #[test]
    fn names_are_checked_by_the_topology_rules_and_quoted_escaped_and_short() {
        assert!(checked("seed-2", lab_name_problem).is_ok());
        for bad in [
            "..",
            ".",
            "/tmp/x",
            "a/b",
            "",
            "-rf",
            "a\u{1b}[31m",
            "seed.blue",
        ] {
            let f = checked(bad, lab_name_problem).unwrap_err();
            assert_eq!(f.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let long = "x".repeat(10_000);
        let f = checked(&long, object_name_problem).unwrap_err();
        assert!(f.message.len() < 300, "{}", f.message);
        assert!(f.message.contains("10000 bytes"), "{}", f.message);
    }

    #[test]
    fn a_source_is_one_short_printable_line() {
        assert_eq!(source_problem("/etc/ovslab/labs/seed.yaml"), None);
        assert_eq!(source_problem(""), None);
        assert_eq!(source_problem(&"é".repeat(MAX_SOURCE / 2)), None);
        let long = source_problem(&"x".repeat(32 * 1024)).unwrap();
        assert!(
            long.starts_with("`source` is 32768 bytes long; at most 256 are accepted"),
            "{long}"
        );
        for bad in ["a\nb.yaml", "x\u{1b}]0;owned\u{7}.yaml", "\u{202e}lmay.exe"] {
            let problem = source_problem(bad).unwrap();
            assert!(problem.contains("the control character \\"), "{problem}");
            assert!(!problem.chars().any(is_unsafe), "{problem:?}");
        }
    }

    #[tokio::test]
    async fn an_error_answer_is_bounded_whatever_it_quotes() {
        let message = format!("`{}` is not a name", "x".repeat(10 << 20));
        let answer = Failure::bad_request(message).into_response();
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(body.len() <= MAX_ERROR + 100, "{} bytes", body.len());
        let error: ApiError = serde_json::from_slice(&body).unwrap();
        assert!(
            error.error.ends_with("xxx` is not a name"),
            "{}",
            error.error
        );
    }

    #[test]
    fn answers_never_carry_control_characters_but_newlines() {
        assert_eq!(printable("a\u{1b}[31mb\nc\0"), "a\\x1b[31mb\nc\\x00");
        assert_eq!(printable("plain été"), "plain été");
    }

    #[test]
    fn a_refused_up_is_409() {
        let f = Failure::from(ActionError::Refused(crate::quota::QuotaError::Labs {
            lab: "x".into(),
            running: 1,
            max: 1,
        }));
        assert_eq!(f.status, StatusCode::CONFLICT);
        assert!(f.message.contains("--max-labs 1"));
    }

    #[test]
    fn unknown_labs_and_targets_are_404_other_errors_500() {
        let f = Failure::from(ReconcileError::UnknownLab("x".into()));
        assert_eq!(f.status, StatusCode::NOT_FOUND);
        assert_eq!(f.message, "lab `x` is not known to this daemon");
        let f = Failure::from(ReconcileError::UnknownTarget {
            lab: "x".into(),
            name: "y".into(),
        });
        assert_eq!(f.status, StatusCode::NOT_FOUND);
        let f = Failure::from(ReconcileError::VswitchdExited {
            node: "n".into(),
            cfg: 3,
        });
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
        let f = Failure::from(ReconcileError::BadName("`..`: bad".into()));
        assert_eq!(f.status, StatusCode::BAD_REQUEST);
        let f = Failure::from(ReconcileError::ForeignNamespaces {
            lab: "x".into(),
            names: vec!["x.blue".into()],
        });
        assert_eq!(f.status, StatusCode::CONFLICT);
        let f = Failure::from(ReconcileError::NotAnswering {
            node: "n".into(),
            program: "ovsdb-server",
            request: "echo".into(),
            after: std::time::Duration::from_secs(2),
        });
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            f.message,
            "ovsdb-server of n did not answer echo within 2 s"
        );
    }
}
