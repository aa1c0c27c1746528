//! Spending and runaway protection: stop rules, rate limits and budgets, all counted in
//! the state store so they survive restarts and are shared by replicas.
//!
//! Owns the meaning of the `rate:` and `budget:` keys. [`Spend::admit`] runs before a
//! request is sent and either counts the call everywhere it applies or refuses it with
//! what was hit and when to retry; it never waits for capacity. Budgets are aligned to
//! UTC hours or days (a budget "per day" resets at midnight UTC); rates and stop rules
//! use a window that opens at the first call.

pub mod cap;
pub mod rate;

pub use cap::Cap;
pub use rate::Rate;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::Digest as _;

use crate::catalog::Tool;
use crate::config::Located;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::policy::{BudgetScope, BudgetWindow, PolicySpec};
use crate::store::{Counter, Incr, Store, StoreError, ns};
use crate::util::duration::human;
use crate::util::glob;

/// Cost units are counted in millionths, so the store's integer counters can hold them.
const MICROS: f64 = 1_000_000.0;

/// The compiled `budgets` and `stop` sections of policies.yaml.
#[derive(Debug, Default)]
pub struct Spend {
    budgets: Vec<Budget>,
    max_calls: Option<Rate>,
    repeats: Option<Rate>,
}

/// One budget.
#[derive(Debug)]
pub struct Budget {
    /// Its id.
    pub id: String,
    tools: Vec<String>,
    per: BudgetScope,
    window: BudgetWindow,
    calls: Option<u64>,
    cost: Option<u64>,
}

/// Why a call was refused before it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit: retry after the window resets.
    Rate(String),
    /// A budget is spent.
    Budget(String),
    /// A stop rule fired: a runaway loop is suspected (also raised as an alert).
    Stop {
        /// `max_calls` or `repeats`.
        rule: &'static str,
        /// What the model reads.
        message: String,
    },
    /// The state store failed: nothing was sent.
    State(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Self::State(format!(
            "mcpd's state store failed, so the call was not sent: {e}"
        ))
    }
}

/// What a budget has left after a call was counted (for metrics and spans).
#[derive(Debug, Clone, PartialEq)]
pub struct Left {
    /// The budget's id.
    pub budget: String,
    /// `calls` or `cost`.
    pub unit: &'static str,
    /// Whose counter: the actor, the tool, `tool:actor`, or `*`.
    pub scope: String,
    /// What is left in this window.
    pub left: f64,
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

impl Spend {
    /// Compiles the sections, reporting every problem at its position in `path`.
    ///
    /// # Errors
    /// Unparseable rates, budgets without a limit, negative costs, duplicate ids, bad
    /// tool globs.
    pub fn compile(path: &Path, spec: &PolicySpec) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut rate = |field: &str, r: Option<&Located<String>>| {
            r.and_then(|r| {
                Rate::parse(&r.value)
                    .map_err(|e| diags.push(Diagnostic::new(path, r.pos, format!("{field}: {e}"))))
                    .ok()
            })
        };
        let max_calls = rate("stop.max_calls", spec.stop.max_calls.as_ref());
        let repeats = rate("stop.repeats", spec.stop.repeats.as_ref());
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
        if diags.is_empty() {
            Ok(Self {
                budgets,
                max_calls,
                repeats,
            })
        } else {
            Err(diags)
        }
    }

    /// The budgets, in file order.
    pub fn budgets(&self) -> &[Budget] {
        &self.budgets
    }

