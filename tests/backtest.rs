//! `mcpd backtest` and `mcpd shadow report` through the binary: the demo flows recorded
//! in a signed audit log, replayed through a candidate that tightens the prod rule and
//! one that loosens it (exact counts, CI thresholds), a tampered log refused, redacted
//! arguments (and an argument whose key held an email) counted apart, a log written by
//! several processes and rotated into several files, and what the shadow rule recorded.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, bin, run};

pub(crate) const KEY: &str = "backtest-audit-key-0123456789abcdef";

/// `mcpd ARGS --config DIR` with the audit key: (exit code, stdout, stderr).
fn mcpd(cfg: &ConfigDir, args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg.path())
        .env("MCPD_AUDIT_KEY", KEY))
}

/// The shipped config with an audit log, and the demo flows recorded in it.
pub(crate) fn demo_log() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\naudit:\n  path: state/audit.jsonl\n");
    let (code, out, err) = mcpd(&cfg, &["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every flow behaved as expected"), "{out}");
    cfg
}

/// `mcpd backtest --json ARGS`: the exit code and the report.
fn backtest(cfg: &ConfigDir, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["backtest", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = mcpd(cfg, &all);
    assert!(code == 0 || code == 1, "exit {code}: {out}{err}");
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, report)
}

/// The numbers under `keys` in a report.
pub(crate) fn counts(report: &Value, keys: &[&str]) -> Vec<u64> {
    keys.iter()
        .map(|k| {
            report[*k]
                .as_u64()
                .unwrap_or_else(|| panic!("no {k}: {report}"))
        })
        .collect()
}

pub(crate) fn rule<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id}: {report}"))
}

/// The shipped prod rule's selection.
const PROD_MATCH: &str =
    r#"match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE], path: "/flags/prod/*" }"#;
/// Every write to a flag, in any environment.
const ANY_FLAG_WRITE: &str = "match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE] }";

/// The shipped policy with its prod rule's selection (`match`) and condition replaced.
fn candidate(cfg: &ConfigDir, name: &str, select: &str, when: &str) -> String {
    let shipped = cfg.read("policies.yaml");
    let from = format!(
        "{PROD_MATCH}\n    when: not (request.body.percent is number and request.body.percent <= 10) and not elevation.ticket"
    );
    assert!(shipped.contains(&from), "{shipped}");
    cfg.write(
        name,
        &shipped.replacen(&from, &format!("{select}\n    when: {when}"), 1),
    );
    cfg.path().join(name).display().to_string()
}

#[test]
fn the_demo_log_replayed_through_the_shipped_policy_changes_nothing() {
    let cfg = demo_log();
    let (code, r) = backtest(&cfg, &[]);
    assert_eq!(code, 0);
    // ten flows; the 150 percent one (arguments) and the out-of-scope prod write (scope)
    // ended before policy
    assert_eq!(
        (
            r["calls"].as_u64(),
            r["replayed"].as_u64(),
            r["before_policy"].as_u64()
        ),
        (Some(10), Some(8), Some(2))
    );
    assert_eq!(
        counts(&r, &["newly_denied", "newly_allowed", "unchanged"]),
        [0, 0, 8]
    );
    assert_eq!(r["chains"], 1);
    // the shadow rule, if it were enforced, would deny the five-month export
    let shadow = rule(&r, "no-bulk-exports");
    assert_eq!(shadow["mode"], "shadow");
    assert_eq!(shadow["newly_denies"]["calls"], 1);
    assert_eq!(
        shadow["newly_denies"]["examples"][0]["args"],
        json!({"from": "2025-05-01", "to": "2025-09-30"})
    );
}

