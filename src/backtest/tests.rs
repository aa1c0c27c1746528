use super::*;
use crate::audit::{AuditLog, Entry, Intent, PolicyRecord, Verifier};
use serde_json::json;
use std::path::{Path, PathBuf};

const KEY: &[u8] = b"backtest-test-key-backtest-test-key";

/// A tool with an email argument, beside the shipped ones.
const REFUND: &str = r#"
name: customer.refund
description: Refund a customer.
input:
  type: object
  properties:
    email: { type: string }
    amount: { type: integer }
request:
  upstream: orders
  method: POST
  path: "/refunds/{{ args.email }}"
  body: { amount: "{{ args.amount }}" }
"#;

/// The shipped config and `customer.refund`, with `policy` as policies.yaml.
fn catalog(policy: &str) -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut loaded, diags) = crate::config::load_dir(root);
    assert!(diags.is_empty(), "{diags}");
    let dir = tempfile::tempdir().unwrap();
    let refund = dir.path().join("customer.refund.yaml");
    std::fs::write(&refund, REFUND).unwrap();
    loaded
        .tools
        .push(crate::config::load_tool_file(&refund).unwrap());
    loaded.policy.1 = serde_saphyr::from_str(policy).unwrap();
    loaded.policy.1.egress = vec![crate::config::Located::unplaced("127.0.0.1".to_owned())];
    let vars = crate::config::Vars::default().with_placeholder_secrets();
    Catalog::compile(&loaded, &vars).unwrap()
}

use crate::policy::compiled as policy;

const CANDIDATE: &str = r#"
default: allow
rules:
  - id: prod-write-needs-ticket
    tools: [flag.set]
    when: args.percent > 5 and not elevation.ticket
    effect: deny
    reason: ticket
  - id: no-bulk-exports
    mode: shadow
    tools: [orders.export]
    when: days_between(args.from, args.to) > 31
    effect: deny
    reason: review
"#;

/// A call record that reached policy.
fn call(actor: &str, tool: &str, args: Value, denied_by: Option<&str>) -> Entry {
    Entry {
        actor: actor.into(),
        tool: tool.into(),
        args,
        decision: if denied_by.is_some() {
            "denied"
        } else {
            "allowed"
        }
        .into(),
        policy: Some(PolicyRecord {
            decision: if denied_by.is_some() { "deny" } else { "allow" },
            denied_by: denied_by.map(str::to_owned),
            actor: json!({"scopes": ["*"]}),
            env: json!({"name": "default"}),
            elevation: (tool == "flag.set").then_some(Value::Null),
        }),
        ..Entry::default()
    }
}

fn write(path: &Path, entries: &[Entry]) {
    let log = AuditLog::open(path, KEY.to_vec()).unwrap();
    for e in entries {
        log.record(e);
    }
    log.flush();
}

fn flows() -> Vec<Entry> {
    let staging = json!({"env": "staging", "name": "f", "percent": 10});
    let prod = json!({"env": "prod", "name": "f", "percent": 50});
    vec![
        call("user:a", "flag.set", staging.clone(), None),
        call("user:a", "flag.set", staging, None),
        call(
            "user:a",
            "flag.set",
            prod.clone(),
            Some("prod-write-needs-ticket"),
        ),
        call(
            "user:b",
            "orders.export",
            json!({"from": "2025-01-01", "to": "2025-06-30"}),
            None,
        ),
        // ended before policy (scope)
        Entry {
            actor: "agent:c".into(),
            tool: "flag.set".into(),
            args: prod,
            decision: "denied".into(),
            ..Entry::default()
        },
    ]
}

fn verifier() -> Verifier {
    Verifier::Hmac(KEY.to_vec())
}

/// The verified log and its call records.
fn read(paths: &[PathBuf]) -> Result<(Log, Vec<CallRecord>), LogError> {
    let mut calls = Vec::new();
    let log = log::read(paths, &verifier(), |c| calls.push(c.clone()))?;
    Ok((log, calls))
}

fn replay(paths: &[PathBuf], candidate: &Policy, examples: usize) -> Report {
    backtest(paths, &verifier(), candidate, &catalog(CANDIDATE), examples).unwrap()
}

#[test]
fn a_tighter_rule_counts_the_calls_it_newly_denies_by_tool_and_actor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write(&path, &flows());
    let r = replay(&[path], &policy(CANDIDATE), 1);
    assert_eq!(
        (r.calls, r.replayed, r.before_policy, r.not_recorded),
        (5, 4, 1, 0)
    );
    assert_eq!(
        (r.newly_denied, r.newly_allowed, r.undecided, r.unchanged),
        (2, 0, 0, 2)
    );
    let prod = &r.rules[0];
    assert_eq!(prod.id, "prod-write-needs-ticket");
    assert_eq!(prod.newly_denies.calls, 2);
    assert_eq!(prod.newly_denies.by_actor["user:a"], 2);
    assert_eq!(prod.newly_denies.by_tool["flag.set"], 2);
    assert_eq!(prod.newly_denies.examples.len(), 1, "capped");
    let e = &prod.newly_denies.examples[0];
    assert_eq!(
        (e.before.as_str(), e.after.as_str()),
        ("allowed", "denied by prod-write-needs-ticket")
    );
    let shadow = &r.rules[1];
    assert_eq!((shadow.mode, shadow.newly_denies.calls), ("shadow", 1));
}

