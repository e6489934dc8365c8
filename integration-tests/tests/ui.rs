//! `ovslab ui` in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver), against a private daemon and the seed
//! lab under a unique name. Every process the tests start is stopped by
//! its pid, and the lab taken down, also when a test fails.
//!
//! With `OVSLAB_UI_SCREENSHOTS=DIR` the pictures of the seed lab and of a
//! trace are written there (`ui-seed.png`, `ui-trace.png`; docs/ has them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ovslab_integration_tests::webdriver::{Browser, read_answer, split_answer};
use ovslab_integration_tests::{Lab, bin, lab_namespaces, rename_lab, require_root, run_raw};
use serde_json::{Value, json};

/// A running `ovslab ui` and the address it printed.
struct UiServer {
    child: Child,
    url: String,
    /// `ADDRESS:PORT`, as in the address printed.
    host: String,
    port: u16,
}

impl UiServer {
    fn start(lab: &Lab) -> UiServer {
        let mut child = Command::new(bin("ovslab"))
            .arg("--socket")
            .arg(&lab.daemon.socket)
            .args(["ui", &lab.name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ovslab ui");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        let host = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("ovslab ui printed {url:?}"))
            .to_string();
        let port = host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("ovslab ui printed {url:?}"));
        UiServer {
            child,
            url,
            host,
            port,
        }
    }

    /// The one-time code of the address printed.
    fn code(&self) -> &str {
        self.url
            .split("code=")
            .nth(1)
            .and_then(|rest| rest.split('&').next())
            .unwrap_or_else(|| panic!("no code in {}", self.url))
    }

    /// One raw request to the server (`GET PATH` with `headers`): its
    /// status, head and body.
    fn get(&self, path: &str, headers: &str) -> (u16, String, String) {
        self.get_as(&self.host, path, headers)
    }

    /// [`Self::get`] with another `Host` header.
    fn get_as(&self, host: &str, path: &str, headers: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
        )
        .unwrap();
        let answer = read_answer(&mut stream);
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(answer.len());
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        let (status, body) = split_answer(&answer);
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        // SAFETY: signalling the server this test started, by its pid,
        // which is not reaped yet (so not reused).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A server on 127.0.0.1 with a free port: each request head it gets is
/// sent on the channel, and answered with an empty page.
fn rogue_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heard, hear) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if heard.send(head).is_err() {
                return;
            }
        }
    });
    (port, hear)
}

/// The page loaded with the token, the lab drawn.
fn open_page(lab: &Lab, ui: &UiServer) -> Browser {
    let browser = Browser::start(&lab.daemon.dir, 1280, 720);
    browser.open(&ui.url);
    wait_drawn(&browser);
    browser
}

/// Waits for the page to draw the lab.
fn wait_drawn(browser: &Browser) {
    browser.wait_for(
        "the page to draw the lab",
        Duration::from_secs(20),
        "return document.body.dataset.ready === 'true' && document.querySelectorAll('#picture g.box').length",
    );
}

