//! Finding the labs of a previous run and removing what a lab made.

use std::path::Path;

use ovslab_netlink::netns;
use ovslab_topology::plan::{LocalVlans, plan};
use ovslab_topology::{Topology, naming};

use super::{Lab, SOURCE_FILE, TOPOLOGY_FILE, foreign_warning};
use crate::host::Host;
use crate::manifest::{Manifest, Ownership};
use crate::{ReconcileError, TeardownFailure};

/// A lab from a previous run, found in its run directory `dir`: its saved
/// topology and its manifest. A lab of an ovslab that kept no manifest
/// gets one naming the namespaces of its plan that exist. A directory with
/// a manifest and no topology is a `down` that a killed daemon left
/// unfinished: it is finished here.
pub(super) fn adopt(host: &impl Host, dir: &Path, name: &str) -> Option<Lab> {
    let manifest = match Manifest::load(dir, name) {
        Ok(manifest) => manifest,
        Err(e) => {
            tracing::warn!(
                lab = name,
                "ignoring {}: {e}",
                dir.join(crate::manifest::MANIFEST_FILE).display()
            );
            return None;
        }
    };
    let file = dir.join(TOPOLOGY_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(_) => {
            if let Some(mut manifest) = manifest {
                tracing::info!(lab = name, "finishing the removal of the lab");
                let (_, left_alone, failures) = remove_namespaces(host, name, &mut manifest);
                for line in &left_alone {
                    tracing::warn!(lab = name, "{line}");
                }
                for failure in &failures {
                    tracing::warn!(lab = name, "{failure}");
                }
                if failures.is_empty() {
                    let _ = remove_run_dir(dir);
                }
            } else {
                // An `up` killed before it wrote anything.
                let _ = std::fs::remove_dir(dir);
            }
            return None;
        }
    };
    let source = file.display().to_string();
    let parsed = match ovslab_topology::parse(&source, &text) {
        Ok(topology) if topology.lab == name => Ok(topology),
        Ok(topology) => Err(format!(
            "{source} is the topology of lab `{}`",
            topology.lab
        )),
        Err(e) => Err(e.to_string()),
    };
    let topology = match parsed {
        Ok(mut topology) => {
            if let Some(given) = saved_source(dir) {
                topology.source = given;
            }
            topology
        }
        Err(error) => {
            // Known all the same, by what its manifest says is its: a lab
            // left running where no command reaches it leaks for ever.
            let Some(manifest) = manifest else {
                tracing::warn!(lab = name, "ignoring {source} (no manifest): {error}");
                return None;
            };
            tracing::warn!(
                lab = name,
                "its saved topology cannot be read ({error}): `ovslab down {name}` removes it, \
                 an `up` of lab {name} takes it over; until then it is not audited"
            );
            let mut lab = Lab::new(Topology::empty(name, &source), manifest);
            lab.failed = super::read_failed(dir);
            lab.unreadable = Some(error);
            return Some(lab);
        }
    };
    let manifest = match manifest {
        Some(manifest) => manifest,
        None => {
            let mut manifest = Manifest::new(dir, name);
            for ns in plan(&topology, &LocalVlans::new()).namespaces {
                if let Ok(Some(inode)) = host.namespace_inode(&ns.name) {
                    manifest.made(&ns.name, inode);
                }
            }
            if let Err(e) = manifest.save() {
                tracing::warn!(
                    lab = name,
                    "cannot write {}: {e}",
                    manifest.path().display()
                );
                return None;
            }
            tracing::info!(
                lab = name,
                "wrote the manifest of a lab from before manifests"
            );
            manifest
        }
    };
    let mut lab = Lab::new(topology, manifest);
    lab.failed = super::read_failed(dir);
    Some(lab)
}

/// Where the lab's saved topology came from, as its `up` said: one short
/// line (the daemon took no longer one), else nothing.
fn saved_source(dir: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    let file = std::fs::File::open(dir.join(SOURCE_FILE)).ok()?;
    file.take(ovslab_api::MAX_SOURCE as u64 + 1)
        .read_to_string(&mut text)
        .ok()?;
    (text.len() <= ovslab_api::MAX_SOURCE
        && !text.is_empty()
        && !text.chars().any(char::is_control))
    .then_some(text)
}

/// Deletes the namespaces of a lab's manifest that are still the ones it
/// made. Returns what was deleted, what was left alone (the manifest's
/// namespaces replaced by someone else's, and namespaces with the lab's
/// prefix it never made), and what failed.
pub(super) fn remove_namespaces(
    host: &impl Host,
    lab: &str,
    manifest: &mut Manifest,
) -> (Vec<String>, Vec<String>, Vec<TeardownFailure>) {
    let (mut deleted, mut left_alone, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let recorded: Vec<(String, Option<u64>)> = manifest
        .namespaces()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
    for (ns, _) in &recorded {
        let present = host.namespace_file_exists(ns);
        if !present {
            manifest.forget(ns);
            continue;
        }
        let inode = match host.namespace_inode(ns) {
            Ok(inode) => inode,
            // Whatever it is, it is not removed on a guess.
            Err(e) => {
                failures.push(TeardownFailure::Namespace {
                    name: ns.clone(),
                    source: Box::new(ReconcileError::io(&netns::path(ns), e)),
                });
                continue;
            }
        };
        let ownership = manifest.ownership(ns, inode);
        // The lab's; or, not being a mounted namespace, the plain file that
        // an interrupted create or delete of the lab's leaves.
        let ours = match ownership {
            Ownership::Ours | Ownership::Promised => true,
            Ownership::Replaced => inode.is_none(),
            Ownership::Foreign => false,
        };
        if ours {
            match host.delete_namespace(ns) {
                Ok(()) => {
                    deleted.push(match inode {
                        Some(_) => format!("deleted namespace {ns}"),
                        None => format!("removed stale namespace file {ns}"),
                    });
                    manifest.forget(ns);
                }
                Err(e) => failures.push(TeardownFailure::Namespace {
                    name: ns.clone(),
                    source: Box::new(e),
                }),
            }
        } else if ownership == Ownership::Replaced {
            left_alone.push(format!(
                "namespace {ns}: not the namespace the lab made (made again by someone else)"
            ));
            manifest.forget(ns);
        }
    }
    let prefix = naming::namespace_prefix(lab);
    match host.list_namespaces() {
        Ok(list) => left_alone.extend(
            list.iter()
                .filter(|n| n.starts_with(&prefix) && !recorded.iter().any(|(r, _)| r == *n))
                .map(|n| foreign_warning(n)),
        ),
        Err(e) => failures.push(TeardownFailure::ListNamespaces(e)),
    }
    if let Err(source) = manifest.save() {
        failures.push(TeardownFailure::Manifest {
            path: manifest.path().to_path_buf(),
            source,
        });
    }
    (deleted, left_alone, failures)
}

/// Removes a lab's run directory, the manifest last, so that a daemon
/// killed half-way still finds what the lab was. `false`: it was gone.
pub(super) fn remove_run_dir(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == crate::manifest::MANIFEST_FILE {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    match std::fs::remove_file(dir.join(crate::manifest::MANIFEST_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_dir(dir)?;
    Ok(true)
}
