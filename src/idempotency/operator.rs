//! What operators do with keys, beside a running mcpd (through the same state store):
//! list them (`mcpd idempotency list`) and settle a held one once they have checked the
//! upstream (`mcpd idempotency resolve`).
//!
//! Owns reading records back into something a person can act on, and the resolution's
//! rules: only a held key (or a lapsed claim) is resolved; a key in flight or with an
//! outcome is left alone. It prints nothing (the CLI does).

use std::time::Duration;

use serde_json::json;

use super::{ClaimInfo, Held, Stored};
use crate::store::{Idem, Store, StoreError, ns};

/// One key as an operator sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key in the state store.
    pub store_key: String,
    /// The tool id.
    pub tool: String,
    /// Whose key: an actor's subject, or `*` for a key the tool's actors share.
    pub owner: String,
    /// The idempotency key.
    pub key: String,
    /// What it means now.
    pub state: State,
    /// The call that claimed it (as much as is recorded).
    pub call: ClaimInfo,
    /// Time until the record is forgotten.
    pub expires_in: Duration,
}

/// What a key means now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A call holds it; its lease lapses in this long.
    InFlight(Duration),
    /// Its outcome is unknown: held, with why.
    Held(String),
    /// Its outcome is stored: the status, and who settled it when not the upstream.
    Done(u16, Option<String>),
}

impl State {
    /// A word for listings.
    pub fn word(&self) -> &'static str {
        match self {
            Self::InFlight(_) => "in-flight",
            Self::Held(_) => "held",
            Self::Done(..) => "done",
        }
    }
}

/// Every live key, of `tool` or of all tools, in key order. Unreadable records are left
/// out.
///
/// # Errors
/// Only a failing store.
pub async fn list(store: &dyn Store, tool: Option<&str>) -> Result<Vec<Entry>, StoreError> {
    let prefix = match tool {
        Some(t) => format!("{}{t}:", ns::IDEM),
        None => ns::IDEM.to_owned(),
    };
    let found = store.idem_list(&prefix).await?;
    Ok(found
        .into_iter()
        .filter_map(|(store_key, idem, expires_in)| entry(store_key, idem, expires_in))
        .collect())
}

fn entry(store_key: String, idem: Idem, expires_in: Duration) -> Option<Entry> {
    let (state, call) = match idem {
        Idem::Started => return None,
        Idem::InFlight { lapses_in, claim } => (
            State::InFlight(lapses_in),
            serde_json::from_slice(&claim).unwrap_or_default(),
        ),
        Idem::Lapsed(claim) => {
            let held = super::lapsed(&claim);
            (State::Held(held.why), held.call)
        }
        Idem::Held(bytes) => {
            let held: Held = serde_json::from_slice(&bytes).ok()?;
            (State::Held(held.why), held.call)
        }
        Idem::Done(bytes) => {
            let s: Stored = serde_json::from_slice(&bytes).ok()?;
            let call = ClaimInfo {
                key: s.key.clone().unwrap_or_default(),
                actor: s.actor.clone().unwrap_or_default(),
                trace_id: s.trace_id.clone(),
                args: s.args.clone(),
                at_ms: s.at_ms.unwrap_or(0),
            };
            (State::Done(s.status, s.settled_by), call)
        }
    };
    let rest = store_key.strip_prefix(ns::IDEM)?;
    // Tool ids hold no ':'; owners (subjects) may, so the key is told apart by the
    // record's own copy of it.
    let (tool, rest) = rest.split_once(':')?;
    let (owner, key) = match rest.strip_suffix(call.key.as_str()) {
        Some(owner) if !call.key.is_empty() && owner.ends_with(':') => {
            (owner.trim_end_matches(':').to_owned(), call.key.clone())
        }
        _ => match rest.split_once(':') {
            Some((o, k)) => (o.to_owned(), k.to_owned()),
            None => (String::new(), rest.to_owned()),
        },
    };
    Some(Entry {
        tool: tool.to_owned(),
        owner,
        key,
        state,
        call,
        expires_in,
        store_key,
    })
}

/// What an operator found when they checked the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The write landed: repeats get a success.
    SentOk,
    /// It did not: the key is released, and the next call sends it.
    NotSent,
}

