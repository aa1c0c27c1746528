//! Policy is never silently lost: a `policies.yaml` written in two parts while
//! `mcpd serve` runs never lets a prod write through (issue 14, item 1, reproduced as
//! found); rule changes are reported by id, a weakened enforced rule is logged at warn,
//! counted and audited; a pinned policy waits for `mcpd reload` or SIGHUP.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{HttpServer, call as http_call, open_session};
use crate::util::{ConfigDir, DemoApi, StdioClient, bin, is_error, run, text, validate};

const KEY: &str = "audit-key-for-policy-reload-tests-0123";

/// The shipped config without flag.set's rate limits, so a limit never hides a write
/// that policy let through.
fn unlimited() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    let tool = cfg.read("tools.d/flag.set.yaml");
    let (head, _) = tool.split_once("limits:").unwrap();
    cfg.write("tools.d/flag.set.yaml", head);
    cfg
}

/// Prod writes the demo API received.
fn prod_writes(api: &DemoApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r["method"] == "PUT" && r["path"].as_str().unwrap().starts_with("/flags/prod/"))
        .count()
}

/// Rewrites `path` every 50 ms in two parts: everything before `rules:`, then 3 ms
/// later the rest, until `stop`; returns how many times it wrote the file.
fn two_part_writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("\nrules:").unwrap() + 1;
        let (head, tail) = text.split_at(cut);
        let mut writes = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.write_all(head.as_bytes()).unwrap();
            f.flush().unwrap();
            // The writer's own pace, not synchronisation: the gap a reload can fall into.
            std::thread::sleep(Duration::from_millis(3));
            f.write_all(tail.as_bytes()).unwrap();
            drop(f);
            writes += 1;
            std::thread::sleep(Duration::from_millis(50).saturating_sub(started.elapsed()));
        }
        writes
    })
}

#[test]
fn a_policies_yaml_written_in_two_parts_never_lets_a_prod_write_through() {
    let api = DemoApi::start();
    let cfg = unlimited();
    let mut c = StdioClient::with_api(cfg.path(), &api);
    c.wait_stderr("transport=\"stdio\"");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = two_part_writer(cfg.path().join("policies.yaml"), stop.clone());
    let (mut calls, mut through) = (0, 0);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let r = c.call(
            "flag_set",
            json!({"env": "prod", "name": format!("f{calls}"), "percent": 50}),
        );
        calls += 1;
        if !is_error(&r) {
            through += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let writes_seen = prod_writes(&api);
    eprintln!(
        "two-part writer: {writes} rewrites, {calls} prod calls, {through} allowed, {writes_seen} prod writes at the upstream"
    );
    assert!(writes > 50, "the writer ran: {writes}");
    assert_eq!(
        writes_seen,
        0,
        "{through} of {calls} prod writes got through; stderr:\n{}",
        c.stderr()
    );
    // The policy in force at the end is still the whole file.
    let r = c.call(
        "flag_set",
        json!({"env": "prod", "name": "last", "percent": 50}),
    );
    assert!(text(&r).contains("[rule prod-write-needs-ticket]"), "{r}");
}

/// A tool file another team might add: another id and other argument names, but the
/// same flags endpoint as `flag.set`.
const ROLLOUT: &str = r#"name: flags.rollout
description: Roll a feature flag out to a share of traffic.
input:
  type: object
  required: [environment, flag, pct]
  properties:
    environment: { type: string }
    flag: { type: string }
    pct: { type: integer }
request:
  upstream: flags
  method: PUT
  path: "/flags/{{ args.environment }}/{{ args.flag }}"
  body: { percent: "{{ args.pct }}" }
"#;

#[test]
fn a_new_tool_that_puts_to_the_prod_flags_endpoint_is_covered_by_the_prod_rule() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/flags.rollout.yaml", ROLLOUT);
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let denied = c.call(
        "flags_rollout",
        json!({"environment": "prod", "flag": "checkout_v2", "pct": 50}),
    );
    assert!(is_error(&denied), "the bypass is open: {denied}");
    assert!(
        text(&denied).ends_with("[rule prod-write-needs-ticket]"),
        "{denied}"
    );
    assert_eq!(prod_writes(&api), 0);
    // Within policy: 10 percent in prod, anything in staging.
    for args in [
        json!({"environment": "prod", "flag": "checkout_v2", "pct": 10}),
        json!({"environment": "staging", "flag": "checkout_v2", "pct": 50}),
    ] {
        let r = c.call("flags_rollout", args.clone());
        assert!(!is_error(&r), "{args}: {r}");
    }
    assert_eq!(prod_writes(&api), 1);
}

