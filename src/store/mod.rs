//! The state store: everything that must outlive a call, behind one trait.
//!
//! Idempotency records, rate and budget counters and elevation grants live here. The
//! engine holds an `Arc<dyn Store>` and never knows which backend it has: the embedded
//! file ([`embedded`], the default, nothing to install), an in-process map ([`memory`],
//! for one-shot commands and tests), and later Redis for several replicas. This module
//! owns the trait, its value types, its errors and [`open`]; it must not know what the
//! records mean to the engine (a key is opaque bytes of text, a value opaque bytes).
//!
//! Every operation is atomic on its key, and every write is durable before its future
//! completes, with two exceptions the embedded store takes: lazy counters ([`Incr::lazy`]),
//! which a crash may lose the last [`SYNC_WITHIN`] of, and outcomes
//! ([`Store::idem_finish`]), which survive a killed process but not a power loss within
//! [`SYNC_WITHIN`]. The trait asks for nothing Redis cannot do atomically in one round trip:
//! a short Lua script where a read decides a write ([`Store::idem_claim`],
//! [`Store::incr_within`], [`Store::idem_abandon`]), `INCRBY` with `PEXPIRE`, `SET PX`,
//! `GET`, `DEL`, `SCAN MATCH`.
//!
//! Keys start with a namespace naming their owner: [`ns::IDEM`], [`ns::RATE`],
//! [`ns::BUDGET`], [`ns::GRANT`], [`ns::BREAKER`]. Every entry has an expiry; an expired entry is
//! invisible at once and its space is reclaimed by [`Store::sweep`], which each backend
//! also runs on its own (see its module).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod embedded;
pub mod memory;
mod record;
pub mod redis;
pub mod shared;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_redis;

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
pub use shared::FileStore;

/// Key namespaces: the prefix of every key says which part of mcpd owns it.
pub mod ns {
    /// Idempotency records: `idem:<tool>:<actor>:<idempotency key>`.
    pub const IDEM: &str = "idem:";
    /// Rate counters: `rate:<tool>:<actor>`.
    pub const RATE: &str = "rate:";
    /// Budget counters: `budget:<budget name>:<actor>`.
    pub const BUDGET: &str = "budget:";
    /// Elevation grants: `grant:<actor>:<grant id>`.
    pub const GRANT: &str = "grant:";
    /// Results too large to send inline, kept for their caller: `result:<actor>:<id>`.
    pub const RESULT: &str = "result:";
    /// Circuit breakers: `breaker:<tool:ID|upstream:NAME>:open` and its counters.
    pub const BREAKER: &str = "breaker:";
    /// MCP sessions over HTTP: `session:<Mcp-Session-Id>` (the client's `initialize`).
    pub const SESSION: &str = "session:";
}

/// What [`Store::idem_claim`] found under an idempotency key (or [`Store::idem_list`]
/// and [`Store::idem_resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idem {
    /// No live record (or a retaken one): this caller now holds the key and must send
    /// the request, then call [`Store::idem_finish`], [`Store::idem_hold`] (outcome
    /// unknown) or [`Store::idem_abandon`] (never sent).
    Started,
    /// Another call holds the key and its lease has not lapsed: refuse, the caller may
    /// retry. `claim` is what the holder wrote about itself.
    InFlight {
        /// Time until the holder's lease lapses.
        lapses_in: Duration,
        /// The holder's claim bytes.
        claim: Vec<u8>,
    },
    /// A claim whose lease lapsed before its holder settled it (the holder died, or lost
    /// the store): the outcome is unknown. Holds the claim bytes.
    Lapsed(Vec<u8>),
    /// A call with this key ended with its outcome unknown (stored by
    /// [`Store::idem_hold`]).
    Held(Vec<u8>),
    /// A call with this key completed: replay its stored result.
    Done(Vec<u8>),
}