fn screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("OVSLAB_UI_SCREENSHOTS") {
        let path = PathBuf::from(dir).join(name);
        std::fs::write(&path, browser.screenshot()).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

/// Runs the checks from the page; the verdicts by check name.
fn run_checks(browser: &Browser) -> Vec<(String, bool)> {
    browser.run("document.getElementById('run-checks').click()", json!([]));
    let results = browser.wait_for(
        "the check results",
        Duration::from_secs(60),
        "const s = document.getElementById('checks-summary');
         if (!s.dataset.passed && !s.classList.contains('error')) return null;
         if (s.classList.contains('error')) return s.textContent;
         return [...document.querySelectorAll('#checks li')]
           .map(li => [li.dataset.check, li.classList.contains('pass')]);",
    );
    serde_json::from_value(results.clone()).unwrap_or_else(|_| panic!("checks: {results}"))
}

#[test]
#[ignore = "needs root"]
fn the_page_draws_the_seed_lab_runs_its_checks_and_traces() {
    require_root("the_page_draws_the_seed_lab_runs_its_checks_and_traces");
    let lab = Lab::seed();
    let ui = UiServer::start(&lab);

    // A loopback address of its own (see below: its cookie goes nowhere
    // else).
    assert!(
        ui.host.starts_with("127.") && !ui.host.starts_with("127.0.0.1:"),
        "{}",
        ui.url
    );

    // Nothing without the token.
    let (status, _, body) = ui.get("/api/labs", "");
    assert_eq!(status, 401, "{body}");
    let code = ui.code().to_string();
    assert_eq!(code.len(), 64, "{}", ui.url);

    // The browser without the code is refused too.
    let browser = Browser::start(&lab.daemon.dir, 1280, 720);
    browser.open(&format!("http://{}/", ui.host));
    let text = browser.run("return document.body.innerText", json!([]));
    assert!(text.as_str().unwrap().contains("no valid token"), "{text}");
    drop(browser);

    // The address printed opens the page once, and leaves the address bar
    // for a cookie that holds the token (not the code), which the page's
    // scripts cannot read.
    let browser = open_page(&lab, &ui);
    let href = browser.run("return location.href + ' ' + document.cookie", json!([]));
    assert!(!href.as_str().unwrap().contains(&code), "{href}");
    let cookie = format!("ovslab-ui-{}", ui.port);
    let token = browser.cookie(&cookie).expect("the page's cookie");
    assert_eq!(token.len(), 64);
    assert_ne!(token, code);
    assert!(!href.as_str().unwrap().contains(&token), "{href}");

    // Another server on 127.0.0.1 (another user's, a dev server) that the
    // browser visits gets no cookie of the page's.
    let (rogue, heard) = rogue_server();
    browser.open(&format!("http://127.0.0.1:{rogue}/favicon.ico"));
    let head = heard.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(head.starts_with("GET /favicon.ico"), "{head}");
    assert!(
        !head.contains("ovslab-ui-") && !head.contains(&token),
        "{head}"
    );
    browser.open(&format!("http://{}/?lab={}", ui.host, lab.name));
    wait_drawn(&browser);

    // The address again (from the history, say): spent.
    let (status, head, body) = ui.get(&format!("/?code={code}&lab={}", lab.name), "");
    assert_eq!(status, 401, "{head}");
    assert!(body.contains("used once already"), "{body}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    // With the cookie it leads on, without the code.
    let (status, head, _) = ui.get(
        &format!("/?code={code}&lab={}", lab.name),
        &format!("Cookie: {cookie}={token}\r\n"),
    );
    assert_eq!(status, 303, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("location: /?lab={}", lab.name)),
        "{head}"
    );

    // A wrong token, or a host name that is not ours, gets nothing.
    let wrong = format!(
        "{}{}",
        if token.starts_with('0') { '1' } else { '0' },
        &token[1..]
    );
    let (status, _, body) = ui.get("/api/labs", &format!("Cookie: {cookie}={wrong}\r\n"));
    assert_eq!(status, 401, "a wrong token: {body}");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, _, _) = ui.get_as(
        &format!("rebound.example:{}", ui.port),
        "/api/labs",
        &bearer,
    );
    assert_eq!(status, 421, "DNS rebinding");
    let (status, _, body) = ui.get("/api/labs", &bearer);
    assert_eq!((status, body), (200, format!("[\"{}\"]", lab.name)));

    // Every node, instance, router and host of the lab is on the picture.
    let topo = lab.topology();
    let drawn = browser.run(
        "const objects = sel => [...document.querySelectorAll(sel)].map(g => g.dataset.object);
         return { frames: objects('#picture g.frame'), boxes: objects('#picture g.box'),
                  text: document.querySelector('#picture svg').textContent };",
        json!([]),
    );
    let frames: Vec<String> = serde_json::from_value(drawn["frames"].clone()).unwrap();
    let boxes: Vec<String> = serde_json::from_value(drawn["boxes"].clone()).unwrap();
    for node in &topo.nodes {
        assert!(
            frames.contains(&node.name),
            "node {} not drawn: {frames:?}",
            node.name
        );
    }
    for name in topo
        .instances
        .iter()
        .map(|i| &i.name)
        .chain(topo.routers.iter().map(|r| &r.name))
        .chain(topo.external_hosts.iter().map(|h| &h.name))
    {
        assert!(boxes.contains(name), "{name} not drawn: {boxes:?}");
        assert!(drawn["text"].as_str().unwrap().contains(name.as_str()));
    }
    // Clicking an instance shows its details.
    browser.run(
        "document.querySelector('#picture g.box[data-object=\"instance1\"]')
           .dispatchEvent(new MouseEvent('click', {bubbles: true}))",
        json!([]),
    );
    let details = browser.run(
        "return document.getElementById('details').innerText",
        json!([]),
    );
    let mac = topo.instance("instance1").unwrap().mac;
    let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        details.as_str().unwrap().contains(&mac.join(":"))
            && details.as_str().unwrap().contains("192.168.1.11/24"),
        "{details}"
    );

    // A bridge's flows and the router's NAT, read live on a click.
    for (selector, expected) in [
        (
            format!(
                "#picture g.box[data-namespace=\"{}.compute1\"][data-kind=\"ovs-bridge\"]",
                lab.name
            ),
            "actions=",
        ),
        (
            "#picture g.box[data-object=\"router1\"]".to_string(),
            "-j SNAT --to-source 203.0.113.101",
        ),
    ] {
        browser.run(
            "document.querySelector(arguments[0]).dispatchEvent(new MouseEvent('click', {bubbles: true}));
             document.querySelector('#details button').click();",
            json!([selector]),
        );
        let text = browser.wait_for(
            "the live details",
            Duration::from_secs(20),
            "const t = document.querySelector('#details pre').textContent;
             return t && t !== '…' ? t : null",
        );
        assert!(
            text.as_str().unwrap().contains(expected),
            "{selector}: {text}"
        );
    }
    browser.run(
        "document.querySelector('#picture g.box[data-object=\"instance1\"]')
           .dispatchEvent(new MouseEvent('click', {bubbles: true}))",
        json!([]),
    );

    // The checks: all twelve pass.
    let results = run_checks(&browser);
    assert_eq!(results.len(), 12, "{results:?}");
    let failed: Vec<_> = results.iter().filter(|(_, passed)| !passed).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    let summary = browser.run(
        "return document.getElementById('checks-summary').textContent",
        json!([]),
    );
    assert!(
        summary.as_str().unwrap().starts_with("12 of 12 passed"),
        "{summary}"
    );
    screenshot(&browser, "ui-seed.png");

    // A trace from instance1 to instance2: through the network node, VLAN
    // 101 on the way there, then 102, drawn on the picture.
    browser.run(
        "document.getElementById('trace-from').value = 'instance1';
         document.getElementById('trace-to').value = 'instance2';
         document.getElementById('trace-protocol').value = 'icmp';
         document.getElementById('trace-run').click();",
        json!([]),
    );
    let steps = browser.wait_for(
        "the trace",
        Duration::from_secs(60),
        "const items = [...document.querySelectorAll('#trace-steps li')];
         if (!items.length) return document.getElementById('trace-summary').classList.contains('error')
           ? document.getElementById('trace-summary').textContent : null;
         return items.map(li => ({ leg: li.className.split(' ')[0], ns: li.dataset.namespace,
                                   changes: li.dataset.changes }));",
    );
    let steps = steps.as_array().unwrap_or_else(|| panic!("trace: {steps}"));
    let network = format!("{}.network", lab.name);
    let request: Vec<&Value> = steps.iter().filter(|s| s["leg"] == "request").collect();
    let crossed = request.iter().position(|s| s["ns"] == network.as_str());
    assert!(
        crossed.is_some(),
        "not through the network node: {steps:#?}"
    );
    let changes: Vec<&str> = request
        .iter()
        .flat_map(|s| s["changes"].as_str().unwrap().split('|'))
        // The tags the frame takes on, in order (not where they go).
        .filter(|c| c.starts_with("VLAN ") && !c.ends_with(" removed"))
        .collect();
    assert_eq!(changes, ["VLAN 101", "VLAN 102"], "{steps:#?}");
    let drawn = browser.run(
        "const line = document.querySelector('#overlay polyline.request');
         return { points: line ? line.getAttribute('points').split(' ').length : 0,
                  replies: document.querySelectorAll('#overlay polyline.reply').length,
                  labels: [...document.querySelectorAll('#overlay text.change')].map(t => t.textContent),
                  answered: window.ovslab.trace.report.answered };",
        json!([]),
    );
    assert!(drawn["points"].as_u64().unwrap() >= 6, "{drawn}");
    assert_eq!(drawn["replies"], 1, "{drawn}");
    assert_eq!(drawn["answered"], true, "{drawn}");
    let labels: Vec<String> = serde_json::from_value(drawn["labels"].clone()).unwrap();
    assert!(labels.contains(&"→ VLAN 101".to_string()), "{labels:?}");
    assert!(labels.contains(&"→ VLAN 102".to_string()), "{labels:?}");
    // Step by step: the probe is on the hop shown.
    browser.run("document.getElementById('step-next').click()", json!([]));
    let current = browser.run(
        "return [document.querySelectorAll('#overlay circle.probe').length,
                 document.querySelector('#picture g.box.current')?.dataset.object]",
        json!([]),
    );
    assert_eq!(current, json!([1, "instance1"]));
    // The arrow keys step, the space bar plays (the probe moves by itself).
    let step = browser.run(
        "const key = k => document.body.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true}));
         key('ArrowRight'); key('ArrowRight'); key('ArrowLeft');
         const at = window.ovslab.step;
         key(' ');
         return at;",
        json!([]),
    );
    assert_eq!(step, json!(1));
    browser.wait_for(
        "the animation to move the probe",
        Duration::from_secs(5),
        "return window.ovslab.step >= 3",
    );
    browser.run(
        "document.getElementById('step-all').click();
         document.getElementById('trace-summary').scrollIntoView({block: 'start'});",
        json!([]),
    );
    screenshot(&browser, "ui-trace.png");
}

