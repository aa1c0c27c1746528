//! Policy: the rules of `policies.yaml`, compiled once per reload, evaluated per call.
//!
//! Owns rule checking (every problem, with its position), matching (tool globs,
//! conditions), the combination of effects (deny wins over allow, shadow rules only
//! recorded) and fail-closed handling of conditions that cannot be evaluated. It never
//! sends requests, never sees secrets and never parses on the call path.
//!
//! Conditions are minijinja expressions, each compiled once into one shared environment
//! as the template `{% if EXPR %}1{% endif %}` named after its rule; evaluating one
//! renders that precompiled template. (A `minijinja::Expression` borrows its
//! environment; storing templates by name lets the policy own its conditions without a
//! self-referential struct or a leaked environment.) The context is built once per
//! decision, and not at all when no applicable rule has a condition.
//!
//! Values in conditions, chosen and tested here:
//! - A missing field is *undefined* (minijinja's chainable undefined): `elevation` without
//!   a grant, `actor.region` of an actor with none, an argument the caller left out. It
//!   is false, `not` makes it true, it equals nothing but undefined, and it orders below
//!   every value (`args.x > 10` is false, `args.x < 10` true). Misspelled roots and fields
//!   of `actor`, `elevation` and `env` are compile errors; misspelled arguments are
//!   caught by [`Policy::check_tools`] against the tools' input schemas.
//! - Values of different kinds compare by kind, never by conversion: a string orders
//!   above every number, so `"50" > 10` and `"5" > 10` are both true and `"50" == 50` is
//!   false. Input schemas are checked before policy, so an argument declared as a number
//!   is one; a rule on a string argument should compare strings, or convert with `| int`.
//! - A condition that fails (a bad date in `days_between`, a type error, out of fuel)
//!   fails closed: deny, require and route rules deny with their reason and the error,
//!   redact rules redact, allow rules do not allow.
//!
//! Rules select calls by tool id (`tools`) and by what the call does (`match`: upstream,
//! method, path pattern; see `request.rs`). What a tool's calls can reach is worked out
//! once per tool; only a rule whose path pattern the tool's path template may or may not
//! match is checked per call, on the rendered path, which the engine then sends as is.
//!
//! This file holds the compiled policy and the call path over it (evaluate, explain, the
//! per-tool index of applicable rules); checking and compiling `policies.yaml` is in
//! `compile.rs`, the functions conditions may call in `functions.rs`, what a call does in
//! `request.rs`, what changed between two policies in `changes.rs`, which write tools
//! escape a guarding rule in `escapes.rs`, and what a rule reads of a call and replaying
//! a recorded call (`mcpd backtest`, `mcpd test --coverage`) in `replay.rs`.

mod changes;
mod compile;
mod escapes;
mod functions;
mod lift;
mod replay;
mod request;

pub use changes::{Changes, Weakening, diff};
pub use escapes::WriteTool;
pub use lift::Lift;
pub use replay::{Hidden, Recorded, Replayed, RuleInfo, pointer_step, template_hidden};
pub use request::{Request, Sent};

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use minijinja::Environment;
use serde_json::Value;

use crate::config::diag::Pos;
use crate::config::policy::{DefaultEffect, Effect, Mode, RedactionSpec, RequireSpec};
use crate::redact::DetectorSet;
use crate::template::to_value;
use crate::util::glob;
use lift::unmet;
use request::{Match, Reach};

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    id: String,
    tools: Vec<(String, Pos)>,
    /// What the call must do (`match`), with the position of its upstream.
    matches: Option<(Match, Pos)>,
    /// The name of the condition's template in the environment.
    when: Option<String>,
    when_pos: Pos,
    /// Argument names the condition reads (`args.NAME`), for [`Policy::check_tools`].
    reads: Vec<String>,
    /// The condition reads `request`; `request.path`, `.query` or `.body` when
    /// `reads_sent` (those need the rendered request).
    reads_request: bool,
    reads_sent: bool,
    /// Every fact the rule reads (condition and requirement), for replaying a record.
    sees: replay::Sees,
    /// The rule looks at the caller's elevation grant (its condition or `require.ticket`).
    uses_elevation: bool,
    effect: Effect,
    mode: Mode,
    reason: String,
    detectors: DetectorSet,
    region: Option<String>,
    require: Option<RequireSpec>,
}

