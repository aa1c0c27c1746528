//! The embedded store's tables within one write transaction: each operation applied to
//! the entries and the expiry index together, and whether it changed anything (a batch
//! that changed nothing is not committed). Lazy counters are counted in memory
//! ([`super::lazy`]) and written here when a commit takes them ([`Tables::flush_lazy`]).

use std::time::Instant;

use redb::{ReadableTable, Table};

use super::super::record::{self, Change, Op, Record, Reply};
use super::super::{Counter, Idem, Incr, StoreError};
use super::lazy::Counters;

/// The tables open in one write transaction, and the lazy counters while it applies.
pub(super) struct Tables<'txn, 'l> {
    pub(super) entries: Table<'txn, &'static str, &'static [u8]>,
    pub(super) expiry: Table<'txn, (u64, &'static str), ()>,
    /// Whether the current task changed anything.
    pub(super) changed: bool,
    /// The lazy counters, locked for the transaction's tasks.
    pub(super) lazy: &'l mut Counters,
}

/// What the entries hold under `key`, for a lazy counter not counted in memory yet.
fn load(
    entries: &Table<'_, &'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Record>, StoreError> {
    match entries.get(key).map_err(StoreError::storage)? {
        None => Ok(None),
        Some(bytes) => Record::decode(bytes.value())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: key.to_owned(),
            }),
    }
}

impl Tables<'_, '_> {
    /// Writes every lazy counter changed since the last commit that took them, and
    /// forgets those whose window passed. Returns their keys and when the oldest change
    /// was made (to mark them dirty again if the commit fails).
    pub(super) fn flush_lazy(
        &mut self,
        now: u64,
    ) -> Result<(Vec<String>, Option<Instant>), redb::Error> {
        let (records, since) = self.lazy.drain(now);
        let mut keys = Vec::with_capacity(records.len());
        for (key, record) in records {
            self.put_record(&key, &record)?;
            keys.push(key);
        }
        Ok((keys, since))
    }

    /// Stores `record` under `key`, keeping the expiry index in step.
    fn put_record(&mut self, key: &str, record: &Record) -> Result<(), redb::Error> {
        let old = self
            .entries
            .get(key)?
            .and_then(|b| Record::decode(b.value()))
            .map(|r| r.expires_ms);
        if old != Some(record.expires_ms) {
            if let Some(old) = old {
                self.expiry.remove((old, key))?;
            }
            self.expiry.insert((record.expires_ms, key), ())?;
        }
        self.entries.insert(key, record.encode().as_slice())?;
        self.changed = true;
        Ok(())
    }

