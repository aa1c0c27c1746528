//! The embedded store's writer thread: it owns every write transaction, commits the
//! writes queued together as one (group commit), takes the lazy counters changed since
//! the last commit into it, journals the outcomes a commit left unsynced before their
//! callers hear back, and syncs within [`SYNC_WITHIN`] of the oldest unsynced change. It
//! must not answer a caller before what that caller is owed is on disk or journaled.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::super::record::{Op, Reply};
use super::super::{SYNC_WITHIN, StoreError};
use super::journal::{Entry, Journal};
use super::lazy::{self, Lazy};
use super::tables::Tables;
use super::{ENTRIES, EXPIRY, Job, MAX_BATCH, SWEEP_EVERY, SYNCED, Task};
use crate::util::Clock;

/// What the writer thread commits to: the database, its count of synced commits, the
/// lazy counters and the outcome journal.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) synced: Arc<AtomicU64>,
    pub(super) lazy: Arc<Lazy>,
    pub(super) journal: RefCell<Journal>,
}

/// Folds the outcomes a stopped mcpd journaled into the file, in one synced commit;
/// those expired by now are dropped. Returns how many were folded.
pub(super) fn fold(db: &Database, outcomes: Vec<Entry>, now: u64) -> Result<usize, redb::Error> {
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

pub(super) fn writer_loop(db: &Writer, queue: &mpsc::Receiver<Job>, clock: &Clock) {
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
                // Outcomes first, in a commit of their own: they are answered once
                // journaled, without waiting for the sync the durable writes queued
                // with them need. Calls queued together are concurrent, so either
                // order is one they could have had.
                let (fast, durable): (Vec<Job>, Vec<Job>) =
                    batch.into_iter().partition(|job| !job.task.durable());
                for part in [fast, durable] {
                    if part.is_empty() {
                        continue;
                    }
                    match run_batch(db, part, clock.now_ms()) {
                        Some(None) => unsynced = None,
                        Some(Some(since)) => {
                            unsynced = Some(unsynced.map_or(since, |u| u.min(since)))
                        }
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
