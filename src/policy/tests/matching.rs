//! Rules that select what a call does (`match`, `request.*` in conditions), and the
//! write tools that escape a guarding rule.

use super::*;

/// The shipped prod rule: it selects what a call does, whatever the tool is called.
const BY_REQUEST: &str = r#"
default: allow
rules:
  - id: prod-write-needs-ticket
    match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE], path: "/flags/prod/*" }
    when: not (request.body.percent is number and request.body.percent <= 10) and not elevation.ticket
    effect: deny
    reason: prod changes above 10 percent need a ticket
  - id: no-flag-deletes
    tools: [flag.*]
    match: { methods: [DELETE] }
    effect: deny
    reason: flags are not deleted
  - id: flags-read-in-query
    match: { upstream: flags, methods: [GET] }
    when: request.query.env == "prod" and request.method == "GET"
    effect: deny
    reason: no prod reads
"#;

const FLAGS_PUT: (&str, &str, &str) = ("flags", "PUT", "/flags/*/*");

#[rstest]
#[case::the_shipped_tool_writing_prod_above_ten_is_denied(
    call("flag.set", json!({})).sends(FLAGS_PUT, "/flags/prod/checkout_v2", json!({"percent": 50})),
    denied("prod-write-needs-ticket").reason("prod changes above 10 percent need a ticket")
)]
#[case::another_tool_id_with_other_argument_names_is_denied_the_same(
    call("flags.rollout", json!({"environment": "prod", "pct": 50}))
        .sends(FLAGS_PUT, "/flags/prod/checkout_v2", json!({"percent": 50})),
    denied("prod-write-needs-ticket")
)]
#[case::ten_percent_in_prod_is_allowed(
    call("flags.rollout", json!({})).sends(FLAGS_PUT, "/flags/prod/x", json!({"percent": 10})),
    allowed().fired("prod-write-needs-ticket", false)
)]
#[case::staging_is_another_path(
    call("flags.rollout", json!({})).sends(FLAGS_PUT, "/flags/staging/x", json!({"percent": 90})),
    allowed().off_path("prod-write-needs-ticket")
)]
#[case::a_percent_sent_as_a_string_is_no_number_at_most_ten(
    call("t", json!({})).sends(FLAGS_PUT, "/flags/prod/x", json!({"percent": "5"})),
    denied("prod-write-needs-ticket")
)]
#[case::a_body_without_percent_is_denied_not_waved_through(
    call("t", json!({})).sends(("flags", "POST", "/flags/*/*"), "/flags/prod/x", json!({"pct": 5})),
    denied("prod-write-needs-ticket")
)]
#[case::an_escaped_segment_is_decoded_before_matching(
    call("t", json!({})).sends(("flags", "PUT", "/flags/pr%6Fd/*"), "/flags/pr%6Fd/x", json!({"percent": 50})),
    denied("prod-write-needs-ticket")
)]
#[case::dot_segments_are_resolved_before_matching(
    call("t", json!({})).sends(("flags", "PUT", "/flags/staging/../*/*"), "/flags/staging/../prod/x", json!({"percent": 50})),
    denied("prod-write-needs-ticket")
)]
#[case::a_ticket_lets_it_through(
    call("t", json!({})).sends(FLAGS_PUT, "/flags/prod/x", json!({"percent": 50})).elevated(json!({"ticket": "CHG-1"})),
    allowed()
)]
#[case::a_read_of_the_same_path_is_not_a_write(
    call("flag.get", json!({})).sends(("flags", "GET", "/flags/*/*"), "/flags/prod/x", Value::Null),
    allowed().fired("flags-read-in-query", false)
)]
#[case::another_upstream_is_not_selected(
    call("t", json!({})).sends(("orders", "PUT", "/flags/*/*"), "/flags/prod/x", json!({"percent": 50})),
    allowed()
)]
#[case::a_path_that_must_be_matched_per_call_but_was_not_rendered_fails_closed(
    call("t", json!({})).unrendered(FLAGS_PUT),
    denied("prod-write-needs-ticket").reason_has("the request was not rendered")
)]
#[case::tools_and_match_must_both_select(
    call("flag.delete", json!({})).sends(("flags", "DELETE", "/flags/staging/x"), "/flags/staging/x", Value::Null),
    denied("no-flag-deletes")
)]
#[case::match_alone_does_not_select_another_tool_family(
    call("orders.delete", json!({})).sends(("orders", "DELETE", "/orders/*"), "/orders/1", Value::Null),
    allowed()
)]
#[case::conditions_read_the_rendered_query(
    call("flag.get", json!({})).sends(("flags", "GET", "/flags?env=*"), "/flags?env=prod", Value::Null),
    denied("flags-read-in-query")
)]
fn rules_select_what_a_call_does(#[case] call: Call, #[case] want: Want) {
    want.check(&decide(&policy(BY_REQUEST), &call));
}

