//! What changed between two versions of `policies.yaml`: the rules added, removed and
//! changed, by id, and every change that takes protection away.
//!
//! Owns what counts as weakening. For an enforced `deny`, `require`, `route` or `redact`
//! rule: it is removed; it goes to shadow mode; its effect becomes anything but `deny`;
//! its `tools` or `match` no longer cover everything they covered; its condition
//! changes (a changed condition cannot be proven narrower); a redact rule drops a
//! detector, a route rule changes region, a require rule asks for something else. Under
//! `default: deny`, an enforced `allow` rule that is added, or whose tools, match,
//! condition or mode change. And `default: deny` becoming `allow`, and an egress list
//! that allows a host it did not. It compares what was written, not compiled rules, and
//! must not log, count, audit or apply anything: the reloader does.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::PolicySpec;
use crate::config::policy::{DefaultEffect, Effect, MatchSpec, Mode, RuleSpec};
use crate::util::glob;

use super::effect_name;

/// What changed between two policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Ids of rules that appeared.
    pub added: Vec<String>,
    /// Ids of rules that went away.
    pub removed: Vec<String>,
    /// Ids of rules whose fields changed.
    pub changed: Vec<String>,
    /// The changes among those (and to `default` and `egress`) that take protection away.
    pub weakened: Vec<Weakening>,
}

impl Changes {
    /// True when no rule, `default` or `egress` changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.weakened.is_empty()
    }
}

/// One change that takes protection away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Weakening {
    /// The rule's id, or `default` or `egress` for those settings.
    pub rule: String,
    /// What happened, e.g. `removed`, `enforce -> shadow`, `effect deny -> allow`.
    pub change: String,
}

/// Compares two policies rule by rule (by id).
pub fn diff(old: &PolicySpec, new: &PolicySpec) -> Changes {
    let mut c = Changes::default();
    let find = |p: &'_ PolicySpec, id: &str| -> Option<RuleSpec> {
        p.rules.iter().find(|r| r.id.value == id).cloned()
    };
    let mut weak = |rule: &str, change: String| {
        c.weakened.push(Weakening {
            rule: rule.to_owned(),
            change,
        });
    };
    if old.default == DefaultEffect::Deny && new.default == DefaultEffect::Allow {
        weak("default", "default deny -> allow".to_owned());
    }
    let hosts = |p: &PolicySpec| -> BTreeSet<String> {
        p.egress.iter().map(|h| h.value.to_lowercase()).collect()
    };
    let more: Vec<String> = hosts(new).difference(&hosts(old)).cloned().collect();
    if !more.is_empty() {
        weak(
            "egress",
            format!("egress allows more hosts: {}", more.join(", ")),
        );
    }
    let default_deny = new.default == DefaultEffect::Deny;
    for r in &old.rules {
        let id = r.id.value.as_str();
        match find(new, id) {
            None => {
                if protects(r) {
                    weak(id, "removed".to_owned());
                }
            }
            Some(n) => {
                for change in weakenings(r, &n, default_deny) {
                    weak(id, change);
                }
            }
        }
    }
    for n in &new.rules {
        let id = n.id.value.as_str();
        if find(old, id).is_none()
            && default_deny
            && n.effect == Effect::Allow
            && n.mode == Mode::Enforce
        {
            weak(id, "allow rule added under default: deny".to_owned());
        }
    }
    let ids =
        |p: &PolicySpec| -> Vec<String> { p.rules.iter().map(|r| r.id.value.clone()).collect() };
    let (before, after) = (ids(old), ids(new));
    c.added = after
        .iter()
        .filter(|i| !before.contains(i))
        .cloned()
        .collect();
    c.removed = before
        .iter()
        .filter(|i| !after.contains(i))
        .cloned()
        .collect();
    c.changed = old
        .rules
        .iter()
        .filter_map(|r| find(new, &r.id.value).map(|n| (r, n)))
        .filter(|(r, n)| Shape::of(r) != Shape::of(n))
        .map(|(r, _)| r.id.value.clone())
        .collect();
    c
}

/// An enforced rule whose effect protects something.
fn protects(r: &RuleSpec) -> bool {
    r.mode == Mode::Enforce && r.effect != Effect::Allow
}

