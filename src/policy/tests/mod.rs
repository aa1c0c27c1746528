use super::functions::days_between;
use super::*;
use crate::config::PolicySpec;
use crate::config::diag::Diagnostics;
use crate::config::policy::Detector;
use rstest::rstest;
use serde_json::json;
use std::path::Path;

mod compile;
mod lift;
mod matching;

use crate::policy::compiled as policy;

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

/// One call as the rules see it: a tool, its arguments, the actor, an elevation grant
/// and what it does (upstream, method, path template, and the rendered request).
#[derive(Debug)]
struct Call {
    tool: &'static str,
    args: Value,
    actor: Value,
    elevation: Option<Value>,
    does: Option<Does>,
}

#[derive(Debug)]
struct Does {
    upstream: &'static str,
    method: &'static str,
    shape: &'static str,
    sent: Option<Sent>,
}

/// A call of `tool` with `args` by an actor with no fields and no elevation.
fn call(tool: &'static str, args: Value) -> Call {
    Call {
        tool,
        args,
        actor: json!({}),
        elevation: None,
        does: None,
    }
}

impl Call {
    /// Its tool sends `method` to `upstream` with path template `shape`; this call
    /// rendered it as `path` with `body`.
    fn sends(
        self,
        (upstream, method, shape): (&'static str, &'static str, &'static str),
        path: &str,
        body: Value,
    ) -> Self {
        let body = (!body.is_null()).then_some(body);
        let sent = Sent::new(upstream, method, path, &[], body.as_ref());
        Self {
            does: Some(Does {
                upstream,
                method,
                shape,
                sent: Some(sent),
            }),
            ..self
        }
    }

    /// As `sends`, but the request was not rendered.
    fn unrendered(
        self,
        (upstream, method, shape): (&'static str, &'static str, &'static str),
    ) -> Self {
        Self {
            does: Some(Does {
                upstream,
                method,
                shape,
                sent: None,
            }),
            ..self
        }
    }

    fn by(self, actor: Value) -> Self {
        Self { actor, ..self }
    }

    fn elevated(self, grant: Value) -> Self {
        Self {
            elevation: Some(grant),
            ..self
        }
    }
}

fn facts<'a>(c: &'a Call, env: &'a Value) -> Facts<'a> {
    let request = c.does.as_ref().map_or(Request::UNKNOWN, |d| Request {
        upstream: d.upstream,
        method: d.method,
        path_shape: d.shape,
        sent: d.sent.as_ref(),
    });
    Facts {
        tool: c.tool,
        request,
        args: &c.args,
        actor: &c.actor,
        elevation: c.elevation.as_ref(),
        env,
    }
}

/// Decides `call` and checks that `explain` decides exactly as `evaluate`; returns
/// explain's decision, which also holds every rule's outcome.
fn decide(p: &Policy, call: &Call) -> Decision {
    let env = json!({"name": "test"});
    let d = p.evaluate(&facts(call, &env));
    let e = p.explain(&facts(call, &env));
    assert_eq!(
        Decision {
            outcomes: Vec::new(),
            ..e.clone()
        },
        d,
        "explain decides exactly as evaluate"
    );
    e
}

/// A check on the denial reason.
#[derive(Debug)]
enum Reason {
    Is(&'static str),
    StartsWith(&'static str),
    Has(&'static str),
}

/// A check on one rule's outcome (from `explain`).
#[derive(Debug)]
enum Outcome {
    Matched(bool),
    FailedWith(&'static str),
    OffPath,
}

/// What a decision must show. Besides `allowed` and the denying rule, only what a case
/// names is checked.
#[derive(Debug, Default)]
struct Want {
    allowed: bool,
    denied_by: Option<&'static str>,
    reason: Vec<Reason>,
    route: Option<Option<&'static str>>,
    matched: Option<Vec<&'static str>>,
    shadow: Option<Vec<&'static str>>,
    default_used: Option<bool>,
    detectors: Option<DetectorSet>,
    require_unmet: Option<Option<(&'static str, &'static str)>>,
    outcomes: Vec<(&'static str, Outcome)>,
}

fn allowed() -> Want {
    Want {
        allowed: true,
        ..Want::default()
    }
}

fn denied(by: &'static str) -> Want {
    Want {
        denied_by: Some(by),
        ..Want::default()
    }
}

impl Want {
    fn reason(mut self, exact: &'static str) -> Self {
        self.reason.push(Reason::Is(exact));
        self
    }

    fn reason_starts(mut self, prefix: &'static str) -> Self {
        self.reason.push(Reason::StartsWith(prefix));
        self
    }

    fn reason_has(mut self, part: &'static str) -> Self {
        self.reason.push(Reason::Has(part));
        self
    }

    fn route(self, region: Option<&'static str>) -> Self {
        Self {
            route: Some(region),
            ..self
        }
    }

    fn matched(self, ids: &[&'static str]) -> Self {
        Self {
            matched: Some(ids.to_vec()),
            ..self
        }
    }

    fn shadow(self, entries: &[&'static str]) -> Self {
        Self {
            shadow: Some(entries.to_vec()),
            ..self
        }
    }

    fn by_default(self, used: bool) -> Self {
        Self {
            default_used: Some(used),
            ..self
        }
    }

    fn detectors(self, set: DetectorSet) -> Self {
        Self {
            detectors: Some(set),
            ..self
        }
    }

    fn require_unmet(self, unmet: Option<(&'static str, &'static str)>) -> Self {
        Self {
            require_unmet: Some(unmet),
            ..self
        }
    }

    fn fired(mut self, id: &'static str, matched: bool) -> Self {
        self.outcomes.push((id, Outcome::Matched(matched)));
        self
    }

    /// The rule selects the tool but the call's rendered path does not match.
    fn off_path(mut self, id: &'static str) -> Self {
        self.outcomes.push((id, Outcome::OffPath));
        self
    }

    /// The rule's condition could not be evaluated, with an error containing `part`.
    fn failed(mut self, id: &'static str, part: &'static str) -> Self {
        self.outcomes.push((id, Outcome::FailedWith(part)));
        self
    }

    fn check(&self, d: &Decision) {
        assert_eq!(d.allowed, self.allowed, "{d:?}");
        if self.allowed {
            assert_eq!(d.denial, None);
        }
        if let Some(by) = self.denied_by {
            assert_eq!(d.denial.as_ref().map(|(id, _)| id.as_str()), Some(by));
        }
        let reason = d.denial.as_ref().map_or("", |(_, r)| r.as_str());
        for want in &self.reason {
            match want {
                Reason::Is(s) => assert_eq!(reason, *s),
                Reason::StartsWith(s) => assert!(reason.starts_with(s), "{reason}"),
                Reason::Has(s) => assert!(reason.contains(s), "{s:?} not in {reason}"),
            }
        }
        if let Some(route) = self.route {
            assert_eq!(d.route.as_deref(), route);
        }
        if let Some(matched) = &self.matched {
            assert_eq!(&d.matched, matched);
        }
        if let Some(shadow) = &self.shadow {
            assert_eq!(&d.shadow, shadow);
        }
        if let Some(used) = self.default_used {
            assert_eq!(d.default_used, used);
        }
        if let Some(set) = self.detectors {
            assert_eq!(d.detectors, set);
        }
        if let Some(unmet) = self.require_unmet {
            let got = d.require_unmet.as_ref();
            assert_eq!(got.map(|(id, what)| (id.as_str(), what.as_str())), unmet);
        }
        for (id, want) in &self.outcomes {
            let o = outcome(d, id);
            match want {
                Outcome::Matched(m) => assert_eq!(o.matched, *m, "rule '{id}': {o:?}"),
                Outcome::OffPath => {
                    assert!(
                        o.path_mismatch && !o.applies && !o.matched,
                        "rule '{id}': {o:?}"
                    );
                }
                Outcome::FailedWith(s) => {
                    let error = o
                        .error
                        .unwrap_or_else(|| panic!("rule '{id}' did not fail"));
                    assert!(error.contains(s), "{error}");
                }
            }
        }
    }
}

fn outcome(d: &Decision, id: &str) -> RuleOutcome {
    d.outcomes.iter().find(|o| o.id == id).unwrap().clone()
}

#[rstest]
#[case::prod_write_above_ten_percent_is_denied_with_its_reason(
    call("flag.set", json!({"env": "prod", "name": "x", "percent": 50})),
    denied("prod-write-needs-ticket").reason("prod changes above 10 percent need a ticket")
)]
#[case::an_empty_ticket_is_no_ticket(
    call("flag.set", json!({"env": "prod", "percent": 50})).elevated(json!({"ticket": ""})),
    denied("prod-write-needs-ticket")
)]
#[case::a_ticket_lets_a_prod_write_through(
    call("flag.set", json!({"env": "prod", "percent": 50})).elevated(json!({"ticket": "CHG-1"})),
    allowed()
)]
// No allow or deny rule decided: the default did; redaction applies everywhere.
#[case::staging_write_is_allowed_and_redaction_applies_everywhere(
    call("flag.set", json!({"env": "staging", "percent": 50})),
    allowed().detectors(DetectorSet::ALL).by_default(true).matched(&["redact-pii"])
)]
#[case::shadow_rules_are_recorded_not_enforced(
    call("orders.export", json!({"from": "2025-01-01", "to": "2025-06-30"})),
    allowed().shadow(&["no-bulk-exports:deny"])
)]
#[case::eu_actor_is_routed_to_eu(
    call("orders.export", json!({"from": "2025-08-01", "to": "2025-08-02"}))
        .by(json!({"region": "eu"})),
    allowed().route(Some("eu"))
)]
#[case::us_actor_is_not_routed(
    call("orders.export", json!({"from": "2025-08-01", "to": "2025-08-02"}))
        .by(json!({"region": "us"})),
    allowed().route(None)
)]
fn the_seed_policy(#[case] call: Call, #[case] want: Want) {
    want.check(&decide(&policy(SEED), &call));
}

