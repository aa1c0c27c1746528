//! The embedded store: one local redb file, nothing to install.
//!
//! Writes go to one thread (`mcpd-store-writer`) that owns all write transactions. It
//! takes every write queued at the moment, applies them in order in one transaction
//! and commits it with immediate durability (redb syncs before `commit` returns); only
//! then does it answer each caller. Concurrent writes so share one disk sync (group
//! commit) instead of queueing for one sync each, and each write stays atomic because
//! writes are applied one at a time. A write that fails for a reason of its own (a key
//! of another kind) changes nothing and fails alone; a storage failure fails the batch.
//!
//! Lazy counters ([`Incr::lazy`]: rates, stop rules, breaker counts) are counted in this
//! process's memory (`embedded/lazy.rs`), exactly, without the writer: every commit
//! writes those changed since the last one, and the writer syncs within
//! [`SYNC_WITHIN`](super::SYNC_WITHIN) of the first change (or sooner, with the next
//! durable write), and when the store closes. A crash so loses at most the lazy
//! increments of that last stretch.
//!
//! The outcome of a keyed call ([`Store::idem_finish`]) is committed without a sync and
//! appended to the outcome journal (`embedded/journal.rs`) before its caller hears
//! back: it survives a killed process, and the next synced commit (or the next open)
//! folds it in. A power loss before that sync leaves the key's synced claim, which
//! lapses into "outcome unknown". Every other write is on disk before its caller hears
//! back.
//!
//! Reads run on tokio's blocking pool in their own read transaction (redb's readers do
//! not wait for the writer) and see every write that was answered before they began.
//!
//! Expiry is in Unix milliseconds, so it stays right across a restart. Reads hide
//! expired entries at once. An index table, (expiry, key), lets a sweep find them
//! without a scan: the writer sweeps every minute, and [`Store::sweep`] sweeps now.
//!
//! A write whose caller is cancelled after it was queued is still applied, as a command
//! already sent to a server would be. This module must not be opened twice on one file:
//! redb locks the file, and a second open fails with [`StoreError::Locked`].

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use redb::{Builder, Database, DatabaseError, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use super::record::{self, Op, Record, Reply};
use super::{
    Admission, AllOrNone, Counter, Idem, IdemClaim, Incr, Store, StoreError, check_key, millis,
};
use crate::util::Clock;
use journal::{Entry, Journal};
use lazy::Lazy;
use writer::{Writer, fold, writer_loop};

mod journal;
mod lazy;
mod tables;
mod writer;

/// Every entry: key → encoded [`Record`].
pub(super) const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
/// The expiry index: (expiry in Unix ms, key) for every entry.
pub(super) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// How often the writer removes expired entries.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// The most writes committed together; bounds the latency one batch adds to the next.
const MAX_BATCH: usize = 256;
/// redb's page cache. Its default (1 GiB) suits a database, not a sidecar's state.
const CACHE_BYTES: usize = 64 << 20;

/// Synced commits (one disk sync each) of every embedded store in this process.
static SYNCED: AtomicU64 = AtomicU64::new(0);

/// The store in one redb file. See the module documentation.
pub struct EmbeddedStore {
    path: PathBuf,
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<thread::JoinHandle<()>>,
    clock: Clock,
    /// This store's synced commits.
    synced: Arc<AtomicU64>,
    /// The lazy counters, counted here.
    lazy: Arc<Lazy>,
}

/// A write for the writer thread, and where to send its answer.
struct Job {
    task: Task,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

enum Task {
    Write {
        key: String,
        op: Op,
    },
    IncrAll(Vec<(Incr, u64)>),
    ClaimCounted {
        key: String,
        op: Op,
        incs: Vec<(Incr, u64)>,
    },
    Sweep,
    /// Lazy counters changed after a sync: the writer is to sync them in time.
    Wake,
}

impl Task {
    /// Whether the task must be on disk before its caller hears back (an outcome is
    /// journaled instead, lazy counters wait for the next sync).
    fn durable(&self) -> bool {
        match self {
            Self::IncrAll(incs) => incs.iter().any(|(i, _)| !i.lazy),
            Self::Write {
                op: Op::IdemFinish { .. },
                ..
            }
            | Self::Wake => false,
            Self::Write { .. } | Self::ClaimCounted { .. } | Self::Sweep => true,
        }
    }

    /// The outcome journal's entry for this task, when it is an outcome.
    fn journal_entry(&self, now: u64) -> Option<Entry> {
        match self {
            Self::Write {
                key,
                op: Op::IdemFinish { result, ttl_ms },
            } => Some(Entry {
                key: key.clone(),
                expires_ms: now.saturating_add(*ttl_ms),
                result: result.clone(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the state file at `path`, creating it (and its directory) if missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Clock::system())
    }

    /// Opens on the given clock for tests that move time.
    pub(crate) fn open_with_clock(path: &Path, clock: Clock) -> Result<Self, StoreError> {
        let open_error = |e: redb::Error| StoreError::Open {
            path: path.to_owned(),
            source: Arc::new(e),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.into()))?;
        }
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.to_owned(),
                },
                e => open_error(e.into()),
            })?;
        create_tables(&db).map_err(open_error)?;
        let (mut journal, outcomes) =
            Journal::open(&journal::path_for(path)).map_err(|e| open_error(e.into()))?;
        if !outcomes.is_empty() {
            let folded = fold(&db, outcomes, clock.now_ms()).map_err(open_error)?;
            journal.clear().map_err(|e| open_error(e.into()))?;
            tracing::info!(path = %path.display(), folded, "folded the outcomes of keyed calls an mcpd that stopped had journaled");
        }
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel();
        let synced = Arc::new(AtomicU64::new(0));
        let lazy = Arc::new(Lazy::default());
        let writer = thread::Builder::new()
            .name("mcpd-store-writer".into())
            .spawn({
                let db = Writer {
                    db: Arc::clone(&db),
                    synced: Arc::clone(&synced),
                    lazy: Arc::clone(&lazy),
                    journal: RefCell::new(journal),
                };
                let clock = clock.clone();
                move || writer_loop(&db, &queue, &clock)
            })
            .map_err(|e| open_error(e.into()))?;
        Ok(Self {
            path: path.to_owned(),
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            clock,
            synced,
            lazy,
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many synced commits (one disk sync each) the embedded stores of this process
    /// have made since it started: what benchmarks divide by the calls they made.
    pub fn synced_commits() -> u64 {
        SYNCED.load(Ordering::Relaxed)
    }

    /// How many synced commits this store has made.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Relaxed)
    }

    /// Queues a write and waits until it is committed.
    async fn submit(&self, task: Task) -> Result<Reply, StoreError> {
        let stopped = || StoreError::Stopped("the writer thread is gone".into());
        let (reply, answer) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Job { task, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// [`Store::incr_all`] of lazy counters alone: counted in memory, at once.
    fn incr_lazy(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        let incs = checked(incs)?;
        let db = &self.db;
        let mut from_file = |key: &str| -> Result<Option<Record>, StoreError> {
            let txn = db.begin_read().map_err(StoreError::storage)?;
            let entries = txn.open_table(ENTRIES).map_err(StoreError::storage)?;
            match entries.get(key).map_err(StoreError::storage)? {
                None => Ok(None),
                Some(bytes) => {
                    Record::decode(bytes.value())
                        .map(Some)
                        .ok_or_else(|| StoreError::Corrupt {
                            key: key.to_owned(),
                        })
                }
            }
        };
        let mut lazy = self.lazy.lock();
        let was_clean = lazy.dirty_since().is_none();
        let counted = lazy.incr_all(&incs, self.clock.now_ms(), &mut from_file)?;
        let wake = was_clean && lazy.dirty_since().is_some();
        drop(lazy);
        if wake && let Some(jobs) = &self.jobs {
            // Nobody waits for the answer: the writer only arms its sync.
            let (reply, _) = oneshot::channel();
            let _ = jobs.send(Job {
                task: Task::Wake,
                reply,
            });
        }
        Ok(counted)
    }

    async fn write(&self, key: &str, op: Op) -> Result<Reply, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.submit(Task::Write { key, op }).await
    }

    /// Runs `f` in a read transaction on the blocking pool, with the current time.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>, u64) -> Result<T, StoreError>
            + Send
            + 'static,
    {
        let db = Arc::clone(&self.db);
        let now = self.clock.now_ms();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(StoreError::storage)?;
            let entries = txn.open_table(ENTRIES).map_err(StoreError::storage)?;
            f(&entries, now)
        })
        .await
        .map_err(|e| StoreError::Stopped(format!("a read task failed: {e}")))?
    }

    async fn read_record(&self, key: &str) -> Result<(Option<Record>, u64), StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.read(move |entries, now| {
            let found = entries.get(key.as_str()).map_err(StoreError::storage)?;
            let record = match found {
                None => None,
                Some(bytes) => Some(
                    Record::decode(bytes.value())
                        .ok_or(StoreError::Corrupt { key: key.clone() })?,
                ),
            };
            Ok((record, now))
        })
        .await
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once the writes already queued are committed;
        // waiting for it releases the file, so that the next open (a restart, a reload
        // onto the same path) does not find it locked.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "state store writer panicked");
        }
    }
}