    /// The claim, then (when it starts the key) the counters, all or none; a refusal
    /// changes nothing, the claim included.
    pub(super) fn claim_counted(
        &mut self,
        key: &str,
        op: Op,
        incs: &[(Incr, u64)],
        now: u64,
    ) -> Result<Result<Reply, StoreError>, redb::Error> {
        if !incs.is_empty() && self.would_start(key, &op, now)? {
            match self.refusal(incs, now)? {
                Ok(None) => {}
                Ok(Some(refused)) => {
                    return Ok(Ok(Reply::Claimed(Idem::Started, Some(Err(refused)))));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        let idem = match self.write(key, op, now)? {
            Ok(Reply::Idem(idem)) => idem,
            Ok(other) => return Ok(Err(other.mismatch())),
            Err(e) => return Ok(Err(e)),
        };
        if idem != Idem::Started || incs.is_empty() {
            return Ok(Ok(Reply::Claimed(idem, None)));
        }
        // Checked above, in this transaction: the counters are admitted.
        Ok(match self.incr_all(incs, now)? {
            Ok(Reply::All(counted)) => Ok(Reply::Claimed(idem, Some(counted))),
            Ok(other) => Err(other.mismatch()),
            Err(e) => Err(e),
        })
    }

    /// Whether `op` (a claim) would start the key, without writing.
    fn would_start(&self, key: &str, op: &Op, now: u64) -> Result<bool, redb::Error> {
        let current = self
            .entries
            .get(key)?
            .and_then(|b| Record::decode(b.value()));
        Ok(matches!(
            record::apply(key, op.clone(), current, now),
            Ok((_, Reply::Idem(Idem::Started)))
        ))
    }

    /// The first counter that would pass its limit, with its index, if any.
    #[allow(clippy::type_complexity)]
    fn refusal(
        &mut self,
        incs: &[(Incr, u64)],
        now: u64,
    ) -> Result<Result<Option<(usize, Counter)>, StoreError>, redb::Error> {
        for (i, pair) in incs.iter().enumerate() {
            let (inc, window_ms) = pair;
            if inc.lazy {
                let entries = &self.entries;
                let mut from_file = |key: &str| load(entries, key);
                let one = std::slice::from_ref(pair);
                match self.lazy.refusal(one, now, &mut from_file) {
                    Ok(Some((_, c))) => return Ok(Ok(Some((i, c)))),
                    Ok(None) => continue,
                    Err(e) => return Ok(Err(e)),
                }
            }
            let current = self
                .entries
                .get(inc.key.as_str())?
                .and_then(|b| Record::decode(b.value()));
            match record::refuses(&inc.key, inc.by, inc.limit, *window_ms, current, now) {
                Ok(Some(c)) => return Ok(Ok(Some((i, c)))),
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(None))
    }

    /// All-or-none increments: every limit is checked before anything is written.
    pub(super) fn incr_all(
        &mut self,
        incs: &[(Incr, u64)],
        now: u64,
    ) -> Result<Result<Reply, StoreError>, redb::Error> {
        match self.refusal(incs, now)? {
            Ok(None) => {}
            Ok(Some(refused)) => return Ok(Ok(Reply::All(Err(refused)))),
            Err(e) => return Ok(Err(e)),
        }
        let mut counters = Vec::with_capacity(incs.len());
        for (inc, window_ms) in incs {
            if inc.lazy {
                let entries = &self.entries;
                let mut from_file = |key: &str| load(entries, key);
                match self.lazy.add(inc, *window_ms, now, &mut from_file) {
                    Ok(c) => counters.push(c),
                    Err(e) => return Ok(Err(e)),
                }
                continue;
            }
            let op = Op::Incr {
                by: inc.by,
                window_ms: *window_ms,
            };
            match self.write(&inc.key, op, now)? {
                Ok(reply) => match reply.counter() {
                    Ok(c) => counters.push(c),
                    Err(e) => return Ok(Err(e)),
                },
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(Reply::All(Ok(counters))))
    }

    /// Applies one write, keeping the expiry index in step with the entry.
    pub(super) fn write(
        &mut self,
        key: &str,
        op: Op,
        now: u64,
    ) -> Result<Result<Reply, StoreError>, redb::Error> {
        // A write of another kind to a counter counted in memory: the counter first.
        if let Some(counted) = self.lazy.take(key) {
            self.put_record(key, &counted)?;
        }
        let overwrites = matches!(op, Op::Put { .. } | Op::Delete);
        let current = match self.entries.get(key)? {
            None => None,
            Some(bytes) => match Record::decode(bytes.value()) {
                Some(record) => Some(record),
                // An unreadable record may still be replaced or removed: that is the way
                // out. Its index entry is left for the sweep, which checks the entry.
                None if overwrites => None,
                None => {
                    return Ok(Err(StoreError::Corrupt {
                        key: key.to_owned(),
                    }));
                }
            },
        };
        let old_expiry = current.as_ref().map(|r| r.expires_ms);
        let (change, reply) = match record::apply(key, op, current, now) {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        match change {
            Change::Keep => {}
            Change::Write(record) => {
                self.changed = true;
                if old_expiry != Some(record.expires_ms) {
                    if let Some(old) = old_expiry {
                        self.expiry.remove((old, key))?;
                    }
                    self.expiry.insert((record.expires_ms, key), ())?;
                }
                self.entries.insert(key, record.encode().as_slice())?;
            }
            Change::Remove => {
                self.changed = true;
                if let Some(old) = old_expiry {
                    self.expiry.remove((old, key))?;
                }
                self.entries.remove(key)?;
            }
        }
        Ok(Ok(reply))
    }

    /// Removes every entry whose expiry has passed; returns how many.
    pub(super) fn sweep(&mut self, now: u64) -> Result<usize, redb::Error> {
        // Every (expiry, key) with expiry <= now: "" is the least key at `now + 1`.
        let due = self
            .expiry
            .range::<(u64, &str)>(..(now.saturating_add(1), ""))?
            .map(|item| {
                item.map(|(k, _)| {
                    let (expiry, key) = k.value();
                    (expiry, key.to_owned())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut removed = 0;
        for (expiry, key) in due {
            self.expiry.remove((expiry, key.as_str()))?;
            self.changed = true;
            // The index is kept in step with the entries, but the entry decides.
            let dead = match self.entries.get(key.as_str())? {
                None => false,
                Some(bytes) => Record::decode(bytes.value()).is_none_or(|r| !r.live(now)),
            };
            if dead {
                self.entries.remove(key.as_str())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
