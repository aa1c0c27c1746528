//! Compiling policies.yaml: every rejected rule reported with its position, explain's
//! listing, unknown detectors, `check_tools`, and the condition functions.

use super::*;

#[rstest]
#[case::invalid_rules_are_reported_with_positions(
    "default: allow\nrules:\n  - id: a\n    when: args.env ==\n    effect: deny\n    reason: x\n  - id: a\n    effect: deny\n  - id: c\n    when: agrs.env == 1\n    effect: allow\n",
    &[
        "policies.yaml:4:11: rule 'a': invalid condition",
        "rule 'a': id is already used",
        "needs a 'reason'",
        "policies.yaml:10:11: rule 'c': condition reads unknown variable(s) agrs",
    ]
)]
#[case::fields_an_effect_ignores_are_errors(
    "default: allow\nrules:\n  - { id: a, effect: deny, reason: r, detectors: [email] }\n  - { id: b, effect: redact, detectors: [pan], region: eu }\n  - { id: c, effect: allow, require: { ticket: true } }\n  - { id: d, effect: require, reason: r, require: {} }\n  - { id: e, effect: route, region: \" \" }\n  - { id: f, effect: redact }\n",
    &[
        "policies.yaml:3:11: rule 'a': 'detectors' only applies to redact rules",
        "rule 'b': 'region' only applies to route rules",
        "rule 'c': 'require' only applies to require rules",
        "rule 'd': 'require' asks for nothing",
        "rule 'e': a route rule needs a 'region'",
        "rule 'f': a redact rule needs 'detectors'",
    ]
)]
#[case::duplicate_ids_name_both_positions_and_bad_tool_patterns_their_own(
    "default: allow\nrules:\n  - id: same\n    effect: allow\n  - id: same\n    tools: [orders export]\n    effect: allow\n",
    &[
        "policies.yaml:5:9: rule 'same': id is already used by the rule at line 3, column 9",
        "policies.yaml:6:13: rule 'same': tools: 'orders export' is not a tool id or glob",
    ]
)]
#[case::misspelled_fields_of_fixed_roots_are_rejected(
    "default: allow\nrules:\n  - id: eu\n    when: actor.regin == \"eu\" or elevation.tiket or env.nme == \"prod\"\n    effect: route\n    region: eu\n",
    &[
        "policies.yaml:4:11: rule 'eu': condition reads unknown field 'actor.regin' (actor has: subject, scopes, purpose, region)",
        "unknown field 'elevation.tiket'",
        "unknown field 'env.nme'",
    ]
)]
fn rejected_rules_are_all_reported(#[case] rules: &str, #[case] wants: &[&str]) {
    let err = compile_err(rules);
    for want in wants {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

#[test]
fn map_methods_are_not_fields() {
    policy(
        "default: allow\nrules:\n  - { id: ok, when: \"actor.get('region') == 'eu'\", effect: route, region: eu }\n",
    );
}

#[test]
fn explain_lists_every_rule_in_file_order_with_what_it_would_do() {
    let p = policy(SEED);
    let d = decide(
        &p,
        &call(
            "orders.export",
            json!({"from": "2025-01-01", "to": "2025-06-30"}),
        )
        .by(json!({"region": "us"})),
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
fn unknown_detectors_are_rejected_when_parsing() {
    let r = serde_saphyr::from_str::<PolicySpec>(
        "default: allow\nrules:\n  - { id: a, effect: redact, detectors: [ssn] }\n",
    );
    assert!(r.unwrap_err().to_string().contains("ssn"));
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

#[rstest]
#[case::within_a_month("2025-08-01", "2025-08-31", Some(30))]
#[case::across_a_leap_day("2024-02-28", "2024-03-01", Some(2))]
#[case::up_to_a_leap_day("2024-02-28", "2024-02-29", Some(1))]
#[case::across_a_century_leap_year("1999-12-31", "2000-03-01", Some(61))]
#[case::not_a_date("nope", "2024-03-01", None)]
#[case::a_february_29th_outside_leap_years("2025-02-29", "2025-03-01", None)]
#[case::april_31st("2025-04-31", "2025-05-01", None)]
fn days_between_counts_calendar_days_and_rejects_days_a_month_does_not_have(
    #[case] from: &str,
    #[case] to: &str,
    #[case] days: Option<i64>,
) {
    let got = days_between(from.into(), to.into());
    match days {
        Some(n) => assert_eq!(got.unwrap(), n),
        None => assert!(got.is_err(), "{got:?}"),
    }
}
