//! How far each lab's converge has come, for `GET /v1/labs/{lab}/progress`
//! (`ovslab up` shows it on a terminal while it waits).
//!
//! The engine logs the end of each converge phase as a `tracing` event
//! with the fields `lab`, `phase` and `ms` (`up phase done`, at debug);
//! [`Layer`] keeps them per lab, whatever the log level, and a phase
//! `namespaces` (always the first) starts a lab's list again. Nothing in
//! the engine knows about it: if the event lost its fields, progress would
//! show nothing, and `up` would still work.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use ovslab_api::{PhaseDone, UpProgress};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;

/// The first phase of every converge.
const FIRST_PHASE: &str = "namespaces";
/// More phases than a converge has: a bound, whatever the engine logs.
const MAX_PHASES: usize = 64;
/// A lab whose converge ended this long ago is forgotten at the next
/// event, so that names of labs long gone do not pile up.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Phases {
    done: Vec<PhaseDone>,
    last: Instant,
}

static PROGRESS: LazyLock<Mutex<HashMap<String, Phases>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The phases of the lab's converge in progress, or of its last one.
pub fn of(lab: &str) -> UpProgress {
    let progress = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    UpProgress {
        lab: lab.to_string(),
        phases: progress
            .get(lab)
            .map(|p| p.done.clone())
            .unwrap_or_default(),
    }
}

fn record(lab: &str, phase: &str, ms: u64) {
    let now = Instant::now();
    let mut progress = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    progress.retain(|_, p| now.duration_since(p.last) < FORGET_AFTER);
    let phases = progress.entry(lab.to_string()).or_insert_with(|| Phases {
        done: Vec::new(),
        last: now,
    });
    if phase == FIRST_PHASE {
        phases.done.clear();
    }
    if phases.done.len() < MAX_PHASES {
        phases.done.push(PhaseDone {
            phase: phase.to_string(),
            ms,
        });
    }
    phases.last = now;
}

/// The `tracing` layer that keeps the phases; see the module's header.
#[derive(Debug, Clone, Copy)]
pub struct Layer;

impl Layer {
    /// Whether an event can be a phase's end: the only callsites this
    /// layer wants enabled.
    pub fn wants(meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && meta.fields().field("phase").is_some()
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = PhaseFields::default();
        event.record(&mut fields);
        if let (Some(lab), Some(phase)) = (fields.lab, fields.phase) {
            record(&lab, &phase, fields.ms.unwrap_or(0));
        }
    }
}

#[derive(Debug, Default)]
struct PhaseFields {
    lab: Option<String>,
    phase: Option<String>,
    ms: Option<u64>,
}

impl Visit for PhaseFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "lab" => self.lab = Some(value.to_string()),
            "phase" => self.phase = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "ms" {
            self.ms = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn phases_are_kept_per_lab_and_start_again_with_each_converge() {
        let subscriber = tracing_subscriber::registry().with(Layer);
        tracing::subscriber::with_default(subscriber, || {
            let lab = "progress-test";
            for (phase, ms) in [("namespaces", 3u64), ("links", 40)] {
                tracing::debug!(lab, phase, ms, "up phase done");
            }
            tracing::debug!(
                lab = "other",
                phase = "namespaces",
                ms = 1u64,
                "up phase done"
            );
            tracing::info!(lab, "not a phase");
            let phases: Vec<_> = of(lab)
                .phases
                .into_iter()
                .map(|p| (p.phase, p.ms))
                .collect();
            assert_eq!(phases, [("namespaces".into(), 3), ("links".into(), 40)]);
            tracing::debug!(lab, phase = "namespaces", ms = 2u64, "up phase done");
            assert_eq!(of(lab).phases.len(), 1);
            assert!(of("never-seen").phases.is_empty());
        });
    }
}
