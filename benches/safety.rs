//! What safe writes and spend control cost: calls/s and latency through the engine with
//! idempotency keys, rate limits, budgets and stop rules counted in the embedded state
//! file, against the same calls with all of them off, and straight to the upstream, in
//! one run. `BENCH_N` sets the calls per row (default 1000).

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

use common::{Figures, Safety, bench_config, drive, engine_for};
use serde_json::json;

fn row(label: &str, inflight: usize, f: Figures) {
    println!(
        "{label:<34} {inflight:>9} {:>10.0} {:>10.1} {:>10.1}",
        f.calls_per_s, f.p50_us, f.p99_us
    );
}

async fn direct_writes(url: &str, n: usize, inflight: usize, run: usize) -> Figures {
    // The baseline client: plain reqwest, as a hand-written server would use.
    #[allow(clippy::disallowed_methods)]
    let client = reqwest::Client::new();
    let url = url.to_owned();
    drive(n, inflight, move |i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .put(format!("{url}/flags/staging/d{run}_{i}"))
                .json(&json!({"percent": 5}))
                .send()
                .await
                .expect("send");
            assert!(r.status().is_success());
            r.bytes().await.expect("body");
        }
    })
    .await
}

async fn writes(
    engine: &Arc<mcpd::engine::Engine>,
    n: usize,
    inflight: usize,
    run: usize,
) -> Figures {
    let engine = engine.clone();
    drive(n, inflight, move |i| {
        let engine = engine.clone();
        async move {
            let args = json!({"env": "staging", "name": format!("b{run}_{i}"), "percent": 5});
            let r = engine
                .call("flag.set", args.as_object().cloned(), &Default::default())
                .await
                .expect("known tool");
            assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        }
    })
    .await
}

async fn reads(engine: &Arc<mcpd::engine::Engine>, n: usize, inflight: usize) -> Figures {
    let engine = engine.clone();
    drive(n, inflight, move |_| {
        let engine = engine.clone();
        async move {
            let args = json!({"from": "2025-08-01", "to": "2025-08-31"});
            let r = engine
                .call(
                    "orders.export",
                    args.as_object().cloned(),
                    &Default::default(),
                )
                .await
                .expect("known tool");
            assert!(r.outcome.is_ok(), "{:?}", r.outcome);
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("demo API");
    let url = format!("http://{addr}");
    let off_dir = bench_config(Safety::Off);
    let on_dir = bench_config(Safety::Counted);
    let off = engine_for(off_dir.path(), &url).await;
    let on = engine_for(on_dir.path(), &url).await;

    println!("mcpd safety benchmark: N={n} calls per row, engine in-process, demo API on loopback");
    println!(
        "'on' = idempotency key claimed+stored, stop rules, per-actor and total rate, 2 budgets, all in the redb state file"
    );
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>10}",
        "path", "in flight", "calls/s", "p50 us", "p99 us"
    );
    let mut run = 0;
    for inflight in [1usize, 16] {
        run += 1;
        // warm-up
        writes(&off, n / 10, inflight, 100 + run).await;
        writes(&on, n / 10, inflight, 200 + run).await;
        let d = direct_writes(&url, n, inflight, run).await;
        let w_off = writes(&off, n, inflight, 300 + run).await;
        let w_on = writes(&on, n, inflight, 400 + run).await;
        let replay = writes(&on, n, inflight, 400 + run).await;
        let r_off = reads(&off, n, inflight).await;
        let r_on = reads(&on, n, inflight).await;
        row("flag.set direct to upstream", inflight, d);
        row("flag.set safety off", inflight, w_off);
        row("flag.set safety on", inflight, w_on);
        row("flag.set replayed (same keys)", inflight, replay);
        row("orders.export safety off", inflight, r_off);
        row("orders.export safety on", inflight, r_on);
        println!(
            "  => {inflight} in flight: writes on/off {:.2}x calls/s (+{:.0} us p50); reads on/off {:.2}x (+{:.0} us p50); replay vs fresh write {:.1}x",
            w_on.calls_per_s / w_off.calls_per_s,
            w_on.p50_us - w_off.p50_us,
            r_on.calls_per_s / r_off.calls_per_s,
            r_on.p50_us - r_off.p50_us,
            replay.calls_per_s / w_on.calls_per_s,
        );
    }
}
