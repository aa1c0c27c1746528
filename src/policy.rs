//! Policy: the rules of `policies.yaml`, compiled once per reload, evaluated per call.
//!
//! Owns rule matching (tool globs, conditions), the combination of effects (deny wins
//! over allow, shadow rules only recorded) and fail-closed handling of conditions that
//! cannot be evaluated. Conditions are minijinja expressions compiled into one
//! environment; evaluating one renders a precompiled template, no parsing per call.
//! It never sends requests and never sees secrets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::config::PolicySpec;
use crate::config::policy::{DefaultEffect, Detector, Effect, Mode, RedactionSpec, RequireSpec};
use crate::diag::{Diagnostic, Diagnostics};
use crate::template::to_value;

/// Roots a condition may read.
const ROOTS: &[&str] = &[
    "tool",
    "args",
    "actor",
    "elevation",
    "env",
    "days_between",
    "true",
    "false",
    "none",
    "range",
    "dict",
];

/// Fuel per condition: bounds a runaway expression.
const FUEL: u64 = 20_000;

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    id: String,
    tools: Vec<String>,
    when: Option<String>,
    effect: Effect,
    mode: Mode,
    reason: String,
    detectors: Vec<Detector>,
    region: Option<String>,
    require: Option<RequireSpec>,
}

/// The compiled policy.
pub struct Policy {
    default: DefaultEffect,
    rules: Vec<Rule>,
    by_tool: RwLock<HashMap<String, Arc<[usize]>>>,
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

/// What the rules see of a call.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The tool id.
    pub tool: &'a str,
    /// The validated arguments.
    pub args: &'a Value,
    /// The actor: subject, scopes, purpose, region.
    pub actor: &'a Value,
    /// The elevation grant, if the actor holds one for this call.
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
    /// Whether its `tools` cover the call's tool.
    pub applies: bool,
    /// Whether its condition held (false when it does not apply).
    pub matched: bool,
    /// Why its condition could not be evaluated, if it could not.
    pub error: Option<String>,
}

/// The outcome of evaluating every rule for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may go on.
    pub allowed: bool,
    /// The denying rule and its reason, when denied.
    pub denial: Option<(String, String)>,
    /// The region the call must be served from.
    pub route: Option<String>,
    /// Detectors to run on the result.
    pub detectors: Vec<Detector>,
    /// Ids of the enforced rules that matched.
    pub matched: Vec<String>,
    /// Shadow rules that matched, as `id:effect` (what they would have done).
    pub shadow: Vec<String>,
    /// Every rule, matched or not, for `mcpd explain`.
    pub outcomes: Vec<RuleOutcome>,
}

