//! What a human could give to lift a denial ([`Decision::lift`]): a ticket when every
//! rule that denied reads `elevation`, a yes for `require: { approval: true }`, nothing
//! when any denial is one a human cannot change.

use crate::config::PolicySpec;
use crate::config::diag::Diagnostics;
use crate::policy::*;
use rstest::rstest;
use serde_json::json;
use std::path::Path;

fn decide(yaml: &str, args: Value, elevation: Option<Value>) -> Decision {
    let spec: PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    let policy = Policy::compile(
        Path::new("policies.yaml"),
        &spec,
        &mut Diagnostics::default(),
    )
    .unwrap();
    policy.evaluate(&Facts {
        tool: "flag.set",
        request: Request::UNKNOWN,
        args: &args,
        actor: &json!({"subject": "user:ana", "scopes": ["*"], "purpose": "ops"}),
        elevation: elevation.as_ref(),
        env: &json!({"name": "test"}),
    })
}

const TICKET_DENY: &str = r#"
  - id: needs-ticket
    when: args.percent > 10 and not elevation.ticket
    effect: deny
    reason: needs a ticket"#;
const APPROVAL: &str = r#"
  - id: needs-approval
    effect: require
    reason: a human approves each change
    require: { approval: true }"#;
const REQUIRE_TICKET: &str = r#"
  - id: needs-ticket-grant
    effect: require
    reason: a ticket
    require: { ticket: true }"#;
const PLAIN_DENY: &str = r#"
  - id: never
    when: args.percent > 90
    effect: deny
    reason: never above 90"#;
const PURPOSE: &str = r#"
  - id: ops-only
    effect: require
    reason: ops only
    require: { purpose: [oncall], approval: true }"#;

fn rules(parts: &[&str]) -> String {
    format!("default: allow\nrules:{}\n", parts.concat())
}

#[rstest]
#[case::a_rule_reading_elevation_is_lifted_by_a_ticket(&[TICKET_DENY], 50, Some(Lift::Ticket))]
#[case::require_ticket_is_lifted_by_a_ticket(&[REQUIRE_TICKET], 5, Some(Lift::Ticket))]
#[case::require_approval_is_lifted_by_a_yes(&[APPROVAL], 5, Some(Lift::Confirm))]
#[case::a_ticket_lifts_both_so_it_is_asked(&[APPROVAL, TICKET_DENY], 50, Some(Lift::Ticket))]
#[case::a_plain_deny_cannot_be_lifted(&[PLAIN_DENY], 95, None)]
#[case::one_plain_deny_among_liftable_ones_cannot_be_lifted(&[TICKET_DENY, PLAIN_DENY], 95, None)]
#[case::a_missing_purpose_cannot_be_given_by_a_human(&[PURPOSE], 5, None)]
#[case::an_allowed_call_has_nothing_to_lift(&[TICKET_DENY], 5, None)]
fn what_lifts_a_denial(#[case] parts: &[&str], #[case] percent: u64, #[case] want: Option<Lift>) {
    let d = decide(&rules(parts), json!({"percent": percent}), None);
    assert_eq!(d.lift, want, "{d:?}");
}

#[test]
fn a_default_deny_cannot_be_lifted() {
    let d = decide("default: deny\n", json!({"percent": 5}), None);
    assert!(d.denial.is_some());
    assert_eq!(d.lift, None);
}

#[test]
fn the_answer_as_elevation_lifts_what_it_should_and_no_more() {
    let yaml = rules(&[APPROVAL, TICKET_DENY]);
    // A yes satisfies the approval, not the rule that wants a ticket.
    let yes = json!({"approval": "confirmed", "granted_by": "user:ana via host"});
    let d = decide(&yaml, json!({"percent": 50}), Some(yes.clone()));
    assert_eq!(
        d.denial.as_ref().map(|(r, _)| r.as_str()),
        Some("needs-ticket")
    );
    let d = decide(&yaml, json!({"percent": 5}), Some(yes));
    assert!(d.allowed, "{d:?}");
    // A ticket satisfies both.
    let ticket =
        json!({"approval": "ticket", "ticket": "CHG-1", "granted_by": "user:ana via host"});
    let d = decide(&yaml, json!({"percent": 50}), Some(ticket));
    assert!(d.allowed, "{d:?}");
    // A standing elevation grant (mcpd elevate) is not an approval of this call.
    let grant = json!({"ticket": "CHG-2", "granted_by": "ops"});
    let d = decide(&rules(&[APPROVAL]), json!({"percent": 5}), Some(grant));
    assert_eq!(
        d.denial.map(|(_, reason)| reason).as_deref(),
        Some("a human approves each change (missing: a human's approval of this call)")
    );
}

