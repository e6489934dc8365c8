//! Audits: the converge of `up` run again on a lab, for the part that
//! notices say changed (see [`crate::watch`]) and, as a safety net, for
//! every lab on a slow timer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::converge::{Outcome, Scope};
use super::{Engine, Lab, REPAIRS_KEPT, foreign_names, utc_now};
use crate::host::Host;
use crate::ovs_process::{NodeOvs, OvsDaemon};
use crate::watch::{Dirty, LabWatch, NodeWatch, Part};
use ovslab_topology::naming;

/// The full audits spend at most `1 / FULL_SHARE` of a core (0.5 %): the
/// next starts at least `FULL_SHARE` times the CPU time the last one took
/// after it.
const FULL_SHARE: u32 = 200;
/// Audits of what notices marked spend at most a fifth of a core (by the
/// CPU time they take), also under a storm of notices.
const PART_GAP_FACTOR: u32 = 4;
/// How soon a lab that was busy (an `up`) when notices marked it is tried
/// again.
const BUSY_RETRY: Duration = Duration::from_millis(50);

impl<H: Host> Engine<H> {
    /// Checks every lab against its plan and repairs what differs: a dead
    /// `ovsdb-server` or `ovs-vswitchd` is restarted (and its bridges,
    /// ports and flows re-installed), a deleted namespace, link, flow or
    /// iptables rule is put back. It is the same converge as `up`, so it
    /// finds anything `up` would fix. A lab busy with a user's request (or
    /// a status query) now is marked for a whole audit as soon as it is
    /// free, unless a converge of the whole lab ends meanwhile: the `up`
    /// that kept it busy does this round's work, and a large lab is not
    /// read twice in a row. The first audit of a lab adopted at start is
    /// also what starts watching it. Returns the labs repaired.
    pub async fn audit(&self) -> Vec<String> {
        self.audit_round(None).await
    }

    /// A round of the full audit: [`Engine::audit`] of every lab but those
    /// a converge of the whole lab (an `up`) ended less than `fresh` ago.
    async fn audit_round(&self, fresh: Option<Duration>) -> Vec<String> {
        let mut repaired = Vec::new();
        for (name, entry) in self.entries().await {
            let Ok(mut lab) = entry.try_lock() else {
                // An `up` at work now converges the whole lab anyway; and
                // one that ended less than `fresh` before now (the lab
                // busy with a check or a status query just after it) did
                // this round's work too.
                let now = Instant::now();
                let since = fresh.and_then(|f| now.checked_sub(f)).unwrap_or(now);
                let round = Dirty {
                    round: Some(since),
                    ..Dirty::default()
                };
                self.watchers.mark(&name, round);
                continue;
            };
            let converged = lab.whole_converged.map(|at| at.elapsed());
            if fresh.is_some_and(|fresh| converged.is_some_and(|ago| ago < fresh)) {
                continue;
            }
            tracing::debug!(lab = name, "full audit");
            if self.audit_lab(&name, &mut lab, Scope::Full, false).await {
                repaired.push(name);
            }
        }
        repaired
    }

    /// Audits the parts of labs that notices marked ([`Dirty`]); a lab busy
    /// now (an `up`, a `down`) is marked again for later. Returns the labs
    /// repaired, and whether one was busy.
    pub async fn audit_dirty(&self, dirty: BTreeMap<String, Dirty>) -> (Vec<String>, bool) {
        let mut repaired = Vec::new();
        let mut busy = false;
        for (name, part) in dirty {
            let Some(entry) = self.entry(&name).await else {
                continue;
            };
            let Ok(mut lab) = entry.try_lock() else {
                self.watchers.mark(&name, part);
                busy = true;
                continue;
            };
            // A notice of something lost the watchers cannot place, or a
            // round of the full audit no converge of the whole lab did
            // since: the whole lab, trusting nothing.
            let round = part
                .round
                .is_some_and(|at| lab.whole_converged.is_none_or(|done| done < at));
            if !part.all && !round && !part.wire && !part.agents && part.nodes.is_empty() {
                continue;
            }
            tracing::debug!(
                lab = name,
                nodes = part.nodes.len(),
                wire = part.wire,
                agents = part.agents,
                all = part.all,
                round,
                "audit of what notices marked"
            );
            let (scope, trust) = if part.all || round {
                (Scope::Full, false)
            } else {
                let scope = Scope::Part {
                    nodes: &part.nodes,
                    wire: part.wire,
                };
                (scope, true)
            };
            if self.audit_lab(&name, &mut lab, scope, trust).await {
                repaired.push(name);
            }
        }
        (repaired, busy)
    }

