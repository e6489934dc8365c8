//! Every action the daemon accepts. Each API route, and the start-up pass over
//! `--labs-dir`, turns into one [`Action`]; [`Action::run`] is the only place
//! that calls the [`Engine`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ovslab_api::{
    CheckReport, DownReport, LabStatus, NodeReport, Target, TraceReport, TraceRequest, UpProgress,
    UpReport, UpRequest,
};
use ovslab_reconciler::{Engine, ReconcileError};
use ovslab_topology::{Topology, printable, printable_lines};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::quota::{QuotaError, Quotas, footprint_of};

/// What the daemon can be asked to do.
#[derive(Debug)]
pub enum Action {
    /// Create or converge a lab (`POST /v1/labs`). `text` is the topology file
    /// as given, which the engine saves to finish or remove the lab later.
    Up {
        topology: Box<Topology>,
        text: String,
    },
    /// Remove everything of a lab (`DELETE /v1/labs/{lab}`).
    Down { lab: String },
    /// The labs this daemon manages (`GET /v1/labs`).
    ListLabs,
    /// A lab's nodes, instances and health (`GET /v1/labs/{lab}`).
    Status { lab: String },
    /// Where `ovslab exec` runs a command (`GET /v1/labs/{lab}/targets/{name}`).
    Target { lab: String, name: String },
    /// Run the lab's declared checks (`POST /v1/labs/{lab}/check`).
    Check { lab: String },
    /// Follow one probe through the lab (`POST /v1/labs/{lab}/trace`).
    Trace { lab: String, request: TraceRequest },
    /// The lab's saved topology file (`GET /v1/labs/{lab}/topology`).
    Topology { lab: String },
    /// How far the lab's converge has come (`GET /v1/labs/{lab}/progress`).
    Progress { lab: String },
    /// Fail a node on purpose, or bring it back
    /// (`POST /v1/labs/{lab}/nodes/{node}/fail`, `…/recover`).
    Node {
        lab: String,
        node: String,
        fail: bool,
    },
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// An `up` that would pass `--max-labs` or `--max-namespaces`.
    #[error(transparent)]
    Refused(#[from] QuotaError),
    #[error(transparent)]
    Engine(#[from] ReconcileError),
}

/// What an action answers; serialised as the bare wire type.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Up(UpReport),
    Down(DownReport),
    Labs(Vec<String>),
    Status(LabStatus),
    Target(Target),
    Check(CheckReport),
    Trace(Box<TraceReport>),
    Topology(UpRequest),
    Progress(UpProgress),
    Node(NodeReport),
}

impl fmt::Display for Action {
    /// How the action is logged. Its text (a `source`, a trace's ends)
    /// comes from a client: control characters are escaped, so that they
    /// reach neither the journal nor a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Action::Up { topology, .. } => {
                format!("up {} (from {})", topology.lab, topology.source)
            }
            Action::Down { lab } => format!("down {lab}"),
            Action::ListLabs => "list labs".to_string(),
            Action::Status { lab } => format!("status {lab}"),
            Action::Target { lab, name } => format!("target {name} of {lab}"),
            Action::Check { lab } => format!("check {lab}"),
            Action::Trace { lab, request } => {
                format!("trace {} → {} in {lab}", request.from, request.to)
            }
            Action::Topology { lab } => format!("topology of {lab}"),
            Action::Progress { lab } => format!("progress of {lab}"),
            Action::Node { lab, node, fail } => format!(
                "{} node {node} of {lab}",
                if *fail { "fail" } else { "recover" }
            ),
        };
        f.write_str(&printable(&text))
    }
}

impl Action {
    /// The lab the action is about; `None` for the list of labs.
    pub fn lab(&self) -> Option<&str> {
        match self {
            Action::Up { topology, .. } => Some(&topology.lab),
            Action::Down { lab }
            | Action::Status { lab }
            | Action::Target { lab, .. }
            | Action::Check { lab }
            | Action::Trace { lab, .. }
            | Action::Topology { lab }
            | Action::Progress { lab }
            | Action::Node { lab, .. } => Some(lab),
            Action::ListLabs => None,
        }
    }

    /// Changes are logged at info, queries at debug.
    fn changes_something(&self) -> bool {
        matches!(
            self,
            Action::Up { .. } | Action::Down { .. } | Action::Node { .. }
        )
    }

