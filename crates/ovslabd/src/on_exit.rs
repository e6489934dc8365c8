//! What a stop does to the labs: `--on-exit`, unless the file
//! `<run-dir>/.on-exit-once` says otherwise for this one stop. The Debian
//! package's maintainer scripts write it: `keep` before the restart of an
//! upgrade (the new daemon adopts the labs, which never stop forwarding),
//! `down` before the stop of a removal (nothing is left behind, whatever
//! /etc/default/ovslabd says). It is root's: the run directory is root's
//! and a lab's name cannot start with a dot. A daemon removes a stale one
//! when it starts, and uses up the one it finds when it stops.

use std::path::{Path, PathBuf};

/// The file's name in the run directory.
pub const ONCE_FILE: &str = ".on-exit-once";

/// What a stop does to the labs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    Keep,
    Down,
}

impl OnExit {
    /// `--on-exit`'s value (`keep` or `down`; clap allows no other).
    pub fn from_flag(flag: &str) -> Self {
        if flag == "down" {
            OnExit::Down
        } else {
            OnExit::Keep
        }
    }
}

fn once_file(run_dir: &Path) -> PathBuf {
    run_dir.join(ONCE_FILE)
}

/// Removes a stale request left from before this daemon started.
pub fn forget_stale(run_dir: &Path) {
    let file = once_file(run_dir);
    if std::fs::remove_file(&file).is_ok() {
        tracing::info!(
            "removed a stale {} (it was for an earlier daemon)",
            file.display()
        );
    }
}

/// What this stop does: the request in the run directory, if one is
/// there, else `configured`. Reading does not use the request up.
pub fn for_this_stop(run_dir: &Path, configured: OnExit) -> (OnExit, bool) {
    let file = once_file(run_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => match text.trim() {
            "keep" => (OnExit::Keep, true),
            "down" => (OnExit::Down, true),
            other => {
                tracing::warn!(
                    "{}: `{}` is neither keep nor down: ignored",
                    file.display(),
                    ovslab_topology::printable(other)
                );
                (configured, false)
            }
        },
        Err(_) => (configured, false),
    }
}

/// Uses the request up, once the stop has acted on it.
pub fn used(run_dir: &Path) {
    let _ = std::fs::remove_file(once_file(run_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_overrides_the_flag_for_one_stop() {
        let dir = std::env::temp_dir().join(format!("ovslabd-on-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(for_this_stop(&dir, OnExit::Down), (OnExit::Down, false));
        std::fs::write(dir.join(ONCE_FILE), "keep\n").unwrap();
        assert_eq!(for_this_stop(&dir, OnExit::Down), (OnExit::Keep, true));
        used(&dir);
        assert_eq!(for_this_stop(&dir, OnExit::Down), (OnExit::Down, false));
        std::fs::write(dir.join(ONCE_FILE), "down").unwrap();
        assert_eq!(for_this_stop(&dir, OnExit::Keep), (OnExit::Down, true));
        std::fs::write(dir.join(ONCE_FILE), "maybe").unwrap();
        assert_eq!(for_this_stop(&dir, OnExit::Keep), (OnExit::Keep, false));
        forget_stale(&dir);
        assert!(!dir.join(ONCE_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