/// How `new` takes away what `old` (same id) gave.
fn weakenings(old: &RuleSpec, new: &RuleSpec, default_deny: bool) -> Vec<String> {
    let (o, n) = (Shape::of(old), Shape::of(new));
    let mut out = Vec::new();
    if old.effect == Effect::Allow {
        let widened = o.tools != n.tools || o.matches != n.matches || o.when != n.when;
        let enforced = new.mode == Mode::Enforce && new.effect == Effect::Allow;
        if default_deny && enforced && (widened || old.mode == Mode::Shadow) {
            out.push("allow rule changed under default: deny".to_owned());
        }
        return out;
    }
    if !protects(old) {
        return out;
    }
    if new.mode == Mode::Shadow {
        out.push("enforce -> shadow".to_owned());
    }
    if new.effect != old.effect && new.effect != Effect::Deny {
        out.push(format!(
            "effect {} -> {}",
            effect_name(old.effect),
            effect_name(new.effect)
        ));
    }
    if !tools_cover(&new.tools, &old.tools) {
        out.push(format!(
            "tools narrowed: [{}] -> [{}]",
            o.tools.join(", "),
            n.tools.join(", ")
        ));
    }
    if !match_covers(new.matches.as_ref(), old.matches.as_ref()) {
        out.push("match narrowed".to_owned());
    }
    if o.when != n.when && n.when.is_some() {
        out.push(format!(
            "condition changed: '{}' -> '{}'",
            o.when.unwrap_or_default(),
            n.when.unwrap_or_default()
        ));
    }
    if new.effect == old.effect {
        let dropped: Vec<String> = o
            .detectors
            .iter()
            .filter(|d| !n.detectors.contains(d))
            .map(|d| format!("{d:?}").to_lowercase())
            .collect();
        if !dropped.is_empty() {
            out.push(format!("detectors dropped: {}", dropped.join(", ")));
        }
        if o.region != n.region {
            out.push(format!(
                "region {} -> {}",
                o.region.unwrap_or("none"),
                n.region.unwrap_or("none")
            ));
        }
        if o.require != n.require {
            out.push("requirement changed".to_owned());
        }
    }
    out
}

/// Whether the globs `new` cover every tool the globs `old` cover (empty: every tool).
/// A glob covers another when it matches its text, stars included: `orders.*` covers
/// `orders.ex*` and `orders.export`.
fn tools_cover(
    new: &[crate::config::Located<String>],
    old: &[crate::config::Located<String>],
) -> bool {
    new.is_empty()
        || (!old.is_empty()
            && old
                .iter()
                .all(|o| new.iter().any(|n| glob(&n.value, &o.value))))
}

/// Whether `new` selects every call `old` selects (`None`: every call).
fn match_covers(new: Option<&MatchSpec>, old: Option<&MatchSpec>) -> bool {
    let (Some(new), Some(old)) = (new, old) else {
        return new.is_none();
    };
    let upstream = new
        .upstream
        .as_ref()
        .is_none_or(|n| old.upstream.as_ref().is_some_and(|o| o.value == n.value));
    let methods = new.methods.is_empty()
        || (!old.methods.is_empty()
            && old
                .methods
                .iter()
                .all(|o| new.methods.iter().any(|n| n.value == o.value)));
    let path = new
        .path
        .as_ref()
        .is_none_or(|n| old.path.as_ref().is_some_and(|o| glob(&n.value, &o.value)));
    upstream && methods && path
}

/// A rule's fields without positions, to compare two versions of it.
#[derive(Debug, PartialEq)]
struct Shape<'a> {
    tools: Vec<&'a str>,
    matches: Option<(Option<&'a str>, Vec<String>, Option<&'a str>)>,
    when: Option<&'a str>,
    effect: Effect,
    mode: Mode,
    reason: Option<&'a str>,
    detectors: BTreeSet<crate::config::policy::Detector>,
    region: Option<&'a str>,
    require: Option<&'a crate::config::policy::RequireSpec>,
}

