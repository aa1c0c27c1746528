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
//! process's memory ([`lazy`]), exactly, without the writer: every commit writes those
//! changed since the last one, and the writer syncs within [`SYNC_WITHIN`] of the first
//! change (or sooner, with the next durable write), and when the store closes. A crash
//! so loses at most the lazy increments of that last stretch.
//!
//! The outcome of a keyed call ([`Store::idem_finish`]) is committed without a sync and
//! appended to the outcome journal ([`journal`]) before its caller hears back: it
//! survives a killed process, and the next synced commit (or the next open) folds it
//! in. A power loss before that sync leaves the key's synced claim, which lapses into
//! "outcome unknown". Every other write is on disk before its caller hears back.
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
use std::time::{Duration, Instant};

use redb::{Builder, Database, DatabaseError, Durability, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use super::record::{self, Op, Record, Reply};
use super::{
    Admission, AllOrNone, Counter, Idem, IdemClaim, Incr, SYNC_WITHIN, Store, StoreError,
    check_key, millis,
};
use crate::util::Clock;
use journal::{Entry, Journal};
use lazy::Lazy;
use tables::Tables;

mod journal;
mod lazy;
mod tables;

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
                Some(bytes) => Record::decode(bytes.value())
                    .map(Some)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: key.to_owned(),
                    }),
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

/// What the writer thread commits to: the database, its count of synced commits, the
/// lazy counters and the outcome journal.
struct Writer {
    db: Arc<Database>,
    synced: Arc<AtomicU64>,
    lazy: Arc<Lazy>,
    journal: RefCell<Journal>,
}

/// Folds the outcomes a stopped mcpd journaled into the file, in one synced commit;
/// those expired by now are dropped. Returns how many were folded.
fn fold(db: &Database, outcomes: Vec<Entry>, now: u64) -> Result<usize, redb::Error> {
    let mut txn = db.begin_write()?;
    let mut lazy = lazy::Counters::default();
    let mut folded = 0;
    {
        let mut tables = Tables {
            entries: txn.open_table(ENTRIES)?,
            expiry: txn.open_table(EXPIRY)?,
            changed: false,
            lazy: &mut lazy,
        };
        for e in outcomes.into_iter().filter(|e| e.expires_ms > now) {
            let op = Op::IdemFinish {
                ttl_ms: e.expires_ms - now,
                result: e.result,
            };
            match tables.write(&e.key, op, now)? {
                Ok(_) => folded += 1,
                Err(err) => {
                    tracing::error!(key = %e.key, error = %err, "a journaled outcome could not be folded into the state file");
                }
            }
        }
    }
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok(folded)
}

fn writer_loop(db: &Writer, queue: &mpsc::Receiver<Job>, clock: &Clock) {
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    // When the oldest commit (or lazy counter) not yet synced was made: it must be
    // synced within SYNC_WITHIN.
    let mut unsynced: Option<Instant> = None;
    let oldest = |unsynced: Option<Instant>| -> Option<Instant> {
        match (unsynced, db.lazy.lock().dirty_since()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    loop {
        let due = oldest(unsynced).map_or(next_sweep, |at| next_sweep.min(at + SYNC_WITHIN));
        let wait = due.saturating_duration_since(Instant::now());
        match queue.recv_timeout(wait) {
            Ok(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // A wake-up only arms the sync (its time is the counters' own).
                batch.retain(|job| !matches!(job.task, Task::Wake));
                if !batch.is_empty() {
                    match run_batch(db, batch, clock.now_ms()) {
                        Some(None) => unsynced = None,
                        Some(Some(since)) => unsynced = Some(unsynced.map_or(since, |u| u.min(since))),
                        None => {}
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if oldest(unsynced).is_some() {
                    sync(db);
                }
                return;
            }
        }
        // Checked after every batch too: a busy store never waits long enough to time out.
        if oldest(unsynced).is_some_and(|at| at.elapsed() >= SYNC_WITHIN) && sync(db) {
            unsynced = None;
        }
        if Instant::now() >= next_sweep {
            match commit(db, vec![Task::Sweep], clock.now_ms()) {
                Ok(done) if done.synced => unsynced = None,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "state store sweep failed"),
            }
            next_sweep = Instant::now() + SWEEP_EVERY;
        }
    }
}

/// An empty synced commit: makes every earlier unsynced commit and every lazy counter
/// durable. Returns whether it succeeded.
fn sync(db: &Writer) -> bool {
    match commit(db, Vec::new(), 0) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "state store sync failed");
            false
        }
    }
}

