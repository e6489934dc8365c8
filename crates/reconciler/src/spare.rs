//! Spare nodes (`ovslabd --spare-nodes N`): namespaces with their Open
//! vSwitch running and its userspace datapath made once, kept ready for the
//! small nodes of the next lab.
//!
//! A vswitchd's first userspace datapath costs it a fixed 100 ms (OVS
//! sleeps to estimate the TSC frequency, once per process), and six OVS
//! daemons starting on two cores cost about 45 ms more: together most of a
//! seed `up` from nothing (docs/performance.md). A spare has paid both
//! before the `up` comes. When a converge needs a new node's namespace, the
//! node's run directory does not exist yet and the node holds few links
//! (those that start their vswitchd before their links, see
//! `BRIDGES_FIRST_MAX_LINKS`), it takes a spare instead ([`Spares::take`]):
//! - the spare's namespace is mounted under the node's namespace name and
//!   its own name removed (`netns::rename`): the same namespace, in which
//!   its daemons run;
//! - its directory is renamed to the node's run directory, with a file
//!   there ([`crate::ovs_process::ORIGIN_FILE`]) naming where it was, and a
//!   symbolic link left at the old path to the new one: the daemons'
//!   command lines and own paths (their control sockets, a bridge's
//!   `.mgmt` socket, the database's compaction, a reconnection to the
//!   database) name the old path. The node then converges as one whose
//!   Open vSwitch runs with an empty database.
//!
//! Spares live in `<run-dir>/.spares/<id>/` (the dot keeps them apart from
//! the labs' directories: no lab name has one), each with the name of its
//! namespace and that namespace's inode (`namespace`), written before the
//! namespace is made and after; and `ready` once its datapath was made.
//! A daemon stops and removes its spares when it exits; the next one
//! removes those a killed daemon left ([`Spares::clear`]), and the links
//! whose lab is gone. Taking a spare that fails half-way undoes what it
//! did, and the converge makes the node as it would have.
//!
//! The cost, while no lab takes them: each spare's `ovsdb-server` and
//! vswitchd hold their memory (about 7 MiB of their own together: the
//! datapath is removed again, and its flow caches with it) and wake now
//! and then; taken spares are made again once none has been taken for
//! [`REFILL_AFTER`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ovslab_netlink::netns;

use crate::drivers::switch;
use crate::ovs_process::{NodeOvs, ORIGIN_FILE, OvsDaemon};

/// The spares' directory under the run root.
pub const SPARES_DIR: &str = ".spares";

/// A spare's record of its namespace: the name, then its inode once made.
const NAMESPACE_FILE: &str = "namespace";

/// Made once a spare's datapath exists: it may be taken.
pub const READY_FILE: &str = "ready";

/// How long after a spare was taken the pool starts making new ones: the
/// `up` that took it, and what usually follows it (checks, another `up`),
/// have the cores first.
pub const REFILL_AFTER: Duration = Duration::from_secs(2);

/// How long the pool waits after it first failed to make a spare.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The longest it waits between failures.
const RETRY_AT_MOST: Duration = Duration::from_secs(600);

/// The most spares a daemon keeps.
pub const MAX_SPARES: usize = 16;

/// A spare node, ready to be taken.
#[derive(Debug)]
struct Spare {
    namespace: String,
    ovs: NodeOvs,
}

