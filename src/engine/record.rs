//! Recording a call: the `tool.call` span and its children's fields, the log line on
//! stderr, the metrics, the SLO sample and the audit record.
//!
//! Owns what is written about a call and that nothing written carries raw arguments,
//! results or secrets: arguments, reasons and the idempotency key pass every detector
//! and the known secret values first. It decides
//! nothing about the call itself.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::result::{CallResult, Elevation, PolicySeen};
use crate::audit::{AuditLog, Entry as AuditEntry, Intent as AuditIntent, PolicyRecord};
use crate::catalog::Tool;
use crate::config::policy::RedactionSpec;
use crate::limits::{Left, Refusal, amount};
use crate::redact::{DetectorSet, redact_text, redact_value};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::TraceContext;

/// The style logs, traces and the audit log redact with: every detector's default.
static RECORD_STYLE: LazyLock<RedactionSpec> = LazyLock::new(RedactionSpec::default);

/// Opens the `tool.call` span for a call of `tool` by `actor` (established by
/// `source`), in the caller's trace; `trace.trace_id` becomes the span's trace id.
pub(super) fn open(
    tool: &Tool,
    trace: &mut TraceContext,
    actor: &str,
    source: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "tool.call",
        tool = %tool.id,
        trace_id = %trace.trace_id,
        actor = %actor,
        actor.source = %source,
        ticket = tracing::field::Empty,
        approval = tracing::field::Empty,
        approved_by = tracing::field::Empty,
        rules = tracing::field::Empty,
        shadow = tracing::field::Empty,
        decision = tracing::field::Empty,
        pii.count = tracing::field::Empty,
        http.status = tracing::field::Empty,
        idempotency.key = tracing::field::Empty,
        budget.remaining = tracing::field::Empty,
    );
    // Under `mcp.request` the caller's trace is already the parent; a call from the
    // command line continues it here. Exported spans and logs share one trace id.
    if crate::telemetry::enabled() && tracing::Span::current().is_none() {
        crate::telemetry::continue_trace(&span, trace);
    }
    if let Some((trace_id, _)) = crate::telemetry::ids(&span) {
        trace.trace_id = trace_id;
        span.record("trace_id", trace.trace_id.as_str());
    }
    span
}

/// The `policy.evaluate` span, a child of `tool.call`.
pub(super) fn policy_span() -> tracing::Span {
    tracing::info_span!(
        "policy.evaluate",
        decision = tracing::field::Empty,
        rules = tracing::field::Empty,
        shadow = tracing::field::Empty,
        ticket = tracing::field::Empty,
    )
}

/// The `upstream.request` span, a child of `tool.call`.
pub(super) fn upstream_span(tool: &Tool, host: &str) -> tracing::Span {
    tracing::info_span!(
        "upstream.request",
        upstream = %tool.request.upstream.name,
        http.method = %tool.request.method,
        server.address = host,
        http.status = tracing::field::Empty,
        attempts = tracing::field::Empty,
    )
}

/// What the budgets have left after the call was counted: metrics, and the least on
/// the current span.
pub(super) fn budgets_left(metrics: &Metrics, left: &[Left]) {
    for l in left {
        metrics.budget_left(&l.budget, l.unit, &l.scope, l.left);
    }
    if let Some(least) = left.iter().min_by(|a, b| a.left.total_cmp(&b.left)) {
        tracing::Span::current().record(
            "budget.remaining",
            format!("{}:{}={}", least.budget, least.unit, amount(least.left)),
        );
    }
}

/// Counts a refusal by limits; a stop rule also raises an alert.
pub(super) fn refused(metrics: &Metrics, tool: &str, actor: &str, r: &Refusal) {
    match r {
        Refusal::Rate(_) => metrics.refusal(tool, "rate"),
        Refusal::Budget(_) => metrics.refusal(tool, "budget"),
        Refusal::Stop { rule, .. } => {
            metrics.refusal(tool, "stop");
            tracing::error!(alert = "runaway_loop", stop_rule = rule, actor, tool = %tool, "stop rule fired: calls refused");
        }
        Refusal::State(_) => {}
    }
}

