//! One write per key, through the real binary, as issue 14 found it broken: a write
//! slower than its timeout (and one answered 5xx after it landed) is held, never sent
//! again; a keyed POST is not retried unless its upstream deduplicates; a reconcile GET
//! settles a held key; operators list and resolve held keys beside a running serve; two
//! agents retrying one business key (`scope: tool`) make one write. Kill -9 cases are in
//! `safe_writes_kill.rs`.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DEADLINE, DemoApi, StdioClient, bin, is_error, run, text};

pub(crate) const AUDIT_KEY: &str = "safe-writes-audit-key-0123456789abcdef";

/// Tools over the demo API's `/writes` (POST, applied after `ms`, counted per
/// `Idempotency-Key`), with a 300 ms timeout.
pub(crate) const ORDER_TOOLS: &str = r#"name: order.place
description: Place an order (a write the upstream applies after args.ms).
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
  timeout: 300ms
idempotency: { key: "order-{{ args.ref }}" }
---
name: order.failing
description: A write the upstream applies, then answers 503.
input: { type: object, required: [ref], properties: { ref: { type: string } } }
request:
  upstream: orders
  method: POST
  path: /writes
  query: { status: "503" }
  body: { ref: "{{ args.ref }}" }
  timeout: 2s
idempotency: { key: "failing-{{ args.ref }}" }
---
name: order.deduped
description: The same, to an endpoint that deduplicates on Idempotency-Key.
input: { type: object, required: [ref], properties: { ref: { type: string } } }
request:
  upstream: orders
  method: POST
  path: /writes
  query: { status: "503", dedupe: "true" }
  body: { ref: "{{ args.ref }}" }
  timeout: 2s
idempotency: { key: "deduped-{{ args.ref }}", upstream_dedupes: true }
"#;

/// The shipped config with the order tools and an audit log.
pub(crate) fn config(tools: &str) -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/orders.yaml", tools);
    cfg.append("mcpd.yaml", "\naudit:\n  path: state/audit.jsonl\n");
    cfg
}

pub(crate) fn serve(cfg: &ConfigDir, api: &DemoApi) -> StdioClient {
    StdioClient::start(
        cfg.path(),
        &[
            ("DEMO_API_URL", api.url.as_str()),
            ("MCPD_AUDIT_KEY", AUDIT_KEY),
        ],
    )
}

/// `mcpd ARGS --config DIR` beside whatever serves it: (exit code, stdout + stderr).
pub(crate) fn mcpd(cfg: &ConfigDir, args: &[&str]) -> (i32, String) {
    let (code, out, err) = run(Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .env("MCPD_AUDIT_KEY", AUDIT_KEY)
        .env("USER", "ops-ana"));
    (code, format!("{out}{err}"))
}

/// Writes the demo API applied under `key`.
pub(crate) fn applied(api: &DemoApi, key: &str) -> u64 {
    api.get("/_writes")["by_key"][key].as_u64().unwrap_or(0)
}

/// Requests the demo API saw with this method and path.
fn seen(api: &DemoApi, method: &str, path: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .count()
}

/// Polls `f` until it holds, failing the test after the deadline.
pub(crate) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + DEADLINE;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

fn outcome(result: &Value) -> &Value {
    &result["_meta"]["dev.mcpd/outcome"]
}