const READS_ONLY: &str =
    "default: deny\nrules:\n  - { id: reads, tools: [orders.*], effect: allow }\n";

const SUPPORT_ONLY: &str = "default: allow\nrules:\n  - id: support-only\n    effect: require\n    reason: exports are for support\n    require: { purpose: [support], scope: orders.export }\n";

const TICKET_AND_SHADOW_SCOPE: &str = "default: allow\nrules:\n  - { id: ticket, effect: require, reason: needs a ticket, require: { ticket: true } }\n  - { id: scope, mode: shadow, effect: require, reason: needs scope, require: { scope: admin } }\n";

const REDACT_UNION: &str = "default: allow\nrules:\n  - { id: a, effect: redact, detectors: [email] }\n  - { id: b, tools: [orders.*], effect: redact, detectors: [pan, email] }\n  - { id: c, mode: shadow, effect: redact, detectors: [secret] }\n";

#[rstest]
#[case::deny_wins_over_allow(
    "default: deny\nrules:\n  - { id: a, effect: allow }\n  - { id: d, effect: deny, reason: no }\n",
    call("t", json!({})),
    denied("d")
)]
#[case::allow_rule_opens_default_deny(READS_ONLY, call("orders.export", json!({})), allowed())]
#[case::default_deny_closes_what_no_allow_rule_opens(
    READS_ONLY,
    call("flag.set", json!({})),
    denied("default").reason_has("default: deny")
)]
#[case::require_names_what_is_missing(
    SUPPORT_ONLY,
    call("orders.export", json!({})).by(json!({"purpose": "marketing", "scopes": []})),
    denied("support-only").reason_has("purpose support").reason_has("scope 'orders.export'")
)]
#[case::a_met_requirement_allows(
    SUPPORT_ONLY,
    call("orders.export", json!({})).by(json!({"purpose": "support", "scopes": ["orders.export"]})),
    allowed()
)]
// The shadow requirement (scope admin) is met: it records nothing.
#[case::require_reports_the_unmet_rule_and_a_met_one_is_not_shadowed(
    TICKET_AND_SHADOW_SCOPE,
    call("t", json!({})).by(json!({"scopes": ["admin"]})),
    denied("ticket")
        .reason("needs a ticket (missing: an elevation with a ticket)")
        .require_unmet(Some(("ticket", "an elevation with a ticket")))
        .shadow(&[])
)]
#[case::an_unmet_shadow_requirement_is_recorded_not_enforced(
    TICKET_AND_SHADOW_SCOPE,
    call("t", json!({})).by(json!({"scopes": []})).elevated(json!({"ticket": "CHG-9"})),
    allowed().require_unmet(None).shadow(&["scope:require"])
)]
#[case::redact_rules_union_their_detectors_and_shadow_ones_add_none(
    REDACT_UNION,
    call("orders.export", json!({})),
    allowed()
        .detectors([Detector::Email, Detector::Pan].into_iter().collect())
        .matched(&["a", "b"])
        .shadow(&["c:redact"])
)]
#[case::redact_rules_apply_to_their_tools_only(
    REDACT_UNION,
    call("flag.set", json!({})),
    allowed().detectors(DetectorSet::from(Detector::Email))
)]
#[case::rules_routing_one_call_to_two_regions_deny(
    "default: allow\nrules:\n  - { id: eu, effect: route, region: eu }\n  - { id: us, effect: route, region: us }\n  - { id: eu-again, effect: route, region: eu }\n",
    call("t", json!({})),
    denied("us").reason_has("both 'eu' and 'us'")
)]
#[case::a_shadow_deny_never_denies_even_under_default_deny_with_an_allow(
    "default: deny\nrules:\n  - { id: open, effect: allow }\n  - { id: measure, mode: shadow, effect: deny, reason: r }\n",
    call("t", json!({})),
    allowed().matched(&["open"]).shadow(&["measure:deny"])
)]
fn effects_combine(#[case] rules: &str, #[case] call: Call, #[case] want: Want) {
    want.check(&decide(&policy(rules), &call));
}

