//! One write per key and no unaudited write across kill -9, through the real binary: a
//! write in flight when mcpd is killed is held after the restart (never sent again once
//! its claim lapses), a loop of kills with keyed writes in flight writes no key twice and
//! leaves an audit intent for every request that reached the upstream, a write killed
//! right after it was acknowledged is replayed (its outcome journaled, not yet synced),
//! and two `mcpd serve` processes on one config keep one audit chain, also when one is
//! killed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::safe_writes::{AUDIT_KEY, applied, config, mcpd, serve, wait_until};
use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text};

/// A write the upstream applies after `args.ms`, keyed by `args.ref`.
const LOOP_TOOL: &str = r#"name: order.place
description: Place an order (applied after args.ms).
input:
  type: object
  required: [ref, ms]
  properties: { ref: { type: string }, ms: { type: integer } }
request:
  upstream: orders
  method: POST
  path: /writes
  query: { ms: "{{ args.ms }}" }
  body: { ref: "{{ args.ref }}" }
  timeout: 400ms
idempotency: { key: "loop-{{ args.ref }}" }
"#;

fn verify(cfg: &ConfigDir) -> (i32, String) {
    let (code, out, err) = run(Command::new(bin())
        .args(["audit", "verify"])
        .arg(cfg.path().join("state/audit.jsonl"))
        .env("MCPD_AUDIT_KEY", AUDIT_KEY));
    (code, format!("{out}{err}"))
}

fn posts(api: &DemoApi) -> Vec<Value> {
    api.requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/writes")
        .collect()
}

fn call(c: &mut StdioClient, r: &str, ms: u64) -> u64 {
    c.send_request(
        "tools/call",
        json!({"name": "order_place", "arguments": {"ref": r, "ms": ms}}),
    )
}

#[test]
fn a_write_in_flight_when_mcpd_is_killed_is_held_after_restart_and_never_resent() {
    let api = DemoApi::start();
    let cfg = config(&LOOP_TOOL.replace("timeout: 400ms", "timeout: 2s"));
    let mut c = serve(&cfg, &api);
    call(&mut c, "K", 800);
    wait_until("the write reaches the upstream", || posts(&api).len() == 1);
    drop(c); // SIGKILL while the upstream works on it
    let mut c = serve(&cfg, &api);
    let args = json!({"ref": "K", "ms": 800});
    let first = c.call("order_place", args.clone());
    assert!(text(&first).contains("still in flight"), "{first}");
    // Its claim lapses (2 s timeout + 5 s): from then on the key is held, never free.
    let mut last = first;
    wait_until("the claim lapses into an unknown outcome", || {
        last = c.call("order_place", args.clone());
        text(&last).starts_with("outcome unknown")
    });
    let msg = text(&last);
    assert!(
        msg.contains("was still in flight when the mcpd running it stopped"),
        "{msg}"
    );
    for _ in 0..3 {
        let again = c.call("order_place", args.clone());
        assert!(text(&again).starts_with("outcome unknown"), "{again}");
    }
    assert_eq!(posts(&api).len(), 1, "the retries sent nothing");
    assert_eq!(applied(&api, "loop-K"), 1);
    // `audit verify` passes and names the write that may have happened.
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("note: 1 write(s) have a record of intent but no outcome"),
        "{out}"
    );
    assert!(out.contains("order.place key 'loop-K'"), "{out}");
    let (code, out) = mcpd(&cfg, &["idempotency", "list", "--held"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("loop-K") && out.contains("user:local-dev"),
        "{out}"
    );
    let (code, out) = mcpd(
        &cfg,
        &[
            "idempotency",
            "resolve",
            "loop-K",
            "--tool",
            "order.place",
            "--sent-ok",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let ok = c.call("order_place", args);
    assert!(!is_error(&ok), "{ok}");
    drop(c);
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("no outcome"),
        "the resolution closes the intent: {out}"
    );
}

#[test]
fn an_acknowledged_keyed_write_is_replayed_after_mcpd_is_killed_right_after_answering() {
    let api = DemoApi::start();
    let cfg = config(LOOP_TOOL);
    let journal = cfg.path().join(".mcpd/state.redb.outcomes");
    let mut journaled = 0;
    for round in 0..3 {
        let mut c = serve(&cfg, &api);
        let args = json!({"ref": format!("ack{round}"), "ms": 0});
        let first = c.call("order_place", args.clone());
        assert!(!is_error(&first), "{first}");
        drop(c); // kill -9 as soon as the write is acknowledged
        // The outcome cost no sync of its own: it is in the journal until the next one
        // (the writer syncs within 1 s, so a slow kill may find it synced already).
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
            journaled += 1;
        }
        let mut c = serve(&cfg, &api);
        let again = c.call("order_place", args);
        assert!(!is_error(&again), "{again}");
        assert_eq!(again["_meta"]["dev.mcpd/replayed"], true, "{again}");
        assert_eq!(again["structuredContent"], first["structuredContent"]);
        assert_eq!(applied(&api, &format!("loop-ack{round}")), 1);
    }
    assert!(journaled > 0, "no kill found an outcome in the journal");
}

