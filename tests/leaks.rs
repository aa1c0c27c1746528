//! No PII or secret out, through the real binary (issue 14, items 3 and 4): emails and
//! card numbers used as object keys, grouped with Unicode spaces or dashes, or glued
//! to letters; an upstream error echoing a percent-encoded email; rmcp's debug lines
//! at `MCPD_LOG=debug` (text and JSON); a secret the upstream echoes back without a
//! recognisable prefix; a client's idempotency key. Each is checked in everything
//! that leaves mcpd: the MCP answer (stdout), the logs (stderr) and the audit log.

use std::cell::RefCell;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::pii;
use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

const AUDIT_KEY: &str = "audit-key-for-tests-0123456789abcdef";
/// A secret with no recognisable prefix: only knowing the value finds it.
const SECRET: &str = "hunter2Zq8xkcd42";

/// Test tools on the demo API: `echo.post` sends a document (and the secret, in a
/// header) to `/echo`, which answers with what it received; `probe.get` reads
/// `/probe/NAME`, which answers 404 echoing its percent-encoded path.
const TOOLS: &str = r#"name: echo.post
description: Sends a document to the echo endpoint and returns what it received.
input:
  type: object
  required: [doc]
  properties:
    doc: {}
request:
  upstream: orders
  method: POST
  path: /echo
  headers: { X-Api-Key: "{{ secret.DEMO_ECHO_KEY }}" }
  body: { doc: "{{ args.doc }}" }
---
name: probe.get
description: Reads a probe by name.
input:
  type: object
  additionalProperties: false
  required: [name]
  properties:
    name: { type: string }
request:
  upstream: orders
  method: GET
  path: /probe/{{ args.name }}
"#;

/// The raw values that must not come out, in every form the tests send them.
const RAW: &[&str] = &[
    "jane.doe@example.com",
    "jane.doe%40example.com",
    "ann.lee@example.org",
    "4111111111111111",
    "5500005555555559",
    "4111\u{a0}1111\u{a0}1111\u{a0}1111",
    "4111\u{2013}1111\u{2013}1111\u{2013}1111",
    "4012888888881881",
    SECRET,
];

fn config() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/leaks.yaml", TOOLS);
    cfg.append("mcpd.yaml", "audit:\n  path: state/audit.jsonl\n");
    cfg
}

fn serve(cfg: &ConfigDir, api: &DemoApi, env: &[(&str, &str)]) -> StdioClient {
    let mut all = vec![
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_AUDIT_KEY", AUDIT_KEY),
        ("DEMO_ECHO_KEY", SECRET),
    ];
    all.extend_from_slice(env);
    StdioClient::start(cfg.path(), &all)
}

/// Every raw value found in `what` (named `name` in the failure message).
fn assert_clean(name: &str, what: &str) {
    let found: Vec<&&str> = RAW.iter().filter(|raw| what.contains(**raw)).collect();
    assert!(found.is_empty(), "{name} leaks {found:?}:\n{what}");
}

/// A document with PII where the first detectors did not look.
fn pii_document() -> Value {
    json!({
        "jane.doe@example.com": {"card": "4111\u{a0}1111\u{a0}1111\u{a0}1111"},
        "5500005555555559": "a card number as a key",
        "note": "paid with x4111111111111111x, refund to 4111\u{2013}1111\u{2013}1111\u{2013}1111",
        "nested": [{"ann.lee@example.org": [4012888888881881u64]}]
    })
}

#[test]
fn pii_in_keys_unicode_groupings_and_glued_digits_never_reaches_the_model_or_the_audit_log() {
    let api = DemoApi::start();
    let cfg = config();
    let mut c = serve(&cfg, &api, &[]);
    let r = c.call("echo_post", json!({ "doc": pii_document() }));
    assert!(!is_error(&r), "{r}");
    let received = &r["structuredContent"]["received"]["doc"];
    // Keys are masked in place, values are still there for the model to use.
    assert_eq!(
        received["j***@example.com"]["card"], "************1111",
        "{r}"
    );
    assert_eq!(received["************5559"], "a card number as a key");
    assert_eq!(
        received["note"],
        "paid with x************1111x, refund to ************1111"
    );
    assert_eq!(
        received["nested"][0]["a***@example.org"][0],
        "************1881"
    );
    // The upstream did get the real document: redaction is on the way back only.
    assert_eq!(api.requests().last().unwrap()["path"], "/echo");
    c.close();
    assert_clean("the answer", &c.seen.join("\n"));
    assert_clean("the audit log", &cfg.read("state/audit.jsonl"));
}

