//! Named network namespaces under `/run/netns`, compatible with `ip netns`.
//!
//! A namespace is created by a thread that `unshare`s its network namespace
//! and bind-mounts `/proc/thread-self/ns/net` onto `/run/netns/<name>`; the
//! mount keeps the namespace alive after the thread ends. Work inside a
//! namespace runs on a scoped thread that `setns`es first, so the caller's
//! threads never change namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::NetlinkError;

/// Where named namespaces live, as for `ip netns`.
pub const NETNS_DIR: &str = "/run/netns";

/// The file that holds namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists (its file is a mounted namespace).
pub fn exists(name: &str) -> bool {
    open(name).is_ok()
}

/// Every named namespace, sorted.
pub fn list() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => {
            for entry in dir {
                names.push(entry?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// Opens namespace `name` for `setns`; fails unless it is a mounted
/// namespace (a leftover empty file is not one).
pub fn open(name: &str) -> Result<OwnedFd, NetlinkError> {
    let file = File::open(path(name)).map_err(|e| NetlinkError::namespace(name, "open", e))?;
    let fd = OwnedFd::from(file);
    // NS_GET_NSTYPE answers only for namespace files.
    // SAFETY: the ioctl takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetlinkError::namespace(
            name,
            "open",
            io::Error::other("not a network namespace (a stale file?)"),
        ));
    }
    Ok(fd)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that
/// namespace mounts made later are seen by every mount namespace; once per
/// process. Not recursively, as `ip` does: the mounts made below a shared
/// mount are shared anyway, and a recursive change walks every namespace
/// mount there, for each namespace made (O(n²) for a lab). Under an
/// exclusive `flock` of the directory: processes making their first
/// namespaces at once would otherwise each find it no mount point and bind
/// it onto itself, and each namespace mounted later would be copied into
/// every one of those mounts (the host's mount table, which other
/// processes read whole, twice as long or more).
fn prepare_dir() -> io::Result<()> {
    static PREPARED: AtomicBool = AtomicBool::new(false);
    std::fs::create_dir_all(NETNS_DIR)?;
    if PREPARED.load(Ordering::Acquire) {
        return Ok(());
    }
    let dir = File::open(NETNS_DIR)?;
    // SAFETY: flock(2) on a descriptor we own; released when `dir` closes.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
    };
    if shared().is_err() {
        // Not a mount point yet: bind it onto itself, then share it.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
        shared().map_err(io::Error::from)?;
    }
    PREPARED.store(true, Ordering::Release);
    drop(dir);
    Ok(())
}

/// Creates namespace `name` with its loopback up. Fails if it exists.
pub fn create(name: &str) -> Result<(), NetlinkError> {
    let err = |what, e| NetlinkError::namespace(name, what, e);
    prepare_dir().map_err(|e| err("prepare /run/netns", e))?;
    let target = mount_point(name)?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            crate::ethtool::set_up("lo")
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = result {
        unmount_and_remove(&target);
        return Err(err("create", e));
    }
    Ok(())
}

/// The file a namespace named `name` is mounted on, made empty; fails if
/// it exists.
fn mount_point(name: &str) -> Result<PathBuf, NetlinkError> {
    let target = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| NetlinkError::namespace(name, "create namespace file", e))?;
    Ok(target)
}

/// Undoes a namespace made on `target` by this module, whatever step it
/// reached.
fn unmount_and_remove(target: &Path) {
    let _ = umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
    let _ = std::fs::remove_file(target);
}

/// Names namespace `from` `to` instead: the namespace (and whatever runs
/// or is open in it) stays the same, only its file moves. It is mounted on
/// `to` first, then `from` goes, so that it always has a name; fails, with
/// nothing changed, if `to` exists, `from` is not a namespace, or `from`
/// cannot be removed (then `to` goes again).
pub fn rename(from: &str, to: &str) -> Result<(), NetlinkError> {
    let err = |what, e| NetlinkError::namespace(to, what, e);
    let source = open(from)?;
    let target = mount_point(to)?;
    let fd_path = format!("/proc/self/fd/{}", source.as_raw_fd());
    if let Err(e) = mount(
        Some(fd_path.as_str()),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = std::fs::remove_file(&target);
        return Err(err("mount", e.into()));
    }
    delete(from).inspect_err(|_| unmount_and_remove(&target))
}

