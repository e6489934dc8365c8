//! Audits: the converge of `up` run again on every lab, on a timer and when
//! the kernel or an OVS daemon says something changed (see [`crate::watch`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovslab_topology::Topology;
use ovslab_topology::naming;

use super::converge::Outcome;
use super::{Engine, REPAIRS_KEPT, foreign_names, utc_now};
use crate::host::Host;
use crate::ovs_process::{NodeOvs, OvsDaemon};

impl<H: Host> Engine<H> {
    /// Checks every lab against its plan and repairs what differs: a dead
    /// `ovsdb-server` or `ovs-vswitchd` is restarted (and its bridges,
    /// ports and flows re-installed), a deleted namespace, link, flow or
    /// iptables rule is put back. It is the same converge as `up`, so it
    /// finds anything `up` would fix. A lab busy with a user's request is
    /// skipped this time. Returns the labs repaired.
    pub async fn audit(&self) -> Vec<String> {
        let mut repaired = Vec::new();
        for (name, entry) in self.entries().await {
            let Ok(mut lab) = entry.try_lock() else {
                continue;
            };
            if lab.removed {
                continue;
            }
            let topology = lab.topology.clone();
            let failed = lab.failed.clone();
            let started = Instant::now();
            let mut outcome = Outcome::default();
            let result = self
                .converge(&topology, &failed, &mut lab.manifest, &mut outcome)
                .await;
            let Outcome {
                changes,
                restarted,
                warnings,
            } = outcome;
            lab.count_restarts(restarted);
            let foreign = foreign_names(&warnings);
            if foreign != lab.foreign {
                for warning in &warnings {
                    tracing::warn!(lab = name, "audit: {warning}");
                }
                lab.foreign = foreign;
            }
            self.watch(&topology);
            lab.audits += 1;
            lab.last_audit = Some((utc_now(), started.elapsed().as_millis() as u64));
            let failure = result.as_ref().err().map(ToString::to_string);
            match Failure::note(&mut lab.audit_failure, failure, Instant::now()) {
                Some(Log::Fails(e)) => {
                    tracing::warn!(lab = name, "audit: cannot repair the lab yet: {e}")
                }
                Some(Log::StillFails { error, audits }) => tracing::warn!(
                    lab = name,
                    "audit: still cannot repair the lab ({audits} audits in a row): {error}"
                ),
                Some(Log::Recovered(e)) => {
                    tracing::info!(
                        lab = name,
                        "audit: the lab can be repaired again (was: {e})"
                    )
                }
                None => {}
            }
            self.announce(&name, &lab, &changes);
            if changes.is_empty() {
                continue;
            }
            tracing::warn!(
                lab = name,
                repairs = changes.len(),
                "repaired lab {name}, which differed from its plan: {}",
                changes.join("; ")
            );
            lab.repair_count += changes.len() as u64;
            lab.repairs.push_back(repair_summary(&utc_now(), &changes));
            while lab.repairs.len() > REPAIRS_KEPT {
                lab.repairs.pop_front();
            }
            repaired.push(name);
        }
        repaired
    }

    /// Audits every `every` (see [`Engine::audit`]), or less often when an
    /// audit takes long: the pause is at least five times the last audit's
    /// duration, so a large lab never costs more than a fifth of a core.
    /// The next audit starts at once when an Open vSwitch daemon this
    /// process started exits, and when the kernel says a link of a node
    /// or a namespace was deleted (see [`crate::watch`]) — then still
    /// spending at most a fifth of the time auditing.
    ///
    /// `after_each` runs after every audit (the daemon hands the memory an
    /// audit of a large lab freed back to the system there).
    pub fn spawn_audits(
        self: &Arc<Self>,
        every: Duration,
        after_each: fn(),
    ) -> tokio::task::JoinHandle<()> {
        self.watchers.enable();
        let drift = self.watchers.drift();
        // The host, not the engine: the loop must not keep the engine alive.
        let host = Arc::clone(&self.host);
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = every;
            let mut last = Duration::ZERO;
            let mut ended = Instant::now();
            loop {
                let noticed = tokio::select! {
                    () = tokio::time::sleep(pause) => false,
                    () = host.exited().notified() => false,
                    () = drift.notified() => true,
                };
                if noticed {
                    let gap = last * 4;
                    if ended.elapsed() < gap {
                        tokio::time::sleep(gap - ended.elapsed()).await;
                    }
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let started = Instant::now();
                engine.audit().await;
                after_each();
                ended = Instant::now();
                last = ended - started;
                pause = every.max(last * 5);
            }
        })
    }

    /// Tells the listeners of [`Engine::subscribe`] how an audit of `lab`
    /// went (nobody listening is fine).
    fn announce(&self, name: &str, lab: &super::Lab, changes: &[String]) {
        let (at, ms) = lab.last_audit.clone().unwrap_or_default();
        let _ = self.events.send(ovslab_api::AuditEvent {
            lab: name.to_string(),
            at,
            audit: lab.audits,
            repairs: changes.to_vec(),
            error: lab.audit_failure.as_ref().map(|f| f.error.clone()),
            ms,
        });
    }

    /// Watches the node namespaces of a lab for lost links, and its OVS
    /// daemons for their exit (when audits run).
    pub(super) fn watch(&self, topology: &Topology) {
        let namespaces: Vec<String> = topology
            .switch_hosts()
            .map(|n| naming::namespace(&topology.lab, n))
            .collect();
        self.watchers.watch(namespaces.iter().map(String::as_str));
        let pids = topology
            .switch_hosts()
            .zip(&namespaces)
            .flat_map(|(n, ns)| {
                let ovs = NodeOvs::new(&self.config.run_root, &topology.lab, n, ns);
                OvsDaemon::ALL.map(|d| ovs.pid(d))
            });
        self.watchers.watch_processes(pids.flatten());
    }
}

