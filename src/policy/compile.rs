//! Checking and compiling the rules of `policies.yaml` into a [`Policy`].
//!
//! Owns the problems a rule can have (an empty or repeated id, a condition that does not
//! parse, reads an unknown variable or field, names a tool or argument that does not
//! exist), each reported with its position, and the shared minijinja environment the
//! conditions are compiled into. It must not evaluate a condition or decide a call: that
//! is the parent module's, on the call path, over what is built here.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::RwLock;

use minijinja::{Environment, UndefinedBehavior};

use super::functions::days_between;
use super::request::Match;
use super::{Policy, Rule, ToolArgs, describe};
use crate::config::PolicySpec;
use crate::config::diag::{Diagnostic, Diagnostics, Pos};

/// Fuel per condition: bounds a runaway expression (a long `range` pipeline, say).
const FUEL: u64 = 20_000;

/// What a condition may read, and the fields of the roots whose shape is fixed.
const ROOTS: &[(&str, &[&str])] = &[
    ("tool", &[]),
    ("args", &[]),
    ("actor", &["subject", "scopes", "purpose", "region"]),
    ("elevation", &["ticket", "granted_by", "expires"]),
    ("env", &["name"]),
    ("request", &["upstream", "method", "path", "query", "body"]),
    ("days_between", &[]),
    ("range", &[]),
    ("dict", &[]),
];

/// Map methods, callable on any root (`args.get('limit', 100)`): not fields.
const MAP_METHODS: &[&str] = &["get", "items", "keys", "values"];

/// The fields of `request` known before the call is rendered.
const UNRENDERED: &[&str] = &["upstream", "method"];

/// What a condition reads.
#[derive(Debug, Default)]
struct Reads {
    /// Argument names (`args.NAME`).
    args: Vec<String>,
    /// `request` at all.
    request: bool,
    /// `request.path`, `.query`, `.body` (or `request` whole): the rendered request.
    sent: bool,
}

