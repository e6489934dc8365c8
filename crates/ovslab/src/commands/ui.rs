//! `ovslab ui [LAB] [--listen ADDRESS:PORT]`: the labs in a browser (see
//! [`crate::web`]).

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::BadInput;
use crate::client::Client;
use crate::commands::segment;
use crate::web::auth::{Gate, Token};
use crate::web::connections::{self, Limits};
use crate::web::{QUICK, Ui, router};

/// A live view of the labs in a browser: the picture, health, checks and
/// traces.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Start a small web server that shows a running lab in a browser, and print its \
address. The page draws the lab as `ovslab graph` does (zoom with the wheel, pan by dragging; \
hover or click an object for its addresses, MACs, tags, a bridge's flows, a router's NAT), marks \
what the daemon's audits repair as they happen, runs the lab's checks and draws the path of the \
one selected, and traces a probe between two objects hop by hop, step by step or animated, with \
the VLAN tags, tunnel keys, MACs and NAT labelled where they change.\n\n\
The server runs as you and talks to ovslabd through its socket like any ovslab command: the page \
can do what your `ovslab` can, no more. Unless --listen says, it listens on a random loopback \
address 127.X.Y.Z with a free port, so that no other server on 127.0.0.1 ever gets its cookie \
(a browser sends a cookie to every port of its host). It answers only requests that carry its \
random token. The printed address holds a \
one-time code instead: the first browser to open it gets the token in a cookie, and the \
address then opens nothing more (start again for a new one). Scripts send the token as \
`Authorization: Bearer TOKEN`, read from the `Set-Cookie` answer to the printed address. \
Everything it serves is compiled in, so it works without internet access. Stop it with Ctrl-C.",
    after_help = "Exit status: 0 stopped by Ctrl-C or SIGTERM, 1 the daemon is unreachable, no lab \
runs or LAB is not one of them, or the address cannot be bound, 2 a bad argument."
)]
pub struct Args {
    /// The lab the page opens with (it lists the others); default: the
    /// only lab running, or the first of several.
    #[arg(value_name = "LAB")]
    pub lab: Option<String>,
    /// Where to listen; default: a random address 127.X.Y.Z and a free
    /// port (127.0.0.1 when the loopback has no other). Any address but a
    /// loopback one lets other hosts reach the page (with the token): say
    /// so on purpose, and mind that the token then travels in clear.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<SocketAddr>,
}