    /// Runs the action; an `up` first passes the quotas.
    pub async fn run(self, engine: &Engine, quotas: &Quotas) -> Result<Reply, ActionError> {
        let what = self.to_string();
        let loud = self.changes_something();
        if loud {
            tracing::info!("{what}: starting");
        }
        let started = Instant::now();
        let result = match self {
            Action::Up { topology, text } => {
                let footprint = footprint_of(&topology);
                if let Some(note) = crate::quota::neighbour_note(
                    &topology.lab,
                    topology.instances.len(),
                    crate::quota::host_neighbour_limit(),
                ) {
                    tracing::warn!("{note}");
                }
                match quotas.admit(&topology.lab, footprint, &engine.labs().await) {
                    Ok(_admitted) => engine
                        .up(*topology, &text)
                        .await
                        .map(Reply::Up)
                        .map_err(ActionError::from),
                    Err(refused) => Err(refused.into()),
                }
            }
            Action::Down { lab } => engine.down(&lab).await.map(Reply::Down).map_err(Into::into),
            Action::ListLabs => Ok(Reply::Labs(engine.labs().await)),
            Action::Status { lab } => engine
                .status(&lab)
                .await
                .map(Reply::Status)
                .map_err(Into::into),
            Action::Target { lab, name } => engine
                .target(&lab, &name)
                .await
                .map(Reply::Target)
                .map_err(Into::into),
            Action::Check { lab } => engine
                .check(&lab)
                .await
                .map(Reply::Check)
                .map_err(Into::into),
            Action::Trace { lab, request } => engine
                .trace(&lab, request)
                .await
                .map(|r| Reply::Trace(Box::new(r)))
                .map_err(Into::into),
            Action::Topology { lab } => engine
                .topology_text(&lab)
                .await
                .map(|(source, topology)| Reply::Topology(UpRequest { topology, source }))
                .map_err(Into::into),
            Action::Progress { lab } => Ok(Reply::Progress(crate::progress::of(&lab))),
            Action::Node { lab, node, fail } => engine
                .set_node_failed(&lab, &node, fail)
                .await
                .map(Reply::Node)
                .map_err(Into::into),
        };
        if loud {
            // Beside the answer, not before it: some 0.1 ms of an `up`.
            tokio::task::spawn_blocking(release_freed_memory);
        }
        let ms = started.elapsed().as_millis();
        match &result {
            Ok(_) if loud => tracing::info!("{what}: done in {ms} ms"),
            Ok(_) => tracing::debug!("{what}: done in {ms} ms"),
            Err(e) if loud => tracing::warn!("{what}: failed after {ms} ms: {}", error_chain(e)),
            Err(e) => tracing::info!("{what}: {}", error_chain(e)),
        }
        result
    }
}

/// Changes (`up`, `down`) run as tasks of their own: they finish even when
/// the client that asked goes away (its handler is dropped with its
/// connection), so a lab is never left half made or half removed by a
/// Ctrl-C. A stop waits for them, for a bounded time (see [`Changes::finish`]).
///
/// So a client could queue changes without end, each holding its topology
/// (up to 4 MiB) while it waits for its lab: at most
/// [`MAX_CHANGES_PER_LAB`] of a lab and [`MAX_CHANGES`] in all run or wait
/// at once; one more is refused before it starts.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    tasks: Arc<Mutex<ChangeTasks>>,
    /// The changes that run or wait, by lab. A lock of its own: a change's
    /// task takes it when it ends (also when a stop aborts it).
    counts: Arc<Mutex<InProgress>>,
}

/// The most changes of one lab that run or wait at once: one runs, the
/// others wait for it (a lab's changes take turns).
pub const MAX_CHANGES_PER_LAB: usize = 4;

/// The most changes of all labs that run or wait at once.
pub const MAX_CHANGES: usize = 32;

/// Why a change has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfinished {
    #[error(
        "ovslabd is stopping: the change was not finished (`ovslab up` finishes the lab, \
         `ovslab down` removes it)"
    )]
    Stopping,
    #[error("the change failed unexpectedly (a bug: the daemon's log says where)")]
    Failed,
    /// Refused before it started: the lab has as many changes as it may.
    #[error(
        "lab `{lab}` has {max} changes running or waiting already, the most ovslabd takes \
         for one lab (also those whose client went away): try again when they have finished"
    )]
    LabBusy { lab: String, max: usize },
    /// Refused before it started: the daemon has as many changes as it may.
    #[error(
        "ovslabd has {max} changes running or waiting already, the most it takes (also \
         those whose client went away): try again when they have finished"
    )]
    Busy { max: usize },
}

