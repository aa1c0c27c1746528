//! An API mcpd has never seen, for the new-user tests: a loopback HTTP server that
//! answers every request with one JSON body and records what it was sent (method,
//! path, query as sent, headers). Standard library only, so it shares no code with mcpd.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::DEADLINE;

/// A running stub; its threads end with the test process.
pub(crate) struct StubApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl StubApi {
    /// Answers every request with `200` and `body`.
    pub(crate) fn start(body: Value) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (log, body) = (log.clone(), body.clone());
                std::thread::spawn(move || answer(stream, &body, &log));
            }
        });
        Self { url, seen }
    }

    /// Every request so far: `{method, path, query, headers}` (header names lowercase).
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: std::net::TcpStream, body: &str, log: &Mutex<Vec<Value>>) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = serde_json::Map::new();
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        let k = k.trim().to_ascii_lowercase();
        if k == "content-length" {
            len = v.trim().parse().unwrap();
        }
        headers.insert(k, json!(v.trim()));
    }
    let mut sent = vec![0u8; len];
    reader.read_exact(&mut sent).unwrap();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    log.lock().unwrap().push(json!({
        "method": method, "path": path, "query": query, "headers": headers,
    }));
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(reply.as_bytes()).unwrap();
}
