use super::super::Sent;
use super::*;
use serde_json::{Value, json};
use std::collections::HashSet;

use crate::policy::compiled as policy;

const RULES: &str = r#"
default: allow
rules:
  - id: internal-only
    tools: [customer.*]
    when: '"@corp.example" not in args.email'
    effect: deny
    reason: internal customers only
  - id: big-refunds
    tools: [customer.refund]
    when: args.amount > 100
    effect: deny
    reason: too big
  - id: prod-needs-ticket
    tools: [flag.set]
    when: args.env == "prod" and not elevation.ticket
    effect: deny
    reason: ticket
  - id: anything-goes
    tools: [misc.*]
    when: args.get("x") == 1
    effect: deny
    reason: x
"#;

struct Rec {
    tool: &'static str,
    args: Value,
    redacted: Vec<String>,
    elevation: Option<Value>,
    elevation_known: bool,
}

fn rec(tool: &'static str, args: Value) -> Rec {
    Rec {
        tool,
        args,
        redacted: Vec::new(),
        elevation: None,
        elevation_known: true,
    }
}

impl Rec {
    fn redacting(mut self, pointer: &str) -> Self {
        self.redacted.push(pointer.to_owned());
        self
    }

    fn grants_unread(mut self) -> Self {
        self.elevation_known = false;
        self
    }

    fn replay(&self, p: &Policy) -> Replayed {
        let (actor, env) = (json!({"subject": "agent:a"}), json!({"name": "prod"}));
        p.replay(&Recorded {
            facts: Facts {
                tool: self.tool,
                request: Request::UNKNOWN,
                args: &self.args,
                actor: &actor,
                elevation: self.elevation.as_ref(),
                env: &env,
            },
            redacted: &self.redacted,
            elevation_known: self.elevation_known,
            request_hidden: None,
        })
    }
}

fn hidden(r: &Replayed, p: &Policy, id: &str) -> Option<Hidden> {
    let at = p.position(id);
    r.hidden.get(at).copied().flatten()
}

#[test]
fn a_rule_reading_a_redacted_argument_is_not_judged_and_the_decision_waits_on_it() {
    let p = policy(RULES);
    let r = rec(
        "customer.refund",
        json!({"email": "j***@corp.example", "amount": 5}),
    )
    .redacting("/args/email")
    .replay(&p);
    assert_eq!(hidden(&r, &p, "internal-only"), Some(Hidden::Redacted));
    assert_eq!(hidden(&r, &p, "big-refunds"), None);
    // internal-only could deny or not: the decision depends on the hidden email
    assert_eq!(r.allowed, None);
    assert_eq!(r.denial, None);
}

#[test]
fn a_known_denial_holds_whatever_was_hidden() {
    let p = policy(RULES);
    let r = rec(
        "customer.refund",
        json!({"email": "j***@corp.example", "amount": 500}),
    )
    .redacting("/args/email")
    .replay(&p);
    assert_eq!(r.allowed, Some(false));
    assert_eq!(r.denial.unwrap().0, "big-refunds");
    let big = &r.outcomes[p.position("big-refunds")];
    assert!(big.would_deny);
}

#[test]
fn a_redacted_argument_no_rule_reads_changes_nothing() {
    let p = policy(RULES);
    let r = rec("flag.set", json!({"env": "staging", "note": "[REDACTED]"}))
        .redacting("/args/note")
        .replay(&p);
    assert!(r.hidden.iter().all(Option::is_none), "{:?}", r.hidden);
    assert_eq!(r.allowed, Some(true));
}

#[test]
fn a_pointer_under_an_argument_hides_it_and_a_longer_name_does_not() {
    let p = policy(RULES);
    let nested = rec("customer.refund", json!({"email": {"x": "y"}, "amount": 1}))
        .redacting("/args/email/x")
        .replay(&p);
    assert_eq!(hidden(&nested, &p, "internal-only"), Some(Hidden::Redacted));
    let other = rec(
        "customer.refund",
        json!({"email": "a@corp.example", "amount": 1}),
    )
    .redacting("/args/emails")
    .replay(&p);
    assert_eq!(hidden(&other, &p, "internal-only"), None);
    assert_eq!(other.allowed, Some(true));
}

#[test]
fn arguments_named_whole_hide_every_argument_but_only_from_rules_that_read_one() {
    // a key among the arguments was rewritten (it held an email): the record names /args
    let p = policy(RULES);
    let r = rec(
        "customer.refund",
        json!({"amount": 5, "j***@corp.example": 1}),
    )
    .redacting("/args")
    .replay(&p);
    assert_eq!(hidden(&r, &p, "internal-only"), Some(Hidden::Redacted));
    assert_eq!(hidden(&r, &p, "big-refunds"), Some(Hidden::Redacted));
    assert_eq!(r.allowed, None);
    // the actor named whole hides nothing from rules that read no actor fact
    let r = rec(
        "customer.refund",
        json!({"email": "a@corp.example", "amount": 5}),
    )
    .redacting("/policy/actor")
    .replay(&p);
    assert!(r.hidden.iter().all(Option::is_none), "{:?}", r.hidden);
    assert_eq!(r.allowed, Some(true));
}

#[test]
fn a_rule_reading_args_as_a_whole_is_hidden_by_any_redacted_argument() {
    let p = policy(RULES);
    let r = rec("misc.thing", json!({"x": 1, "token": "[REDACTED]"}))
        .redacting("/args/token")
        .replay(&p);
    assert_eq!(hidden(&r, &p, "anything-goes"), Some(Hidden::Redacted));
    assert_eq!(r.allowed, None);
    let clean = rec("misc.thing", json!({"x": 1})).replay(&p);
    assert_eq!(clean.allowed, Some(false));
}

