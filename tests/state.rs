//! State that outlives a call, through the real binary: idempotency keys (one key, one
//! upstream write, even at once or across a kill -9), rate limits, budgets, stop rules,
//! and which requests are retried.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text};

/// The upstream requests the demo API saw with this method and path prefix.
fn seen(api: &DemoApi, method: &str, path: &str) -> Vec<Value> {
    api.requests()
        .into_iter()
        .filter(|r| r["method"] == method && r["path"].as_str().unwrap().starts_with(path))
        .collect()
}

/// `mcpd budget` on `cfg`'s state: its stdout, once it exited 0.
fn budget(cfg: &ConfigDir) -> String {
    let (code, out, err) = run(Command::new(bin())
        .args(["budget", "--config"])
        .arg(cfg.path()));
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// orders_export arguments: from this day of August 2025 to the month's end.
fn august_from(day: &str) -> Value {
    json!({"from": format!("2025-08-{day}"), "to": "2025-08-31"})
}

fn staging(percent: u8) -> Value {
    json!({"env": "staging", "name": "checkout_v2", "percent": percent})
}

#[test]
fn the_same_write_twice_is_one_upstream_write_with_the_same_result() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let first = c.call("flag_set", staging(10));
    let second = c.call("flag_set", staging(10));
    assert!(!is_error(&first), "{first}");
    assert_eq!(first["structuredContent"], second["structuredContent"]);
    assert_eq!(first["_meta"]["dev.mcpd/replayed"], false, "{first}");
    assert_eq!(second["_meta"]["dev.mcpd/replayed"], true, "{second}");
    let writes = seen(&api, "PUT", "/flags/");
    assert_eq!(writes.len(), 1, "{writes:?}");
    // The key went upstream too, so the flags service could dedupe on its own.
    assert_eq!(
        writes[0]["headers"]["idempotency-key"],
        "flag-staging-checkout_v2-10"
    );
    // Other arguments are another key: a second write.
    assert!(!is_error(&c.call("flag_set", staging(20))));
    assert_eq!(seen(&api, "PUT", "/flags/").len(), 2);
}

#[test]
fn a_client_key_in_meta_wins_and_cannot_be_reused_for_other_arguments() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let call = |c: &mut StdioClient, percent: u8| {
        c.request(
            "tools/call",
            json!({"name": "flag_set", "arguments": staging(percent),
                   "_meta": {"dev.mcpd/idempotencyKey": "deploy-4711"}}),
        )["result"]
            .clone()
    };
    let first = call(&mut c, 5);
    assert_eq!(first["_meta"]["dev.mcpd/idempotencyKey"], "deploy-4711");
    let again = call(&mut c, 5);
    assert_eq!(again["_meta"]["dev.mcpd/replayed"], true, "{again}");
    let other = call(&mut c, 6);
    assert!(is_error(&other), "{other}");
    assert!(
        text(&other).contains("'deploy-4711' was already used with other arguments"),
        "{}",
        text(&other)
    );
    let writes = seen(&api, "PUT", "/flags/");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0]["headers"]["idempotency-key"], "deploy-4711");
}

