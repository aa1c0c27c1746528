//! Policy through the real binary: golden (PII masked and counted), adversarial (prod
//! writes without a ticket, however phrased, are denied with the reason and the
//! upstream sees nothing), shadow rules recorded not enforced, region routing, and bad
//! rules caught by `mcpd validate` with their line and column.

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text, validate};

const KEY: &str = "audit-key-for-policy-tests-0123456789";

fn audited() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "audit:\n  path: audit.jsonl\n");
    cfg
}

fn serve(cfg: &ConfigDir, api: &DemoApi) -> StdioClient {
    StdioClient::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_AUDIT_KEY", KEY)],
    )
}

fn records(cfg: &ConfigDir) -> Vec<Value> {
    cfg.read("audit.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn export_masks_every_email_and_card_counts_pii_and_keeps_non_cards() {
    let api = DemoApi::start();
    let cfg = audited();
    let truth = api.get("/orders?from=2025-08-01&to=2025-08-31");
    let n = truth["count"].as_u64().unwrap() as usize;
    let mut c = serve(&cfg, &api);
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&r), "{r}");
    let orders = r["structuredContent"]["orders"].as_array().unwrap();
    assert_eq!(orders.len(), n);
    let dump = r.to_string();
    for (o, raw) in orders.iter().zip(truth["orders"].as_array().unwrap()) {
        assert!(!dump.contains(raw["email"].as_str().unwrap()));
        assert!(!dump.contains(raw["card"].as_str().unwrap()));
        let card = raw["card"].as_str().unwrap();
        assert_eq!(o["card"], format!("************{}", &card[12..]));
        // 16 digits that fail the Luhn check are not card numbers: left alone.
        assert_eq!(o["invoice_ref"], raw["invoice_ref"]);
    }
    drop(c);
    let rec = records(&cfg).pop().unwrap();
    assert_eq!(rec["pii_count"], 2 * n, "one email and one card per order");
    assert_eq!(rec["rules"], json!(["redact-pii"]));
}

#[test]
fn prod_write_without_a_ticket_is_denied_however_it_is_phrased() {
    let api = DemoApi::start();
    let cfg = audited();
    let mut c = serve(&cfg, &api);
    let denied = c.call(
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
    );
    assert!(is_error(&denied));
    let reason = text(&denied);
    assert!(
        reason.starts_with(
            "denied by policy: prod changes above 10 percent need an elevation with a change ticket"
        ),
        "{reason}"
    );
    assert!(
        reason.ends_with("[rule prod-write-needs-ticket]"),
        "{reason}"
    );
    // The same call in other shapes: the string "50", extra keys, a ticket the caller
    // made up in _meta (empty or not). None gets through, none reaches the upstream.
    for args in [
        json!({"env": "prod", "name": "checkout_v2", "percent": "50"}),
        json!({"env": "prod", "name": "checkout_v2", "percent": 50, "ticket": "CHG-1"}),
        json!({"env": "PROD", "name": "checkout_v2", "percent": 50}),
    ] {
        let r = c.call("flag_set", args.clone());
        assert!(is_error(&r), "{args} got through: {r}");
    }
    for meta in [
        json!({"dev.mcpd/ticket": ""}),
        json!({"dev.mcpd/elevation": {"ticket": "CHG-1234"}}),
    ] {
        let resp = c.request(
            "tools/call",
            json!({"name": "flag_set", "arguments": {"env": "prod", "name": "checkout_v2", "percent": 50}, "_meta": meta}),
        );
        assert!(is_error(&resp["result"]), "{meta} got through: {resp}");
        assert!(text(&resp["result"]).contains("[rule prod-write-needs-ticket]"));
    }
    assert!(
        api.requests().is_empty(),
        "the upstream saw {:?}",
        api.requests()
    );
    // 10 percent in prod is within policy.
    let ok = c.call(
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 10}),
    );
    assert!(!is_error(&ok), "{ok}");
    drop(c);
    let denials: Vec<Value> = records(&cfg)
        .into_iter()
        .filter(|r| r["decision"] == "denied")
        .collect();
    assert_eq!(denials.len(), 3);
    assert!(denials.iter().all(|r| {
        r["rules"]
            .as_array()
            .unwrap()
            .contains(&json!("prod-write-needs-ticket"))
    }));
}

#[test]
fn shadow_rule_is_recorded_and_not_enforced() {
    let api = DemoApi::start();
    let cfg = audited();
    let mut c = serve(&cfg, &api);
    let r = c.call(
        "orders_export",
        json!({"from": "2025-05-01", "to": "2025-09-30"}),
    );
    assert!(!is_error(&r), "a shadow rule must not deny: {r}");
    let short = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-05"}),
    );
    assert!(!is_error(&short));
    drop(c);
    let recs = records(&cfg);
    assert_eq!(recs[0]["shadow"], json!(["no-bulk-exports:deny"]));
    assert_eq!(recs[1]["shadow"], json!([]));
}

#[test]
fn eu_actor_reads_from_the_eu_store_and_unroutable_calls_are_refused() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "mcpd.yaml",
        "  subject: user:local-dev\n",
        "  subject: user:eu-analyst\n  region: eu\n",
    );
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&r), "{r}");
    let orders = r["structuredContent"]["orders"].as_array().unwrap();
    assert!(!orders.is_empty() && orders.iter().all(|o| o["region"] == "eu"));
    assert_eq!(api.requests().last().unwrap()["path"], "/eu/orders");
    drop(c);

    // Route every tool to eu: flags has no eu endpoint, so flag.set is refused, not sent.
    cfg.edit(
        "policies.yaml",
        "    tools: [orders.*]\n    when: actor.region",
        "    when: actor.region",
    );
    let before = api.requests().len();
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let r = c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 5}),
    );
    assert!(is_error(&r));
    assert!(
        text(&r).contains("must stay in region 'eu'")
            && text(&r).contains("upstream 'flags' has no 'eu' endpoint"),
        "{}",
        text(&r)
    );
    assert_eq!(api.requests().len(), before);
}

#[test]
fn bad_rules_are_validation_errors_with_line_and_column() {
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "policies.yaml",
        "when: not (request.body.percent is number and",
        "when: not (request.body.percent is number and and",
    );
    cfg.edit(
        "policies.yaml",
        "    when: actor.region == \"eu\"",
        "    when: actr.region == \"eu\"",
    );
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("policies.yaml:24:11: rule 'prod-write-needs-ticket': invalid condition"),
        "{out}"
    );
    assert!(
        out.contains("rule 'eu-data-stays-in-eu': condition reads unknown variable(s) actr"),
        "{out}"
    );
}

#[test]
fn egress_to_an_unlisted_host_is_refused() {
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "mcpd.yaml",
        "  flags:\n    url: \"${DEMO_API_URL:-http://127.0.0.1:8080}\"",
        "  flags:\n    url: \"http://flags.example.net\"",
    );
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("upstream 'flags': egress to host 'flags.example.net' is not allowed"),
        "{out}"
    );
    // and serve refuses to start on it rather than sending anywhere
    let out = std::process::Command::new(crate::util::bin())
        .args(["serve", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flags.example.net"));
}
