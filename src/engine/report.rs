//! What a call tells whoever made it while it runs: log messages and progress, through
//! a [`Reporter`] the transport puts in the [`CallContext`](super::CallContext).
//!
//! Owns the words of those messages (a shadow rule that would have denied, a retry, a
//! budget past 80 %, the steps of a call at debug level) and when they are said. It
//! never knows where they go: the MCP layer turns them into `notifications/message` and
//! `notifications/progress` (filtered by level, rate-limited, redacted); `mcpd call` and
//! `mcpd test` have no reporter, and nothing is said.

use std::fmt;

use super::Call;
use crate::limits::Left;
use crate::policy::Decision;
use crate::upstream::Retry;
use crate::util::duration::human;

/// How much a message matters, lowest first (the MCP log levels mcpd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The steps of a call, for someone debugging a tool.
    Debug,
    /// Something worth knowing that needs no action (a retry).
    Info,
    /// Something the user may want to act on (a shadow rule would have denied).
    Notice,
    /// Something that will fail if nothing changes (a budget nearly spent, a reload that
    /// kept the last good file).
    Warning,
    /// Something failed (a tool file that does not compile).
    Error,
}

impl Level {
    /// The level's name as MCP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// A message about the server rather than a call (a reload that kept the last good
/// file, a tool that does not compile), for every session that listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// How much it matters.
    pub level: Level,
    /// What happened, in words.
    pub message: String,
}

/// Where a call's messages go. Implementations must not block: they queue.
pub trait Reporter: Send + Sync + fmt::Debug {
    /// A log message about this call.
    fn log(&self, level: Level, message: &str);
    /// A progress step of this call (a retry, its backoff); sent only when the caller
    /// asked for progress.
    fn progress(&self, message: &str);
    /// Whether a log message at `level` would be sent now: the engine builds a message
    /// only when it would (a debug line about every request costs a URL's formatting,
    /// decoding and scrubbing).
    fn listens(&self, _level: Level) -> bool {
        true
    }
}

/// The message for a retry of `upstream`'s request.
pub(super) fn retry_message(upstream: &str, r: &Retry) -> String {
    format!(
        "attempt {} of {}: upstream '{upstream}' {}; retrying in {}",
        r.attempt,
        r.attempts,
        r.why,
        human(r.backoff)
    )
}

/// The message for a shadow rule that fired (`entry` is `id:effect`), or `None` when the
/// entry is not one.
pub(super) fn shadow_message(entry: &str) -> Option<String> {
    let (id, effect) = entry.rsplit_once(':')?;
    let would = match effect {
        "deny" | "require" => "would have denied this call",
        "redact" => "would have redacted this call's result",
        "route" => "would have routed this call to another region",
        "allow" => "would have allowed this call",
        _ => return None,
    };
    Some(format!(
        "shadow rule '{id}' {would}; it is measured, not enforced (policies.yaml mode: shadow)"
    ))
}

/// After step 5: a shadow rule that fired, and at debug level what policy decided.
pub(super) fn decision(c: &Call<'_>, d: &Decision) {
    for entry in &d.shadow {
        if let Some(m) = shadow_message(entry) {
            c.log(Level::Notice, || m);
        }
    }
    c.log(Level::Debug, || match &d.denial {
        Some((rule, _)) => format!("{}: policy denied the call [rule {rule}]", c.tool.id),
        None if d.matched.is_empty() => format!("{}: policy allowed the call", c.tool.id),
        None => format!(
            "{}: policy allowed the call (rules: {})",
            c.tool.id,
            d.matched.join(", ")
        ),
    });
}

/// After step 8: the budgets this call took past 80 % of their limit.
pub(super) fn budgets(c: &Call<'_>, left: &[Left]) {
    for l in left {
        if let Some(m) = budget_message(l) {
            c.log(Level::Warning, || m);
        }
    }
}

/// The share of a budget that must be spent before the call that crosses it is told.
pub(super) const BUDGET_WARNING: f64 = 0.8;

/// The message for a budget this call took past [`BUDGET_WARNING`] of its limit, if it
/// did: said once, by the call that crosses the line, not by every call after it.
pub(super) fn budget_message(l: &Left) -> Option<String> {
    if l.limit <= 0.0 {
        return None;
    }
    let line = l.limit * BUDGET_WARNING;
    let spent = l.limit - l.left;
    let before = spent - l.charged;
    (spent >= line && before < line).then(|| {
        let unit = if l.unit == "calls" {
            "calls"
        } else {
            "cost units"
        };
        format!(
            "budget '{}' is {:.0} % spent: {} of {} {unit} left in this window for {}",
            l.budget,
            spent / l.limit * 100.0,
            crate::limits::amount(l.left),
            crate::limits::amount(l.limit),
            l.scope
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(limit: f64, left: f64, charged: f64) -> Left {
        Left {
            budget: "daily".into(),
            unit: "calls",
            scope: "user:ana".into(),
            left,
            limit,
            charged,
        }
    }

    #[test]
    fn a_budget_warning_is_said_once_by_the_call_that_crosses_80_percent() {
        // 10 calls: the 8th call takes it from 70 % to 80 %.
        assert_eq!(
            budget_message(&left(10.0, 2.0, 1.0)).as_deref(),
            Some("budget 'daily' is 80 % spent: 2 of 10 calls left in this window for user:ana")
        );
        assert_eq!(budget_message(&left(10.0, 3.0, 1.0)), None, "70 %");
        assert_eq!(budget_message(&left(10.0, 1.0, 1.0)), None, "the 9th call");
        // A big charge that jumps past the line is told too.
        assert!(budget_message(&left(10.0, 0.0, 10.0)).is_some());
    }

    #[test]
    fn shadow_entries_say_what_the_rule_would_have_done() {
        assert_eq!(
            shadow_message("no-bulk-exports:deny").as_deref(),
            Some(
                "shadow rule 'no-bulk-exports' would have denied this call; it is measured, not enforced (policies.yaml mode: shadow)"
            )
        );
        assert!(shadow_message("x:route").unwrap().contains("routed"));
        assert_eq!(shadow_message("nonsense"), None);
    }

    #[test]
    fn levels_order_from_debug_to_error() {
        assert!(Level::Debug < Level::Info && Level::Warning < Level::Error);
        assert_eq!(Level::Notice.as_str(), "notice");
    }
}