/// Commits a batch, journals its outcomes if the commit was not synced, then answers
/// each caller. Returns `None` when it failed, else when the oldest write it left
/// unsynced was made (`Some(None)`: nothing is left unsynced).
fn run_batch(db: &Writer, batch: Vec<Job>, now: u64) -> Option<Option<Instant>> {
    let (tasks, replies): (Vec<Task>, Vec<_>) =
        batch.into_iter().map(|job| (job.task, job.reply)).unzip();
    // A send fails only when the caller stopped waiting; its write is kept regardless.
    match commit(db, tasks, now) {
        Ok(done) => {
            let mut results = done.results;
            if !done.journal.is_empty() && !journal(db, &done.journal) {
                // Not journaled: the outcomes are answered only once synced.
                if !sync(db) {
                    let e = StoreError::Stopped(
                        "the outcome could not be journaled or synced; see the log".into(),
                    );
                    for (r, task) in results.iter_mut().zip(&done.journaled) {
                        if *task {
                            *r = Err(e.clone());
                        }
                    }
                } else {
                    return answer(replies, results, Some(None));
                }
            }
            answer(replies, results, Some(done.unsynced))
        }
        Err(e) => {
            let e = StoreError::storage(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            None
        }
    }
}

fn answer(
    replies: Vec<oneshot::Sender<Result<Reply, StoreError>>>,
    results: Vec<Result<Reply, StoreError>>,
    then: Option<Option<Instant>>,
) -> Option<Option<Instant>> {
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
    then
}

/// Appends outcomes to the journal; whether it worked (else the caller syncs).
fn journal(db: &Writer, entries: &[Entry]) -> bool {
    match db.journal.borrow_mut().append(entries) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "the outcome journal could not be written; syncing the state file instead");
            false
        }
    }
}

/// What a commit did.
struct Committed {
    /// Each task's answer.
    results: Vec<Result<Reply, StoreError>>,
    /// The outcomes committed without a sync, to journal before answering.
    journal: Vec<Entry>,
    /// Which tasks those are.
    journaled: Vec<bool>,
    /// When the oldest write this commit left unsynced was made (`None`: it synced, or
    /// changed nothing).
    unsynced: Option<Instant>,
    /// Whether it was a synced commit.
    synced: bool,
}

/// Applies the tasks in order in one write transaction, with every lazy counter changed
/// since the last commit, and commits it: synced when a durable task changed something
/// (or there is no task: a sync), without a sync when only outcomes and lazy counters
/// did, and not at all when nothing changed (a replay, a refusal). A synced commit
/// empties the outcome journal. The outer error (storage) fails them all; an inner one
/// belongs to its task alone.
fn commit(w: &Writer, tasks: Vec<Task>, now: u64) -> Result<Committed, redb::Error> {
    let mut durable = tasks.is_empty();
    let mut changed = false;
    let mut txn = w.db.begin_write()?;
    let mut results = Vec::with_capacity(tasks.len());
    let mut journal = Vec::new();
    let mut journaled = Vec::with_capacity(tasks.len());
    let mut lazy = w.lazy.lock();
    let (drained, since) = {
        let mut tables = Tables {
            entries: txn.open_table(ENTRIES)?,
            expiry: txn.open_table(EXPIRY)?,
            changed: false,
            lazy: &mut lazy,
        };
        for task in tasks {
            let task_durable = task.durable();
            let entry = task.journal_entry(now);
            tables.changed = false;
            results.push(match task {
                Task::Write { key, op } => tables.write(&key, op, now)?,
                Task::IncrAll(incs) => tables.incr_all(&incs, now)?,
                Task::ClaimCounted { key, op, incs } => {
                    tables.claim_counted(&key, op, &incs, now)?
                }
                Task::Sweep => Ok(Reply::Swept(tables.sweep(now)?)),
                Task::Wake => Ok(Reply::Unit),
            });
            changed |= tables.changed;
            durable |= tables.changed && task_durable;
            let journal_it = tables.changed && entry.is_some();
            journaled.push(journal_it);
            if let (true, Some(entry)) = (journal_it, entry) {
                journal.push(entry);
            }
        }
        tables.changed = false;
        let flushed = tables.flush_lazy(now)?;
        changed |= tables.changed;
        flushed
    };
    drop(lazy);
    if !changed && !durable {
        txn.abort()?;
        return Ok(Committed {
            results,
            journal: Vec::new(),
            journaled,
            unsynced: None,
            synced: false,
        });
    }
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    if let Err(e) = txn.commit() {
        w.lazy.lock().undrain(&drained, since);
        return Err(e.into());
    }
    if durable {
        SYNCED.fetch_add(1, Ordering::Relaxed);
        w.synced.fetch_add(1, Ordering::Relaxed);
        // Everything journaled is in this synced commit now.
        if let Err(e) = w.journal.borrow_mut().clear() {
            tracing::error!(error = %e, "the outcome journal could not be emptied; the next open folds it again (harmless)");
        }
        journal.clear();
        return Ok(Committed {
            results,
            journal,
            journaled,
            unsynced: None,
            synced: true,
        });
    }
    let unsynced = Some(since.unwrap_or_else(Instant::now).min(Instant::now()));
    Ok(Committed {
        results,
        journal,
        journaled,
        unsynced,
        synced: false,
    })
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