/// A claim on an idempotency key, for [`Store::idem_claim`].
#[derive(Debug, Clone, Copy)]
pub struct IdemClaim<'a> {
    /// What the holder says about itself (opaque to the store), returned to callers
    /// that find the key in flight or lapsed.
    pub claim: &'a [u8],
    /// How long the holder is taken to be alive; after it the claim has lapsed.
    pub lease: Duration,
    /// How long the record lives in all (a lapsed claim stays, unknown, until then).
    pub hold: Duration,
    /// Take the key over when it is [`Idem::Lapsed`] or [`Idem::Held`] (the caller may
    /// send again: the upstream deduplicates, or a reconcile request proved the write
    /// did not land), instead of reporting it.
    pub retake: bool,
}

/// A fixed-window counter after an increment, or as it stood when one was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The total counted in the current window.
    pub total: u64,
    /// When the window ends and the counter starts again from zero.
    pub resets_in: Duration,
}

/// The outcome of [`Store::incr_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted: the new total is within the limit.
    Admitted(Counter),
    /// Not counted: the total would have passed the limit. The counter is unchanged; its
    /// `resets_in` says when to retry (zero when nothing is counted yet, which happens
    /// only when one increment alone is over the limit).
    Refused(Counter),
}

/// One counter of [`Store::incr_all`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Incr {
    /// The counter's key.
    pub key: String,
    /// What to add.
    pub by: u64,
    /// The most the total may reach, if any.
    pub limit: Option<u64>,
    /// The window a new counter opens (as [`Store::incr`]).
    pub window: Duration,
    /// Kept without a disk sync of its own: a crash (kill -9, power loss) may lose the
    /// increments of the last [`SYNC_WITHIN`]. Meant for counters whose loss only
    /// lets a few more calls through (rates, stop rules), never for budgets. A write
    /// that holds any durable part is durable as a whole; backends that sync every
    /// write (Redis, as configured) may ignore it. The embedded store counts it in the
    /// memory of the process that owns the file (exact: every call passes there) and
    /// writes it to the file within [`SYNC_WITHIN`]. A key is always lazy or never.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

/// The longest a lazy write ([`Incr::lazy`]) or a journaled outcome
/// ([`Store::idem_finish`]) of the embedded store stays unsynced: its writer syncs the
/// file within this of the first such write after a sync.
pub const SYNC_WITHIN: Duration = Duration::from_secs(1);

/// The outcome of [`Store::incr_all`]: every counter after the increment, or the index
/// of the first one that would pass its limit and that counter as it stands (nothing was
/// counted).
pub type AllOrNone = Result<Vec<Counter>, (usize, Counter)>;

