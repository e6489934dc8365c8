//! Quotas: how many labs this daemon runs (`--max-labs`), how many
//! network namespaces all of them have together (`--max-namespaces`), and
//! how many descriptors watching them takes (the daemon's `RLIMIT_NOFILE`).
//! An `up` that would pass any is refused before it creates anything.
//!
//! The namespaces of a lab are those of its plan (nodes, instances,
//! routers, external hosts, networks), counted once however often the lab is
//! brought up again. Labs adopted at start count from the start; every later
//! lab comes through [`Quotas::admit`], so the count is never behind.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use ovslab_reconciler::watch::Footprint;
use ovslab_topology::Topology;
use ovslab_topology::plan::{LocalVlans, plan};

/// The defaults of `--max-labs` and `--max-namespaces`: far above the
/// 1000-instance lab (1025 namespaces), far below what makes the host suffer.
pub const DEFAULT_MAX_LABS: usize = 64;
pub const DEFAULT_MAX_NAMESPACES: usize = 20_000;

/// Descriptors kept for everything but watching labs: API connections (at
/// most 256), OVS connections during converges, netlink handles, logs.
pub const RESERVED_DESCRIPTORS: u64 = 1024;

/// Raises this process's descriptor limit as far as it may: to 65536 when
/// it can raise the hard limit too (root by hand), else the soft limit to
/// the hard one (under systemd, `LimitNOFILE=`). Returns the soft limit.
pub fn raise_descriptor_limit() -> u64 {
    const WANTED: u64 = 65_536;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `limit`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur >= WANTED {
        return limit.rlim_cur;
    }
    let both = libc::rlimit {
        rlim_cur: WANTED.max(limit.rlim_max),
        rlim_max: WANTED.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads `both`, which outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &both) } == 0 {
        return both.rlim_cur;
    }
    let soft = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        return soft.rlim_cur;
    }
    limit.rlim_cur
}

/// The host's `net.ipv4.neigh.default.gc_thresh3`: how many ARP entries
/// all namespaces together may hold (the neighbour table is one for the
/// whole host; a namespace has no limit of its own).
pub fn host_neighbour_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to say of a lab with more instances than the host's neighbour
/// table holds: it is built whole (the table fills with traffic, not with
/// building), but instances that all talk at once lose packets to
/// "neighbor table overflow". The daemon may not change the host's limit.
pub fn neighbour_note(lab: &str, instances: usize, limit: Option<usize>) -> Option<String> {
    let limit = limit?;
    (instances > limit).then(|| {
        format!(
            "lab {lab}: {instances} instances, and the host keeps at most {limit} ARP entries for \
             all namespaces together (net.ipv4.neigh.default.gc_thresh3): when more than that \
             many talk at once, packets are dropped (\"neighbor table overflow\"); raise it on \
             the host if the lab needs it"
        )
    })
}

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
    #[error(
        "lab {lab}: refused: watching it takes {wanted} descriptors (one per namespace where \
         rules live, a few per Open vSwitch) and the other labs take {others}; \
         this daemon may open {descriptors} (RLIMIT_NOFILE, {reserved} kept for the rest). \
         Raise LimitNOFILE= (ulimit -n)"
    )]
    Descriptors {
        lab: String,
        wanted: usize,
        others: usize,
        descriptors: u64,
        reserved: u64,
    },
}

/// The limits, and what the labs take of them.
#[derive(Debug)]
pub struct Quotas {
    max_labs: usize,
    max_namespaces: usize,
    /// The descriptors this process may open.
    descriptors: u64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// What each lab takes, as its last admitted `up` planned it.
    footprints: BTreeMap<String, Footprint>,
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

/// What a lab takes of the host.
pub fn footprint_of(topology: &Topology) -> Footprint {
    Footprint::of(&plan(topology, &LocalVlans::new()))
}

impl Quotas {
    /// Limits over the labs that already run, with what they take.
    pub fn new(
        max_labs: usize,
        max_namespaces: usize,
        running: BTreeMap<String, Footprint>,
    ) -> Self {
        Quotas {
            max_labs,
            max_namespaces,
            descriptors: u64::MAX,
            ledger: Mutex::new(Ledger {
                footprints: running,
                starting: BTreeMap::new(),
            }),
        }
    }