impl<'a> Shape<'a> {
    fn of(r: &'a RuleSpec) -> Self {
        Self {
            tools: r.tools.iter().map(|t| t.value.as_str()).collect(),
            matches: r.matches.as_ref().map(|m| {
                let mut methods: Vec<String> =
                    m.methods.iter().map(|x| format!("{:?}", x.value)).collect();
                methods.sort();
                (
                    m.upstream.as_ref().map(|u| u.value.as_str()),
                    methods,
                    m.path.as_ref().map(|p| p.value.as_str()),
                )
            }),
            when: r.when.as_ref().map(|w| w.value.trim()),
            effect: r.effect,
            mode: r.mode,
            reason: r.reason.as_deref(),
            detectors: r.detectors.iter().copied().collect(),
            region: r.region.as_deref(),
            require: r.require.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const SEED: &str = r#"
default: allow
egress: [127.0.0.1]
rules:
  - id: prod
    match: { upstream: flags, methods: [PUT, DELETE], path: "/flags/prod/*" }
    when: not elevation.ticket
    effect: deny
    reason: needs a ticket
  - id: pii
    effect: redact
    detectors: [email, pan]
  - id: eu
    tools: [orders.*]
    effect: route
    region: eu
  - id: measure
    mode: shadow
    effect: deny
    reason: r
"#;

    fn spec(yaml: &str) -> PolicySpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn changes(edit: impl Fn(&str) -> String) -> Changes {
        diff(&spec(SEED), &spec(&edit(SEED)))
    }

    fn weakened(c: &Changes) -> Vec<String> {
        c.weakened
            .iter()
            .map(|w| format!("{}: {}", w.rule, w.change))
            .collect()
    }

    #[rstest]
    #[case::the_same_text_changes_nothing(|s: &str| s.to_owned(), &[])]
    #[case::moving_a_rule_down_a_line_changes_nothing(|s: &str| s.replace("rules:\n", "rules:\n\n"), &[])]
    #[case::an_enforced_rule_removed(
        |s: &str| s.replace("  - id: prod\n", "  - id: gone\n    mode: shadow\n"),
        &["prod: removed"]
    )]
    #[case::enforce_to_shadow(|s: &str| s.replace("effect: deny\n    reason: needs", "mode: shadow\n    effect: deny\n    reason: needs"), &["prod: enforce -> shadow"])]
    #[case::deny_to_allow(|s: &str| s.replace("effect: deny\n    reason: needs a ticket", "effect: allow"), &["prod: effect deny -> allow"])]
    #[case::narrower_methods(|s: &str| s.replace("[PUT, DELETE]", "[PUT]"), &["prod: match narrowed"])]
    #[case::a_narrower_path(|s: &str| s.replace("/flags/prod/*", "/flags/prod/x*"), &["prod: match narrowed"])]
    #[case::a_wider_match_is_no_weakening(|s: &str| s.replace("path: \"/flags/prod/*\"", "path: \"/flags/*\""), &[])]
    #[case::a_changed_condition(|s: &str| s.replace("not elevation.ticket", "false"), &["prod: condition changed: 'not elevation.ticket' -> 'false'"])]
    #[case::narrower_tools(|s: &str| s.replace("[orders.*]", "[orders.export]"), &["eu: tools narrowed: [orders.*] -> [orders.export]"])]
    #[case::wider_tools_are_no_weakening(|s: &str| s.replace("[orders.*]", "[orders.*, billing.*]"), &[])]
    #[case::a_dropped_detector(|s: &str| s.replace("[email, pan]", "[email]"), &["pii: detectors dropped: pan"])]
    #[case::another_region(|s: &str| s.replace("region: eu", "region: us"), &["eu: region eu -> us"])]
    #[case::a_shadow_rule_removed_is_no_weakening(|s: &str| s.replace("  - id: measure\n    mode: shadow\n    effect: deny\n    reason: r\n", ""), &[])]
    #[case::more_egress(
        |s: &str| s.replace("[127.0.0.1]", "[127.0.0.1, evil.example]"),
        &["egress: egress allows more hosts: evil.example"]
    )]
    fn weakenings_are_named_with_their_rule(
        #[case] edit: fn(&str) -> String,
        #[case] want: &[&str],
    ) {
        assert_eq!(weakened(&changes(edit)), want);
    }

    #[test]
    fn the_prod_rule_written_half_way_is_removed_and_reported() {
        let half = &SEED[..SEED.find("rules:").unwrap()];
        let c = diff(&spec(SEED), &spec(half));
        assert_eq!(c.removed, ["prod", "pii", "eu", "measure"]);
        assert_eq!(
            weakened(&c),
            ["prod: removed", "pii: removed", "eu: removed"]
        );
    }

    #[test]
    fn added_removed_and_changed_rules_are_listed_by_id() {
        let c = changes(|s| {
            s.replace("reason: needs a ticket", "reason: needs a change ticket")
                .replace("  - id: measure\n", "  - id: measure2\n")
        });
        assert_eq!(c.added, ["measure2"]);
        assert_eq!(c.removed, ["measure"]);
        assert_eq!(c.changed, ["prod"]);
        assert!(c.weakened.is_empty(), "{c:?}");
    }

    #[test]
    fn under_default_deny_an_allow_rule_added_or_widened_weakens() {
        let old = spec(
            "default: deny\nrules:\n  - { id: reads, tools: [orders.export], effect: allow }\n",
        );
        let wider = spec(
            "default: deny\nrules:\n  - { id: reads, tools: [orders.*], effect: allow }\n  - { id: all, effect: allow }\n",
        );
        assert_eq!(
            weakened(&diff(&old, &wider)),
            [
                "reads: allow rule changed under default: deny",
                "all: allow rule added under default: deny"
            ]
        );
        let open = spec("default: allow\n");
        assert_eq!(
            weakened(&diff(&old, &open)),
            ["default: default deny -> allow"]
        );
    }
}
