//! Just enough W3C WebDriver (JSON over HTTP/1.1) to drive Debian's
//! headless Chromium through `chromedriver`: a session, a page, scripts,
//! cookies, screenshots. Hand-written: the tests use seven endpoints, and
//! a client crate would bring a second HTTP stack and TLS for them
//! (docs/design.md, "The web page").
//!
//! chromedriver is started here in a process group of its own, and on
//! drop the session is closed and that group killed (by the driver's pid),
//! so no Chromium outlives a test, even one that failed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running `chromedriver` with one headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

/// A free TCP port on loopback (taken by whoever binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Browser {
    /// chromedriver on a free loopback port, and a headless Chromium of
    /// `width`×`height` (its profile under `dir`).
    pub fn start(dir: &Path, width: u32, height: u32) -> Browser {
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        // A process group of its own: Chromium and its helpers are in it,
        // and go with it on drop.
        let driver = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chromedriver (make deps installs chromium-driver)");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        crate::wait_until(Duration::from_secs(20), "chromedriver listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let profile = dir.join("chromium-profile");
        let answer = browser.call(
            "POST",
            "/session",
            Some(json!({
                "capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--no-first-run",
                            "--disable-extensions", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            // No crash handler: it would leave the group.
                            "--disable-breakpad", "--disable-crash-reporter",
                            "--force-device-scale-factor=1",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", profile.display()),
                        ]
                    }
                }}
            })),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        // The window's frame takes some of its size: make the page itself
        // `width`×`height`.
        let inner = browser.run(
            "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]",
            json!([]),
        );
        let extra = |k: usize| inner[k].as_u64().unwrap_or(0) as u32;
        browser.call(
            "POST",
            &browser.session_path("/window/rect"),
            Some(json!({ "width": width + extra(0), "height": height + extra(1) })),
        );
        browser
    }

    /// One WebDriver request; its `value`. Panics on an error answer.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("reach chromedriver");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let answer = read_answer(&mut stream);
        let (status, body) = split_answer(&answer);
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&body)));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads an address and waits for the page.
    pub fn open(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something other than null or false.
    pub fn wait_for(&self, what: &str, within: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.run(script, json!([]));
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "waited {within:?} for {what}; the page says: {}",
                self.run(
                    "return document.body ? document.body.innerText.slice(0, 2000) : ''",
                    json!([])
                )
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of the cookie `name` the page's site set, HttpOnly or not
    /// (WebDriver sees what the page's scripts cannot).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let all = self.call("GET", &self.session_path("/cookie"), None);
        all.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(String::from)
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", &self.session_path("/screenshot"), None);
        base64_decode(b64.as_str().expect("base64 PNG"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes Chromium; best effort, the driver goes next anyway.
            let path = self.session_path("");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &path, None)
            }));
        }
        // SAFETY: signalling the process group of the chromedriver this
        // fixture started (its pid is the group's id, and it is not reaped
        // yet, so not reused): it and the Chromium it ran.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

/// One whole HTTP/1.1 answer: up to its `Content-Length`, or to the end
/// of the connection (chromedriver keeps it open despite `Connection:
/// close`).
pub fn read_answer(stream: &mut impl Read) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok());
            if let Some(length) = length
                && answer.len() >= end + 4 + length
            {
                answer.truncate(end + 4 + length);
                return answer;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading an HTTP answer: {e}"),
        }
    }
}

/// The status code and body of an HTTP/1.1 answer (`Connection: close`;
/// a chunked body is joined).
pub fn split_answer(answer: &[u8]) -> (u16, Vec<u8>) {
    let text = answer;
    let end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header");
    let head = String::from_utf8_lossy(&text[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let mut body = text[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (k, d) in chunk.iter().enumerate() {
            n |= d << (18 - 6 * k);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_and_chunked_answers_decode() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
        assert_eq!(super::base64_decode("YWJj"), b"abc");
        let (status, body) =
            super::split_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert_eq!((status, body.as_slice()), (200, b"abcde".as_slice()));
    }
}