    /// These limits, with the descriptors this process may open.
    pub fn with_descriptors(mut self, descriptors: u64) -> Self {
        self.descriptors = descriptors;
        self
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits an `up` of `lab` taking `wanted`, or says which limit it
    /// would pass. `running` are the labs the engine knows now
    /// (labs removed since are forgotten here).
    pub fn admit(
        &self,
        lab: &str,
        wanted: Footprint,
        running: &[String],
    ) -> Result<Admission<'_>, QuotaError> {
        let mut ledger = self.ledger();
        let Ledger {
            footprints: counts,
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
        let others = counts.iter().filter(|(l, _)| l.as_str() != lab).fold(
            Footprint::default(),
            |sum, (_, f)| Footprint {
                namespaces: sum.namespaces + f.namespaces,
                descriptors: sum.descriptors + f.descriptors,
            },
        );
        if others.namespaces + wanted.namespaces > self.max_namespaces {
            return Err(QuotaError::Namespaces {
                lab: lab.to_string(),
                wanted: wanted.namespaces,
                others: others.namespaces,
                max: self.max_namespaces,
            });
        }
        let watchable = self.descriptors.saturating_sub(RESERVED_DESCRIPTORS);
        if (others.descriptors + wanted.descriptors) as u64 > watchable {
            return Err(QuotaError::Descriptors {
                lab: lab.to_string(),
                wanted: wanted.descriptors,
                others: others.descriptors,
                descriptors: self.descriptors,
                reserved: RESERVED_DESCRIPTORS,
            });
        }
        counts.insert(lab.to_string(), wanted);
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

    /// A lab of `n` namespaces, each with rules (a descriptor each).
    fn ns(n: usize) -> Footprint {
        Footprint {
            namespaces: n,
            descriptors: n,
        }
    }

    #[test]
    fn a_new_lab_past_max_labs_is_refused_a_running_one_is_not() {
        let q = Quotas::new(2, 100, [("a".into(), ns(10)), ("b".into(), ns(10))].into());
        let running = labs(&["a", "b"]);
        assert_eq!(
            q.admit("c", ns(1), &running).unwrap_err(),
            QuotaError::Labs {
                lab: "c".into(),
                running: 2,
                max: 2
            }
        );
        assert!(
            q.admit("a", ns(10), &running).is_ok(),
            "a re-up counts once"
        );
    }

    #[test]
    fn namespaces_count_over_all_labs_and_a_re_up_counts_once() {
        let q = Quotas::new(10, 30, [("a".into(), ns(20))].into());
        let running = labs(&["a"]);
        let refused = q.admit("b", ns(11), &running).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "lab b: refused: it has 11 namespaces and the other labs have 20, more than --max-namespaces 30 allows"
        );
        assert!(q.admit("a", ns(30), &running).is_ok());
        assert!(q.admit("b", ns(1), &running).is_err(), "a now has 30");
    }

    #[test]
    fn a_lab_the_daemon_could_not_watch_is_refused_before_anything_is_made() {
        let q = Quotas::new(10, 100_000, [("a".into(), ns(1000))].into()).with_descriptors(3024);
        let refused = q.admit("b", ns(1001), &labs(&["a"])).unwrap_err();
        assert!(
            refused.to_string().contains(
                "watching it takes 1001 descriptors (one per namespace where rules live, \
                 a few per Open vSwitch) and the other labs take 1000; this daemon may open 3024 \
                 (RLIMIT_NOFILE, 1024 kept for the rest)"
            ),
            "{refused}"
        );
        assert!(q.admit("b", ns(1000), &labs(&["a"])).is_ok());
        let starved = Quotas::new(10, 100, BTreeMap::new()).with_descriptors(100);
        assert!(starved.admit("c", ns(1), &[]).is_err(), "below the reserve");
    }

    #[test]
    fn an_up_in_progress_counts_until_it_ends_a_removed_lab_not() {
        let q = Quotas::new(2, 100, BTreeMap::new());
        let a = q.admit("a", ns(10), &[]).unwrap();
        // The engine knows neither yet: both count.
        let b = q.admit("b", ns(10), &[]).unwrap();
        assert!(q.admit("c", ns(10), &[]).is_err());
        drop((a, b));
        // `a` finished and was removed again (only `b` runs now).
        assert!(q.admit("c", ns(90), &labs(&["b"])).is_ok());
    }

    #[test]
    fn the_defaults_hold_the_1000_instance_lab_many_times() {
        let text = ovslab_topology::generate::scale_topology(20, 50);
        let topology = ovslab_topology::parse("generated", &text).unwrap();
        let n = footprint_of(&topology).namespaces;
        assert_eq!(n, 1025, "update the figure in --help and the docs");
        assert!(DEFAULT_MAX_NAMESPACES >= 15 * n);
    }

    #[test]
    fn more_instances_than_the_host_neighbour_table_holds_are_noted() {
        assert_eq!(neighbour_note("a", 1000, Some(1024)), None);
        assert_eq!(neighbour_note("a", 5000, None), None);
        let note = neighbour_note("big", 10_000, Some(1024)).unwrap();
        assert!(note.contains("10000 instances"), "{note}");
        assert!(note.contains("at most 1024 ARP entries"), "{note}");
    }

    #[test]
    fn the_10000_instance_lab_fits_in_20000_descriptors() {
        // 20000 is the hard limit of the machines this is built on, which
        // root there may not raise (no CAP_SYS_RESOURCE).
        let text = ovslab_topology::generate::scale_topology(200, 50);
        let topology = ovslab_topology::parse("generated", &text).unwrap();
        let f = footprint_of(&topology);
        assert_eq!(f.namespaces, 10_205);
        // 200 compute nodes and a network node: a firewall or router's
        // rules, an OVSDB monitor, bridges, 2 pidfds; the routing sockets,
        // two descriptors per 500 namespaces. Instances: nothing more.
        assert_eq!(f.descriptors, 1_250, "{f:?}");
        let q = Quotas::new(64, DEFAULT_MAX_NAMESPACES, BTreeMap::new()).with_descriptors(20_000);
        assert!(q.admit("scale", f, &[]).is_ok());
    }
}
