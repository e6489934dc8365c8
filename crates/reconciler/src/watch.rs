//! Faster than the periodic audit: the kernel's own notices that part of a
//! lab went away wake the audit at once.
//!
//! - In every node namespace, an rtnetlink socket subscribed to link
//!   notifications: a link deleted (a qvo, a tap whose instance namespace
//!   went, a router port's peer) or set down.
//! - On `/run/netns`, inotify: a namespace deleted.
//! - A pidfd per OVS daemon of a node: it exited. The daemon also learns
//!   this from the exit of its own children; a pidfd tells it too of the
//!   processes it adopted from an earlier daemon, which are not its
//!   children (a killed vswitchd leaves its bridges' tap devices behind,
//!   so no link notice tells of it).
//!
//! Only node namespaces are watched: their OVS processes keep them alive
//! anyway, whereas a socket of ours in an instance or router namespace
//! would keep that namespace (and its links) alive after an `ip netns del`,
//! hiding the very loss we look for. Whatever has no notice (a flushed
//! iptables table, a deleted flow or OVSDB row) is left to the periodic
//! audit. Notices only wake the audit; it still decides what differs.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ovslab_netlink::{events, netns};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// The watchers of every lab, and the notice they give.
#[derive(Debug, Default)]
pub struct Watchers {
    drift: Arc<Notify>,
    /// Prefixes of labs being converged: their own changes (links made
    /// down, then set up; links and namespaces removed) are no news.
    quiet: Quiet,
    enabled: AtomicBool,
    /// Node namespace → (its inode when the watcher started, the watcher).
    links: Mutex<BTreeMap<String, (u64, tokio::task::JoinHandle<()>)>>,
    /// OVS daemon pid → the watcher of its exit.
    processes: Mutex<BTreeMap<u32, tokio::task::JoinHandle<()>>>,
}

/// Namespace prefixes whose notices are ignored, shared with the watchers.
#[derive(Debug, Default, Clone)]
struct Quiet(Arc<Mutex<Vec<String>>>);

impl Quiet {
    fn covers(&self, namespace: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|prefix| namespace.starts_with(prefix.as_str()))
    }
}

/// While alive, notices about the namespaces of one lab are ignored (see
/// [`Watchers::quiet`]).
#[derive(Debug)]
pub struct QuietGuard {
    quiet: Quiet,
    prefix: String,
}

impl Drop for QuietGuard {
    fn drop(&mut self) {
        let mut prefixes = self.quiet.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = prefixes.iter().position(|p| *p == self.prefix) {
            prefixes.swap_remove(i);
        }
    }
}

