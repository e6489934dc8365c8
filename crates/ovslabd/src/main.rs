//! `ovslabd`: the ovslab daemon. It owns every lab on the host and serves the
//! API of [`ovslab_api`] (JSON over HTTP on a Unix socket) to the `ovslab`
//! command line.
//!
//! - [`config`]: the command line.
//! - [`actions`]: every action the daemon accepts, and how each one runs.
//! - [`server`]: the HTTP routes, who may call them, what they accept, and
//!   the run loop with its bounded stop.
//! - [`connections`]: accepting and serving connections, with a limit and
//!   deadlines.
//! - [`quota`]: how many labs and namespaces the daemon runs at most.
//! - [`run_lock`]: one daemon per run directory.
//! - [`socket`]: binding the API socket safely, and removing it on exit.
//! - [`labs_dir`]: bringing up the labs described under `--labs-dir`.
//! - [`notify`]: telling systemd where the daemon is (`sd_notify`).
//! - [`on_exit`]: what a stop does to the labs (`--on-exit`, or a one-time
//!   request in the run directory: the package's upgrade and removal).
//! - [`dhcp_hook`]: what ovslabd does when an instance's DHCP client runs
//!   it (under another name) at a lease event.
//! - [`progress`]: how far each lab's converge has come (`ovslab up`
//!   shows it on a terminal).

mod actions;
mod config;
mod connections;
mod dhcp_hook;
mod labs_dir;
mod logging;
mod notify;
mod on_exit;
mod progress;
mod quota;
mod run_lock;
mod server;
mod socket;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Run by an instance's udhcpc, under the hook's name.
    let mut args = std::env::args_os();
    let called = args.next().unwrap_or_default();
    if std::path::Path::new(&called).file_name() == Some(dhcp_hook::HOOK_NAME.as_ref()) {
        return dhcp_hook::run(args.next().map(|a| a.to_string_lossy().into_owned()));
    }
    limit_malloc_arenas();
    let mut config = config::Config::parse();
    if config.man_page {
        print!("{}", config::man_page());
        return ExitCode::SUCCESS;
    }
    // The labs' sockets live under the run directory, whatever the working
    // directory of a process that reaches them.
    if let Ok(absolute) = std::path::absolute(&config.run_dir) {
        config.run_dir = absolute;
    }
    logging::init(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(server::run(config));
    // A probe or namespace call still running on a blocking thread (its
    // request abandoned by the stop) must not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Two malloc arenas instead of eight per core: the daemon's many short
/// threads (namespace visits, blocking tasks) otherwise each leave memory
/// in an arena of their own, and a 1000-instance lab's audits pushed the
/// RSS past 100 MiB.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
