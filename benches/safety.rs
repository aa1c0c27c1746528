//! What safe writes and spend control cost: calls/s and latency through the engine with
//! idempotency keys, rate limits, budgets and stop rules counted in the embedded state
//! file, against the same calls with all of them off, and straight to the upstream, in
//! one run, with the disk syncs each call costs. `BENCH_N` sets the calls per run
//! (default 1000), `BENCH_RUNS` the runs per row (default 5; the median is shown).

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

use common::{Figures, Safety, bench_config, drive, engine_for, load_average, median};
use mcpd::store::EmbeddedStore;
use serde_json::json;

fn row(label: &str, inflight: usize, f: Figures, syncs: f64) {
    println!(
        "{label:<34} {inflight:>9} {:>10.0} {:>10.1} {:>10.1} {syncs:>12.2}",
        f.calls_per_s, f.p50_us, f.p99_us
    );
}

/// Runs `measure` `runs` times; the median by calls/s, and disk syncs per call over all.
async fn measured<F, Fut>(runs: usize, n: usize, mut measure: F) -> (Figures, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Figures>,
{
    let before = EmbeddedStore::synced_commits();
    let mut all = Vec::new();
    for r in 0..runs {
        all.push(measure(r).await);
    }
    let syncs = (EmbeddedStore::synced_commits() - before) as f64 / (runs * n) as f64;
    (median(all), syncs)
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
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, runs) = (env("BENCH_N", 1000), env("BENCH_RUNS", 5));
    let (addr, _state) = mcpd::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("demo API");
    let url = format!("http://{addr}");
    let dirs = [
        bench_config(Safety::Off),
        bench_config(Safety::Counted),
        bench_config(Safety::Unkeyed),
        bench_config(Safety::RatesOnly),
    ];
    let off = engine_for(dirs[0].path(), &url).await;
    let on = engine_for(dirs[1].path(), &url).await;
    let unkeyed = engine_for(dirs[2].path(), &url).await;
    let rates = engine_for(dirs[3].path(), &url).await;

    println!(
        "mcpd safety benchmark: N={n} calls per row, median of {runs} runs, engine in-process, demo API on loopback; load average {}",
        load_average()
    );
    println!(
        "'counted' = stop rules, per-actor and total rate, 2 budgets in the redb state file; 'keyed' adds the idempotency key; 'rates only' = stop rules and rates, no budget"
    );
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "path", "in flight", "calls/s", "p50 us", "p99 us", "syncs/call"
    );
    let mut run = 0;
    for inflight in [1usize, 16] {
        run += 1;
        // warm-up
        writes(&off, n / 10, inflight, 100 + run).await;
        writes(&on, n / 10, inflight, 200 + run).await;
        writes(&unkeyed, n / 10, inflight, 300 + run).await;
        reads(&rates, n / 10, inflight).await;
        let base = 1000 * run;
        let (d, _) = measured(runs, n, |r| direct_writes(&url, n, inflight, base + r)).await;
        let (w_off, _) = measured(runs, n, |r| writes(&off, n, inflight, base + 100 + r)).await;
        let (w_unkeyed, s_unkeyed) =
            measured(runs, n, |r| writes(&unkeyed, n, inflight, base + 200 + r)).await;
        let (w_on, s_on) = measured(runs, n, |r| writes(&on, n, inflight, base + 300 + r)).await;
        let (replay, s_replay) =
            measured(runs, n, |r| writes(&on, n, inflight, base + 300 + r)).await;
        let (r_off, _) = measured(runs, n, |_| reads(&off, n, inflight)).await;
        let (r_rates, s_rates) = measured(runs, n, |_| reads(&rates, n, inflight)).await;
        let (r_on, s_r_on) = measured(runs, n, |_| reads(&on, n, inflight)).await;
        // What docs/performance.md promises (a timer sync per second may add a little).
        if inflight == 1 {
            assert!(
                s_on <= 1.05,
                "a keyed write costs {s_on:.2} disk syncs at 1 in flight; at most 1 promised"
            );
        }
        assert!(s_replay < 0.05, "a replay costs {s_replay:.2} syncs");
        assert!(s_rates < 0.05, "a read with rates costs {s_rates:.2} syncs");
        row("flag.set direct to upstream", inflight, d, 0.0);
        row("flag.set safety off", inflight, w_off, 0.0);
        row("flag.set counted, no key", inflight, w_unkeyed, s_unkeyed);
        row("flag.set counted, keyed", inflight, w_on, s_on);
        row("flag.set replayed (same keys)", inflight, replay, s_replay);
        row("orders.export safety off", inflight, r_off, 0.0);
        row("orders.export rates only", inflight, r_rates, s_rates);
        row("orders.export counted (budget)", inflight, r_on, s_r_on);
        println!(
            "  => {inflight} in flight (load {}): keyed/unkeyed write {:.2}x ({:.2} syncs per keyed write); keyed/off {:.2}x; reads rates-on/off {:.2}x (+{:.0} us p50); reads with a budget/off {:.2}x",
            load_average(),
            w_on.calls_per_s / w_unkeyed.calls_per_s,
            s_on,
            w_on.calls_per_s / w_off.calls_per_s,
            r_rates.calls_per_s / r_off.calls_per_s,
            r_rates.p50_us - r_off.p50_us,
            r_on.calls_per_s / r_off.calls_per_s,
        );
    }
}