/// One audit's repairs on one line: the time, how many, the first few.
fn repair_summary(at: &str, changes: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = format!("{at} {} repaired: ", changes.len());
    text.push_str(
        &changes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    if changes.len() > SHOWN {
        text.push_str(&format!("; … {} more", changes.len() - SHOWN));
    }
    text
}

/// How often a failure that lasts is logged again: an audit runs up to
/// twice a second, and a lab that cannot be repaired must not fill the log
/// with the same line.
const FAILURE_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Why a lab's audits cannot repair it, since how many audits, and when
/// that was last logged.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) error: String,
    audits: u64,
    logged: Instant,
}

/// What an audit's outcome is worth a log line for.
#[derive(Debug, PartialEq, Eq)]
enum Log {
    /// A new failure, or another than the last.
    Fails(String),
    /// The same failure, once every [`FAILURE_LOGGED_EVERY`].
    StillFails { error: String, audits: u64 },
    /// The audit succeeded after this failure.
    Recovered(String),
}

impl Failure {
    /// Records an audit's `error` (`None`: it succeeded) in `last`, and
    /// says what to log: a failure when it is new or changed, again only
    /// after [`FAILURE_LOGGED_EVERY`], and the end of one.
    fn note(last: &mut Option<Failure>, error: Option<String>, now: Instant) -> Option<Log> {
        let Some(error) = error else {
            return last.take().map(|f| Log::Recovered(f.error));
        };
        match last {
            Some(f) if f.error == error => {
                f.audits += 1;
                if now.duration_since(f.logged) < FAILURE_LOGGED_EVERY {
                    return None;
                }
                f.logged = now;
                Some(Log::StillFails {
                    error,
                    audits: f.audits,
                })
            }
            _ => {
                *last = Some(Failure {
                    error: error.clone(),
                    audits: 1,
                    logged: now,
                });
                Some(Log::Fails(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_is_summed_up_in_one_line() {
        let changes: Vec<String> = (1..=6).map(|i| format!("change {i}")).collect();
        assert_eq!(
            repair_summary("T", &changes),
            "T 6 repaired: change 1; change 2; change 3; change 4; … 2 more"
        );
        assert_eq!(repair_summary("T", &changes[..1]), "T 1 repaired: change 1");
    }

    #[test]
    fn the_same_failure_is_logged_once_then_after_a_back_off() {
        let t0 = Instant::now();
        let mut last = None;
        let fail = |e: &str| Some(e.to_string());
        assert_eq!(
            Failure::note(&mut last, fail("a"), t0),
            Some(Log::Fails("a".into()))
        );
        for s in 1..60 {
            let at = t0 + Duration::from_secs(s);
            assert_eq!(Failure::note(&mut last, fail("a"), at), None, "{s} s");
        }
        assert_eq!(
            Failure::note(&mut last, fail("a"), t0 + FAILURE_LOGGED_EVERY),
            Some(Log::StillFails {
                error: "a".into(),
                audits: 61
            })
        );
        let t1 = t0 + FAILURE_LOGGED_EVERY + Duration::from_secs(1);
        assert_eq!(Failure::note(&mut last, fail("a"), t1), None);
        assert_eq!(
            Failure::note(&mut last, fail("b"), t1),
            Some(Log::Fails("b".into())),
            "another failure is logged at once"
        );
        assert_eq!(last.as_ref().map(|f| f.error.as_str()), Some("b"));
        assert_eq!(
            Failure::note(&mut last, None, t1),
            Some(Log::Recovered("b".into()))
        );
        assert!(last.is_none());
        assert_eq!(Failure::note(&mut last, None, t1), None);
    }
}
