//! `ovslab completions SHELL`: a completion script for bash, zsh or fish.

use std::process::ExitCode;

use crate::completion::Shell;

/// Print a shell completion script (bash, zsh or fish).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print a completion script for SHELL, generated from this command line's own \
definitions: subcommands, options and their values, files where a file is wanted, and — asked of \
the running daemon as you type — the names of the running labs (`ovslab down <TAB>`, `--lab \
<TAB>`) and of a lab's nodes, instances, routers and hosts (`ovslab exec <TAB>`, `ovslab trace \
<TAB>`). The Debian package and `make install` install the scripts where each shell finds them; \
to try one in the current shell:\n  \
source <(ovslab completions bash)\n  \
source <(ovslab completions zsh)\n  \
ovslab completions fish | source",
    after_help = "Exit status: 0 printed, 2 an unknown shell."
)]
pub struct Args {
    /// The shell.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    print!("{}", crate::completion::script(args.shell));
    Ok(ExitCode::SUCCESS)
}