pub fn exec(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(lab) = &args.lab
        && let Some(problem) = ovslab_topology::lab_name_problem(lab)
    {
        return Err(BadInput(problem).into());
    }
    // The daemon answers, and knows the lab, before anything listens.
    let labs: Vec<String> = client.clone().with_deadline(QUICK).get("/v1/labs")?;
    if labs.is_empty() {
        return Err(crate::commands::NoLabRunning.into());
    }
    if let Some(lab) = &args.lab
        && !labs.contains(lab)
    {
        anyhow::bail!(
            "lab `{lab}` is not known to this daemon (running: {})",
            labs.join(", ")
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    connections::raise_descriptor_limit();
    runtime.block_on(serve(client, args, labs))
}

async fn serve(client: &Client, args: Args, labs: Vec<String>) -> anyhow::Result<ExitCode> {
    let listener = match args.listen {
        Some(listen) => tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?,
        None => {
            let random = random_loopback(
                crate::web::auth::random_bytes().context("reading /dev/urandom for the address")?,
            );
            let (listener, warning) = bind_loopback(random).await?;
            if let Some(warning) = warning {
                eprintln!("ovslab ui: warning: {warning}");
            }
            listener
        }
    };
    let address = listener.local_addr().context("the address listened on")?;
    if !address.ip().is_loopback() {
        eprintln!(
            "ovslab ui: warning: listening on {address}, not on a loopback address: any host \
             that reaches it and learns the token can run checks and traces in your labs, and \
             plain HTTP shows the token to whoever watches the network"
        );
    }
    let token = Token::random().context("reading /dev/urandom for the token")?;
    let code = Token::random().context("reading /dev/urandom for the one-time code")?;
    let lab = args.lab.or_else(|| first_lab(&labs));
    let gate = Gate::new(token, code, address.port());
    let url = page_url(address, gate.code(), lab.as_deref());
    let ui = Arc::new(Ui::new(gate, client));
    println!("{url}");
    let _ = std::io::stdout().flush();
    eprintln!("ovslab ui: serving on {address}; open the address above; Ctrl-C stops");
    // A stop does not wait for the pages' event streams, which never end.
    tokio::select! {
        () = connections::serve(listener, router(ui), Limits::default()) => {}
        () = stop_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// A loopback address 127.X.Y.Z from three random bytes, each of X, Y, Z
/// in 1–254: never 127.0.0.1, where other local servers listen. Cookies
/// are kept per host, not per port (RFC 6265 §8.5), and `SameSite`
/// counts another IP address as another site: a server on any other
/// loopback address never gets this one's cookie.
fn random_loopback(bytes: [u8; 3]) -> Ipv4Addr {
    let [x, y, z] = bytes.map(|b| 1 + b % 254);
    Ipv4Addr::new(127, x, y, z)
}

/// A listener on `address` with a port the kernel picks, or on 127.0.0.1
/// when this host's loopback does not have `address` (a loopback without
/// all of 127.0.0.0/8), with the warning to print then.
async fn bind_loopback(
    address: Ipv4Addr,
) -> anyhow::Result<(tokio::net::TcpListener, Option<String>)> {
    match tokio::net::TcpListener::bind((address, 0)).await {
        Ok(listener) => Ok((listener, None)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("listening on 127.0.0.1")?;
            let warning = format!(
                "cannot listen on {address} ({e}): listening on 127.0.0.1, where the \
                 browser also sends the page's cookie to any other server on 127.0.0.1"
            );
            Ok((listener, Some(warning)))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("listening on {address}"))),
    }
}

/// The lab the page opens with when none was named: the first of the
/// daemon's whose name passes the topology's rule (a socket that answers
/// escape sequences gets none of them printed).
fn first_lab(labs: &[String]) -> Option<String> {
    labs.iter()
        .find(|l| ovslab_topology::lab_name_problem(l).is_none())
        .cloned()
}

/// The address printed: the page, the one-time code, and the lab
/// percent-encoded.
fn page_url(address: SocketAddr, code: &str, lab: Option<&str>) -> String {
    let host = match address {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        a => a.to_string(),
    };
    let mut url = format!("http://{host}/?code={code}");
    if let Some(lab) = lab {
        url.push_str(&format!("&lab={}", segment(lab)));
    }
    url
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_random_loopback_address_is_never_127_0_0_1_nor_has_a_zero() {
        assert_eq!(random_loopback([0, 0, 0]), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(
            random_loopback([253, 254, 255]),
            Ipv4Addr::new(127, 254, 1, 2)
        );
        for _ in 0..1000 {
            let a = random_loopback(crate::web::auth::random_bytes().unwrap());
            assert!(a.is_loopback() && a != Ipv4Addr::LOCALHOST, "{a}");
            assert!(
                a.octets()[1..].iter().all(|&b| (1..=254).contains(&b)),
                "{a}"
            );
        }
    }

    #[tokio::test]
    async fn the_server_listens_on_its_own_loopback_address_or_else_127_0_0_1() {
        let wanted = random_loopback(crate::web::auth::random_bytes().unwrap());
        let (listener, warning) = bind_loopback(wanted).await.unwrap();
        let at = listener.local_addr().unwrap();
        assert_eq!((at.ip(), warning), (wanted.into(), None));
        assert_ne!(at.port(), 0);
        // A documentation address (RFC 5737) no interface has: EADDRNOTAVAIL.
        let (listener, warning) = bind_loopback(Ipv4Addr::new(192, 0, 2, 1)).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
        assert!(warning.unwrap().starts_with("cannot listen on 192.0.2.1"));
    }

    #[test]
    fn only_a_lab_whose_name_passes_the_rule_is_offered() {
        let labs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            first_lab(&labs(&["seed", "other"])).as_deref(),
            Some("seed")
        );
        assert_eq!(
            first_lab(&labs(&["\u{1b}]0;PWNED\u{7}", "a b", "seed"])).as_deref(),
            Some("seed")
        );
        assert_eq!(first_lab(&labs(&["\u{1b}[2J"])), None);
    }

    #[test]
    fn the_printed_address_has_the_lab_percent_encoded() {
        let at = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            page_url(at, "abc", Some("seed-2")),
            "http://127.0.0.1:8080/?code=abc&lab=seed-2"
        );
        assert_eq!(page_url(at, "abc", None), "http://127.0.0.1:8080/?code=abc");
        let url = page_url(at, "abc", Some("\u{1b}]0;x\u{7}&y=1 z"));
        assert_eq!(
            url,
            "http://127.0.0.1:8080/?code=abc&lab=%1B%5D0%3Bx%07%26y%3D1%20z"
        );
        assert_eq!(
            page_url("[::]:80".parse().unwrap(), "abc", None),
            "http://[::1]:80/?code=abc"
        );
    }
}
