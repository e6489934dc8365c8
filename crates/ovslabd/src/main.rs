//! `ovslabd`: the ovslab daemon. It owns every lab on the host and serves the
//! API of [`ovslab_api`] (JSON over HTTP on a Unix socket) to the `ovslab`
//! command line.
//!
//! - [`config`]: the command line.
//! - [`actions`]: every action the daemon accepts, and how each one runs.
//! - [`server`]: the HTTP routes, who may call them, and the serve loop with
//!   its graceful stop.
//! - [`socket`]: binding the API socket safely, and removing it on exit.
//! - [`labs_dir`]: bringing up the labs described under `--labs-dir`.

mod actions;
mod config;
mod labs_dir;
mod logging;
mod server;
mod socket;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = config::Config::parse();
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
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
