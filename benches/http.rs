//! Benchmark: mcpd over Streamable HTTP with 1, 16 and 64 concurrent clients, on one
//! replica and on two (no balancer: clients are split across them), against the same
//! requests sent straight to the upstream in the same run.
//!
//! Starts the bundled demo API in-process and `mcpd serve --http` (release build) with
//! bearer auth on, one token shared by the clients. Each client is an MCP session
//! (initialize, then `tools/call orders_export` in a loop) over its own keep-alive
//! connection. Prints calls/s, p50 and p99 per row, and the throughput of two replicas
//! against one. Limits and idempotency are off (state in memory per replica):
//! `benches/safety.rs` measures what they add. A last pair of rows sends every session
//! through HAProxy (round-robin, no affinity) to two replicas sharing a redis-server
//! (sessions are in it): each request may reach either replica.
//!
//! `cargo bench --bench http` (BENCH_N sets calls per row, default 4000). With
//! `BENCH_BASELINE=PATH` (another build of mcpd, e.g. main's), a replica of that binary
//! is measured too, in the same run, its rows interleaved with this build's.

// A benchmark is a test harness: a failed expect is its failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{Figures, Safety, bench_config, drive_workers};
use serde_json::{Value, json};

const FROM: &str = "2025-08-01";
const TO: &str = "2025-08-31";

/// `mcpd serve --http 127.0.0.1:0`; killed on drop.
struct Replica {
    child: Child,
    mcp_url: String,
}

impl Replica {
    fn start(config: &Path, api_url: &str, key: &str, extra: &[&str]) -> Self {
        Self::start_bin(env!("CARGO_BIN_EXE_mcpd"), config, api_url, key, extra)
    }

    fn start_bin(bin: &str, config: &Path, api_url: &str, key: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(["serve", "--no-watch", "--http", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(extra)
            .env("DEMO_API_URL", api_url)
            .env("MCPD_TOKEN_KEY", key)
            .env("MCPD_LOG", "warn,mcpd::mcp::http=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcpd");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mcp_url = loop {
            let line = lines.next().expect("mcpd exited").expect("stderr line");
            if let Some(at) = line.find("listening on http://") {
                break line[at + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .expect("url")
                    .to_owned();
            }
        };
        // Keep draining stderr so mcpd never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, mcp_url }
    }
}

impl Replica {
    /// HAProxy (Debian's package) round-robin over `backends`, no stickiness, as
    /// tests/balancer.rs runs it; its `/mcp` stands in for a replica's.
    fn balancer(backends: &[&Self], dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let addr = r
                    .mcp_url
                    .trim_start_matches("http://")
                    .trim_end_matches("/mcp");
                format!("  server r{i} {addr}\n")
            })
            .collect();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
                 timeout server 60s\nfrontend mcp\n  bind 127.0.0.1:{port}\n  \
                 default_backend mcpd\nbackend mcpd\n  balance roundrobin\n{servers}"
            ),
        )
        .expect("haproxy.cfg");
        let bin = if Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        wait_port(port);
        Self {
            child,
            mcp_url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// A redis-server without persistence on a free port; its `redis://` URL.
    fn redis() -> (Self, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_port(port);
        let url = format!("redis://127.0.0.1:{port}/");
        (
            Self {
                child,
                mcp_url: String::new(),
            },
            url,
        )
    }
}

fn wait_port(port: u16) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < end, "nothing listens on {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mcpd ARGS` and returns its stdout.
fn mcpd(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mcpd"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mcpd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An MCP session over HTTP: its own connection pool (one keep-alive connection).
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    url: String,
    id: String,
    bearer: String,
}

impl Session {
    async fn open(url: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .expect("client");
        let mut s = Self {
            http,
            url: url.to_owned(),
            id: String::new(),
            bearer: format!("Bearer {token}"),
        };
        let init = s
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"}}}),
            )
            .await;
        s.id = init.0.expect("session id");
        s.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        s
    }

    async fn post(&self, msg: &Value) -> (Option<String>, Option<Value>) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", &self.bearer)
            .body(msg.to_string());
        if !self.id.is_empty() {
            req = req.header("mcp-session-id", &self.id);
        }
        let resp = req.send().await.expect("send");
        assert!(resp.status().is_success(), "HTTP {}", resp.status());
        let id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.expect("body");
        let message = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .next_back()
            .or_else(|| serde_json::from_str(&body).ok());
        (id, message)
    }

    /// One call; `id` is unique in the run (requests of one session may overlap, and a
    /// JSON-RPC id must not be reused while its request is in flight).
    async fn call(&self, id: usize) {
        let (_, msg) = self
            .post(
                &json!({"jsonrpc": "2.0", "id": id + 1, "method": "tools/call", "params": {
                "name": "orders_export", "arguments": {"from": FROM, "to": TO}}}),
            )
            .await;
        let msg = msg.expect("a JSON-RPC response");
        assert_eq!(msg["result"]["isError"], json!(false), "{msg}");
    }
}

/// `n` calls from `clients` sessions spread round-robin over `replicas`.
async fn through_mcpd(replicas: &[&Replica], token: &str, n: usize, clients: usize) -> Figures {
    let mut sessions = Vec::with_capacity(clients);
    for c in 0..clients {
        let r = replicas[c % replicas.len()];
        sessions.push(Session::open(&r.mcp_url, token).await);
    }
    let sessions = Arc::new(sessions);
    // Client `w` keeps to session `w`: one call at a time, on one connection.
    drive_workers(n, clients, move |w, i| {
        let s = sessions[w % sessions.len()].clone();
        async move { s.call(i).await }
    })
    .await
}