/// The daemon's spare nodes.
#[derive(Debug)]
pub struct Spares {
    dir: PathBuf,
    schema: PathBuf,
    wanted: usize,
    /// Every spare namespace's name starts with it: `ovslab-spare-`, then
    /// a hash of the run root (daemons on other run directories make their
    /// own), then `-`.
    prefix: String,
    ready: Mutex<Vec<Spare>>,
    next: AtomicU64,
    taken: tokio::sync::Notify,
    /// Set by [`Spares::stop`].
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Spares {
    /// A pool of `wanted` spares under `run_root`, none made yet (see
    /// [`Spares::clear`] and [`Spares::keep_filled`]).
    pub fn new(run_root: &Path, schema: &Path, wanted: usize) -> Self {
        Spares {
            dir: run_root.join(SPARES_DIR),
            schema: schema.to_path_buf(),
            wanted: wanted.min(MAX_SPARES),
            prefix: format!(
                "ovslab-spare-{:08x}-",
                fnv1a(run_root.as_os_str().as_encoded_bytes())
            ),
            ready: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            taken: tokio::sync::Notify::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Asks [`Spares::keep_filled`] to return: at once if it waits, after
    /// the spares it is making are made (each step has its deadline) if
    /// it makes some, so that none is left half made for
    /// [`Spares::clear`] to miss.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`Spares::stop`] was called.
    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// How many spares the pool keeps.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// How many are ready now.
    pub fn ready(&self) -> usize {
        self.ready.lock().expect("spares").len()
    }

    /// Removes what an earlier daemon on this run directory left: its
    /// spares (their daemons stopped by the pids they recorded, their
    /// namespaces if they are the ones recorded), and the links of spares
    /// taken by labs that are gone; makes again the links of spares taken
    /// by labs that run, where a daemon killed while taking one had not
    /// made it yet (else a new spare could be made under its id, in the
    /// directory the lab's daemons still use). Returns a line per spare
    /// removed.
    pub async fn clear(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let entries = std::fs::read_dir(&self.dir).into_iter().flatten();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                // A spare a lab took: the link stays while the lab does.
                if std::fs::metadata(&path).is_err() {
                    let _ = std::fs::remove_file(&path);
                }
            } else if kind.is_dir() {
                let (namespace, inode) = read_namespace(&path);
                let id = entry.file_name().to_string_lossy().into_owned();
                let node = format!("spare-{id}");
                let ovs = NodeOvs::at(&node, namespace.as_deref().unwrap_or(""), path.clone());
                removed.extend(ovs.stop().await);
                if let Some(ns) = self.own_namespace(&id, namespace.as_deref())
                    && let Some(found) = netns::inode(&ns)
                    && inode.is_none_or(|inode| inode == found)
                {
                    let _ = netns::delete(&ns);
                }
                let _ = std::fs::remove_dir_all(&path);
                removed.push(format!("removed spare node {}", path.display()));
            }
        }
        self.repair_taken_links();
        // Only when nothing is left in it.
        let _ = std::fs::remove_dir(&self.dir);
        removed
    }

    /// The namespace a spare's directory `id` records, if it is the name
    /// this pool gives that id. Its inode is recorded once it is made:
    /// without one (a daemon killed right after making it), a namespace
    /// under that name is taken to be the spare's (`netns::create` fails
    /// on a name in use, and [`Spares::make`] passes over such names).
    fn own_namespace(&self, id: &str, recorded: Option<&str>) -> Option<String> {
        let name = recorded?;
        (id.parse::<u64>().is_ok() && name == format!("{}{id}", self.prefix))
            .then(|| name.to_string())
    }

    /// Makes the missing links of spares taken by the labs under the run
    /// root (see [`NodeOvs::origin`]).
    fn repair_taken_links(&self) {
        let Some(root) = self.dir.parent() else {
            return;
        };
        let dirs = |dir: &Path| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
        };
        for node in dirs(root).flat_map(|lab| dirs(&lab).collect::<Vec<_>>()) {
            if let Some(origin) = NodeOvs::at("", "", node.clone()).origin()
                && std::fs::create_dir_all(&self.dir).is_ok()
            {
                repair_link(&origin, &node);
            }
        }
    }