#[test]
#[ignore = "needs root"]
fn a_flow_broken_by_hand_turns_its_check_red_and_the_audit_marks_the_bridge() {
    require_root("a_flow_broken_by_hand_turns_its_check_red_and_the_audit_marks_the_bridge");
    // No audits yet: the daemon repairs a deleted flow as soon as its flow
    // monitor tells it, and the broken lab must stay broken for the checks.
    // A long --stop-grace: a stop the page's event stream held up would
    // take all of it.
    let mut lab = Lab::create_with(
        ovslab_topology::SEED_YAML,
        &["--audit-interval", "0", "--stop-grace", "60"],
    );
    lab.up();
    let ui = UiServer::start(&lab);
    let browser = open_page(&lab, &ui);
    let compute1 = format!("{}.compute1", lab.name);
    let repaired = "return [...document.querySelectorAll('#picture g.box.repaired')]
           .map(g => g.dataset.namespace + ' ' + g.querySelector('text').textContent)";
    assert_eq!(
        browser.run(repaired, json!([])),
        json!([]),
        "nothing repaired yet"
    );
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");

    let results = run_checks(&browser);
    let verdict = |name: &str| {
        results
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}: {results:?}"))
            .1
    };
    assert!(!verdict("same-network-across-nodes"), "{results:?}");
    assert!(verdict("same-node-stays-on-br-int"), "{results:?}");
    let red = browser.run(
        "return [...document.querySelectorAll('#checks li.fail')].map(li => li.dataset.check)",
        json!([]),
    );
    assert!(
        red.as_array()
            .unwrap()
            .contains(&json!("same-network-across-nodes")),
        "{red}"
    );

    // Selecting the red check draws its probe's path, lost on compute1.
    browser.run(
        "document.querySelector('#checks li[data-check=\"same-network-across-nodes\"]').click()",
        json!([]),
    );
    let lost = browser.wait_for(
        "the failed check's path",
        Duration::from_secs(30),
        "const g = document.querySelector('#picture g.box.lost');
         return g ? g.dataset.namespace + ' ' + g.querySelector('text').textContent : null",
    );
    assert_eq!(
        lost,
        json!(format!("{compute1} br-int")),
        "lost where the tag is not translated"
    );
    assert_eq!(browser.run(repaired, json!([])), json!([]));

    // The daemon again, now auditing (it keeps the lab across a stop): a
    // full audit puts the flow back, and the page, which follows the
    // daemon's events through the restart, marks the bridge.
    // The page's event stream does not hold the stop up.
    let stopping = std::time::Instant::now();
    lab.daemon.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "the stop took {:?}: the stream held it up",
        stopping.elapsed()
    );
    lab.daemon.restart(&["--audit-interval", "1"]);
    let restarted = std::time::Instant::now();
    let marked = browser.wait_for(
        "the repaired bridge marked",
        Duration::from_secs(60),
        &format!("{repaired}.filter(t => t.length).join(',') || null"),
    );
    assert_eq!(marked, json!(format!("{compute1} br-vlan")));
    eprintln!("marked {:?} after the restart", restarted.elapsed());
    let health = browser.run(
        "return document.getElementById('health').textContent",
        json!([]),
    );
    assert!(health.as_str().unwrap().contains("repaired"), "{health}");
    assert!(
        lab.flows("compute1", "br-vlan").contains("dl_vlan=1"),
        "the flow is back"
    );
}