const UNDEFINED_IS_FALSE: &str = "default: allow\nrules:\n  - id: no-grant\n    when: not elevation and actor.region != \"eu\" and not args.missing\n    effect: deny\n    reason: r\n";

const BIG: &str =
    "default: allow\nrules:\n  - { id: big, when: args.percent > 10, effect: deny, reason: r }\n";

const BIG_OR_FIFTY: &str = "default: allow\nrules:\n  - { id: big, when: args.percent > 10, effect: deny, reason: r }\n  - { id: eq, when: args.percent == 50, effect: deny, reason: r }\n";

#[rstest]
#[case::undefined_values_are_false_not_errors(UNDEFINED_IS_FALSE, call("t", json!({})), denied("no-grant"))]
#[case::an_elevation_is_defined(
    UNDEFINED_IS_FALSE,
    call("t", json!({})).elevated(json!({"ticket": "CHG-1"})),
    allowed()
)]
#[case::a_missing_argument_orders_below_every_number(BIG, call("t", json!({})), allowed())]
#[case::a_number_above_the_bound_matches(BIG, call("t", json!({"percent": 11})), denied("big"))]
// A string is above every number, and "50" is not 50.
#[case::strings_compare_above_numbers_never_as_numbers(
    BIG_OR_FIFTY,
    call("t", json!({"percent": "50"})),
    denied("big").fired("big", true).fired("eq", false)
)]
#[case::a_short_string_compares_above_numbers_too(
    BIG_OR_FIFTY,
    call("t", json!({"percent": "5"})),
    denied("big").fired("big", true).fired("eq", false)
)]
fn conditions(#[case] rules: &str, #[case] call: Call, #[case] want: Want) {
    want.check(&decide(&policy(rules), &call));
}

