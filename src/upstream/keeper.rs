//! A standing runtime timer while an upstream is busy, so its requests' timeouts do not
//! wake the runtime.
//!
//! Each request arms a timer for its timeout (reqwest's). tokio's time driver wakes
//! itself (a write to the runtime's eventfd, and one more turn of its loop) whenever a
//! new timer is due earlier than the earliest one it parked with; a runtime that parked
//! with no timer earlier than the connection pool's idle check (90 s) was woken so by
//! every request. While requests go out, this keeps one timer armed, due within
//! [`PERIOD`] (re-armed each time it fires), which is earlier than any request's deadline
//! of at least that long: those then arm without a wake. It stops after a [`PERIOD`]
//! without a request, so an idle server has no timer of its own. There is one keeper per
//! thread ([`sending`]): each runtime has its own timers, and every runtime that serves
//! calls (stdio, each of `serve --http`'s serving threads) is a current-thread one.
//!
//! Owns only that timer. It changes no timeout: each request's own timer fires exactly
//! as before. It must never hold a request up (it only sets flags and spawns).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the standing timer fires while requests go out: shorter than the timeouts
/// upstreams usually have (10 s by default); a shorter timeout still works, with the
/// wake it always had.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

thread_local! {
    /// This thread's keeper, so its runtime's.
    static HERE: Arc<Keeper> = Arc::default();
}

/// Notes a request about to go out from this thread: its runtime keeps a standing timer
/// while requests go out (see [`Keeper::sending`]).
pub(crate) fn sending() {
    HERE.with(Keeper::sending);
}

/// One runtime's standing timer.
#[derive(Debug, Default)]
pub(crate) struct Keeper {
    /// A timer task is running (on the runtime that sent the first request).
    armed: AtomicBool,
    /// A request went out since the timer last fired.
    busy: AtomicBool,
}

impl Keeper {
    /// Notes a request about to go out; starts the timer task when none runs. Outside
    /// a tokio runtime, does nothing.
    pub(crate) fn sending(self: &Arc<Self>) {
        self.busy.store(true, Ordering::Relaxed);
        if self.armed.load(Ordering::Relaxed) || self.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.armed.store(false, Ordering::Release);
            return;
        };
        let keeper = Disarm(Arc::clone(self));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PERIOD).await;
                if !keeper.0.busy.swap(false, Ordering::AcqRel) {
                    break;
                }
            }
            drop(keeper);
        });
    }

    #[cfg(test)]
    fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }
}

/// Disarms the keeper when its task ends, or is dropped with its runtime.
struct Disarm(Arc<Keeper>);

impl Drop for Disarm {
    fn drop(&mut self) {
        self.0.armed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timer_runs_while_requests_go_out_and_stops_a_period_after_the_last() {
        let keeper = Arc::new(Keeper::default());
        assert!(!keeper.armed());
        // Requests every tenth of a period, for longer than a period: armed throughout.
        let until = tokio::time::Instant::now() + PERIOD + PERIOD / 2;
        while tokio::time::Instant::now() < until {
            keeper.sending();
            assert!(keeper.armed());
            tokio::time::sleep(PERIOD / 10).await;
        }
        // No more requests: disarmed within two periods (polled, with a deadline).
        let deadline = tokio::time::Instant::now() + PERIOD * 5;
        while keeper.armed() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no timer stays armed on an idle upstream"
            );
            tokio::time::sleep(PERIOD / 20).await;
        }
        keeper.sending();
        assert!(keeper.armed(), "the next request arms it again");
    }

    #[test]
    fn a_runtime_that_shuts_down_disarms_it_for_the_next() {
        let keeper = Arc::new(Keeper::default());
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        first.block_on(async { keeper.sending() });
        assert!(keeper.armed());
        drop(first);
        assert!(!keeper.armed());
        // Outside a runtime: nothing armed, nothing spawned.
        keeper.sending();
        assert!(!keeper.armed());
    }
}
