//! Work the stdio fast path puts off until its thread has nothing to run: the log line
//! of an answered call, and freeing the call's result.
//!
//! At one call in flight a client often answers on the core mcpd runs on, and its next
//! request is waiting by the time mcpd is back from writing the answer: work done then
//! delays that request. Put off here, it is done when the runtime is about to sleep
//! ([`parked`], tokio's `on_thread_park`). When no call is running and a request is
//! already waiting (stdin readable), the first such moment is skipped, so the next
//! call's work runs first and the lines are written while it waits for its upstream. Owns the queue and when it is emptied.
//! It must never lose or reorder a call's lines: they are written in the order the calls
//! were answered, at the latest at the next moment the thread is idle twice in a row, when
//! [`MOST`] are queued, and when stdin ends ([`flush`], from the drain).

use std::cell::{Cell, RefCell};

use crate::engine::{CallResult, LogLines};

/// At most this many answered calls wait for their lines on a busy thread.
const MOST: usize = 64;

/// What an answered call left to do.
type Left = (LogLines, Option<CallResult>);

thread_local! {
    static QUEUE: RefCell<Vec<Left>> = const { RefCell::new(Vec::new()) };
    /// The thread's runtime calls [`parked`] (set by its first call).
    static HOOKED: Cell<bool> = const { Cell::new(false) };
    /// The last call of [`parked`] skipped the queue because a request was waiting.
    static SKIPPED: Cell<bool> = const { Cell::new(false) };
    /// Fast-path calls on this thread not yet answered.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// A fast-path call starts on this thread.
pub(crate) fn started() {
    RUNNING.with(|r| r.set(r.get() + 1));
}

/// A fast-path call started on this thread is answered (or will not be).
pub(crate) fn answered() {
    RUNNING.with(|r| r.set(r.get().saturating_sub(1)));
}

/// Puts off writing `lines` and freeing `result` until the thread is idle, when no other
/// call is running on it; otherwise (the thread stays busy: deferring measured dearer at
/// 16 in flight) and on a thread whose runtime does not call [`parked`], does both now,
/// after what is queued.
pub(crate) fn defer(lines: LogLines, result: Option<CallResult>) {
    if !HOOKED.with(Cell::get) || RUNNING.with(Cell::get) > 0 {
        flush();
        lines.write();
        drop(result);
        return;
    }
    let full = QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        q.push((lines, result));
        q.len() >= MOST
    });
    if full {
        flush();
    }
}

/// The runtime is about to sleep (its `on_thread_park` hook): writes what is queued,
/// unless no call is waiting for its upstream, a request is already waiting on stdin
/// and the last idle moment was not skipped too.
pub(crate) fn parked() {
    HOOKED.with(|h| h.set(true));
    if QUEUE.with(|q| q.borrow().is_empty()) {
        return;
    }
    // With a call waiting for its upstream the thread is idle until that answers; with
    // none, stdin is asked (one `poll`) whether the next request is already there.
    let waiting = RUNNING.with(Cell::get) == 0 && input_waiting();
    if waiting && !SKIPPED.with(|s| s.replace(true)) {
        return;
    }
    SKIPPED.with(|s| s.set(false));
    flush();
}

/// Writes every queued line now, in order, and frees the results.
pub(crate) fn flush() {
    // Taken first: writing a line may log, and logging must not find the queue borrowed.
    let left = QUEUE.with(RefCell::take);
    drop(left);
}

/// Whether stdin has something to read (or has ended), without reading it.
fn input_waiting() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, a count of 1, no wait.
    let ready = unsafe { libc::poll(&raw mut fd, 1, 0) };
    ready > 0 && fd.revents != 0
}