impl Policy {
    /// Compiles the rules of `policies.yaml`.
    ///
    /// # Errors
    /// Every problem, with the position of the rule or condition.
    pub fn compile(path: &Path, spec: &PolicySpec) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(FUEL));
        env.add_function("days_between", days_between);
        let mut rules = Vec::new();
        let mut seen: Vec<(String, crate::diag::Pos)> = Vec::new();
        for r in &spec.rules {
            let id = r.id.value.clone();
            let err = |diags: &mut Diagnostics, pos, msg: String| {
                diags.push(Diagnostic::new(path, pos, format!("rule '{id}': {msg}")))
            };
            if let Some((_, pos)) = seen.iter().find(|(s, _)| *s == id) {
                err(
                    &mut diags,
                    r.id.pos,
                    format!("id is already used by the rule at line {}", pos.line),
                );
            }
            seen.push((id.clone(), r.id.pos));
            let needs_reason = matches!(r.effect, Effect::Deny | Effect::Require);
            if needs_reason && r.reason.as_deref().is_none_or(|s| s.trim().is_empty()) {
                err(
                    &mut diags,
                    r.id.pos,
                    "a deny or require rule needs a 'reason' the model can act on".to_owned(),
                );
            }
            if r.effect == Effect::Route && r.region.is_none() {
                err(
                    &mut diags,
                    r.id.pos,
                    "a route rule needs a 'region'".to_owned(),
                );
            }
            if r.effect == Effect::Redact && r.detectors.is_empty() {
                err(
                    &mut diags,
                    r.id.pos,
                    "a redact rule needs 'detectors' (email, pan, secret)".to_owned(),
                );
            }
            if r.effect == Effect::Require && r.require.is_none() {
                err(
                    &mut diags,
                    r.id.pos,
                    "a require rule needs 'require' (ticket, purpose or scope)".to_owned(),
                );
            }
            let when = r.when.as_ref().and_then(|w| {
                let name = format!("rule:{id}");
                let source = format!("{{% if {} %}}1{{% endif %}}", w.value);
                if let Err(e) = env.add_template_owned(name.clone(), source) {
                    err(&mut diags, w.pos, format!("invalid condition '{}': {}", w.value, e.detail().unwrap_or("syntax error")));
                    return None;
                }
                let vars = env.get_template(&name).map(|t| t.undeclared_variables(false)).unwrap_or_default();
                let unknown: Vec<String> = vars.into_iter().filter(|v| !ROOTS.contains(&v.as_str())).collect();
                if !unknown.is_empty() {
                    err(
                        &mut diags,
                        w.pos,
                        format!("condition reads unknown variable(s) {} (conditions can read tool, args, actor, elevation, env)", unknown.join(", ")),
                    );
                    return None;
                }
                Some(name)
            });
            rules.push(Rule {
                id: id.clone(),
                tools: r.tools.clone(),
                when,
                effect: r.effect,
                mode: r.mode,
                reason: r.reason.clone().unwrap_or_default(),
                detectors: r.detectors.clone(),
                region: r.region.clone(),
                require: r.require.clone(),
            });
        }
        if diags.is_empty() {
            Ok(Self {
                default: spec.default,
                rules,
                by_tool: RwLock::default(),
                env,
                redaction: spec.redaction.clone(),
            })
        } else {
            Err(diags)
        }
    }

    /// Evaluates the rules that apply to the call's tool.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Decision {
        self.decide(facts, false)
    }

    /// Evaluates like [`Self::evaluate`] and also reports every rule, applicable or not.
    pub fn explain(&self, facts: &Facts<'_>) -> Decision {
        self.decide(facts, true)
    }

    /// The indexes of the rules whose `tools` cover `tool`, computed once per tool.
    fn applicable(&self, tool: &str) -> Arc<[usize]> {
        if let Some(hit) = self
            .by_tool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tool)
        {
            return hit.clone();
        }
        let list: Arc<[usize]> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tools.is_empty() || r.tools.iter().any(|g| glob(g, tool)))
            .map(|(i, _)| i)
            .collect();
        self.by_tool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tool.to_owned(), list.clone());
        list
    }

    /// Where rule `id` stands in the file (for listing rules in order).
    pub fn position(&self, id: &str) -> usize {
        self.rules
            .iter()
            .position(|r| r.id == id)
            .unwrap_or(usize::MAX)
    }

    fn decide(&self, facts: &Facts<'_>, explain: bool) -> Decision {
        let ctx = minijinja::context! {
            tool => facts.tool,
            args => to_value(facts.args),
            actor => to_value(facts.actor),
            elevation => facts.elevation.map(to_value).unwrap_or(minijinja::Value::UNDEFINED),
            env => to_value(facts.env),
        };
        let mut d = Decision {
            allowed: false,
            denial: None,
            route: None,
            detectors: Vec::new(),
            matched: Vec::new(),
            shadow: Vec::new(),
            outcomes: Vec::new(),
        };
        let mut allowed_by_rule = false;
        let applicable = self.applicable(facts.tool);
        if explain {
            for (_, rule) in self
                .rules
                .iter()
                .enumerate()
                .filter(|(i, _)| !applicable.contains(i))
            {
                d.outcomes.push(RuleOutcome {
                    id: rule.id.clone(),
                    mode: rule.mode,
                    effect: rule.effect,
                    applies: false,
                    matched: false,
                    error: None,
                });
            }
        }
        for rule in applicable.iter().filter_map(|i| self.rules.get(*i)) {
            let (matched, error) = self.condition(rule, &ctx);
            if explain {
                d.outcomes.push(RuleOutcome {
                    id: rule.id.clone(),
                    mode: rule.mode,
                    effect: rule.effect,
                    applies: true,
                    matched,
                    error: error.clone(),
                });
            }
            // A condition that cannot be evaluated fails closed for effects that protect.
            let fail_closed = error.is_some()
                && matches!(rule.effect, Effect::Deny | Effect::Require | Effect::Route);
            if !(matched || fail_closed) {
                continue;
            }
            if rule.mode == Mode::Shadow {
                d.shadow
                    .push(format!("{}:{}", rule.id, effect_name(rule.effect)));
                continue;
            }
            d.matched.push(rule.id.clone());
            if let Some(e) = error {
                deny(
                    &mut d,
                    &rule.id,
                    format!(
                        "rule '{}' could not be evaluated ({e}); refusing to be safe",
                        rule.id
                    ),
                );
                continue;
            }
            match rule.effect {
                Effect::Allow => allowed_by_rule = true,
                Effect::Deny => deny(&mut d, &rule.id, rule.reason.clone()),
                Effect::Redact => d.detectors.extend(rule.detectors.iter().copied()),
                Effect::Route => match (d.route.clone(), &rule.region) {
                    (Some(have), Some(want)) if have != *want => deny(
                        &mut d,
                        &rule.id,
                        format!(
                            "rules route this call to both '{have}' and '{want}'; refusing rather than guessing"
                        ),
                    ),
                    (_, region) => d.route.clone_from(region),
                },
                Effect::Require => {
                    if let Some(missing) = rule.require.as_ref().and_then(|r| unmet(r, facts)) {
                        deny(
                            &mut d,
                            &rule.id,
                            format!("{} (missing: {missing})", rule.reason),
                        );
                    }
                }
            }
        }
        d.detectors.sort();
        d.detectors.dedup();
        d.allowed = d.denial.is_none() && (self.default == DefaultEffect::Allow || allowed_by_rule);
        if !d.allowed && d.denial.is_none() {
            d.denial = Some((
                "default".to_owned(),
                "no rule allows this call and policies.yaml says 'default: deny'".to_owned(),
            ));
        }
        d
    }

    fn condition(&self, rule: &Rule, ctx: &minijinja::Value) -> (bool, Option<String>) {
        let Some(name) = &rule.when else {
            return (true, None);
        };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(out) => (out == "1", None),
            Err(e) => (
                false,
                Some(
                    e.detail()
                        .map_or_else(|| e.kind().to_string(), str::to_owned),
                ),
            ),
        }
    }
}