    /// Counts one call of `tool` by `actor` against every stop rule, rate limit and
    /// budget that applies, in one all-or-none store write, or refuses it with the first
    /// limit it would pass (stop rules first, then rates, then budgets). A refused call
    /// counts against nothing.
    ///
    /// # Errors
    /// The limit the call would pass, or a failing store.
    pub async fn admit(
        &self,
        store: &dyn Store,
        tool: &Tool,
        actor: &str,
        args: &Value,
    ) -> Result<Vec<Left>, Refusal> {
        let mut checks: Vec<(Check<'_>, Incr)> = Vec::new();
        let rate_check = |check: Check<'static>, key: String, rate: &Rate| {
            (
                check,
                Incr {
                    key,
                    by: 1,
                    limit: Some(rate.limit),
                    window: rate.window,
                },
            )
        };
        // Stop rules first: a looping agent is stopped before it burns rate or budget.
        if let Some(rate) = &self.max_calls {
            checks.push(rate_check(
                Check::MaxCalls(*rate),
                format!("{}*stop:{actor}", ns::RATE),
                rate,
            ));
        }
        if let Some(rate) = &self.repeats {
            let key = format!("{}*repeat:{actor}:{}:{}", ns::RATE, tool.id, digest(args));
            checks.push(rate_check(Check::Repeats(*rate), key, rate));
        }
        if let Some(rate) = &tool.limits.rate {
            checks.push(rate_check(
                Check::Rate(*rate, false),
                format!("{}{}:{actor}", ns::RATE, tool.id),
                rate,
            ));
        }
        if let Some(rate) = &tool.limits.total_rate {
            checks.push(rate_check(
                Check::Rate(*rate, true),
                format!("{}{}:*", ns::RATE, tool.id),
                rate,
            ));
        }
        let now = now_ms();
        let cost = micros(tool.cost.per_call);
        for b in self.applying(&tool.id) {
            if let Some(limit) = b.calls {
                let (key, window) = b.key(&tool.id, actor, "calls", now);
                checks.push((
                    Check::Calls(b, limit, window),
                    Incr {
                        key,
                        by: 1,
                        limit: Some(limit),
                        window,
                    },
                ));
            }
            if let Some(limit) = b.cost {
                let (key, window) = b.key(&tool.id, actor, "cost", now);
                // A call whose cost comes only from its reply is refused once nothing is left.
                let limit_now = if cost == 0 {
                    limit.saturating_sub(1)
                } else {
                    limit
                };
                checks.push((
                    Check::Cost(b, limit, window),
                    Incr {
                        key,
                        by: cost,
                        limit: Some(limit_now),
                        window,
                    },
                ));
            }
        }
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let incs: Vec<Incr> = checks.iter().map(|(_, i)| i.clone()).collect();
        match store.incr_all(&incs).await? {
            Err((i, counter)) => Err(match checks.get(i) {
                Some((check, _)) => check.refusal(actor, &tool.id, counter),
                None => Refusal::State("the state store refused an unknown counter".into()),
            }),
            Ok(counters) => Ok(checks
                .iter()
                .zip(counters)
                .filter_map(|((check, _), c)| check.left(&tool.id, actor, c))
                .collect()),
        }
    }

    /// Adds the cost a reply reported (`cost.from_response`) to the budgets.
    ///
    /// # Errors
    /// Only a failing store.
    pub async fn charge_reply(
        &self,
        store: &dyn Store,
        tool: &Tool,
        actor: &str,
        cost: f64,
    ) -> Result<(), StoreError> {
        let by = micros(cost);
        if by == 0 {
            return Ok(());
        }
        for b in self.applying(&tool.id) {
            if b.cost.is_some() {
                let (key, ttl) = b.key(&tool.id, actor, "cost", now_ms());
                store.incr(&key, by, ttl).await?;
            }
        }
        Ok(())
    }

    fn applying<'a>(&'a self, tool: &'a str) -> impl Iterator<Item = &'a Budget> + 'a {
        self.budgets
            .iter()
            .filter(move |b| b.tools.is_empty() || b.tools.iter().any(|g| glob(g, tool)))
    }

    /// What each budget has left for `actor` across `tools` (the catalog's tool ids).
    ///
    /// # Errors
    /// Only a failing store.
    pub async fn remaining(
        &self,
        store: &dyn Store,
        actor: &str,
        tools: &[&str],
    ) -> Result<Vec<Remaining>, StoreError> {
        let now = now_ms();
        let mut out = Vec::new();
        for b in &self.budgets {
            let matching: Vec<&str> = tools
                .iter()
                .copied()
                .filter(|t| b.tools.is_empty() || b.tools.iter().any(|g| glob(g, t)))
                .collect();
            // One line per distinct counter this actor spends from.
            let mut scopes: Vec<(String, &str)> = Vec::new();
            match b.per {
                BudgetScope::Actor => scopes.push((format!("actor {actor}"), "")),
                BudgetScope::Global => scopes.push(("everyone".to_owned(), "")),
                BudgetScope::Tool => {
                    scopes.extend(matching.iter().map(|t| (format!("tool {t}"), *t)));
                }
                BudgetScope::ActorTool => scopes.extend(
                    matching
                        .iter()
                        .map(|t| (format!("actor {actor} on {t}"), *t)),
                ),
            }
            for (scope, tool) in scopes {
                let (calls_key, ttl) = b.key(tool, actor, "calls", now);
                let (cost_key, _) = b.key(tool, actor, "cost", now);
                let calls = match b.calls {
                    Some(limit) => Some((store.get_counter(&calls_key).await?, limit)),
                    None => None,
                };
                let cost = match b.cost {
                    Some(limit) => Some((
                        store.get_counter(&cost_key).await? as f64 / MICROS,
                        limit as f64 / MICROS,
                    )),
                    None => None,
                };
                out.push(Remaining {
                    budget: b.id.clone(),
                    scope,
                    calls,
                    cost,
                    resets_in: ttl.saturating_sub(WINDOW_SLACK),
                });
            }
        }
        Ok(out)
    }
}