/// The compiled policy.
pub struct Policy {
    default: DefaultEffect,
    rules: Vec<Rule>,
    /// The rules that can reach a tool's calls, computed on first use per tool. Tools
    /// reach policy only after catalog lookup, so this holds at most one entry per tool.
    by_tool: RwLock<HashMap<String, Arc<Applicable>>>,
    env: Environment<'static>,
    /// How detectors replace what they find.
    pub redaction: RedactionSpec,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("default", &self.default)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// The rules that can reach one tool's calls.
#[derive(Debug)]
struct Applicable {
    /// What the tool does, as the index was built for it.
    upstream: String,
    method: String,
    path_shape: String,
    /// Rule indexes in file order, each with whether its path is checked per call.
    rules: Box<[(usize, bool)]>,
    /// Some rule needs the rendered request: a path checked per call, or a condition
    /// reading `request.path`, `.query` or `.body`.
    needs_request: bool,
    /// Some rule's condition reads `request`.
    reads_request: bool,
    /// Some rule looks at elevation grants.
    needs_elevation: bool,
    /// Some enforced rule could deny in a way a human's answer might lift.
    may_lift: bool,
}

impl Applicable {
    fn built_for(&self, r: &Request<'_>) -> bool {
        self.upstream == r.upstream && self.method == r.method && self.path_shape == r.path_shape
    }
}

/// What the rules see of a call.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The tool id.
    pub tool: &'a str,
    /// What the call does: its upstream, method and path (rendered when a rule needs
    /// it; see [`Policy::needs_request`]).
    pub request: Request<'a>,
    /// The validated arguments.
    pub args: &'a Value,
    /// The actor: subject, scopes, purpose, region.
    pub actor: &'a Value,
    /// The elevation grant (ticket, granted_by, expires), if the actor holds a valid one
    /// for this call; checking its expiry is the caller's job.
    pub elevation: Option<&'a Value>,
    /// The deployment (`env.name` from `MCPD_ENV`).
    pub env: &'a Value,
}

/// How one rule came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    /// The rule id.
    pub id: String,
    /// Enforced or shadow.
    pub mode: Mode,
    /// Its effect.
    pub effect: Effect,
    /// Whether it selects the call (its `tools` and `match`).
    pub applies: bool,
    /// It selects the tool, but the call's rendered path does not match its
    /// `match.path`.
    pub path_mismatch: bool,
    /// Whether its condition held (false when it does not apply or failed).
    pub matched: bool,
    /// Whether it denies the call (enforced) or would have (shadow): a matching deny, an
    /// unmet require, or a protective rule whose condition failed.
    pub would_deny: bool,
    /// Why its condition could not be evaluated, if it could not.
    pub error: Option<String>,
}

/// The outcome of evaluating the rules for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may go on.
    pub allowed: bool,
    /// The denying rule (or `default`) and its reason, when denied.
    pub denial: Option<(String, String)>,
    /// The first enforced `require` rule left unmet, and what was missing.
    pub require_unmet: Option<(String, String)>,
    /// What a human could give, when asked, that might lift the denial: every enforced
    /// rule that denied reads the caller's elevation (a change ticket) or asks for an
    /// approval. `None` when the call is allowed or nothing a human says can change it.
    pub lift: Option<Lift>,
    /// The region the call must be served from.
    pub route: Option<String>,
    /// Detectors to run on the result: the union of the enforced redact rules that fired.
    pub detectors: DetectorSet,
    /// Ids of the enforced rules that fired (matched, or failed closed), in file order.
    pub matched: Vec<String>,
    /// Shadow rules that would have acted, as `id:effect`.
    pub shadow: Vec<String>,
    /// Whether `default:` decided: no enforced allow or deny rule fired.
    pub default_used: bool,
    /// Every rule, in file order, applicable or not: filled by [`Policy::explain`] only.
    pub outcomes: Vec<RuleOutcome>,
}

/// A tool as [`Policy::check_tools`] sees it.
#[derive(Debug, Clone)]
pub struct ToolArgs<'a> {
    /// The tool id.
    pub id: &'a str,
    /// The arguments its input schema declares (`properties`).
    pub args: Vec<&'a str>,
}

