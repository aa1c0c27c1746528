//! Shared by the benchmarks: latency figures and a raw JSON-RPC driver for `mcpd serve`
//! over stdio (no SDK on the client side, so the client costs as little as possible).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, mpsc, oneshot};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    pub calls_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub(crate) fn figures(mut lat: Vec<Duration>, wall: Duration) -> Figures {
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

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// `mcpd serve` over stdio, driven with raw JSON-RPC.
pub(crate) struct Mcpd {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
    notes: Mutex<mpsc::UnboundedReceiver<Value>>,
}

impl Mcpd {
    /// Starts `mcpd serve --config DIR` against the demo API at `api_url`.
    pub(crate) async fn start(api_url: &str, config: &Path) -> Self {
        Self::start_with(api_url, config, &[], None).await
    }

    /// As `start`, with extra environment variables and mcpd's stderr sent to a file.
    pub(crate) async fn start_with(
        api_url: &str,
        config: &Path,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcpd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("DEMO_API_URL", api_url)
            .env("MCPD_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcpd");
        let stdin = Arc::new(Mutex::new(child.stdin.take().expect("stdin")));
        let stdout = child.stdout.take().expect("stdout");
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&line).expect("json line");
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    let _ = notes_tx.send(v);
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
            notes: Mutex::new(notes),
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

    pub(crate) async fn send(&self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        let mut w = self.stdin.lock().await;
        w.write_all(line.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
    }

    pub(crate) async fn request(&self, method: &str, params: Value) -> Value {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id, tx);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        rx.await.expect("response")
    }

    /// Waits for the next notification with `method`, skipping others.
    pub(crate) async fn notification(&self, method: &str, timeout: Duration) -> Option<Value> {
        let mut notes = self.notes.lock().await;
        tokio::time::timeout(timeout, async {
            while let Some(v) = notes.recv().await {
                if v["method"] == method {
                    return Some(v);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Drops notifications received so far.
    pub(crate) async fn clear_notifications(&self) {
        let mut notes = self.notes.lock().await;
        while notes.try_recv().is_ok() {}
    }

    pub(crate) fn peak_rss_kb(&self) -> u64 {
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

/// Runs `n` calls of `call(i)`, `inflight` at a time, and times each.
pub(crate) async fn drive<F, Fut>(n: usize, inflight: usize, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    drive_workers(n, inflight, move |_, i| call(i)).await
}

/// Runs `n` calls of `call(w, i)`, `inflight` at a time, and times each; `w` (0..inflight)
/// is the worker making the call, one call at a time: a client of the worker's own never
/// has two calls in flight (with calls handed out by index alone, two workers often
/// shared a client, which then opened a second connection and closed it after).
pub(crate) async fn drive_workers<F, Fut>(n: usize, inflight: usize, call: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..inflight {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = std::time::Instant::now();
                call(w, i).await;
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

/// How a benchmark's copy of the shipped config treats limits, budgets and idempotency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Removed: no idempotency keys, limits, budgets or stop rules; state in memory.
    Off,
    /// Kept, with limits raised so every call is counted but none is refused; state in
    /// the embedded file.
    Counted,
    /// As `Counted`, without the write's idempotency key.
    Unkeyed,
    /// Rate limits and stop rules only (no budgets, no idempotency keys), raised as in
    /// `Counted`; state in the embedded file.
    RatesOnly,
}

/// The median of `runs` figures by calls/s (p50 and p99 of that same run).
pub(crate) fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.calls_per_s.total_cmp(&b.calls_per_s));
    runs[runs.len() / 2]
}

/// The 1-minute load average, to print beside figures taken on a shared machine.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A copy of the shipped config for benchmarks (the shipped limits would refuse a load
/// test, which is what they are for).
pub(crate) fn bench_config(safety: Safety) -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let read = |f: &str| std::fs::read_to_string(repo.join(f)).expect("read shipped config");
    let mut server = read("mcpd.yaml");
    let mut policies = read("policies.yaml");
    let mut flag = read("tools.d/flag.set.yaml");
    let mut orders = read("tools.d/orders.export.yaml");
    match safety {
        Safety::Off => {
            server.push_str("\nstate: \"memory:\"\n");
            policies = policies
                .split("\n# Budgets")
                .next()
                .unwrap_or_default()
                .to_owned();
            flag = flag
                .split("\n# One key, one write")
                .next()
                .unwrap_or_default()
                .to_owned();
            orders = orders
                .split("\nlimits:")
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        Safety::Counted | Safety::Unkeyed | Safety::RatesOnly => {
            for (from, to) in [
                ("cost: 5.00", "cost: 1000000"),
                ("calls: 200", "calls: 100000000"),
                ("max_calls: 300/min", "max_calls: 100000000/min"),
                ("repeats: 10/min", "repeats: 100000000/min"),
            ] {
                policies = policies.replace(from, to);
            }
            for (from, to) in [
                ("rate: 30/min", "rate: 100000000/min"),
                ("total_rate: 120/min", "total_rate: 100000000/min"),
                ("concurrency: 4", "concurrency: 1000"),
            ] {
                flag = flag.replace(from, to);
            }
            orders = orders
                .replace("rate: 60/min", "rate: 100000000/min")
                .replace("concurrency: 8", "concurrency: 1000");
            if safety != Safety::Counted {
                let (head, rest) = flag.split_once("\n# One key, one write").expect("key");
                let tail = rest.split_once("\nlimits:").expect("limits").1;
                flag = format!("{head}\nlimits:{tail}");
            }
            if safety == Safety::RatesOnly {
                let (head, rest) = policies.split_once("\n# Budgets").expect("budgets");
                let stop = rest.split_once("\n# Stop rules").expect("stop").1;
                policies = format!("{head}\n# Stop rules{stop}");
            }
        }
    }
    std::fs::write(dir.path().join("mcpd.yaml"), server).expect("write");
    std::fs::write(dir.path().join("policies.yaml"), policies).expect("write");
    std::fs::create_dir(dir.path().join("tools.d")).expect("tools.d");
    std::fs::write(dir.path().join("tools.d/flag.set.yaml"), flag).expect("write");
    std::fs::write(dir.path().join("tools.d/orders.export.yaml"), orders).expect("write");
    dir
}

/// An engine on a config directory, with the state store it names.
pub(crate) async fn engine_for(dir: &Path, api_url: &str) -> Arc<mcpd::engine::Engine> {
    let vars = mcpd::config::Vars::from_env().with("DEMO_API_URL", api_url);
    let settle = mcpd::config::Settle::IMMEDIATE;
    let (loaded, diags) = mcpd::config::load_dir_with(dir, &vars, None, &settle);
    assert!(diags.is_empty(), "{diags}");
    let catalog = mcpd::catalog::Catalog::compile(&loaded, &vars).expect("config compiles");
    let spec = loaded
        .server
        .1
        .state
        .clone()
        .unwrap_or_else(|| format!("file:{}", dir.join(".mcpd/state.redb").display()));
    let store = mcpd::store::connect(&spec).await.expect("state store");
    Arc::new(mcpd::engine::Engine::new(catalog, store))
}