#[test]
fn a_require_rule_may_ask_for_approval_alone() {
    let spec: PolicySpec = serde_saphyr::from_str(&rules(&[APPROVAL])).unwrap();
    let mut diags = Diagnostics::default();
    assert!(Policy::compile(Path::new("policies.yaml"), &spec, &mut diags).is_some());
    let empty =
        "default: allow\nrules:\n  - id: r\n    effect: require\n    reason: x\n    require: {}\n";
    let spec: PolicySpec = serde_saphyr::from_str(empty).unwrap();
    assert!(Policy::compile(Path::new("policies.yaml"), &spec, &mut diags).is_none());
    assert!(
        diags
            .to_string()
            .contains("'require' asks for nothing: set ticket, purpose, scope or approval"),
        "{diags}"
    );
}

const SHADOW_TICKET: &str = r#"
  - id: would-need-ticket
    mode: shadow
    when: args.percent > 10 and not elevation.ticket
    effect: deny
    reason: would need a ticket"#;
const ALLOW: &str = r#"
  - id: small-changes
    when: args.percent <= 10
    effect: allow"#;
const BROKEN: &str = r#"
  - id: broken
    when: args.percent.nope.deeper > 1
    effect: deny
    reason: cannot be evaluated"#;

/// Every rule a test below may pick, and whether it alone could give a denial a lift.
const PARTS: [(&str, bool); 9] = [
    (TICKET_DENY, true),
    (APPROVAL, true),
    (REQUIRE_TICKET, true),
    (PLAIN_DENY, false),
    (PURPOSE, true),
    (SHADOW_TICKET, false),
    (ALLOW, false),
    (BROKEN, false),
    (
        r#"
  - id: other-tool
    tools: [orders.*]
    effect: require
    reason: x
    require: { approval: true }"#,
        false,
    ),
];

proptest::proptest! {
    /// (`PROPTEST_CASES` sets how many; 256 by default.) `may_lift` is what the direct path over HTTP relies on to answer a call without a
    /// stream: when it says no rule can be lifted, no call's decision has a lift, whatever
    /// its arguments, caller and grants.
    #[test]
    fn no_call_has_a_lift_when_may_lift_says_none_can(
        picked in proptest::collection::vec(0..PARTS.len(), 0..4),
        percent in 0u64..100,
        grant in 0usize..3,
        oncall in proptest::bool::ANY,
        default_deny in proptest::bool::ANY,
    ) {
        let parts: Vec<&str> = picked.iter().map(|&i| PARTS[i].0).collect();
        let default = if default_deny { "deny" } else { "allow" };
        let yaml = format!("default: {default}\nrules:{}\n", if parts.is_empty() { " []".to_owned() } else { parts.concat() });
        let spec: PolicySpec = serde_saphyr::from_str(&yaml).unwrap();
        let mut diags = Diagnostics::default();
        let Some(policy) = Policy::compile(Path::new("policies.yaml"), &spec, &mut diags) else {
            // The same rule id twice: not a policy anyone can load.
            return Ok(());
        };
        let may = policy.may_lift("flag.set", &Request::UNKNOWN);
        let expected = picked.iter().any(|&i| PARTS[i].1);
        proptest::prop_assert_eq!(may, expected, "{}", yaml);
        let elevation = [
            None,
            Some(json!({"approval": "confirmed", "granted_by": "user:ana via host"})),
            Some(json!({"approval": "ticket", "ticket": "CHG-1", "granted_by": "x"})),
        ][grant].clone();
        let purpose = if oncall { "oncall" } else { "ops" };
        let args = json!({"percent": percent});
        let d = policy.evaluate(&Facts {
            tool: "flag.set",
            request: Request::UNKNOWN,
            args: &args,
            actor: &json!({"subject": "user:ana", "scopes": ["*"], "purpose": purpose}),
            elevation: elevation.as_ref(),
            env: &json!({"name": "test"}),
        });
        proptest::prop_assert!(may || d.lift.is_none(), "{yaml}\n{d:?}");
    }
}
