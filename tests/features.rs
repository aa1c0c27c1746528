//! Issue 16 through the real binary and the official Python SDK: logs, progress,
//! approvals through elicitation, resources (declared and kept results), content types
//! and prompts, over stdio and Streamable HTTP (scripts in tests/clients/, the extra
//! tools, rules and prompts in tests/fixtures/features/).

use std::process::Command;

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys};
use crate::python_client::{assert_passes, client};
use crate::util::{ConfigDir, DemoApi, StubApi, bin, repo, run};

const AUDIT_KEY: &str = "audit-key-for-tests-0123456789abcdef";

/// The shipped config, plus the fixture's tools, rules, budgets and prompts, memory state, a 2 s
/// approval timeout, the demo API's ticket system (`tickets.get`) and an audit log.
fn features() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    let fixtures = repo().join("tests/fixtures/features");
    for sub in ["tools.d", "prompts.d"] {
        for entry in std::fs::read_dir(fixtures.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            cfg.write(
                &format!("{sub}/{name}"),
                &std::fs::read_to_string(&p).unwrap(),
            );
        }
    }
    let rules = std::fs::read_to_string(fixtures.join("policy-rules.yaml")).unwrap();
    cfg.edit("policies.yaml", "rules:\n", &format!("rules:\n{rules}\n"));
    let budgets = std::fs::read_to_string(fixtures.join("policy-budgets.yaml")).unwrap();
    cfg.edit(
        "policies.yaml",
        "budgets:\n",
        &format!("budgets:\n{budgets}"),
    );
    cfg.edit(
        "mcpd.yaml",
        "  max_ttl: 1h\n",
        "  max_ttl: 1h\n  approval_timeout: 2s\n  ticket_tool: tickets.get\n",
    );
    cfg.append(
        "mcpd.yaml",
        "\nstate: \"memory:\"\naudit:\n  path: state/audit.jsonl\n",
    );
    cfg
}

/// Runs `script` (with `args`) against `mcpd serve` over stdio on `cfg`.
fn over_stdio(cfg: &ConfigDir, api: &DemoApi, script: &str, args: &[&str], label: &str) {
    let mut cmd = client(script);
    cmd.args(args)
        .env("MCPD_BIN", bin())
        .env("MCPD_CONFIG", cfg.path())
        .env("DEMO_API_URL", &api.url)
        .env("MCPD_AUDIT_KEY", AUDIT_KEY)
        .env("PYTHONWARNINGS", "ignore");
    assert_passes(&mut cmd, label, &String::new);
}

/// Runs `script` against `mcpd serve --http --no-auth` on `cfg` (calls run as the
/// default actor).
fn over_http(cfg: &ConfigDir, api: &DemoApi, script: &str, args: &[&str], label: &str) {
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_AUDIT_KEY", AUDIT_KEY),
    ];
    let server = HttpServer::start(cfg.path(), &env, &["--no-auth"]);
    let mut cmd = client(script);
    cmd.args(args)
        .env("MCPD_URL", server.mcp_url())
        .env("DEMO_API_URL", &api.url)
        .env("PYTHONWARNINGS", "ignore");
    assert_passes(&mut cmd, label, &|| server.stderr());
}

fn group_over_stdio(group: &str) {
    let api = DemoApi::start();
    over_stdio(
        &features(),
        &api,
        "features.py",
        &[group],
        &format!("features {group}"),
    );
}

fn group_over_http(group: &str) {
    let api = DemoApi::start();
    over_http(
        &features(),
        &api,
        "features.py",
        &[group],
        &format!("features {group}"),
    );
}

/// The audit log's records (intents left out).
fn audit_records(cfg: &ConfigDir) -> Vec<Value> {
    let text = cfg.read("state/audit.jsonl");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("event").is_none())
        .collect()
}

#[test]
fn set_level_filters_and_shadow_rules_retries_and_reloads_reach_the_client_redacted() {
    group_over_stdio("logging");
}

#[test]
fn over_http_each_session_has_its_own_log_level() {
    group_over_http("logging");
}

#[test]
fn progress_arrives_during_retries_and_as_a_heartbeat_past_a_second() {
    group_over_stdio("progress");
}

#[test]
fn over_http_progress_rides_the_call_s_stream() {
    group_over_http("progress");
}

#[test]
fn an_approval_rule_and_a_destructive_tool_ask_for_an_explicit_yes() {
    group_over_stdio("confirm");
}

#[test]
fn declared_resources_are_read_under_policy_and_redacted() {
    group_over_stdio("resources");
}