/// How many changes run or wait, in all and by lab.
#[derive(Debug, Default)]
struct InProgress {
    total: usize,
    by_lab: HashMap<String, usize>,
}

/// One change counted in [`InProgress`] until it is dropped, with the
/// change's task (when it ends, or is aborted).
struct Counted {
    counts: Arc<Mutex<InProgress>>,
    lab: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.by_lab.get_mut(&self.lab) {
            *n -= 1;
            if *n == 0 {
                counts.by_lab.remove(&self.lab);
            }
        }
    }
}

/// A change that panicked is a bug: it goes to the log (its client was
/// answered with [`Unfinished::Failed`]).
fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended
        && e.is_panic()
    {
        tracing::error!("a change panicked: {e}");
    }
}

#[derive(Debug, Default)]
struct ChangeTasks {
    tasks: JoinSet<()>,
    /// Set by [`Changes::finish`]: the daemon stops, nothing new starts.
    closed: bool,
}

impl Changes {
    fn tasks(&self) -> std::sync::MutexGuard<'_, ChangeTasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a change of `lab`, or refuses it when the lab or the daemon
    /// has as many as it may.
    fn count(&self, lab: &str) -> Result<Counted, Unfinished> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.by_lab.get(lab).copied().unwrap_or(0) >= MAX_CHANGES_PER_LAB {
            return Err(Unfinished::LabBusy {
                lab: lab.to_string(),
                max: MAX_CHANGES_PER_LAB,
            });
        }
        if counts.total >= MAX_CHANGES {
            return Err(Unfinished::Busy { max: MAX_CHANGES });
        }
        counts.total += 1;
        *counts.by_lab.entry(lab.to_string()).or_default() += 1;
        Ok(Counted {
            counts: self.counts.clone(),
            lab: lab.to_string(),
        })
    }

    /// Runs `work`, a change of `lab`, to its end in a task of its own,
    /// whether or not the caller still waits for it; refuses it at once
    /// when too many changes run or wait (see [`Changes`]).
    pub async fn run<T: Send + 'static>(
        &self,
        lab: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Unfinished> {
        let (done, result) = tokio::sync::oneshot::channel();
        {
            let counted = self.count(lab)?;
            let mut tasks = self.tasks();
            if tasks.closed {
                return Err(Unfinished::Stopping);
            }
            while let Some(ended) = tasks.tasks.try_join_next() {
                log_panic(ended);
            }
            tasks.tasks.spawn(async move {
                let _counted = counted;
                let _ = done.send(work.await);
            });
        }
        match result.await {
            Ok(value) => Ok(value),
            Err(_) if self.tasks().closed => Err(Unfinished::Stopping),
            Err(_) => Err(Unfinished::Failed),
        }
    }

    /// Lets the changes in progress finish until `deadline`, then abandons
    /// those still running (like a crash of the daemon: the next `up`
    /// finishes such a lab, `down` removes it). Starts no new ones after.
    /// Returns how many were abandoned.
    pub async fn finish(&self, deadline: tokio::time::Instant) -> usize {
        let mut tasks = {
            let mut tasks = self.tasks();
            tasks.closed = true;
            std::mem::take(&mut tasks.tasks)
        };
        let finished = tokio::time::timeout_at(deadline, async {
            while let Some(ended) = tasks.join_next().await {
                log_panic(ended);
            }
        })
        .await;
        if finished.is_ok() {
            return 0;
        }
        let abandoned = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        abandoned
    }
}

