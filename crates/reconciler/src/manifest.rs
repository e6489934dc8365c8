//! What ovslab created for a lab, so that nothing else is ever taken for
//! the lab's: `<run_root>/<lab>/manifest.json` holds each namespace the lab
//! made, with the inode of the namespace it made.
//!
//! A name alone proves nothing: `vpn.blue` may be the host's own namespace
//! and no lab `vpn`'s node `blue`. So a namespace is the lab's only when the
//! manifest names it, and — once it was made — when it is still the same
//! namespace (same inode). A namespace is written down *before* it is
//! created (without an inode) and its inode after: a daemon killed in
//! between leaves a name the manifest promised, which the next converge
//! adopts or finishes. Anything with the lab's prefix that the manifest
//! does not name is left alone and reported.
//!
//! The manifest is written to a temporary file and renamed over the old
//! one, so a crash leaves the old manifest or the new, never half of one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file in a lab's run directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Whose a namespace with the lab's prefix is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Made by the lab, and still the namespace it made.
    Ours,
    /// Written down before it was made, never confirmed: a create that a
    /// crash interrupted. The lab finishes it.
    Promised,
    /// The manifest names it, but the namespace there now is another one
    /// (removed and made again by someone else): not the lab's.
    Replaced,
    /// Not in the manifest: not the lab's.
    Foreign,
}

/// What ovslab created for one lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(skip)]
    path: PathBuf,
    /// The lab's name, so that a manifest copied elsewhere is not believed.
    pub lab: String,
    /// Namespace name → its inode once made (`None`: about to be made).
    namespaces: BTreeMap<String, Option<u64>>,
}

impl Manifest {
    /// An empty manifest for `lab`, kept in `dir`; nothing is written yet.
    pub fn new(dir: &Path, lab: &str) -> Self {
        Manifest {
            path: dir.join(MANIFEST_FILE),
            lab: lab.to_string(),
            namespaces: BTreeMap::new(),
        }
    }

    /// The manifest in `dir`, if there is one and it is `lab`'s.
    pub fn load(dir: &Path, lab: &str) -> io::Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if manifest.lab != lab {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the manifest is lab `{}`'s, not `{lab}`'s", manifest.lab),
            ));
        }
        manifest.path = path;
        Ok(Some(manifest))
    }

    /// Writes the manifest (a new file renamed over the old one).
    pub fn save(&self) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        crate::files::replace(&self.path, text)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whose namespace `name` is, given the inode found there now.
    pub fn ownership(&self, name: &str, inode: Option<u64>) -> Ownership {
        match self.namespaces.get(name) {
            None => Ownership::Foreign,
            Some(None) => Ownership::Promised,
            Some(Some(recorded)) if inode == Some(*recorded) => Ownership::Ours,
            Some(Some(_)) => Ownership::Replaced,
        }
    }

    /// Writes down that these namespaces are about to be made.
    pub fn promise<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.namespaces.insert(name.to_string(), None);
        }
    }

    /// Records the inode of a namespace the lab made (or adopted from a
    /// promise).
    pub fn made(&mut self, name: &str, inode: u64) {
        self.namespaces.insert(name.to_string(), Some(inode));
    }

    /// The namespace is no longer the lab's (removed).
    pub fn forget(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// The namespaces the manifest names, with their recorded inodes.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, Option<u64>)> {
        self.namespaces.iter().map(|(n, i)| (n.as_str(), *i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ovslab-manifest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_namespace_is_ours_only_while_it_is_the_one_we_made() {
        let mut m = Manifest::new(Path::new("/nonexistent"), "lab");
        assert_eq!(m.ownership("lab.a", Some(7)), Ownership::Foreign);
        m.promise(["lab.a"]);
        assert_eq!(m.ownership("lab.a", Some(7)), Ownership::Promised);
        assert_eq!(m.ownership("lab.a", None), Ownership::Promised);
        m.made("lab.a", 7);
        assert_eq!(m.ownership("lab.a", Some(7)), Ownership::Ours);
        assert_eq!(m.ownership("lab.a", Some(8)), Ownership::Replaced);
        assert_eq!(m.ownership("lab.a", None), Ownership::Replaced);
        m.forget("lab.a");
        assert_eq!(m.ownership("lab.a", Some(7)), Ownership::Foreign);
    }

    #[test]
    fn it_is_saved_whole_and_read_back_only_for_its_lab() {
        let dir = dir("save");
        assert_eq!(Manifest::load(&dir, "lab").unwrap(), None);
        let mut m = Manifest::new(&dir, "lab");
        m.promise(["lab.a", "lab.b"]);
        m.made("lab.a", 42);
        m.save().unwrap();
        let back = Manifest::load(&dir, "lab").unwrap().unwrap();
        assert_eq!(back, m);
        assert!(!dir.join(".manifest.json.new").exists());
        assert!(Manifest::load(&dir, "other").is_err());
        std::fs::write(dir.join(MANIFEST_FILE), "{ half").unwrap();
        assert!(Manifest::load(&dir, "lab").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