impl Policy {
    /// Decides one call: the rules that apply to its tool, in file order.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Decision {
        self.decide(facts, false)
    }

    /// Decides like [`Self::evaluate`] and also reports every rule, applicable or not,
    /// in file order (`mcpd explain`).
    pub fn explain(&self, facts: &Facts<'_>) -> Decision {
        self.decide(facts, true)
    }

    /// Where rule `id` stands in the file (for listing rules in order).
    pub fn position(&self, id: &str) -> usize {
        self.rules
            .iter()
            .position(|r| r.id == id)
            .unwrap_or(usize::MAX)
    }

    /// Whether any rule that can reach `tool`'s calls looks at elevation grants: only
    /// then does a call need its caller's grants looked up.
    pub fn needs_elevation(&self, tool: &str, request: &Request<'_>) -> bool {
        self.applicable(tool, request).needs_elevation
    }

    /// Whether some enforced rule that can reach `tool`'s calls could deny one in a way a
    /// human's answer might lift ([`Decision::lift`]): a `deny` whose condition reads
    /// `elevation`, or a `require` of a ticket or an approval. When none can, no call of
    /// `tool` is put to a human for policy's sake.
    pub fn may_lift(&self, tool: &str, request: &Request<'_>) -> bool {
        self.applicable(tool, request).may_lift
    }

    /// Whether a call of `tool` must be rendered before it is decided: a rule's path is
    /// matched per call, or a condition reads `request.path`, `.query` or `.body`. The
    /// caller then passes the rendered request in [`Facts::request`] and sends exactly it.
    pub fn needs_request(&self, tool: &str, request: &Request<'_>) -> bool {
        self.applicable(tool, request).needs_request
    }

    /// The rules that can reach `tool`'s calls, computed once per tool.
    fn applicable(&self, tool: &str, request: &Request<'_>) -> Arc<Applicable> {
        if let Some(hit) = self
            .by_tool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tool)
            .filter(|a| a.built_for(request))
        {
            return hit.clone();
        }
        let rules: Box<[(usize, bool)]> = self
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.reach(tool, request) {
                Reach::Never => None,
                Reach::Always => Some((i, false)),
                Reach::PerCall => Some((i, true)),
            })
            .collect();
        let picked = || rules.iter().filter_map(|(i, _)| self.rules.get(*i));
        let list = Arc::new(Applicable {
            upstream: request.upstream.to_owned(),
            method: request.method.to_owned(),
            path_shape: request.path_shape.to_owned(),
            needs_request: rules.iter().any(|(_, per_call)| *per_call)
                || picked().any(|r| r.reads_sent),
            reads_request: picked().any(|r| r.reads_request),
            needs_elevation: picked().any(|r| r.uses_elevation),
            may_lift: picked().any(Rule::may_lift),
            rules: rules.clone(),
        });
        self.by_tool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tool.to_owned(), list.clone());
        list
    }

    fn decide(&self, facts: &Facts<'_>, explain: bool) -> Decision {
        self.decide_forcing(facts, explain, &|_| None)
    }

    /// Decides, taking the condition of every rule `force` names as given (`Some(held)`)
    /// instead of evaluating it: a replayed record's hidden facts (`replay.rs`).
    fn decide_forcing(
        &self,
        facts: &Facts<'_>,
        explain: bool,
        force: &dyn Fn(usize) -> Option<bool>,
    ) -> Decision {
        let mut d = Decision {
            allowed: false,
            denial: None,
            require_unmet: None,
            lift: None,
            route: None,
            detectors: DetectorSet::NONE,
            matched: Vec::new(),
            shadow: Vec::new(),
            default_used: false,
            outcomes: Vec::new(),
        };
        let applicable = self.applicable(facts.tool, &facts.request);
        let ctx = applicable
            .rules
            .iter()
            .filter_map(|(i, _)| self.rules.get(*i))
            .any(|r| r.when.is_some())
            .then(|| {
                let request = match (applicable.reads_request, facts.request.sent) {
                    (false, _) => minijinja::Value::UNDEFINED,
                    (true, Some(sent)) => to_value(&sent.facts),
                    (true, None) => minijinja::context! {
                        upstream => facts.request.upstream,
                        method => facts.request.method,
                    },
                };
                minijinja::context! {
                    tool => facts.tool,
                    request => request,
                    args => to_value(facts.args),
                    actor => to_value(facts.actor),
                    elevation => facts.elevation.map_or(minijinja::Value::UNDEFINED, to_value),
                    env => to_value(facts.env),
                }
            });
        let (mut allowed_by_rule, mut denied_by_rule) = (false, false);
        // What a human could give to lift every enforced denial, if anything can.
        let mut lift = Some(Lift::Confirm);
        if explain {
            // Every rule gets a line, in file order; applicable ones are filled in below.
            d.outcomes = self
                .rules
                .iter()
                .map(|r| r.outcome(false, false, false, None))
                .collect();
        }
        for &(i, per_call) in applicable.rules.iter() {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            // A forced rule (replay: it reads what the record hides) stands for its
            // selection and condition together.
            let forced = force(i);
            let unrendered = if per_call && forced.is_none() {
                match (facts.request.sent, &rule.matches) {
                    (Some(sent), Some((m, _))) if !m.path_matches(sent) => {
                        if let Some(o) = d.outcomes.get_mut(i) {
                            o.path_mismatch = true;
                        }
                        continue;
                    }
                    (None, _) => Some(
                        "the request was not rendered, so its path cannot be matched".to_owned(),
                    ),
                    _ => None,
                }
            } else {
                None
            };
            let (matched, error) = match (forced, unrendered, &rule.when, &ctx) {
                (Some(held), _, _, _) => (held, None),
                (None, Some(e), _, _) => (false, Some(e)),
                (None, None, Some(name), Some(ctx)) => self.condition(name, ctx),
                _ => (true, None),
            };
            let act = rule.act(matched, error.as_deref(), facts);
            let denies = act.deny.is_some();
            if let Some(o) = d.outcomes.get_mut(i) {
                *o = rule.outcome(true, matched, denies, error);
            }
            if !act.fires {
                continue;
            }
            if rule.mode == Mode::Shadow {
                d.shadow
                    .push(format!("{}:{}", rule.id, effect_name(rule.effect)));
                continue;
            }
            d.matched.push(rule.id.clone());
            if let Some(reason) = act.deny {
                denied_by_rule = true;
                lift = match (lift, act.lift) {
                    (Some(have), Some(want)) => Some(have.max(want)),
                    _ => None,
                };
                // The first enforced denial is the one reported; deny always wins.
                d.denial.get_or_insert_with(|| (rule.id.clone(), reason));
            }
            if let Some(missing) = act.unmet {
                d.require_unmet
                    .get_or_insert_with(|| (rule.id.clone(), missing));
            }
            match rule.effect {
                Effect::Allow => allowed_by_rule = true,
                Effect::Redact => d.detectors.extend(rule.detectors),
                Effect::Route if !denies => {
                    let conflict = route(&mut d, rule);
                    denied_by_rule |= conflict;
                    if conflict {
                        lift = None;
                    }
                }
                Effect::Deny | Effect::Require | Effect::Route => {}
            }
        }
        d.default_used = !denied_by_rule && !allowed_by_rule;
        d.allowed = !denied_by_rule && (allowed_by_rule || self.default == DefaultEffect::Allow);
        d.lift = lift.filter(|_| denied_by_rule);
        if !d.allowed && d.denial.is_none() {
            d.denial = Some((
                "default".to_owned(),
                "no rule allows this call and policies.yaml says 'default: deny'".to_owned(),
            ));
        }
        d
    }

    /// Whether the condition held, or why it could not be evaluated.
    fn condition(&self, name: &str, ctx: &minijinja::Value) -> (bool, Option<String>) {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(out) => (out == "1", None),
            Err(e) => (false, Some(describe(&e))),
        }
    }
}

