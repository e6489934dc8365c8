//! Logging: to the journal when the daemon's stderr is connected to it
//! (systemd sets `JOURNAL_STREAM` then), else formatted lines on stderr.
//! `--log-level` filters the log alone: the progress of converges
//! ([`crate::progress`]) sees its events whatever the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::progress;

pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("ovslabd: ignoring --log-level `{filter}` ({e}); logging at info");
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry()
        .with(progress::Layer.with_filter(filter_fn(progress::Layer::wants)));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                registry
                    .with(
                        journal
                            .with_syslog_identifier("ovslabd".into())
                            .with_filter(filter),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("ovslabd: no journal ({e}); logging to stderr"),
        }
    }
    let ansi = std::io::stderr().is_terminal();
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(filter),
        )
        .init();
}
