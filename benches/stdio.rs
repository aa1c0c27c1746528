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

#[path = "common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use common::{Figures, Mcpd, Safety, bench_config, drive, engine_for, figures};
use serde_json::json;

const FROM: &str = "2025-08-01";
const TO: &str = "2025-08-31";

/// N requests straight to the demo API, `inflight` at a time.
async fn direct(url: &str, n: usize, inflight: usize) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let target = format!("{url}/orders?from={FROM}&to={TO}");
    drive(n, inflight, move |_| {
        let (client, target) = (client.clone(), target.clone());
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

async fn through_mcpd(m: &Arc<Mcpd>, n: usize, inflight: usize) -> Figures {
    let m = m.clone();
    drive(n, inflight, move |_| {
        let m = m.clone();
        async move {
            let r = m
                .request(
                    "tools/call",
                    json!({"name": "orders_export", "arguments": {"from": FROM, "to": TO}}),
                )
                .await;
            assert_eq!(r["result"]["isError"], json!(false), "{r}");
        }
    })
    .await
}

/// The same calls through the engine in-process: the pipeline without the transport.
async fn through_engine(engine: &Arc<mcpd::engine::Engine>, n: usize, inflight: usize) -> Figures {
    let engine = engine.clone();
    drive(n, inflight, move |_| {
        let engine = engine.clone();
        async move {
            let args = json!({"from": FROM, "to": TO});
            let r = engine
                .call(
                    "orders_export",
                    args.as_object().cloned(),
                    &mcpd::engine::CallContext::default(),
                )
                .await
                .expect("known tool");
            assert!(r.outcome.is_ok());
        }
    })
    .await
}

fn row(label: &str, inflight: usize, f: Figures) {
    println!(
        "{label:<22} {inflight:>9} {:>11.0} {:>10.1} {:>10.1}",
        f.calls_per_s, f.p50_us, f.p99_us
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("demo API");
    let url = format!("http://{addr}");
    // The shipped config without its limits (they would refuse a load test) and with
    // state in memory: this measures the pipeline and the transport. benches/safety.rs
    // measures what idempotency, limits and budgets add.
    let plain = bench_config(Safety::Off);
    let mcpd = Arc::new(Mcpd::start(&url, plain.path()).await);
    let engine = engine_for(plain.path(), &url).await;

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
    // Observability on: JSON call logs at info (written to a file), the signed audit log,
    // and every span exported over OTLP/HTTP to a sink on loopback that counts the bytes.
    let exported = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = {
        let exported = exported.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                exported.fetch_add(body.len(), std::sync::atomic::Ordering::Relaxed);
                async { "" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let observed_dir = bench_config(Safety::Off);
    let server = std::fs::read_to_string(observed_dir.path().join("mcpd.yaml")).expect("read");
    std::fs::write(
        observed_dir.path().join("mcpd.yaml"),
        format!("{server}audit:\n  path: audit.jsonl\ntelemetry:\n  otlp:\n    endpoint: http://{sink}\n"),
    )
    .expect("write");
    let observed = Arc::new(
        Mcpd::start_with(
            &url,
            observed_dir.path(),
            &[
                ("MCPD_AUDIT_KEY", "bench-key-0123456789abcdef0123456789"),
                ("MCPD_LOG", "info,rmcp=warn"),
                ("MCPD_LOG_FORMAT", "json"),
            ],
            Some(&observed_dir.path().join("mcpd.log")),
        )
        .await,
    );
    println!();
    println!(
        "observability: JSON call logs at info, the signed audit log and OTLP span export, on vs off"
    );
    for inflight in [1usize, 16] {
        through_mcpd(&observed, n / 10, inflight).await;
        let off = through_mcpd(&mcpd, n, inflight).await;
        let on = through_mcpd(&observed, n, inflight).await;
        row("mcpd, observability off", inflight, off);
        row("mcpd, observability on", inflight, on);
        println!(
            "in flight {inflight:>2}: observability costs {:.1} us at p50; throughput {:.2}x",
            on.p50_us - off.p50_us,
            on.calls_per_s / off.calls_per_s
        );
    }

    // Give the batch exporter a moment, then show that spans did flow.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    println!(
        "OTLP sink received {} KB of spans",
        exported.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );

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
