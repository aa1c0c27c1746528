//! Lazy counters ([`Incr::lazy`]: rates, stop rules, breaker counts) kept in memory by
//! the process that owns the state file, and handed to the file's commits.
//!
//! The embedded store has one owner (redb locks the file; other processes forward to
//! it), so its memory is the one place every increment passes: a counter here is exact.
//! A key found here is counted here; a key not found here is loaded from the file on its
//! first increment. Changes are marked dirty and written into the writer's next commit,
//! which syncs within [`SYNC_WITHIN`](super::SYNC_WITHIN) of the first change, so a
//! crash loses at most that stretch, as before; a call limited only by lazy counters
//! no longer waits for the writer thread or a transaction.
//!
//! A key is either always lazy or never (mcpd's namespaces keep them apart); a write of
//! another kind to a key found here first takes it out ([`Counters::take`]). This module
//! must not touch the file: its callers pass what the file holds.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::super::record::{self, Body, Change, Op, Record};
use super::super::{AllOrNone, Counter, Incr, StoreError};

/// The counters, behind one lock taken by callers and by the writer's commits alike.
#[derive(Debug, Default)]
pub(super) struct Lazy {
    inner: Mutex<Counters>,
}

impl Lazy {
    pub(super) fn lock(&self) -> MutexGuard<'_, Counters> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One counter as this process counts it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    total: u64,
    expires_ms: u64,
    /// Changed since it was last handed to a commit.
    dirty: bool,
}

impl Slot {
    fn record(self) -> Record {
        Record {
            expires_ms: self.expires_ms,
            body: Body::Counter(self.total),
        }
    }
}

/// The counters this process holds; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Counters {
    slots: HashMap<String, Slot>,
    /// When the oldest change not yet handed to a commit was made.
    dirty_since: Option<Instant>,
}

/// What a counter key holds in the file, for a key not counted here yet.
pub(super) type Load<'a> = dyn FnMut(&str) -> Result<Option<Record>, StoreError> + 'a;

impl Counters {
    /// When the oldest change not yet handed to a commit was made.
    pub(super) fn dirty_since(&self) -> Option<Instant> {
        self.dirty_since
    }

    /// The counter's record as counted here: `None` when this process has not counted it.
    pub(super) fn get(&self, key: &str) -> Option<Record> {
        self.slots.get(key).map(|s| s.record())
    }

    /// Takes a key out (a write of another kind is about to replace it): its record, to
    /// be written first, when it holds changes the file has not seen.
    pub(super) fn take(&mut self, key: &str) -> Option<Record> {
        self.slots.remove(key).filter(|s| s.dirty).map(Slot::record)
    }

    /// The counter as it stands: counted here, else what the file holds (then kept here).
    fn current(&mut self, key: &str, load: &mut Load<'_>) -> Result<Option<Record>, StoreError> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(Some(slot.record()));
        }
        let found = load(key)?;
        if let Some(Record {
            expires_ms,
            body: Body::Counter(total),
        }) = found
        {
            let slot = Slot {
                total,
                expires_ms,
                dirty: false,
            };
            self.slots.insert(key.to_owned(), slot);
        }
        Ok(found)
    }

    /// The first of `incs` (all lazy) that would pass its limit, with its index.
    pub(super) fn refusal(
        &mut self,
        incs: &[(Incr, u64)],
        now: u64,
        load: &mut Load<'_>,
    ) -> Result<Option<(usize, Counter)>, StoreError> {
        for (i, (inc, window_ms)) in incs.iter().enumerate() {
            let current = self.current(&inc.key, load)?;
            if let Some(c) = record::refuses(&inc.key, inc.by, inc.limit, *window_ms, current, now)?
            {
                return Ok(Some((i, c)));
            }
        }
        Ok(None)
    }

    /// Adds one increment (already judged within its limit) and returns the counter.
    pub(super) fn add(
        &mut self,
        inc: &Incr,
        window_ms: u64,
        now: u64,
        load: &mut Load<'_>,
    ) -> Result<Counter, StoreError> {
        let current = self.current(&inc.key, load)?;
        let op = Op::Incr {
            by: inc.by,
            window_ms,
        };
        let (change, reply) = record::apply(&inc.key, op, current, now)?;
        if let Change::Write(Record {
            expires_ms,
            body: Body::Counter(total),
        }) = change
        {
            let slot = Slot {
                total,
                expires_ms,
                dirty: true,
            };
            self.slots.insert(inc.key.clone(), slot);
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        reply.counter()
    }

    /// [`super::Store::incr_all`] of lazy counters alone: all or none.
    pub(super) fn incr_all(
        &mut self,
        incs: &[(Incr, u64)],
        now: u64,
        load: &mut Load<'_>,
    ) -> Result<AllOrNone, StoreError> {
        if let Some(refused) = self.refusal(incs, now, load)? {
            return Ok(Err(refused));
        }
        let mut counters = Vec::with_capacity(incs.len());
        for (inc, window_ms) in incs {
            counters.push(self.add(inc, *window_ms, now, load)?);
        }
        Ok(Ok(counters))
    }

    /// Hands every changed counter to a commit (marking it clean) and forgets those whose
    /// window has passed. Returns the records and when the oldest change was made.
    pub(super) fn drain(&mut self, now: u64) -> (Vec<(String, Record)>, Option<Instant>) {
        self.slots.retain(|_, s| s.expires_ms > now);
        let mut out = Vec::new();
        for (key, slot) in &mut self.slots {
            if slot.dirty {
                slot.dirty = false;
                out.push((key.clone(), slot.record()));
            }
        }
        (out, self.dirty_since.take())
    }

    /// Marks drained counters dirty again: the commit that was to keep them failed.
    pub(super) fn undrain(&mut self, keys: &[String], since: Option<Instant>) {
        for key in keys {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.dirty = true;
            }
        }
        if let Some(since) = since {
            let oldest = self.dirty_since.map_or(since, |d| d.min(since));
            self.dirty_since = Some(oldest);
        }
    }
}
