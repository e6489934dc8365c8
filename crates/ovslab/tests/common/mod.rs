//! A fake ovslabd for the command line's tests: a Unix socket answering
//! `GET`/`POST`/`DELETE` requests by path from a table of canned JSON, and
//! recording each request as `METHOD PATH`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use assert_cmd::Command;

/// A fake ovslabd (see the module).
pub struct FakeDaemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    asked: Arc<Mutex<Vec<String>>>,
}

impl FakeDaemon {
    pub fn new(tag: &str, answers: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("ovslab-fake-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("s.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let answers: Vec<(String, String)> = answers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut words = request_line.split_whitespace();
                let asked = format!("{} {}", words.next().unwrap(), words.next().unwrap());
                log.lock().unwrap().push(asked.clone());
                let (status, body) = match answers.iter().find(|(k, _)| *k == asked) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => (
                        "404 Not Found",
                        format!(r#"{{"error":"the fake knows no {asked}"}}"#),
                    ),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeDaemon { dir, socket, asked }
    }

    pub fn ovslab(&self, args: &[&str]) -> std::process::Output {
        Command::cargo_bin("ovslab")
            .unwrap()
            .env("OVSLAB_SOCKET", &self.socket)
            .env_remove("NO_COLOR")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