#[test]
fn elevation_the_call_never_looked_up_is_not_recorded() {
    let p = policy(RULES);
    let r = rec("flag.set", json!({"env": "prod"}))
        .grants_unread()
        .replay(&p);
    assert_eq!(
        hidden(&r, &p, "prod-needs-ticket"),
        Some(Hidden::NotRecorded)
    );
    assert_eq!(r.allowed, None);
    // looked up and none applied: judged, and denied
    let none = rec("flag.set", json!({"env": "prod"})).replay(&p);
    assert_eq!(none.allowed, Some(false));
    // a staging call is judged without the grant only if the rule says so: it reads
    // elevation whatever env is, so it stays unjudged
    let staging = rec("flag.set", json!({"env": "staging"}))
        .grants_unread()
        .replay(&p);
    assert_eq!(
        hidden(&staging, &p, "prod-needs-ticket"),
        Some(Hidden::NotRecorded)
    );
    assert_eq!(staging.allowed, None);
}

#[test]
fn a_hidden_allow_rule_under_default_deny_leaves_the_call_undecided() {
    let p = policy(
        r#"
default: deny
rules:
  - id: support-reads
    when: actor.purpose == "support"
    effect: allow
"#,
    );
    let actor = json!({"subject": "agent:a", "purpose": "***"});
    let env = json!({});
    let args = json!({});
    let redacted = vec!["/policy/actor/purpose".to_owned()];
    let r = p.replay(&Recorded {
        facts: Facts {
            tool: "orders.export",
            request: Request::UNKNOWN,
            args: &args,
            actor: &actor,
            elevation: None,
            env: &env,
        },
        redacted: &redacted,
        elevation_known: true,
        request_hidden: None,
    });
    assert_eq!(r.hidden[0], Some(Hidden::Redacted));
    assert_eq!(r.allowed, None);
}

#[test]
fn require_rules_read_what_they_require() {
    let p = policy(
        r#"
default: allow
rules:
  - id: prod-needs-ticket
    tools: [flag.set]
    effect: require
    require: { ticket: true }
    reason: ticket
"#,
    );
    let r = rec("flag.set", json!({})).grants_unread().replay(&p);
    assert_eq!(r.hidden[0], Some(Hidden::NotRecorded));
    assert_eq!(r.allowed, None);
    let mut granted = rec("flag.set", json!({}));
    granted.elevation = Some(json!({"ticket": "CHG-1"}));
    assert_eq!(granted.replay(&p).allowed, Some(true));
}

#[test]
fn what_a_condition_reads() {
    let vars = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<HashSet<_>>();
    let s = Sees::of(&vars(&[
        "args.env",
        "args.a.b",
        "actor.region",
        "elevation.ticket",
    ]));
    assert_eq!(s.args, ["a", "env"]);
    assert!(!s.all_args);
    assert_eq!(s.actor, ["region"]);
    assert!(s.elevation && !s.env);
    assert!(Sees::of(&vars(&["args"])).all_args);
    assert!(Sees::of(&vars(&["args.items"])).all_args);
    assert!(Sees::of(&vars(&["actor"])).all_actor);
    assert!(Sees::of(&vars(&["env.name"])).env);
    assert_eq!(pointer_step("a/b~c"), "a~1b~0c");
}

#[test]
fn a_rule_on_the_rendered_request_waits_when_the_request_came_from_a_redacted_argument() {
    let p = policy(
        r#"
default: allow
rules:
  - id: prod-writes
    match: { upstream: flags, methods: [PUT], path: "/flags/prod/*" }
    when: request.body.percent > 10
    effect: deny
    reason: too much
  - id: any-flag-write
    match: { upstream: flags, methods: [PUT] }
    effect: deny
    reason: frozen
    mode: shadow
"#,
    );
    let sent = Sent::new(
        "flags",
        "PUT",
        "/flags/prod/x",
        &[],
        Some(&json!({"percent": 50})),
    );
    let (actor, env, args) = (json!({"subject": "a"}), json!({}), json!({}));
    let replay = |hidden: Option<Hidden>| {
        p.replay(&Recorded {
            facts: Facts {
                tool: "flag.set",
                request: Request {
                    upstream: "flags",
                    method: "PUT",
                    path_shape: "/flags/*/*",
                    sent: Some(&sent),
                },
                args: &args,
                actor: &actor,
                elevation: None,
                env: &env,
            },
            redacted: &[],
            elevation_known: true,
            request_hidden: hidden,
        })
    };
    let known = replay(None);
    assert_eq!(known.allowed, Some(false));
    let hidden = replay(Some(Hidden::Redacted));
    assert_eq!(hidden.hidden[0], Some(Hidden::Redacted));
    // a rule that selects on upstream and method alone needs no rendered request
    assert_eq!(hidden.hidden[1], None);
    assert!(hidden.outcomes[1].would_deny);
    assert_eq!(hidden.allowed, None);
}

#[test]
fn request_templates_hide_what_they_read() {
    let vars = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let redacted = vec!["/args/email".to_owned()];
    assert_eq!(
        template_hidden(&vars(&["args.email"]), &redacted),
        Some(Hidden::Redacted)
    );
    assert_eq!(
        template_hidden(&vars(&["args"]), &redacted),
        Some(Hidden::Redacted)
    );
    assert_eq!(template_hidden(&vars(&["args.env"]), &redacted), None);
    assert_eq!(
        template_hidden(&vars(&["secret.K"]), &[]),
        Some(Hidden::NotRecorded)
    );
}
