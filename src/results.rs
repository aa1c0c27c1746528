//! Results kept for their caller: a tool result too large to send inline is stored
//! under `result:<actor>:<id>` with an expiry, and read back as the resource
//! `mcpd://results/<id>`.
//!
//! Owns those records: what a record holds (the tool, the result as it would have been
//! sent, already redacted, and its MIME type), making an id, and that only the actor
//! who made the call can read or list it (the actor is part of the key, so another
//! actor's read finds nothing; an id is 32 hex digits, so it cannot reach into another
//! actor's keys). It decides nothing about when a result is too large (the engine does)
//! and never redacts (what it is given is already redacted).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, ns};

/// The URI prefix of kept results.
pub const URI_PREFIX: &str = "mcpd://results/";

/// One kept result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The tool that produced it.
    pub tool: String,
    /// Its MIME type (`application/json` for a JSON result).
    pub mime: String,
    /// The result as text (JSON for a JSON result), redacted as it would have been sent.
    pub text: String,
    /// When it was made (Unix milliseconds).
    pub created_ms: u64,
}

/// A kept result in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its URI.
    pub uri: String,
    /// The record.
    pub kept: Kept,
}

/// The URI of the result with id `id`.
pub fn uri(id: &str) -> String {
    format!("{URI_PREFIX}{id}")
}

/// The id in a kept result's URI, when `uri` is one (and the id has the form ids have).
pub fn id_of(uri: &str) -> Option<&str> {
    let id = uri.strip_prefix(URI_PREFIX)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

fn key(actor: &str, id: &str) -> String {
    format!("{}{actor}:{id}", ns::RESULT)
}

/// Keeps `kept` for `actor` for `ttl`; returns its URI.
///
/// # Errors
/// A failing store.
pub async fn keep(
    store: &dyn Store,
    actor: &str,
    kept: &Kept,
    ttl: Duration,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let bytes = serde_json::to_vec(kept).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    store.put(&key(actor, &id), &bytes, ttl).await?;
    Ok(uri(&id))
}

/// The result at `uri` if `actor` made it and it has not expired; `None` for any other
/// URI, another actor's result, or an expired one (they look the same on purpose).
///
/// # Errors
/// A failing store.
pub async fn read(store: &dyn Store, actor: &str, uri: &str) -> Result<Option<Kept>, StoreError> {
    let Some(id) = id_of(uri) else {
        return Ok(None);
    };
    let Some(bytes) = store.get(&key(actor, id)).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Every live result `actor` made.
///
/// # Errors
/// A failing store.
pub async fn list(store: &dyn Store, actor: &str) -> Result<Vec<Listed>, StoreError> {
    let prefix = format!("{}{actor}:", ns::RESULT);
    let mut out = Vec::new();
    for (k, v) in store.scan_prefix(&prefix).await? {
        let Some(id) = k.strip_prefix(&prefix) else {
            continue;
        };
        // Another actor whose subject extends this one's ("a" and "a:b") shares the
        // prefix; an id never holds ':'.
        if id.contains(':') {
            continue;
        }
        if let Ok(kept) = serde_json::from_slice::<Kept>(&v) {
            out.push(Listed { uri: uri(id), kept });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::util::Clock;
    use std::time::SystemTime;

    fn kept(text: &str) -> Kept {
        Kept {
            tool: "orders.export".into(),
            mime: "application/json".into(),
            text: text.into(),
            created_ms: 1,
        }
    }

    #[tokio::test]
    async fn only_the_actor_who_made_a_result_reads_or_lists_it_and_only_until_it_expires() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = MemoryStore::with_clock(clock.clone());
        let ana = keep(&store, "user:ana", &kept("{}"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(ana.starts_with(URI_PREFIX));
        assert_eq!(
            read(&store, "user:ana", &ana).await.unwrap(),
            Some(kept("{}"))
        );
        // Another actor, one whose subject extends ana's, and a made-up id find nothing.
        for other in ["user:bob", "user:ana:x", "user", ""] {
            assert_eq!(read(&store, other, &ana).await.unwrap(), None, "{other}");
            assert!(list(&store, other).await.unwrap().is_empty(), "{other}");
        }
        let id = id_of(&ana).unwrap();
        for forged in [
            format!("{URI_PREFIX}../{id}"),
            format!("{URI_PREFIX}{id}:x"),
            format!("{URI_PREFIX}user:ana:{id}"),
            "mcpd://results/".to_owned(),
        ] {
            assert_eq!(id_of(&forged), None, "{forged}");
            assert_eq!(read(&store, "user:ana", &forged).await.unwrap(), None);
        }
        let listed = list(&store, "user:ana").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uri, ana);
        clock.advance(Duration::from_secs(61));
        assert_eq!(read(&store, "user:ana", &ana).await.unwrap(), None);
        assert!(list(&store, "user:ana").await.unwrap().is_empty());
    }
}
