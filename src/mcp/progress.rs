//! A call's reporter: its log messages to the session's [`ClientLog`], and its
//! progress as `notifications/progress` when the request carried a `progressToken`.
//!
//! Owns the progress of one call: the attempts and backoff of retries (said by the
//! engine), and a heartbeat every second for a call that takes longer than that, each
//! one step further (`progress` only ever increases; the total is unknown). It must not
//! block the call: everything is queued on the session's log.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};

use super::logging::ClientLog;
use crate::engine::{Level, Reporter};

/// How often a slow call says it is still running.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// One call's reporter.
#[derive(Debug)]
pub(crate) struct CallReport {
    log: Arc<ClientLog>,
    token: Option<ProgressToken>,
    step: AtomicU64,
    /// Whether the call queued anything (a log message or progress) to wait for.
    said: AtomicBool,
}

impl CallReport {
    /// A reporter for a call whose request carried `token` (or none).
    pub(crate) fn new(log: Arc<ClientLog>, token: Option<ProgressToken>) -> Self {
        Self {
            log,
            token,
            step: AtomicU64::new(0),
            said: AtomicBool::new(false),
        }
    }

    /// Runs `call`, saying every [`HEARTBEAT`] that it still runs (when progress was
    /// asked for), then waits until everything it said was sent (a call that said
    /// nothing waits for nothing: no hop through the session's log, no timer).
    pub(crate) async fn around<T>(&self, tool: &str, call: impl Future<Output = T>) -> T {
        let out = if self.token.is_none() {
            call.await
        } else {
            tokio::pin!(call);
            let started = tokio::time::Instant::now();
            let mut beat = tokio::time::interval_at(started + HEARTBEAT, HEARTBEAT);
            loop {
                tokio::select! {
                    out = &mut call => break out,
                    _ = beat.tick() => {
                        let secs = started.elapsed().as_secs();
                        self.progress(&format!("{tool}: still running after {secs} s"));
                    }
                }
            }
        };
        if self.said.load(Ordering::SeqCst) {
            self.log.flush().await;
        }
        out
    }
}

impl Reporter for CallReport {
    fn log(&self, level: Level, message: &str) {
        // Only what was queued is waited for: a message the session does not listen to
        // (or the rate limit drops) costs no flush.
        if self.log.say(level, message) {
            self.said.store(true, Ordering::SeqCst);
        }
    }

    fn listens(&self, level: Level) -> bool {
        self.log.listens(level)
    }

    fn progress(&self, message: &str) {
        let Some(token) = &self.token else { return };
        self.said.store(true, Ordering::SeqCst);
        let step = self.step.fetch_add(1, Ordering::SeqCst) + 1;
        let mut p = ProgressNotificationParam::new(token.clone(), step as f64);
        p.message = Some(message.to_owned());
        self.log.progress(p);
    }
}