/// `policies.yaml` without the prod rule.
fn without_prod_rule(cfg: &ConfigDir) -> String {
    let text = cfg.read("policies.yaml");
    let start = text.find("  # Selects what a call does").unwrap();
    let end = text.find("  - id: redact-pii").unwrap();
    format!("{}{}", &text[..start], &text[end..])
}

fn prod_50(c: &mut StdioClient, name: &str) -> Value {
    c.call(
        "flag_set",
        json!({"env": "prod", "name": name, "percent": 50}),
    )
}

#[test]
fn a_removed_prod_rule_is_reported_by_id_logged_at_warn_counted_and_audited() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "audit:\n  path: audit.jsonl\n");
    let mut c = StdioClient::start_with(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_AUDIT_KEY", KEY)],
        &["--metrics", "127.0.0.1:0"],
    );
    assert!(is_error(&prod_50(&mut c, "a")));
    cfg.write("policies.yaml", &without_prod_rule(&cfg));
    let stderr = c.wait_stderr("policy weakened");
    let warn = stderr
        .lines()
        .find(|l| l.contains("policy weakened"))
        .unwrap();
    assert!(warn.contains("WARN"), "{warn}");
    assert!(
        warn.contains("rule=prod-write-needs-ticket") && warn.contains("change=removed"),
        "{warn}"
    );
    c.wait_stderr("rules_removed=[\"prod-write-needs-ticket\"]");
    // The change applied: the same call goes through now.
    assert!(!is_error(&prod_50(&mut c, "b")));
    let addr = stderr
        .lines()
        .find(|l| l.contains("metrics on /metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap();
    let metrics = crate::util::http_get_text(&format!("http://{addr}/metrics"));
    assert!(
        metrics.contains("mcpd_policy_changes_total{change=\"weakened\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpd_policy_changes_total{change=\"removed\"} 1"),
        "{metrics}"
    );
    assert!(c.close());
    let records: Vec<Value> = cfg
        .read("audit.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let config: Vec<&Value> = records.iter().filter(|r| r["kind"] == "config").collect();
    assert_eq!(config.len(), 1, "{records:?}");
    assert_eq!(config[0]["event"], "policy_applied");
    assert_eq!(
        config[0]["rules_removed"],
        json!(["prod-write-needs-ticket"])
    );
    assert_eq!(
        config[0]["weakened"],
        json!([{"rule": "prod-write-needs-ticket", "change": "removed"}])
    );
    // Between the denied and the allowed call, in order; the log still verifies.
    // (A write's record of intent before it is sent is not a decision: left out here.)
    let kinds: Vec<String> = records
        .iter()
        .filter(|r| r["event"] != "intent")
        .map(|r| {
            r["kind"]
                .as_str()
                .or(r["decision"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["denied", "config", "allowed"]);
    let (code, out, err) = run(std::process::Command::new(bin())
        .args(["audit", "verify"])
        .arg(cfg.path().join("audit.jsonl"))
        .env("MCPD_AUDIT_KEY", KEY));
    assert_eq!(code, 0, "{out}{err}");
    // The three above and the allowed write's record of intent.
    assert!(out.contains("OK: 4 records"), "{out}");
}

/// `mcpd reload --config DIR`: (exit code, stdout, stderr).
fn mcpd_reload(cfg: &ConfigDir) -> (i32, String, String) {
    run(std::process::Command::new(bin())
        .arg("reload")
        .arg("--config")
        .arg(cfg.path()))
}

#[test]
fn a_pinned_policy_waits_for_mcpd_reload_which_reaches_the_stdio_and_http_servers() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "reload: { policy: manual }\n");
    let mut stdio = StdioClient::with_api(cfg.path(), &api);
    stdio.wait_stderr("transport=\"stdio\"");
    let http = HttpServer::start(cfg.path(), &[("DEMO_API_URL", &api.url)], &["--no-auth"]);
    let session = open_session(&http, None);
    let http_prod_50 = |name: &str| {
        let r = http_call(
            &http,
            None,
            &session,
            "flag_set",
            json!({"env": "prod", "name": name, "percent": 50}),
            None,
        );
        r.message()["result"].clone()
    };
    cfg.write("policies.yaml", &without_prod_rule(&cfg));
    let held = stdio.wait_stderr("NOT applied");
    assert!(
        held.contains("weakened=[\"prod-write-needs-ticket: removed\"]"),
        "{held}"
    );
    // Pinned: the file changed, the rule still holds, on both.
    assert!(is_error(&prod_50(&mut stdio, "a")));
    assert!(is_error(&http_prod_50("b")));
    assert_eq!(prod_writes(&api), 0);

    let (code, out, err) = mcpd_reload(&cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("WEAKENED prod-write-needs-ticket: removed")
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("(stdio): applied") && out.contains("(http): applied"),
        "{out}"
    );
    assert!(!is_error(&prod_50(&mut stdio, "c")));
    assert!(!is_error(&http_prod_50("d")));
    assert_eq!(prod_writes(&api), 2);
    http.wait_stderr("trigger=\"mcpd reload\"");

    // Asked again with nothing new: unchanged, still exit 0.
    let (code, out, _) = mcpd_reload(&cfg);
    assert_eq!(code, 0);
    assert_eq!(out.matches("unchanged").count(), 2, "{out}");
    // Gone servers (killed, their sockets left behind) are not servers.
    drop(stdio);
    drop(http);
    let (code, _, err) = mcpd_reload(&cfg);
    assert_eq!(code, 1);
    assert!(err.contains("no mcpd serve is running"), "{err}");
    assert_eq!(
        std::fs::read_dir(cfg.path().join(".mcpd/run"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn sighup_applies_a_pinned_policy() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "reload: { policy: manual }\n");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    c.wait_stderr("transport=\"stdio\"");
    cfg.write("policies.yaml", &without_prod_rule(&cfg));
    c.wait_stderr("NOT applied");
    assert!(is_error(&prod_50(&mut c, "a")));
    crate::http::signal(c.pid(), "HUP");
    c.wait_stderr("trigger=\"SIGHUP\"");
    assert!(!is_error(&prod_50(&mut c, "b")));
}

#[test]
fn validate_warns_about_a_write_tool_that_escapes_the_prod_rule() {
    let cfg = ConfigDir::shipped();
    // Another endpoint of the flags upstream, outside the rule's path.
    cfg.write(
        "tools.d/flags.reset.yaml",
        "name: flags.reset\ndescription: Reset every flag.\ninput: { type: object }\nrequest: { upstream: flags, method: POST, path: /admin/reset }\n",
    );
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 0, "a warning does not fail validation: {out}");
    assert!(
        out.contains("tools.d/flags.reset.yaml:1:7: warning: tool 'flags.reset' (POST /admin/reset on upstream 'flags') escapes rule 'prod-write-needs-ticket', which guards the other writes to 'flags' (flag.set)"),
        "{out}"
    );
    // A rule that names tool ids warns about the new tool on the same endpoint.
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "policies.yaml",
        "match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE], path: \"/flags/prod/*\" }",
        "tools: [flag.set]",
    );
    cfg.write("tools.d/flags.rollout.yaml", ROLLOUT);
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: tool 'flags.rollout' (PUT /flags/*/* on upstream 'flags') escapes rule 'prod-write-needs-ticket'"), "{out}");
    // The shipped config has no warning.
    let (_, out, _) = validate(&crate::util::repo());
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn explain_shows_the_request_the_rules_judged() {
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/flags.rollout.yaml", ROLLOUT);
    let explain = |args: &str| {
        run(std::process::Command::new(bin())
            .args(["explain", "flags.rollout", "--args", args, "--config"])
            .arg(cfg.path()))
    };
    let (code, out, _) = explain(r#"{"environment":"prod","flag":"checkout_v2","pct":50}"#);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("judged    PUT /flags/prod/checkout_v2 (upstream flags)"),
        "{out}"
    );
    assert!(
        out.contains("decision  DENY by prod-write-needs-ticket"),
        "{out}"
    );
    let (code, out, _) = explain(r#"{"environment":"staging","flag":"checkout_v2","pct":50}"#);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("prod-write-needs-ticket"))
        .unwrap();
    assert!(line.ends_with("path does not match"), "{line}");
}