/// The state store. Object safe: the engine holds an `Arc<dyn Store>`.
///
/// Every key is non-empty and every duration at least one millisecond; anything else is
/// [`StoreError::InvalidArgument`]. Writes are durable when their future completes (but
/// see [`Incr::lazy`] and [`Store::idem_finish`]). No
/// read returns an expired entry.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Claims an idempotency key, atomically: of concurrent callers on a free key exactly
    /// one gets [`Idem::Started`]. The claim's lease ends after `claim.lease`: later
    /// callers then get [`Idem::Lapsed`] (the outcome is unknown), not the key, until
    /// the record ends after `claim.hold` (or `retake` takes it over).
    async fn idem_claim(&self, key: &str, claim: &IdemClaim<'_>) -> Result<Idem, StoreError>;

    /// A claim that simply ends after `in_flight_ttl` (lease and record alike), with no
    /// claim bytes: [`Store::idem_claim`] for callers that need no lapsed state.
    async fn idem_begin(&self, key: &str, in_flight_ttl: Duration) -> Result<Idem, StoreError> {
        let claim = IdemClaim {
            claim: &[],
            lease: in_flight_ttl,
            hold: in_flight_ttl,
            retake: false,
        };
        self.idem_claim(key, &claim).await
    }

    /// Stores that the call holding `key` ended with its outcome unknown, for `ttl`:
    /// later claims get [`Idem::Held`] with `held`.
    async fn idem_hold(&self, key: &str, held: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Settles a held key or a lapsed claim, as an operator decided: `None` removes it
    /// (the write was not made; the next call sends it), `Some((result, ttl))` stores
    /// `result` as the key's outcome. Any other record is left alone. Returns what was
    /// found (`None`: nothing live).
    async fn idem_resolve(
        &self,
        key: &str,
        to: Option<(&[u8], Duration)>,
    ) -> Result<Option<Idem>, StoreError>;

    /// Every live idempotency record whose key starts with `prefix`, in key order, with
    /// what it means now and when it expires. For operators (`mcpd idempotency list`).
    async fn idem_list(&self, prefix: &str) -> Result<Vec<(String, Idem, Duration)>, StoreError>;

    /// Stores a completed call's result under its key for `ttl`; later
    /// [`Store::idem_claim`] calls get [`Idem::Done`] with these bytes. The embedded
    /// store journals it instead of syncing it: it survives a killed process, and a
    /// power loss within [`SYNC_WITHIN`] leaves the key's claim, which lapses (the
    /// outcome is then unknown, never sent again).
    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Releases a key claimed by [`Store::idem_claim`] whose request was never sent (or
    /// whose upstream deduplicates), so a retry can start at once. A held or completed
    /// record is kept. Returns whether a claim was released.
    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError>;

    /// Adds `by` to a fixed-window counter and returns it. The window opens at the first
    /// increment and lasts `window`; later increments do not extend it, and after it the
    /// count starts again from zero.
    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError>;

    /// Adds `by` to a fixed-window counter (as [`Store::incr`]) only if the total stays
    /// at or below `limit`; otherwise changes nothing. Atomic: concurrent callers never
    /// push the total past the limit.
    async fn incr_within(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window: Duration,
    ) -> Result<Admission, StoreError>;

    /// Adds to several fixed-window counters at once, all or none: when any would pass
    /// its limit, none changes. Atomic across the keys, and one durable write: a call
    /// counted against stop rules, rates and budgets costs one round trip, and a refusal
    /// by one leaves the others uncharged.
    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError>;

    /// Claims an idempotency key ([`Store::idem_claim`]) and, only when the claim is
    /// [`Idem::Started`], counts `incs` all or none ([`Store::incr_all`]), as one atomic
    /// write: a keyed call is claimed and counted in one durable write (one disk sync
    /// where the backend can). When the counters refuse, the key is not claimed (the
    /// answer is still `Started`, with the refusal: nothing changed). The second part
    /// is `None` when the key was not claimed or `incs` is empty.
    async fn idem_claim_counted(
        &self,
        key: &str,
        claim: &IdemClaim<'_>,
        incs: &[Incr],
    ) -> Result<(Idem, Option<AllOrNone>), StoreError> {
        claim_then_count(self, key, claim, incs).await
    }

    /// The counter's total in its current window; zero when there is none.
    async fn get_counter(&self, key: &str) -> Result<u64, StoreError>;

    /// Stores a value for `ttl`, replacing whatever the key held.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// The value stored by [`Store::put`], unless it expired or was deleted.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the key, whatever it holds. Returns whether a live entry was removed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Every live value (entries written by [`Store::put`]) whose key starts with
    /// `prefix`, in key order. Meant for small sets, such as one actor's grants.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Removes expired entries now and returns how many.
    async fn sweep(&self) -> Result<usize, StoreError>;
}

/// [`Store::idem_claim_counted`] as two writes, for backends without one: the claim,
/// then the counters; a refusal releases the claim again ([`Store::idem_abandon`]), so
/// a key taken over with `retake` is then free rather than held as it was.
pub(crate) async fn claim_then_count<S: Store + ?Sized>(
    store: &S,
    key: &str,
    claim: &IdemClaim<'_>,
    incs: &[Incr],
) -> Result<(Idem, Option<AllOrNone>), StoreError> {
    let idem = store.idem_claim(key, claim).await?;
    if idem != Idem::Started || incs.is_empty() {
        return Ok((idem, None));
    }
    let counted = match store.incr_all(incs).await {
        Ok(counted) => counted,
        Err(e) => {
            let _ = store.idem_abandon(key).await;
            return Err(e);
        }
    };
    if counted.is_err() {
        store.idem_abandon(key).await?;
    }
    Ok((idem, Some(counted)))
}

/// Opens a local store a spec names: `file:PATH` or a bare path (the embedded store in
/// that file), `memory:` (in-process, gone when mcpd exits). `redis://…` goes through
/// [`connect`].
pub fn open(spec: &str) -> Result<Arc<dyn Store>, StoreError> {
    let spec = spec.trim();
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return Err(StoreError::RedisUnavailable);
    }
    if spec == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    if path.is_empty() || (path.contains("://") && !spec.starts_with("file:")) {
        return Err(StoreError::BadSpec(spec.to_owned()));
    }
    Ok(Arc::new(EmbeddedStore::open(Path::new(path))?))
}

/// Opens the store a spec names, for a running mcpd: as [`open`], except that a state
/// file is shared with the other mcpd processes on this machine ([`FileStore`]), and
/// `redis://[user:password@]host:port[/db]` connects to Redis ([`redis::RedisStore`]).
///
/// # Errors
/// As [`open`]; a locked file whose owner does not answer.
pub async fn connect(spec: &str) -> Result<Arc<dyn Store>, StoreError> {
    let spec = spec.trim();
    if spec.starts_with("redis://") {
        return Ok(Arc::new(redis::RedisStore::connect(spec).await?));
    }
    if spec == "memory:" || (spec.contains("://") && !spec.starts_with("file:")) {
        return open(spec);
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    if path.is_empty() {
        return Err(StoreError::BadSpec(spec.to_owned()));
    }
    Ok(Arc::new(FileStore::open(Path::new(path)).await?))
}

/// Why the state store failed. Each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another handle in this one) has the state file open.
    #[error(
        "state file '{}' is in use by another process: the embedded store allows one mcpd per file; give each instance its own state file, or share state between replicas with the redis backend",
        .path.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
    },
    /// The state file could not be opened or created.
    #[error("cannot open state file '{}': {source}", .path.display())]
    Open {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Arc<redb::Error>,
    },
    /// Reading or writing the state file failed.
    #[error("state store i/o failed: {0}; check the disk that holds the state file")]
    Storage(#[source] Arc<redb::Error>),
    /// A key holds a different kind of entry than the operation expects.
    #[error(
        "state key '{key}' holds {found}, not {wanted}: keys of different kinds must not share a name"
    )]
    WrongKind {
        /// The key.
        key: String,
        /// What it holds.
        found: &'static str,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// A stored record could not be decoded.
    #[error(
        "state key '{key}' holds a record this mcpd cannot read (damaged, or written by a newer version); delete the key or move the state file aside"
    )]
    Corrupt {
        /// The key.
        key: String,
    },
    /// A caller passed an empty key or a duration under one millisecond.
    #[error("invalid state store call: {0}")]
    InvalidArgument(String),
    /// The spec names the Redis backend where only local stores can be opened.
    #[error("the redis backend is opened with store::connect (it needs the async runtime)")]
    RedisUnavailable,
    /// The spec is neither a path nor a known scheme.
    #[error("unknown state store '{0}': use 'file:PATH', a path, or 'memory:'")]
    BadSpec(String),
    /// The store's writer or a blocking task stopped (a bug or a panic in the database).
    #[error("the state store stopped ({0}); see the log, then restart mcpd")]
    Stopped(String),
    /// A networked store (Redis) did not answer: down, unreachable, or too slow. mcpd
    /// reconnects by itself; nothing needs restarting.
    #[error(
        "the state store is unreachable ({0}); mcpd retries it on every call and resumes by itself when it answers"
    )]
    Unreachable(String),
}

impl StoreError {
    fn storage(e: impl Into<redb::Error>) -> Self {
        Self::Storage(Arc::new(e.into()))
    }
}

/// Checks what every backend requires of a key.
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("the key is empty".into()));
    }
    Ok(())
}

/// A duration as whole milliseconds, at least one.
fn millis(what: &str, d: Duration) -> Result<u64, StoreError> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(StoreError::InvalidArgument(format!(
            "{what} must be at least 1 ms, got {d:?}"
        )));
    }
    Ok(ms)
}
