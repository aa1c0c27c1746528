//! Circuit breakers: when too many calls to an upstream (or one tool) fail, refuse its
//! writes at once for a while instead of piling onto it.
//!
//! Owns the `breaker:` keys and what they mean. A breaker counts calls and failures
//! (a 5xx reply, a timeout, a failed connection) in fixed windows of `over` indexed by
//! the caller's clock, and estimates the last `over` as the current window plus the
//! previous one weighted by how much of it still falls inside (a sliding window). When
//! that estimate holds `min_calls` and `errors` of them failed, it stores an open record
//! (`breaker:KEY:open`: until when, and the counts that opened it); every replica
//! sharing the store then refuses until that time. The counters of a breaker carry the
//! time it last closed, so counting starts afresh after each opening. All times come
//! from the caller (`util::Clock`), never from the store, so tests move a manual clock.
//! It never sends anything and decides nothing about which calls count: the engine
//! reports each outcome.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::tool::BreakerSpec;
use crate::store::{Incr, Store, StoreError, ns};
use crate::util::duration::{human, parse as parse_duration};

/// `min_calls` when the file does not say.
const DEFAULT_MIN_CALLS: u64 = 20;

/// A compiled breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// What it guards: `tool` or `upstream`.
    pub kind: &'static str,
    /// The tool id or upstream name.
    pub name: String,
    /// The failed share that opens it, in (0, 1].
    pub threshold: f64,
    /// The window the share is measured over.
    pub over: Duration,
    /// The fewest calls in the window for the share to count.
    pub min_calls: u64,
    /// How long it stays open.
    pub open_for: Duration,
    /// Refuse reads too while open.
    pub refuse_reads: bool,
}

/// An open breaker, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// When it opened (Unix ms).
    pub opened_ms: u64,
    /// Until when it refuses (Unix ms).
    pub until_ms: u64,
    /// Calls in the window when it opened (estimated, rounded).
    pub calls: u64,
    /// Failures among them.
    pub errors: u64,
}

/// A breaker's state for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Calls go through; `generation` tags the counters (the time it last closed).
    Closed {
        /// The time it last closed (Unix ms), 0 if it never opened.
        generation: u64,
    },
    /// Calls are refused until `until_ms`.
    Open(Opened),
}

