//! Benchmark: hot reload. Time from a file write to `notifications/tools/list_changed`
//! at the client, with 10 and 1,000 tool files; and calls/s through `mcpd serve` while a
//! tool file changes every 100 ms, against the same load with no reloads, counting calls
//! that failed (target: none).
//!
//! `cargo bench --bench reload` (RELOAD_ROUNDS sets rounds per size, default 8).
//
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
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Mcpd;
use serde_json::json;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A config dir with the shipped files and `n` extra copies of orders.export.
fn config_with(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mcpd.yaml", "policies.yaml"] {
        std::fs::copy(Path::new(REPO).join(f), dir.path().join(f)).unwrap();
    }
    let tools = dir.path().join("tools.d");
    std::fs::create_dir(&tools).unwrap();
    let orders =
        std::fs::read_to_string(Path::new(REPO).join("tools.d/orders.export.yaml")).unwrap();
    std::fs::write(tools.join("orders.export.yaml"), &orders).unwrap();
    for i in 1..n {
        let t = orders.replace("name: orders.export", &format!("name: orders.export{i:04}"));
        std::fs::write(tools.join(format!("orders.export{i:04}.yaml")), t).unwrap();
    }
    dir
}

fn touch(dir: &Path, round: usize) {
    let p = dir.join("tools.d/orders.export.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    let (head, _) = text.split_once("\n#round").unwrap_or((&text, ""));
    std::fs::write(&p, format!("{head}\n#round {round}\n")).unwrap();
}

async fn reload_latency(url: &str, n: usize, rounds: usize) {
    let dir = config_with(n);
    let mcpd = Mcpd::start(url, dir.path()).await;
    let mut lat = Vec::new();
    for round in 0..rounds {
        mcpd.clear_notifications().await;
        let t = Instant::now();
        touch(dir.path(), round);
        mcpd.notification("notifications/tools/list_changed", Duration::from_secs(10))
            .await
            .expect("list_changed within 10 s");
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{n:>5} tool files: write -> list_changed p50 {:.0} ms, max {:.0} ms ({rounds} rounds, debounce {} ms)",
        ms(lat[lat.len() / 2]),
        ms(*lat.last().unwrap()),
        mcpd::reload::DEBOUNCE.as_millis()
    );
}

/// Calls/s with 4 in flight for `secs`, optionally touching a file every 100 ms.
async fn load(url: &str, reloading: bool, secs: u64) -> (f64, usize, usize) {
    let dir = config_with(10);
    let mcpd = Arc::new(Mcpd::start(url, dir.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let toucher = {
        let (stop, path) = (stop.clone(), dir.path().to_path_buf());
        tokio::spawn(async move {
            let mut round = 0;
            while reloading && !stop.load(Ordering::Relaxed) {
                touch(&path, round);
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            round
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (mcpd, stop, ok, failed) = (mcpd.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = mcpd
                    .request("tools/call", json!({"name": "orders_export", "arguments": {"from": "2025-08-01", "to": "2025-08-31"}}))
                    .await;
                if r["result"]["isError"] == json!(false) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let reloads = toucher.await.unwrap();
    let ok = ok.load(Ordering::Relaxed);
    (
        ok as f64 / started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        reloads,
    )
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("RELOAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let url = format!("http://{addr}");
    println!("mcpd reload benchmark");
    for n in [10, 1000] {
        reload_latency(&url, n, rounds).await;
    }
    let secs = 3;
    let (base, base_failed, _) = load(&url, false, secs).await;
    let (during, failed, reloads) = load(&url, true, secs).await;
    println!(
        "calls/s, 4 in flight, {secs} s: {base:.0} without reloads ({base_failed} failed), {during:.0} while reloading every 100 ms ({reloads} file writes, {failed} failed); ratio {:.2}",
        during / base
    );
}