/// Everything written about a finished call: the span's fields, one log line, the
/// metrics, the SLO sample and the audit record (written before the call is answered).
pub(super) fn finish(
    span: &tracing::Span,
    tool: &Tool,
    args: &Value,
    result: &CallResult,
    metrics: &Metrics,
    audit: Option<&AuditLog>,
) {
    let decision = result.decision();
    // One record of every field (each `record` is a pass through every layer, and the
    // JSON log format re-parses the span's fields on each); the fields and their order
    // are those of one `record` per field, an absent one recording nothing.
    let approval = result.approval.as_ref();
    tracing::record_all!(
        span,
        ticket = result.ticket.as_deref(),
        approval = approval.map(|a| a.outcome),
        approved_by = approval.and_then(|a| a.by.as_deref()),
        decision = decision,
        pii.count = result.masked,
        rules = (!result.rules.is_empty())
            .then(|| result.rules.join(","))
            .as_deref(),
        shadow = (!result.shadow.is_empty())
            .then(|| result.shadow.join(","))
            .as_deref(),
        http.status = result.status,
        idempotency.key = result.idempotency_key.as_deref().map(shown_key).as_deref(),
    );
    log(span, result);
    metrics.call(
        &tool.id,
        decision,
        result.elapsed.as_secs_f64(),
        result.masked,
    );
    if let Some(slo) = &tool.slo {
        slo.observe(&tool.id, result.elapsed);
    }
    if let Some(audit) = audit {
        audit.record(&audit_entry(result, args));
    }
}

/// The audit record of intent for a write about to be sent: who, what, with which key.
pub(super) fn intent(tool: &Tool, args: &Value, r: &CallResult, method: &str) -> AuditIntent {
    let mut args = args.clone();
    redact_value(&mut args, DetectorSet::ALL, &RECORD_STYLE);
    AuditIntent {
        event: "intent",
        actor: r.actor.clone(),
        tool: r.tool.clone(),
        args,
        method: method.to_owned(),
        upstream: tool.request.upstream.name.clone(),
        idempotency_key: r.idempotency_key.as_deref().map(shown_key),
        ticket: r.ticket.clone(),
        trace_id: r.trace_id.clone(),
    }
}

fn audit_entry(r: &CallResult, args: &Value) -> AuditEntry {
    let mut redacted = Vec::new();
    let args = redacted_copy(args, "/args", &mut redacted);
    let policy = r.policy.as_ref().map(|p| policy_record(p, &mut redacted));
    AuditEntry {
        policy,
        redacted,
        intent: r.intent,
        outcome: r.held.then(|| "unknown".to_owned()),
        actor: r.actor.clone(),
        tool: r.tool.clone(),
        args,
        rules: r.rules.clone(),
        shadow: r.shadow.clone(),
        decision: r.decision().to_owned(),
        reason: r
            .outcome
            .as_ref()
            .err()
            .map(|f| redact_text(&f.message(), DetectorSet::ALL, &RECORD_STYLE).0),
        status: r.status,
        trace_id: r.trace_id.clone(),
        pii_count: r.masked,
        idempotency_key: r.idempotency_key.as_deref().map(shown_key),
        ticket: r.ticket.clone(),
        forwarded: r.forwarded.clone(),
        approval: r.approval.as_ref().map(|a| a.outcome.to_owned()),
        approved_by: r.approval.as_ref().and_then(|a| a.by.clone()),
        replayed: r.replayed,
    }
}

/// What policy saw, redacted as arguments are: every value the detectors change is
/// named in `redacted` (a pointer into the record).
fn policy_record(p: &PolicySeen, redacted: &mut Vec<String>) -> PolicyRecord {
    let mut actor = p.actor.clone();
    if let Value::Object(fields) = &mut actor {
        // The record's `actor` already names the subject.
        fields.remove("subject");
    }
    PolicyRecord {
        decision: if p.denied_by.is_some() {
            "deny"
        } else {
            "allow"
        },
        denied_by: p.denied_by.clone(),
        actor: redacted_copy(&actor, "/policy/actor", redacted),
        env: redacted_copy(&p.env, "/policy/env", redacted),
        elevation: match &p.elevation {
            Elevation::NotRead => None,
            Elevation::None => Some(Value::Null),
            Elevation::Grant(g) => Some(redacted_copy(g, "/policy/elevation", redacted)),
        },
    }
}

/// `value` with every detector applied; the pointer (under `at`) of each string they
/// changed is added to `changed`.
fn redacted_copy(value: &Value, at: &str, changed: &mut Vec<String>) -> Value {
    let mut copy = value.clone();
    if redact_value(&mut copy, DetectorSet::ALL, &RECORD_STYLE) > 0 {
        diff(value, &copy, at.to_owned(), changed);
    }
    copy
}

/// The pointers where `after` differs from `before` (detectors rewrite strings, numbers
/// shaped like cards and object keys). An object with a key they rewrote is named whole:
/// what was under the old key is no longer where a rule would read it, and the old key
/// itself must not reach the record.
fn diff(before: &Value, after: &Value, at: String, changed: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            if b.keys().any(|k| !a.contains_key(k)) {
                changed.push(at);
                return;
            }
            for (k, bv) in b {
                if let Some(av) = a.get(k) {
                    diff(
                        bv,
                        av,
                        format!("{at}/{}", crate::policy::pointer_step(k)),
                        changed,
                    );
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                diff(bv, av, format!("{at}/{i}"), changed);
            }
        }
        (b, a) if b != a => changed.push(at),
        _ => {}
    }
}

