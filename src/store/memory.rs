//! An in-process store: a map under a mutex, gone when the process exits.
//!
//! For one-shot commands (`mcpd call`) that have no state worth keeping, and for tests
//! of the modules that use a store. It is a real implementation with the embedded
//! store's semantics (both go through `record::apply`), not a mock. Expired entries are
//! invisible at once and removed by `sweep` or, at most once a minute, by the next
//! write. It must not be used where state has to survive a restart.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::record::{self, Body, Change, Op, Record, Reply};
use super::{
    Admission, AllOrNone, Counter, Idem, IdemClaim, Incr, Store, StoreError, check_key, millis,
};
use crate::util::Clock;

/// How often (ms) a write also removes expired entries.
const SWEEP_EVERY_MS: u64 = 60_000;

/// The in-process store. See the module documentation.
pub struct MemoryStore {
    state: Mutex<State>,
    clock: Clock,
}

struct State {
    entries: BTreeMap<String, Record>,
    next_sweep_ms: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Clock::system())
    }

    /// An empty store on the given clock for tests that move time.
    pub(crate) fn with_clock(clock: Clock) -> Self {
        Self {
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                next_sweep_ms: 0,
            }),
            clock,
        }
    }

    // A panic while holding the lock cannot leave a half-applied write: `apply` computes
    // the change before the map is touched, so a poisoned map is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, key: &str, op: Op) -> Result<Reply, StoreError> {
        check_key(key)?;
        let now = self.clock.now_ms();
        let mut state = self.lock();
        if now >= state.next_sweep_ms {
            sweep(&mut state.entries, now);
            state.next_sweep_ms = now.saturating_add(SWEEP_EVERY_MS);
        }
        let current = state.entries.get(key).cloned();
        let (change, reply) = record::apply(key, op, current, now)?;
        match change {
            Change::Keep => {}
            Change::Write(r) => {
                state.entries.insert(key.to_owned(), r);
            }
            Change::Remove => {
                state.entries.remove(key);
            }
        }
        Ok(reply)
    }

    fn incr_all_now(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        let now = self.clock.now_ms();
        let mut windows = Vec::with_capacity(incs.len());
        for inc in incs {
            check_key(&inc.key)?;
            windows.push(millis("the window", inc.window)?);
        }
        let mut state = self.lock();
        for (i, (inc, window_ms)) in incs.iter().zip(&windows).enumerate() {
            let current = state.entries.get(&inc.key).cloned();
            if let Some(c) = record::refuses(&inc.key, inc.by, inc.limit, *window_ms, current, now)?
            {
                return Ok(Err((i, c)));
            }
        }
        let mut counters = Vec::with_capacity(incs.len());
        for (inc, window_ms) in incs.iter().zip(windows) {
            let current = state.entries.get(&inc.key).cloned();
            let op = Op::Incr {
                by: inc.by,
                window_ms,
            };
            let (change, reply) = record::apply(&inc.key, op, current, now)?;
            if let Change::Write(r) = change {
                state.entries.insert(inc.key.clone(), r);
            }
            counters.push(reply.counter()?);
        }
        Ok(Ok(counters))
    }

    fn read(&self, key: &str) -> Result<(Option<Record>, u64), StoreError> {
        check_key(key)?;
        let now = self.clock.now_ms();
        Ok((self.lock().entries.get(key).cloned(), now))
    }
}

fn sweep(entries: &mut BTreeMap<String, Record>, now: u64) -> usize {
    let before = entries.len();
    entries.retain(|_, r| r.live(now));
    before.saturating_sub(entries.len())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn idem_claim(&self, key: &str, claim: &IdemClaim<'_>) -> Result<Idem, StoreError> {
        self.write(key, record::claim_op(claim)?)?.idem()
    }

    async fn idem_hold(&self, key: &str, held: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let held = held.to_vec();
        self.write(key, Op::IdemHold { held, ttl_ms })?.unit()
    }

    async fn idem_resolve(
        &self,
        key: &str,
        to: Option<(&[u8], Duration)>,
    ) -> Result<Option<Idem>, StoreError> {
        self.write(key, record::resolve_op(to)?)?.found()
    }

    async fn idem_list(&self, prefix: &str) -> Result<Vec<(String, Idem, Duration)>, StoreError> {
        let now = self.clock.now_ms();
        let state = self.lock();
        Ok(state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, r)| {
                record::read_idem(r.clone(), now).map(|(i, left)| (k.clone(), i, left))
            })
            .collect())
    }

    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let result = result.to_vec();
        self.write(key, Op::IdemFinish { result, ttl_ms })?.unit()
    }

    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::IdemAbandon)?.flag()
    }

    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError> {
        let window_ms = millis("the window", window)?;
        self.write(key, Op::Incr { by, window_ms })?.counter()
    }

    async fn incr_within(
        &self,
        key: &str,
        by: u64,
        limit: u64,
        window: Duration,
    ) -> Result<Admission, StoreError> {
        let window_ms = millis("the window", window)?;
        let op = Op::IncrWithin {
            by,
            limit,
            window_ms,
        };
        self.write(key, op)?.admission()
    }

    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        self.incr_all_now(incs)
    }

    async fn get_counter(&self, key: &str) -> Result<u64, StoreError> {
        let (current, now) = self.read(key)?;
        record::read_counter(key, current, now)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let value = value.to_vec();
        self.write(key, Op::Put { value, ttl_ms })?.unit()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (current, now) = self.read(key)?;
        record::read_value(key, current, now)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::Delete)?.flag()
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let now = self.clock.now_ms();
        let state = self.lock();
        Ok(state
            .entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, r)| match &r.body {
                Body::Value(v) if r.live(now) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect())
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        Ok(sweep(&mut self.lock().entries, now))
    }
}
