//! Limits: what may stop a call before it is sent because of how much is being called,
//! not what: stop rules against runaway loops, rate limits, concurrency caps, budgets
//! and circuit breakers ([`breaker`]: the upstream is failing). Counters live in the state store, so they survive restarts and are shared
//! by replicas.
//!
//! Owns the meaning of the `rate:` and `budget:` keys. [`Limits::admit`] runs before a
//! request is sent and either counts the call everywhere it applies, in one all-or-none
//! store write, or refuses it with what was hit and when to retry; it never waits for
//! capacity. Rates and stop rules use fixed windows ([`rate`]); budgets are aligned to
//! UTC hours or days ([`budget`]); caps are in-process permits ([`cap`]).

pub mod breaker;
pub mod budget;
pub mod cap;
pub mod rate;
pub mod stop;

pub use breaker::Breaker;
pub use budget::{Budget, CostPlan, Remaining, amount};
pub use cap::Cap;
pub use rate::Rate;
pub use stop::StopRules;

use std::path::Path;
use std::time::Duration;

use crate::config::diag::Diagnostics;
use crate::config::policy::PolicySpec;
use crate::store::{AllOrNone, Counter, Incr, Store, StoreError, ns};
use crate::util::duration::human;
use budget::{MICROS, WINDOW_SLACK, micros};

/// A tool's own limits (the tool file's `limits:`).
#[derive(Debug, Default)]
pub struct ToolLimits {
    /// Calls per actor per window.
    pub rate: Option<Rate>,
    /// Calls of all actors together per window.
    pub total_rate: Option<Rate>,
    /// Calls in flight at once.
    pub cap: Option<Cap>,
    /// Run uncounted when the state store is unreachable (`on_state_outage: serve`).
    pub serve_on_state_outage: bool,
}

/// The compiled `budgets` and `stop` sections of policies.yaml.
#[derive(Debug, Default)]
pub struct Limits {
    budgets: Vec<Budget>,
    stop: StopRules,
}

/// One call, as limits count it.
#[derive(Debug, Clone, Copy)]
pub struct Metered<'a> {
    /// The tool id.
    pub tool: &'a str,
    /// The actor's subject.
    pub actor: &'a str,
    /// The digest of the arguments (for the `repeats` stop rule).
    pub args_digest: &'a str,
    /// The tool's own limits.
    pub limits: &'a ToolLimits,
    /// What a call of the tool costs.
    pub cost: &'a CostPlan,
}

/// Why a call was refused before it was sent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A rate limit: retry after the window resets.
    #[error("{0}")]
    Rate(String),
    /// A budget is spent.
    #[error("{0}")]
    Budget(String),
    /// A stop rule fired: a runaway loop is suspected (also raised as an alert).
    #[error("{message}")]
    Stop {
        /// `max_calls` or `repeats`.
        rule: &'static str,
        /// What the model reads.
        message: String,
    },
    /// The state store failed: nothing was sent.
    #[error("mcpd's state store failed, so the call was not sent: {0}")]
    State(#[from] StoreError),
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
    /// The budget's limit for the window.
    pub limit: f64,
    /// What this call counted against it.
    pub charged: f64,
}

impl Limits {
    /// Compiles the sections, reporting every problem at its position in `path`:
    /// unparseable rates, budgets without a limit, non-positive costs, duplicate ids,
    /// bad tool globs.
    pub fn compile(path: &Path, spec: &PolicySpec, diags: &mut Diagnostics) -> Option<Self> {
        let before = diags.len();
        let stop = StopRules::compile(path, spec, diags);
        let budgets = budget::compile(path, spec, diags);
        (diags.len() == before).then_some(Self { budgets, stop })
    }

    /// Whether a stop rule counts identical calls (then [`Metered::args_digest`] is read).
    pub fn counts_repeats(&self) -> bool {
        self.stop.repeats.is_some()
    }

    /// The budgets, in file order.
    pub fn budgets(&self) -> &[Budget] {
        &self.budgets
    }

    /// Counts one call against every stop rule, rate limit and budget that applies, in
    /// one all-or-none store write, or refuses it with the first limit it would pass
    /// (stop rules first, then rates, then budgets). A refused call counts against
    /// nothing. Rate and stop-rule counters are lazy ([`Incr::lazy`]): a crash may lose
    /// the last second of them; budgets are durable.
    ///
    /// # Errors
    /// The limit the call would pass, or a failing store.
    pub async fn admit(
        &self,
        store: &dyn Store,
        call: &Metered<'_>,
        now_ms: u64,
    ) -> Result<Vec<Left>, Refusal> {
        let plan = self.plan(call, now_ms);
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let counted = store.incr_all(plan.incs()).await?;
        plan.judge(counted)
    }

