//! Logs to the client: the `logging` capability, `logging/setLevel` and
//! `notifications/message`, one [`ClientLog`] per session.
//!
//! Owns what a session is sent and when: messages at or above the level the client set
//! (`info` until it sets one), redacted by every detector (the same style as the audit
//! log), at most [`BURST`] at once and [`PER_SECOND`] a second after that (a chatty
//! config cannot flood a host: what is dropped is counted and said once there is room),
//! and in the order they were said (one queue per session, drained by one task). It
//! also carries the session's progress notifications, so a call's progress and logs
//! keep their order. It decides nothing about what is worth saying: the engine does
//! (`engine::Reporter`, `engine::Notice`).

// SEP-2577 deprecates logging in the 2026-07-28 revision; the sessions that use it (up
// to 2025-11-25, every host today) are the ones it serves.
#![allow(deprecated)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam};
use rmcp::{Peer, RoleServer};
use tokio::sync::{mpsc, oneshot};

use crate::config::policy::RedactionSpec;
use crate::engine::{Engine, Level};
use crate::redact::{DetectorSet, redact_text};
use crate::util::Clock;

/// How many messages may go out at once.
pub(crate) const BURST: u32 = 30;
/// How many messages a second may go out after a burst.
pub(crate) const PER_SECOND: u32 = 10;
/// How many messages wait to be sent before more are dropped.
const QUEUE: usize = 256;

/// Every message is redacted in the style of the audit log.
static STYLE: LazyLock<RedactionSpec> = LazyLock::new(RedactionSpec::default);

/// The level a session gets before it sets one.
const DEFAULT_LEVEL: LoggingLevel = LoggingLevel::Info;

/// What goes to the client, in order.
#[derive(Debug)]
enum Out {
    Log(LoggingLevel, String),
    Progress(ProgressNotificationParam),
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// One session's log: its level, its rate limit and its queue.
#[derive(Debug)]
pub(crate) struct ClientLog {
    level: AtomicU8,
    limit: Mutex<Bucket>,
    queue: mpsc::Sender<Out>,
    /// Taken by [`ClientLog::start`].
    receiver: Mutex<Option<mpsc::Receiver<Out>>>,
}

impl ClientLog {
    /// A log that sends nothing until [`Self::start`] gives it the session's peer.
    pub(crate) fn new(clock: Clock) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            level: AtomicU8::new(rank(DEFAULT_LEVEL)),
            limit: Mutex::new(Bucket::new(clock)),
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// `logging/setLevel`: messages below `level` are not sent from now on.
    pub(crate) fn set_level(&self, level: LoggingLevel) {
        self.level.store(rank(level), Ordering::SeqCst);
    }

    /// Starts sending to `peer` (once per session), and forwards the engine's notices
    /// about the server until the session ends.
    pub(crate) fn start(self: &Arc<Self>, peer: Peer<RoleServer>, engine: &Engine) {
        let Some(mut rx) = self
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let sent = match out {
                    Out::Log(level, message) => {
                        let mut param = LoggingMessageNotificationParam::new(level, message.into());
                        param.logger = Some("mcpd".to_owned());
                        peer.notify_logging_message(param).await
                    }
                    Out::Progress(p) => peer.notify_progress(p).await,
                    Out::Flush(done) => {
                        let _ = done.send(());
                        Ok(())
                    }
                };
                if sent.is_err() {
                    break; // the client went away
                }
            }
        });
        let mut notices = engine.notices();
        let log = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Ok(n) => match log.upgrade() {
                        Some(log) => {
                            log.say(n.level, &n.message);
                        }
                        None => break,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        if let Some(log) = log.upgrade() {
                            log.say(Level::Warning, &format!("{n} server messages were skipped"));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Whether the session listens at `level` (`logging/setLevel`).
    pub(crate) fn listens(&self, level: Level) -> bool {
        rank(to_mcp(level)) >= self.level.load(Ordering::SeqCst)
    }

    /// Sends `message` at `level` if the session listens at that level and the rate limit
    /// has room; redacted first. Returns whether it was queued.
    pub(crate) fn say(&self, level: Level, message: &str) -> bool {
        if !self.listens(level) {
            return false;
        }
        let level = to_mcp(level);
        let dropped = match self
            .limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(dropped) => dropped,
            None => return false,
        };
        let mut noted = false;
        if dropped > 0 {
            let note =
                format!("mcpd dropped {dropped} log message(s): more than {PER_SECOND} a second");
            noted = self.enqueue(Out::Log(LoggingLevel::Warning, note));
        }
        let (text, _) = redact_text(message, DetectorSet::ALL, &STYLE);
        self.enqueue(Out::Log(level, text)) || noted
    }

    /// Queues a progress notification (progress is not rate-limited: a call sends at
    /// most one a second and one per retry).
    pub(crate) fn progress(&self, mut p: ProgressNotificationParam) {
        p.message = p
            .message
            .map(|m| redact_text(&m, DetectorSet::ALL, &STYLE).0);
        self.enqueue(Out::Progress(p));
    }

    /// Waits until everything queued so far has been sent (or the session is gone), so
    /// a call's logs and progress go out before its result.
    pub(crate) async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.queue.try_send(Out::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sent).await;
        }
    }

    /// Queues `out`; false when the session's queue is full (dropped).
    fn enqueue(&self, out: Out) -> bool {
        let queued = self.queue.try_send(out).is_ok();
        if !queued {
            tracing::debug!("a client log message was dropped: the session's queue is full");
        }
        queued
    }
}

