//! Replaying a recorded call through a policy (`mcpd backtest`), and the rules as
//! `mcpd test --coverage` lists them.
//!
//! Owns what each rule reads of a call ([`Sees`]: which arguments, actor fields,
//! elevation, env; the rendered request, through its condition or a path matched per
//! call) and what follows when a record hides some of it: an argument the detectors
//! redacted before it was logged (or one the request was rendered from), or an
//! elevation grant that was never looked up. A rule that reads a hidden fact is never evaluated on a guess: the call is
//! decided twice, once with every such rule firing as strictly as it can (protective
//! rules fire, allow rules do not) and once as loosely (the reverse), and the decision
//! is known only when both agree (deny wins and allow only opens, so these are the two
//! extremes). It reads records through [`Recorded`] and never opens a log.

use super::{Decision, Facts, Policy, Request, RuleOutcome};
use crate::config::diag::Pos;
use crate::config::policy::{Effect, Mode, RequireSpec};

/// What a rule reads of a call: from its condition's variables and its `require`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Sees {
    /// Arguments read by name (`args.env`, `args.a.b` reads `a`).
    args: Vec<String>,
    /// The whole `args` (`args['x']`, `args.items()`, `'x' in args`).
    all_args: bool,
    /// Actor fields read by name.
    actor: Vec<String>,
    /// The whole `actor`.
    all_actor: bool,
    /// Anything of `elevation` (or `require.ticket`).
    elevation: bool,
    /// Anything of `env`.
    env: bool,
}

/// Methods of a map, read like fields (`args.get('x')`): they reach every key.
const MAP_METHODS: &[&str] = &["get", "items", "keys", "values"];

impl Sees {
    /// What a condition reads, from its undeclared variables (`args.env`, `actor`).
    pub(super) fn of<'a>(vars: impl IntoIterator<Item = &'a String>) -> Self {
        let mut s = Self::default();
        for v in vars {
            let mut parts = v.split('.');
            let root = parts.next().unwrap_or_default();
            let field = parts.next();
            let whole = field.is_none_or(|f| MAP_METHODS.contains(&f));
            match root {
                "args" if whole => s.all_args = true,
                "args" => s.args.extend(field.map(str::to_owned)),
                "actor" if whole => s.all_actor = true,
                "actor" => s.actor.extend(field.map(str::to_owned)),
                "elevation" => s.elevation = true,
                "env" => s.env = true,
                _ => {}
            }
        }
        s.args.sort_unstable();
        s.args.dedup();
        s.actor.sort_unstable();
        s.actor.dedup();
        s
    }

    /// Adds what a `require` checks: the ticket, the purpose, a scope.
    pub(super) fn with_require(mut self, require: Option<&RequireSpec>) -> Self {
        if let Some(r) = require {
            self.elevation |= r.ticket;
            if !r.purpose.is_empty() {
                self.actor.push("purpose".to_owned());
            }
            if r.scope.is_some() {
                self.actor.push("scopes".to_owned());
            }
        }
        self
    }

    /// What of this a record hides, if anything: a redacted value it reads first, else a
    /// fact the record does not hold.
    fn hidden(&self, rec: &Recorded<'_>) -> Option<Hidden> {
        let under = |prefix: &str, names: &[String], all: bool| {
            rec.redacted.iter().any(|p| {
                // The whole object named (a key in it was rewritten): all it held is hidden.
                ((all || !names.is_empty()) && Some(p.as_str()) == prefix.strip_suffix('/'))
                    || p.strip_prefix(prefix).is_some_and(|rest| {
                        all || names.iter().any(|n| {
                            let n = pointer_step(n);
                            rest == n
                                || rest
                                    .strip_prefix(n.as_str())
                                    .is_some_and(|r| r.starts_with('/'))
                        })
                    })
            })
        };
        let redacted = under("/args/", &self.args, self.all_args)
            || under(ACTOR, &self.actor, self.all_actor)
            || (self.elevation && under(ELEVATION, &[], true))
            || (self.env && under(ENV, &[], true));
        if redacted {
            Some(Hidden::Redacted)
        } else if self.elevation && !rec.elevation_known {
            Some(Hidden::NotRecorded)
        } else {
            None
        }
    }
}

/// Whether values rendered from `vars` (a tool's request templates: `args.env`,
/// `secret.KEY`) are hidden in a record: an argument they read was redacted, or they
/// read a secret (a replay renders with placeholders, never a real secret).
pub fn template_hidden<'a>(
    vars: impl IntoIterator<Item = &'a String> + Clone,
    redacted: &[String],
) -> Option<Hidden> {
    let reads = Sees::of(vars.clone());
    let rec = Recorded {
        facts: Facts {
            tool: "",
            request: Request::UNKNOWN,
            args: &serde_json::Value::Null,
            actor: &serde_json::Value::Null,
            elevation: None,
            env: &serde_json::Value::Null,
        },
        redacted,
        elevation_known: true,
        request_hidden: None,
    };
    let args_only = Sees {
        args: reads.args,
        all_args: reads.all_args,
        ..Sees::default()
    };
    match args_only.hidden(&rec) {
        Some(h) => Some(h),
        None if vars.into_iter().any(|v| v.starts_with("secret")) => Some(Hidden::NotRecorded),
        None => None,
    }
}