/// Gives memory freed by a large `up`, `down` or audit back to the system:
/// glibc keeps it in its arenas otherwise, and a 1000-instance lab would
/// leave the daemon's RSS at its peak for good (and audits add to it).
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An error with its sources, each one added unless the message above it
/// already says it.
/// Control characters are escaped (lines are kept): errors quote names and
/// text from clients, and end up in the journal and on terminals.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    printable_lines(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_serialise_as_the_bare_wire_type() {
        let reply = Reply::Labs(vec!["seed".into()]);
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"["seed"]"#);
        let reply = Reply::Up(UpReport {
            lab: "seed".into(),
            changes: vec![],
            warnings: vec![],
            elapsed_ms: 3,
        });
        let back: UpReport = serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
        assert_eq!(back.lab, "seed");
    }

    #[test]
    fn the_error_chain_does_not_repeat_itself() {
        let e = ReconcileError::Io {
            path: "/run/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(error_chain(&e), "/run/x: gone");
    }

    #[tokio::test]
    async fn a_change_finishes_when_its_caller_goes_away() {
        let changes = Changes::default();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (finished_tx, finished) = tokio::sync::oneshot::channel();
        let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
        let caller = tokio::spawn({
            let changes = changes.clone();
            async move {
                changes
                    .run("seed", async move {
                        let _ = started_tx.send(());
                        let _ = go.await;
                        let _ = finished_tx.send(());
                    })
                    .await
            }
        });
        started.await.unwrap();
        // The client goes away: its handler is dropped.
        caller.abort();
        let _ = caller.await;
        go_tx.send(()).unwrap();
        finished
            .await
            .expect("the change was dropped with its caller");
    }

    #[tokio::test]
    async fn a_stop_abandons_changes_after_the_grace_and_starts_no_new_ones() {
        let changes = Changes::default();
        let waiting = tokio::spawn({
            let changes = changes.clone();
            async move { changes.run("seed", std::future::pending::<()>()).await }
        });
        tokio::task::yield_now().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        assert_eq!(changes.finish(deadline).await, 1);
        assert_eq!(
            waiting.await.unwrap(),
            Err(Unfinished::Stopping),
            "abandoned"
        );
        assert_eq!(
            changes.run("seed", async { 1 }).await,
            Err(Unfinished::Stopping),
            "nothing new starts"
        );
    }

    /// A client that starts an `up` of its lab and goes away, again and
    /// again: each change waits for the one before it, and they are
    /// refused from the fifth of the lab on, and from the 33rd in all.
    #[tokio::test]
    async fn changes_that_run_or_wait_are_bounded_per_lab_and_in_all() {
        use futures::FutureExt;
        let changes = Changes::default();
        let (release, released) = tokio::sync::watch::channel(false);
        // A change that waits (as an `up` waits for its lab) until released.
        let waiting = || {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
            }
        };
        // Each caller goes away at once (`now_or_never` drops it).
        for _ in 0..MAX_CHANGES_PER_LAB {
            assert!(changes.run("a", waiting()).now_or_never().is_none());
        }
        let refused = changes.run("a", async {}).now_or_never();
        assert_eq!(
            refused,
            Some(Err(Unfinished::LabBusy {
                lab: "a".into(),
                max: MAX_CHANGES_PER_LAB
            }))
        );
        let message = refused.unwrap().unwrap_err().to_string();
        assert!(
            message.starts_with("lab `a` has 4 changes running or waiting"),
            "{message}"
        );
        // Another lab still has room, and a change that ended counts no more.
        assert_eq!(changes.run("b", async { 1 }).await, Ok(1));
        for i in MAX_CHANGES_PER_LAB..MAX_CHANGES {
            let lab = format!("lab{i}");
            assert!(changes.run(&lab, waiting()).now_or_never().is_none());
        }
        assert_eq!(
            changes.run("b", async {}).now_or_never(),
            Some(Err(Unfinished::Busy { max: MAX_CHANGES }))
        );
        // Once they end, there is room again.
        release.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while changes.run("a", async {}).await.is_err() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the changes that ended still count");
        assert_eq!(changes.counts.lock().unwrap().total, 0);
    }

    #[test]
    fn actions_describe_themselves() {
        let a = Action::Target {
            lab: "seed".into(),
            name: "compute1".into(),
        };
        assert_eq!(a.to_string(), "target compute1 of seed");
        assert!(!a.changes_something());
        assert!(Action::Down { lab: "seed".into() }.changes_something());
    }

    #[test]
    fn what_is_logged_is_escaped() {
        let mut topology = ovslab_topology::seed();
        topology.source = "x\u{1b}]0;owned\u{7}.yaml".into();
        let up = Action::Up {
            topology: Box::new(topology),
            text: String::new(),
        };
        assert_eq!(up.to_string(), "up seed (from x\\x1b]0;owned\\x07.yaml)");
        let e = ReconcileError::Io {
            path: "/run/\u{1b}[2J".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone\r"),
        };
        assert_eq!(error_chain(&e), "/run/\\x1b[2J: gone\\x0d");
    }
}
