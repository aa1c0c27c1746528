//! The call's log line through the real binary, byte for byte in both formats: the
//! `tool.call` span's fields (recorded together when the call finishes), their order
//! and quoting, and a `MCPD_LOG` that names a span still filtering by it.

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient};

/// Three calls that record every kind of field: a read with a shadow rule and a
/// budget, a keyed write, and a write refused by policy.
fn calls(format: &str, filter: Option<&str>) -> String {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut env = vec![
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_LOG_FORMAT", format),
    ];
    if let Some(f) = filter {
        env.push(("MCPD_LOG", f));
    }
    let mut c = StdioClient::start(cfg.path(), &env);
    c.call(
        "orders_export",
        json!({"from": "2025-06-01", "to": "2025-08-31"}),
    );
    c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 5}),
    );
    c.call(
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
    );
    // Every call's line is written once its answer is out: wait for the three.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = c.stderr();
        let n = (s.lines())
            .filter(|l| l.contains("call completed") || l.contains("call failed"))
            .count();
        if n >= 3 {
            return s;
        }
        assert!(std::time::Instant::now() < end, "{s}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The text line with what differs between runs (time, trace id, latency) replaced.
fn steady_text(line: &str) -> String {
    let line = line
        .split_once(' ')
        .map_or(line, |(_, rest)| rest)
        .trim_start();
    line.split(' ')
        .map(|w| {
            if let Some(v) = w.strip_prefix("trace_id=") {
                assert_eq!(v.len(), 32, "{line}");
                "trace_id=T".to_owned()
            } else if w.starts_with("latency_us=") {
                "latency_us=L".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_text_call_line_keeps_every_span_field_in_order_and_quoting() {
    let stderr = calls("text", None);
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("mcpd::engine::record: call"))
        .map(steady_text)
        .collect();
    assert_eq!(
        lines,
        [
            "INFO mcp.request{mcp.method=\"tools/call\" mcp.tool=orders_export}:tool.call{tool=orders.export trace_id=T actor=user:local-dev actor.source=default_actor budget.remaining=\"agent-daily-spend:cost=4.998\" decision=\"allowed\" pii.count=36 rules=\"redact-pii\" shadow=\"no-bulk-exports:deny\" http.status=200}: mcpd::engine::record: call completed tool=orders.export status=200 masked=36 latency_us=L",
            "INFO mcp.request{mcp.method=\"tools/call\" mcp.tool=flag_set}:tool.call{tool=flag.set trace_id=T actor=user:local-dev actor.source=default_actor budget.remaining=\"agent-daily-spend:cost=4.988\" decision=\"allowed\" pii.count=0 rules=\"redact-pii\" http.status=200 idempotency.key=\"flag-staging-checkout_v2-5\"}: mcpd::engine::record: call completed tool=flag.set status=200 masked=0 latency_us=L",
            "INFO mcp.request{mcp.method=\"tools/call\" mcp.tool=flag_set}:tool.call{tool=flag.set trace_id=T actor=user:local-dev actor.source=default_actor decision=\"denied\" pii.count=0 rules=\"prod-write-needs-ticket,redact-pii\"}: mcpd::engine::record: call failed tool=flag.set error=\"denied\" latency_us=L",
        ],
        "{stderr}"
    );
}

#[test]
fn the_json_call_line_keeps_every_span_field() {
    let stderr = calls("json", None);
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "mcpd::engine::record")
        .map(|mut v| {
            v["timestamp"] = json!("TS");
            v["fields"]["latency_us"] = json!(0);
            v["span"]["trace_id"] = json!("T");
            v
        })
        .collect();
    let span = |extra: Value| {
        let mut s = json!({"actor": "user:local-dev", "actor.source": "default_actor",
            "name": "tool.call", "trace_id": "T", "pii.count": 0});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let line = |fields: Value, span: Value| {
        json!({"timestamp": "TS", "level": "INFO", "fields": fields,
            "target": "mcpd::engine::record", "span": span})
    };
    assert_eq!(
        lines,
        [
            line(
                json!({"message": "call completed", "tool": "orders.export", "status": 200,
                    "masked": 36, "latency_us": 0}),
                span(
                    json!({"tool": "orders.export", "decision": "allowed", "pii.count": 36,
                    "budget.remaining": "agent-daily-spend:cost=4.998", "http.status": 200,
                    "rules": "redact-pii", "shadow": "no-bulk-exports:deny"})
                )
            ),
            line(
                json!({"message": "call completed", "tool": "flag.set", "status": 200,
                    "masked": 0, "latency_us": 0}),
                span(
                    json!({"tool": "flag.set", "decision": "allowed", "http.status": 200,
                    "budget.remaining": "agent-daily-spend:cost=4.988", "rules": "redact-pii",
                    "idempotency.key": "flag-staging-checkout_v2-5"})
                )
            ),
            line(
                json!({"message": "call failed", "tool": "flag.set", "error": "denied",
                    "latency_us": 0}),
                span(json!({"tool": "flag.set", "decision": "denied",
                    "rules": "prod-write-needs-ticket,redact-pii"}))
            ),
        ],
        "{stderr}"
    );
}

#[test]
fn a_log_filter_naming_a_span_still_filters_by_it() {
    // Info only inside `tool.call`: the call lines, not the start-up line.
    let stderr = calls("text", Some("warn,[tool.call]=info"));
    assert!(stderr.contains("call completed"), "{stderr}");
    assert!(stderr.contains("call failed"), "{stderr}");
    assert!(!stderr.contains("serving MCP"), "{stderr}");
}