/// Where a call record keeps the actor's fields, its elevation and `env`, as JSON
/// pointers into the record (redacted values are named by such pointers).
const ACTOR: &str = "/policy/actor/";
const ELEVATION: &str = "/policy/elevation/";
const ENV: &str = "/policy/env/";

/// A key as one step of a JSON pointer (RFC 6901: `~` is `~0`, `/` is `~1`).
pub fn pointer_step(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Why a rule cannot be judged on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hidden {
    /// It reads a value that was redacted before it was recorded.
    Redacted,
    /// It reads something the record does not hold (elevation, when the caller's grants
    /// were not looked up for the call).
    NotRecorded,
}

/// A recorded call as a policy replays it.
#[derive(Debug, Clone)]
pub struct Recorded<'a> {
    /// What the rules see, as recorded (`elevation` is `None` when none applied or the
    /// record does not say: see `elevation_known`).
    pub facts: Facts<'a>,
    /// JSON pointers into the record of values the detectors changed before it was
    /// written: `/args/email`, `/policy/actor/purpose`.
    pub redacted: &'a [String],
    /// Whether the record says which elevation grant applied (none included): the
    /// caller's grants were looked up for the call.
    pub elevation_known: bool,
    /// Why the rendered request in `facts.request.sent` cannot be trusted, if it cannot:
    /// it was rendered from a redacted argument, or could not be rendered again.
    pub request_hidden: Option<Hidden>,
}

/// A recorded call, decided by a policy.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// `Some(allowed)` when the decision holds whatever the hidden values were, `None`
    /// when it depends on them.
    pub allowed: Option<bool>,
    /// The rule (or `default`) that denies, when the call is denied whatever was hidden.
    pub denial: Option<(String, String)>,
    /// Every rule in file order, as it came out with hidden rules not firing.
    pub outcomes: Vec<RuleOutcome>,
    /// Per rule (file order): why it cannot be judged on this record, if it applies and
    /// reads something hidden.
    pub hidden: Vec<Option<Hidden>>,
}

/// A rule as coverage lists it.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    /// The rule id.
    pub id: String,
    /// Enforced or shadow.
    pub mode: Mode,
    /// Its effect.
    pub effect: Effect,
    /// It has a condition (`when`).
    pub conditional: bool,
    /// It covers every tool (no `tools`).
    pub every_tool: bool,
    /// Where it is in policies.yaml (its condition, else its id).
    pub pos: Pos,
}

impl Policy {
    /// Decides a recorded call. A rule that applies and reads a hidden fact is not
    /// evaluated: the decision is reported only when it is the same whether such rules
    /// fire or not.
    pub fn replay(&self, rec: &Recorded<'_>) -> Replayed {
        let applicable = self.applicable(rec.facts.tool, &rec.facts.request);
        let mut hidden: Vec<Option<Hidden>> = vec![None; self.rules.len()];
        for &(i, per_call) in applicable.rules.iter() {
            let (Some(rule), Some(slot)) = (self.rules.get(i), hidden.get_mut(i)) else {
                continue;
            };
            let reads_request = per_call || rule.reads_sent;
            *slot = match (rule.sees.hidden(rec), rec.request_hidden) {
                (Some(h), _) => Some(h),
                (None, Some(h)) if reads_request => Some(h),
                _ => None,
            };
        }
        let effect = |i: usize| self.rules.get(i).map(|r| r.effect);
        let strict: &dyn Fn(usize) -> Option<bool> = &|i| {
            hidden
                .get(i)
                .copied()
                .flatten()
                .map(|_| effect(i) != Some(Effect::Allow))
        };
        let loose: &dyn Fn(usize) -> Option<bool> = &|i| {
            hidden
                .get(i)
                .copied()
                .flatten()
                .map(|_| effect(i) == Some(Effect::Allow))
        };
        let loosest: Decision = self.decide_forcing(&rec.facts, true, loose);
        let any_hidden = hidden.iter().any(Option::is_some);
        let allowed = if any_hidden {
            let strictest = self.decide_forcing(&rec.facts, false, strict);
            (strictest.allowed == loosest.allowed).then_some(loosest.allowed)
        } else {
            Some(loosest.allowed)
        };
        Replayed {
            allowed,
            denial: (allowed == Some(false))
                .then(|| loosest.denial.clone())
                .flatten(),
            outcomes: loosest.outcomes,
            hidden,
        }
    }

    /// Whether rule `id` can select calls of `tool`, which do `request` (its `tools`
    /// and `match`; a path matched per call counts as can); `None` when there is no
    /// such rule.
    pub fn rule_covers(&self, id: &str, tool: &str, request: &Request<'_>) -> Option<bool> {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.reach(tool, request) != super::request::Reach::Never)
    }

    /// Every rule, in file order.
    pub fn rules_info(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| RuleInfo {
                id: r.id.clone(),
                mode: r.mode,
                effect: r.effect,
                conditional: r.when.is_some(),
                every_tool: r.tools.is_empty(),
                pos: r.when_pos,
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