/// The 10 × 10 lab (10 compute nodes, 100 instances): drawn whole, and the
/// page answers at once while zooming and tracing.
#[test]
#[ignore = "needs root"]
fn the_ten_by_ten_lab_stays_responsive() {
    require_root("the_ten_by_ten_lab_stays_responsive");
    let boxes = responsive(10, 10, "instance100");
    assert_eq!(boxes.len(), 100, "every instance drawn: {boxes:?}");
}

/// A node with more than 20 instances has them drawn as one box, so that
/// the 1000-instance lab (20 × 50) draws like a small one. Two nodes of 25
/// take the same path without bringing up 1000 instances beside the rest
/// of the suite (the 20 × 50 figures are in docs/performance.md).
#[test]
#[ignore = "needs root"]
fn a_crowded_node_has_its_instances_drawn_as_one_box() {
    require_root("a_crowded_node_has_its_instances_drawn_as_one_box");
    let boxes = responsive(2, 25, "instance50");
    assert_eq!(boxes.len(), 2, "one box per node: {boxes:?}");
    assert!(boxes.iter().all(|b| b == "25 instances"), "{boxes:?}");
}

/// Brings up the generated lab, opens the page, zooms and traces from
/// instance1 to `far`; the names of the instance boxes drawn.
fn responsive(computes: u32, per_node: u32, far: &str) -> Vec<String> {
    let lab = Lab::from_yaml(&ovslab_topology::generate::scale_topology(
        computes, per_node,
    ));
    let ui = UiServer::start(&lab);
    let started = std::time::Instant::now();
    let browser = open_page(&lab, &ui);
    // How long it took is printed, not asserted (figures belong in
    // benchmarks).
    let loaded = started.elapsed();
    let boxes = browser.run(
        "return [...document.querySelectorAll('#picture g.box[data-kind=\"instance\"]')]
           .map(g => g.dataset.object)",
        json!([]),
    );
    // Zooming: twenty wheel steps, each drawn in a frame or two.
    let ms = browser.run(
        "const p = document.getElementById('picture');
         const t0 = performance.now();
         for (let i = 0; i < 20; i++) {
           p.dispatchEvent(new WheelEvent('wheel', {deltaY: i < 10 ? -100 : 100, clientX: 300, clientY: 300, bubbles: true, cancelable: true}));
           document.querySelector('#picture svg').getBoundingClientRect();
         }
         return performance.now() - t0;",
        json!([]),
    );
    // A trace across the lab, drawn on the picture.
    browser.run(
        "document.getElementById('trace-from').value = 'instance1';
         document.getElementById('trace-to').value = arguments[0];
         document.getElementById('trace-run').click();",
        json!([far]),
    );
    let hops = browser.wait_for(
        "the trace",
        Duration::from_secs(60),
        "return document.querySelectorAll('#trace-steps li').length || null",
    );
    assert!(hops.as_u64().unwrap() > 10, "{hops}");
    let on_picture = browser.run(
        "return document.querySelector('#overlay polyline.request') !== null",
        json!([]),
    );
    assert_eq!(on_picture, json!(true));
    eprintln!(
        "{computes} x {per_node}: page ready in {loaded:?}, 20 zoom steps in {ms} ms, {hops} hops traced"
    );
    serde_json::from_value(boxes).unwrap()
}