impl Watchers {
    /// Ignores notices about namespaces starting with `prefix` while the
    /// guard lives: the lab is being converged, and what it changes is not
    /// drift. Drift meanwhile is still found by the next periodic audit.
    pub fn quiet(&self, prefix: &str) -> QuietGuard {
        self.quiet
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.to_string());
        QuietGuard {
            quiet: self.quiet.clone(),
            prefix: prefix.to_string(),
        }
    }

    /// Notified when something of a lab may have been lost.
    pub fn drift(&self) -> Arc<Notify> {
        self.drift.clone()
    }

    /// Starts watching (the audits call this once): `/run/netns` now, the
    /// node namespaces as [`Watchers::watch`] names them.
    pub fn enable(&self) {
        if self.enabled.swap(true, Ordering::SeqCst) {
            return;
        }
        match events::namespace_deletions() {
            Ok(fd) => {
                tokio::spawn(namespace_deletions(
                    fd,
                    self.drift.clone(),
                    self.quiet.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                "cannot watch {} for deleted namespaces (audits still find them): {e}",
                netns::NETNS_DIR
            ),
        }
    }

    /// Watches the links of these (node) namespaces, unless they are
    /// watched already; a namespace made again since its watcher started
    /// gets a new one. Does nothing unless enabled.
    pub fn watch<'a>(&self, namespaces: impl IntoIterator<Item = &'a str>) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for ns in namespaces {
            let Ok(inode) = std::fs::metadata(netns::path(ns)).map(|m| m.ino()) else {
                continue;
            };
            if links
                .get(ns)
                .is_some_and(|(watched, task)| *watched == inode && !task.is_finished())
            {
                continue;
            }
            match events::link_events(ns) {
                Ok(fd) => {
                    let task = tokio::spawn(link_events(
                        ns.to_string(),
                        fd,
                        self.drift.clone(),
                        self.quiet.clone(),
                    ));
                    if let Some((_, old)) = links.insert(ns.to_string(), (inode, task)) {
                        old.abort();
                    }
                }
                Err(e) => tracing::debug!("cannot watch the links of {ns}: {e}"),
            }
        }
    }

    /// Watches these processes (a node's OVS daemons) for their exit,
    /// unless they are watched already. Does nothing unless enabled.
    pub fn watch_processes(&self, pids: impl IntoIterator<Item = u32>) {
        if !self.enabled.load(Ordering::SeqCst) {
            return;
        }
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        processes.retain(|_, task| !task.is_finished());
        for pid in pids {
            if processes.contains_key(&pid) {
                continue;
            }
            match pidfd_open(pid) {
                Ok(fd) => {
                    processes.insert(pid, tokio::spawn(exit_of(pid, fd, self.drift.clone())));
                }
                Err(e) => tracing::debug!(pid, "cannot watch the process: {e}"),
            }
        }
    }

    /// Stops watching the namespaces whose name starts with `prefix` (a
    /// lab's, before `down` removes them: a socket of ours would keep a
    /// namespace alive).
    pub fn forget(&self, prefix: &str) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|ns, (_, task)| {
            let keep = !ns.starts_with(prefix);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

/// pidfd_open(2): a descriptor that polls readable once process `pid` has
/// exited (a zombie counts).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

async fn exit_of(pid: u32, fd: OwnedFd, drift: Arc<Notify>) {
    // SAFETY: as in `each_read`: the AsyncFd owns the descriptor.
    let Ok(fd) = (unsafe { AsyncFd::register(fd) }) else {
        return;
    };
    if fd.readable().await.is_ok() {
        tracing::debug!(pid, "an open vswitch daemon exited: waking the audit");
        drift.notify_one();
    }
}

/// Reads one datagram or event batch from a non-blocking descriptor.
fn read(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes and outlives the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Calls `on_read` for every read from `fd` until it fails for good.
async fn each_read(fd: OwnedFd, what: &str, mut on_read: impl FnMut(Result<&[u8], ()>)) {
    // SAFETY: `fd` is an owned descriptor that the AsyncFd owns from here
    // on; nothing else closes or replaces it while it is registered.
    let fd = match unsafe { AsyncFd::register(fd) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("cannot poll {what}: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        match ready.try_io(|fd| read(fd.get_ref(), &mut buf)) {
            Ok(Ok(n)) => on_read(Ok(&buf[..n])),
            // The kernel dropped notices for want of buffer space: some
            // were lost, so something may have happened.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => on_read(Err(())),
            Ok(Err(e)) => {
                tracing::debug!("{what}: {e}; no longer watched");
                return;
            }
            Err(_would_block) => {}
        }
    }
}

async fn link_events(namespace: String, fd: OwnedFd, drift: Arc<Notify>, quiet: Quiet) {
    let what = format!("links of {namespace}");
    each_read(fd, &what, |read| match read {
        Ok(datagram) => {
            let losses = events::link_losses(datagram);
            if !losses.is_empty() && !quiet.covers(&namespace) {
                tracing::debug!(namespace, ?losses, "links lost: waking the audit");
                drift.notify_one();
            }
        }
        Err(()) => drift.notify_one(),
    })
    .await;
}

async fn namespace_deletions(fd: OwnedFd, drift: Arc<Notify>, quiet: Quiet) {
    each_read(fd, netns::NETNS_DIR, |read| match read {
        Ok(events) => {
            // Lab namespaces are `<lab>.<object>`; others are not ours.
            let names = events::deleted_names(events);
            if names.iter().any(|n| n.contains('.') && !quiet.covers(n)) {
                tracing::debug!(?names, "namespaces deleted: waking the audit");
                drift.notify_one();
            }
        }
        Err(()) => drift.notify_one(),
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_is_quiet_while_it_is_converged_and_only_then() {
        let watchers = Watchers::default();
        let seed = watchers.quiet("seed.");
        let other = watchers.quiet("other.");
        assert!(watchers.quiet.covers("seed.compute1"));
        assert!(
            !watchers.quiet.covers("seed-2.compute1"),
            "prefixes end in a dot"
        );
        drop(seed);
        assert!(!watchers.quiet.covers("seed.compute1"));
        assert!(watchers.quiet.covers("other.network"));
        drop(other);
        assert!(!watchers.quiet.covers("other.network"));
    }
}
