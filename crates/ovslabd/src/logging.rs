//! Logging: to the journal when the daemon's stderr is connected to it
//! (systemd sets `JOURNAL_STREAM` then), else formatted lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("ovslabd: ignoring --log-level `{filter}` ({e}); logging at info");
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                registry
                    .with(journal.with_syslog_identifier("ovslabd".into()))
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
                .with_ansi(ansi),
        )
        .init();
}