/// MCP's name for a level.
fn to_mcp(level: Level) -> LoggingLevel {
    match level {
        Level::Debug => LoggingLevel::Debug,
        Level::Info => LoggingLevel::Info,
        Level::Notice => LoggingLevel::Notice,
        Level::Warning => LoggingLevel::Warning,
        Level::Error => LoggingLevel::Error,
    }
}

/// The level's place in MCP's order, lowest first.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// A token bucket: [`BURST`] tokens, refilled at [`PER_SECOND`]; counts what it refuses.
#[derive(Debug)]
struct Bucket {
    clock: Clock,
    /// Tokens, in thousandths.
    milli: u64,
    at_ms: u64,
    dropped: u64,
}

impl Bucket {
    fn new(clock: Clock) -> Self {
        let at_ms = clock.now_ms();
        Self {
            clock,
            milli: u64::from(BURST) * 1000,
            at_ms,
            dropped: 0,
        }
    }

    /// A token, with how many messages were refused since the last one (and resets
    /// that count); `None` when there is none and the message must be dropped.
    fn take(&mut self) -> Option<u64> {
        let now = self.clock.now_ms();
        let refill = now.saturating_sub(self.at_ms) * u64::from(PER_SECOND);
        self.milli = (self.milli + refill).min(u64::from(BURST) * 1000);
        self.at_ms = now;
        if self.milli < 1000 {
            self.dropped += 1;
            return None;
        }
        self.milli -= 1000;
        Some(std::mem::take(&mut self.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_what_was_dropped_is_counted() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
        let mut b = Bucket::new(clock.clone());
        for _ in 0..BURST {
            assert_eq!(b.take(), Some(0));
        }
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        // A tenth of a second later one more may go, and it says two were dropped.
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.take(), Some(2));
        assert_eq!(b.take(), None);
        // After a quiet minute the bucket is full again, never more.
        clock.advance(Duration::from_secs(60));
        for _ in 0..BURST {
            assert!(b.take().is_some());
        }
        assert_eq!(b.take(), None);
    }

    #[tokio::test]
    async fn messages_below_the_level_are_not_queued_and_the_rest_are_redacted() {
        let log = ClientLog::new(Clock::system());
        let mut rx = log.receiver.lock().unwrap().take().unwrap();
        log.say(Level::Debug, "not at info");
        log.say(Level::Info, "retrying for ann@example.com");
        log.set_level(LoggingLevel::Error);
        log.say(Level::Warning, "not at error");
        log.say(Level::Error, "failed");
        log.set_level(LoggingLevel::Debug);
        log.say(Level::Debug, "now at debug");
        let mut got = Vec::new();
        while let Ok(Out::Log(level, text)) = rx.try_recv() {
            got.push((rank(level), text));
        }
        assert_eq!(
            got,
            vec![
                (1, "retrying for a***@example.com".to_owned()),
                (4, "failed".to_owned()),
                (0, "now at debug".to_owned()),
            ]
        );
    }

    #[test]
    fn every_engine_level_has_its_mcp_name() {
        for (level, name) in [
            (Level::Debug, "debug"),
            (Level::Info, "info"),
            (Level::Notice, "notice"),
            (Level::Warning, "warning"),
            (Level::Error, "error"),
        ] {
            assert_eq!(
                serde_json::to_value(to_mcp(level)).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(level.as_str(), name);
        }
    }
}