const SLOW_WRITE: &str = "name: slow.write
description: A slow write.
input: { type: object, properties: { ms: { type: integer } } }
request: { upstream: flags, method: PUT, path: /slow, query: { ms: \"{{ args.ms }}\" } }
idempotency: { key: \"slow-once\" }
";

#[test]
fn two_calls_at_once_with_one_key_are_one_write() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/slow.yaml", SLOW_WRITE);
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let a = c.send_request(
        "tools/call",
        json!({"name": "slow_write", "arguments": {"ms": 700}}),
    );
    let b = c.send_request(
        "tools/call",
        json!({"name": "slow_write", "arguments": {"ms": 700}}),
    );
    let (a, b) = (
        c.wait_for_id(a)["result"].clone(),
        c.wait_for_id(b)["result"].clone(),
    );
    let (ok, refused) = if is_error(&a) { (b, a) } else { (a, b) };
    assert!(!is_error(&ok), "{ok}");
    assert!(
        is_error(&refused),
        "one of the two must be refused: {refused}"
    );
    assert!(
        text(&refused).contains("still in flight"),
        "{}",
        text(&refused)
    );
    assert_eq!(seen(&api, "PUT", "/slow").len(), 1);
    // Once the first finished, the retry gets its result.
    let retry = c.call("slow_write", json!({"ms": 700}));
    assert_eq!(retry["_meta"]["dev.mcpd/replayed"], true, "{retry}");
    assert_eq!(retry["structuredContent"], ok["structuredContent"]);
    assert_eq!(seen(&api, "PUT", "/slow").len(), 1);
}

const FLAG_BUDGET: &str = "
budgets:
  - id: flag-calls
    tools: [flag.set]
    calls: 3
";

#[test]
fn kill_9_then_restart_keeps_keys_and_budgets() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let policies = cfg.read("policies.yaml");
    let (head, _) = policies.split_once("\nbudgets:").unwrap();
    let stop = policies.split_once("\nstop:").unwrap().1;
    cfg.write(
        "policies.yaml",
        &format!("{head}{FLAG_BUDGET}\nstop:{stop}"),
    );
    let env = [("DEMO_API_URL", api.url.as_str())];
    let mut c = StdioClient::start(cfg.path(), &env);
    assert!(!is_error(&c.call("flag_set", staging(10))));
    assert!(!is_error(&c.call("flag_set", staging(11))));
    drop(c); // SIGKILL: no shutdown code runs
    let mut c = StdioClient::start(cfg.path(), &env);
    let replay = c.call("flag_set", staging(10));
    assert_eq!(replay["_meta"]["dev.mcpd/replayed"], true, "{replay}");
    assert_eq!(
        seen(&api, "PUT", "/flags/").len(),
        2,
        "the replay must not write"
    );
    assert!(
        !is_error(&c.call("flag_set", staging(12))),
        "third call is in budget"
    );
    let over = c.call("flag_set", staging(13));
    assert!(is_error(&over), "{over}");
    assert!(
        text(&over).contains("budget 'flag-calls' is spent: 3 of 3 calls used today"),
        "{}",
        text(&over)
    );
    assert_eq!(seen(&api, "PUT", "/flags/").len(), 3);
    drop(c);
    // `mcpd budget` reads the same state file.
    let stdout = budget(&cfg);
    assert!(stdout.contains("flag-calls"), "{stdout}");
    assert!(stdout.contains("3/3 (0 left)"), "{stdout}");
}

#[test]
fn a_rate_limit_refuses_with_when_to_retry_and_sends_nothing() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("tools.d/orders.export.yaml", "rate: 60/min", "rate: 2/min");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    for day in ["01", "02"] {
        let r = c.call("orders_export", august_from(day));
        assert!(!is_error(&r), "{r}");
    }
    let over = c.call("orders_export", august_from("03"));
    assert!(is_error(&over));
    let msg = text(&over);
    assert!(msg.contains("rate limit 2/min reached"), "{msg}");
    assert!(msg.contains("retry in"), "{msg}");
    assert_eq!(seen(&api, "GET", "/orders").len(), 2);
}

#[test]
fn a_rate_counted_more_than_a_second_before_a_kill_9_is_still_counted_after_restart() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("tools.d/orders.export.yaml", "rate: 60/min", "rate: 2/min");
    // No budget covers the call: its rate and stop-rule counters are all it writes, so
    // nothing durable syncs them along.
    let policies = cfg.read("policies.yaml");
    let (head, rest) = policies.split_once("\n# Budgets").unwrap();
    let stop = rest.split_once("\n# Stop rules").unwrap().1;
    cfg.write("policies.yaml", &format!("{head}\n# Stop rules{stop}"));
    let mut c = StdioClient::with_api(cfg.path(), &api);
    for day in ["01", "02"] {
        let r = c.call("orders_export", august_from(day));
        assert!(!is_error(&r), "{r}");
    }
    // Rate counters are not synced per call but within one second of it (see
    // docs/safe-writes.md): the kill comes after that bound, so nothing may be lost.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(c); // SIGKILL: no shutdown code runs
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let over = c.call("orders_export", august_from("03"));
    assert!(is_error(&over), "{over}");
    assert!(text(&over).contains("rate limit 2/min reached"), "{over}");
    assert_eq!(seen(&api, "GET", "/orders").len(), 2);
}

