//! `ovslab __man DIR` (hidden): writes `ovslab.1` and `ovslab-topology.5`
//! into DIR (`make man`; the package and `make install` install them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Write the manual pages ovslab(1) and ovslab-topology(5) into DIR.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("{}: cannot make it", args.dir.display()))?;
    for (name, page) in [
        ("ovslab.1", crate::manual::ovslab_page()),
        ("ovslab-topology.5", crate::manual::topology_page()),
    ] {
        let path = args.dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