/// Counters with their windows in milliseconds, keys and windows checked.
fn checked(incs: &[Incr]) -> Result<Vec<(Incr, u64)>, StoreError> {
    let mut task = Vec::with_capacity(incs.len());
    for inc in incs {
        check_key(&inc.key)?;
        task.push((inc.clone(), millis("the window", inc.window)?));
    }
    Ok(task)
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(ENTRIES)?;
    txn.open_table(EXPIRY)?;
    txn.commit()?;
    Ok(())
}

/// Appends an outcome to the journal beside the (closed) state file at `path`, as an
/// mcpd killed after answering a keyed call leaves it.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn journal_outcome(path: &Path, key: &str, result: &[u8], expires_ms: u64) {
    let (mut journal, _) = Journal::open(&journal::path_for(path)).expect("journal");
    let entry = Entry {
        key: key.to_owned(),
        expires_ms,
        result: result.to_vec(),
    };
    journal.append(&[entry]).expect("append");
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn idem_claim(&self, key: &str, claim: &IdemClaim<'_>) -> Result<Idem, StoreError> {
        self.write(key, record::claim_op(claim)?).await?.idem()
    }

    async fn idem_hold(&self, key: &str, held: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let held = held.to_vec();
        self.write(key, Op::IdemHold { held, ttl_ms }).await?.unit()
    }

    async fn idem_resolve(
        &self,
        key: &str,
        to: Option<(&[u8], Duration)>,
    ) -> Result<Option<Idem>, StoreError> {
        self.write(key, record::resolve_op(to)?).await?.found()
    }

    async fn idem_list(&self, prefix: &str) -> Result<Vec<(String, Idem, Duration)>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |entries, now| {
            let mut found = Vec::new();
            for item in entries
                .range::<&str>(prefix.as_str()..)
                .map_err(StoreError::storage)?
            {
                let (key, bytes) = item.map_err(StoreError::storage)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                // As in scan_prefix: unreadable records are skipped.
                if let Some((idem, left)) =
                    Record::decode(bytes.value()).and_then(|r| record::read_idem(r, now))
                {
                    found.push((key.to_owned(), idem, left));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn idem_finish(&self, key: &str, result: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let result = result.to_vec();
        self.write(key, Op::IdemFinish { result, ttl_ms })
            .await?
            .unit()
    }

    async fn idem_abandon(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::IdemAbandon).await?.flag()
    }

    async fn incr(&self, key: &str, by: u64, window: Duration) -> Result<Counter, StoreError> {
        let window_ms = millis("the window", window)?;
        self.write(key, Op::Incr { by, window_ms }).await?.counter()
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
        self.write(key, op).await?.admission()
    }

    async fn incr_all(&self, incs: &[Incr]) -> Result<AllOrNone, StoreError> {
        if !incs.is_empty() && incs.iter().all(|i| i.lazy) {
            return self.incr_lazy(incs);
        }
        self.submit(Task::IncrAll(checked(incs)?)).await?.all()
    }

    async fn idem_claim_counted(
        &self,
        key: &str,
        claim: &IdemClaim<'_>,
        incs: &[Incr],
    ) -> Result<(Idem, Option<AllOrNone>), StoreError> {
        check_key(key)?;
        let task = Task::ClaimCounted {
            key: key.to_owned(),
            op: record::claim_op(claim)?,
            incs: checked(incs)?,
        };
        self.submit(task).await?.claimed()
    }

    async fn get_counter(&self, key: &str) -> Result<u64, StoreError> {
        check_key(key)?;
        let counted = self.lazy.lock().get(key);
        if let Some(counted) = counted {
            return record::read_counter(key, Some(counted), self.clock.now_ms());
        }
        let (current, now) = self.read_record(key).await?;
        record::read_counter(key, current, now)
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = millis("the ttl", ttl)?;
        let value = value.to_vec();
        self.write(key, Op::Put { value, ttl_ms }).await?.unit()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (current, now) = self.read_record(key).await?;
        record::read_value(key, current, now)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.write(key, Op::Delete).await?.flag()
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |entries, now| {
            let mut found = Vec::new();
            for item in entries
                .range::<&str>(prefix.as_str()..)
                .map_err(StoreError::storage)?
            {
                let (key, bytes) = item.map_err(StoreError::storage)?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                // Unreadable records are skipped here: a scan serves many keys, and the
                // key's own reads report the damage.
                if let Some(Record {
                    expires_ms,
                    body: record::Body::Value(value),
                }) = Record::decode(bytes.value())
                    && expires_ms > now
                {
                    found.push((key.to_owned(), value));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        self.submit(Task::Sweep).await?.swept()
    }
}