    /// Converges `scope` of one lab and records what it repaired; true when
    /// it repaired something.
    async fn audit_lab(&self, name: &str, lab: &mut Lab, scope: Scope<'_>, trust: bool) -> bool {
        // A lab whose topology is not known has no plan to repair it to
        // (an empty one would remove it).
        if lab.removed || lab.unreadable.is_some() {
            return false;
        }
        let started = Instant::now();
        let mut outcome = Outcome::default();
        let result = self.converge(lab, scope, trust, &mut outcome).await;
        if matches!(scope, Scope::Full) && result.is_ok() {
            lab.whole_converged = Some(Instant::now());
        }
        let Outcome {
            changes,
            restarted,
            warnings,
            without_lease,
        } = outcome;
        let changes = changes.into_vec();
        lab.count_restarts(restarted);
        lab.note_leases(without_lease);
        // Only a converge of the whole lab sees every namespace.
        if matches!(scope, Scope::Full) {
            let foreign = foreign_names(&warnings);
            if foreign != lab.foreign {
                for warning in &warnings {
                    tracing::warn!(lab = name, "audit: {warning}");
                }
                lab.foreign = foreign;
            }
        }
        self.watch_part(lab, scope);
        lab.audits += 1;
        lab.last_audit = Some((utc_now(), started.elapsed().as_millis() as u64));
        let failure = result.as_ref().err().map(ToString::to_string);
        if failure.is_some() || lab.audit_failure.is_some() || !changes.is_empty() {
            self.health.notify_one();
        }
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
        self.announce(name, lab, &changes);
        if changes.is_empty() {
            return false;
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
        true
    }

    /// Audits every lab at once, then every `every` (see
    /// [`Engine::audit`]), or less often when a full audit costs much: the
    /// pause is at least 200 times the CPU time the last one took, so the
    /// safety net never costs more than 0.5 % of a core. A lab a converge
    /// of the whole lab (an `up`) ended less than `every` ago waits for
    /// the next round. Between them, what
    /// the watchers say changed is audited at once, and only that (see
    /// [`Engine::audit_dirty`]), spending at most a fifth of a core.
    ///
    /// `after_each` runs after every audit (the daemon hands the memory an
    /// audit of a large lab freed back to the system there).
    pub fn spawn_audits(
        self: &Arc<Self>,
        every: Duration,
        after_each: fn(),
    ) -> tokio::task::JoinHandle<()> {
        self.watchers.enable();
        let wake = self.watchers.wake();
        // The host, not the engine: the loop must not keep the engine alive.
        let host = Arc::clone(&self.host);
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next_full = tokio::time::Instant::now();
            let mut retry: Option<tokio::time::Instant> = None;
            let mut last_part = Duration::ZERO;
            let mut part_ended = Instant::now();
            loop {
                let later = retry.unwrap_or_else(|| next_full + every);
                let (full, exited) = tokio::select! {
                    () = tokio::time::sleep_until(next_full) => (true, false),
                    () = wake.notified() => (false, false),
                    () = host.exited().notified() => (false, true),
                    () = tokio::time::sleep_until(later), if retry.is_some() => (false, false),
                };
                retry = None;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if exited {
                    engine.mark_exited().await;
                    continue;
                }
                if full {
                    let started = cpu_time();
                    engine.audit_round(Some(every)).await;
                    after_each();
                    let took = cpu_time().saturating_sub(started);
                    next_full = tokio::time::Instant::now() + every.max(took * FULL_SHARE);
                    continue;
                }
                let gap = (last_part * PART_GAP_FACTOR).saturating_sub(part_ended.elapsed());
                if !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                let dirty = engine.watchers.take_dirty();
                if dirty.is_empty() {
                    continue;
                }
                let started = cpu_time();
                let (_, busy) = engine.audit_dirty(dirty).await;
                after_each();
                part_ended = Instant::now();
                last_part = cpu_time().saturating_sub(started);
                if busy {
                    retry = Some(tokio::time::Instant::now() + BUSY_RETRY);
                }
            }
        })
    }

    /// A process the daemon started exited: each lab's agents are looked
    /// at, and each node whose OVS daemon died. The pidfd watchers mark
    /// such a node too, but only while they run (audits on, the node
    /// watched); a lab busy now has its agents looked at, and its nodes by
    /// whatever keeps it busy.
    async fn mark_exited(&self) {
        for (name, entry) in self.entries().await {
            let mut dirty = Dirty {
                agents: true,
                ..Dirty::default()
            };
            if let Ok(lab) = entry.try_lock() {
                for node in &lab.topology.nodes {
                    let namespace = naming::namespace(&name, &node.name);
                    let ovs = NodeOvs::new(&self.config.run_root, &name, &node.name, &namespace);
                    if OvsDaemon::ALL.into_iter().any(|d| self.host.died(&ovs, d)) {
                        dirty.nodes.insert(node.name.clone());
                    }
                }
            }
            self.watchers.mark(&name, dirty);
        }
    }

    /// Tells the listeners of [`Engine::subscribe`] how an audit of `lab`
    /// went (nobody listening is fine).
    fn announce(&self, name: &str, lab: &Lab, changes: &[String]) {
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

    /// Watches the whole lab: every namespace, node database, bridge and
    /// OVS daemon of its plan (when audits run).
    pub(super) fn watch(&self, lab: &Lab) {
        self.watch_part(lab, Scope::Full);
    }

    /// Watches the part of a lab a converge looked at.
    fn watch_part(&self, lab: &Lab, scope: Scope<'_>) {
        let Some(planned) = &lab.planned else {
            return;
        };
        let desired = planned.desired();
        let topo = &lab.topology;
        let hosts = &planned.hosts;
        let part_of = |ns: &str| match hosts.get(ns) {
            Some(node) => Part::Node(node.clone()),
            None => Part::Wire,
        };
        let in_scope = |part: &Part| match (scope, part) {
            (Scope::Full, _) => true,
            (Scope::Part { nodes, .. }, Part::Node(n)) => nodes.contains(n),
            (Scope::Part { wire, .. }, Part::Wire) => wire,
        };
        let rules = desired.rule_namespaces();
        let namespaces = desired
            .namespaces
            .iter()
            .map(|ns| (ns, part_of(&ns.name)))
            .filter(|(_, part)| in_scope(part))
            .map(|(ns, part)| (ns.name.clone(), part, rules.contains(ns.name.as_str())))
            .collect();
        let nodes = desired
            .switches
            .iter()
            .filter(|s| in_scope(&Part::Node(s.node.clone())))
            .map(|s| {
                let ovs = NodeOvs::new(&self.config.run_root, &topo.lab, &s.node, &s.namespace);
                NodeWatch {
                    node: s.node.clone(),
                    db_socket: ovs.db_socket(),
                    bridges: s
                        .bridges
                        .iter()
                        .map(|b| (b.name.clone(), ovs.mgmt_socket(&b.name)))
                        .collect(),
                    pids: OvsDaemon::ALL
                        .into_iter()
                        .filter_map(|d| ovs.pid(d))
                        .collect(),
                }
            })
            .collect();
        self.watchers.watch_lab(LabWatch {
            lab: topo.lab.clone(),
            whole: matches!(scope, Scope::Full),
            namespaces,
            nodes,
        });
    }
}

/// The CPU time this process has used (every thread, user and system).
/// Audits are spaced by what they cost, not by how long they took: an
/// audit that waited for a hung daemon costs little, and must not delay
/// the next one by minutes.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage that outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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