    /// The counters one call is counted against, for [`Admission::judge`] (or to count
    /// them together with an idempotency claim, [`Store::idem_claim_counted`]).
    pub fn plan<'a>(&'a self, call: &Metered<'a>, now_ms: u64) -> Admission<'a> {
        let (tool, actor) = (call.tool, call.actor);
        let mut checks: Vec<Check<'_>> = Vec::new();
        let mut incs: Vec<Incr> = Vec::new();
        let mut rate_check = |check: Check<'a>, key: String, rate: &Rate| {
            checks.push(check);
            incs.push(Incr {
                key,
                by: 1,
                limit: Some(rate.limit),
                window: rate.window,
                lazy: true,
            });
        };
        // Stop rules first: a looping agent is stopped before it burns rate or budget.
        if let Some(rate) = &self.stop.max_calls {
            rate_check(Check::MaxCalls(*rate), stop::max_calls_key(actor), rate);
        }
        if let Some(rate) = &self.stop.repeats {
            let key = stop::repeats_key(actor, tool, call.args_digest);
            rate_check(Check::Repeats(*rate), key, rate);
        }
        if let Some(rate) = &call.limits.rate {
            let key = format!("{}{tool}:{actor}", ns::RATE);
            rate_check(Check::Rate(*rate, false), key, rate);
        }
        if let Some(rate) = &call.limits.total_rate {
            let key = format!("{}{tool}:*", ns::RATE);
            rate_check(Check::Rate(*rate, true), key, rate);
        }
        let cost = micros(call.cost.per_call);
        for b in self.applying(tool) {
            if let Some(limit) = b.calls {
                let (key, window) = b.key(tool, actor, "calls", now_ms);
                checks.push(Check::Calls(b, limit, window));
                incs.push(Incr {
                    key,
                    by: 1,
                    limit: Some(limit),
                    window,
                    lazy: false,
                });
            }
            if let Some(limit) = b.cost {
                let (key, window) = b.key(tool, actor, "cost", now_ms);
                // A call whose cost comes only from its reply is refused once nothing is left.
                let limit_now = if cost == 0 {
                    limit.saturating_sub(1)
                } else {
                    limit
                };
                checks.push(Check::Cost(b, limit, window));
                incs.push(Incr {
                    key,
                    by: cost,
                    limit: Some(limit_now),
                    window,
                    lazy: false,
                });
            }
        }
        Admission {
            tool,
            actor,
            checks,
            incs,
        }
    }

    /// Adds the cost a reply reported (`cost.from_response`) to the budgets.
    ///
    /// # Errors
    /// Only a failing store.
    pub async fn charge_reply(
        &self,
        store: &dyn Store,
        tool: &str,
        actor: &str,
        cost: f64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let by = micros(cost);
        if by == 0 {
            return Ok(());
        }
        for b in self.applying(tool) {
            if b.cost.is_some() {
                let (key, ttl) = b.key(tool, actor, "cost", now_ms);
                store.incr(&key, by, ttl).await?;
            }
        }
        Ok(())
    }

    fn applying<'a>(&'a self, tool: &'a str) -> impl Iterator<Item = &'a Budget> + 'a {
        self.budgets.iter().filter(move |b| b.covers(tool))
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
        now_ms: u64,
    ) -> Result<Vec<Remaining>, StoreError> {
        let mut out = Vec::new();
        for b in &self.budgets {
            // One line per distinct counter this actor spends from.
            for (scope, tool) in b.scopes_of(actor, tools) {
                let (calls_key, ttl) = b.key(tool, actor, "calls", now_ms);
                let (cost_key, _) = b.key(tool, actor, "cost", now_ms);
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

/// What one call is counted against ([`Limits::plan`]): the store's counters, and what
/// each means, to judge what the store answered.
pub struct Admission<'a> {
    tool: &'a str,
    actor: &'a str,
    checks: Vec<Check<'a>>,
    incs: Vec<Incr>,
}

impl Admission<'_> {
    /// Whether nothing applies: the call is counted nowhere.
    pub fn is_empty(&self) -> bool {
        self.incs.is_empty()
    }

    /// The counters, for the store.
    pub fn incs(&self) -> &[Incr] {
        &self.incs
    }

    /// What the store answered, as [`Limits::admit`] returns it.
    ///
    /// # Errors
    /// The limit the call would pass.
    pub fn judge(&self, counted: AllOrNone) -> Result<Vec<Left>, Refusal> {
        let (tool, actor) = (self.tool, self.actor);
        match counted {
            Err((i, counter)) => Err(match self.checks.get(i) {
                Some(check) => check.refusal(actor, tool, counter),
                None => Refusal::State(StoreError::InvalidArgument(
                    "the state store refused an unknown counter".into(),
                )),
            }),
            Ok(counters) => Ok(self
                .checks
                .iter()
                .zip(&self.incs)
                .zip(counters)
                .filter_map(|((check, incr), c)| check.left(tool, actor, c, incr.by))
                .collect()),
        }
    }
}

impl std::fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("incs", &self.incs)
            .finish_non_exhaustive()
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
                message: stop::max_calls_message(actor, *rate, c.total, c.resets_in),
            },
            Self::Repeats(rate) => Refusal::Stop {
                rule: "repeats",
                message: stop::repeats_message(actor, tool, *rate, c.total, c.resets_in),
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
                Refusal::Budget(b.spent("calls", c.total as f64, *limit as f64, *window))
            }
            Self::Cost(b, limit, window) => Refusal::Budget(b.spent(
                "cost",
                c.total as f64 / MICROS,
                *limit as f64 / MICROS,
                *window,
            )),
        }
    }

    fn left(&self, tool: &str, actor: &str, c: Counter, by: u64) -> Option<Left> {
        let (b, unit, left, limit, charged) = match self {
            Self::Calls(b, limit, _) => (
                b,
                "calls",
                limit.saturating_sub(c.total) as f64,
                *limit as f64,
                by as f64,
            ),
            Self::Cost(b, limit, _) => (
                b,
                "cost",
                limit.saturating_sub(c.total) as f64 / MICROS,
                *limit as f64 / MICROS,
                by as f64 / MICROS,
            ),
            _ => return None,
        };
        Some(Left {
            budget: b.id.clone(),
            unit,
            scope: b.scope(tool, actor),
            left,
            limit,
            charged,
        })
    }
}