impl Policy {
    /// Checks and compiles the rules of `policies.yaml` (`path`), reporting every
    /// problem at the position of its rule, tool pattern or condition.
    pub fn compile(path: &Path, spec: &PolicySpec, diags: &mut Diagnostics) -> Option<Self> {
        let before = diags.len();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(FUEL));
        env.add_function("days_between", days_between);
        let mut rules = Vec::new();
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for r in &spec.rules {
            let id = r.id.value.as_str();
            let mut err = |pos: Pos, msg: String| {
                diags.push(Diagnostic::new(path, pos, format!("rule '{id}': {msg}")));
            };
            if id.trim().is_empty() {
                err(r.id.pos, "the id is empty: name the rule".to_owned());
            }
            match seen.get(id) {
                Some(first) => err(
                    r.id.pos,
                    format!(
                        "id is already used by the rule at line {}, column {}",
                        first.line, first.col
                    ),
                ),
                None => {
                    seen.insert(id, r.id.pos);
                }
            }
            for (pos, msg) in r.problems() {
                err(pos, msg);
            }
            let mut reads = Reads::default();
            let mut sees = super::replay::Sees::default();
            let when = r.when.as_ref().and_then(|w| {
                let name = format!("rule:{id}");
                let source = format!("{{% if {} %}}1{{% endif %}}", w.value);
                if let Err(e) = env.add_template_owned(name.clone(), source) {
                    let msg = format!("invalid condition '{}': {}", w.value, describe(&e));
                    err(w.pos, msg);
                    return None;
                }
                let vars = env
                    .get_template(&name)
                    .map(|t| t.undeclared_variables(true))
                    .unwrap_or_default();
                let problems;
                (reads, problems) = variables(&vars);
                sees = super::replay::Sees::of(&vars);
                for msg in &problems {
                    err(w.pos, msg.clone());
                }
                problems.is_empty().then_some(name)
            });
            rules.push(Rule {
                id: id.to_owned(),
                tools: r.tools.iter().map(|t| (t.value.clone(), t.pos)).collect(),
                matches: r.matches.as_ref().map(|m| {
                    let pos = m.upstream.as_ref().map_or(r.id.pos, |u| u.pos);
                    (Match::compile(m), pos)
                }),
                when,
                when_pos: r.when.as_ref().map_or(r.id.pos, |w| w.pos),
                reads: reads.args,
                reads_request: reads.request,
                reads_sent: reads.sent,
                sees: sees.with_require(r.require.as_ref()),
                uses_elevation: r
                    .when
                    .as_ref()
                    .is_some_and(|w| w.value.contains("elevation"))
                    || r.require.as_ref().is_some_and(|q| q.ticket),
                effect: r.effect,
                mode: r.mode,
                reason: r.reason.clone().unwrap_or_default(),
                detectors: r.detectors.iter().copied().collect(),
                region: r.region.clone(),
                require: r.require.clone(),
            });
        }
        (diags.len() == before).then(|| Self {
            default: spec.default,
            rules,
            by_tool: RwLock::default(),
            env,
            redaction: spec.redaction.clone(),
        })
    }

    /// Cross-checks `match.upstream` against the upstreams of `mcpd.yaml`: a name no
    /// upstream has is a typo that would make the rule silently never match.
    pub fn check_upstreams(&self, path: &Path, upstreams: &[&str]) -> Diagnostics {
        let mut diags = Diagnostics::default();
        for rule in &self.rules {
            let Some((m, pos)) = &rule.matches else {
                continue;
            };
            if let Some(u) = m.upstream.as_deref().filter(|u| !upstreams.contains(u)) {
                diags.push(Diagnostic::new(
                    path,
                    *pos,
                    format!(
                        "rule '{}': match.upstream: no upstream is named '{u}' (mcpd.yaml declares: {})",
                        rule.id,
                        if upstreams.is_empty() {
                            "none".to_owned()
                        } else {
                            upstreams.join(", ")
                        }
                    ),
                ));
            }
        }
        diags
    }

    /// Cross-checks the rules against the catalog's tools. Reported: a tool id named
    /// exactly in a rule's `tools` that no tool has, and an argument a condition reads
    /// (`args.NAME`) that no tool the rule covers declares. Either is a typo that would
    /// make the rule silently never match.
    pub fn check_tools(&self, path: &Path, tools: &[ToolArgs<'_>]) -> Diagnostics {
        let mut diags = Diagnostics::default();
        for rule in &self.rules {
            let mut err = |pos: Pos, msg: String| {
                let msg = format!("rule '{}': {msg}", rule.id);
                diags.push(Diagnostic::new(path, pos, msg));
            };
            for (name, pos) in rule.tools.iter().filter(|(t, _)| !t.contains('*')) {
                if !tools.iter().any(|t| t.id == name) {
                    err(*pos, format!("tools: no tool is named '{name}'"));
                }
            }
            let covered: Vec<&ToolArgs<'_>> = tools.iter().filter(|t| rule.covers(t.id)).collect();
            if covered.is_empty() {
                continue;
            }
            for arg in &rule.reads {
                if covered.iter().any(|t| t.args.contains(&arg.as_str())) {
                    continue;
                }
                let mut declared: Vec<&str> = covered
                    .iter()
                    .flat_map(|t| t.args.iter().copied())
                    .collect();
                declared.sort_unstable();
                declared.dedup();
                let declared = if declared.is_empty() {
                    "nothing".to_owned()
                } else {
                    declared.join(", ")
                };
                err(
                    rule.when_pos,
                    format!(
                        "condition reads 'args.{arg}', which no tool it covers declares (they declare: {declared})"
                    ),
                );
            }
        }
        diags
    }
}

/// Sorts a condition's variables (dotted paths) into what it reads and its problems:
/// unknown roots, unknown fields of `actor`, `elevation`, `env` and `request`.
fn variables(vars: &HashSet<String>) -> (Reads, Vec<String>) {
    let (mut reads, mut roots, mut problems) = (Reads::default(), Vec::new(), Vec::new());
    for v in vars {
        let mut segments = v.split('.');
        let root = segments.next().unwrap_or_default();
        let field = segments.next().filter(|f| !MAP_METHODS.contains(f));
        if root == "request" {
            reads.request = true;
            reads.sent |= field.is_none_or(|f| !UNRENDERED.contains(&f));
        }
        match (ROOTS.iter().find(|(r, _)| *r == root), field) {
            (None, _) => roots.push(root),
            (Some(("args", _)), Some(f)) => reads.args.push(f.to_owned()),
            (Some((r, fields)), Some(f)) if !fields.is_empty() && !fields.contains(&f) => {
                problems.push(format!(
                    "condition reads unknown field '{r}.{f}' ({r} has: {})",
                    fields.join(", ")
                ));
            }
            _ => {}
        }
    }
    if !roots.is_empty() {
        roots.sort_unstable();
        roots.dedup();
        problems.push(format!(
            "condition reads unknown variable(s) {} (conditions can read tool, args, request, actor, elevation, env and call days_between)",
            roots.join(", ")
        ));
    }
    problems.sort_unstable();
    reads.args.sort_unstable();
    reads.args.dedup();
    (reads, problems)
}