/// What the final retry of each key got.
#[derive(Debug, Default)]
struct Settled {
    ok: usize,
    held: usize,
    failed: usize,
}

#[test]
fn a_kill_9_loop_with_keyed_writes_in_flight_never_writes_a_key_twice_and_audits_every_write() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (kills, per_round) = (env("MCPD_KILL_ROUNDS", 4), env("MCPD_KILL_KEYS", 12));
    let api = DemoApi::start();
    let cfg = config(LOOP_TOOL);
    // The agent retries each key many times: not a runaway loop here.
    cfg.edit("policies.yaml", "repeats: 10/min", "repeats: 1000/min");
    // Some writes land within the 400 ms timeout, some after it.
    let ms_of = |i: usize| [50u64, 150, 300, 600, 900][i % 5];
    let mut keys: Vec<(String, u64)> = Vec::new();
    for round in 0..kills {
        let mut c = serve(&cfg, &api);
        // The agent retries every earlier key after its host restarted mcpd, and starts
        // new ones.
        let new: Vec<(String, u64)> = (0..per_round)
            .map(|i| (format!("r{round}k{i}"), ms_of(i)))
            .collect();
        let before = posts(&api).len();
        for (r, ms) in &keys {
            call(&mut c, r, *ms);
        }
        let ids: Vec<(u64, u64)> = new
            .iter()
            .map(|(r, ms)| (call(&mut c, r, *ms), *ms))
            .collect();
        keys.extend(new);
        wait_until("writes in flight", || {
            posts(&api).len() >= before + per_round / 2
        });
        // Kill at a different point each round: at once; once the writes that fit in the
        // timeout are answered; once every new write is answered or timed out (held).
        for (id, ms) in &ids {
            if round % 3 == 2 || (round % 3 == 1 && *ms < 400) {
                c.wait_for_id(*id);
            }
        }
        drop(c); // kill -9 with writes in flight
    }
    // The last restart: retry every key until each has a settled answer.
    let mut c = serve(&cfg, &api);
    let mut settled = Settled::default();
    let end = Instant::now() + Duration::from_secs(90);
    let mut open: Vec<(String, u64)> = keys.clone();
    while !open.is_empty() {
        assert!(Instant::now() < end, "keys never settled: {open:?}");
        let mut still = Vec::new();
        for (r, ms) in open {
            let res = c.call("order_place", json!({"ref": r, "ms": ms}));
            if !is_error(&res) {
                settled.ok += 1;
            } else if text(&res).starts_with("outcome unknown") {
                settled.held += 1;
            } else if text(&res).contains("still in flight") {
                still.push((r, ms));
            } else {
                settled.failed += 1;
            }
        }
        open = still;
        if !open.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Every write the upstream got has landed by now (the slowest takes 900 ms).
    wait_until("the upstream applies every write it got", || {
        api.get("/_writes")["total"].as_u64().unwrap_or(0) as usize == posts(&api).len()
    });
    drop(c);
    let writes = api.get("/_writes")["by_key"].clone();
    let per_key: BTreeMap<String, u64> = keys
        .iter()
        .map(|(r, _)| {
            let k = format!("loop-{r}");
            let n = writes[&k].as_u64().unwrap_or(0);
            (k, n)
        })
        .collect();
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    let max = per_key.values().max().copied().unwrap_or(0);
    // Requests that reached the upstream, per key, against the audit intents per key.
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for p in posts(&api) {
        let k = p["headers"]["idempotency-key"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        *sent.entry(k).or_default() += 1;
    }
    let log = cfg.read("state/audit.jsonl");
    let mut intents: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["event"] == "intent" {
            let k = v["idempotency_key"].as_str().unwrap_or("").to_owned();
            *intents.entry(k).or_default() += 1;
        }
    }
    let unaudited: Vec<_> = sent
        .iter()
        .filter(|(k, n)| intents.get(*k).copied().unwrap_or(0) < **n)
        .collect();
    eprintln!(
        "kill loop: {} keys, {kills} kills, {} requests reached the upstream, {} writes applied, max {max} per key, {} keys written twice, {} requests without an audit intent; final retries: {} ok, {} held, {} failed",
        keys.len(),
        sent.values().sum::<usize>(),
        per_key.values().sum::<u64>(),
        twice.len(),
        unaudited
            .iter()
            .map(|(k, n)| **n - intents.get(*k).copied().unwrap_or(0))
            .sum::<usize>(),
        settled.ok,
        settled.held,
        settled.failed
    );
    assert!(twice.is_empty(), "keys written twice: {twice:?}");
    assert!(
        unaudited.is_empty(),
        "requests without an intent record: {unaudited:?}"
    );
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn two_serve_processes_on_one_config_keep_one_audit_chain_even_when_one_is_killed() {
    let api = DemoApi::start();
    let cfg = config(LOOP_TOOL);
    let mut a = serve(&cfg, &api); // the first one owns the state file
    let mut b = serve(&cfg, &api);
    let export =
        |day: usize| json!({"from": format!("2025-08-{:02}", day % 28 + 1), "to": "2025-08-31"});
    std::thread::scope(|s| {
        for (c, name) in [(&mut a, "a"), (&mut b, "b")] {
            s.spawn(move || {
                for i in 0..25 {
                    let r = c.call("orders_export", export(i));
                    assert!(!is_error(&r), "{r}");
                    let r = c.call("order_place", json!({"ref": format!("{name}{i}"), "ms": 0}));
                    assert!(!is_error(&r), "{r}");
                }
            });
        }
    });
    // The owner is killed with a write in flight; the other goes on, and a third joins.
    call(&mut a, "last-a", 300);
    wait_until("the write reaches the upstream", || {
        posts(&api)
            .iter()
            .any(|p| p["headers"]["idempotency-key"] == "loop-last-a")
    });
    drop(a);
    for i in 0..10 {
        let r = b.call("order_place", json!({"ref": format!("after{i}"), "ms": 0}));
        assert!(!is_error(&r), "{r}");
    }
    let mut c = serve(&cfg, &api);
    assert!(!is_error(&c.call("orders_export", export(3))));
    drop((b, c));
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    let lines = cfg.read("state/audit.jsonl").lines().count();
    // 50 exports + 50 writes (2 records each), the killed write's intent, 10 writes, 1 export.
    assert_eq!(lines, 50 + 100 + 1 + 20 + 1, "{out}");
    assert!(out.starts_with(&format!("OK: {lines} records")), "{out}");
    assert!(
        out.contains("loop-last-a"),
        "the killed write is named: {out}"
    );
}
