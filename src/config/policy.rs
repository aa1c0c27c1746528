//! `policies.yaml`: what every call must pass before it reaches an upstream.
//!
//! The file model only (strict, documented, with positions) and the checks a rule can
//! get without compiling anything; it must not compile or evaluate conditions: rules
//! are compiled and evaluated in `crate::policy`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::Located;
use super::tool::Method;
use crate::config::diag::Pos;

/// The policy file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// What happens to a call no rule decides: `allow` or `deny`.
    pub default: DefaultEffect,
    /// Where requests may go: host names, addresses (`127.0.0.1`, `[::1]`), either with
    /// `:port`, and CIDRs (`10.0.0.0/8`). Every other host is refused, checked on the
    /// final URL after templates are rendered; and a connection to a loopback, private,
    /// link-local or cloud metadata address is refused unless an address or CIDR entry
    /// lists it (checked on every connection, after DNS). Empty means no egress.
    #[serde(default)]
    pub egress: Vec<Located<String>>,
    /// How redaction detectors replace what they find.
    #[serde(default)]
    pub redaction: RedactionSpec,
    /// Rules, evaluated for every call. Deny wins over allow; shadow rules are only
    /// recorded.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Spending limits: calls and cost units per actor, tool or in total, per day or hour.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// Stop rules against runaway agent loops.
    #[serde(default)]
    pub stop: StopSpec,
}

/// A budget: how many calls, or cost units, may be spent in a window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// A unique id, named when the budget denies a call and in `mcpd budget`.
    pub id: Located<String>,
    /// Tool ids or globs the budget counts; empty means every tool.
    #[serde(default)]
    pub tools: Vec<Located<String>>,
    /// Whose spending is counted together: `actor` (each actor has its own budget, the
    /// default), `tool` (each tool, all actors together), `actor_tool`, or `global`.
    #[serde(default)]
    pub per: BudgetScope,
    /// The window, aligned to UTC: `day` (default) or `hour`.
    #[serde(default)]
    pub window: BudgetWindow,
    /// Calls allowed in the window.
    #[serde(default)]
    pub calls: Option<u64>,
    /// Cost units allowed in the window (tools declare their `cost`).
    #[serde(default)]
    pub cost: Option<f64>,
}

/// Whose spending a budget counts together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Each actor separately.
    #[default]
    Actor,
    /// Each tool separately, all actors together.
    Tool,
    /// Each actor on each tool.
    ActorTool,
    /// Everything together.
    Global,
}

/// A budget's window, aligned to UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetWindow {
    /// A UTC hour.
    Hour,
    /// A UTC day.
    #[default]
    Day,
}

/// Stop rules: refuse, and raise an alert, when an agent looks stuck in a loop.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// Most calls one actor may make across all tools in a window, e.g. `300/min`.
    #[serde(default)]
    pub max_calls: Option<Located<String>>,
    /// Most times one actor may call the same tool with the same arguments in a window,
    /// e.g. `5/min` (a retry storm).
    #[serde(default)]
    pub repeats: Option<Located<String>>,
}

/// The decision for calls no rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultEffect {
    /// Calls are allowed unless a rule denies them.
    Allow,
    /// Calls are denied unless a rule allows them.
    Deny,
}