#[test]
fn an_upstream_error_echoing_a_percent_encoded_email_is_redacted_for_the_model_and_the_audit_log() {
    let api = DemoApi::start();
    let cfg = config();
    let mut c = serve(&cfg, &api, &[]);
    let r = c.call("probe_get", json!({"name": "jane.doe@example.com"}));
    assert!(is_error(&r), "{r}");
    assert_eq!(
        text(&r),
        "upstream 'orders' answered HTTP 404: not found /probe/j***@example.com"
    );
    // What reached the upstream: the encoded path, as templates encode a segment.
    let seen = api.requests();
    assert_eq!(
        seen.last().unwrap()["path"],
        "/probe/jane.doe%40example.com"
    );
    c.close();
    assert_clean("the answer", &c.seen.join("\n"));
    let audit = cfg.read("state/audit.jsonl");
    assert!(
        audit.contains("not found /probe/j***@example.com"),
        "{audit}"
    );
    assert_clean("the audit log", &audit);
}

#[test]
fn a_secret_echoed_without_a_prefix_is_scrubbed_from_the_answer_logs_and_audit() {
    let api = DemoApi::start();
    let cfg = config();
    let mut c = serve(&cfg, &api, &[("MCPD_LOG", "debug")]);
    let r = c.call("echo_post", json!({"doc": {"echo": SECRET}}));
    assert!(!is_error(&r), "{r}");
    let got = &r["structuredContent"]["received"];
    assert_eq!(got["headers"]["x-api-key"], "[secret DEMO_ECHO_KEY]", "{r}");
    assert_eq!(got["doc"]["echo"], "[secret DEMO_ECHO_KEY]");
    // In an error too: the echo endpoint answers 400 with the same body on request.
    let r = c.call("echo_post", json!({"doc": {"status": 400, "echo": SECRET}}));
    assert!(is_error(&r), "{r}");
    assert!(text(&r).contains("[secret DEMO_ECHO_KEY]"), "{r}");
    c.close();
    assert_clean("the answer", &c.seen.join("\n"));
    assert_clean("the debug log", &c.stderr());
    assert_clean("the audit log", &cfg.read("state/audit.jsonl"));
}

/// rmcp logs every request's arguments and every result at debug level; mcpd's logs
/// must carry neither, in text or JSON.
#[test]
fn debug_logs_carry_no_raw_arguments_or_results_in_text_or_json() {
    let api = DemoApi::start();
    for format in ["text", "json"] {
        let cfg = config();
        let mut c = serve(
            &cfg,
            &api,
            &[("MCPD_LOG", "debug"), ("MCPD_LOG_FORMAT", format)],
        );
        let r = c.call("echo_post", json!({ "doc": pii_document() }));
        assert!(!is_error(&r), "{r}");
        let r = c.call(
            "orders_export",
            json!({"from": "2025-08-01", "to": "2025-08-02"}),
        );
        assert!(!is_error(&r), "{r}");
        c.close();
        let log = c.stderr();
        assert!(log.contains("call completed"), "{format}: {log}");
        assert!(!log.contains("received request"), "{format}: {log}");
        assert!(!log.contains("response message"), "{format}: {log}");
        assert_clean(&format!("the {format} debug log"), &log);
        // The seed orders' own PII (emails, cards) stays out too.
        let orders = api.get("/orders?from=2025-08-01&to=2025-08-02");
        for o in orders["orders"].as_array().unwrap() {
            for field in ["email", "card"] {
                let raw = o[field].as_str().unwrap();
                assert!(!log.contains(raw), "{format} log leaks {raw}");
            }
        }
    }
}

#[test]
fn a_client_idempotency_key_is_redacted_in_logs_and_audit() {
    let api = DemoApi::start();
    let cfg = config();
    let mut c = serve(&cfg, &api, &[("MCPD_LOG_FORMAT", "json")]);
    let key = "refund-jane.doe@example.com-4111111111111111";
    let resp = c.request(
        "tools/call",
        json!({
            "name": "flag_set",
            "arguments": {"env": "staging", "name": "checkout_v2", "percent": 5},
            "_meta": {"dev.mcpd/idempotencyKey": key}
        }),
    );
    assert!(!is_error(&resp["result"]), "{resp}");
    c.close();
    let log = c.stderr();
    assert!(log.contains("r***@example.com-************1111"), "{log}");
    assert_clean("the log", &log);
    let audit = cfg.read("state/audit.jsonl");
    assert!(
        audit.contains(r#""idempotency_key":"r***@example.com-************1111""#),
        "{audit}"
    );
    assert_clean("the audit log", &audit);
}

/// The redaction property of `pii.rs`, through the binary: random documents with a
/// card or an email hidden anywhere go out to the echo endpoint and come back; the
/// answer never holds the secret. A quarter of `PROPTEST_CASES` (64 by default).
#[test]
fn a_card_or_email_anywhere_in_an_upstream_reply_never_reaches_the_model() {
    let api = DemoApi::start();
    let cfg = config();
    let client = RefCell::new(serve(&cfg, &api, &[]));
    let mut runner = TestRunner::new(pii::config((pii::cases() / 4).max(1)));
    runner
        .run(&pii::document(), |(secret, doc)| {
            let r = client.borrow_mut().call("echo_post", json!({ "doc": doc }));
            prop_assert!(!is_error(&r), "{r}");
            prop_assert!(
                !secret.survives(&r),
                "{secret:?} survives:\n in:  {doc}\n out: {r}"
            );
            Ok(())
        })
        .unwrap();
}
