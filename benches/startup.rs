//! Benchmark: start-up with 1,000 tool files. A copy of the shipped config with the
//! shipped tools plus 1,000 copies of orders.export (each its own name, input schema,
//! templates, JSONPath selection, masks and output schema), then `mcpd serve` over
//! stdio (release build) from spawn to the first `tools/list` answer, and its peak RSS
//! once that answer is in. Also the same with the shipped tools alone, as the baseline
//! of the same run.
//!
//! `cargo bench --bench startup` (`BENCH_TOOLS` sets the count, default 1000;
//! `BENCH_RUNS` the runs, default 5; medians are shown). `BENCH_BASELINE=PATH` also
//! measures another mcpd binary (say, one built from main) on the same configs, its
//! runs interleaved with this build's, for an A/B in one run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use common::{Safety, bench_config, load_average};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Spawn to the first tools/list answer (ms), the tools it listed, and peak RSS (MB).
async fn start(mcpd: &Path, config: &Path) -> (f64, usize, f64) {
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(mcpd)
        .args(["serve", "--no-watch", "--config"])
        .arg(config)
        .env("DEMO_API_URL", "http://127.0.0.1:9")
        .env("MCPD_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mcpd");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::with_capacity(1 << 20, child.stdout.take().expect("stdout")).lines();
    let msgs = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ];
    let mut out = String::new();
    for m in msgs {
        out.push_str(&m.to_string());
        out.push('\n');
    }
    stdin.write_all(out.as_bytes()).await.expect("write");
    let listed = loop {
        let line = lines.next_line().await.expect("read").expect("mcpd exited");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["id"] == 2 {
            break v["result"]["tools"].as_array().map_or(0, Vec::len);
        }
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let pid = child.id().expect("pid");
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0);
    let _ = child.kill().await;
    (ms, listed, rss)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Medians of `runs` start-ups of each binary, their runs interleaved.
async fn measure(mcpds: &[PathBuf], config: &Path, runs: usize) -> Vec<(f64, usize, f64)> {
    for mcpd in mcpds {
        start(mcpd, config).await; // warm the page cache
    }
    let mut all = vec![(Vec::new(), Vec::new(), 0); mcpds.len()];
    for _ in 0..runs {
        for (mcpd, (ms, rss, listed)) in mcpds.iter().zip(&mut all) {
            let (t, n, r) = start(mcpd, config).await;
            ms.push(t);
            rss.push(r);
            *listed = n;
        }
    }
    all.into_iter()
        .map(|(ms, rss, listed)| (median(ms), listed, median(rss)))
        .collect()
}

#[tokio::main]
async fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (tools, runs) = (env("BENCH_TOOLS", 1000), env("BENCH_RUNS", 5));
    let shipped = bench_config(Safety::Off);
    let many = bench_config(Safety::Off);
    let template = std::fs::read_to_string(many.path().join("tools.d/orders.export.yaml"))
        .expect("orders.export");
    for i in 0..tools {
        let text = template.replace("name: orders.export", &format!("name: orders.export{i:04}"));
        std::fs::write(many.path().join(format!("tools.d/gen{i:04}.yaml")), text).expect("write");
    }
    println!(
        "mcpd start-up benchmark: spawn to the first tools/list answer over stdio, median of {runs} runs; load average {}",
        load_average()
    );
    let mut mcpds = vec![PathBuf::from(env!("CARGO_BIN_EXE_mcpd"))];
    let mut names = vec!["this build".to_owned()];
    if let Ok(base) = std::env::var("BENCH_BASELINE") {
        mcpds.push(PathBuf::from(base));
        names.push("baseline".to_owned());
    }
    let shipped_runs = measure(&mcpds, shipped.path(), runs).await;
    let many_runs = measure(&mcpds, many.path(), runs).await;
    println!(
        "{:<12} {:<26} {:>7} {:>12} {:>10}",
        "binary", "config", "tools", "start ms", "RSS MB"
    );
    let mut n = 0;
    for ((name, (base_ms, base_n, base_rss)), (ms, listed, rss)) in
        names.iter().zip(shipped_runs).zip(many_runs)
    {
        n = listed;
        println!(
            "{name:<12} {:<26} {base_n:>7} {base_ms:>12.1} {base_rss:>10.1}",
            "shipped tools"
        );
        println!(
            "{name:<12} {:<26} {n:>7} {ms:>12.1} {rss:>10.1}",
            format!("+{tools} tool files")
        );
        println!(
            "{name:<12} => {tools} more tools add {:.1} ms to start-up and {:.1} MB of RSS",
            ms - base_ms,
            rss - base_rss,
        );
    }
    println!("load average {}", load_average());
    // Where the time goes, in-process (one thread): reading and parsing the files,
    // compiling the catalog, and the tools/list answer.
    let vars = mcpd::config::Vars::from_env().with("DEMO_API_URL", "http://127.0.0.1:9");
    let settle = mcpd::config::Settle::IMMEDIATE;
    let (mut load, mut compile, mut list) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let (loaded, diags) = mcpd::config::load_dir_with(many.path(), &vars, None, &settle);
        assert!(diags.is_empty(), "{diags}");
        load.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let catalog = mcpd::catalog::Catalog::compile(&loaded, &vars).expect("compiles");
        compile.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let listed = serde_json::to_vec(&catalog.listing()).expect("json");
        list.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(listed.len() > tools);
    }
    println!(
        "in-process with {n} tools: read+parse {:.1} ms, compile {:.1} ms, tools/list {:.1} ms",
        median(load),
        median(compile),
        median(list)
    );
}