#[test]
fn only_calls_a_path_rule_may_select_are_rendered_before_policy() {
    let p = policy(BY_REQUEST);
    let req = |upstream, method, path_shape| Request {
        upstream,
        method,
        path_shape,
        sent: None,
    };
    assert!(p.needs_request("flag.set", &req("flags", "PUT", "/flags/*/*")));
    // The path is known without rendering: the rule always applies, nothing to render.
    assert!(
        p.needs_request("x", &req("flags", "PUT", "/flags/prod/x")),
        "the condition reads request.body"
    );
    assert!(!p.needs_request("orders.export", &req("orders", "GET", "/orders")));
    assert!(!p.needs_request("y", &req("flags", "PUT", "/admin/reset")));
    // A condition on request.method and .query: the query needs rendering.
    assert!(p.needs_request("flag.get", &req("flags", "GET", "/flags")));
}

#[test]
fn match_upstreams_are_checked_against_mcpd_yaml() {
    let p = policy(BY_REQUEST);
    assert!(
        p.check_upstreams(Path::new("policies.yaml"), &["flags", "orders"])
            .is_empty()
    );
    let d = p
        .check_upstreams(Path::new("policies.yaml"), &["orders"])
        .to_string();
    assert!(
        d.contains("policies.yaml:5:24: rule 'prod-write-needs-ticket': match.upstream: no upstream is named 'flags' (mcpd.yaml declares: orders)"),
        "{d}"
    );
}

#[test]
fn a_write_tool_that_escapes_a_guarding_rule_is_warned_about() {
    let by_id = policy(
        "default: allow\nrules:\n  - { id: prod, tools: [flag.set], effect: deny, reason: r }\n",
    );
    let tool = |id, method, path_shape| WriteTool {
        id,
        upstream: "flags",
        method,
        path_shape,
        file: Path::new("tools.d/x.yaml"),
        pos: crate::config::diag::Pos::new(1, 7),
    };
    let tools = [
        tool("flag.set", "PUT", "/flags/*/*"),
        tool("flags.rollout", "PUT", "/flags/*/*"),
        tool("flag.get", "GET", "/flags/*/*"),
    ];
    let d = by_id.escapes(&tools).to_string();
    assert_eq!(
        d,
        "tools.d/x.yaml:1:7: warning: tool 'flags.rollout' (PUT /flags/*/* on upstream 'flags') escapes rule 'prod', which guards the other writes to 'flags' (flag.set): add it to the rule's tools, or select what calls do with match: { upstream: flags, methods: [...], path: \"...\" }"
    );
    // Selecting what calls do covers both; a write elsewhere on the upstream escapes.
    let by_request = policy(BY_REQUEST);
    assert!(by_request.escapes(&tools[..]).is_empty());
    let reset = [tools[0], tool("flags.reset", "POST", "/admin/reset")];
    let d = by_request.escapes(&reset).to_string();
    assert!(d.contains("tool 'flags.reset' (POST /admin/reset on upstream 'flags') escapes rule 'prod-write-needs-ticket'"), "{d}");
}