/// `n` requests straight to the demo API from `clients` clients.
async fn direct(url: &str, n: usize, clients: usize) -> Figures {
    let pool: Vec<reqwest::Client> = (0..clients)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .build()
                .expect("client")
        })
        .collect();
    let pool = Arc::new(pool);
    let target = format!("{url}/orders?from={FROM}&to={TO}");
    drive_workers(n, clients, move |w, _| {
        let (client, target) = (pool[w % pool.len()].clone(), target.clone());
        async move {
            let body = client
                .get(&target)
                .send()
                .await
                .expect("send")
                .bytes()
                .await
                .expect("body");
            assert!(!body.is_empty());
        }
    })
    .await
}

fn row(label: &str, clients: usize, f: Figures) {
    println!(
        "{label:<26} {clients:>7} {:>11.0} {:>10.1} {:>10.1}",
        f.calls_per_s, f.p50_us, f.p99_us
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("demo API");
    let url = format!("http://{addr}");
    let config = bench_config(Safety::Off);
    let cfg = config.path().to_str().expect("utf-8 path");
    let keygen = mcpd(&["token", "keygen", "--kid", "bench"], &[]);
    let key = keygen
        .lines()
        .find_map(|l| l.strip_prefix("MCPD_TOKEN_KEY="))
        .expect("key")
        .to_owned();
    let token = mcpd(
        &[
            "token",
            "issue",
            "--config",
            cfg,
            "--subject",
            "agent:bench",
            "--scope",
            "*",
            "--ttl",
            "1h",
        ],
        &[("MCPD_TOKEN_KEY", &key)],
    )
    .trim()
    .to_owned();
    let a = Replica::start(config.path(), &url, &key, &[]);
    let b = Replica::start(config.path(), &url, &key, &[]);
    let open = Replica::start(config.path(), &url, &key, &["--no-auth"]);
    let baseline = std::env::var("BENCH_BASELINE")
        .ok()
        .map(|bin| Replica::start_bin(&bin, config.path(), &url, &key, &[]));

    println!(
        "mcpd HTTP benchmark: orders_export ({FROM}..{TO}), N={n} calls per row, bearer auth on, {} CPUs",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    println!(
        "{:<26} {:>7} {:>11} {:>10} {:>10}",
        "path", "clients", "calls/s", "p50 us", "p99 us"
    );
    let mut summary = Vec::new();
    let mut baselines = Vec::new();
    for clients in [1usize, 16, 64] {
        // Warm every path (connections, allocator) before measuring.
        direct(&url, n / 10, clients).await;
        through_mcpd(&[&a, &b], &token, n / 10, clients).await;
        let d = direct(&url, n, clients).await;
        let one = through_mcpd(&[&a], &token, n, clients).await;
        let base = match &baseline {
            Some(base) => {
                through_mcpd(&[base], &token, n / 10, clients).await;
                Some(through_mcpd(&[base], &token, n, clients).await)
            }
            None => None,
        };
        let two = through_mcpd(&[&a, &b], &token, n, clients).await;
        row("direct to upstream", clients, d);
        row("mcpd, 1 replica", clients, one);
        if let Some(base) = base {
            row("baseline mcpd, 1 replica", clients, base);
            baselines.push((clients, d, base, one));
        }
        row("mcpd, 2 replicas", clients, two);
        summary.push((clients, d, one, two));
    }
    let noauth = through_mcpd(&[&open], &token, n, 16).await;
    row("mcpd, 1 replica, no auth", 16, noauth);
    // Two replicas behind HAProxy, no affinity: sessions in a shared Redis.
    let (_redis, redis_url) = Replica::redis();
    let shared = bench_config(Safety::Off);
    let yaml = shared.path().join("mcpd.yaml");
    let text = std::fs::read_to_string(&yaml).expect("mcpd.yaml");
    std::fs::write(
        &yaml,
        text.replace("state: \"memory:\"", &format!("state: \"{redis_url}\"")),
    )
    .expect("mcpd.yaml");
    let (ra, rb) = (
        Replica::start(shared.path(), &url, &key, &[]),
        Replica::start(shared.path(), &url, &key, &[]),
    );
    let lb = Replica::balancer(&[&ra, &rb], shared.path());
    let mut balanced = Vec::new();
    for clients in [16usize, 64] {
        through_mcpd(&[&lb], &token, n / 10, clients).await;
        let f = through_mcpd(&[&lb], &token, n, clients).await;
        row("mcpd, 2 replicas, HAProxy", clients, f);
        balanced.push((clients, f));
    }
    println!();
    for (clients, d, one, two) in summary {
        println!(
            "{clients:>2} clients: 1 replica adds {:.0} us at p50 over direct ({:.2}x its calls/s); \
             2 replicas give {:.2}x the calls/s of 1",
            one.p50_us - d.p50_us,
            one.calls_per_s / d.calls_per_s,
            two.calls_per_s / one.calls_per_s
        );
    }
    for (clients, d, base, one) in baselines {
        println!(
            "{clients:>2} clients: the baseline adds {:.0} us at p50 over direct ({:.2}x its calls/s); \
             this build gives {:.2}x the baseline's calls/s",
            base.p50_us - d.p50_us,
            base.calls_per_s / d.calls_per_s,
            one.calls_per_s / base.calls_per_s
        );
    }
    for (clients, f) in balanced {
        println!(
            "{clients:>2} clients: 2 replicas behind HAProxy (round-robin, sessions in Redis): {:.0} calls/s, p50 {:.0} us",
            f.calls_per_s, f.p50_us
        );
    }
}
