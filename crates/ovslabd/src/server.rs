//! The API: routes (the table in [`ovslab_api`]), who may call them, and the
//! serve loop with its graceful stop.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use ovslab_api::{ApiError, TraceRequest, UpRequest};
use ovslab_reconciler::trace::TraceError;
use ovslab_reconciler::{Engine, EngineConfig, ReconcileError};
use tokio::net::UnixListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;

use crate::actions::{Action, Reply, error_chain};
use crate::config::Config;
use crate::notify::{State as Notify, notify};
use crate::{labs_dir, socket};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut stop_signals = StopSignals::new()?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let engine = Arc::new(Engine::new(EngineConfig::new(&config.run_dir)));
    let (listener, socket_file) = socket::bind(&config.socket, group_id(API_GROUP))?;
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
        env!("CARGO_PKG_VERSION"),
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
            config.labs_dir.clone(),
            owned.clone(),
            stopping.clone(),
            status_changed.clone(),
            why,
        )
    };
    let mut work = JoinSet::new();
    work.spawn(labs_dir_pass("start"));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(engine.clone(), Access::for_this_process()).layer(
        middleware::from_fn_with_state(status_changed.clone(), status_after_changes),
    );
    let mut serve = pin!(
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future()
    );

    let first = loop {
        tokio::select! {
            result = &mut serve => {
                result.context("serving the API")?;
                anyhow::bail!("the API server stopped by itself");
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

    tracing::info!(
        "{first}: stopping; finishing the requests in flight ({})",
        if config.on_exit == "down" {
            "then removing every lab: --on-exit down"
        } else {
            "labs stay up: --on-exit keep; `ovslab down` removes them"
        }
    );
    notify(&[Notify::Stopping]);
    stopping.store(true, Ordering::Relaxed);
    if let Some(audits) = audits {
        audits.abort();
    }
    status_updates.abort();
    let _ = stop_tx.send(());
    // New clients find no socket (rather than a refusing one) from now on.
    drop(socket_file);
    let drain = async {
        let served = serve.await;
        while work.join_next().await.is_some() {}
        served
    };
    tokio::select! {
        result = drain => result.context("serving the API")?,
        again = stop_signals.next() => tracing::warn!("{again} again: exiting without waiting"),
    }
    if config.on_exit == "down" {
        for lab in engine.labs().await {
            tracing::info!("stopping with --on-exit down: removing lab {lab}");
            if let Err(e) = engine.down(&lab).await {
                tracing::error!("removing lab {lab}: {}", error_chain(&e));
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// One pass over the labs directory (at start, and on each SIGHUP; one at a
/// time), then `READY=1` with the new status.
async fn bring_up_labs_dir(
    engine: Arc<Engine>,
    dir: PathBuf,
    owned: Arc<tokio::sync::Mutex<labs_dir::Owned>>,
    stopping: Arc<AtomicBool>,
    status_changed: Arc<tokio::sync::Notify>,
    why: &'static str,
) {
    let mut owned = owned.lock().await;
    let up = labs_dir::sync(&engine, &dir, &mut owned, &stopping).await;
    drop(owned);
    let status = status_line(&engine).await;
    tracing::info!("{why}: {up} lab(s) of {} up; {status}", dir.display());
    if !stopping.load(Ordering::Relaxed) {
        notify(&[Notify::Ready, Notify::Status(&status)]);
    }
    status_changed.notify_one();
}

/// Keeps systemd's `STATUS=` current: the labs, their instances, health;
/// at once after a lab was brought up or removed, else every 5 s (health
/// changes by itself).
async fn report_status(engine: Arc<Engine>, changed: Arc<tokio::sync::Notify>) {
    loop {
        notify(&[Notify::Status(&status_line(&engine).await)]);
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
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

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
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
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string; the result is read at once, before any
    // other getgr* call on this thread could reuse the buffer.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null pointers from getgrnam point to a valid group.
    (!entry.is_null()).then(|| unsafe { (*entry).gr_gid })
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
pub fn router(engine: Arc<Engine>, access: Access) -> Router {
    Router::new()
        .route("/v1/labs", get(list_labs).post(up))
        .route("/v1/labs/{lab}", get(status).delete(down))
        .route("/v1/labs/{lab}/targets/{name}", get(target))
        .route("/v1/labs/{lab}/check", post(check))
        .route("/v1/labs/{lab}/trace", post(trace))
        .route("/v1/labs/{lab}/topology", get(topology))
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(engine)
        .layer(middleware::from_fn_with_state(access, authorize))
}

type Answer = Result<Json<Reply>, Failure>;

async fn perform(engine: &Engine, action: Action) -> Answer {
    action.run(engine).await.map(Json).map_err(Failure::from)
}

async fn up(State(engine): State<Arc<Engine>>, body: Bytes) -> Answer {
    let request: UpRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure::bad_request(format!(
            "malformed request body (expected an UpRequest): {e}"
        ))
    })?;
    let topology = ovslab_topology::parse(&request.source, &request.topology)
        .map_err(|e| Failure::bad_request(e.to_string()))?;
    let action = Action::Up {
        topology: Box::new(topology),
        text: request.topology,
    };
    perform(&engine, action).await
}

async fn down(State(engine): State<Arc<Engine>>, Path(lab): Path<String>) -> Answer {
    perform(&engine, Action::Down { lab }).await
}

async fn list_labs(State(engine): State<Arc<Engine>>) -> Answer {
    perform(&engine, Action::ListLabs).await
}

async fn status(State(engine): State<Arc<Engine>>, Path(lab): Path<String>) -> Answer {
    perform(&engine, Action::Status { lab }).await
}

async fn target(
    State(engine): State<Arc<Engine>>,
    Path((lab, name)): Path<(String, String)>,
) -> Answer {
    perform(&engine, Action::Target { lab, name }).await
}

async fn check(State(engine): State<Arc<Engine>>, Path(lab): Path<String>) -> Answer {
    perform(&engine, Action::Check { lab }).await
}

async fn trace(State(engine): State<Arc<Engine>>, Path(lab): Path<String>, body: Bytes) -> Answer {
    let request: TraceRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure::bad_request(format!(
            "malformed request body (expected a TraceRequest): {e}"
        ))
    })?;
    perform(&engine, Action::Trace { lab, request }).await
}

async fn topology(State(engine): State<Arc<Engine>>, Path(lab): Path<String>) -> Answer {
    perform(&engine, Action::Topology { lab }).await
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

impl From<ReconcileError> for Failure {
    fn from(e: ReconcileError) -> Self {
        let status = match e {
            ReconcileError::UnknownLab(_) | ReconcileError::UnknownTarget { .. } => {
                StatusCode::NOT_FOUND
            }
            ReconcileError::BadName(_)
            | ReconcileError::Trace {
                source: TraceError::BadSource(_) | TraceError::BadDestination(_),
                ..
            } => StatusCode::BAD_REQUEST,
            ReconcileError::ForeignNamespaces { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure {
            status,
            message: error_chain(&e),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                error: self.message,
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
    fn unknown_labs_and_targets_are_404_other_errors_500() {
        let f = Failure::from(ReconcileError::UnknownLab("x".into()));
        assert_eq!(f.status, StatusCode::NOT_FOUND);
        assert_eq!(f.message, "lab `x` is not known to this daemon");
        let f = Failure::from(ReconcileError::UnknownTarget {
            lab: "x".into(),
            name: "y".into(),
        });
        assert_eq!(f.status, StatusCode::NOT_FOUND);
        let f = Failure::from(ReconcileError::Switch {
            node: "n".into(),
            message: "m".into(),
        });
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
