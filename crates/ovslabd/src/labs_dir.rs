//! The labs under `--labs-dir`: every `*.yaml` there is brought up at start
//! (and again on SIGHUP), and a lab whose file was removed is taken down. A
//! file that fails is logged and skipped; the others still come up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use ovslab_reconciler::Engine;

use crate::actions::{Action, error_chain};
use crate::quota::Quotas;

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

/// The labs that came from the labs directory: lab name → its file. Kept in
/// `<run-dir>/from-labs-dir` (`lab<TAB>file` lines), so that a restarted
/// daemon knows which of the labs it adopts were configured by a file.
#[derive(Debug)]
pub struct Owned {
    record: PathBuf,
    labs: BTreeMap<String, PathBuf>,
}

/// The file under `--run-dir` that lists [`Owned`] labs. It sits beside
/// the labs' directories, so validation refuses it as a lab name.
pub const OWNED_RECORD: &str = ovslab_topology::naming::LABS_DIR_RECORD;

impl Owned {
    /// The record under `run_dir` (none yet: no lab came from a file).
    pub fn load(run_dir: &Path) -> Self {
        let record = run_dir.join(OWNED_RECORD);
        let labs = std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(lab, file)| (lab.to_string(), PathBuf::from(file)))
            .collect();
        Owned { record, labs }
    }

    fn save(&self) {
        let text: String = self
            .labs
            .iter()
            .map(|(lab, file)| format!("{lab}\t{}\n", file.display()))
            .collect();
        let written = self
            .record
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| ovslab_reconciler::files::replace(&self.record, text));
        if let Err(e) = written {
            tracing::warn!(
                "cannot record the labs of the labs directory in {}: {e}",
                self.record.display()
            );
        }
    }
}

/// The labs that came from a file that is no longer among `files`.
pub fn orphans(owned: &BTreeMap<String, PathBuf>, files: &[PathBuf]) -> Vec<String> {
    owned
        .iter()
        .filter(|(_, file)| !files.contains(file))
        .map(|(lab, _)| lab.clone())
        .collect()
}

/// Makes the labs match `dir`: brings up every lab of it, one after the
/// other, then removes the labs that came from a file of `dir` which is gone
/// (a lab made with `ovslab up` is never touched). Returns how many came up.
/// Once `stopping` is set, the lab in progress is finished and nothing else
/// is started or removed. A file that cannot be read or parsed is skipped,
/// and the lab it described is kept as it is.
pub async fn sync(
    engine: &Engine,
    quotas: &Quotas,
    dir: &Path,
    owned: &mut Owned,
    stopping: &AtomicBool,
) -> usize {
    let files = match topology_files(dir) {
        Ok(files) => files,
        Err(e) => {
            tracing::error!("labs directory {}: {e}", dir.display());
            return 0;
        }
    };
    if files.is_empty() {
        tracing::info!("no labs to bring up under {}", dir.display());
    }
    let mut up = 0;
    for file in &files {
        if stopping.load(Ordering::Relaxed) {
            tracing::info!(
                "stopping: not bringing up {} and the labs after it",
                file.display()
            );
            return up;
        }
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
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
        owned.labs.insert(topology.lab.clone(), file.clone());
        owned.save();
        let action = Action::Up {
            topology: Box::new(topology),
            text,
        };
        match action.run(engine, quotas).await {
            Ok(_) => up += 1,
            Err(e) => tracing::error!("{name}: bringing the lab up failed: {}", error_chain(&e)),
        }
    }
    let running = engine.labs().await;
    for lab in orphans(&owned.labs, &files) {
        if stopping.load(Ordering::Relaxed) {
            break;
        }
        let file = owned.labs[&lab].display().to_string();
        if running.contains(&lab) {
            tracing::info!("{file} was removed: removing lab {lab}");
            if let Err(e) = engine.down(&lab).await {
                tracing::error!("removing lab {lab}: {}", error_chain(&e));
                continue;
            }
        }
        owned.labs.remove(&lab);
        owned.save();
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

    #[test]
    fn only_labs_whose_file_is_gone_are_orphans() {
        let owned: BTreeMap<String, PathBuf> = [
            ("seed", "/etc/ovslab/labs/seed.yaml"),
            ("big", "/etc/ovslab/labs/big.yaml"),
        ]
        .into_iter()
        .map(|(l, f)| (l.to_string(), PathBuf::from(f)))
        .collect();
        let files = vec![PathBuf::from("/etc/ovslab/labs/seed.yaml")];
        assert_eq!(orphans(&owned, &files), vec!["big".to_string()]);
        assert_eq!(orphans(&owned, &[]).len(), 2);
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("ovslabd-owned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut owned = Owned::load(&dir);
        assert!(owned.labs.is_empty());
        owned
            .labs
            .insert("seed".into(), PathBuf::from("/etc/ovslab/labs/seed.yaml"));
        owned
            .labs
            .insert("b".into(), PathBuf::from("/etc/ovslab/labs/b.yaml"));
        owned.save();
        let again = Owned::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(again.labs, owned.labs);
    }
}
