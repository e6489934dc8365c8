//! One daemon per run directory. The labs' state lives there (manifests,
//! each node's Open vSwitch, the one-time stop request), so a second daemon
//! on the same directory would adopt labs the first is still changing or
//! removing. The first thing a daemon does is take an exclusive `flock` on
//! `ovslabd.lock` in the run directory, and hold it until it exits: after
//! its stop has removed the labs it was asked to. The kernel drops the lock
//! with the process, so a daemon that was killed leaves nothing to clear.
//! The file stays (removing it would race with a daemon opening it); it
//! holds the pid of the daemon that last took it, for the message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The lock's file, in the run directory.
pub const LOCK_FILE: &str = "ovslabd.lock";

/// The lock held; dropping it (at exit) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the run directory's lock (creating the directory if needed), or
/// says which daemon holds it. Never waits.
pub fn take(run_dir: &Path) -> anyhow::Result<RunLock> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    let path: PathBuf = run_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("locking {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim().parse::<u32>() {
            Ok(pid) => format!("another ovslabd (pid {pid})"),
            Err(_) => "another ovslabd".to_string(),
        };
        bail!(
            "{holder} uses the run directory {} (it holds {}); stop it first, or give this one another --run-dir",
            run_dir.display(),
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("ovslabd-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run_dir = dir.join("run");
        let first = take(&run_dir).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(run_dir.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        // flock conflicts between two opens even in one process.
        let err = format!("{:#}", take(&run_dir).unwrap_err());
        assert!(
            err.contains(&format!(
                "another ovslabd (pid {pid}) uses the run directory"
            )),
            "{err}"
        );
        assert!(err.contains("another --run-dir"), "{err}");
        drop(first);
        let again = take(&run_dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("ovslabd-lock-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("elsewhere");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(LOCK_FILE)).unwrap();
        let err = format!("{:#}", take(&dir).unwrap_err());
        assert!(err.contains("opening"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