fn deny(d: &mut Decision, id: &str, reason: String) {
    // The first enforced denial is the one reported; deny always wins.
    if d.denial.is_none() {
        d.denial = Some((id.to_owned(), reason));
    }
}

/// What a `require` rule finds missing, if anything.
fn unmet(r: &RequireSpec, facts: &Facts<'_>) -> Option<String> {
    let mut missing = Vec::new();
    if r.ticket {
        let ticket = facts
            .elevation
            .and_then(|e| e.get("ticket"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if ticket.trim().is_empty() {
            missing.push("an elevation with a ticket".to_owned());
        }
    }
    if !r.purpose.is_empty() {
        let purpose = facts
            .actor
            .get("purpose")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !r.purpose.iter().any(|p| p == purpose) {
            missing.push(format!("purpose {}", r.purpose.join(" or ")));
        }
    }
    if let Some(scope) = &r.scope {
        let has = facts
            .actor
            .get("scopes")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(scope)));
        if !has {
            missing.push(format!("scope '{scope}'"));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
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

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len()).any(|i| tail.get(i..).is_some_and(|t| glob(rest, t)))
        }
    }
}

/// Days from `a` to `b` (`YYYY-MM-DD`), for conditions like `days_between(args.from, args.to) > 31`.
fn days_between(a: String, b: String) -> Result<i64, minijinja::Error> {
    let day = |s: &str| {
        civil_day(s).ok_or_else(|| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("'{s}' is not a date (YYYY-MM-DD)"),
            )
        })
    };
    Ok(day(&b)? - day(&a)?)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
fn civil_day(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