#[test]
fn a_write_slower_than_its_timeout_is_held_and_never_sent_again() {
    let api = DemoApi::start();
    let cfg = config(ORDER_TOOLS);
    let mut c = serve(&cfg, &api);
    let args = json!({"ref": "A", "ms": 700});
    let first = c.call("order_place", args.clone());
    assert!(is_error(&first), "{first}");
    let msg = text(&first);
    assert!(msg.contains("did not answer within 300ms"), "{msg}");
    assert!(
        msg.contains("idempotency key 'order-A' is now held"),
        "{msg}"
    );
    assert_eq!(outcome(&first), "unknown", "{first}");
    // The upstream got the write and applies it after 700 ms.
    wait_until("the upstream applies the write", || {
        applied(&api, "order-A") == 1
    });
    for _ in 0..3 {
        let retry = c.call("order_place", args.clone());
        let msg = text(&retry);
        assert!(msg.starts_with("outcome unknown: an earlier call of order.place with idempotency key 'order-A' (by user:local-dev"), "{msg}");
        assert!(msg.contains("will not send this write again"), "{msg}");
        assert!(
            msg.contains("mcpd idempotency resolve 'order-A' --tool order.place --sent-ok"),
            "{msg}"
        );
        assert_eq!(outcome(&retry), "unknown");
    }
    assert_eq!(seen(&api, "POST", "/writes"), 1, "the retries sent nothing");
    assert_eq!(applied(&api, "order-A"), 1);

    // An operator sees it beside the running serve, checks the orders service, resolves it.
    let (code, out) = mcpd(&cfg, &["idempotency", "list", "--held"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("order.place") && out.contains("order-A"),
        "{out}"
    );
    assert!(
        out.contains("held") && out.contains("did not answer within 300ms"),
        "{out}"
    );
    let (code, out) = mcpd(
        &cfg,
        &[
            "idempotency",
            "resolve",
            "order-A",
            "--tool",
            "order.place",
            "--sent-ok",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resolved order.place key 'order-A'"), "{out}");
    let after = c.call("order_place", args);
    assert!(!is_error(&after), "{after}");
    assert_eq!(after["_meta"]["dev.mcpd/replayed"], true);
    assert_eq!(after["structuredContent"]["outcome"], "sent");
    assert!(
        after["structuredContent"]["detail"]
            .as_str()
            .unwrap()
            .contains("user:ops-ana"),
        "{after}"
    );
    assert_eq!(applied(&api, "order-A"), 1);
    // Nothing more to resolve; the audit log holds the write's intent and outcome.
    let (code, out) = mcpd(
        &cfg,
        &[
            "idempotency",
            "resolve",
            "order-A",
            "--tool",
            "order.place",
            "--not-sent",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not held: its outcome is known"), "{out}");
    drop(c);
    let log = cfg.read("state/audit.jsonl");
    let intents = log
        .lines()
        .filter(|l| l.contains("\"event\":\"intent\"") && l.contains("order-A"))
        .count();
    assert_eq!(intents, 1, "{log}");
    assert!(log.contains("\"outcome\":\"unknown\""), "{log}");
    assert!(log.contains("\"event\":\"resolve\""), "{log}");
    let (code, out, _) = run(Command::new(bin())
        .args(["audit", "verify"])
        .arg(cfg.path().join("state/audit.jsonl"))
        .env("MCPD_AUDIT_KEY", AUDIT_KEY));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("no outcome"), "{out}");
}

#[test]
fn a_5xx_after_the_write_landed_holds_the_key_and_the_keyed_post_is_sent_once() {
    let api = DemoApi::start();
    let cfg = config(ORDER_TOOLS);
    let mut c = serve(&cfg, &api);
    let first = c.call("order_failing", json!({"ref": "B"}));
    assert!(is_error(&first), "{first}");
    assert!(text(&first).contains("now held"), "{}", text(&first));
    // Not retried on 503: a keyed POST to an upstream that does not deduplicate.
    assert_eq!(seen(&api, "POST", "/writes"), 1);
    let retry = c.call("order_failing", json!({"ref": "B"}));
    assert!(
        text(&retry).contains("was answered with status 503 after the request had been sent"),
        "{}",
        text(&retry)
    );
    assert_eq!(seen(&api, "POST", "/writes"), 1);
    assert_eq!(applied(&api, "failing-B"), 1);

    // The same to an endpoint that deduplicates: retried, and the retry's key released.
    let deduped = c.call("order_deduped", json!({"ref": "C"}));
    assert!(is_error(&deduped));
    assert!(
        text(&deduped).contains("retrying with the same key ('deduped-C') is safe"),
        "{}",
        text(&deduped)
    );
    assert_eq!(seen(&api, "POST", "/writes"), 1 + 3, "three attempts");
    let again = c.call("order_deduped", json!({"ref": "C"}));
    assert!(is_error(&again));
    assert_eq!(seen(&api, "POST", "/writes"), 1 + 3 + 3, "sent again");
    assert_eq!(applied(&api, "deduped-C"), 1, "the upstream deduplicated");
}

/// A tool whose held writes a GET can settle: `/writes/{ref}` is 404 until the write
/// with that ref landed. The first request per ref fails (503, nothing applied) when
/// `fail_first` is 1; `ms` makes the write land after the 300 ms timeout.
const RECONCILED: &str = r#"name: order.reconciled
description: Place an order; a GET tells whether a held one landed.
input:
  type: object
  required: [ref, ms, fail_first]
  properties: { ref: { type: string }, ms: { type: integer }, fail_first: { type: integer } }
request:
  upstream: orders
  method: POST
  path: /writes
  query: { ms: "{{ args.ms }}", fail_first: "{{ args.fail_first }}" }
  body: { ref: "{{ args.ref }}" }
  timeout: 300ms
idempotency:
  key: "rec-{{ args.ref }}"
  reconcile:
    path: "/writes/{{ args.ref }}"
    landed: "$.ref"
    equals: "{{ args.ref }}"
"#;

#[test]
fn a_reconcile_get_sends_a_held_write_only_when_it_proves_the_write_did_not_land() {
    let api = DemoApi::start();
    let cfg = config(RECONCILED);
    let mut c = serve(&cfg, &api);
    let landed = json!({"ref": "L", "ms": 700, "fail_first": 0});
    let lost = json!({"ref": "N", "ms": 0, "fail_first": 1});
    for args in [&landed, &lost] {
        let r = c.call("order_reconciled", args.clone());
        assert!(text(&r).contains("now held"), "{}", text(&r));
    }
    // Too early: the upstream may still be working on the first request.
    let early = c.call("order_reconciled", landed.clone());
    assert!(text(&early).contains("retry in"), "{}", text(&early));
    assert!(
        text(&early).contains("reconcile request"),
        "{}",
        text(&early)
    );
    // After one lease (300 ms + 5 s), a retry runs the GET.
    let mut settled = None;
    wait_until("the reconcile request runs", || {
        let r = c.call("order_reconciled", landed.clone());
        let done = !is_error(&r);
        settled = Some(r);
        done
    });
    let settled = settled.unwrap();
    assert_eq!(settled["structuredContent"]["outcome"], "sent", "{settled}");
    assert_eq!(settled["structuredContent"]["observed"], "L");
    assert_eq!(settled["_meta"]["dev.mcpd/replayed"], true);
    assert_eq!(
        applied(&api, "rec-L"),
        1,
        "the landed write was not sent again"
    );
    // The lost one: the GET answers 404, so the retry sends it, once.
    let mut resent = None;
    wait_until("the reconcile request runs", || {
        let r = c.call("order_reconciled", lost.clone());
        let done = !is_error(&r);
        resent = Some(r);
        done
    });
    let resent = resent.unwrap();
    assert_eq!(resent["structuredContent"]["applied"], 1);
    assert_eq!(applied(&api, "rec-N"), 1);
    let replay = c.call("order_reconciled", lost);
    assert_eq!(replay["_meta"]["dev.mcpd/replayed"], true);
    assert_eq!(seen(&api, "GET", "/writes/L"), 1);
    assert_eq!(seen(&api, "GET", "/writes/N"), 1);
}

#[test]
fn a_held_key_resolved_as_not_sent_is_sent_by_the_next_call() {
    let api = DemoApi::start();
    let cfg = config(ORDER_TOOLS);
    let mut c = serve(&cfg, &api);
    // The demo's /slow answers late and writes nothing.
    cfg.write(
        "tools.d/slow.yaml",
        "name: slow.put\ndescription: A slow PUT.\ninput: { type: object }\nrequest: { upstream: flags, method: PUT, path: /slow, query: { ms: \"600\" }, timeout: 200ms }\nidempotency: { key: \"slow-1\" }\n",
    );
    c.wait_list_changed();
    assert!(text(&c.call("slow_put", json!({}))).contains("now held"));
    assert!(text(&c.call("slow_put", json!({}))).starts_with("outcome unknown"));
    assert_eq!(seen(&api, "PUT", "/slow"), 1);
    let (code, out) = mcpd(
        &cfg,
        &[
            "idempotency",
            "resolve",
            "slow-1",
            "--tool",
            "slow.put",
            "--not-sent",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("the next call sends the write"), "{out}");
    let r = c.call("slow_put", json!({}));
    assert!(text(&r).contains("now held"), "{}", text(&r));
    assert_eq!(seen(&api, "PUT", "/slow"), 2);
    // Resolving needs a held key and says what to do otherwise.
    let (code, out) = mcpd(
        &cfg,
        &[
            "idempotency",
            "resolve",
            "nope",
            "--tool",
            "slow.put",
            "--sent-ok",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        out.contains("no record of idempotency key 'nope' for tool 'slow.put'"),
        "{out}"
    );
    let (code, out) = mcpd(
        &cfg,
        &["idempotency", "resolve", "slow-1", "--tool", "slow.put"],
    );
    assert_eq!(code, 2, "one of --sent-ok, --not-sent is required: {out}");
}

#[test]
fn a_key_reused_with_other_arguments_conflicts_and_never_says_use_a_new_key() {
    let api = DemoApi::start();
    let cfg = config(ORDER_TOOLS);
    let mut c = serve(&cfg, &api);
    let call = |c: &mut StdioClient, r#ref: &str| {
        c.request(
            "tools/call",
            json!({"name": "order_place", "arguments": {"ref": r#ref, "ms": 0},
                   "_meta": {"dev.mcpd/idempotencyKey": "PO-4711"}}),
        )["result"]
            .clone()
    };
    assert!(!is_error(&call(&mut c, "X")));
    let other = call(&mut c, "Y");
    let msg = text(&other);
    assert!(
        msg.contains("'PO-4711' was already used with other arguments (by user:local-dev"),
        "{msg}"
    );
    assert!(msg.contains("was not sent"), "{msg}");
    assert!(msg.contains("Do not retry it under a new key"), "{msg}");
    assert!(!msg.contains("use a new key for"), "{msg}");
    assert_eq!(seen(&api, "POST", "/writes"), 1);
}

/// `order.place` with its key shared by every actor, and a longer write.
const SHARED: &str = r#"name: order.place
description: Place an order; the order reference is the key, whoever retries.
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
  timeout: 5s
idempotency: { key: "order-{{ args.ref }}", scope: tool }
"#;

#[test]
fn two_agents_retrying_one_business_key_with_scope_tool_make_one_write() {
    let api = DemoApi::start();
    let cfg = config(SHARED);
    let (key, _) = crate::identity::keygen(&cfg, "k1");
    let token =
        |subject: &str| crate::identity::issue(&cfg, &key, subject, &["order.place"], "15m");
    let env = |t: &str| {
        vec![
            ("DEMO_API_URL", api.url.clone()),
            ("MCPD_AUDIT_KEY", AUDIT_KEY.to_owned()),
            ("MCPD_TOKEN_KEY", key.clone()),
            ("MCPD_TOKEN", t.to_owned()),
        ]
    };
    let start = |t: &str| {
        let e = env(t);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        StdioClient::start(cfg.path(), &e)
    };
    // Two processes (two hosts), two agents, one state file.
    let (mut a, mut b) = (start(&token("agent:a")), start(&token("agent:b")));
    for round in 0..5 {
        let args = json!({"ref": format!("R{round}"), "ms": 300});
        let ida = a.send_request(
            "tools/call",
            json!({"name": "order_place", "arguments": args}),
        );
        let idb = b.send_request(
            "tools/call",
            json!({"name": "order_place", "arguments": args}),
        );
        let ra = a.wait_for_id(ida)["result"].clone();
        let rb = b.wait_for_id(idb)["result"].clone();
        let key = format!("order-R{round}");
        assert_eq!(applied(&api, &key), 1, "round {round}: {ra} {rb}");
        // One of them made the write; the other was refused while it was in flight (or
        // got its result), and its retry replays it.
        let (done, other, other_client) = if is_error(&ra) {
            (rb, ra, &mut a)
        } else {
            (ra, rb, &mut b)
        };
        assert!(!is_error(&done), "{done}");
        if is_error(&other) {
            assert!(text(&other).contains("still in flight"), "{}", text(&other));
            let retry = other_client.call("order_place", args.clone());
            assert_eq!(retry["_meta"]["dev.mcpd/replayed"], true, "{retry}");
            assert_eq!(retry["structuredContent"], done["structuredContent"]);
        } else {
            assert_eq!(other["_meta"]["dev.mcpd/replayed"], true, "{other}");
            assert_eq!(other["structuredContent"], done["structuredContent"]);
        }
        assert_eq!(applied(&api, &key), 1);
    }
}