    /// Keeps the pool filled until [`Spares::stop`]: every missing spare
    /// is made at once (side by side), then the pool waits until one is
    /// taken and none has been for [`REFILL_AFTER`]. After a failure it
    /// tries again later, each time twice as late (at most
    /// `RETRY_AT_MOST`).
    pub async fn keep_filled(&self) {
        let mut retry = RETRY_AFTER;
        loop {
            if *self.stopping.borrow() {
                return;
            }
            let missing = self.wanted.saturating_sub(self.ready());
            let made = futures::future::join_all((0..missing).map(|_| self.make())).await;
            let failed = made.iter().filter(|m| m.is_err()).count();
            for result in made {
                match result {
                    Ok(spare) => self.ready.lock().expect("spares").push(spare),
                    Err(e) => tracing::warn!(
                        error = %e,
                        retry_in_s = retry.as_secs(),
                        "cannot make a spare node"
                    ),
                }
            }
            if failed > 0 {
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = self.stopped() => return,
                }
                retry = (retry * 2).min(RETRY_AT_MOST);
                continue;
            }
            retry = RETRY_AFTER;
            tokio::select! {
                () = self.taken.notified() => {}
                () = self.stopped() => return,
            }
            // Each take starts the wait again.
            loop {
                tokio::select! {
                    waited = tokio::time::timeout(REFILL_AFTER, self.taken.notified()) => {
                        if waited.is_err() {
                            break;
                        }
                    }
                    () = self.stopped() => return,
                }
            }
        }
    }

    /// Makes one spare: its directory, namespace, database, root settings,
    /// vswitchd, and datapath (made and removed again); undone if any step
    /// fails.
    async fn make(&self) -> Result<Spare, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        // An id whose name a taken spare's link still holds (its lab
        // runs), or whose namespace name is in use (not ours: ours are
        // recorded, and removed with their directory), is passed over.
        let (id, rundir, namespace) = loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let namespace = format!("{}{id}", self.prefix);
            if std::fs::symlink_metadata(netns::path(&namespace)).is_ok() {
                continue;
            }
            let rundir = self.dir.join(id.to_string());
            match std::fs::create_dir(&rundir) {
                Ok(()) => break (id, rundir, namespace),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: {e}", rundir.display())),
            }
        };
        let spare = Spare {
            ovs: NodeOvs::at(&format!("spare-{id}"), &namespace, rundir),
            namespace,
        };
        match self.start(&spare).await {
            Ok(()) => {
                tracing::info!(namespace = spare.namespace, "spare node ready");
                Ok(spare)
            }
            Err(e) => {
                discard(&spare).await;
                Err(e)
            }
        }
    }

    async fn start(&self, spare: &Spare) -> Result<(), String> {
        let dir = &spare.ovs.rundir;
        let record = dir.join(NAMESPACE_FILE);
        let write = |text: String| {
            crate::files::replace(&record, text).map_err(|e| format!("{}: {e}", record.display()))
        };
        write(format!("{}\n", spare.namespace))?;
        let name = spare.namespace.clone();
        tokio::task::spawn_blocking(move || netns::create(&name))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let inode = netns::inode(&spare.namespace).ok_or("the namespace made has no inode")?;
        write(format!("{}\n{inode}\n", spare.namespace))?;
        spare
            .ovs
            .ensure_database(&self.schema)
            .await
            .map_err(|e| e.to_string())?;
        let client = switch::connect(&spare.ovs)
            .await
            .map_err(|e| e.to_string())?;
        let mut actual = switch::read(&client).await.map_err(|e| e.to_string())?;
        switch::ensure_root_config(&client, &mut actual)
            .await
            .map_err(|e| e.to_string())?;
        spare.ovs.ensure_vswitchd().map_err(|e| e.to_string())?;
        switch::warm_datapath(&client)
            .await
            .map_err(|e| e.to_string())?;
        let ready = dir.join(READY_FILE);
        std::fs::write(&ready, "").map_err(|e| format!("{}: {e}", ready.display()))
    }

    /// Takes a spare as node `node`: its namespace named `namespace`, its
    /// directory moved to `rundir` (which must not exist). Returns the
    /// namespace's inode, or `None` when no spare is ready or taking one
    /// failed (undone; the spare is discarded).
    pub async fn take(&self, node: &str, namespace: &str, rundir: &Path) -> Option<u64> {
        loop {
            let spare = self.ready.lock().expect("spares").pop()?;
            self.taken.notify_one();
            match adopt(&spare, namespace, rundir) {
                Ok(inode) => {
                    tracing::info!(
                        node,
                        namespace,
                        spare = spare.namespace,
                        "took a spare node"
                    );
                    return Some(inode);
                }
                Err(e) => {
                    tracing::warn!(node, spare = spare.namespace, error = %e, "cannot take a spare node");
                    discard(&spare).await;
                }
            }
        }
    }
}

