//! The engine: one tool call, from lookup to answer, in the order of DESIGN.md.
//!
//! `Engine::call` reads top to bottom as the pipeline. Each step lives in its own
//! module; this one only sequences them and turns every failure into a tool error the
//! model can act on. It holds the current catalog as an atomically swapped snapshot:
//! a call finishes on the snapshot it started with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

use tracing::Instrument;

use crate::audit::{AuditLog, Entry as AuditEntry};
use crate::catalog::{BodyTpl, Catalog, DEFAULT_IDEM_TTL, Tool};
use crate::idempotency::{self, Begin, Claim, Stored};
use crate::limits::Refusal;
use crate::policy::Facts;
use crate::redact::Redactor;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::TraceContext;
use crate::template::TemplateSet;
use crate::upstream::Prepared;

/// A call to a tool nobody declared: a protocol error, not a tool error.
#[derive(Debug, thiserror::Error)]
#[error("unknown tool '{0}'")]
pub struct UnknownTool(pub String);

/// Why a call produced no result. Each kind's message says what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The arguments do not match the input schema.
    InvalidArguments(String),
    /// Policy refused the call; the upstream saw nothing.
    Denied(String),
    /// The request could not be built (template, missing secret, egress).
    Request(String),
    /// The upstream could not be reached or timed out.
    Unreachable(String),
    /// The upstream answered with an error status.
    UpstreamStatus(u16, String),
    /// The reply could not be mapped to a result.
    Response(String),
    /// A rate limit, concurrency cap or in-flight idempotency key refused the call;
    /// says when to retry.
    Limited(String),
    /// The state store failed; nothing was sent.
    State(String),
    /// No valid identity: no token (and no default actor), or a token that does not
    /// verify.
    Unauthenticated(String),
}

impl Failure {
    /// A short kind name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArguments(_) => "invalid_arguments",
            Self::Denied(_) => "denied",
            Self::Request(_) => "request",
            Self::Unreachable(_) => "unreachable",
            Self::UpstreamStatus(..) => "upstream_status",
            Self::Response(_) => "response",
            Self::Limited(_) => "limited",
            Self::State(_) => "state",
            Self::Unauthenticated(_) => "unauthenticated",
        }
    }

    /// The message the model reads.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidArguments(m) => format!("invalid arguments: {m}"),
            Self::Denied(m) => format!("denied by policy: {m}"),
            Self::Unauthenticated(m) => format!("unauthenticated: {m}"),
            Self::Request(m)
            | Self::Unreachable(m)
            | Self::Response(m)
            | Self::Limited(m)
            | Self::State(m)
            | Self::UpstreamStatus(_, m) => m.clone(),
        }
    }
}

/// The result of one call.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The tool's id.
    pub tool: String,
    /// The structured result (always an object), or why there is none.
    pub outcome: Result<Value, Failure>,
    /// Values masked in the result.
    pub masked: usize,
    /// The upstream's HTTP status, when a request was sent.
    pub status: Option<u16>,
    /// Time spent in mcpd and the upstream.
    pub elapsed: Duration,
    /// The W3C trace id the call ran in.
    pub trace_id: String,
    /// Who made the call (the actor's subject).
    pub actor: String,
    /// Enforced rules that matched.
    pub rules: Vec<String>,
    /// Shadow rules that matched, as `id:effect`.
    pub shadow: Vec<String>,
    /// The region the call was routed to.
    pub region: Option<String>,
    /// The idempotency key the call ran under.
    pub idempotency_key: Option<String>,
    /// The result is a stored one: the upstream was not called again.
    pub replayed: bool,
    /// The ticket of the elevation grant the call ran under.
    pub ticket: Option<String>,
}

/// What the caller sent beside the arguments (from the request's `_meta`).
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// W3C `traceparent` of the caller's span.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// Idempotency key the client supplied in `_meta` (`dev.mcpd/idempotencyKey`);
    /// it takes precedence over the tool's key template.
    pub idempotency_key: Option<String>,
    /// The verified caller (`subject`, `scopes`, `purpose`, `region`, ...); `None` runs
    /// as the configured default actor.
    pub actor: Option<Value>,
}

