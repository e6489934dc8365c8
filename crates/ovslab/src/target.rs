//! The daemon's answer about a target (`GET /v1/labs/{lab}/targets/{name}`),
//! checked before `exec`, `capture` or the ui's live reads act on it as
//! root: the socket is whatever `--socket` or `$OVSLAB_SOCKET` names, so
//! its answer is input like any other.
//!
//! - The namespace must be a single name, as ovslabd sends it
//!   (`<lab>.<object>`): it is joined to `/run/netns`, where an absolute
//!   path or `..` would open any file as the namespace.
//! - The environment may hold only the four variables that point Open
//!   vSwitch's tools at a node's own (`OVS_RUNDIR`, `OVS_DBDIR`,
//!   `OVS_LOGDIR`, `OVS_SYSCONFDIR`), each an absolute path; any other
//!   (`LD_PRELOAD` …) is dropped, and said so.

use ovslab_api::Target;
use ovslab_topology::printable;

/// The only environment variables a target may set.
pub const ALLOWED_ENV: [&str; 4] = ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"];

/// A target whose namespace is a single name and whose environment holds
/// only [`ALLOWED_ENV`].
#[derive(Debug)]
pub struct Checked {
    pub target: Target,
    /// What was dropped from the environment, each as `NAME` (escaped for
    /// a terminal), for a warning.
    pub dropped: Vec<String>,
}

impl Checked {
    /// The target, checked; why not, if its namespace is not a single name.
    pub fn new(mut target: Target) -> Result<Checked, String> {
        if let Some(problem) = namespace_problem(&target.namespace) {
            return Err(format!(
                "the daemon's answer names namespace `{}` for {}: {problem}",
                printable(&target.namespace),
                printable(&target.name)
            ));
        }
        let mut dropped = Vec::new();
        target.env.retain(|(name, value)| {
            let kept = ALLOWED_ENV.contains(&name.as_str())
                && value.starts_with('/')
                && !value.contains('\0');
            if !kept {
                dropped.push(printable(name).into_owned());
            }
            kept
        });
        Ok(Checked { target, dropped })
    }

    /// The warning to print when something was dropped.
    pub fn warning(&self) -> Option<String> {
        (!self.dropped.is_empty()).then(|| {
            format!(
                "ovslab: warning: ignored environment from the daemon's answer: {} (only {}, each an \
                 absolute path, are taken)",
                self.dropped.join(", "),
                ALLOWED_ENV.join(", ")
            )
        })
    }
}

/// Why `name` is not a single namespace name under `/run/netns`, if it is
/// not: not empty, no `/`, not `.` or `..`, no NUL, at most 255 bytes (a
/// file name's limit).
pub fn namespace_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a directory, not a name")
    } else if name.contains('/') {
        Some("it is a path, not a single name")
    } else if name.contains('\0') {
        Some("it holds a NUL byte")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(namespace: &str, env: &[(&str, &str)]) -> Target {
        Target {
            lab: "seed".into(),
            name: "compute1".into(),
            kind: "node".into(),
            namespace: namespace.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_node_as_the_daemon_sends_it_is_taken_whole() {
        let dir = "/run/ovslab/seed/compute1";
        let env: Vec<(&str, &str)> = ALLOWED_ENV.iter().map(|k| (*k, dir)).collect();
        let checked = Checked::new(target("seed.compute1", &env)).unwrap();
        assert_eq!(checked.target, target("seed.compute1", &env));
        assert!(checked.dropped.is_empty());
        assert_eq!(checked.warning(), None);
    }

    #[test]
    fn only_a_single_name_is_a_namespace() {
        let long = "n".repeat(256);
        for bad in [
            "/proc/self/ns/net",
            "/run/netns/seed.compute1",
            "../../proc/1/ns/net",
            "..",
            ".",
            "",
            "a/b",
            "x\0y",
            long.as_str(),
        ] {
            let e = Checked::new(target(bad, &[])).unwrap_err();
            assert!(e.starts_with("the daemon's answer names namespace"), "{e}");
            assert!(!e.contains('\0'), "{e:?}");
        }
        for good in [
            "seed.compute1",
            "seed.qrouter-1b2c",
            "..x",
            &"n".repeat(255),
        ] {
            assert!(Checked::new(target(good, &[])).is_ok(), "{good}");
        }
    }

    #[test]
    fn only_ovs_directories_as_absolute_paths_are_kept() {
        let checked = Checked::new(target(
            "seed.compute1",
            &[
                ("LD_PRELOAD", "/tmp/evil.so"),
                ("OVS_RUNDIR", "/run/ovslab/seed/compute1"),
                ("OVS_DBDIR", "relative/dir"),
                ("OVS_LOGDIR", "/run/x\0y"),
                ("PATH", "/tmp"),
                ("\u{1b}[2J", "/x"),
            ],
        ))
        .unwrap();
        assert_eq!(
            checked.target.env,
            [(
                "OVS_RUNDIR".to_string(),
                "/run/ovslab/seed/compute1".to_string()
            )]
        );
        assert_eq!(
            checked.dropped,
            ["LD_PRELOAD", "OVS_DBDIR", "OVS_LOGDIR", "PATH", "\\x1b[2J"]
        );
        let warning = checked.warning().unwrap();
        assert!(warning.contains("LD_PRELOAD"), "{warning}");
        assert!(!warning.contains('\u{1b}'), "{warning}");
    }
}
