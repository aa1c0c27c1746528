//! Budgets: calls and cost units per UTC hour or day, per actor, tool, both, or for
//! everyone (`budgets:` in policies.yaml), and what a tool's call costs.
//!
//! Owns the `budget:` counter keys, their windows (aligned to UTC hours or days: a
//! budget "per day" resets at midnight UTC), the spent-budget message and the figures of
//! `mcpd budget`. Counting a call is done by [`super::Limits::admit`], with the other
//! limits, in one store write.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::policy::{BudgetScope, BudgetWindow, PolicySpec};
use crate::response::jsonpath::JsonPath;
use crate::store::ns;
use crate::util::duration::human;
use crate::util::glob;

/// Cost units are counted in millionths, so the store's integer counters can hold them.
pub(super) const MICROS: f64 = 1_000_000.0;

/// Counters outlive their window by this much, so a call at the boundary still finds it.
pub(super) const WINDOW_SLACK: Duration = Duration::from_secs(60);

/// What one call of a tool spends from cost budgets (the tool file's `cost:`).
#[derive(Debug, Default)]
pub struct CostPlan {
    /// Charged when the call is admitted.
    pub per_call: f64,
    /// A number read from the reply, charged after the call.
    pub from_response: Option<JsonPath>,
}

/// One budget.
#[derive(Debug)]
pub struct Budget {
    /// Its id.
    pub id: String,
    tools: Vec<String>,
    per: BudgetScope,
    window: BudgetWindow,
    /// Calls allowed per window.
    pub(super) calls: Option<u64>,
    /// Cost allowed per window, in millionths.
    pub(super) cost: Option<u64>,
}

/// What a budget has left, for `mcpd budget`.
#[derive(Debug, Clone, PartialEq)]
pub struct Remaining {
    /// The budget's id.
    pub budget: String,
    /// Whose spending it counts (`actor agent:x`, `tool flag.set`, `everyone`).
    pub scope: String,
    /// Calls used and allowed.
    pub calls: Option<(u64, u64)>,
    /// Cost units used and allowed.
    pub cost: Option<(f64, f64)>,
    /// Until the window resets.
    pub resets_in: Duration,
}

/// Compiles the `budgets` section, reporting every problem at its position in `path`:
/// budgets without a limit, non-positive costs, duplicate ids, bad tool globs.
pub(super) fn compile(path: &Path, spec: &PolicySpec, diags: &mut Diagnostics) -> Vec<Budget> {
    let mut seen = HashSet::new();
    let mut budgets = Vec::new();
    for b in &spec.budgets {
        let id = &b.id.value;
        let mut err = |msg: &str| {
            diags.push(Diagnostic::new(
                path,
                b.id.pos,
                format!("budget '{id}': {msg}"),
            ));
        };
        if !seen.insert(id.as_str()) {
            err("another budget has this id");
        }
        if id.is_empty() || id.contains(':') {
            err("an id must be non-empty and without ':'");
        }
        if b.calls.is_none() && b.cost.is_none() {
            err("set 'calls', 'cost' or both: a budget without a limit limits nothing");
        }
        if b.calls == Some(0) {
            err("'calls' must be at least 1 (to block a tool, use a deny rule)");
        }
        let cost = match b.cost {
            Some(c) if !c.is_finite() || c <= 0.0 => {
                err("'cost' must be a number above 0");
                None
            }
            Some(c) => Some(micros(c)),
            None => None,
        };
        for t in &b.tools {
            if t.value.is_empty() || t.value.contains(':') {
                diags.push(Diagnostic::new(
                    path,
                    t.pos,
                    format!(
                        "budget '{id}': tools: '{}' is not a tool id or glob",
                        t.value
                    ),
                ));
            }
        }
        budgets.push(Budget {
            id: id.clone(),
            tools: b.tools.iter().map(|t| t.value.clone()).collect(),
            per: b.per,
            window: b.window,
            calls: b.calls,
            cost,
        });
    }
    budgets
}

impl Budget {
    /// Whether calls of `tool` spend from this budget.
    pub(super) fn covers(&self, tool: &str) -> bool {
        self.tools.is_empty() || self.tools.iter().any(|g| glob(g, tool))
    }

    /// The counter key for this window and the time it must live.
    pub(super) fn key(
        &self,
        tool: &str,
        actor: &str,
        what: &str,
        now_ms: u64,
    ) -> (String, Duration) {
        let len: u64 = match self.window {
            BudgetWindow::Hour => 3_600_000,
            BudgetWindow::Day => 86_400_000,
        };
        let index = now_ms / len;
        let left = Duration::from_millis(len - now_ms % len);
        let key = format!(
            "{}{}:{what}:{index}:{}",
            ns::BUDGET,
            self.id,
            self.scope(tool, actor)
        );
        (key, left + WINDOW_SLACK)
    }

    /// Whose counter a call of `tool` by `actor` spends from.
    pub(super) fn scope(&self, tool: &str, actor: &str) -> String {
        match self.per {
            BudgetScope::Actor => actor.to_owned(),
            BudgetScope::Tool => tool.to_owned(),
            BudgetScope::ActorTool => format!("{tool}:{actor}"),
            BudgetScope::Global => "*".to_owned(),
        }
    }

    /// The distinct counters `actor` spends from across `tools`, as `mcpd budget` names
    /// them, with the tool each is keyed by ("" when the tool is not part of the key).
    pub(super) fn scopes_of<'t>(&self, actor: &str, tools: &[&'t str]) -> Vec<(String, &'t str)> {
        let matching = tools.iter().copied().filter(|t| self.covers(t));
        match self.per {
            BudgetScope::Actor => vec![(format!("actor {actor}"), "")],
            BudgetScope::Global => vec![("everyone".to_owned(), "")],
            BudgetScope::Tool => matching.map(|t| (format!("tool {t}"), t)).collect(),
            BudgetScope::ActorTool => matching
                .map(|t| (format!("actor {actor} on {t}"), t))
                .collect(),
        }
    }

    /// The refusal message of a spent budget.
    pub(super) fn spent(&self, what: &str, used: f64, limit: f64, ttl: Duration) -> String {
        let window = match self.window {
            BudgetWindow::Hour => "this hour",
            BudgetWindow::Day => "today (UTC)",
        };
        format!(
            "budget '{}' is spent: {} of {} {what} used {window}; it resets in {}. Ask an operator to raise it, or wait",
            self.id,
            amount(used),
            amount(limit),
            human(ttl.saturating_sub(WINDOW_SLACK))
        )
    }
}

/// Cost units as whole millionths.
pub(super) fn micros(cost: f64) -> u64 {
    if cost.is_finite() && cost > 0.0 {
        // Saturating float-to-int conversion is what `as` does; costs are small.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let m = (cost * MICROS).round() as u64;
        m
    } else {
        0
    }
}

/// An amount with at most four decimals and no trailing zeros: `5`, `0.25`, `0.002`.
pub fn amount(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}
