//! Idempotency: one key, one upstream write.
//!
//! Owns the meaning of the `idem:` keys. A call with a key first claims it in the state
//! store (atomically, durably, before anything is sent); a repeat while the first is in
//! flight is refused, and a repeat after it finished gets the stored outcome back without
//! reaching the upstream. A call whose outcome is unknown (a timeout, a reset or a 5xx
//! after the request went out, or an mcpd that died holding the claim) **holds** its key:
//! repeats are refused with what is known, and the key is never sent again unless the
//! upstream deduplicates on `Idempotency-Key`, a reconcile request proves the write did
//! not land, or an operator resolves it ([`operator`]). Keys are per tool and, by
//! default, per actor (one agent can never replay another's result by guessing its key);
//! a tool may declare `scope: tool` for business keys every actor shares.
//!
//! It decides nothing about which calls are keyed (the engine does) and sends nothing.
//! The words users read are in `words.rs`.

pub mod operator;
mod words;

pub use words::{conflict, held_note, in_flight, unknown};

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{AllOrNone, Idem, IdemClaim, Incr, Store, StoreError, ns};

/// The longest key accepted (it is also sent upstream as a header).
const MAX_KEY: usize = 200;

/// Time a claim's lease outlives the call's own time budget (its timeout for every
/// attempt, with backoff): covers the store writes around the send. After the lease the
/// claim has lapsed and its outcome is unknown.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// The store key's owner part for a key every actor shares (`scope: tool`).
const SHARED: &str = "*";

/// Whose key it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each actor has its own keys (the default): one actor's key never replays or
    /// blocks another's.
    #[default]
    Actor,
    /// One key space for the tool: two actors retrying one business key (an order
    /// reference) make one write, and the second gets the first's result.
    Tool,
}

/// A claimed key: the caller must send the request, then [`finish`], [`hold`] or
/// [`abandon`].
#[derive(Debug)]
pub struct Claim {
    /// The key as the client and the upstream see it.
    pub key: String,
    store_key: String,
    ttl: Duration,
}

/// What the holder of a claim says about itself (stored with the claim, shown to
/// repeats and operators).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ClaimInfo {
    /// The idempotency key.
    #[serde(default)]
    pub key: String,
    /// Who made the call.
    #[serde(default)]
    pub actor: String,
    /// The call's trace id.
    #[serde(default)]
    pub trace_id: String,
    /// The digest of its arguments.
    #[serde(default)]
    pub args: String,
    /// When it claimed the key (Unix ms).
    #[serde(default)]
    pub at_ms: u64,
}

/// What is known of a call whose outcome is unknown: its claim, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Held {
    /// The call that held the key.
    #[serde(flatten)]
    pub call: ClaimInfo,
    /// What happened, e.g. `did not answer within 5000ms`.
    pub why: String,
    /// The upstream's status, when it answered (a 5xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// What [`begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key is ours: send the request.
    Claimed(Claim),
    /// A call with this key finished: its outcome, to return as is.
    Replay(Stored),
    /// A call with this key is still in flight; its lease lapses in `lapses_in`.
    InFlight {
        /// Time until the holder's lease lapses.
        lapses_in: Duration,
        /// The holder.
        by: ClaimInfo,
    },
    /// A call with this key ended with its outcome unknown: the key is held.
    Unknown(Held),
}

/// A finished call's outcome, as stored under its key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    /// The upstream's status.
    pub status: u16,
    /// The structured result, when the call succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Value>,
    /// The error message, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trace id of the call that did the write.
    pub trace_id: String,
    /// A digest of the arguments it ran with: a key reused with other arguments is a
    /// conflict, not a replay of something else.
    pub args: String,
    /// Who made the call (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When the call claimed the key (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The key, as the client and the upstream saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How the outcome became known when it was not the upstream's reply: an
    /// operator's resolution, or a reconcile request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_by: Option<String>,
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// Empty, too long, or not printable ASCII.
    #[error(
        "idempotency key must be 1 to {MAX_KEY} printable ASCII characters (it is sent as the Idempotency-Key header)"
    )]
    InvalidKey,
}

/// Checks a key the client sent or a template rendered.
///
/// # Errors
/// Says what a key may hold.
pub fn check_key(key: &str) -> Result<(), IdempotencyError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(IdempotencyError::InvalidKey)
    }
}

/// How long a claim's holder is taken to be alive: every attempt's timeout, the backoff
/// between them, and a margin.
pub fn lease(timeout: Duration, retries: u8) -> Duration {
    let attempts = u32::from(retries) + 1;
    let backoff: u64 = (1..attempts).map(|a| 50u64 << a.min(6)).sum();
    timeout * attempts + Duration::from_millis(backoff) + CLAIM_MARGIN
}