#[test]
fn image_audio_text_and_embedded_replies_are_their_content_types() {
    group_over_stdio("content");
}

#[test]
fn prompts_are_listed_rendered_completed_and_hot_reloaded() {
    group_over_stdio("prompts");
}

#[test]
fn over_http_prompts_and_resources_work_the_same() {
    group_over_http("prompts");
    group_over_http("resources");
}

#[test]
fn an_elicited_ticket_grants_one_prod_write_and_a_decline_denies_it_with_nothing_sent() {
    let api = DemoApi::start();
    let collector = crate::otlp::Collector::start();
    let cfg = features();
    cfg.append(
        "mcpd.yaml",
        &format!("telemetry:\n  otlp:\n    endpoint: {}\n", collector.url),
    );
    over_stdio(&cfg, &api, "approvals.py", &[], "approvals");
    let records = audit_records(&cfg);
    let prod: Vec<&Value> = records
        .iter()
        .filter(|r| r["tool"] == "flag.set" && r["args"]["env"] == "prod")
        .collect();
    let approved = prod
        .iter()
        .find(|r| r["approval"] == "ticket")
        .expect("an approved prod write in the audit log");
    assert_eq!(approved["decision"], "allowed");
    assert_eq!(approved["ticket"], "CHG-1234");
    assert_eq!(approved["approved_by"], "user:local-dev via mcp");
    for (outcome, reason) in [
        ("declined", "a human declined this call"),
        ("cancelled", "dismissed without an answer"),
        ("rejected", "does not match elevation.ticket_pattern"),
        (
            "rejected",
            "the ticket system did not confirm ticket 'CHG-9999' (tickets.get: ",
        ),
        ("timeout", "no one approved this call within 2 s"),
        (
            "withdrawn",
            "the client cancelled the call while a human was asked to approve it",
        ),
    ] {
        let r = prod
            .iter()
            .find(|r| r["approval"] == outcome && r["reason"].as_str().unwrap().contains(reason))
            .unwrap_or_else(|| panic!("no '{outcome}' record saying '{reason}' in {prod:#?}"));
        assert_eq!(r["decision"], "denied", "{r}");
        assert!(r.get("status").is_none(), "nothing was sent: {r}");
    }
    // The ticket system was asked as the caller, and each lookup left its own record.
    let lookups: Vec<(&Value, &Value)> = records
        .iter()
        .filter(|r| r["tool"] == "tickets.get")
        .map(|r| (&r["args"]["ticket"], &r["status"]))
        .collect();
    assert_eq!(
        lookups,
        [
            (&json!("CHG-1234"), &json!(200)),
            (&json!("CHG-9999"), &json!(404))
        ],
        "{records:#?}"
    );
    // The call's span says the same (mcpd flushed its spans when the client closed stdin).
    let attr = crate::otlp::attr;
    let spans = collector.spans();
    let calls: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "tool.call" && attr(s, "approval").is_some())
        .collect();
    let approved = calls
        .iter()
        .find(|s| attr(s, "approval").as_deref() == Some("ticket"))
        .unwrap_or_else(|| panic!("no approved tool.call span in {calls:#?}"));
    assert_eq!(attr(approved, "ticket").as_deref(), Some("CHG-1234"));
    assert_eq!(
        attr(approved, "approved_by").as_deref(),
        Some("user:local-dev via mcp")
    );
    assert_eq!(attr(approved, "decision").as_deref(), Some("allowed"));
    let declined = calls
        .iter()
        .find(|s| attr(s, "approval").as_deref() == Some("declined"))
        .unwrap_or_else(|| panic!("no declined tool.call span in {calls:#?}"));
    assert_eq!(attr(declined, "decision").as_deref(), Some("denied"));
    let (code, out, err) = run(Command::new(bin())
        .args(["audit", "verify"])
        .arg(cfg.path().join("state/audit.jsonl"))
        .env("MCPD_AUDIT_KEY", AUDIT_KEY));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn over_http_the_approval_rides_the_call_s_stream() {
    let api = DemoApi::start();
    over_http(&features(), &api, "approvals.py", &[], "approvals");
}

#[test]
fn mcpd_call_has_no_approver_and_gets_today_s_denial() {
    let api = DemoApi::start();
    let cfg = features();
    let (code, out, _) = run(Command::new(bin())
        .args(["call", "flag.set", "--args"])
        .arg(r#"{"env": "prod", "name": "checkout_v2", "percent": 50}"#)
        .arg("--config")
        .arg(cfg.path())
        .env("DEMO_API_URL", &api.url)
        .env("MCPD_AUDIT_KEY", AUDIT_KEY));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("denied by policy: prod changes above 10 percent need an elevation"),
        "{out}"
    );
    assert!(api.requests().is_empty(), "nothing was sent");
}