/// An idempotency key as records show it: a client's key, or one made of arguments,
/// gets the arguments' redaction.
fn shown_key(key: &str) -> String {
    redact_text(key, DetectorSet::ALL, &RECORD_STYLE).0
}

/// Whether this successful call gets a log line: `MCPD_LOG_SAMPLE` (0 to 1, default 1)
/// of them do, spread evenly (a running count, not a random draw); failures and
/// denials are always logged.
fn sampled() -> bool {
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let rate = *RATE.get_or_init(|| {
        std::env::var("MCPD_LOG_SAMPLE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(1.0, |r| r.clamp(0.0, 1.0))
    });
    if rate >= 1.0 {
        return true;
    }
    // The n-th call is logged when it moves floor(n * rate) on by one.
    let n = SEEN.fetch_add(1, Ordering::Relaxed) as f64;
    ((n + 1.0) * rate).floor() > (n * rate).floor()
}

/// A call's log line, held to be written after its answer (see [`after_answer`]).
#[derive(Debug)]
struct Line {
    /// The `tool.call` span the line is written in (its fields prefix the line).
    span: tracing::Span,
    tool: String,
    status: Option<u16>,
    masked: usize,
    micros: u64,
    /// The failure's kind; `None` for a call that completed.
    error: Option<&'static str>,
}

impl Line {
    fn write(&self) {
        self.span.in_scope(|| match self.error {
            None => tracing::info!(
                tool = %self.tool,
                status = self.status,
                masked = self.masked,
                latency_us = self.micros,
                "call completed"
            ),
            Some(kind) => tracing::info!(
                tool = %self.tool,
                status = self.status,
                error = kind,
                latency_us = self.micros,
                "call failed"
            ),
        });
    }
}

tokio::task_local! {
    /// The log lines of calls run under [`after_answer`], not yet written.
    static HELD: std::cell::RefCell<Vec<Line>>;
}

/// The log lines of the calls `run` makes, held back: written by
/// [`LogLines::write`], once their answer is out. Only a transport that writes the
/// answer itself uses it (the stdio fast path, the HTTP direct path); elsewhere a call's
/// line is written when it finishes.
pub(crate) async fn after_answer<T>(run: impl Future<Output = T>) -> (T, LogLines) {
    HELD.scope(std::cell::RefCell::new(Vec::new()), async {
        let out = run.await;
        let held = HELD.with(|h| h.take());
        (out, LogLines(held))
    })
    .await
}

/// Log lines held by [`after_answer`]; written when dropped, so a line is never lost
/// (a call finished after its client went away drops them with its answer).
#[derive(Debug)]
pub(crate) struct LogLines(Vec<Line>);

impl LogLines {
    /// Writes them, each in its call's span.
    pub(crate) fn write(self) {
        drop(self);
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        for line in self.0.drain(..) {
            line.write();
        }
    }
}

/// Writes (or holds) the log line of the call `span` records.
fn log(span: &tracing::Span, r: &CallResult) {
    let error = match &r.outcome {
        Ok(_) if !sampled() => return,
        Ok(_) => None,
        Err(f) => Some(f.kind()),
    };
    let line = Line {
        span: span.clone(),
        tool: r.tool.clone(),
        status: r.status,
        masked: r.masked,
        micros: u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
        error,
    };
    // Held when the call runs under `after_answer`, else written now.
    let mut line = Some(line);
    let _outside = HELD.try_with(|held| held.borrow_mut().extend(line.take()));
    if let Some(line) = line {
        line.write();
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_copy;
    use serde_json::json;

    #[test]
    fn an_object_with_a_rewritten_key_is_named_whole_and_the_old_key_never_recorded() {
        let args = json!({
            "email": "jane@corp.example",
            "tags": {"jane@corp.example": "vip", "plain": "x"},
            "n": 1
        });
        let mut changed = Vec::new();
        let copy = redacted_copy(&args, "/args", &mut changed);
        changed.sort();
        assert_eq!(changed, ["/args/email", "/args/tags"]);
        assert!(!copy.to_string().contains("jane@"), "{copy}");
        // a key among the arguments themselves: the arguments are named whole
        let mut changed = Vec::new();
        redacted_copy(&json!({"jane@corp.example": 1}), "/args", &mut changed);
        assert_eq!(changed, ["/args"]);
    }
}
