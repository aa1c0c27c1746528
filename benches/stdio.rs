//! Benchmark: what mcpd adds to a call, over stdio, against the same requests sent

//! straight to the upstream in the same run.
//!
//! Starts the bundled demo API in-process, then for 1 and 16 calls in flight:
//! N `GET /orders` straight to the API (the baseline), and N `tools/call orders_export`
//! through `mcpd serve` (release build) over stdio. Prints calls/s, p50 and p99 of both,
//! the added latency at p50 and the throughput ratio, and mcpd's peak RSS.
//!
//! `cargo bench --bench stdio` (BENCH_N sets N, default 2000).

// A benchmark is a test harness: a failed expect is its failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, oneshot};

const FROM: &str = "2025-08-01";
const TO: &str = "2025-08-31";

#[derive(Debug, Clone, Copy)]
struct Figures {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figures(mut lat: Vec<Duration>, wall: Duration) -> Figures {
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Figures {
        calls_per_s: lat.len() as f64 / wall.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// N requests straight to the demo API, `inflight` at a time.
async fn direct(url: &str, n: usize, inflight: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let target = format!("{url}/orders?from={FROM}&to={TO}");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (client, target, next) = (client.clone(), target.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let body = client
                    .get(&target)
                    .send()
                    .await
                    .expect("send")
                    .bytes()
                    .await
                    .expect("body");
                assert!(!body.is_empty());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    figures(lat, started.elapsed())
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// `mcpd serve` over stdio, driven with raw JSON-RPC.
struct Mcpd {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
}

impl Mcpd {
    async fn start(api_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcpd"))
            .arg("serve")
            .arg("--config")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .env("DEMO_API_URL", api_url)
            .env("MCPD_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcpd");
        let stdin = Arc::new(Mutex::new(child.stdin.take().expect("stdin")));
        let stdout = child.stdout.take().expect("stdout");
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).expect("json line");
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                if let Some(tx) = p.lock().await.remove(&id) {
                    let _ = tx.send(v);
                }
            }
        });
        let m = Self {
            child,
            stdin,
            pending,
            next_id: 1.into(),
        };
        m.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}),
        )
        .await;
        m.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        m
    }

    async fn send(&self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        let mut w = self.stdin.lock().await;
        w.write_all(line.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
    }

    async fn request(&self, method: &str, params: Value) -> Value {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        rx.await.expect("response")
    }

    fn peak_rss_kb(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

async fn through_mcpd(m: &Arc<Mcpd>, n: usize, inflight: usize) -> Figures {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (m, next) = (m.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let r = m
                    .request(
                        "tools/call",
                        json!({"name": "orders_export", "arguments": {"from": FROM, "to": TO}}),
                    )
                    .await;
                assert_eq!(r["result"]["isError"], json!(false), "{r}");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    figures(lat, started.elapsed())
}

/// The same calls through the engine in-process: the pipeline without the transport.
async fn through_engine(engine: &Arc<mcpd::engine::Engine>, n: usize, inflight: usize) -> Figures {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..inflight {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let args = json!({"from": FROM, "to": TO});
                let t = Instant::now();
                let r = engine
                    .call("orders_export", args.as_object().cloned())
                    .await
                    .expect("known tool");
                assert!(r.outcome.is_ok());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    figures(lat, started.elapsed())
}

fn row(label: &str, inflight: usize, f: Figures) {
    println!(
        "{label:<22} {inflight:>9} {:>11.0} {:>10.1} {:>10.1}",
        f.calls_per_s, f.p50_us, f.p99_us
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("demo API");
    let url = format!("http://{addr}");
    let mcpd = Arc::new(Mcpd::start(&url).await);
    let vars = mcpd::config::Vars::from_env().with("DEMO_API_URL", &url);
    let (loaded, diags) = mcpd::config::load_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(diags.is_empty(), "{diags}");
    let catalog = mcpd::catalog::Catalog::compile(&loaded, &vars).expect("shipped config compiles");
    let engine = Arc::new(mcpd::engine::Engine::new(catalog));

    println!("mcpd stdio benchmark: orders_export ({FROM}..{TO}), N={n} calls per row");
    println!(
        "{:<22} {:>9} {:>11} {:>10} {:>10}",
        "path", "in flight", "calls/s", "p50 us", "p99 us"
    );
    let mut summary = Vec::new();
    for inflight in [1usize, 16] {
        // Warm both paths (connections, allocator) before measuring.
        direct(&url, n / 10, inflight).await;
        through_mcpd(&mcpd, n / 10, inflight).await;
        through_engine(&engine, n / 10, inflight).await;
        let d = direct(&url, n, inflight).await;
        let e = through_engine(&engine, n, inflight).await;
        let m = through_mcpd(&mcpd, n, inflight).await;
        row("direct to upstream", inflight, d);
        row("engine (in-process)", inflight, e);
        row("through mcpd (stdio)", inflight, m);
        summary.push((inflight, d, m));
    }
    let t = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        mcpd.request("ping", json!({})).await;
        lat.push(t.elapsed());
    }
    row("ping over stdio", 1, figures(lat, t.elapsed()));
    println!();
    for (inflight, d, m) in summary {
        println!(
            "in flight {inflight:>2}: mcpd adds {:.1} us at p50 ({:.1} us at p99); throughput {:.2}x of direct",
            m.p50_us - d.p50_us,
            m.p99_us - d.p99_us,
            m.calls_per_s / d.calls_per_s
        );
    }
    println!(
        "mcpd peak RSS: {:.1} MB",
        mcpd.peak_rss_kb() as f64 / 1024.0
    );
}