#[test]
fn a_kill_9_keeps_the_rate_counted_before_the_last_sync_and_loses_at_most_what_came_after() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("tools.d/orders.export.yaml", "rate: 60/min", "rate: 5/min");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    for day in ["01", "02", "03"] {
        assert!(!is_error(&c.call("orders_export", august_from(day))));
    }
    // A keyed write syncs the file, and with it the rate counted so far.
    assert!(!is_error(&c.call("flag_set", staging(30))));
    for day in ["04", "05"] {
        assert!(!is_error(&c.call("orders_export", august_from(day))));
    }
    drop(c); // SIGKILL at once: the last two may not be synced yet
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let mut admitted = 0;
    for day in ["06", "07", "08"] {
        if is_error(&c.call("orders_export", august_from(day))) {
            break;
        }
        admitted += 1;
    }
    assert!(
        admitted <= 2,
        "{admitted} more calls passed: the three synced counts were lost"
    );
    let refused = c.call("orders_export", august_from("09"));
    assert!(
        text(&refused).contains("rate limit 5/min reached"),
        "{refused}"
    );
}

#[test]
fn a_cost_budget_denies_with_its_name() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    // orders.export costs 0.002; a 0.005 budget allows two calls.
    cfg.edit("policies.yaml", "cost: 5.00", "cost: 0.005");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    assert!(!is_error(&c.call("orders_export", august_from("01"))));
    assert!(!is_error(&c.call("orders_export", august_from("02"))));
    let over = c.call("orders_export", august_from("03"));
    assert!(
        text(&over).contains("budget 'agent-daily-spend' is spent: 0.004 of 0.005 cost used today"),
        "{}",
        text(&over)
    );
    assert_eq!(seen(&api, "GET", "/orders").len(), 2);
}

#[test]
fn a_retry_storm_is_stopped_and_raised_as_an_alert() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("policies.yaml", "repeats: 10/min", "repeats: 3/min");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let same = august_from("01");
    for _ in 0..3 {
        assert!(!is_error(&c.call("orders_export", same.clone())));
    }
    let stopped = c.call("orders_export", same);
    assert!(is_error(&stopped));
    assert!(
        text(&stopped).contains("stop rule repeats"),
        "{}",
        text(&stopped)
    );
    c.wait_stderr("runaway_loop");
    // Other arguments are not a storm.
    let other = c.call("orders_export", august_from("02"));
    assert!(!is_error(&other), "{other}");
    assert_eq!(seen(&api, "GET", "/orders").len(), 4);
}

const FLAKY: &str = "name: flaky.get
description: GET that fails twice.
input: { type: object }
request: { upstream: flags, method: GET, path: /flaky/get }
---
name: flaky.post
description: POST without a key.
input: { type: object }
request: { upstream: flags, method: POST, path: /flaky/post }
---
name: flaky.keyed
description: POST with an idempotency key, to an endpoint that deduplicates on it.
input: { type: object }
request: { upstream: flags, method: POST, path: /flaky/keyed }
idempotency: { key: \"k1\", upstream_dedupes: true }
---
name: flaky.keyed_plain
description: POST with an idempotency key the upstream does not deduplicate on.
input: { type: object }
request: { upstream: flags, method: POST, path: /flaky/plain }
idempotency: { key: \"k2\" }
";

#[test]
fn only_idempotent_requests_are_retried() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/flaky.yaml", FLAKY);
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let get = c.call("flaky_get", json!({}));
    assert_eq!(get["structuredContent"]["attempt"], 3, "{get}");
    let post = c.call("flaky_post", json!({}));
    assert!(is_error(&post), "a POST without a key is sent once: {post}");
    assert_eq!(seen(&api, "POST", "/flaky/post").len(), 1);
    let keyed = c.call("flaky_keyed", json!({}));
    assert_eq!(keyed["structuredContent"]["attempt"], 3, "{keyed}");
    let attempts = seen(&api, "POST", "/flaky/keyed");
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|r| r["headers"]["idempotency-key"] == "k1")
    );
    // A key alone does not make a POST safe to resend: a 503 may come after the write.
    let plain = c.call("flaky_keyed_plain", json!({}));
    assert!(is_error(&plain), "{plain}");
    assert_eq!(seen(&api, "POST", "/flaky/plain").len(), 1);
}