/// Runs calls against the current catalog.
#[derive(Debug)]
pub struct Engine {
    catalog: ArcSwap<Catalog>,
    audit: Option<AuditLog>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Bumped after every swap; MCP sessions watch it to send `list_changed`.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Engine {
    /// An engine serving `catalog`, keeping state in `store`.
    pub fn new(catalog: Catalog, store: Arc<dyn Store>) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(catalog),
            audit: None,
            store,
            metrics: Arc::new(Metrics::new()),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Records every call in `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The metrics every call updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The audit log, if one is open.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// Watches catalog swaps: the value changes after each one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The current snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Replaces the snapshot; calls in flight keep the one they started with.
    pub fn swap(&self, catalog: Catalog) {
        self.catalog.store(Arc::new(catalog));
        // Watchers are woken after the store, so a list they fetch sees the new tools.
        self.generation.send_modify(|g| *g += 1);
    }

    /// One call through the whole pipeline.
    ///
    /// # Errors
    /// Only for a tool that does not exist; every other failure is in the result.
    pub async fn call(
        &self,
        name: &str,
        args: Option<Map<String, Value>>,
        ctx: &CallContext,
    ) -> Result<CallResult, UnknownTool> {
        let started = Instant::now();
        // 1. look up the tool in the current snapshot
        let catalog = self.catalog.load_full();
        let tool = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownTool(name.to_owned()))?;
        let args = Value::Object(args.unwrap_or_default());
        let mut trace =
            TraceContext::continue_or_start(ctx.traceparent.as_deref(), ctx.tracestate.as_deref());
        let mut result = CallResult {
            tool: tool.id.clone(),
            outcome: Err(Failure::Denied(String::new())),
            masked: 0,
            status: None,
            elapsed: Duration::ZERO,
            trace_id: trace.trace_id.clone(),
            actor: String::new(),
            rules: Vec::new(),
            shadow: Vec::new(),
            region: None,
            idempotency_key: None,
            replayed: false,
            ticket: None,
        };
        // 2. identify the actor: verified by the transport, the stdio token, or the
        //    configured default actor; never anonymous.
        let actor = resolve_actor(&catalog, ctx);
        let actor_source = match &actor {
            Ok(a) => {
                result.actor = a
                    .get("subject")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_owned();
                a.get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("transport")
            }
            Err(_) => {
                result.actor = "unauthenticated".to_owned();
                "none"
            }
        }
        .to_owned();
        let span = tracing::info_span!(
            "tool.call",
            tool = %tool.id,
            trace_id = %trace.trace_id,
            actor = %result.actor,
            actor.source = %actor_source,
            ticket = tracing::field::Empty,
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
        if tracing::Span::current().is_none() {
            crate::telemetry::continue_trace(&span, &trace);
        }
        if let Some((trace_id, _)) = crate::telemetry::ids(&span) {
            trace.trace_id = trace_id;
            span.record("trace_id", trace.trace_id.as_str());
        }
        let subject = result.actor.clone();
        result.outcome = match &actor {
            Err(f) => Err(f.clone()),
            Ok(actor) => {
                let call = Call {
                    catalog: &catalog,
                    tool: &tool,
                    args: &args,
                    actor,
                    subject: &subject,
                    trace: &trace,
                    store: self.store.as_ref(),
                    metrics: &self.metrics,
                    client_key: ctx.idempotency_key.as_deref(),
                };
                run(&call, &mut result).instrument(span.clone()).await
            }
        };
        if let Some(t) = &result.ticket {
            span.record("ticket", t.as_str());
        }
        result.elapsed = started.elapsed();
        span.record("decision", decision(&result.outcome));
        span.record("pii.count", result.masked);
        if !result.rules.is_empty() {
            span.record("rules", result.rules.join(","));
        }
        if !result.shadow.is_empty() {
            span.record("shadow", result.shadow.join(","));
        }
        if let Some(s) = result.status {
            span.record("http.status", s);
        }
        if let Some(k) = &result.idempotency_key {
            span.record("idempotency.key", k.as_str());
        }
        span.in_scope(|| log_call(&result));
        self.metrics.call(
            &tool.id,
            decision(&result.outcome),
            result.elapsed.as_secs_f64(),
            result.masked,
        );
        if let Some(slo) = &tool.slo {
            slo.observe(&tool.id, result.elapsed);
        }
        // 11. record
        if let Some(audit) = &self.audit {
            audit.record(&audit_entry(&result, &args));
        }
        Ok(result)
    }
}

/// Everything one call's steps read.
struct Call<'a> {
    catalog: &'a Catalog,
    tool: &'a Tool,
    args: &'a Value,
    actor: &'a Value,
    subject: &'a str,
    trace: &'a TraceContext,
    store: &'a dyn Store,
    metrics: &'a Metrics,
    client_key: Option<&'a str>,
}

/// Steps 2 to 10; fills `result.status` and `result.masked` on the way.
async fn run(c: &Call<'_>, result: &mut CallResult) -> Result<Value, Failure> {
    let (catalog, tool, args) = (c.catalog, c.tool, c.args);
    // 3. validate the arguments before anything else sees them
    validate_args(tool, args)?;
    // 3b. scopes: a tool (or environment) outside the actor's scopes goes no further
    crate::identity::check_scope(c.actor, &tool.id, args).map_err(Failure::Denied)?;
    // 4. policy: enforced rules decide, shadow rules are only recorded; the caller's
    //    elevation grant is looked up only for tools whose rules read it
    let grant = match &catalog.identity {
        Some(identity) if catalog.policy.needs_elevation(&tool.id) => {
            crate::identity::elevation::find(c.store, identity, c.subject, &tool.id, args)
                .await
                .map_err(|e| Failure::State(format!("cannot read elevation grants: {e}")))?
        }
        _ => None,
    };
    let elevation = grant.as_ref().map(crate::identity::elevation::Grant::facts);
    let decision = {
        let span = tracing::info_span!(
            "policy.evaluate",
            decision = tracing::field::Empty,
            rules = tracing::field::Empty,
            shadow = tracing::field::Empty,
            ticket = tracing::field::Empty,
        );
        let _entered = span.enter();
        let d = catalog.policy.evaluate(&Facts {
            tool: &tool.id,
            args,
            actor: c.actor,
            elevation: elevation.as_ref(),
            env: &catalog.env,
        });
        span.record(
            "decision",
            if d.denial.is_some() { "deny" } else { "allow" },
        );
        span.record("rules", d.matched.join(","));
        span.record("shadow", d.shadow.join(","));
        if let Some(g) = &grant {
            span.record("ticket", g.ticket.as_str());
        }
        d
    };
    result.ticket = grant.map(|g| g.ticket);
    result.rules.clone_from(&decision.matched);
    result.shadow.clone_from(&decision.shadow);
    if let Some((rule, reason)) = &decision.denial {
        return Err(Failure::Denied(format!("{reason} [rule {rule}]")));
    }
    // 7a. region routing: a region the upstream cannot serve is refused, never sent elsewhere
    let base = match &decision.route {
        None => &tool.request.upstream.base,
        Some(region) => tool.request.upstream.base_for(Some(region)).ok_or_else(|| {
            Failure::Denied(format!(
                "this call's data must stay in region '{region}', and upstream '{}' has no '{region}' endpoint",
                tool.request.upstream.name
            ))
        })?,
    };
    result.region.clone_from(&decision.route);
    // 5. idempotency: a repeat replays, a concurrent repeat is refused, never sent twice
    let claim = match idempotency_key(c)? {
        None => None,
        Some(key) => {
            result.idempotency_key = Some(key.clone());
            let ttl = tool
                .idempotency
                .as_ref()
                .map_or(DEFAULT_IDEM_TTL, |p| p.ttl);
            let budget = tool.request.timeout * (u32::from(tool.request.retries) + 1);
            match idempotency::begin(c.store, &tool.id, c.subject, key, budget, ttl)
                .await
                .map_err(state_failure)?
            {
                Begin::Replay(stored) if stored.args != crate::limits::digest(args) => {
                    return Err(Failure::InvalidArguments(format!(
                        "idempotency key '{}' was already used with other arguments; use a new key for a different write",
                        result.idempotency_key.as_deref().unwrap_or_default()
                    )));
                }
                Begin::Replay(stored) => {
                    c.metrics.replay(&tool.id);
                    return replay(stored, result);
                }
                Begin::InFlight(key) => {
                    c.metrics.refusal(&tool.id, "in_flight");
                    return Err(Failure::Limited(format!(
                        "a call with idempotency key '{key}' is still in flight; retry in a few seconds to get its result (it is never sent twice)"
                    )));
                }
                Begin::Claimed(claim) => Some(claim),
            }
        }
    };
    let outcome = send_and_map(c, &decision, base, claim.as_ref(), result).await;
    if let Some(claim) = &claim {
        match result.status {
            // The upstream answered: this outcome is the key's for its whole TTL.
            Some(status) if status < 500 => {
                let stored = Stored {
                    status,
                    ok: outcome.as_ref().ok().cloned(),
                    error: outcome.as_ref().err().map(Failure::message),
                    trace_id: c.trace.trace_id.clone(),
                    args: crate::limits::digest(c.args),
                };
                if let Err(e) = idempotency::finish(c.store, claim, &stored).await {
                    tracing::error!(error = %e, tool = %tool.id, "the write was sent but its idempotency record could not be stored; a retry after the claim lapses may repeat it");
                }
            }
            // Never sent, or its effect is unknown: a retry may go (same Idempotency-Key).
            _ => idempotency::abandon(c.store, claim).await,
        }
    }
    outcome
}

/// The key for this call: the client's (from `_meta`) or the tool's template.
/// Who is calling: the transport's verified actor, the stdio caller's token, or the
/// configured default actor; otherwise the call is refused.
fn resolve_actor(catalog: &Catalog, ctx: &CallContext) -> Result<Value, Failure> {
    if let Some(a) = &ctx.actor {
        return Ok(a.clone());
    }
    if let Some(identity) = &catalog.identity {
        match identity.stdio_actor() {
            Ok(Some(actor)) => return Ok(actor),
            Ok(None) => {}
            Err(e) => return Err(Failure::Unauthenticated(e.to_string())),
        }
    }
    if !catalog.actor.is_null() {
        return Ok(catalog.actor.clone());
    }
    Err(Failure::Unauthenticated(match &catalog.identity {
        Some(identity) => crate::identity::TokenError::Missing(identity.token_source()).to_string(),
        None => "no actor: this mcpd has neither identity (tokens) nor a default_actor in mcpd.yaml; configure one (README: Identity)".to_owned(),
    }))
}

fn idempotency_key(c: &Call<'_>) -> Result<Option<String>, Failure> {
    let key = match (c.client_key, &c.tool.idempotency) {
        (Some(k), _) => k.to_owned(),
        (None, Some(plan)) => {
            let ctx = minijinja::context! { args => crate::template::to_value(c.args) };
            c.tool
                .templates
                .render_text(&plan.key, &ctx)
                .map_err(|e| Failure::Request(format!("idempotency key template failed: {e}")))?
        }
        (None, None) => return Ok(None),
    };
    idempotency::check_key(&key).map_err(|e| Failure::InvalidArguments(e.to_string()))?;
    Ok(Some(key))
}

/// A stored outcome, returned as this call's.
fn replay(stored: Stored, result: &mut CallResult) -> Result<Value, Failure> {
    result.status = Some(stored.status);
    result.replayed = true;
    match (stored.ok, stored.error) {
        (Some(v), _) => Ok(v),
        (None, e) => {
            let msg = e.unwrap_or_default();
            Err(if (200..300).contains(&stored.status) {
                Failure::Response(msg)
            } else {
                Failure::UpstreamStatus(stored.status, msg)
            })
        }
    }
}

fn state_failure(e: StoreError) -> Failure {
    Failure::State(format!(
        "mcpd's state store failed, so the call was not sent: {e}"
    ))
}

/// Steps 5b to 10: limits, render, send, map.
async fn send_and_map(
    c: &Call<'_>,
    decision: &crate::policy::Decision,
    base: &reqwest::Url,
    claim: Option<&Claim>,
    result: &mut CallResult,
) -> Result<Value, Failure> {
    let (catalog, tool, args) = (c.catalog, c.tool, c.args);
    // 5b. stop rules, rate limits and budgets, counted in the state store
    let left = catalog
        .spend
        .admit(c.store, tool, c.subject, args)
        .await
        .map_err(|r| refusal(r, c))?;
    for l in &left {
        c.metrics.budget_left(&l.budget, l.unit, &l.scope, l.left);
    }
    if let Some(least) = left.iter().min_by(|a, b| a.left.total_cmp(&b.left)) {
        tracing::Span::current().record(
            "budget.remaining",
            format!(
                "{}:{}={}",
                least.budget,
                least.unit,
                crate::limits::amount(least.left)
            ),
        );
    }
    // 5c. the concurrency permit is held until the call returns
    let _permit = match &tool.limits.cap {
        Some(cap) => Some(cap.try_acquire().ok_or_else(|| {
            c.metrics.refusal(&tool.id, "cap");
            Failure::Limited(format!(
                "tool '{}' already has {} calls in flight (its concurrency cap); retry when one finishes",
                tool.id, cap.max
            ))
        })?),
        None => None,
    };
    // 7. render the request and check egress on the final URL
    let secrets = read_secrets(tool)?;
    let mut prepared = render(&tool.templates, tool, base, args, &secrets)?;
    let upstream_span = tracing::info_span!(
        "upstream.request",
        upstream = %tool.request.upstream.name,
        http.method = %tool.request.method,
        server.address = prepared.url.host_str().unwrap_or_default(),
        http.status = tracing::field::Empty,
        attempts = tracing::field::Empty,
    );
    // The upstream continues the trace under this request's span (exported or not).
    let traceparent = crate::telemetry::ids(&upstream_span).map_or_else(
        || c.trace.child_traceparent(),
        |(trace_id, span_id)| format!("00-{trace_id}-{span_id}-{}", c.trace.flags),
    );
    prepared
        .headers
        .push(("traceparent".to_owned(), traceparent));
    if let Some(state) = &c.trace.tracestate {
        prepared
            .headers
            .push(("tracestate".to_owned(), state.clone()));
    }
    if let Some(claim) = claim {
        prepared
            .headers
            .push(("Idempotency-Key".to_owned(), claim.key.clone()));
    }
    catalog
        .egress
        .check(&prepared.url)
        .map_err(Failure::Denied)?;
    // 8. send; only idempotent requests are retried
    let reply = send_with_retries(tool, prepared, claim.is_some())
        .instrument(upstream_span.clone())
        .await
        .map_err(|e| Failure::Unreachable(scrub(e.to_string(), &secrets)))?;
    upstream_span.record("http.status", reply.status);
    result.status = Some(reply.status);
    // 9. map the response
    if !(200..300).contains(&reply.status) {
        let msg = tool.response.error_message(
            &tool.templates,
            &tool.request.upstream.name,
            reply.status,
            &reply.body,
            args,
        );
        // Error bodies are results too: the call's detectors apply to them.
        let (msg, _) = Redactor::new(
            decision.detectors.iter().copied(),
            &catalog.policy.redaction,
        )
        .redact_text(&msg);
        return Err(Failure::UpstreamStatus(reply.status, scrub(msg, &secrets)));
    }
    let mapped = tool
        .response
        .map_success(&reply.body)
        .map_err(|e| Failure::Response(e.to_string()))?;
    let mut structured = mapped.structured;
    let redacted = Redactor::new(
        decision.detectors.iter().copied(),
        &catalog.policy.redaction,
    )
    .redact_value(&mut structured);
    result.masked = mapped.masked + redacted;
    if let Some(out) = &tool.output {
        let errors: Vec<String> = out
            .iter_errors(&structured)
            .take(3)
            .map(|e| format!("{}: {e}", pointer_or_root(&e.instance_path().to_string())))
            .collect();
        if !errors.is_empty() {
            return Err(Failure::Response(format!(
                "the upstream's reply does not match the tool's output schema: {}",
                errors.join("; ")
            )));
        }
    }
    // 10. answer
    if let Some(path) = &tool.cost.from_response {
        charge_reply(c, path, &reply.body).await;
    }
    Ok(structured)
}

/// Sends, retrying a connection failure or a 502/503/504 when the request is idempotent
/// (GET, PUT, DELETE, or carrying an idempotency key). A timeout is never retried: the
/// first attempt may still be running.
async fn send_with_retries(
    tool: &Tool,
    prepared: Prepared,
    keyed: bool,
) -> Result<crate::upstream::Reply, crate::upstream::SendError> {
    use reqwest::Method;
    let method = &tool.request.method;
    let idempotent =
        keyed || *method == Method::GET || *method == Method::PUT || *method == Method::DELETE;
    let attempts = if idempotent {
        u32::from(tool.request.retries) + 1
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = tool.request.upstream.send(prepared.clone()).await;
        let transient = match &sent {
            Err(crate::upstream::SendError::Connect { .. }) => true,
            Ok(r) => matches!(r.status, 502..=504),
            Err(_) => false,
        };
        if !transient || attempt >= attempts {
            tracing::Span::current().record("attempts", attempt);
            return sent;
        }
        tracing::debug!(tool = %tool.id, attempt, "transient upstream failure; retrying");
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
    }
}

/// Adds the cost the reply reports to the budgets; a reply without it is logged.
async fn charge_reply(c: &Call<'_>, path: &crate::response::jsonpath::JsonPath, body: &[u8]) {
    let cost = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| path.select(&v).first().and_then(|n| n.as_f64()));
    match cost {
        Some(cost) => {
            if let Err(e) = c
                .catalog
                .spend
                .charge_reply(c.store, c.tool, c.subject, cost)
                .await
            {
                tracing::error!(error = %e, tool = %c.tool.id, "could not charge the reply's cost to budgets");
            }
        }
        None => {
            tracing::warn!(tool = %c.tool.id, "the reply has no number at cost.from_response; nothing charged")
        }
    }
}

/// A refusal from the spend checks, as the model reads it; stop rules raise an alert.
fn refusal(r: Refusal, c: &Call<'_>) -> Failure {
    let (tool, actor) = (&c.tool.id, c.subject);
    match r {
        Refusal::Rate(m) => {
            c.metrics.refusal(tool, "rate");
            Failure::Limited(m)
        }
        Refusal::Budget(m) => {
            c.metrics.refusal(tool, "budget");
            Failure::Denied(m)
        }
        Refusal::Stop { rule, message } => {
            c.metrics.refusal(tool, "stop");
            tracing::error!(alert = "runaway_loop", stop_rule = rule, actor, tool = %tool, "stop rule fired: calls refused");
            Failure::Denied(message)
        }
        Refusal::State(m) => Failure::State(m),
    }
}

fn validate_args(tool: &Tool, args: &Value) -> Result<(), Failure> {
    let errors: Vec<String> = tool
        .input
        .iter_errors(args)
        .map(|e| format!("{}: {e}", pointer_or_root(&e.instance_path().to_string())))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::InvalidArguments(errors.join("; ")))
    }
}

fn pointer_or_root(p: &str) -> String {
    if p.is_empty() {
        "(arguments)".to_owned()
    } else {
        format!("'{p}'")
    }
}

/// The values of the environment variables the tool reads as `secret.NAME`.
fn read_secrets(tool: &Tool) -> Result<Vec<(String, String)>, Failure> {
    tool.secrets
        .iter()
        .map(|name| {
            std::env::var(name).map(|v| (name.clone(), v)).map_err(|_| {
                Failure::Request(format!(
                    "mcpd is missing secret '{name}': set environment variable {name} for the mcpd process"
                ))
            })
        })
        .collect()
}

/// Replaces every secret value in `text`, so no error or log carries one.
fn scrub(mut text: String, secrets: &[(String, String)]) -> String {
    for (name, value) in secrets {
        if !value.is_empty() && text.contains(value.as_str()) {
            text = text.replace(value.as_str(), &format!("[secret {name}]"));
        }
    }
    text
}

fn render(
    templates: &TemplateSet,
    tool: &Tool,
    base_url: &reqwest::Url,
    args: &Value,
    secrets: &[(String, String)],
) -> Result<Prepared, Failure> {
    let plan = &tool.request;
    let secret_map: Map<String, Value> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let ctx = minijinja::context! {
        args => crate::template::to_value(args),
        secret => crate::template::to_value(&secret_map),
    };
    let fail = |field: &str, e: crate::template::RenderError| {
        Failure::Request(scrub(format!("tool '{}': {field}: {e}", tool.id), secrets))
    };
    // the base is the upstream's, or its region variant when policy routed the call
    let path = templates
        .render_text(&plan.path, &ctx)
        .map_err(|e| fail("request.path", e))?;
    let base = base_url.as_str().trim_end_matches('/');
    let mut url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| {
        Failure::Request(format!("tool '{}': rendered URL is invalid: {e}", tool.id))
    })?;
    if url.host_str() != base_url.host_str() {
        return Err(Failure::Request(format!(
            "tool '{}': rendered path changed the host",
            tool.id
        )));
    }
    if !plan.query.is_empty() {
        let mut pairs = Vec::with_capacity(plan.query.len());
        for (k, t) in &plan.query {
            let v = templates
                .render_text(t, &ctx)
                .map_err(|e| fail(&format!("request.query.{k}"), e))?;
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        url.query_pairs_mut().extend_pairs(pairs);
    }
    let mut headers = Vec::with_capacity(plan.headers.len());
    for (k, t) in &plan.headers {
        let v = templates
            .render_text(t, &ctx)
            .map_err(|e| fail(&format!("request.headers.{k}"), e))?;
        headers.push((k.clone(), v));
    }
    let body = match &plan.body {
        Some(b) => Some(render_body(templates, b, &ctx).map_err(|e| fail("request.body", e))?),
        None => None,
    };
    Ok(Prepared {
        method: plan.method.clone(),
        url,
        headers,
        body,
        timeout: plan.timeout,
    })
}

fn render_body(
    templates: &TemplateSet,
    body: &BodyTpl,
    ctx: &minijinja::Value,
) -> Result<Value, crate::template::RenderError> {
    Ok(match body {
        BodyTpl::Literal(v) => v.clone(),
        BodyTpl::Tpl(t) => templates.render_value(t, ctx)?,
        BodyTpl::Object(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(k.clone(), render_body(templates, v, ctx)?);
            }
            Value::Object(m)
        }
        BodyTpl::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_body(templates, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The decision a result stands for, as the audit log and spans name it.
fn decision(outcome: &Result<Value, Failure>) -> &'static str {
    match outcome {
        Ok(_) => "allowed",
        Err(Failure::Denied(_)) => "denied",
        Err(Failure::Limited(_)) => "limited",
        Err(Failure::State(_)) => "error",
        Err(Failure::Unauthenticated(_)) => "denied",
        Err(Failure::InvalidArguments(_)) => "invalid",
        Err(_) => "error",
    }
}

fn audit_entry(r: &CallResult, args: &Value) -> AuditEntry {
    AuditEntry {
        actor: r.actor.clone(),
        tool: r.tool.clone(),
        args: redact_for_record(args),
        rules: r.rules.clone(),
        shadow: r.shadow.clone(),
        decision: decision(&r.outcome).to_owned(),
        reason: r
            .outcome
            .as_ref()
            .err()
            .map(|f| Redactor::all().redact_text(&f.message()).0),
        status: r.status,
        trace_id: r.trace_id.clone(),
        pii_count: r.masked,
        idempotency_key: r.idempotency_key.clone(),
        ticket: r.ticket.clone(),
        replayed: r.replayed,
    }
}

/// Arguments as they may be recorded: every detector applied.
fn redact_for_record(v: &Value) -> Value {
    let mut copy = v.clone();
    Redactor::all().redact_value(&mut copy);
    copy
}

/// The share of successful calls that get a log line (`MCPD_LOG_SAMPLE`, 0 to 1, default
/// 1); failures and denials are always logged.
fn sampled() -> bool {
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let rate = *RATE.get_or_init(|| {
        std::env::var("MCPD_LOG_SAMPLE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(1.0, |r| r.clamp(0.0, 1.0))
    });
    rate >= 1.0
        || f64::from(
            uuid::Uuid::new_v4()
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(0),
        ) / 256.0
            < rate
}

fn log_call(r: &CallResult) {
    let micros = u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX);
    match &r.outcome {
        Ok(_) if !sampled() => {}
        Ok(_) => tracing::info!(
            tool = %r.tool,
            status = r.status,
            masked = r.masked,
            latency_us = micros,
            "call completed"
        ),
        Err(f) => tracing::info!(
            tool = %r.tool,
            status = r.status,
            error = f.kind(),
            latency_us = micros,
            "call failed"
        ),
    }
}
