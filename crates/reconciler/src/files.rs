//! The run directory's records, replaced whole: a daemon killed, or a
//! file system full, half-way through a write leaves the old content, never
//! a cut one (a cut topology made its lab one no daemon could see or take
//! down again).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` through a file beside it (`.NAME.new`),
/// then renamed over `path`. On failure `path` keeps what it held and the
/// partial file is removed. Not synced: the run directory lives as long
/// as the host's boot (`/run` is a tmpfs), and a sync on `up`'s path
/// would cost each record a disk write.
pub fn replace(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let partial = partial_path(path);
    let written = (|| {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(contents.as_ref())
    })()
    .and_then(|()| std::fs::rename(&partial, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.new"))
}

/// An empty directory for a unit test of this crate:
/// `<tmp>/ovslab-unit-<tag>-<pid>` (each test its own tag).
#[cfg(test)]
pub(crate) fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ovslab-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a test directory");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole() {
        let dir = test_dir("files-whole");
        let path = dir.join("topology.yaml");
        replace(&path, "lab: a\n").unwrap();
        replace(&path, "lab: b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "lab: b\n");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_no_partial_file() {
        let dir = test_dir("files-failed");
        let path = dir.join("record");
        replace(&path, "old\n").unwrap();
        // The rename cannot replace a non-empty directory: the write
        // fails after the partial file was made.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(replace(&blocked, "new\n").is_err());
        assert!(!partial_path(&blocked).exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
