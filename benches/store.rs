//! Benchmark: write latency of the embedded state store, on a real file in a temp dir.
//!
//! `cargo bench --bench store`. Prints p50/p99 in µs for an idempotency pair
//! (`idem_begin` + `idem_finish`, two durable commits) and for `incr` (one), one caller
//! at a time and with 16 concurrent callers, whose writes share commits. Each commit
//! waits for the disk to sync, so the figures follow the disk more than the code.
//! Set `MCPD_BENCH_DIR` to measure on another disk than the temp dir's.
//
// A benchmark is a test harness: a failed expect is its failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpd::store::{EmbeddedStore, Idem, Store};

/// Writes measured per scenario (sequential), or per task (concurrent).
const SEQUENTIAL: usize = 400;
const TASKS: usize = 16;
const PER_TASK: usize = 60;

const RESULT: &[u8] = br#"{"id":"ord-1042","status":"created","amount":4200,"currency":"EUR"}"#;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let n = samples.len();
    println!(
        "{name:<34} p50 {:>7.0} µs   p99 {:>7.0} µs   {:>6.0} ops/s   (n={n})",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        n as f64 / wall.as_secs_f64(),
    );
}

async fn idem_pair(store: &dyn Store, key: &str) -> Duration {
    let t = Instant::now();
    assert_eq!(
        store
            .idem_begin(key, Duration::from_secs(60))
            .await
            .unwrap(),
        Idem::Started
    );
    store
        .idem_finish(key, RESULT, Duration::from_secs(86_400))
        .await
        .unwrap();
    t.elapsed()
}

async fn incr(store: &dyn Store, key: &str) -> Duration {
    let t = Instant::now();
    store.incr(key, 1, Duration::from_secs(60)).await.unwrap();
    t.elapsed()
}

async fn sequential(store: &Arc<dyn Store>, what: &str, run: u32) -> (Vec<Duration>, Duration) {
    let wall = Instant::now();
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        samples.push(match what {
            "idem" => idem_pair(store.as_ref(), &format!("idem:bench:{run}:{i}")).await,
            _ => incr(store.as_ref(), &format!("rate:bench:{}", i % 20)).await,
        });
    }
    (samples, wall.elapsed())
}

async fn concurrent(
    store: &Arc<dyn Store>,
    what: &'static str,
    run: u32,
) -> (Vec<Duration>, Duration) {
    let wall = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    samples.push(match what {
                        "idem" => {
                            idem_pair(store.as_ref(), &format!("idem:bench:{run}:{t}:{i}")).await
                        }
                        _ => incr(store.as_ref(), &format!("rate:bench:{}", i % 20)).await,
                    });
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(TASKS * PER_TASK);
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    (samples, wall.elapsed())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = match std::env::var_os("MCPD_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .unwrap();
    let path = dir.path().join("state.redb");
    println!("state store, embedded (redb), file {}", path.display());
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).unwrap());
        // Warm up: grow the file and fill the cache before measuring.
        sequential(&store, "idem", 0).await;

        let (s, w) = sequential(&store, "idem", 1).await;
        report("idem_begin+idem_finish, sequential", s, w);
        let (s, w) = concurrent(&store, "idem", 2).await;
        report("idem_begin+idem_finish, 16 tasks", s, w);
        let (s, w) = sequential(&store, "incr", 3).await;
        report("incr, sequential", s, w);
        let (s, w) = concurrent(&store, "incr", 4).await;
        report("incr, 16 tasks", s, w);
    });
}