#[test]
fn processes_on_one_state_file_share_it_and_take_over_when_the_owner_dies() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let env = [("DEMO_API_URL", api.url.as_str())];
    // Two hosts started mcpd on the same config: the second forwards to the first.
    let mut a = StdioClient::start(cfg.path(), &env);
    let mut b = StdioClient::start(cfg.path(), &env);
    assert!(!is_error(&a.call("flag_set", staging(30))));
    let on_b = b.call("flag_set", staging(30));
    assert_eq!(on_b["_meta"]["dev.mcpd/replayed"], true, "{on_b}");
    // `mcpd budget` beside them reads the same counters.
    let stdout = budget(&cfg);
    assert!(stdout.contains("1/200"), "{stdout}");
    // The owner is killed: the other process takes the file over and keeps every record.
    drop(a);
    let after = b.call("flag_set", staging(30));
    assert_eq!(after["_meta"]["dev.mcpd/replayed"], true, "{after}");
    assert!(!is_error(&b.call("flag_set", staging(31))));
    assert_eq!(seen(&api, "PUT", "/flags/").len(), 2);
}

#[test]
fn a_reload_keeps_the_rate_counted_so_far() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("tools.d/orders.export.yaml", "rate: 60/min", "rate: 2/min");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    assert!(!is_error(&c.call("orders_export", august_from("01"))));
    assert!(!is_error(&c.call("orders_export", august_from("02"))));
    // The tool file changes (a new description): the tool is recompiled, its counter stays.
    cfg.edit(
        "tools.d/orders.export.yaml",
        "title: Export orders",
        "title: Export orders (v2)",
    );
    c.wait_list_changed();
    let over = c.call("orders_export", august_from("03"));
    assert!(
        text(&over).contains("rate limit 2/min reached"),
        "{}",
        text(&over)
    );
}

#[test]
fn replicas_on_one_redis_share_keys_budgets_and_rates() {
    let Some(redis) = crate::util::RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    // Two replicas, each with its own config directory, sharing one Redis.
    let replica = || {
        let cfg = ConfigDir::shipped();
        cfg.append("mcpd.yaml", &format!("\nstate: \"{}\"\n", redis.url));
        cfg.edit("tools.d/orders.export.yaml", "rate: 60/min", "rate: 3/min");
        cfg.edit("policies.yaml", "calls: 200", "calls: 3");
        cfg
    };
    let (cfg_a, cfg_b) = (replica(), replica());
    let env = [("DEMO_API_URL", api.url.as_str())];
    let mut a = StdioClient::start(cfg_a.path(), &env);
    let mut b = StdioClient::start(cfg_b.path(), &env);
    // An idempotency key used on A replays on B.
    assert!(!is_error(&a.call("flag_set", staging(40))));
    let on_b = b.call("flag_set", staging(40));
    assert_eq!(on_b["_meta"]["dev.mcpd/replayed"], true, "{on_b}");
    // The flag budget (3 a day) spent on A and B together.
    assert!(!is_error(&b.call("flag_set", staging(41))));
    assert!(!is_error(&a.call("flag_set", staging(42))));
    let over = b.call("flag_set", staging(43));
    assert!(
        text(&over).contains("budget 'prod-flag-writes' is spent: 3 of 3"),
        "{}",
        text(&over)
    );
    assert_eq!(seen(&api, "PUT", "/flags/").len(), 3);
    // A rate limit of 3/min holds across both replicas.
    assert!(!is_error(&a.call("orders_export", august_from("01"))));
    assert!(!is_error(&b.call("orders_export", august_from("02"))));
    assert!(!is_error(&a.call("orders_export", august_from("03"))));
    let limited = b.call("orders_export", august_from("04"));
    assert!(
        text(&limited).contains("rate limit 3/min reached"),
        "{}",
        text(&limited)
    );
    // A replica dies: the other keeps serving, and nothing is written twice.
    drop(a);
    let again = b.call("flag_set", staging(42));
    assert_eq!(again["_meta"]["dev.mcpd/replayed"], true, "{again}");
    assert_eq!(seen(&api, "PUT", "/flags/").len(), 3);
}