/// Why a key could not be resolved. Each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// No record of the key.
    #[error(
        "no record of idempotency key '{key}' for tool '{tool}' (it may have expired; `mcpd idempotency list --tool {tool}` shows the live ones)"
    )]
    NotFound {
        /// The key.
        key: String,
        /// The tool.
        tool: String,
    },
    /// The key is in flight: nothing to resolve yet.
    #[error(
        "idempotency key '{key}' is not held: a call is still in flight with it (its lease lapses in {}); wait, then look again",
        crate::util::duration::human(*.lapses_in)
    )]
    InFlight {
        /// The key.
        key: String,
        /// Time until the lease lapses.
        lapses_in: Duration,
    },
    /// The key has an outcome already.
    #[error(
        "idempotency key '{key}' is not held: its outcome is known (status {status}); nothing to resolve"
    )]
    Done {
        /// The key.
        key: String,
        /// The stored status.
        status: u16,
    },
    /// Several actors hold the key.
    #[error(
        "several actors hold idempotency key '{key}' ({}); name one with --actor",
        .owners.join(", ")
    )]
    Ambiguous {
        /// The key.
        key: String,
        /// Whose keys they are.
        owners: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves held key `key` of `tool` (of `owner`, when several hold it) as `to`,
/// recording `by` and the time `now_ms` in a `SentOk` result. Returns the entry as it
/// was.
///
/// # Errors
/// No such key, a key that is not held, several candidates, or a failing store.
pub async fn resolve(
    store: &dyn Store,
    tool: &str,
    key: &str,
    owner: Option<&str>,
    to: Resolution,
    by: &str,
    now_ms: u64,
) -> Result<Entry, ResolveError> {
    let candidates: Vec<Entry> = list(store, Some(tool))
        .await?
        .into_iter()
        .filter(|e| e.key == key && owner.is_none_or(|o| e.owner == o))
        .collect();
    let held: Vec<&Entry> = candidates
        .iter()
        .filter(|e| matches!(e.state, State::Held(_)))
        .collect();
    let entry = match (held.as_slice(), candidates.first()) {
        ([one], _) => (*one).clone(),
        ([], None) => {
            return Err(ResolveError::NotFound {
                key: key.to_owned(),
                tool: tool.to_owned(),
            });
        }
        ([], Some(e)) => return Err(not_held(e)),
        (many, _) => {
            return Err(ResolveError::Ambiguous {
                key: key.to_owned(),
                owners: many.iter().map(|e| e.owner.clone()).collect(),
            });
        }
    };
    let result = match to {
        Resolution::NotSent => None,
        Resolution::SentOk => Some(sent_ok(&entry, by, now_ms)),
    };
    let bytes = result.map(|r| serde_json::to_vec(&r).unwrap_or_default());
    let ttl = entry.expires_in.max(Duration::from_millis(1));
    let found = store
        .idem_resolve(&entry.store_key, bytes.as_deref().map(|b| (b, ttl)))
        .await?;
    // The record may have changed between the listing and the write.
    match found.and_then(|i| self::entry(entry.store_key.clone(), i, ttl)) {
        Some(now) if matches!(now.state, State::Held(_)) => Ok(entry),
        Some(now) => Err(not_held(&now)),
        None => Err(ResolveError::NotFound {
            key: key.to_owned(),
            tool: tool.to_owned(),
        }),
    }
}

fn not_held(e: &Entry) -> ResolveError {
    match &e.state {
        State::InFlight(lapses_in) => ResolveError::InFlight {
            key: e.key.clone(),
            lapses_in: *lapses_in,
        },
        State::Done(status, _) => ResolveError::Done {
            key: e.key.clone(),
            status: *status,
        },
        State::Held(_) => ResolveError::NotFound {
            key: e.key.clone(),
            tool: e.tool.clone(),
        },
    }
}

/// The outcome repeats get once an operator confirmed the write landed.
fn sent_ok(e: &Entry, by: &str, now_ms: u64) -> Stored {
    let settled = format!("operator {by}: sent-ok");
    Stored {
        status: 200,
        ok: Some(json!({
            "idempotency_key": e.key,
            "outcome": "sent",
            "detail": format!("this write's outcome was unknown; {by} checked the upstream and confirmed it landed. Its reply was not recorded: read the current state if you need it"),
            "resolved_at_ms": now_ms,
        })),
        error: None,
        trace_id: e.call.trace_id.clone(),
        args: e.call.args.clone(),
        actor: Some(e.call.actor.clone()).filter(|a| !a.is_empty()),
        at_ms: Some(e.call.at_ms).filter(|t| *t > 0),
        key: Some(e.key.clone()),
        settled_by: Some(settled),
    }
}
