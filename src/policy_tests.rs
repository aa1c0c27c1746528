use super::*;
use serde_json::json;

fn policy(yaml: &str) -> Policy {
    let spec: PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(Path::new("policies.yaml"), &spec).unwrap()
}

fn compile_err(yaml: &str) -> String {
    let spec: PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(Path::new("policies.yaml"), &spec)
        .unwrap_err()
        .to_string()
}

const SEED: &str = r#"
default: allow
rules:
  - id: prod-write-needs-ticket
    tools: [flag.set]
    when: args.env == "prod" and args.percent > 10 and not elevation.ticket
    effect: deny
    reason: prod changes above 10 percent need a ticket
  - id: redact-pii
    effect: redact
    detectors: [email, pan, secret]
  - id: eu-data-stays-in-eu
    tools: [orders.*]
    when: actor.region == "eu"
    effect: route
    region: eu
  - id: no-bulk-exports
    mode: shadow
    tools: [orders.export]
    when: days_between(args.from, args.to) > 31
    effect: deny
    reason: exports over a month need review
"#;

fn decide(p: &Policy, tool: &str, args: Value, actor: Value, elevation: Option<Value>) -> Decision {
    p.evaluate(&Facts {
        tool,
        args: &args,
        actor: &actor,
        elevation: elevation.as_ref(),
        env: &json!({"name": "test"}),
    })
}

#[test]
fn prod_write_above_ten_percent_is_denied_with_its_reason() {
    let p = policy(SEED);
    let d = decide(
        &p,
        "flag.set",
        json!({"env": "prod", "name": "x", "percent": 50}),
        json!({}),
        None,
    );
    assert!(!d.allowed);
    assert_eq!(
        d.denial,
        Some((
            "prod-write-needs-ticket".into(),
            "prod changes above 10 percent need a ticket".into()
        ))
    );
}

#[test]
fn an_empty_ticket_is_no_ticket() {
    let p = policy(SEED);
    let d = decide(
        &p,
        "flag.set",
        json!({"env": "prod", "percent": 50}),
        json!({}),
        Some(json!({"ticket": ""})),
    );
    assert!(!d.allowed);
    let d = decide(
        &p,
        "flag.set",
        json!({"env": "prod", "percent": 50}),
        json!({}),
        Some(json!({"ticket": "CHG-1"})),
    );
    assert!(d.allowed, "{d:?}");
}

#[test]
fn staging_write_is_allowed_and_redaction_applies_everywhere() {
    let p = policy(SEED);
    let d = decide(
        &p,
        "flag.set",
        json!({"env": "staging", "percent": 50}),
        json!({}),
        None,
    );
    assert!(d.allowed);
    assert_eq!(
        d.detectors,
        vec![Detector::Email, Detector::Pan, Detector::Secret]
    );
    assert_eq!(d.matched, vec!["redact-pii".to_owned()]);
}

#[test]
fn shadow_rules_are_recorded_not_enforced() {
    let p = policy(SEED);
    let d = decide(
        &p,
        "orders.export",
        json!({"from": "2025-01-01", "to": "2025-06-30"}),
        json!({}),
        None,
    );
    assert!(d.allowed);
    assert_eq!(d.shadow, vec!["no-bulk-exports:deny".to_owned()]);
}

#[test]
fn eu_actor_is_routed_to_eu() {
    let p = policy(SEED);
    let d = decide(
        &p,
        "orders.export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
        json!({"region": "eu"}),
        None,
    );
    assert_eq!(d.route.as_deref(), Some("eu"));
    let d = decide(
        &p,
        "orders.export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
        json!({"region": "us"}),
        None,
    );
    assert_eq!(d.route, None);
}

#[test]
fn deny_wins_over_allow() {
    let p = policy(
        "default: deny\nrules:\n  - { id: a, effect: allow }\n  - { id: d, effect: deny, reason: no }\n",
    );
    let d = decide(&p, "t", json!({}), json!({}), None);
    assert!(!d.allowed);
    assert_eq!(d.denial.unwrap().0, "d");
}

#[test]
fn allow_rule_opens_default_deny() {
    let p = policy("default: deny\nrules:\n  - { id: reads, tools: [orders.*], effect: allow }\n");
    assert!(decide(&p, "orders.export", json!({}), json!({}), None).allowed);
    let d = decide(&p, "flag.set", json!({}), json!({}), None);
    assert!(!d.allowed);
    assert!(d.denial.unwrap().1.contains("default: deny"));
}

#[test]
fn require_names_what_is_missing() {
    let p = policy(
        "default: allow\nrules:\n  - id: support-only\n    effect: require\n    reason: exports are for support\n    require: { purpose: [support], scope: orders.export }\n",
    );
    let d = decide(
        &p,
        "orders.export",
        json!({}),
        json!({"purpose": "marketing", "scopes": []}),
        None,
    );
    let reason = d.denial.unwrap().1;
    assert!(
        reason.contains("purpose support") && reason.contains("scope 'orders.export'"),
        "{reason}"
    );
    let d = decide(
        &p,
        "orders.export",
        json!({}),
        json!({"purpose": "support", "scopes": ["orders.export"]}),
        None,
    );
    assert!(d.allowed);
}

#[test]
fn condition_errors_fail_closed_for_deny_rules() {
    let p = policy(
        "default: allow\nrules:\n  - id: r\n    when: days_between(args.from, args.to) > 3\n    effect: deny\n    reason: too long\n",
    );
    let d = decide(
        &p,
        "t",
        json!({"from": "garbage", "to": "2025-01-01"}),
        json!({}),
        None,
    );
    assert!(!d.allowed);
    assert!(d.denial.unwrap().1.contains("could not be evaluated"));
}

#[test]
fn invalid_rules_are_reported_with_positions() {
    let err = compile_err(
        "default: allow\nrules:\n  - id: a\n    when: args.env ==\n    effect: deny\n    reason: x\n  - id: a\n    effect: deny\n  - id: c\n    when: agrs.env == 1\n    effect: allow\n",
    );
    assert!(
        err.contains("policies.yaml:4:11: rule 'a': invalid condition"),
        "{err}"
    );
    assert!(err.contains("rule 'a': id is already used"), "{err}");
    assert!(err.contains("needs a 'reason'"), "{err}");
    assert!(
        err.contains("policies.yaml:10:11: rule 'c': condition reads unknown variable(s) agrs"),
        "{err}"
    );
}

#[test]
fn globs_match_prefixes_and_middles() {
    assert!(glob("orders.*", "orders.export"));
    assert!(!glob("orders.*", "flag.set"));
    assert!(glob("*.set", "flag.set"));
    assert!(glob("*", "anything"));
    assert!(glob("a*c*e", "abcde"));
}

#[test]
fn days_between_counts_calendar_days() {
    assert_eq!(
        days_between("2025-08-01".into(), "2025-08-31".into()).unwrap(),
        30
    );
    assert_eq!(
        days_between("2024-02-28".into(), "2024-03-01".into()).unwrap(),
        2
    );
    assert!(days_between("nope".into(), "2024-03-01".into()).is_err());
}
