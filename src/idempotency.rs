//! Idempotency: one key, one upstream write.
//!
//! Owns the meaning of the `idem:` keys. A call with a key first claims it in the state
//! store (atomically, durably, before anything is sent); a repeat while the first is in
//! flight is refused, and a repeat after it finished gets the stored outcome back without
//! reaching the upstream. Keys are per tool and per actor: one agent can never replay
//! another's result by guessing its key.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Idem, Store, StoreError, ns};

/// The longest key accepted (it is also sent upstream as a header).
const MAX_KEY: usize = 200;

/// Time a claim outlives the call's own timeout before a retry may take it over.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// A claimed key: the caller must send the request, then [`finish`] or [`abandon`].
#[derive(Debug)]
pub struct Claim {
    /// The key as the client and the upstream see it.
    pub key: String,
    store_key: String,
    ttl: Duration,
}

/// What [`begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key is ours: send the request.
    Claimed(Claim),
    /// A call with this key finished: its outcome, to return as is.
    Replay(Stored),
    /// A call with this key is still in flight.
    InFlight(String),
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
    /// A digest of the arguments it ran with: a key reused with other arguments is an
    /// error, not a replay of something else.
    pub args: String,
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

/// Claims `key` for one call of `tool` by `actor`. `timeout` is the call's own timeout
/// (with retries): a claim whose holder died lapses after it plus a margin.
///
/// # Errors
/// Only a failing store.
pub async fn begin(
    store: &dyn Store,
    tool: &str,
    actor: &str,
    key: String,
    timeout: Duration,
    ttl: Duration,
) -> Result<Begin, StoreError> {
    let store_key = format!("{}{tool}:{actor}:{key}", ns::IDEM);
    match store.idem_begin(&store_key, timeout + CLAIM_MARGIN).await? {
        Idem::Started => Ok(Begin::Claimed(Claim {
            key,
            store_key,
            ttl,
        })),
        Idem::InFlight => Ok(Begin::InFlight(key)),
        Idem::Done(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => Ok(Begin::Replay(stored)),
            Err(_) => Err(StoreError::Corrupt { key: store_key }),
        },
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

/// Releases a claim whose request never reached the upstream, or whose outcome is unknown
/// (a timeout, a 5xx): a retry with the same key may go, and carries the same
/// `Idempotency-Key` so the upstream can recognise it.
pub async fn abandon(store: &dyn Store, claim: &Claim) {
    if let Err(e) = store.idem_abandon(&claim.store_key).await {
        tracing::warn!(error = %e, "could not release an idempotency claim; it lapses on its own");
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
mod tests {
    use super::*;

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_saying_what_a_key_may_hold() {
        assert_eq!(check_key("order-42"), Ok(()));
        for bad in ["", "tab\there", &"k".repeat(MAX_KEY + 1)] {
            assert_eq!(check_key(bad), Err(IdempotencyError::InvalidKey), "{bad}");
        }
        assert_eq!(
            IdempotencyError::InvalidKey.to_string(),
            "idempotency key must be 1 to 200 printable ASCII characters (it is sent as the Idempotency-Key header)"
        );
    }
}
