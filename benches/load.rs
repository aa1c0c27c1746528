//! The Rust load driver: one MCP server (any command over stdio, or a Streamable HTTP
//! endpoint) or one upstream URL under N calls, K in flight, with a client that costs
//! as little as possible (raw JSON-RPC lines, no SDK), so the server is what is measured.
//!
//! ```text
//! cargo bench --bench load -- --n 5000 --k 16 --tool orders_export \
//!     --args '{"start":"2025-08-25","end":"2025-08-31"}' --label mcpd -- mcpd serve --config DIR
//! cargo bench --bench load -- --n 5000 --k 1 --ping --label ping -- mcpd serve --config DIR
//! cargo bench --bench load -- --n 5000 --k 16 --direct 'http://127.0.0.1:PORT/orders?from=a'
//! cargo bench --bench load -- --n 5000 --k 16 --http http://127.0.0.1:PORT/mcp --pid PID \
//!     --token TOKEN --tool orders_export --args '{...}'
//! ```
//!
//! Prints one line, in the kit's `mcp_load.py` format plus the server's CPU: `LABEL n= k=
//! calls/s= p50_ms= p99_ms= rss_mb= cold_ms= errors= cpu_us_per_call=`. CPU is the
//! server's user+system time over the timed calls (the sum of its threads'
//! `/proc/<pid>/task/*/schedstat`, nanoseconds), divided by the calls; RSS is its peak
//! (`VmHWM`); cold start is spawn to the `initialize` answer. Over HTTP, each of the K
//! clients is its own session on its own keep-alive connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, oneshot};

#[derive(Default)]
struct Args {
    n: usize,
    k: usize,
    tool: String,
    args: String,
    label: String,
    direct: Option<String>,
    http: Option<String>,
    token: Option<String>,
    pid: Option<u32>,
    ping: bool,
    cmd: Vec<String>,
}

fn parse() -> Args {
    let mut a = Args {
        n: 1000,
        k: 1,
        args: "{}".into(),
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--n" => a.n = val().parse().expect("--n"),
            "--k" => a.k = val().parse().expect("--k"),
            "--tool" => a.tool = val(),
            "--args" => a.args = val(),
            "--label" => a.label = val(),
            "--direct" => a.direct = Some(val()),
            "--http" => a.http = Some(val()),
            "--token" => a.token = Some(val()),
            "--pid" => a.pid = Some(val().parse().expect("--pid")),
            "--ping" => a.ping = true,
            // cargo bench passes --bench to harness = false targets
            "--bench" => {}
            "--" => {
                a.cmd = it.by_ref().collect();
                break;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// CPU time of every live thread of `pid`, nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A server over stdio, driven with raw JSON-RPC lines.
struct StdioServer {
    stdin: Mutex<tokio::process::ChildStdin>,
    pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next: AtomicU64,
}

impl StdioServer {
    async fn request(&self, method: &str, params: &Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut line = serde_json::to_vec(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .unwrap();
        line.push(b'\n');
        self.stdin
            .lock()
            .await
            .write_all(&line)
            .await
            .expect("write");
        rx.await.expect("the server closed its stdout")
    }
}

/// Whether an answer is not a successful result (no result at all counts as failed).
fn failed(r: &Value) -> bool {
    r.get("result").is_none() || r["result"]["isError"] == json!(true)
}

/// Runs `one(w, i)` for i in 0..n, `k` at a time, where `w` (0..k) is the worker making
/// the call: a worker makes one call at a time, so a client of its own never has two in
/// flight; returns each call's latency and the wall time.
async fn drive<F, Fut>(n: usize, k: usize, one: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..k)
        .map(|w| {
            let (one, next) = (one.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return lat;
                    }
                    let t = Instant::now();
                    one(w, i).await;
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    for w in workers {
        lat.extend(w.await.expect("worker"));
    }
    (lat, start.elapsed())
}

struct Run {
    lat: Vec<Duration>,
    wall: Duration,
    rss_mb: f64,
    cold_ms: f64,
    errors: usize,
    cpu_ns: u64,
}

async fn stdio(a: &Args) -> Run {
    let t0 = Instant::now();
    let (prog, rest) = a.cmd.split_first().expect("a server command after --");
    let mut child = tokio::process::Command::new(prog)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the server");
    let pid = child.id().expect("pid");
    let pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
    let stdout = child.stdout.take().expect("stdout");
    let p = pending.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::with_capacity(1 << 16, stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(id) = v.get("id").and_then(Value::as_u64)
                && let Some(tx) = p.lock().unwrap().remove(&id)
            {
                let _ = tx.send(v);
            }
        }
    });
    let server = Arc::new(StdioServer {
        stdin: Mutex::new(child.stdin.take().expect("stdin")),
        pending,
        next: AtomicU64::new(0),
    });
    let init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "load", "version": "1"}});
    server.request("initialize", &init).await;
    let cold_ms = t0.elapsed().as_secs_f64() * 1e3;
    server
        .stdin
        .lock()
        .await
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .expect("write");
    let (method, params) = if a.ping {
        ("ping", json!({}))
    } else {
        let args: Value = serde_json::from_str(&a.args).expect("--args is JSON");
        ("tools/call", json!({"name": a.tool, "arguments": args}))
    };
    let errors = Arc::new(AtomicUsize::new(0));
    let call = {
        let (server, errors, params) = (server.clone(), errors.clone(), Arc::new(params));
        move |_, _| {
            let (server, errors, params) = (server.clone(), errors.clone(), params.clone());
            async move {
                if failed(&server.request(method, &params).await) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // Warm up (connections, allocator, caches) before the timed calls.
    drive((a.n / 10).max(a.k), a.k, call.clone()).await;
    errors.store(0, Ordering::Relaxed);
    let cpu0 = cpu_ns(pid);
    let (lat, wall) = drive(a.n, a.k, call).await;
    let cpu = cpu_ns(pid).saturating_sub(cpu0);
    let rss_mb = peak_rss_mb(pid);
    drop(server);
    let _ = child.kill().await;
    Run {
        lat,
        wall,
        rss_mb,
        cold_ms,
        errors: errors.load(Ordering::Relaxed),
        cpu_ns: cpu,
    }
}

/// One Streamable HTTP session: its id and a client of its own (one connection).
async fn session(client: &reqwest::Client, url: &str, token: Option<&str>) -> Option<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "load", "version": "1"}}});
    let r = post(client, url, token, None, &init).await;
    let id = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    r.bytes().await.expect("initialize answer");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(client, url, token, id.as_deref(), &note)
        .await
        .bytes()
        .await
        .expect("initialized");
    id
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    session: Option<&str>,
    msg: &Value,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(msg);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.send().await.expect("POST")
}