/// Applies a route rule; true when it conflicts with an earlier route (a denial).
fn route(d: &mut Decision, rule: &Rule) -> bool {
    match (&d.route, &rule.region) {
        (Some(have), Some(want)) if have != want => {
            let reason = format!(
                "rules route this call to both '{have}' and '{want}'; refusing rather than guessing"
            );
            d.denial.get_or_insert_with(|| (rule.id.clone(), reason));
            true
        }
        (_, region) => {
            d.route.clone_from(region);
            false
        }
    }
}

/// What one rule does to a call, given how its condition came out.
struct Act {
    /// Whether the rule takes effect (for shadow rules: would take effect).
    fires: bool,
    /// The denial reason, when it denies.
    deny: Option<String>,
    /// What a `require` rule found missing.
    unmet: Option<String>,
    /// What a human could give to lift its denial.
    lift: Option<Lift>,
}

impl Rule {
    /// Whether a denial by this rule could have a [`Lift`] (see `act`): only such a
    /// denial is ever put to a human.
    fn may_lift(&self) -> bool {
        self.mode == Mode::Enforce
            && match self.effect {
                Effect::Deny => self.uses_elevation,
                Effect::Require => (self.require.as_ref()).is_some_and(|r| r.ticket || r.approval),
                Effect::Allow | Effect::Redact | Effect::Route => false,
            }
    }

