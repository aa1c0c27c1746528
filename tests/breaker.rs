//! Circuit breakers: a burst of upstream 5xx opens one and writes are refused at once,
//! saying when to retry, with nothing sent (metrics, log, audit record); reads still go
//! unless the breaker refuses them too; a second mcpd sharing the state store refuses as
//! well; and, on a manual clock with no sleeping, it closes when its time is up and
//! counting starts afresh.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use mcpd::catalog::Catalog;
use mcpd::config::Vars;
use mcpd::engine::{CallContext, Engine};
use mcpd::util::Clock;

use crate::util::{ConfigDir, DemoApi, StdioClient, http_get_text, is_error, text};

const KEY: &str = "breaker-audit-key-0123456789abcdef";

/// A write whose answer each call chooses: `status: 503` is an upstream failure.
const WRITE: &str = r#"
name: burst.write
description: Record a write in the demo API; each call says which status it answers with.
input:
  type: object
  additionalProperties: false
  required: [ref, status]
  properties:
    ref: { type: string }
    status: { type: integer }
request:
  upstream: orders
  method: POST
  path: /writes
  query: { status: "{{ args.status }}" }
  body: { ref: "{{ args.ref }}" }
"#;

/// A read that fails (503) as long as `fail` says.
const READ: &str = r#"
name: flaky.read
description: Read a record of the demo API that fails the first `fail` times.
input:
  type: object
  additionalProperties: false
  required: [id]
  properties:
    id: { type: string }
    fail: { type: integer }
request:
  upstream: orders
  method: GET
  path: "/flaky/{{ args.id }}"
  query: { fail: "{{ args.fail }}" }
  retries: 0
"#;

const TOOL_BREAKER: &str = "breaker: { errors: 50%, over: 1m, min_calls: 4, open_for: 5m }\n";

fn config(tool_breaker: bool) -> ConfigDir {
    let cfg = ConfigDir::shipped();
    let write = if tool_breaker {
        format!("{WRITE}{TOOL_BREAKER}")
    } else {
        WRITE.to_owned()
    };
    cfg.write("tools.d/burst.write.yaml", &write);
    cfg.write("tools.d/flaky.read.yaml", READ);
    cfg.append("mcpd.yaml", "\naudit:\n  path: audit.jsonl\n");
    cfg
}

fn write(c: &mut StdioClient, reference: &str, status: u16) -> Value {
    c.call("burst_write", json!({"ref": reference, "status": status}))
}

fn writes_seen(api: &DemoApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r["path"] == "/writes")
        .count()
}