/// The JSON-RPC answer in a body that is JSON or an SSE stream.
fn answer(body: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice(body) {
        return v;
    }
    let text = String::from_utf8_lossy(body);
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

async fn http(a: &Args, url: &str) -> Run {
    let args: Value = serde_json::from_str(&a.args).expect("--args is JSON");
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..a.k {
        let c = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let id = session(&c, url, a.token.as_deref()).await;
        clients.push(Arc::new((c, id)));
    }
    let cold_ms = t0.elapsed().as_secs_f64() * 1e3 / a.k as f64;
    let errors = Arc::new(AtomicUsize::new(0));
    let (url, token) = (Arc::new(url.to_owned()), Arc::new(a.token.clone()));
    let msg = Arc::new(if a.ping {
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    } else {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": a.tool, "arguments": args}})
    });
    let k = a.k;
    let call = {
        let errors = errors.clone();
        move |w: usize, i: usize| {
            let c = clients[w % k].clone();
            let (errors, url, token, msg) =
                (errors.clone(), url.clone(), token.clone(), msg.clone());
            async move {
                // Each request its own id: a session may have several in flight.
                let mut msg = (*msg).clone();
                msg["id"] = json!(i + 1);
                let r = post(&c.0, &url, token.as_deref(), c.1.as_deref(), &msg).await;
                let ok = r.status().is_success();
                let body = r.bytes().await.expect("body");
                if !ok || failed(&answer(&body)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // Each worker keeps to its own session and connection: with calls handed out by
    // index (i % k), two workers often shared a session, whose client then opened a
    // second connection and closed it after (one idle connection kept): connections came
    // and went during the run (about one per eight calls at 64 clients).
    let call = Arc::new(call);
    let warm = call.clone();
    drive((a.n / 10).max(a.k), a.k, move |w, i| warm(w, i)).await;
    errors.store(0, Ordering::Relaxed);
    let cpu0 = a.pid.map_or(0, cpu_ns);
    let timed = call.clone();
    let (lat, wall) = drive(a.n, a.k, move |w, i| timed(w, i)).await;
    let cpu = a.pid.map_or(0, cpu_ns).saturating_sub(cpu0);
    Run {
        lat,
        wall,
        rss_mb: a.pid.map_or(0.0, peak_rss_mb),
        cold_ms,
        errors: errors.load(Ordering::Relaxed),
        cpu_ns: cpu,
    }
}

async fn direct(a: &Args, url: &str) -> Run {
    let clients: Vec<reqwest::Client> = (0..a.k)
        .map(|_| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .expect("client")
        })
        .collect();
    let (k, url) = (a.k, Arc::new(url.to_owned()));
    let errors = Arc::new(AtomicUsize::new(0));
    let call = {
        let errors = errors.clone();
        move |w: usize, _: usize| {
            let (c, url, errors) = (clients[w % k].clone(), url.clone(), errors.clone());
            async move {
                let r = c.get(url.as_str()).send().await.expect("GET");
                if !r.status().is_success() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                r.bytes().await.expect("body");
            }
        }
    };
    let call = Arc::new(call);
    let warm = call.clone();
    drive((a.n / 10).max(a.k), a.k, move |w, i| warm(w, i)).await;
    errors.store(0, Ordering::Relaxed);
    let (lat, wall) = drive(a.n, a.k, move |w, i| call(w, i)).await;
    Run {
        lat,
        wall,
        rss_mb: 0.0,
        cold_ms: 0.0,
        errors: errors.load(Ordering::Relaxed),
        cpu_ns: 0,
    }
}

#[tokio::main]
async fn main() {
    let a = parse();
    let run = match (&a.direct, &a.http) {
        (Some(url), _) => direct(&a, url).await,
        (None, Some(url)) => http(&a, url).await,
        (None, None) => stdio(&a).await,
    };
    let mut lat = run.lat;
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let label = if !a.label.is_empty() {
        a.label.clone()
    } else if a.direct.is_some() {
        "direct".to_owned()
    } else {
        a.cmd.first().cloned().unwrap_or_else(|| "http".to_owned())
    };
    println!(
        "{label} n={} k={} calls/s={:.0} p50_ms={:.3} p99_ms={:.3} rss_mb={:.1} cold_ms={:.0} errors={} cpu_us_per_call={:.1}",
        a.n,
        a.k,
        a.n as f64 / run.wall.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        run.rss_mb,
        run.cold_ms,
        run.errors,
        run.cpu_ns as f64 / 1e3 / a.n as f64,
    );
}