/// Moves `spare` to the node (see the module doc); undoes what it did if a
/// step fails.
fn adopt(spare: &Spare, namespace: &str, rundir: &Path) -> Result<u64, String> {
    let ovs = &spare.ovs;
    let from = ovs.rundir.as_path();
    if ovs.pid(OvsDaemon::OvsdbServer).is_none() || ovs.pid(OvsDaemon::OvsVswitchd).is_none() {
        return Err("its Open vSwitch no longer runs".into());
    }
    let origin = from.join(ORIGIN_FILE);
    std::fs::write(&origin, format!("{}\n", from.display()))
        .map_err(|e| format!("{}: {e}", origin.display()))?;
    if let Err(e) = netns::rename(&spare.namespace, namespace) {
        let _ = std::fs::remove_file(&origin);
        return Err(e.to_string());
    }
    let undo_namespace = || {
        let _ = netns::rename(namespace, &spare.namespace);
        let _ = std::fs::remove_file(&origin);
    };
    if let Some(parent) = rundir.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        undo_namespace();
        return Err(format!("{}: {e}", parent.display()));
    }
    if let Err(e) = std::fs::rename(from, rundir) {
        undo_namespace();
        return Err(format!("{} → {}: {e}", from.display(), rundir.display()));
    }
    if let Err(e) = std::os::unix::fs::symlink(rundir, from) {
        let _ = std::fs::rename(rundir, from);
        undo_namespace();
        return Err(format!("{}: {e}", from.display()));
    }
    for file in [NAMESPACE_FILE, READY_FILE] {
        let _ = std::fs::remove_file(rundir.join(file));
    }
    std::fs::metadata(netns::path(namespace))
        .map(|m| m.ino())
        .map_err(|e| format!("{namespace}: {e}"))
}

/// Stops a spare's daemons, deletes its namespace (if it is the one its
/// directory records: a name found taken is someone else's) and its
/// directory.
async fn discard(spare: &Spare) {
    spare.ovs.stop().await;
    let (_, inode) = read_namespace(&spare.ovs.rundir);
    if inode.is_some() && netns::inode(&spare.namespace) == inode {
        let _ = netns::delete(&spare.namespace);
    }
    let _ = std::fs::remove_dir_all(&spare.ovs.rundir);
}

/// The namespace name and inode a spare's directory records.
fn read_namespace(dir: &Path) -> (Option<String>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string(dir.join(NAMESPACE_FILE)) else {
        return (None, None);
    };
    let mut lines = text.lines();
    let name = lines.next().map(str::to_string).filter(|n| !n.is_empty());
    (name, lines.next().and_then(|l| l.parse().ok()))
}

/// Removes the link a taken spare left at `origin`, if it leads to
/// `rundir` (the node's run directory, being removed).
pub fn remove_link(origin: &Path, rundir: &Path) {
    if std::fs::read_link(origin).is_ok_and(|target| target == rundir) {
        let _ = std::fs::remove_file(origin);
    }
}

/// Makes the link a taken spare's daemons need at `origin` again, if it
/// is missing (a daemon killed between moving the directory and making
/// the link); see the module doc.
pub fn repair_link(origin: &Path, rundir: &Path) {
    if std::fs::symlink_metadata(origin).is_err()
        && origin.parent().is_some_and(Path::is_dir)
        && let Err(e) = std::os::unix::fs::symlink(rundir, origin)
    {
        tracing::warn!(link = %origin.display(), error = %e, "cannot make a spare node's link again");
    }
}

