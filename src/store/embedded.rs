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
//! A batch made only of lazy counters ([`Incr::lazy`]) is committed without a sync: it
//! is visible at once and made durable by the next synced commit, which the writer runs
//! within [`SYNC_WITHIN`] of it (or sooner, with the next durable write), and when the
//! store closes. A crash so loses at most the lazy increments of that last stretch;
//! every other write is on disk before its caller hears back.
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
use tables::Tables;

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
}

impl Task {
    /// Whether the task must be on disk before its caller hears back.
    fn durable(&self) -> bool {
        match self {
            Self::IncrAll(incs) => incs.iter().any(|(i, _)| !i.lazy),
            Self::Write { .. } | Self::ClaimCounted { .. } | Self::Sweep => true,
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
        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel();
        let synced = Arc::new(AtomicU64::new(0));
        let writer = thread::Builder::new()
            .name("mcpd-store-writer".into())
            .spawn({
                let db = Writer {
                    db: Arc::clone(&db),
                    synced: Arc::clone(&synced),
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

/// What the writer thread commits to: the database and its count of synced commits.
struct Writer {
    db: Arc<Database>,
    synced: Arc<AtomicU64>,
}

fn writer_loop(db: &Writer, queue: &mpsc::Receiver<Job>, clock: &Clock) {
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    // When the first commit not yet synced was made: it must be synced within SYNC_WITHIN.
    let mut unsynced: Option<Instant> = None;
    loop {
        let due = unsynced.map_or(next_sweep, |at| next_sweep.min(at + SYNC_WITHIN));
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
                match run_batch(db, batch, clock.now_ms()) {
                    Some(true) => unsynced = None,
                    Some(false) => unsynced = unsynced.or(Some(Instant::now())),
                    None => {}
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if unsynced.is_some() {
                    sync(db);
                }
                return;
            }
        }
        // Checked after every batch too: a busy store never waits long enough to time out.
        if unsynced.is_some_and(|at| at.elapsed() >= SYNC_WITHIN) && sync(db) {
            unsynced = None;
        }
        if Instant::now() >= next_sweep {
            match commit(db, vec![Task::Sweep], clock.now_ms()) {
                Ok(_) => unsynced = None,
                Err(e) => tracing::error!(error = %e, "state store sweep failed"),
            }
            next_sweep = Instant::now() + SWEEP_EVERY;
        }
    }
}

/// An empty synced commit: makes every earlier unsynced commit durable. Returns whether
/// it succeeded.
fn sync(db: &Writer) -> bool {
    match commit(db, Vec::new(), 0) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "state store sync failed");
            false
        }
    }
}

/// Commits a batch, then answers each caller. Returns whether the commit was synced
/// (`None`: it failed).
fn run_batch(db: &Writer, batch: Vec<Job>, now: u64) -> Option<bool> {
    let (tasks, replies): (Vec<Task>, Vec<_>) =
        batch.into_iter().map(|job| (job.task, job.reply)).unzip();
    let durable = tasks.iter().any(Task::durable);
    // A send fails only when the caller stopped waiting; its write is kept regardless.
    match commit(db, tasks, now) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            Some(durable)
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

/// Applies the tasks in order in one write transaction and commits it: synced when a
/// durable task changed something (or there is no task: a sync), without a sync when
/// only lazy ones did, and not at all when nothing changed (a replay, a refusal). The
/// outer error (storage) fails them all; an inner one belongs to its task alone.
#[allow(clippy::type_complexity)]
fn commit(
    w: &Writer,
    tasks: Vec<Task>,
    now: u64,
) -> Result<Vec<Result<Reply, StoreError>>, redb::Error> {
    let mut durable = tasks.is_empty();
    let mut changed = tasks.is_empty();
    let mut txn = w.db.begin_write()?;
    let mut results = Vec::with_capacity(tasks.len());
    {
        let mut tables = Tables {
            entries: txn.open_table(ENTRIES)?,
            expiry: txn.open_table(EXPIRY)?,
            changed: false,
        };
        for task in tasks {
            let task_durable = task.durable();
            tables.changed = false;
            results.push(match task {
                Task::Write { key, op } => tables.write(&key, op, now)?,
                Task::IncrAll(incs) => tables.incr_all(&incs, now)?,
                Task::ClaimCounted { key, op, incs } => {
                    tables.claim_counted(&key, op, &incs, now)?
                }
                Task::Sweep => Ok(Reply::Swept(tables.sweep(now)?)),
            });
            changed |= tables.changed;
            durable |= tables.changed && task_durable;
        }
    }
    if !changed {
        txn.abort()?;
        return Ok(results);
    }
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })?;
    txn.commit()?;
    if durable {
        SYNCED.fetch_add(1, Ordering::Relaxed);
        w.synced.fetch_add(1, Ordering::Relaxed);
    }
    Ok(results)
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
