//! What a `require` rule finds missing, and what a human could give, when asked, to lift
//! a denial ([`Lift`]): a change ticket (for a rule that reads `elevation` or requires a
//! ticket) or an explicit yes (`require: { approval: true }`). Nothing a human says can
//! supply a purpose or a scope.
//!
//! Owns those words and that classification; asking is the engine's (`engine::approval`).

use serde_json::Value;

use super::Facts;
use crate::config::policy::RequireSpec;

/// What a human could give to lift a denial; a ticket also counts as an approval, so
/// it orders above a yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lift {
    /// An explicit yes for this call: a `require: { approval: true }` rule.
    Confirm,
    /// A change ticket: a rule that denied reads `elevation` (or requires a ticket).
    Ticket,
}

/// What a `require` rule finds missing, and what a human could give to supply it.
pub(super) struct Missing {
    /// The missing things, in words (`None`: nothing is missing).
    pub(super) text: Option<String>,
    /// `Some` when a human can supply everything missing.
    pub(super) lift: Option<Lift>,
}

/// What a `require` rule finds missing, if anything.
pub(super) fn unmet(r: &RequireSpec, facts: &Facts<'_>) -> Missing {
    let mut missing = Vec::new();
    let elevation = |field: &str| {
        facts
            .elevation
            .and_then(|e| e.get(field))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut lift = Some(Lift::Confirm);
    if r.ticket && elevation("ticket").is_empty() {
        missing.push("an elevation with a ticket".to_owned());
        lift = Some(Lift::Ticket);
    }
    if r.approval && elevation("approval").is_empty() {
        missing.push("a human's approval of this call".to_owned());
    }
    if !r.purpose.is_empty() {
        let purpose = facts
            .actor
            .get("purpose")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !r.purpose.iter().any(|p| p == purpose) {
            missing.push(format!("purpose {}", r.purpose.join(" or ")));
            lift = None;
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
            lift = None;
        }
    }
    Missing {
        text: (!missing.is_empty()).then(|| missing.join(", ")),
        lift,
    }
}