fn metrics(c: &StdioClient) -> String {
    let stderr = c.wait_stderr("metrics on /metrics");
    let addr = stderr
        .lines()
        .find(|l| l.contains("metrics on /metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap();
    http_get_text(&format!("http://{addr}/metrics"))
}

#[test]
fn a_burst_of_upstream_5xx_opens_the_breaker_and_writes_are_refused_unsent() {
    let api = DemoApi::start();
    let cfg = config(true);
    let env = [("DEMO_API_URL", api.url.as_str()), ("MCPD_AUDIT_KEY", KEY)];
    let mut c = StdioClient::start_with(cfg.path(), &env, &["--metrics", "127.0.0.1:0"]);
    for i in 0..4 {
        let r = write(&mut c, &format!("w{i}"), 503);
        assert!(is_error(&r), "{r}");
        assert!(!text(&r).contains("circuit breaker"), "{r}");
    }
    assert_eq!(writes_seen(&api), 4);
    let refused = write(&mut c, "w4", 201);
    assert!(is_error(&refused), "{refused}");
    let msg = text(&refused);
    assert!(
        msg.contains("tool 'burst.write' is failing (4 of 4 calls failed in the last 1 min): its circuit breaker is open, so this write was not sent; retry after "),
        "{msg}"
    );
    assert!(msg.ends_with("(in 5 min)"), "{msg}");
    assert_eq!(writes_seen(&api), 4, "nothing was sent");
    c.wait_stderr("circuit breaker opened");
    let m = metrics(&c);
    assert!(
        m.contains(r#"mcpd_breaker_open{breaker="tool:burst.write"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"mcpd_breaker_openings_total{breaker="tool:burst.write"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"mcpd_refusals_total{tool="burst.write",reason="breaker"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"mcpd_calls_total{tool="burst.write",decision="limited"} 1"#),
        "{m}"
    );
    // the audit log: the opening, then the refused call
    let log = cfg.read("audit.jsonl");
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let opened = records.iter().find(|r| r["event"] == "breaker").unwrap();
    assert_eq!(
        (
            &opened["breaker"],
            &opened["state"],
            &opened["calls"],
            &opened["errors"]
        ),
        (
            &json!("tool:burst.write"),
            &json!("open"),
            &json!(4),
            &json!(4)
        )
    );
    let last = records.last().unwrap();
    assert_eq!(
        (&last["decision"], &last["tool"]),
        (&json!("limited"), &json!("burst.write"))
    );
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker is open"),
        "{last}"
    );
    // another tool on the same upstream has no breaker: it goes on
    let read = c.call("flaky_read", json!({"id": "a", "fail": 0}));
    assert!(!is_error(&read), "{read}");
}

#[test]
fn an_upstream_breaker_lets_reads_through_unless_told_and_replicas_share_it() {
    let api = DemoApi::start();
    let cfg = config(false);
    let breaker = "    breaker: { errors: 50%, over: 1m, min_calls: 3, open_for: 5m }\n";
    cfg.edit(
        "mcpd.yaml",
        "    timeout: 10s\n  flags:",
        &format!("    timeout: 10s\n{breaker}  flags:"),
    );
    let env = [("DEMO_API_URL", api.url.as_str()), ("MCPD_AUDIT_KEY", KEY)];
    // two replicas on one state store (the config's state file, shared between them)
    let mut one = StdioClient::start(cfg.path(), &env);
    let mut two = StdioClient::start_with(cfg.path(), &env, &["--metrics", "127.0.0.1:0"]);
    for i in 0..3 {
        let r = one.call("flaky_read", json!({"id": format!("r{i}"), "fail": 5}));
        assert!(is_error(&r), "{r}");
    }
    one.wait_stderr("circuit breaker opened");
    // the other replica refuses a write at once: it never saw a failure itself
    let refused = write(&mut two, "w", 201);
    assert!(
        text(&refused).contains("upstream 'orders' is failing (3 of 3 calls failed"),
        "{refused}"
    );
    assert_eq!(writes_seen(&api), 0);
    two.wait_stderr("circuit breaker is open");
    assert!(metrics(&two).contains(r#"mcpd_breaker_open{breaker="upstream:orders"} 1"#));
    // a read still goes (and counts)
    let before = api.requests().len();
    let read = two.call("flaky_read", json!({"id": "r9", "fail": 0}));
    assert!(!is_error(&read), "{read}");
    assert_eq!(api.requests().len(), before + 1);
    drop((one, two));

    // refuse_reads: reads are refused too
    cfg.edit(
        "mcpd.yaml",
        "open_for: 5m }",
        "open_for: 5m, refuse_reads: true }",
    );
    let mut three = StdioClient::start(cfg.path(), &env);
    let read = three.call("flaky_read", json!({"id": "r10", "fail": 0}));
    assert!(
        text(&read).contains("its circuit breaker is open, so this call was not sent"),
        "{read}"
    );
}

/// The engine over `cfg` with the demo API at `api`, reading time from `clock`.
fn engine(cfg: &ConfigDir, api: &DemoApi, clock: &Clock) -> Engine {
    let vars = Vars::from_env().with("DEMO_API_URL", &api.url);
    let (loaded, diags) = mcpd::config::load_dir_with(
        cfg.path(),
        &vars,
        None,
        &mcpd::config::settle::Settle::IMMEDIATE,
    );
    assert!(diags.is_empty(), "{diags}");
    let catalog = Catalog::compile(&loaded, &vars).unwrap();
    Engine::new(catalog, Arc::new(mcpd::store::MemoryStore::new())).with_clock(clock.clone())
}

async fn call(e: &Engine, reference: &str, status: u16) -> Result<Value, String> {
    let Value::Object(args) = json!({"ref": reference, "status": status}) else {
        unreachable!()
    };
    let r = e
        .call("burst.write", Some(args), &CallContext::default())
        .await
        .unwrap();
    r.outcome.map_err(|f| f.message())
}

#[test]
fn the_breaker_closes_when_open_for_is_up_on_a_manual_clock() {
    let api = DemoApi::start();
    let cfg = config(true);
    let clock = Clock::manual(SystemTime::now());
    let e = engine(&cfg, &api, &clock);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..4 {
            assert!(call(&e, &format!("a{i}"), 503).await.is_err());
        }
        let refused = call(&e, "b", 201).await.unwrap_err();
        assert!(refused.contains("retry after"), "{refused}");
        // a second before the end: still open, one second left
        clock.advance(Duration::from_secs(299));
        let refused = call(&e, "c", 201).await.unwrap_err();
        assert!(refused.ends_with("(in 1 s)"), "{refused}");
        assert_eq!(writes_seen(&api), 4);
        // its time is up: closed, and the write goes
        clock.advance(Duration::from_secs(1));
        let ok: Map<String, Value> = match call(&e, "d", 201).await {
            Ok(Value::Object(o)) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(ok["ref"], "d");
        assert_eq!(writes_seen(&api), 5);
        let m = e.metrics().render();
        assert!(
            m.contains(r#"mcpd_breaker_open{breaker="tool:burst.write"} 0"#),
            "{m}"
        );
        // counting starts afresh (the four failures that opened it no longer count):
        // two failures after the write above (2 of 3) do not open it
        for i in 0..2 {
            let err = call(&e, &format!("e{i}"), 503).await.unwrap_err();
            assert!(!err.contains("circuit breaker"), "{err}");
        }
        assert!(call(&e, "f", 201).await.is_ok());
        // a third failure makes 3 of 5: open again
        call(&e, "g", 503).await.unwrap_err();
        let refused = call(&e, "h", 201).await.unwrap_err();
        assert!(refused.contains("(3 of 5 calls failed"), "{refused}");
    });
}
