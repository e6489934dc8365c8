//! The labs under `--labs-dir`: every `*.yaml` there is brought up at start
//! (and again on SIGHUP). A file that fails is logged and skipped; the others
//! still come up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ovslab_reconciler::Engine;

use crate::actions::{Action, error_chain};

/// The topology files of a labs directory, in name order. A missing directory
/// has none.
pub fn topology_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Brings up every lab of `dir`, one after the other; returns how many came
/// up. Once `stopping` is set, the lab in progress is finished and no other
/// is started.
pub async fn bring_up_all(engine: &Engine, dir: &Path, stopping: &AtomicBool) -> usize {
    let files = match topology_files(dir) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!("labs directory {}: {e}", dir.display());
            return 0;
        }
    };
    if files.is_empty() {
        tracing::info!("no labs to bring up under {}", dir.display());
        return 0;
    }
    let mut up = 0;
    for file in files {
        if stopping.load(Ordering::Relaxed) {
            tracing::info!(
                "stopping: not bringing up {} and the labs after it",
                file.display()
            );
            break;
        }
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!("{name}: {e}; skipped");
                continue;
            }
        };
        let topology = match ovslab_topology::parse(&name, &text) {
            Ok(topology) => topology,
            Err(e) => {
                tracing::error!("{name} is not a valid topology; skipped:\n{e}");
                continue;
            }
        };
        let action = Action::Up {
            topology: Box::new(topology),
            text,
        };
        match action.run(engine).await {
            Ok(_) => up += 1,
            Err(e) => tracing::error!("{name}: bringing the lab up failed: {}", error_chain(&e)),
        }
    }
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_has_no_labs() {
        assert_eq!(
            topology_files(Path::new("/nonexistent/ovslab/labs")).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn only_yaml_files_count_in_name_order() {
        let dir = std::env::temp_dir().join(format!("ovslabd-labs-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub.yaml")).unwrap();
        for f in ["b.yaml", "a.yaml", "notes.txt", "c.yml"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let files = topology_files(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files, vec![dir.join("a.yaml"), dir.join("b.yaml")]);
    }
}
