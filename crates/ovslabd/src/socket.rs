//! The API socket: bound only when no other daemon answers on it, mode 0660,
//! removed on exit.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::net::UnixListener;

/// Owner and group may connect; the daemon further checks who the peer is.
const SOCKET_MODE: u32 = 0o660;

/// The bound socket file; dropping it removes the file if it is still ours
/// (not replaced by someone else in the meantime).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("removing {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// Binds the API socket at `path`: creates its directory, removes a stale
/// socket left by a daemon that died, and refuses to start when another
/// daemon answers there or the path is something other than a socket.
/// With `group`, the socket belongs to that group (its members may connect).
pub fn bind(path: &Path, group: Option<u32>) -> anyhow::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    remove_if_stale(path)?;
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("{}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid}", path.display()))?;
    }
    Ok((listener, file))
}

fn remove_if_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another ovslabd answers on {}; stop it first, or give this one another --socket",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!("removing the stale socket {}", path.display());
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Err(e) => Err(e)
            .with_context(|| format!("checking whether a daemon answers on {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ovslabd-socket-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn binds_creates_the_directory_and_removes_the_socket_when_dropped() {
        let dir = scratch("bind");
        let path = dir.join("a/b/s.sock");
        let (listener, file) = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        drop(listener);
        drop(file);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_a_live_one_is_not() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // Live: someone listens.
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("another ovslabd answers"), "{err}");
        // Stale: the listener is gone, the file stays.
        drop(live);
        assert!(path.exists());
        let (_listener, _file) = bind(&path, None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let dir = scratch("file");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        std::fs::write(&path, "precious").unwrap();
        let err = bind(&path, None).unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
