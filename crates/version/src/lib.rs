//! The version `ovslab --version` and `ovslabd --version` print:
//! `0.1.0 (git 76e017d1a2b3)`. A crate of its own so that a new commit
//! rebuilds this and the two binaries, not every crate that uses the API.

/// The package version and the commit: `OVSLAB_GIT_COMMIT` when the build
/// set it, else `git rev-parse HEAD` of the source tree, else `unknown`
/// (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("OVSLAB_GIT_COMMIT"),
    ")"
);