/// A second seed lab on a test lab's daemon, removed on drop.
struct Other<'a> {
    lab: &'a Lab,
    name: String,
}

impl<'a> Other<'a> {
    fn up(lab: &'a Lab) -> Self {
        let name = format!("{}o", lab.name);
        let file = lab.daemon.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, rename_lab(ovslab_topology::SEED_YAML, &name)).unwrap();
        let other = Other { lab, name };
        other.lab.daemon.ovslab_ok(&["up", file.to_str().unwrap()]);
        other
    }
}

impl Drop for Other<'_> {
    fn drop(&mut self) {
        if self
            .lab
            .daemon
            .ovslab(&["down", &self.name])
            .status
            .success()
        {
            return;
        }
        // As `Lab`'s drop: nothing left behind, whatever `down` missed.
        for ns in lab_namespaces(&self.name) {
            let _ = run_raw("ip", &["netns", "del", &ns]);
        }
    }
}

/// The daemon's event stream, as `ovslab ui` reads it: one JSON line per
/// audit of the lab, ended when the lab is removed.
#[test]
#[ignore = "needs root"]
fn the_daemons_event_stream_has_each_audit_and_ends_with_its_lab() {
    require_root("the_daemons_event_stream_has_each_audit_and_ends_with_its_lab");
    let lab = Lab::seed_audited("0.3");
    let mut stream = std::os::unix::net::UnixStream::connect(&lab.daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "GET /v1/labs/{}/events HTTP/1.1\r\nHost: ovslabd\r\n\r\n",
        lab.name
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while reader.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/x-ndjson"), "{head}");
    // Chunked: a size line in hex, that many bytes, CRLF; size 0 ends the
    // body. The chunks carry the event lines (a size line is never read as
    // an event: `59` is JSON too).
    let mut next_chunk = move || {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        assert!(chunk.ends_with(b"\r\n"), "{chunk:?}");
        chunk.truncate(size);
        chunk
    };
    let mut body = Vec::new();
    let mut next_event = || loop {
        if let Some(end) = body.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = body.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(event["lab"], lab.name.as_str(), "{event}");
            return Some(event);
        }
        let chunk = next_chunk();
        if chunk.is_empty() {
            return None;
        }
        body.extend_from_slice(&chunk);
    };
    let first = next_event().expect("the first audit");
    assert_eq!(first["repairs"], json!([]), "{first}");
    // A flow deleted behind the daemon's back: the audit that puts it back
    // says so.
    lab.del_flows("compute1", "br-vlan", "in_port=phy-br-vlan,dl_vlan=1");
    let repaired = loop {
        let event = next_event().expect("an audit");
        assert!(event["audit"].as_u64() > first["audit"].as_u64(), "{event}");
        if event["repairs"] != json!([]) {
            break event;
        }
    };
    let repairs = repaired["repairs"].to_string();
    assert!(
        repairs.contains("compute1: br-vlan: add flow"),
        "{repaired}"
    );
    assert_eq!(repaired["error"], Value::Null);
    // Another lab on the daemon, audited every 0.3 s: its events do not
    // keep this lab's stream open once this lab is gone.
    let other = Other::up(&lab);
    lab.daemon.ovslab_ok(&["down", &lab.name]);
    // The audits in flight, then the body's end (the connection itself
    // may stay open for the next request).
    let started = std::time::Instant::now();
    while next_event().is_some() {}
    drop(other);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stream outlived its lab by {:?}",
        started.elapsed()
    );
}