const SHORT_RANGES_ONLY: &str = "default: deny\nrules:\n  - { id: short, when: \"days_between(args.from, args.to) < 7\", effect: allow }\n";

#[rstest]
#[case::condition_errors_fail_closed_for_deny_rules(
    "default: allow\nrules:\n  - id: r\n    when: days_between(args.from, args.to) > 3\n    effect: deny\n    reason: too long\n",
    call("t", json!({"from": "garbage", "to": "2025-01-01"})),
    denied("r").reason_has("could not be evaluated")
)]
#[case::conditions_that_fail_keep_the_rule_reason_and_name_the_error(
    "default: allow\nrules:\n  - id: long\n    when: days_between(args.from, args.to) > 31\n    effect: deny\n    reason: exports over a month need review\n",
    call("t", json!({"from": "2025-02-30", "to": "2025-03-01"})),
    denied("long")
        .reason_starts("exports over a month need review (rule 'long' could not be evaluated")
        .reason_has("'2025-02-30' is not a date")
)]
#[case::a_failing_route_condition_denies_and_a_failing_redact_condition_redacts(
    "default: allow\nrules:\n  - { id: eu, when: \"days_between(args.d, args.d) == 0\", effect: route, region: eu }\n  - { id: pii, when: \"days_between(args.d, args.d) == 0\", effect: redact, detectors: [email] }\n",
    call("t", json!({"d": "not a date"})),
    denied("eu").route(None).detectors(DetectorSet::from(Detector::Email)).failed("pii", "")
)]
#[case::an_allow_rule_whose_condition_fails_does_not_allow(
    SHORT_RANGES_ONLY,
    call("t", json!({"from": "soon", "to": "2025-01-01"})),
    denied("default").by_default(true)
)]
#[case::an_allow_rule_whose_condition_holds_allows(
    SHORT_RANGES_ONLY,
    call("t", json!({"from": "2025-01-01", "to": "2025-01-02"})),
    allowed().by_default(false)
)]
#[case::a_runaway_condition_runs_out_of_fuel_and_fails_closed(
    "default: allow\nrules:\n  - id: spin\n    when: range(50000) | select(\"odd\") | list | length > 0 and args.x\n    effect: deny\n    reason: r\n",
    call("t", json!({})),
    denied("spin").failed("spin", "fuel")
)]
fn failing_conditions_fail_closed(#[case] rules: &str, #[case] call: Call, #[case] want: Want) {
    want.check(&decide(&policy(rules), &call));
}