impl Breaker {
    /// Compiles a `breaker:` section of `kind` (`tool`, `upstream`) `name`, reporting
    /// every problem at its position in `path`.
    pub fn compile(
        path: &Path,
        spec: &BreakerSpec,
        kind: &'static str,
        name: &str,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let before = diags.len();
        let mut err = |pos, msg: String| {
            diags.push(Diagnostic::new(
                path,
                pos,
                format!("{kind} '{name}': breaker.{msg}"),
            ));
        };
        let threshold = match parse_share(&spec.errors.value) {
            Some(t) => t,
            None => {
                err(
                    spec.errors.pos,
                    format!(
                        "errors: '{}' is not a share of calls: write a percentage from 1% to 100%, e.g. 50%",
                        spec.errors.value
                    ),
                );
                1.0
            }
        };
        let mut duration =
            |field: &str, v: &crate::config::Located<String>| match parse_duration(&v.value) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    err(v.pos, format!("{field}: must be at least 1s"));
                    Duration::from_secs(1)
                }
                Err(e) => {
                    err(v.pos, format!("{field}: {e}"));
                    Duration::from_secs(1)
                }
            };
        let over = duration("over", &spec.over);
        let open_for = duration("open_for", &spec.open_for);
        let min_calls = spec.min_calls.as_ref().map_or(DEFAULT_MIN_CALLS, |m| {
            if m.value == 0 {
                err(m.pos, "min_calls: must be at least 1".to_owned());
            }
            m.value
        });
        (diags.len() == before).then(|| Self {
            kind,
            name: name.to_owned(),
            threshold,
            over,
            min_calls,
            open_for,
            refuse_reads: spec.refuse_reads,
        })
    }

    /// Its key for a call: `tool:ID`, `upstream:NAME`, or `upstream:NAME@REGION` for a
    /// call routed to a region (each region URL fails on its own).
    pub fn key(&self, region: Option<&str>) -> String {
        match (self.kind, region) {
            ("upstream", Some(r)) => format!("{}:{}@{r}", self.kind, self.name),
            _ => format!("{}:{}", self.kind, self.name),
        }
    }

    /// Whether the breaker under `key` is open now: one store read.
    ///
    /// # Errors
    /// The store failed.
    pub async fn status(
        &self,
        store: &dyn Store,
        key: &str,
        now_ms: u64,
    ) -> Result<Status, StoreError> {
        let Some(bytes) = store.get(&open_key(key)).await? else {
            return Ok(Status::Closed { generation: 0 });
        };
        let opened: Opened = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::Corrupt { key: open_key(key) })?;
        Ok(if now_ms < opened.until_ms {
            Status::Open(opened)
        } else {
            Status::Closed {
                generation: opened.until_ms,
            }
        })
    }

    /// Counts one call's outcome under `key` (counters of `generation`, from
    /// [`Self::status`] when the call began); opens the breaker when this failure tips
    /// the window over. Returns the opening, when this call opened it.
    ///
    /// # Errors
    /// The store failed.
    pub async fn observe(
        &self,
        store: &dyn Store,
        key: &str,
        generation: u64,
        failed: bool,
        now_ms: u64,
    ) -> Result<Option<Opened>, StoreError> {
        let over_ms = u64::try_from(self.over.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let bucket = now_ms / over_ms;
        let counter = |b: u64, what: &str| format!("{}{key}:{generation}:{b}:{what}", ns::BREAKER);
        // Kept for two windows: the current one and the one the estimate weighs in.
        let keep = self.over.saturating_mul(2);
        if !failed {
            let calls = Incr {
                key: counter(bucket, "calls"),
                by: 1,
                limit: None,
                window: keep,
                // A breaker's counts may lose their last second in a crash, as rates do.
                lazy: true,
            };
            store.incr_all(std::slice::from_ref(&calls)).await?.ok();
            return Ok(None);
        }
        let incs = [
            Incr {
                key: counter(bucket, "calls"),
                by: 1,
                limit: None,
                window: keep,
                lazy: true,
            },
            Incr {
                key: counter(bucket, "errors"),
                by: 1,
                limit: None,
                window: keep,
                // A breaker's counts may lose their last second in a crash, as rates do.
                lazy: true,
            },
        ];
        let now = match store.incr_all(&incs).await? {
            Ok(c) => c,
            // Nothing has a limit: never refused.
            Err(_) => return Ok(None),
        };
        let (calls, errors) = match now.as_slice() {
            [c, e] => (c.total, e.total),
            _ => return Ok(None),
        };
        let weight = 1.0 - (now_ms % over_ms) as f64 / over_ms as f64;
        let (mut calls, mut errors) = (calls as f64, errors as f64);
        if bucket > 0 {
            calls += weight * store.get_counter(&counter(bucket - 1, "calls")).await? as f64;
            errors += weight * store.get_counter(&counter(bucket - 1, "errors")).await? as f64;
        }
        if calls < self.min_calls as f64 || errors < self.threshold * calls {
            return Ok(None);
        }
        // Another call (or replica) may have opened it meanwhile: keep its opening.
        if let Status::Open(_) = self.status(store, key, now_ms).await? {
            return Ok(None);
        }
        let open_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX);
        let opened = Opened {
            opened_ms: now_ms,
            until_ms: now_ms.saturating_add(open_ms),
            calls: calls.round() as u64,
            errors: errors.round() as u64,
        };
        let bytes = serde_json::to_vec(&opened).unwrap_or_default();
        // Outlives the opening by two windows, so the next counters start from its end.
        store
            .put(&open_key(key), &bytes, self.open_for.saturating_add(keep))
            .await?;
        Ok(Some(opened))
    }

    /// What a refused call is told: what is failing, since when, and when to retry.
    pub fn refusal(&self, key: &str, opened: &Opened, now_ms: u64, write: bool) -> String {
        let what = key.replace(':', " '") + "'";
        let left = Duration::from_millis(opened.until_ms.saturating_sub(now_ms));
        let until =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(opened.until_ms));
        format!(
            "{what} is failing ({} of {} calls failed in the last {}): its circuit breaker is open, so this {} was not sent; retry after {until} (in {})",
            opened.errors,
            opened.calls,
            human(self.over),
            if write { "write" } else { "call" },
            human(left.max(Duration::from_secs(1)))
        )
    }
}

/// Where an open breaker is stored.
fn open_key(key: &str) -> String {
    format!("{}{key}:open", ns::BREAKER)
}

/// `50%` as 0.5; `None` unless a percentage from 1 to 100.
fn parse_share(text: &str) -> Option<f64> {
    let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (1.0..=100.0).contains(&n).then_some(n / 100.0)
}

/// What this process last saw of each breaker, so logs and metrics show each change once
/// (a breaker opened by another replica shows when this one first meets it).
#[derive(Debug, Default)]
pub struct Seen(Mutex<HashMap<String, bool>>);

impl Seen {
    /// Notes whether `key` is open; returns `Some(open)` when that changed.
    pub fn note(&self, key: &str, open: bool) -> Option<bool> {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let was = seen.insert(key.to_owned(), open).unwrap_or(false);
        (was != open).then_some(open)
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