#[test]
fn a_looser_policy_counts_what_it_newly_allows_against_the_rule_that_denied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write(&path, &flows());
    let r = replay(std::slice::from_ref(&path), &policy("default: allow\n"), 3);
    assert_eq!((r.newly_denied, r.newly_allowed), (0, 1));
    let gone = r
        .rules
        .iter()
        .find(|x| x.id == "prod-write-needs-ticket")
        .unwrap();
    assert_eq!(gone.mode, "absent");
    assert_eq!(gone.newly_allows.calls, 1);
    assert_eq!(
        gone.newly_allows.examples[0].before,
        "denied by prod-write-needs-ticket"
    );
    // default: deny newly denies everything allowed, charged to `default`
    let r = replay(&[path], &policy("default: deny\n"), 3);
    assert_eq!((r.newly_denied, r.newly_allowed), (3, 0));
    let default = r.rules.iter().find(|x| x.id == "default").unwrap();
    assert_eq!(default.newly_denies.calls, 3);
}

#[test]
fn other_records_and_records_without_policy_facts_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, KEY.to_vec()).unwrap();
    log.record(&Intent {
        event: "intent",
        actor: "user:a".into(),
        tool: "flag.set".into(),
        args: json!({}),
        method: "PUT".into(),
        upstream: "flags".into(),
        idempotency_key: None,
        ticket: None,
        trace_id: String::new(),
    });
    log.record(&json!({"kind": "config", "event": "policy_applied", "file": "policies.yaml"}));
    // a record written before call records carried `policy`
    log.record(&json!({"actor": "user:a", "tool": "flag.set", "args": {}, "decision": "allowed"}));
    log.record(&call("user:a", "flag.set", json!({"percent": 1}), None));
    log.flush();
    let (log, calls) = read(std::slice::from_ref(&path)).unwrap();
    assert_eq!((log.records, log.calls, calls.len()), (4, 2, 2));
    let r = replay(&[path], &policy(CANDIDATE), 3);
    assert_eq!((r.replayed, r.not_recorded, r.unchanged), (1, 1, 1));
}

#[test]
fn a_redacted_argument_a_rule_reads_is_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut e = call(
        "user:a",
        "customer.refund",
        json!({"email": "j***@example.com", "amount": 5}),
        None,
    );
    e.redacted = vec!["/args/email".into()];
    write(&path, &[e]);
    let p = policy(
        r#"
default: allow
rules:
  - id: internal-only
    tools: [customer.*]
    when: '"@corp.example" not in args.email'
    effect: deny
    reason: internal only
"#,
    );
    let r = replay(&[path], &p, 3);
    assert_eq!((r.undecided, r.newly_denied), (1, 0));
    assert_eq!(r.rules[0].unjudged_redacted.calls, 1);
    assert_eq!(r.rules[0].newly_denies.calls, 0);
}

#[test]
fn a_log_in_several_files_is_read_in_order_and_a_gap_between_them_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.jsonl");
    write(&whole, &flows());
    let text = std::fs::read_to_string(&whole).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let part = |name: &str, range: std::ops::Range<usize>| {
        let p = dir.path().join(name);
        let body: String = lines[range].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&p, body).unwrap();
        p
    };
    // rotated by a writer that continues the chain: audit.jsonl.1 then audit.jsonl
    let (old, new) = (part("audit.jsonl.1", 0..2), part("audit.jsonl", 2..5));
    let (log, calls) = read(&[new.clone(), old.clone()]).unwrap();
    assert_eq!((log.records, log.chains(), log.calls), (5, 1, 5));
    assert_eq!(log.files[0].path, old);
    assert_eq!(calls[2].seq, 3);
    // the newer file alone starts mid-chain: its earlier records are missing
    let err = read(std::slice::from_ref(&new)).unwrap_err().to_string();
    assert!(err.contains("record(s) 1..2 are missing"), "{err}");
    // a middle file left out
    let (a, c) = (part("a.jsonl", 0..1), part("c.jsonl", 3..5));
    let err = read(&[a, c]).unwrap_err().to_string();
    assert!(err.contains("missing between the files"), "{err}");
    // a file that starts a chain of its own (the writer began a new file): read, noted
    let fresh = dir.path().join("fresh.jsonl");
    write(&fresh, &flows()[..1]);
    let (log, _) = read(&[old, new, fresh]).unwrap();
    assert_eq!((log.chains(), log.calls), (2, 6));
    assert!(log.files[2].new_chain);
}

#[test]
fn a_tampered_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write(&path, &flows());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"percent\":50", "\"percent\":5", 1)).unwrap();
    let err = read(&[path]).unwrap_err();
    assert!(
        matches!(&err, LogError::Broken { broken, .. } if broken.line == 3),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to replay"), "{err}");
}

#[test]
fn shadow_outcomes_are_summed_against_the_calls_each_rule_covers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut flows = flows();
    flows[3].shadow = vec!["no-bulk-exports:deny".into()];
    flows.push(call(
        "user:b",
        "orders.export",
        json!({"from": "2025-01-01", "to": "2025-01-02"}),
        None,
    ));
    write(&path, &flows);
    let paths = [path];
    let r = shadow_report(&paths, &verifier(), Some(&catalog(CANDIDATE)), 3).unwrap();
    assert_eq!((r.calls, r.reached_policy), (6, 5));
    assert_eq!(r.rules.len(), 1);
    let s = &r.rules[0];
    assert_eq!(
        (
            s.id.as_str(),
            s.now,
            s.covered,
            s.fired.calls,
            s.fired_allowed
        ),
        ("no-bulk-exports", "shadow", Some(2), 1, 1)
    );
    // a rule the current policy no longer has is still reported, without coverage
    let r = shadow_report(&paths, &verifier(), Some(&catalog("default: allow\n")), 3).unwrap();
    assert_eq!((r.rules[0].now, r.rules[0].covered), ("absent", None));
}
