//! `ovslab capture [--lab LAB] TARGET IFACE [-w FILE.pcap] [-c COUNT]`:
//! a packet capture inside a node, instance, router, physical router or external host, with
//! VLAN tags kept.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use ovslab_capture::{Direction, Frame, PacketSocket, PcapWriter};

use crate::client::Client;
use crate::commands::lab_or_only;

/// Capture frames on one interface of a lab object, VLAN tags kept.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Capture the frames on IFACE inside the namespace of TARGET (a node, instance, \
router or external host), with their 802.1Q tags kept — the kernel strips tags on receive; \
the capture puts them back, as tcpdump does. Without -w, one line per frame (time, direction, \
MACs, VLAN, addresses); with -w, a pcap file for Wireshark or tcpdump -r. Once the capture \
is open it says so on stderr (`listening on IFACE of KIND TARGET (lab LAB)`), as tcpdump does: \
what is sent after that line is captured.\n\n\
It runs until COUNT frames were captured, SECONDS passed, or Ctrl-C. The interface is put in \
promiscuous mode for the capture only (so a Linux bridge shows what it forwards). Needs root \
(entering a namespace and opening a packet socket), as tcpdump does.\n\n\
Examples:\n  ovslab capture compute1 eth1 -c 10\n  ovslab capture network eth1 -w net.pcap -c 100\n  \
ovslab capture instance1 eth0 --seconds 5",
    override_usage = "ovslab capture [--lab LAB] TARGET IFACE [-w FILE.pcap] [-c COUNT] [--seconds N]",
    after_help = "Exit status: 0 the capture ended as asked, 1 the target or interface is unknown, \
the namespace cannot be entered or the file cannot be written, 2 a bad argument (SECONDS is more \
than 0 and at most 86400)."
)]
pub struct Args {
    /// The lab the target belongs to; default: the only lab running.
    #[arg(long, value_name = "LAB")]
    pub lab: Option<String>,
    /// A node, instance, router, physical router or external host of the lab.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The interface inside the target's namespace (eth1, qvo…, qr-…).
    #[arg(value_name = "IFACE")]
    pub interface: String,
    /// Write a pcap file instead of printing.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after COUNT frames.
    #[arg(short = 'c', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Stop after SECONDS (more than 0, at most a day: 86400).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub seconds: Option<Duration>,
}

/// The longest `--seconds`: a day. The daemon takes no part in a capture
/// (this process opens the socket itself), so the bound is this command's.
const MOST_SECONDS: f64 = 86_400.0;

/// `--seconds`: a finite number of seconds, more than 0 and at most
/// [`MOST_SECONDS`] (`inf`, `nan` or `1e19` would not fit in a deadline).
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= MOST_SECONDS => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(format!(
            "must be a number of seconds, more than 0 and at most {MOST_SECONDS}"
        )),
        Err(e) => Err(format!("{e} (a number of seconds, as 5 or 0.5)")),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What to add to an error opening the capture: why, when the kernel
/// refused for want of privilege (EPERM or EACCES).
fn privilege_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (capturing needs root: CAP_SYS_ADMIN and CAP_NET_RAW)"
    } else {
        ""
    }
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let lab = lab_or_only(client, args.lab, "ovslab capture --lab LAB TARGET IFACE")?;
    // The environment is not used: a capture runs no program.
    let target = client.target(&lab, &args.target)?.target;
    let socket = PacketSocket::open(&target.namespace, &args.interface, true).map_err(|e| {
        let hint = privilege_hint(&e);
        anyhow!(
            "{} {} of lab {}: {e}{hint}",
            target.kind,
            target.name,
            target.lab
        )
    })?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }
    let mut pcap = match &args.write {
        Some(path) => Some(PcapWriter::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
        ))?),
        None => None,
    };
    // Ready, as tcpdump says it is: what is sent from now on is captured.
    eprintln!(
        "listening on {} of {} {} (lab {})",
        args.interface, target.kind, target.name, target.lab
    );
    let deadline = args.seconds.map(|s| Instant::now() + s);
    let mut captured = 0u64;
    let stdout = std::io::stdout();
    while !STOP.load(Ordering::Relaxed)
        && args.count.is_none_or(|c| captured < c)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let Some(packet) = socket.recv_timeout(Duration::from_millis(200))? else {
            continue;
        };
        captured += 1;
        match &mut pcap {
            Some(w) => {
                w.write(&packet)?;
                w.flush()?;
            }
            None => {
                let since = packet.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                let secs = since.as_secs() % 86_400;
                let line = match Frame::parse(&packet.data) {
                    Some(frame) => frame.to_string(),
                    None => format!("{} bytes", packet.data.len()),
                };
                let mut out = stdout.lock();
                let _ = writeln!(
                    out,
                    "{:02}:{:02}:{:02}.{:06} {:<3} {line}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                    since.subsec_micros(),
                    match packet.direction {
                        Direction::In => "in",
                        Direction::Out => "out",
                    }
                );
                let _ = out.flush();
            }
        }
    }
    if let Some(path) = &args.write {
        eprintln!("{captured} frames written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_finite_positive_and_at_most_a_day() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("86400"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "inf", "-inf", "NaN", "1e19", "86400.5", "0", "-1", "", "five",
        ] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_refuses_an_endless_capture() {
        use clap::Parser as _;
        let parse = |s: &str| {
            crate::Cli::try_parse_from(["ovslab", "capture", "node", "eth1", "--seconds", s])
        };
        let Ok(crate::Cli {
            command: crate::Command::Capture(args),
            ..
        }) = parse("2.5")
        else {
            panic!("2.5 s refused")
        };
        assert_eq!(args.seconds, Some(Duration::from_millis(2500)));
        for bad in ["inf", "1e19"] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn a_missing_privilege_is_told_by_its_errno_not_its_text() {
        let denied = std::io::Error::new(
            std::io::Error::from_raw_os_error(libc::EPERM).kind(),
            "eth1 in lab.node: run inside: refused",
        );
        assert!(privilege_hint(&denied).contains("needs root"));
        let missing = std::io::Error::from_raw_os_error(libc::ENODEV);
        assert_eq!(privilege_hint(&missing), "");
        // The words alone are not enough.
        let text = std::io::Error::other("Operation not permitted");
        assert_eq!(privilege_hint(&text), "");
    }
}
