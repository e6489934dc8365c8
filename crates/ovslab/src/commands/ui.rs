//! `ovslab ui [LAB] [--listen ADDRESS:PORT]`: the labs in a browser (see
//! [`crate::web`]).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::BadInput;
use crate::client::Client;
use crate::commands::segment;
use crate::web::auth::{Gate, Token};
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
can do what your `ovslab` can, no more. It listens on 127.0.0.1 (a free port unless --listen \
says) and answers only requests that carry its random token. The printed address holds a \
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
    /// Where to listen. Any address but a loopback one lets other hosts
    /// reach the page (with the token): say so on purpose, and mind that
    /// the token then travels in clear.
    #[arg(long, value_name = "ADDRESS:PORT", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
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
    runtime.block_on(serve(client, args, labs))
}

async fn serve(client: &Client, args: Args, labs: Vec<String>) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
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
    let server = std::future::IntoFuture::into_future(axum::serve(listener, router(ui)));
    tokio::select! {
        served = server => served.context("serving the page")?,
        () = stop_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
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