#[test]
fn a_5_mb_export_returns_a_link_the_caller_alone_reads_redacted() {
    const ROWS: usize = 29_000;
    let orders: Vec<Value> = (0..ROWS)
        .map(|i| {
            json!({
                "id": format!("ord-{i}"),
                "date": "2025-08-01",
                "customer": format!("customer number {i} of the large export test"),
                "email": format!("user{i}@example.com"),
                "card": "4111111111111111",
                "amount_cents": i * 7,
            })
        })
        .collect();
    let body = json!({ "orders": orders });
    let bytes = body.to_string().len();
    assert!(bytes > 5_000_000, "the export is {bytes} bytes");
    let stub = StubApi::start(body);
    let cfg = ConfigDir::token_only("\nstate: \"memory:\"\naudit:\n  path: state/audit.jsonl\n");
    cfg.edit(
        "mcpd.yaml",
        "upstreams:\n",
        &format!("upstreams:\n  big:\n    url: \"{}\"\n", stub.url),
    );
    cfg.write(
        "tools.d/orders.big.yaml",
        "name: orders.big\ndescription: A very large export.\ninput: { type: object, properties: {} }\n\
         request: { upstream: big, method: GET, path: /orders }\n\
         response:\n  select: \"$.orders\"\n  mask: [\"$[*].email\"]\n  max_bytes: 10000000\n",
    );
    let keys = Keys::new(&cfg);
    let (a, b) = (
        keys.token(&cfg, "user:ana", &["*"]),
        keys.token(&cfg, "user:bob", &["*"]),
    );
    let env = [
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
        ("MCPD_AUDIT_KEY", AUDIT_KEY),
    ];
    let server = HttpServer::start(cfg.path(), &env, &[]);
    let mut cmd = client("large_results.py");
    cmd.env("MCPD_URL", server.mcp_url())
        .env("TOKEN_A", &a)
        .env("TOKEN_B", &b)
        .env("ROWS", ROWS.to_string())
        .env("DEMO_API_URL", &stub.url)
        .env("PYTHONWARNINGS", "ignore");
    let (code, stdout, stderr) = run(&mut cmd);
    assert!(
        code == 0 && stdout.contains("large results: all checks passed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nmcpd:\n{}",
        server.stderr()
    );
    // Both reads of the link are in the audit log: ana's allowed, bob's denied.
    let link = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LINK "))
        .unwrap()
        .to_owned();
    let reads: Vec<Value> = audit_records(&cfg)
        .into_iter()
        .filter(|r| r["args"]["resource"] == link.as_str())
        .collect();
    let by = |actor: &str| reads.iter().find(|r| r["actor"] == actor).cloned().unwrap();
    assert_eq!(by("user:ana")["decision"], "allowed");
    assert_eq!(by("user:ana")["tool"], "orders.big");
    assert_eq!(by("user:bob")["decision"], "denied");
}

#[test]
fn the_seed_export_as_a_table_saves_most_of_its_bytes() {
    let api = DemoApi::start();
    let cfg = features();
    let call = |tool: &str| {
        let (code, out, err) = run(Command::new(bin())
            .args(["call", tool, "--args"])
            .arg(r#"{"from": "2025-08-01", "to": "2025-08-31"}"#)
            .arg("--config")
            .arg(cfg.path())
            .env("DEMO_API_URL", &api.url)
            .env("MCPD_AUDIT_KEY", AUDIT_KEY));
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let (json_result, table_result) = (call("orders.export"), call("orders.table"));
    let text = |r: &Value| r["content"][0]["text"].as_str().unwrap().len();
    let total = |r: &Value| r.to_string().len();
    let (json_text, table_text) = (text(&json_result), text(&table_result));
    assert_eq!(
        json_result["structuredContent"],
        table_result["structuredContent"]
    );
    // The figure docs/mcp-features.md quotes: the text the model reads, and the whole
    // result (text plus structuredContent).
    println!(
        "seed export (August): text {json_text} -> {table_text} bytes ({:.0} % saved); result {} -> {} bytes",
        100.0 * (1.0 - table_text as f64 / json_text as f64),
        total(&json_result),
        total(&table_result)
    );
    assert!(
        table_text * 2 < json_text,
        "the table ({table_text} bytes) should be under half the JSON ({json_text} bytes)"
    );
}