impl Default for PolicySpec {
    /// The secure default: nothing is allowed and nothing may leave.
    fn default() -> Self {
        Self {
            default: DefaultEffect::Deny,
            egress: Vec::new(),
            redaction: RedactionSpec::default(),
            rules: Vec::new(),
            budgets: Vec::new(),
            stop: StopSpec::default(),
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A unique id, named in denials, traces and the audit log.
    pub id: Located<String>,
    /// Tool ids or globs (`orders.*`, `*.set`) the rule applies to; empty means every
    /// tool.
    #[serde(default)]
    pub tools: Vec<Located<String>>,
    /// What a call does, whatever its tool is called: the upstream its request goes
    /// to, its method and its path. With `tools` as well, a call must be selected by
    /// both. `match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE], path:
    /// "/flags/prod/*" }` covers every write to a prod flag, from any tool.
    #[serde(default, rename = "match")]
    pub matches: Option<MatchSpec>,
    /// A condition (minijinja expression) over `tool`, `args`, `request` (what is sent:
    /// upstream, method, path, query, body), `actor` (subject, scopes, purpose,
    /// region), `elevation` (ticket, granted_by, expires; undefined without a grant) and
    /// `env` (name), plus `days_between(from, to)` for `YYYY-MM-DD` dates.
    /// A missing field reads as undefined, which is false and orders below every value:
    /// `args.percent > 10` is false when `percent` is absent. A string orders above every
    /// number (`"50" > 10` and `"5" > 10` are true): compare like with like. No
    /// condition means the rule always matches its tools.
    #[serde(default)]
    pub when: Option<Located<String>>,
    /// What the rule does when it matches.
    pub effect: Effect,
    /// `enforce` (default) or `shadow`: evaluated and recorded, never enforced.
    #[serde(default)]
    pub mode: Mode,
    /// Why: shown to the model on a denial. Required for `deny` and `require`.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `redact`: the detectors to apply to results (`email`, `pan`, `secret`).
    #[serde(default)]
    pub detectors: Vec<Detector>,
    /// For `route`: the data region calls must be served from (an upstream region).
    #[serde(default)]
    pub region: Option<String>,
    /// For `require`: what the call must carry.
    #[serde(default)]
    pub require: Option<RequireSpec>,
}

impl RuleSpec {
    /// What is wrong with the rule's fields for its effect (a deny without a reason, a
    /// region on a rule that does not route, ...) and with its tool patterns, each at its
    /// position. Fields that an effect ignores are errors: a `detectors` list on a deny
    /// rule reads as protection it does not give. Conditions are checked when compiled.
    pub fn problems(&self) -> Vec<(Pos, String)> {
        let mut out = Vec::new();
        let mut at_id = |msg: &str| out.push((self.id.pos, msg.to_owned()));
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        let needs_reason = matches!(self.effect, Effect::Deny | Effect::Require);
        if needs_reason && blank(&self.reason) {
            at_id("a deny or require rule needs a 'reason' the model can act on");
        }
        match (self.effect, blank(&self.region)) {
            (Effect::Route, true) => at_id("a route rule needs a 'region'"),
            (Effect::Route, false) | (_, true) => {}
            (_, false) => at_id("'region' only applies to route rules"),
        }
        match (self.effect, self.detectors.is_empty()) {
            (Effect::Redact, true) => at_id("a redact rule needs 'detectors' (email, pan, secret)"),
            (Effect::Redact, false) | (_, true) => {}
            (_, false) => at_id("'detectors' only applies to redact rules"),
        }
        match (self.effect, &self.require) {
            (Effect::Require, None) => {
                at_id("a require rule needs 'require' (ticket, purpose, scope or approval)");
            }
            (Effect::Require, Some(r))
                if !r.ticket && !r.approval && r.purpose.is_empty() && blank(&r.scope) =>
            {
                at_id("'require' asks for nothing: set ticket, purpose, scope or approval");
            }
            (Effect::Require, Some(_)) | (_, None) => {}
            (_, Some(_)) => at_id("'require' only applies to require rules"),
        }
        if let Some(m) = &self.matches {
            out.extend(m.problems(self.id.pos));
        }
        for t in &self.tools {
            let ok = !t.value.is_empty()
                && t.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'));
            if !ok {
                out.push((
                    t.pos,
                    format!(
                        "tools: '{}' is not a tool id or glob (letters, digits, '_', '.', '-', '*')",
                        t.value
                    ),
                ));
            }
        }
        out
    }
}

/// What a call does, as a rule selects it. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// The upstream (a name from `mcpd.yaml`) the request goes to.
    #[serde(default)]
    pub upstream: Option<Located<String>>,
    /// The request's HTTP method, one of these (`GET`, `POST`, `PUT`, `PATCH`,
    /// `DELETE`); empty means any.
    #[serde(default)]
    pub methods: Vec<Located<Method>>,
    /// A pattern for the request's path below the upstream's URL, as it is sent
    /// (`.`/`..` resolved, `%XX` escapes decoded): `*` matches any run of characters,
    /// `/` included, so `/flags/prod/*` matches `/flags/prod/checkout_v2`.
    #[serde(default)]
    pub path: Option<Located<String>>,
}

impl MatchSpec {
    /// What is wrong with it: it selects nothing in particular, or its path is no path.
    fn problems(&self, at: Pos) -> Vec<(Pos, String)> {
        let mut out = Vec::new();
        if self.upstream.is_none() && self.methods.is_empty() && self.path.is_none() {
            out.push((
                at,
                "'match' selects nothing: give upstream, methods or path (or drop it)".to_owned(),
            ));
        }
        if let Some(u) = self.upstream.as_ref().filter(|u| u.value.trim().is_empty()) {
            out.push((
                u.pos,
                "match.upstream is empty: name an upstream from mcpd.yaml".to_owned(),
            ));
        }
        if let Some(p) = self.path.as_ref().filter(|p| !p.value.starts_with('/')) {
            out.push((
                p.pos,
                format!(
                    "match.path '{}' must start with '/' (a path below the upstream's URL)",
                    p.value
                ),
            ));
        }
        out
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Let the call through (overrides `default: deny`).
    Allow,
    /// Refuse the call with the rule's reason.
    Deny,
    /// Redact results with the rule's detectors.
    Redact,
    /// Serve the call from the rule's region.
    Route,
    /// Refuse the call unless it carries what `require` names.
    Require,
}

/// Enforced or only measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rule decides.
    #[default]
    Enforce,
    /// The rule is evaluated and recorded with what it would have done.
    Shadow,
}

/// A kind of sensitive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// Email addresses.
    Email,
    /// Payment card numbers (13 to 19 digits passing the Luhn check).
    Pan,
    /// Bearer tokens, JWTs, API keys, private keys.
    Secret,
}