    /// Whether its `tools` cover `tool` (ids and globs only, not `match`).
    fn covers(&self, tool: &str) -> bool {
        self.tools.is_empty() || self.tools.iter().any(|(g, _)| glob(g, tool))
    }

    /// Whether it can select calls of `tool`, which do `request`.
    fn reach(&self, tool: &str, request: &Request<'_>) -> Reach {
        if !self.covers(tool) {
            return Reach::Never;
        }
        self.matches
            .as_ref()
            .map_or(Reach::Always, |(m, _)| m.reach(request))
    }

    fn act(&self, matched: bool, error: Option<&str>, facts: &Facts<'_>) -> Act {
        // A failed condition fires every rule that protects; it never fires an allow.
        let fires = matched || (error.is_some() && self.effect != Effect::Allow);
        let mut act = Act {
            fires,
            deny: None,
            unmet: None,
            lift: None,
        };
        if !fires {
            return act;
        }
        if let Some(e) = error.filter(|_| self.effect != Effect::Redact) {
            let why = format!(
                "rule '{}' could not be evaluated ({e}); refusing to be safe",
                self.id
            );
            act.deny = Some(if self.reason.is_empty() {
                why
            } else {
                format!("{} ({why})", self.reason)
            });
            return act;
        }
        match self.effect {
            Effect::Deny => {
                act.deny = Some(self.reason.clone());
                act.lift = self.uses_elevation.then_some(Lift::Ticket);
            }
            Effect::Require => {
                let missing = self.require.as_ref().map(|r| unmet(r, facts));
                act.lift = missing.as_ref().and_then(|m| m.lift);
                act.unmet = missing.and_then(|m| m.text);
                act.deny = act
                    .unmet
                    .as_ref()
                    .map(|missing| format!("{} (missing: {missing})", self.reason));
                // A met requirement does nothing: nothing to enforce or to record.
                act.fires = act.deny.is_some();
            }
            Effect::Allow | Effect::Redact | Effect::Route => {}
        }
        act
    }

    fn outcome(
        &self,
        applies: bool,
        matched: bool,
        would_deny: bool,
        error: Option<String>,
    ) -> RuleOutcome {
        RuleOutcome {
            id: self.id.clone(),
            mode: self.mode,
            effect: self.effect,
            applies,
            path_mismatch: false,
            matched,
            would_deny,
            error,
        }
    }
}

/// The effect's name as policies.yaml spells it.
pub fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
        Effect::Redact => "redact",
        Effect::Route => "route",
        Effect::Require => "require",
    }
}

/// A minijinja error as one line: its detail, without the internal template name.
fn describe(e: &minijinja::Error) -> String {
    e.detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned)
}

/// The policy `yaml` compiles to, as if read from `policies.yaml` (tests only).
#[cfg(test)]
pub(crate) fn compiled(yaml: &str) -> Policy {
    let spec: crate::config::PolicySpec = serde_saphyr::from_str(yaml).unwrap();
    Policy::compile(
        std::path::Path::new("policies.yaml"),
        &spec,
        &mut crate::config::diag::Diagnostics::default(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests;