/// One limit a call is counted against, to explain a refusal.
enum Check<'a> {
    MaxCalls(Rate),
    Repeats(Rate),
    /// A tool's rate; `true` for the total over all actors.
    Rate(Rate, bool),
    Calls(&'a Budget, u64, Duration),
    Cost(&'a Budget, u64, Duration),
}

impl Check<'_> {
    fn refusal(&self, actor: &str, tool: &str, c: Counter) -> Refusal {
        match self {
            Self::MaxCalls(rate) => Refusal::Stop {
                rule: "max_calls",
                message: format!(
                    "stop rule max_calls: '{actor}' made {} calls in {} (limit {rate}); this looks like a runaway loop, so further calls are refused for {}. Stop and report to the user instead of retrying",
                    c.total,
                    window_name(rate.window),
                    human(c.resets_in)
                ),
            },
            Self::Repeats(rate) => Refusal::Stop {
                rule: "repeats",
                message: format!(
                    "stop rule repeats: '{actor}' called {tool} with the same arguments {} times in {} (limit {rate}); repeating will not change the answer. Change the arguments or stop; identical calls are refused for {}",
                    c.total,
                    window_name(rate.window),
                    human(c.resets_in)
                ),
            },
            Self::Rate(rate, total) => {
                let who = if *total {
                    format!("all callers of {tool}")
                } else {
                    format!("'{actor}' on {tool}")
                };
                Refusal::Rate(format!(
                    "rate limit {rate} reached for {who}; retry in {} (retry_after_ms={})",
                    human(c.resets_in),
                    c.resets_in.as_millis()
                ))
            }
            Self::Calls(b, limit, window) => {
                b.spent("calls", c.total as f64, *limit as f64, *window)
            }
            Self::Cost(b, limit, window) => b.spent(
                "cost",
                c.total as f64 / MICROS,
                *limit as f64 / MICROS,
                *window,
            ),
        }
    }

    fn left(&self, tool: &str, actor: &str, c: Counter) -> Option<Left> {
        let (b, unit, left) = match self {
            Self::Calls(b, limit, _) => (b, "calls", limit.saturating_sub(c.total) as f64),
            Self::Cost(b, limit, _) => (b, "cost", limit.saturating_sub(c.total) as f64 / MICROS),
            _ => return None,
        };
        Some(Left {
            budget: b.id.clone(),
            unit,
            scope: b.scope(tool, actor),
            left,
        })
    }
}

/// Counters outlive their window by this much, so a call at the boundary still finds it.
const WINDOW_SLACK: Duration = Duration::from_secs(60);

impl Budget {
    /// The counter key for this window and the time it must live.
    fn key(&self, tool: &str, actor: &str, what: &str, now_ms: u64) -> (String, Duration) {
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
    fn scope(&self, tool: &str, actor: &str) -> String {
        match self.per {
            BudgetScope::Actor => actor.to_owned(),
            BudgetScope::Tool => tool.to_owned(),
            BudgetScope::ActorTool => format!("{tool}:{actor}"),
            BudgetScope::Global => "*".to_owned(),
        }
    }

    fn spent(&self, what: &str, used: f64, limit: f64, ttl: Duration) -> Refusal {
        let window = match self.window {
            BudgetWindow::Hour => "this hour",
            BudgetWindow::Day => "today (UTC)",
        };
        Refusal::Budget(format!(
            "budget '{}' is spent: {} of {} {what} used {window}; it resets in {}. Ask an operator to raise it, or wait",
            self.id,
            amount(used),
            amount(limit),
            human(ttl.saturating_sub(WINDOW_SLACK))
        ))
    }
}

/// Cost units as whole millionths.
fn micros(cost: f64) -> u64 {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stable digest of the arguments (object keys are sorted by serde_json's map).
pub(crate) fn digest(args: &Value) -> String {
    let bytes = serde_json::to_vec(args).unwrap_or_default();
    let hash = sha2::Sha256::digest(&bytes);
    hex::encode(hash.get(..12).unwrap_or_default())
}

fn window_name(d: Duration) -> String {
    match d.as_secs() {
        1 => "1 s".to_owned(),
        60 => "1 min".to_owned(),
        3600 => "1 hour".to_owned(),
        _ => "1 day".to_owned(),
    }
}