impl Detector {
    /// The detector's name as `policies.yaml` spells it: `email`, `pan`, `secret`.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Pan => "pan",
            Detector::Secret => "secret",
        }
    }
}

/// What a `require` rule asks of a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireSpec {
    /// An elevation grant with a non-empty ticket.
    #[serde(default)]
    pub ticket: bool,
    /// One of these purposes on the actor (empty: any purpose).
    #[serde(default)]
    pub purpose: Vec<String>,
    /// This scope on the actor.
    #[serde(default)]
    pub scope: Option<String>,
    /// A human's approval of this exact call, given when it is made: mcpd asks through
    /// the client (MCP elicitation) for an explicit yes or a change ticket. One answer
    /// approves one call. A client that cannot ask (and `mcpd call`) is denied.
    #[serde(default)]
    pub approval: bool,
}

/// How detectors replace what they find.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionSpec {
    /// `partial` keeps the first letter and the domain (`j***@example.com`); `full`
    /// replaces the whole address.
    #[serde(default)]
    pub email: EmailStyle,
    /// `last4` keeps the last four digits (`************1111`); `full` hides all.
    #[serde(default)]
    pub pan: PanStyle,
    /// What a secret (bearer token, JWT, API key, private key) is replaced with.
    #[serde(default = "default_secret_replacement")]
    pub secret: String,
}

impl Default for RedactionSpec {
    /// Redaction keeps only what a model needs to tell values apart.
    fn default() -> Self {
        Self {
            email: EmailStyle::Partial,
            pan: PanStyle::Last4,
            secret: default_secret_replacement(),
        }
    }
}

fn default_secret_replacement() -> String {
    "[REDACTED]".to_owned()
}

/// Email replacement style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailStyle {
    /// `j***@example.com`
    #[default]
    Partial,
    /// `***`
    Full,
}

/// Card number replacement style.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PanStyle {
    /// `************1111`
    #[default]
    Last4,
    /// `***`
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_denies_and_allows_no_egress() {
        let p = PolicySpec::default();
        assert_eq!(p.default, DefaultEffect::Deny);
        assert!(p.egress.is_empty());
        assert!(p.rules.is_empty());
    }

    #[test]
    fn default_redaction_keeps_only_what_tells_values_apart() {
        let r = RedactionSpec::default();
        assert_eq!(r.email, EmailStyle::Partial);
        assert_eq!(r.pan, PanStyle::Last4);
        assert_eq!(r.secret, "[REDACTED]");
    }
}