#[test]
fn a_tighter_prod_rule_newly_denies_the_staging_writes_with_exact_counts() {
    let cfg = demo_log();
    // every write above 5 percent needs a ticket, in any env
    let tight = candidate(
        &cfg,
        "tight.yaml",
        ANY_FLAG_WRITE,
        "not (request.body.percent is number and request.body.percent <= 5) and not elevation.ticket",
    );
    let (code, r) = backtest(&cfg, &["--policies", &tight]);
    assert_eq!(code, 0);
    assert_eq!(
        counts(&r, &["newly_denied", "newly_allowed", "undecided"]),
        [2, 0, 0]
    );
    let prod = &rule(&r, "prod-write-needs-ticket")["newly_denies"];
    assert_eq!(prod["calls"], 2);
    assert_eq!(prod["by_tool"], json!({"flag.set": 2}));
    assert_eq!(prod["by_actor"], json!({"user:local-dev": 2}));
    let e = &prod["examples"][0];
    assert_eq!(
        e["args"],
        json!({"env": "staging", "name": "checkout_v2", "percent": 10})
    );
    assert_eq!(
        (e["before"].as_str(), e["after"].as_str()),
        (Some("allowed"), Some("denied by prod-write-needs-ticket"))
    );
    // the elevated prod write (CHG-1234) stays allowed: its grant was recorded
    assert_eq!(
        rule(&r, "prod-write-needs-ticket")["newly_allows"]["calls"],
        0
    );

    // CI: the threshold decides the exit code
    let (code, _) = backtest(
        &cfg,
        &["--policies", &tight, "--fail-if-denies-more-than", "1"],
    );
    assert_eq!(code, 1);
    let (code, _) = backtest(
        &cfg,
        &["--policies", &tight, "--fail-if-denies-more-than", "2"],
    );
    assert_eq!(code, 0);
    let (code, out, err) = mcpd(
        &cfg,
        &[
            "backtest",
            "--policies",
            &tight,
            "--fail-if-denies-more-than",
            "0",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("FAIL: 2 call(s) newly denied, more than --fail-if-denies-more-than 0"),
        "{err}"
    );
    assert!(out.contains("rule prod-write-needs-ticket (enforce deny)\n  newly denies: 2 call(s); by tool: flag.set 2; by actor: user:local-dev 2"), "{out}");
    assert!(out.contains(r#"user:local-dev flag.set {"env":"staging","name":"checkout_v2","percent":10}: allowed -> denied by prod-write-needs-ticket"#), "{out}");
    assert!(out.contains("summary    2 newly denied, 0 newly allowed, 0 undecided (hidden values), 6 unchanged, of 8 replayed"), "{out}");

    // promoting the shadow rule as well adds the five-month export
    let promoted = cfg.read("tight.yaml").replacen(
        "    mode: shadow          # measured, not enforced yet\n",
        "",
        1,
    );
    cfg.write("promoted.yaml", &promoted);
    let path = cfg.path().join("promoted.yaml").display().to_string();
    let (_, r) = backtest(&cfg, &["--policies", &path]);
    assert_eq!(r["newly_denied"], 3);
    assert_eq!(rule(&r, "no-bulk-exports")["mode"], "enforce");
}

#[test]
fn a_looser_prod_rule_newly_allows_the_denied_prod_writes() {
    let cfg = demo_log();
    let loose = candidate(
        &cfg,
        "loose.yaml",
        PROD_MATCH,
        "not (request.body.percent is number and request.body.percent <= 60) and not elevation.ticket",
    );
    let (code, r) = backtest(
        &cfg,
        &["--policies", &loose, "--fail-if-allows-more-than", "1"],
    );
    assert_eq!(code, 1);
    assert_eq!(counts(&r, &["newly_denied", "newly_allowed"]), [0, 2]);
    let allows = &rule(&r, "prod-write-needs-ticket")["newly_allows"];
    assert_eq!(
        allows["by_actor"],
        json!({"agent:release": 1, "user:local-dev": 1})
    );
    assert_eq!(
        allows["examples"][0]["before"],
        "denied by prod-write-needs-ticket"
    );
    assert_eq!(allows["examples"][0]["after"], "allowed");
    // a candidate that drops the rule: its denials are charged to it, as absent
    cfg.write(
        "none.yaml",
        "default: allow\negress: [127.0.0.1, localhost]\n",
    );
    let none = cfg.path().join("none.yaml").display().to_string();
    let (_, r) = backtest(&cfg, &["--policies", &none]);
    assert_eq!(r["newly_allowed"], 2);
    assert_eq!(rule(&r, "prod-write-needs-ticket")["mode"], "absent");
}

#[test]
fn a_candidate_that_does_not_compile_is_refused_with_its_position() {
    let cfg = demo_log();
    let bad = candidate(&cfg, "bad.yaml", "tools: [flag.set]", "args.envv == 1");
    let (code, out, err) = mcpd(&cfg, &["backtest", "--policies", &bad]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("'args.envv'"), "{err}");
}

#[test]
fn a_tampered_log_is_refused_and_nothing_is_reported() {
    let cfg = demo_log();
    let log = cfg.read("state/audit.jsonl");
    // the denied prod write, turned into 5 percent
    let forged = log.replacen(r#""percent":50"#, r#""percent":5"#, 1);
    assert_ne!(forged, log);
    cfg.write("state/audit.jsonl", &forged);
    for cmd in [&["backtest"][..], &["shadow", "report"][..]] {
        let (code, out, err) = mcpd(&cfg, cmd);
        assert_eq!(code, 2, "{cmd:?}: {out}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("refusing to replay"), "{err}");
        assert!(
            err.contains("signature does not match: the record was altered"),
            "{err}"
        );
    }
    // another key is refused the same way
    let cfg = demo_log();
    let (code, _, err) = run(Command::new(bin())
        .args(["backtest", "--config"])
        .arg(cfg.path())
        .env("MCPD_AUDIT_KEY", "another-key-another-key-0123456789"));
    assert_eq!(code, 2);
    assert!(err.contains("line 1: signature does not match"), "{err}");
}

#[test]
fn the_shadow_report_shows_what_the_bulk_export_rule_would_have_done() {
    let cfg = demo_log();
    let (code, out, err) = mcpd(&cfg, &["shadow", "report", "--json"]);
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["calls"].as_u64(), r["reached_policy"].as_u64()),
        (Some(10), Some(8))
    );
    let rules = r["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let s = &rules[0];
    // three exports reached policy; one ran over 31 days, and it was allowed then
    assert_eq!(
        (
            &s["id"],
            &s["now"],
            &s["covered"],
            &s["fired"]["calls"],
            &s["fired_allowed"]
        ),
        (
            &json!("no-bulk-exports"),
            &json!("shadow"),
            &json!(3),
            &json!(1),
            &json!(1)
        )
    );
    let (_, text, _) = mcpd(&cfg, &["shadow", "report"]);
    assert!(text.contains("rule no-bulk-exports (shadow, deny)\n  would have acted on 1 call(s) of 3 call(s) it covers (33%); 1 of them were allowed then"), "{text}");
}

const CONTACT: &str = r#"
name: customer.contact
description: Look up a customer's contact record by id and email.
input:
  type: object
  additionalProperties: false
  required: [id, email]
  properties:
    id: { type: string }
    email: { type: string }
request:
  upstream: orders
  method: GET
  path: "/flaky/{{ args.id }}"
  query: { fail: "0", email: "{{ args.email }}" }
"#;

#[test]
fn a_rule_that_reads_a_redacted_argument_is_counted_apart_never_guessed() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\naudit:\n  path: audit.jsonl\n");
    cfg.write("tools.d/customer.contact.yaml", CONTACT);
    for (id, email) in [
        ("c1", "ana@corp.example"),
        ("c2", "bo@gmail.example"),
        ("vip-1", "cy@corp.example"),
    ] {
        let args = json!({"id": id, "email": email}).to_string();
        let (code, out, err) = run(Command::new(bin())
            .args(["call", "customer.contact", "--args", &args, "--config"])
            .arg(cfg.path())
            .env("MCPD_AUDIT_KEY", KEY)
            .env("DEMO_API_URL", &api.url));
        assert_eq!(code, 0, "{out}{err}");
    }
    let log = cfg.read("audit.jsonl");
    assert!(!log.contains("ana@corp.example"), "{log}");
    assert!(log.contains(r#""redacted":["/args/email"]"#), "{log}");
    let rules = r#"
  - id: corp-only
    tools: [customer.*]
    when: '"@corp.example" not in args.email'
    effect: deny
    reason: corp customers only
  - id: no-vips
    tools: [customer.*]
    when: args.id is startingwith("vip-")
    effect: deny
    reason: not for VIPs
"#;
    let text = cfg
        .read("policies.yaml")
        .replacen("rules:\n", &format!("rules:{rules}"), 1);
    cfg.write("candidate.yaml", &text);
    let path = cfg.path().join("candidate.yaml").display().to_string();
    let (code, r) = backtest(&cfg, &["--policies", &path]);
    assert_eq!(code, 0);
    // corp-only reads the redacted email: not judged on any of the three calls, and the
    // two it alone could deny are undecided; no-vips reads the id and denies vip-1
    assert_eq!(rule(&r, "corp-only")["unjudged_redacted"]["calls"], 3);
    assert_eq!(rule(&r, "corp-only")["newly_denies"]["calls"], 0);
    assert_eq!(rule(&r, "no-vips")["newly_denies"]["calls"], 1);
    assert_eq!(
        rule(&r, "no-vips")["newly_denies"]["examples"][0]["args"]["id"],
        "vip-1"
    );
    assert_eq!(
        counts(&r, &["undecided", "newly_denied", "unchanged"]),
        [2, 1, 0]
    );
}

#[test]
fn a_log_written_by_several_processes_and_rotated_into_two_files_is_read_whole() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append(
        "mcpd.yaml",
        "\naudit:\n  path: audit.jsonl\nstate: \"memory:\"\n",
    );
    let call = |percent: u32| {
        let args = json!({"env": "staging", "name": "f", "percent": percent}).to_string();
        Command::new(bin())
            .args(["call", "flag.set", "--args", &args, "--config"])
            .arg(cfg.path())
            .env("MCPD_AUDIT_KEY", KEY)
            .env("DEMO_API_URL", &api.url)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // four processes at once append to one chain
    let children: Vec<_> = (1..=4).map(call).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    // rotated while mcpd is stopped; the next process starts a new file (a new chain)
    std::fs::rename(
        cfg.path().join("audit.jsonl"),
        cfg.path().join("audit.jsonl.1"),
    )
    .unwrap();
    assert!(call(20).wait().unwrap().success());
    assert!(call(30).wait().unwrap().success());
    let files = [
        cfg.path().join("audit.jsonl"),
        cfg.path().join("audit.jsonl.1"),
    ];
    let args: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let tight = candidate(
        &cfg,
        "tight.yaml",
        ANY_FLAG_WRITE,
        "request.body.percent > 0 and not elevation.ticket",
    );
    let mut all = vec!["--policies", tight.as_str(), "--audit"];
    all.extend(&args);
    let (_, r) = backtest(&cfg, &all);
    // each write leaves a record of intent and a call record: 12 records, 6 calls
    assert_eq!(
        (
            r["records"].as_u64(),
            r["calls"].as_u64(),
            r["chains"].as_u64()
        ),
        (Some(12), Some(6), Some(2))
    );
    assert_eq!(r["newly_denied"], 6);
    // read oldest first, whatever the order given
    assert!(
        r["files"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("audit.jsonl.1"),
        "{r}"
    );
    assert_eq!(r["files"][1]["new_chain"], true);
    let mut text = vec!["backtest", "--policies", tight.as_str(), "--audit"];
    text.extend(&args);
    let (_, out, _) = mcpd(&cfg, &text);
    assert!(
        out.contains(
            "audit.jsonl starts a new chain: nothing proves no record is missing before it"
        ),
        "{out}"
    );
    // one file alone when a record is cut from the older one: refused
    let old = cfg.read("audit.jsonl.1");
    let cut: String = old.lines().skip(1).map(|l| format!("{l}\n")).collect();
    cfg.write("audit.jsonl.1", &cut);
    let (code, _, err) = mcpd(&cfg, &text);
    assert_eq!(code, 2);
    assert!(err.contains("audit.jsonl.1"), "{err}");
}

#[test]
fn an_argument_whose_key_held_an_email_is_named_whole_and_never_judged() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\naudit:\n  path: audit.jsonl\n");
    let owners = "    email: { type: string }\n    owners: { type: object }\n";
    let tool = CONTACT.replace("    email: { type: string }\n", owners);
    cfg.write("tools.d/customer.contact.yaml", &tool);
    let args =
        json!({"id": "c1", "email": "ana@corp.example", "owners": {"bo@corp.example": "admin"}});
    let (code, out, err) = run(Command::new(bin())
        .args([
            "call",
            "customer.contact",
            "--args",
            &args.to_string(),
            "--config",
        ])
        .arg(cfg.path())
        .env("MCPD_AUDIT_KEY", KEY)
        .env("DEMO_API_URL", &api.url));
    assert_eq!(code, 0, "{out}{err}");
    // the key is rewritten, and the record names the object, never the old key
    let log = cfg.read("audit.jsonl");
    assert!(!log.contains("bo@corp.example"), "{log}");
    assert!(
        log.contains(r#""redacted":["/args/email","/args/owners"]"#),
        "{log}"
    );
    let rule_text = "\n  - id: not-bos\n    tools: [customer.*]\n    when: '\"bo@corp.example\" in args.owners'\n    effect: deny\n    reason: not Bo's\n";
    let text = cfg
        .read("policies.yaml")
        .replacen("rules:\n", &format!("rules:{rule_text}"), 1);
    cfg.write("candidate.yaml", &text);
    let path = cfg.path().join("candidate.yaml").display().to_string();
    let (_, r) = backtest(&cfg, &["--policies", &path]);
    // read as logged, the rule would not match: it is counted apart instead
    assert_eq!(rule(&r, "not-bos")["unjudged_redacted"]["calls"], 1);
    assert_eq!(
        counts(&r, &["undecided", "newly_denied", "unchanged"]),
        [1, 0, 0]
    );
}
