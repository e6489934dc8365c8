//! Quotas: how many labs this daemon runs (`--max-labs`), and how many
//! network namespaces all of them have together (`--max-namespaces`). An
//! `up` that would pass either is refused before it creates anything.
//!
//! The namespaces of a lab are those of its plan (nodes, instances,
//! routers, external hosts, networks), counted once however often the lab is
//! brought up again. Labs adopted at start count from the start; every later
//! lab comes through [`Quotas::admit`], so the count is never behind.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use ovslab_topology::Topology;
use ovslab_topology::plan::{LocalVlans, plan};

/// The defaults of `--max-labs` and `--max-namespaces`: far above the
/// 1000-instance lab (1025 namespaces), far below what makes the host suffer.
pub const DEFAULT_MAX_LABS: usize = 64;
pub const DEFAULT_MAX_NAMESPACES: usize = 20_000;

/// Why an `up` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "lab {lab}: refused: this daemon runs {running} labs, as many as --max-labs {max} allows; \
         `ovslab down` one first"
    )]
    Labs {
        lab: String,
        running: usize,
        max: usize,
    },
    #[error(
        "lab {lab}: refused: it has {wanted} namespaces and the other labs have {others}, \
         more than --max-namespaces {max} allows"
    )]
    Namespaces {
        lab: String,
        wanted: usize,
        others: usize,
        max: usize,
    },
}

/// The limits, and what the labs take of them.
#[derive(Debug)]
pub struct Quotas {
    max_labs: usize,
    max_namespaces: usize,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Each lab's namespaces, as its last admitted `up` planned them.
    namespaces: BTreeMap<String, usize>,
    /// `up`s admitted and not finished, by lab: such a lab may not be known
    /// to the engine yet, and must not be forgotten.
    starting: BTreeMap<String, usize>,
}

/// An admitted `up`; its lab counts as starting until this is dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    quotas: &'a Quotas,
    lab: String,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut ledger = self.quotas.ledger();
        if let Some(n) = ledger.starting.get_mut(&self.lab) {
            *n -= 1;
            if *n == 0 {
                ledger.starting.remove(&self.lab);
            }
        }
    }
}

/// How many network namespaces a lab has.
pub fn namespaces_of(topology: &Topology) -> usize {
    plan(topology, &LocalVlans::new()).namespaces.len()
}

impl Quotas {
    /// Limits over the labs that already run, with their namespaces.
    pub fn new(max_labs: usize, max_namespaces: usize, running: BTreeMap<String, usize>) -> Self {
        Quotas {
            max_labs,
            max_namespaces,
            ledger: Mutex::new(Ledger {
                namespaces: running,
                starting: BTreeMap::new(),
            }),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits an `up` of `lab` with `namespaces` namespaces, or says which
    /// limit it would pass. `running` are the labs the engine knows now
    /// (labs removed since are forgotten here).
    pub fn admit(
        &self,
        lab: &str,
        namespaces: usize,
        running: &[String],
    ) -> Result<Admission<'_>, QuotaError> {
        let mut ledger = self.ledger();
        let Ledger {
            namespaces: counts,
            starting,
        } = &mut *ledger;
        counts.retain(|l, _| running.contains(l) || starting.contains_key(l));
        let mut labs: Vec<&str> = running
            .iter()
            .map(String::as_str)
            .chain(starting.keys().map(String::as_str))
            .chain(counts.keys().map(String::as_str))
            .filter(|l| *l != lab)
            .collect();
        labs.sort_unstable();
        labs.dedup();
        if labs.len() >= self.max_labs {
            return Err(QuotaError::Labs {
                lab: lab.to_string(),
                running: labs.len(),
                max: self.max_labs,
            });
        }
        let others: usize = counts
            .iter()
            .filter(|(l, _)| l.as_str() != lab)
            .map(|(_, n)| n)
            .sum();
        if others + namespaces > self.max_namespaces {
            return Err(QuotaError::Namespaces {
                lab: lab.to_string(),
                wanted: namespaces,
                others,
                max: self.max_namespaces,
            });
        }
        counts.insert(lab.to_string(), namespaces);
        *starting.entry(lab.to_string()).or_default() += 1;
        Ok(Admission {
            quotas: self,
            lab: lab.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_new_lab_past_max_labs_is_refused_a_running_one_is_not() {
        let q = Quotas::new(2, 100, [("a".into(), 10), ("b".into(), 10)].into());
        let running = labs(&["a", "b"]);
        assert_eq!(
            q.admit("c", 1, &running).unwrap_err(),
            QuotaError::Labs {
                lab: "c".into(),
                running: 2,
                max: 2
            }
        );
        assert!(q.admit("a", 10, &running).is_ok(), "a re-up counts once");
    }

    #[test]
    fn namespaces_count_over_all_labs_and_a_re_up_counts_once() {
        let q = Quotas::new(10, 30, [("a".into(), 20)].into());
        let running = labs(&["a"]);
        let refused = q.admit("b", 11, &running).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "lab b: refused: it has 11 namespaces and the other labs have 20, more than --max-namespaces 30 allows"
        );
        assert!(q.admit("a", 30, &running).is_ok());
        assert!(q.admit("b", 1, &running).is_err(), "a now has 30");
    }

    #[test]
    fn an_up_in_progress_counts_until_it_ends_a_removed_lab_not() {
        let q = Quotas::new(2, 100, BTreeMap::new());
        let a = q.admit("a", 10, &[]).unwrap();
        // The engine knows neither yet: both count.
        let b = q.admit("b", 10, &[]).unwrap();
        assert!(q.admit("c", 10, &[]).is_err());
        drop((a, b));
        // `a` finished and was removed again (only `b` runs now).
        assert!(q.admit("c", 90, &labs(&["b"])).is_ok());
    }

    #[test]
    fn the_defaults_hold_the_1000_instance_lab_many_times() {
        let text = ovslab_topology::generate::scale_topology(20, 50);
        let topology = ovslab_topology::parse("generated", &text).unwrap();
        let n = namespaces_of(&topology);
        assert_eq!(n, 1025, "update the figure in --help and the docs");
        assert!(DEFAULT_MAX_NAMESPACES >= 15 * n);
    }
}