/// The store key of `key` for `tool`, in `scope`, called by `actor`.
pub fn store_key(tool: &str, scope: Scope, actor: &str, key: &str) -> String {
    let owner = match scope {
        Scope::Actor => actor,
        Scope::Tool => SHARED,
    };
    format!("{}{tool}:{owner}:{key}", ns::IDEM)
}

/// Claims `info.key` for one call of `tool` (store key from [`store_key`]): the claim
/// lasts `lease` (see [`lease`]), a settled outcome `ttl`. With `retake`, a held key is
/// taken over instead of reported (the caller may send again: the upstream
/// deduplicates, or a reconcile request proved the write did not land).
///
/// # Errors
/// Only a failing store.
pub async fn begin(
    store: &dyn Store,
    store_key: String,
    info: &ClaimInfo,
    lease: Duration,
    ttl: Duration,
    retake: bool,
) -> Result<Begin, StoreError> {
    let claim = Claiming { lease, ttl, retake };
    Ok(begin_counted(store, store_key, info, claim, &[]).await?.0)
}

/// How long a claim lasts, for [`begin_counted`] (as the arguments of [`begin`]).
#[derive(Debug, Clone, Copy)]
pub struct Claiming {
    /// How long the holder is taken to be alive.
    pub lease: Duration,
    /// How long a settled outcome is kept.
    pub ttl: Duration,
    /// Take a held key over.
    pub retake: bool,
}

/// [`begin`], counting the call's limits (`incs`) in the same store write when the key
/// is claimed ([`Store::idem_claim_counted`]). The second part is what was counted:
/// `None` when the key was not claimed; a refusal means the key was not claimed either.
///
/// # Errors
/// Only a failing store.
pub async fn begin_counted(
    store: &dyn Store,
    store_key: String,
    info: &ClaimInfo,
    c: Claiming,
    incs: &[Incr],
) -> Result<(Begin, Option<AllOrNone>), StoreError> {
    let bytes = serde_json::to_vec(info).unwrap_or_default();
    let claim = IdemClaim {
        claim: &bytes,
        lease: c.lease,
        hold: c.ttl,
        retake: c.retake,
    };
    let (ttl, corrupt) = (c.ttl, |store_key: &str| StoreError::Corrupt {
        key: store_key.to_owned(),
    });
    let (idem, counted) = store.idem_claim_counted(&store_key, &claim, incs).await?;
    let begun = match idem {
        Idem::Started => Begin::Claimed(Claim {
            key: info.key.clone(),
            store_key,
            ttl,
        }),
        Idem::InFlight { lapses_in, claim } => Begin::InFlight {
            lapses_in,
            by: serde_json::from_slice(&claim).unwrap_or_default(),
        },
        Idem::Lapsed(claim) => Begin::Unknown(lapsed(&claim)),
        Idem::Held(bytes) => {
            Begin::Unknown(serde_json::from_slice(&bytes).map_err(|_| corrupt(&store_key))?)
        }
        Idem::Done(bytes) => {
            Begin::Replay(serde_json::from_slice(&bytes).map_err(|_| corrupt(&store_key))?)
        }
    };
    Ok((begun, counted))
}

/// What a lapsed claim means: its holder never said how the call ended.
fn lapsed(claim: &[u8]) -> Held {
    Held {
        call: serde_json::from_slice(claim).unwrap_or_default(),
        why: "was still in flight when the mcpd running it stopped (or lost its state store), so it may have been sent".to_owned(),
        status: None,
    }
}

/// Stores the outcome of the call that held `claim`, durably, before it is answered.
///
/// # Errors
/// Only a failing store.
pub async fn finish(store: &dyn Store, claim: &Claim, stored: &Stored) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(stored).unwrap_or_default();
    store.idem_finish(&claim.store_key, &bytes, claim.ttl).await
}

/// Holds `claim`'s key: the call's outcome is unknown, so a repeat is refused with
/// `held` instead of sent, for the key's TTL (or until an operator resolves it).
///
/// # Errors
/// Only a failing store.
pub async fn hold(store: &dyn Store, claim: &Claim, held: &Held) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(held).unwrap_or_default();
    store.idem_hold(&claim.store_key, &bytes, claim.ttl).await
}

/// Releases a claim whose request never reached the upstream (or whose upstream
/// deduplicates on `Idempotency-Key`): a retry with the same key may go at once.
pub async fn abandon(store: &dyn Store, claim: &Claim) {
    if let Err(e) = store.idem_abandon(&claim.store_key).await {
        tracing::warn!(error = %e, "could not release an idempotency claim; it lapses on its own and is then held");
    }
}

/// A stable digest of a call's arguments (object keys are sorted by serde_json's map):
/// stored with a key's outcome, so a key reused with other arguments is caught, and
/// counted by the `repeats` stop rule.
pub fn digest(args: &Value) -> String {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(args).unwrap_or_default();
    let hash = sha2::Sha256::digest(&bytes);
    hex::encode(hash.get(..12).unwrap_or_default())
}

#[cfg(test)]
mod tests;
