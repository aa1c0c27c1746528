//! The audit log and trace stitching through the real binary: every call leaves one
//! signed record (arguments redacted; a write also its record of intent, written before
//! it is sent), `mcpd audit verify` passes on the clean log and
//! names the first edited, deleted or reordered record; a caller's `traceparent` in
//! `_meta` continues into the upstream request and the record.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run};

const KEY: &str = "audit-key-for-tests-0123456789abcdef";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn with_audit() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "audit:\n  path: state/audit.jsonl\n");
    cfg
}

fn verify(cfg: &ConfigDir) -> (i32, String) {
    let (code, out, _) = run(Command::new(bin())
        .args(["audit", "verify"])
        .arg(cfg.path().join("state/audit.jsonl"))
        .env("MCPD_AUDIT_KEY", KEY));
    (code, out)
}

/// `mcpd call orders.export` with this audit key (none: the variable unset).
fn call_once(cfg: &ConfigDir, audit_key: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["call", "orders.export", "--args", "{}", "--config"])
        .arg(cfg.path())
        .env_remove("MCPD_AUDIT_KEY");
    if let Some(key) = audit_key {
        cmd.env("MCPD_AUDIT_KEY", key);
    }
    run(&mut cmd)
}

/// Three calls (allowed, invalid, allowed with a traceparent), then mcpd exits.
fn three_calls(cfg: &ConfigDir, api: &DemoApi) -> String {
    let mut c = StdioClient::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_AUDIT_KEY", KEY)],
    );
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r));
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "ann@example.com", "percent": 5}),
    );
    assert!(is_error(&r));
    let resp = c.request(
        "tools/call",
        json!({"name": "flag_set", "arguments": {"env": "staging", "name": "checkout_v2", "percent": 10}, "_meta": {"traceparent": TP}}),
    );
    assert!(!is_error(&resp["result"]), "{resp}");
    let stderr = c.stderr();
    drop(c);
    stderr
}

fn records(cfg: &ConfigDir) -> Vec<String> {
    cfg.read("state/audit.jsonl")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replaces the audit log with `lines`.
fn write_records(cfg: &ConfigDir, lines: &[String]) {
    cfg.write(
        "state/audit.jsonl",
        &lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    );
}

#[test]
fn every_call_is_recorded_and_the_log_verifies() {
    let api = DemoApi::start();
    let cfg = with_audit();
    let stderr = three_calls(&cfg, &api);
    let lines = records(&cfg);
    // Three calls, and the write's record of intent written before it was sent.
    assert_eq!(lines.len(), 4, "{lines:?}");
    let all_recs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (intents, recs): (Vec<Value>, Vec<Value>) =
        all_recs.into_iter().partition(|r| r["event"] == "intent");
    assert_eq!(recs.len(), 3, "{lines:?}");
    assert_eq!(recs[0]["tool"], "orders.export");
    assert_eq!(recs[0]["decision"], "allowed");
    assert_eq!(recs[1]["decision"], "invalid");
    assert_eq!(recs[2]["status"], 200);
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0]["tool"], "flag.set");
    assert_eq!(intents[0]["method"], "PUT");
    assert_eq!(recs[2]["intent"], intents[0]["seq"]);
    // arguments are redacted before they are recorded or logged
    let all = format!("{}{stderr}", lines.join("\n"));
    assert!(
        !all.contains("ann@example.com"),
        "raw email recorded or logged"
    );
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: 4 records"), "{out}");
}

