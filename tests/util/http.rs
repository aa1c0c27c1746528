//! Raw HTTP/1.1 for the tests over std sockets (tests must not depend on mcpd's
//! client): a one-request-per-connection client, and a proxy that records what passes
//! through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::DEADLINE;

/// A blocking HTTP GET returning JSON (tests must not depend on mcpd's client).
pub(crate) fn http_get_json(url: &str) -> Value {
    let body = http_get_text(url);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// A blocking HTTP GET returning the body as text.
pub(crate) fn http_get_text(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    request(authority, "GET", path, &[], None).body
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC message in the body: plain JSON, or the last SSE `data:` line that
    /// holds one.
    pub(crate) fn message(&self) -> Value {
        self.try_message()
            .unwrap_or_else(|| panic!("no JSON-RPC message in {self:?}"))
    }

    /// As `message`, or `None` when the stream ended without one (a server that died
    /// mid-answer).
    pub(crate) fn try_message(&self) -> Option<Value> {
        if let Ok(v) = serde_json::from_str(&self.body) {
            return Some(v);
        }
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
    }
}

/// One HTTP/1.1 request on a fresh connection (tests must not depend on mcpd's client).
pub(crate) fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    try_request(authority, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {authority}{path}: {e}"))
}

/// As [`request`], with connection failures (a dead server) as errors.
pub(crate) fn try_request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Reply> {
    let mut s = std::net::TcpStream::connect(authority)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {raw:?}"),
            )
        })?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A loopback HTTP proxy in front of an upstream that records every request whole,
/// body included, before forwarding it: the demo API records what reached it but not
/// bodies. One request per connection: it asks the upstream to close, so the answer it
/// relays tells the client not to reuse the connection.
pub(crate) struct RecordingProxy {
    /// `http://127.0.0.1:PORT`: point an upstream URL here.
    pub url: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl RecordingProxy {
    /// Forwards to `upstream` (`http://host:port`).
    pub(crate) fn start(upstream: &str) -> Self {
        let target = upstream
            .strip_prefix("http://")
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (target, log) = (target.clone(), log.clone());
                std::thread::spawn(move || proxy_one(stream, &target, &log));
            }
        });
        Self { url, seen }
    }

    /// Every request so far, in arrival order: method, path, query, headers (names in
    /// lowercase, sorted), body (JSON when it parses, else text; null when empty).
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

fn proxy_one(client: std::net::TcpStream, target: &str, log: &Mutex<Vec<Value>>) {
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(&client);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target_uri) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = std::collections::BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len = headers
        .get("content-length")
        .map_or(0, |n| n.parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    let (path, query) = target_uri
        .split_once('?')
        .unwrap_or((target_uri.as_str(), ""));
    log.lock().unwrap().push(json!({
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": if text.is_empty() { Value::Null } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        },
    }));

    let mut upstream = std::net::TcpStream::connect(target).unwrap();
    upstream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = format!("{method} {target_uri} HTTP/1.1\r\n");
    for (k, v) in &headers {
        match k.as_str() {
            "host" => head.push_str(&format!("host: {target}\r\n")),
            "connection" => {}
            _ => head.push_str(&format!("{k}: {v}\r\n")),
        }
    }
    head.push_str("connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes()).unwrap();
    upstream.write_all(&body).unwrap();
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).unwrap();
    (&client).write_all(&answer).unwrap();
}