/// Removes namespace `name`: its mount and file. The kernel frees the
/// namespace (and the links in it) once no process is left inside.
/// A namespace that does not exist is not an error.
pub fn delete(name: &str) -> Result<(), NetlinkError> {
    let target = path(name);
    // Never through a symbolic link: whatever it points at is not the lab's.
    match umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(NetlinkError::namespace(name, "unmount", e.into())),
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetlinkError::namespace(name, "remove namespace file", e)),
    }
}

/// Runs `f` on a thread inside namespace `name` and returns its result.
pub fn run_in<T: Send>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, NetlinkError> {
    let fd = open(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
    .map_err(|e| NetlinkError::namespace(name, "run inside", e))
}

/// Runs `f` inside each namespace (given by its open file) in turn, on
/// one thread that enters them one after the other (a thread each costs
/// some 150 µs); the results in order.
pub fn run_in_each<T: Send>(
    namespaces: &[&std::fs::File],
    f: impl Fn() -> io::Result<T> + Sync,
) -> Vec<io::Result<T>> {
    if namespaces.is_empty() {
        return Vec::new();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            namespaces
                .iter()
                .map(|file| {
                    // The thread ends once done: where it is left does
                    // not matter.
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)?;
                    f()
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap_or_else(|_| {
            namespaces
                .iter()
                .map(|_| Err(io::Error::other("namespace thread panicked")))
                .collect()
        })
    })
}

/// Starts `cmd` inside namespace `name`: spawned from a thread that entered
/// the namespace, whose namespaces a child inherits. Nothing runs between
/// fork and exec, so the standard library can use `posix_spawn` (a
/// `vfork`-style clone) instead of copying the whole daemon's page tables
/// with `fork`. The outer error is entering the namespace, the inner one
/// starting the program.
pub fn spawn_in(
    cmd: &mut std::process::Command,
    name: &str,
) -> Result<io::Result<std::process::Child>, NetlinkError> {
    run_in(name, || Ok(cmd.spawn()))
}

/// Reads `/proc/sys/<key>` (dots or slashes) as namespace `name` sees it.
pub fn read_sysctl(name: &str, key: &str) -> Result<String, NetlinkError> {
    let file = sysctl_path(key);
    run_in(name, move || {
        Ok(std::fs::read_to_string(&file)?.trim().to_string())
    })
}

/// Reads several `/proc/sys/<key>`s inside namespace `name`, entering it
/// once; a key that cannot be read gives `None`.
pub fn read_sysctls(name: &str, keys: &[String]) -> Result<Vec<Option<String>>, NetlinkError> {
    let files = sysctl_files(keys);
    run_in(name, move || Ok(read_files(&files)))
}

/// The `/proc/sys` files of sysctls `keys`.
pub(crate) fn sysctl_files(keys: &[String]) -> Vec<PathBuf> {
    keys.iter().map(|k| sysctl_path(k)).collect()
}

/// Each file's trimmed contents (read in the caller's namespace), `None`
/// for a file that cannot be read.
pub(crate) fn read_files(files: &[PathBuf]) -> Vec<Option<String>> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .ok()
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// Writes `/proc/sys/<key>` inside namespace `name`.
pub fn write_sysctl(name: &str, key: &str, value: &str) -> Result<(), NetlinkError> {
    let file = sysctl_path(key);
    run_in(name, move || std::fs::write(&file, value))
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// What the file of namespace `name` is, without opening it (no
/// descriptor to run out of) or following a symbolic link: the inode of a
/// mounted namespace; `None` when there is no file, or only the plain one
/// an interrupted create or delete leaves. Anything else (a symbolic link,
/// a directory, a file on another file system's mount) is an error: not
/// the lab's to remove.
pub fn mounted_inode(name: &str) -> io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let target = path(name);
    let meta = match std::fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Err(io::Error::other(
            "neither a namespace nor a plain file (a symbolic link or a directory)",
        ));
    }
    let fs = nix::sys::statfs::statfs(&target)?;
    if fs.filesystem_type().0 as i64 == NSFS_MAGIC {
        return Ok(Some(meta.ino()));
    }
    // A plain, empty file on the directory's own file system.
    let dir = std::fs::symlink_metadata(NETNS_DIR)?;
    if meta.dev() == dir.dev() && meta.len() == 0 {
        return Ok(None);
    }
    Err(io::Error::other("neither a namespace nor an empty file"))
}

/// `NSFS_MAGIC` (`linux/magic.h`): the file system of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The namespace inode of `name`, to recognise processes running inside it.
pub fn inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path(name)).ok().map(|m| m.ino())
}
