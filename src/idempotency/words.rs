//! What a model (and the person behind it) reads about a key: in flight, held with its
//! outcome unknown, in conflict with another write, and the note on a call whose outcome
//! became unknown. Each message says what happened, for how long, and what to do.
//!
//! Owns these words only; it decides nothing.

use std::time::Duration;

use super::{ClaimInfo, Held};
use crate::util::duration::human;

/// `by A, 3 min ago` (the parts that are known).
fn who_when(call: &ClaimInfo, now_ms: u64) -> String {
    let mut parts = Vec::new();
    if !call.actor.is_empty() {
        parts.push(format!("by {}", call.actor));
    }
    if call.at_ms > 0 {
        let ago = Duration::from_millis(now_ms.saturating_sub(call.at_ms));
        parts.push(format!("{} ago", human(ago)));
    }
    if !call.trace_id.is_empty() {
        parts.push(format!("trace {}", call.trace_id));
    }
    parts.join(", ")
}

/// A repeat of a key whose call is still in flight.
pub fn in_flight(key: &str, lapses_in: Duration, by: &ClaimInfo, now_ms: u64) -> String {
    let who = who_when(by, now_ms);
    let who = if who.is_empty() {
        String::new()
    } else {
        format!(" ({who})")
    };
    format!(
        "a call with idempotency key '{key}' is still in flight{who}; retry in a few seconds to get its result (it is never sent twice). If it has not finished within {}, its outcome counts as unknown and the key stays held until someone checks it",
        human(lapses_in)
    )
}

/// A repeat of a key whose call's outcome is unknown: what is known and what to do.
pub fn unknown(tool: &str, upstream: &str, key: &str, held: &Held, now_ms: u64) -> String {
    format!(
        "outcome unknown: an earlier call of {tool} with idempotency key '{key}' ({}) {}, so the write may or may not have reached upstream '{upstream}'. mcpd holds the key and will not send this write again. Do not retry it under another key (that could make the write twice): tell the user its outcome must be checked in '{upstream}'. Once checked, an operator runs `mcpd idempotency resolve '{key}' --tool {tool} --sent-ok` if it landed (retries then get a success) or `--not-sent` if it did not (the next retry sends it)",
        who_when(&held.call, now_ms),
        held.why,
    )
}

/// A key reused with other arguments.
pub fn conflict(key: &str, first: &ClaimInfo, now_ms: u64) -> String {
    let who = who_when(first, now_ms);
    let who = if who.is_empty() {
        String::new()
    } else {
        format!(" ({who})")
    };
    format!(
        "idempotency key '{key}' was already used with other arguments{who}; this call conflicts with that write and was not sent. Do not retry it under a new key: the key names one operation, and it has already been made (or is being made). If you meant that operation, call again with its original arguments to get its result; if this is a different operation, ask the user how to proceed"
    )
}

/// Added to the message of the call whose outcome just became unknown.
pub fn held_note(key: &str, dedupes: bool) -> String {
    if dedupes {
        format!(
            "The request may have reached the upstream; it deduplicates on Idempotency-Key, so retrying with the same key ('{key}') is safe."
        )
    } else {
        format!(
            "The write may have reached the upstream: its outcome is unknown, so idempotency key '{key}' is now held and no retry will send it again. Do not retry it under another key; tell the user the outcome must be checked (operators see it in `mcpd idempotency list --held`)."
        )
    }
}