/// FNV-1a, 32 bits: a short, stable name for a run directory.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_directories_give_their_spares_namespaces_apart() {
        let a = Spares::new(Path::new("/run/ovslab"), Path::new("/s"), 3);
        let b = Spares::new(Path::new("/tmp/x/run"), Path::new("/s"), 3);
        assert_ne!(a.prefix, b.prefix);
        assert!(a.prefix.starts_with("ovslab-spare-"));
        // Never a lab's namespace: those are `LAB.OBJECT`.
        assert!(!a.prefix.contains('.'));
        assert_eq!(
            Spares::new(Path::new("/r"), Path::new("/s"), 99).wanted(),
            MAX_SPARES
        );
    }

    #[test]
    fn a_link_is_removed_only_when_it_leads_to_the_node_being_removed() {
        let dir = crate::files::test_dir("spare-links");
        let (node, other) = (dir.join("lab/node"), dir.join("lab/other"));
        let link = dir.join("7");
        std::os::unix::fs::symlink(&other, &link).unwrap();
        remove_link(&link, &node);
        assert!(
            std::fs::symlink_metadata(&link).is_ok(),
            "another node's link stays"
        );
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&node, &link).unwrap();
        remove_link(&link, &node);
        assert!(std::fs::symlink_metadata(&link).is_err());
        // Made again when missing, never over something else.
        repair_link(&link, &node);
        assert_eq!(std::fs::read_link(&link).unwrap(), node);
        std::fs::remove_file(&link).unwrap();
        std::fs::create_dir(&link).unwrap();
        repair_link(&link, &node);
        assert!(std::fs::symlink_metadata(&link).unwrap().is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_name_the_pool_gives_an_id_is_its_namespace() {
        let spares = Spares::new(Path::new("/r"), Path::new("/s"), 1);
        let ours = format!("{}4", spares.prefix);
        assert_eq!(spares.own_namespace("4", Some(&ours)), Some(ours.clone()));
        assert_eq!(spares.own_namespace("5", Some(&ours)), None);
        assert_eq!(spares.own_namespace("4", None), None);
        assert_eq!(spares.own_namespace("4", Some("seed.compute1")), None);
        let sneaky = format!("{}4/../../x", spares.prefix);
        assert_eq!(spares.own_namespace("4", Some(&sneaky)), None);
        assert_eq!(
            spares.own_namespace("x", Some(&format!("{}x", spares.prefix))),
            None
        );
    }

    /// A daemon killed between moving a spare's directory to the node and
    /// making the link left none: the next one makes it before any new
    /// spare could take the id.
    #[tokio::test]
    async fn clear_makes_a_taken_spare_s_missing_link_again() {
        let root = crate::files::test_dir("spare-relink");
        let spares = Spares::new(&root, Path::new("/s"), 1);
        let node = root.join("lab/node");
        std::fs::create_dir_all(&node).unwrap();
        let origin = root.join(SPARES_DIR).join("5");
        std::fs::write(node.join(ORIGIN_FILE), format!("{}\n", origin.display())).unwrap();
        // And a node whose origin file names something else: left alone.
        let other = root.join("lab/other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(ORIGIN_FILE), "/etc\n").unwrap();
        assert!(spares.clear().await.is_empty());
        assert_eq!(std::fs::read_link(&origin).unwrap(), node);
        assert_eq!(std::fs::read_dir(root.join(SPARES_DIR)).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn clear_removes_links_whose_lab_is_gone_and_keeps_the_others() {
        let root = crate::files::test_dir("spare-clear");
        let spares = Spares::new(&root, Path::new("/s"), 1);
        std::fs::create_dir_all(root.join(SPARES_DIR)).unwrap();
        std::fs::create_dir_all(root.join("lab/node")).unwrap();
        let (live, dead) = (
            root.join(SPARES_DIR).join("1"),
            root.join(SPARES_DIR).join("2"),
        );
        std::os::unix::fs::symlink(root.join("lab/node"), &live).unwrap();
        std::os::unix::fs::symlink(root.join("gone/node"), &dead).unwrap();
        // A spare a killed daemon left, whose namespace is not there.
        let left = root.join(SPARES_DIR).join("3");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join(NAMESPACE_FILE), format!("{}3\n", spares.prefix)).unwrap();
        let removed = spares.clear().await;
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(std::fs::symlink_metadata(&live).is_ok());
        assert!(std::fs::symlink_metadata(&dead).is_err());
        assert!(!left.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
