use super::functions::days_between;
use super::*;
use crate::config::PolicySpec;
use crate::config::diag::Diagnostics;
use crate::config::policy::Detector;
use serde_json::json;
use std::path::Path;

fn policy(yaml: &str) -> Policy {
    let spec: PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(
        Path::new("policies.yaml"),
        &spec,
        &mut Diagnostics::default(),
    )
    .unwrap()
}

fn compile_err(yaml: &str) -> String {
    let spec: PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    let mut diags = Diagnostics::default();
    assert!(Policy::compile(Path::new("policies.yaml"), &spec, &mut diags).is_none());
    diags.to_string()
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
    let d = p.evaluate(&Facts {
        tool,
        args: &args,
        actor: &actor,
        elevation: elevation.as_ref(),
        env: &json!({"name": "test"}),
    });
    let e = explain(p, tool, args.clone(), actor.clone(), elevation.clone());
    assert_eq!(
        Decision {
            outcomes: Vec::new(),
            ..e
        },
        d,
        "explain decides exactly as evaluate"
    );
    d
}

fn explain(
    p: &Policy,
    tool: &str,
    args: Value,
    actor: Value,
    elevation: Option<Value>,
) -> Decision {
    p.explain(&Facts {
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
    assert_eq!(d.detectors, DetectorSet::ALL);
    assert!(d.default_used, "no allow or deny rule decided: default did");
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

fn outcome(d: &Decision, id: &str) -> RuleOutcome {
    d.outcomes.iter().find(|o| o.id == id).unwrap().clone()
}

#[test]
fn explain_lists_every_rule_in_file_order_with_what_it_would_do() {
    let p = policy(SEED);
    let d = explain(
        &p,
        "orders.export",
        json!({"from": "2025-01-01", "to": "2025-06-30"}),
        json!({"region": "us"}),
        None,
    );
    let ids: Vec<&str> = d.outcomes.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "prod-write-needs-ticket",
            "redact-pii",
            "eu-data-stays-in-eu",
            "no-bulk-exports"
        ]
    );
    let first = outcome(&d, "prod-write-needs-ticket");
    assert!(!first.applies && !first.matched && !first.would_deny);
    let route = outcome(&d, "eu-data-stays-in-eu");
    assert!(route.applies && !route.matched);
    let shadow = outcome(&d, "no-bulk-exports");
    assert_eq!(shadow.mode, Mode::Shadow);
    assert!(shadow.matched && shadow.would_deny);
    assert!(d.allowed, "a shadow rule never changes the outcome");
}

#[test]
fn undefined_values_are_false_not_errors() {
    let p = policy(
        "default: allow\nrules:\n  - id: no-grant\n    when: not elevation and actor.region != \"eu\" and not args.missing\n    effect: deny\n    reason: r\n",
    );
    let d = decide(&p, "t", json!({}), json!({}), None);
    assert_eq!(d.denial.unwrap().0, "no-grant");
    let d = decide(
        &p,
        "t",
        json!({}),
        json!({}),
        Some(json!({"ticket": "CHG-1"})),
    );
    assert!(d.allowed);
}

#[test]
fn a_missing_argument_orders_below_every_number() {
    let p = policy(
        "default: allow\nrules:\n  - { id: big, when: args.percent > 10, effect: deny, reason: r }\n",
    );
    assert!(decide(&p, "t", json!({}), json!({}), None).allowed);
    assert!(!decide(&p, "t", json!({"percent": 11}), json!({}), None).allowed);
}

#[test]
fn strings_compare_above_numbers_never_as_numbers() {
    let p = policy(
        "default: allow\nrules:\n  - { id: big, when: args.percent > 10, effect: deny, reason: r }\n  - { id: eq, when: args.percent == 50, effect: deny, reason: r }\n",
    );
    for percent in [json!("50"), json!("5")] {
        let d = explain(&p, "t", json!({"percent": percent}), json!({}), None);
        assert!(!d.allowed, "{percent}");
        assert!(outcome(&d, "big").matched, "a string is above every number");
        assert!(!outcome(&d, "eq").matched, "\"50\" is not 50");
    }
}

#[test]
fn conditions_that_fail_keep_the_rule_reason_and_name_the_error() {
    let p = policy(
        "default: allow\nrules:\n  - id: long\n    when: days_between(args.from, args.to) > 31\n    effect: deny\n    reason: exports over a month need review\n",
    );
    let d = decide(
        &p,
        "t",
        json!({"from": "2025-02-30", "to": "2025-03-01"}),
        json!({}),
        None,
    );
    let (id, reason) = d.denial.unwrap();
    assert_eq!(id, "long");
    assert!(
        reason.starts_with("exports over a month need review (rule 'long' could not be evaluated")
            && reason.contains("'2025-02-30' is not a date"),
        "{reason}"
    );
}

#[test]
fn a_failing_route_condition_denies_and_a_failing_redact_condition_redacts() {
    let p = policy(
        "default: allow\nrules:\n  - { id: eu, when: \"days_between(args.d, args.d) == 0\", effect: route, region: eu }\n  - { id: pii, when: \"days_between(args.d, args.d) == 0\", effect: redact, detectors: [email] }\n",
    );
    let d = explain(&p, "t", json!({"d": "not a date"}), json!({}), None);
    assert!(!d.allowed);
    assert_eq!(d.denial.as_ref().unwrap().0, "eu");
    assert_eq!(d.route, None);
    assert_eq!(d.detectors, DetectorSet::from(Detector::Email));
    assert!(outcome(&d, "pii").error.is_some());
}

#[test]
fn an_allow_rule_whose_condition_fails_does_not_allow() {
    let p = policy(
        "default: deny\nrules:\n  - { id: short, when: \"days_between(args.from, args.to) < 7\", effect: allow }\n",
    );
    let d = decide(
        &p,
        "t",
        json!({"from": "soon", "to": "2025-01-01"}),
        json!({}),
        None,
    );
    assert!(!d.allowed);
    assert_eq!(d.denial.unwrap().0, "default");
    assert!(d.default_used);
    let d = decide(
        &p,
        "t",
        json!({"from": "2025-01-01", "to": "2025-01-02"}),
        json!({}),
        None,
    );
    assert!(d.allowed && !d.default_used);
}

#[test]
fn a_runaway_condition_runs_out_of_fuel_and_fails_closed() {
    let p = policy(
        "default: allow\nrules:\n  - id: spin\n    when: range(50000) | select(\"odd\") | list | length > 0 and args.x\n    effect: deny\n    reason: r\n",
    );
    let d = explain(&p, "t", json!({}), json!({}), None);
    assert!(!d.allowed, "{d:?}");
    let error = outcome(&d, "spin").error.unwrap();
    assert!(error.contains("fuel"), "{error}");
}

#[test]
fn require_reports_the_unmet_rule_and_a_met_one_is_not_shadowed() {
    let p = policy(
        "default: allow\nrules:\n  - { id: ticket, effect: require, reason: needs a ticket, require: { ticket: true } }\n  - { id: scope, mode: shadow, effect: require, reason: needs scope, require: { scope: admin } }\n",
    );
    let d = decide(&p, "t", json!({}), json!({"scopes": ["admin"]}), None);
    assert_eq!(
        d.require_unmet,
        Some(("ticket".to_owned(), "an elevation with a ticket".to_owned()))
    );
    assert_eq!(
        d.denial,
        Some((
            "ticket".to_owned(),
            "needs a ticket (missing: an elevation with a ticket)".to_owned()
        ))
    );
    assert!(
        d.shadow.is_empty(),
        "the shadow requirement is met: {:?}",
        d.shadow
    );
    let d = decide(
        &p,
        "t",
        json!({}),
        json!({"scopes": []}),
        Some(json!({"ticket": "CHG-9"})),
    );
    assert!(d.allowed);
    assert_eq!(d.require_unmet, None);
    assert_eq!(d.shadow, vec!["scope:require".to_owned()]);
}

#[test]
fn redact_rules_union_their_detectors_and_shadow_ones_add_none() {
    let p = policy(
        "default: allow\nrules:\n  - { id: a, effect: redact, detectors: [email] }\n  - { id: b, tools: [orders.*], effect: redact, detectors: [pan, email] }\n  - { id: c, mode: shadow, effect: redact, detectors: [secret] }\n",
    );
    let d = decide(&p, "orders.export", json!({}), json!({}), None);
    assert_eq!(
        d.detectors,
        [Detector::Email, Detector::Pan].into_iter().collect()
    );
    assert_eq!(d.matched, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(d.shadow, vec!["c:redact".to_owned()]);
    let d = decide(&p, "flag.set", json!({}), json!({}), None);
    assert_eq!(d.detectors, DetectorSet::from(Detector::Email));
}

#[test]
fn rules_routing_one_call_to_two_regions_deny() {
    let p = policy(
        "default: allow\nrules:\n  - { id: eu, effect: route, region: eu }\n  - { id: us, effect: route, region: us }\n  - { id: eu-again, effect: route, region: eu }\n",
    );
    let d = decide(&p, "t", json!({}), json!({}), None);
    assert!(!d.allowed);
    let (id, reason) = d.denial.unwrap();
    assert_eq!(id, "us");
    assert!(reason.contains("both 'eu' and 'us'"), "{reason}");
}

#[test]
fn a_shadow_deny_never_denies_even_under_default_deny_with_an_allow() {
    let p = policy(
        "default: deny\nrules:\n  - { id: open, effect: allow }\n  - { id: measure, mode: shadow, effect: deny, reason: r }\n",
    );
    let d = decide(&p, "t", json!({}), json!({}), None);
    assert!(d.allowed);
    assert_eq!(d.matched, vec!["open".to_owned()]);
    assert_eq!(d.shadow, vec!["measure:deny".to_owned()]);
}

#[test]
fn fields_an_effect_ignores_are_errors() {
    let err = compile_err(
        "default: allow\nrules:\n  - { id: a, effect: deny, reason: r, detectors: [email] }\n  - { id: b, effect: redact, detectors: [pan], region: eu }\n  - { id: c, effect: allow, require: { ticket: true } }\n  - { id: d, effect: require, reason: r, require: {} }\n  - { id: e, effect: route, region: \" \" }\n  - { id: f, effect: redact }\n",
    );
    for want in [
        "policies.yaml:3:11: rule 'a': 'detectors' only applies to redact rules",
        "rule 'b': 'region' only applies to route rules",
        "rule 'c': 'require' only applies to require rules",
        "rule 'd': 'require' asks for nothing",
        "rule 'e': a route rule needs a 'region'",
        "rule 'f': a redact rule needs 'detectors'",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

#[test]
fn unknown_detectors_are_rejected_when_parsing() {
    let r = serde_saphyr::from_str::<PolicySpec>(
        "default: allow\nrules:\n  - { id: a, effect: redact, detectors: [ssn] }\n",
    );
    assert!(r.unwrap_err().to_string().contains("ssn"));
}

#[test]
fn duplicate_ids_name_both_positions_and_bad_tool_patterns_their_own() {
    let err = compile_err(
        "default: allow\nrules:\n  - id: same\n    effect: allow\n  - id: same\n    tools: [orders export]\n    effect: allow\n",
    );
    assert!(
        err.contains(
            "policies.yaml:5:9: rule 'same': id is already used by the rule at line 3, column 9"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "policies.yaml:6:13: rule 'same': tools: 'orders export' is not a tool id or glob"
        ),
        "{err}"
    );
}

#[test]
fn misspelled_fields_of_fixed_roots_are_rejected() {
    let err = compile_err(
        "default: allow\nrules:\n  - id: eu\n    when: actor.regin == \"eu\" or elevation.tiket or env.nme == \"prod\"\n    effect: route\n    region: eu\n",
    );
    for want in [
        "policies.yaml:4:11: rule 'eu': condition reads unknown field 'actor.regin' (actor has: subject, scopes, purpose, region)",
        "unknown field 'elevation.tiket'",
        "unknown field 'env.nme'",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // Map methods are not fields.
    policy(
        "default: allow\nrules:\n  - { id: ok, when: \"actor.get('region') == 'eu'\", effect: route, region: eu }\n",
    );
}

#[test]
fn check_tools_reports_unknown_tools_and_undeclared_arguments() {
    let p = policy(
        "default: allow\nrules:\n  - id: cap\n    tools: [flag.sett, flag.*]\n    when: args.percnt > 10 and args.env == \"prod\"\n    effect: deny\n    reason: r\n  - id: any\n    when: args.env == \"prod\"\n    effect: deny\n    reason: r\n",
    );
    let tools = [
        ToolArgs {
            id: "flag.set",
            args: vec!["env", "name", "percent"],
        },
        ToolArgs {
            id: "orders.export",
            args: vec!["from", "to"],
        },
    ];
    let d = p
        .check_tools(Path::new("policies.yaml"), &tools)
        .to_string();
    assert!(
        d.contains("policies.yaml:4:13: rule 'cap': tools: no tool is named 'flag.sett'"),
        "{d}"
    );
    assert!(
        d.contains("policies.yaml:5:11: rule 'cap': condition reads 'args.percnt', which no tool it covers declares (they declare: env, name, percent)"),
        "{d}"
    );
    assert_eq!(
        d.lines().count(),
        2,
        "'any' reads env, which one tool it covers declares: {d}"
    );
}

#[test]
fn days_between_rejects_days_a_month_does_not_have() {
    assert_eq!(
        days_between("2024-02-28".into(), "2024-02-29".into()).unwrap(),
        1
    );
    assert!(days_between("2025-02-29".into(), "2025-03-01".into()).is_err());
    assert!(days_between("2025-04-31".into(), "2025-05-01".into()).is_err());
    assert_eq!(
        days_between("1999-12-31".into(), "2000-03-01".into()).unwrap(),
        61
    );
}