#[test]
fn caller_traceparent_reaches_the_upstream_and_the_record() {
    let api = DemoApi::start();
    let cfg = with_audit();
    three_calls(&cfg, &api);
    let seen = api.requests();
    let put = seen.iter().find(|r| r["method"] == "PUT").unwrap();
    let tp = put["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the upstream gets a new span id: {tp}"
    );
    // a call without a traceparent still carries one, on a trace of its own
    let get = seen.iter().find(|r| r["method"] == "GET").unwrap();
    assert!(
        !get["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let last: Value = serde_json::from_str(records(&cfg).last().unwrap()).unwrap();
    assert_eq!(last["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn verify_names_an_edited_a_deleted_and_a_reordered_record() {
    let api = DemoApi::start();
    let cfg = with_audit();
    three_calls(&cfg, &api);
    let clean = records(&cfg);
    let write = |lines: &[String]| write_records(&cfg, lines);

    let mut edited = clean.clone();
    edited[1] = edited[1].replace("\"invalid\"", "\"allowed\"");
    write(&edited);
    let (code, out) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(out.contains("line 2: signature does not match"), "{out}");

    let mut deleted = clean.clone();
    deleted.remove(0);
    write(&deleted);
    let (code, out) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(out.contains("line 1: seq 2 where 1 was expected"), "{out}");

    let mut reordered = clean.clone();
    reordered.swap(1, 2);
    write(&reordered);
    let (code, out) = verify(&cfg);
    assert_eq!(code, 1);
    assert!(out.contains("line 2:"), "{out}");
}

#[test]
fn audit_without_a_key_refuses_to_start() {
    let cfg = with_audit();
    let (code, _, err) = call_once(&cfg, None);
    assert_eq!(code, 2);
    assert!(err.contains("MCPD_AUDIT_KEY"));
}

#[test]
fn metrics_endpoint_counts_calls_by_tool_and_decision() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = StdioClient::start_with(
        cfg.path(),
        &[("DEMO_API_URL", &api.url)],
        &["--metrics", "127.0.0.1:0"],
    );
    c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    c.call(
        "flag_set",
        json!({"env": "staging", "name": "x", "percent": 500}),
    );
    // A write and its replay: the replay spends nothing, so prod-flag-writes (200 a day)
    // has 199 calls left.
    let write = json!({"env": "staging", "name": "x", "percent": 5});
    c.call("flag_set", write.clone());
    c.call("flag_set", write);
    let stderr = c.wait_stderr("metrics on /metrics");
    let addr = stderr
        .lines()
        .find(|l| l.contains("metrics on /metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap();
    let text = crate::util::http_get_text(&format!("http://{addr}/metrics"));
    assert!(
        text.contains("mcpd_calls_total{tool=\"orders.export\",decision=\"allowed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mcpd_calls_total{tool=\"flag.set\",decision=\"invalid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mcpd_call_duration_seconds_bucket{le="),
        "{text}"
    );
    assert!(
        text.contains("mcpd_pii_redactions_total{tool=\"orders.export\"}"),
        "{text}"
    );
    assert!(
        text.contains("mcpd_idempotent_replays_total{tool=\"flag.set\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "mcpd_budget_remaining{budget=\"prod-flag-writes\",unit=\"calls\",scope=\"user:local-dev\"} 199"
        ),
        "{text}"
    );
}

#[test]
fn json_logs_carry_the_call_fields_and_no_raw_pii() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let mut c = StdioClient::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_LOG_FORMAT", "json")],
    );
    c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    c.call(
        "flag_set",
        json!({"env": "staging", "name": "ann@example.com", "percent": 5}),
    );
    let stderr = c.wait_stderr("call failed");
    let calls: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "call completed" || v["fields"]["message"] == "call failed"
        })
        .collect();
    assert_eq!(calls.len(), 2, "{stderr}");
    assert_eq!(calls[0]["span"]["tool"], "orders.export");
    assert_eq!(calls[0]["span"]["decision"], "allowed");
    assert_eq!(calls[0]["span"]["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(calls[1]["span"]["decision"], "invalid");
    assert!(!stderr.contains("ann@example.com"));
}

fn keygen() -> (String, String) {
    let out = Command::new(bin())
        .args(["audit", "keygen"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    (field("MCPD_AUDIT_KEY="), field("public_key="))
}

fn with_ed25519_audit() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.append(
        "mcpd.yaml",
        "audit:\n  path: state/audit.jsonl\n  signing: ed25519\n",
    );
    cfg
}

fn verify_with(cfg: &ConfigDir, args: &[&str], key: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["audit", "verify"])
        .arg(cfg.path().join("state/audit.jsonl"))
        .args(args)
        .env_remove("MCPD_AUDIT_KEY");
    if let Some(key) = key {
        cmd.env("MCPD_AUDIT_KEY", key);
    }
    let (code, out, err) = run(&mut cmd);
    (code, format!("{out}{err}"))
}

#[test]
fn an_ed25519_signed_log_verifies_with_the_public_key_alone() {
    let (private, public) = keygen();
    let api = DemoApi::start();
    let cfg = with_ed25519_audit();
    let mut c = StdioClient::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_AUDIT_KEY", &private)],
    );
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    assert!(!is_error(&r));
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "x", "percent": 5}),
    );
    assert!(!is_error(&r));
    assert!(c.close(), "{}", c.stderr());
    assert!(records(&cfg)[0].contains("\"sig\":\"ed25519:"));

    let (code, out) = verify_with(&cfg, &["--public-key", &public], None);
    assert_eq!(code, 0, "{out}");
    // Two calls and the write's record of intent.
    assert!(out.starts_with("OK: 3 records"), "{out}");
    cfg.write("public.key", &format!("{public}\n"));
    let key_file = cfg.path().join("public.key");
    let (code, out) = verify_with(&cfg, &["--public-key", key_file.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}");

    // the private key as an HMAC key does not verify it: the scheme is named
    let (code, out) = verify_with(&cfg, &[], Some(&private));
    assert_eq!(code, 1);
    assert!(
        out.contains("line 1: the record is signed with Ed25519"),
        "{out}"
    );

    let mut edited = records(&cfg);
    edited[1] = edited[1].replace("\"staging\"", "\"prod\"");
    write_records(&cfg, &edited);
    let (code, out) = verify_with(&cfg, &["--public-key", &public], None);
    assert_eq!(code, 1);
    assert!(out.contains("line 2: signature does not match"), "{out}");
}

#[test]
fn a_malformed_ed25519_key_stops_mcpd_naming_the_variable() {
    let cfg = with_ed25519_audit();
    let (code, _, err) = call_once(&cfg, Some("hunter2-not-hex"));
    assert_eq!(code, 2);
    assert!(
        err.contains("MCPD_AUDIT_KEY") && err.contains("64 hex digits"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the key was echoed: {err}");
}
