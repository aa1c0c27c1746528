//! Steps 8a and 10b of a call: circuit breakers. Before limits count the call, an open
//! breaker on its tool or upstream refuses it at once (writes always; reads when the
//! breaker says so); after the send, its outcome counts toward each breaker.
//!
//! Owns turning breaker states into the call's result (a refusal saying when to retry)
//! and what is written when one opens or closes: a log line, the metrics and, for an
//! opening, an audit record. What a breaker counts and when it opens is
//! `limits::breaker`'s.

use super::result::Failure;
use super::{Call, Engine};
use crate::audit::BreakerEvent;
use crate::limits::Breaker;
use crate::limits::breaker::{Opened, Status};
use crate::upstream::Reply;
use crate::util::duration::human;

/// A breaker a call passed, to count its outcome toward.
pub(super) struct Armed<'a> {
    breaker: &'a Breaker,
    key: String,
    generation: u64,
}

impl Engine {
    /// Step 8a: the tool's and its upstream's breakers; an open one refuses the call
    /// (unless it is a read and the breaker lets reads through).
    pub(super) async fn breakers<'a>(&self, c: &Call<'a>) -> Result<Vec<Armed<'a>>, Failure> {
        let (tool, catalog) = (c.tool, c.catalog);
        let upstream = catalog.breakers.get(&tool.request.upstream.name);
        let mut armed = Vec::new();
        let write = !matches!(
            tool.request.method,
            reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
        );
        for breaker in tool.breaker.iter().chain(upstream) {
            let key = breaker.key(c.result.region.as_deref());
            let now = self.clock.now_ms();
            let status = breaker
                .status(self.store.as_ref(), &key, now)
                .await
                .map_err(super::steps::state_failure)?;
            match status {
                Status::Open(opened) => {
                    self.noticed(&key, Some(&opened));
                    if write || breaker.refuse_reads {
                        self.metrics.refusal(&tool.id, "breaker");
                        return Err(Failure::Limited(breaker.refusal(&key, &opened, now, write)));
                    }
                    // A read let through an open breaker still counts (toward its next
                    // window, not the one that opened it).
                    armed.push(Armed {
                        breaker,
                        key,
                        generation: opened.until_ms,
                    });
                }
                Status::Closed { generation } => {
                    self.noticed(&key, None);
                    armed.push(Armed {
                        breaker,
                        key,
                        generation,
                    });
                }
            }
        }
        Ok(armed)
    }

    /// Step 10b: the send's outcome counts toward each breaker the call passed: a 5xx
    /// reply, a timeout or a failed connection is a failure; an answer below 500 is not.
    pub(super) async fn observe(
        &self,
        c: &Call<'_>,
        armed: &[Armed<'_>],
        reply: &Result<Reply, Failure>,
    ) {
        let failed = reply.as_ref().map_or(true, |r| r.status >= 500);
        for a in armed {
            let now = self.clock.now_ms();
            let opened = a
                .breaker
                .observe(self.store.as_ref(), &a.key, a.generation, failed, now)
                .await;
            match opened {
                Ok(Some(opened)) => self.opened(c, a, &opened),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(breaker = %a.key, error = %e, "could not count a call toward its circuit breaker");
                }
            }
        }
    }

    /// This call's failure opened a breaker: logged, counted, audited.
    fn opened(&self, c: &Call<'_>, a: &Armed<'_>, opened: &Opened) {
        self.breaker_seen.note(&a.key, true);
        self.metrics.breaker_opened(&a.key);
        let until = rfc3339(opened.until_ms);
        tracing::warn!(
            breaker = %a.key,
            calls = opened.calls,
            errors = opened.errors,
            until = %until,
            "circuit breaker opened: writes are refused until it closes"
        );
        if let Some(audit) = &self.audit {
            audit.record(&BreakerEvent {
                event: "breaker",
                breaker: a.key.clone(),
                state: "open",
                until,
                calls: opened.calls,
                errors: opened.errors,
                over: human(a.breaker.over),
                tool: c.tool.id.clone(),
                trace_id: c.result.trace_id.clone(),
            });
        }
    }

    /// Logs and shows a breaker's state when this process sees it change (one another
    /// replica opened, or one that closed by itself).
    fn noticed(&self, key: &str, open: Option<&Opened>) {
        match (self.breaker_seen.note(key, open.is_some()), open) {
            (Some(true), Some(o)) => {
                self.metrics.breaker_state(key, true);
                tracing::warn!(breaker = %key, until = %rfc3339(o.until_ms), "circuit breaker is open: writes are refused until it closes");
            }
            (Some(false), _) => {
                self.metrics.breaker_state(key, false);
                tracing::info!(breaker = %key, "circuit breaker closed: calls go through again");
            }
            _ => {}
        }
    }
}

fn rfc3339(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}
