//! The engine: one tool call, from lookup to record, in the order of
//! docs/ARCHITECTURE.md.
//!
//! [`Engine::call`] and `Engine::steps` read top to bottom as the pipeline, one or two
//! lines a step; each step's work lives in the module that owns it, and the small
//! methods below and in `steps.rs` only adapt it to the call (fill the result, turn
//! errors into [`Failure`]s the model can act on). The engine holds the current catalog as an
//! atomically swapped snapshot: a call finishes on the snapshot it started with. It
//! knows nothing of MCP.

mod approval;
mod breaker;
mod keys;
mod present;
mod record;
mod report;
mod resource;
mod result;
mod steps;

pub use approval::{Answer, Approval, ApprovalRequest, Approver, may_ask};
pub(crate) use record::after_answer;
pub use report::{Level, Notice, Reporter};
pub use resource::{Read, ReadError};
pub use result::{
    CallContext, CallResult, Elevation, Failure, Link, PolicySeen, Shown, UnknownTool,
};

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::audit::AuditLog;
use crate::catalog::{Catalog, Tool};
use crate::idempotency::{self, ClaimInfo};
use crate::identity::Actor;
use crate::limits::{Metered, Refusal};
use crate::policy::{Decision, Facts, Request, Sent};
use crate::redact::{redact_text, redact_value};
use crate::store::Store;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::trace::TraceContext;
use crate::upstream::request::Parts;
use crate::upstream::{Prepared, Reply, Secrets};
use crate::util::{Clock, canonical_numbers};
use keys::Claimed;
use steps::{check_output, identify, render, render_parts, route, send, validate};

/// Runs calls against the current catalog.
#[derive(Debug)]
pub struct Engine {
    catalog: ArcSwap<Catalog>,
    audit: Option<AuditLog>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// What "now" is for budget windows.
    clock: Clock,
    /// Bumped after every swap; MCP sessions watch it to send `list_changed`.
    generation: tokio::sync::watch::Sender<u64>,
    /// Messages about the server (reloads), for the sessions that listen.
    notices: tokio::sync::broadcast::Sender<Notice>,
    /// What this process last saw of each circuit breaker.
    breaker_seen: crate::limits::breaker::Seen,
}

impl Engine {
    /// An engine serving `catalog`, keeping state in `store`.
    pub fn new(catalog: Catalog, store: Arc<dyn Store>) -> Self {
        Self {
            catalog: ArcSwap::from_pointee(catalog),
            audit: None,
            store,
            metrics: Arc::new(Metrics::new()),
            clock: Clock::system(),
            generation: tokio::sync::watch::Sender::new(0),
            notices: tokio::sync::broadcast::Sender::new(64),
            breaker_seen: crate::limits::breaker::Seen::default(),
        }
    }

    /// Records every call in `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Reads the time from `clock` (tests move time instead of sleeping).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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

    /// Listens to messages about the server (see [`Self::notice`]).
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Tells every listening session something about the server (nobody listening is
    /// fine: the same is logged on stderr by whoever calls this).
    pub fn notice(&self, level: Level, message: String) {
        let _ = self.notices.send(Notice { level, message });
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

    /// What `tools/list` shows the caller: `actor` as the transport verified it, else
    /// the stdio caller's token or the default actor, as a call would be identified.
    pub fn listing(&self, actor: Option<Arc<Actor>>) -> Vec<rmcp::model::Tool> {
        let catalog = self.catalog.load_full();
        let ctx = CallContext {
            actor,
            ..CallContext::default()
        };
        catalog.listing_for(Self::lister(&catalog, &ctx).as_deref())
    }

    /// Who a list is for: the caller as a call would identify it, or `None` when none
    /// can be established (lists then show everything; each call says why it is
    /// refused).
    pub fn lister(catalog: &Catalog, ctx: &CallContext) -> Option<Arc<Actor>> {
        identify(catalog, ctx).ok()
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
        self.call_on(&self.catalog.load_full(), name, args, ctx)
            .await
    }

    /// [`Self::call`] on `catalog`, a snapshot the caller took (with [`Self::catalog`])
    /// to decide something about the call first, e.g. whether it may ask a human.
    ///
    /// # Errors
    /// Only for a tool that does not exist; every other failure is in the result.
    pub async fn call_on(
        &self,
        catalog: &Catalog,
        name: &str,
        args: Option<Map<String, Value>>,
        ctx: &CallContext,
    ) -> Result<CallResult, UnknownTool> {
        // 1. look up the tool in the current snapshot; the call finishes on this snapshot
        //    (a tool declared as a resource only is not called as a tool)
        let tool = (catalog.get(name))
            .filter(|t| t.is_tool())
            .ok_or_else(|| UnknownTool(name.to_owned()))?;
        // Boxed: the call's state is large, and the futures around it (the transport's
        // task, spans, the reporter) are moved whole on the way in; a box moves as a
        // pointer.
        Ok(Box::pin(self.run(catalog, tool, args, ctx)).await)
    }

    /// Steps 2 to 12 of a call of `tool`, from `catalog`.
    async fn run(
        &self,
        catalog: &Catalog,
        tool: &Tool,
        args: Option<Map<String, Value>>,
        ctx: &CallContext,
    ) -> CallResult {
        let started = Instant::now();
        // 2. identify the actor: verified by the transport, the stdio caller's token, or
        //    the configured default actor; otherwise refused as unauthenticated
        let actor = identify(catalog, ctx);
        let mut call = Call::new(catalog, tool, args, ctx, actor.as_deref());
        let source = actor.as_ref().map_or("none", |a| a.source.as_str());
        let span = record::open(tool, &mut call.trace, &call.result.actor, source);
        call.result.trace_id.clone_from(&call.trace.trace_id);
        call.result.outcome = match &actor {
            Ok(actor) => self.steps(&mut call, actor).instrument(span.clone()).await,
            Err(f) => Err(f.clone()),
        };
        // 11b. present: media, text, and a result too large to send inline kept for the
        //      caller behind a link (present.rs)
        self.present(&mut call).instrument(span.clone()).await;
        call.result.elapsed = started.elapsed();
        // 12. record: the span's fields, a log line, metrics, the SLO sample and the audit
        //     record (written before the call is answered)
        let audit = self.audit.as_ref();
        record::finish(&span, tool, &call.args, &call.result, &self.metrics, audit);
        call.result
    }

    /// Steps 3 to 11, for an identified actor; fills the result on the way.
    async fn steps(&self, c: &mut Call<'_>, actor: &Actor) -> Result<Value, Failure> {
        // 3. validate the arguments against the input schema, before anything reads them
        validate(c.tool, &c.args)?;
        // 3b. canonical numbers, once: an integer written 1e1, 8.0 or -0 is 10, 8, 0 for
        //     policy, the idempotency key and the request alike
        canonical_numbers(&mut c.args);
        // 4. scope: a tool (or environment) outside the actor's scopes goes no further
        (actor.check_scope(&c.tool.id, &c.args)).map_err(|e| Failure::Denied(e.to_string()))?;
        // 5. policy: enforced rules decide (deny wins), shadow rules are only recorded;
        //    the actor's elevation grant is read only for tools whose rules look at it,
        //    the request rendered first only when a rule judges what is sent; a denial
        //    a ticket or a yes could lift, or a destructive tool, is put to the human
        //    when the client can ask (approval.rs)
        let decision = self.policy(c, actor).await?;
        // 6. route: the upstream's URL for the decided region, never another region's
        let base = route(c, &decision)?;
        // 7. idempotency, before limits because a replay is free (no upstream call,
        //    nothing counted): a finished key replays, a key in flight or with its
        //    outcome unknown is refused, a new key is claimed durably before anything
        //    is sent (keys.rs)
        let claim = match self.claim(c, base).await? {
            Claimed::Replay(outcome) => return outcome,
            Claimed::New(claim) => claim,
        };
        let outcome = async {
            // 8. limits: an open circuit breaker refuses at once (8a); stop rules, rates
            //    and budgets counted in one store write, then the concurrency permit,
            //    held until the reply is mapped
            let armed = self.breakers(c).await?;
            let _permit = self.admit(c).await?;
            // 9. render the request (with traceparent, Idempotency-Key and the caller's
            //    identity where the upstream asks for it), check egress
            let out = render(c, base, claim.as_ref(), actor).await?;
            // 9b. a write leaves an audit record of intent before it is sent
            self.intent(c, &out);
            // 10. send with the tool's timeout; only idempotent requests are retried; a
            //     client's cancellation aborts it, settled below as a timeout would be
            let reply = send(c, &out, claim.is_some() && c.tool.dedupes()).await;
            // 10b. the outcome counts toward the breakers (5xx, timeout, no connection)
            self.observe(c, &armed, &reply).await;
            let reply = reply?;
            // 11. map the reply: status to error, select, masks, detectors, output schema
            self.map(c, &decision, &reply, out.secrets).await
        }
        .await;
        // 7b. the key keeps this outcome when the upstream answered (< 500), is released
        //     when nothing reached it, and is held when the outcome is unknown
        self.settle(c, claim, outcome).await
    }

    /// Step 5: renders the request first when a rule selects or reads what is sent (step
    /// 9 then sends exactly that), reads the elevation grant when a rule needs it,
    /// evaluates the rules.
    async fn policy(&self, c: &mut Call<'_>, actor: &Actor) -> Result<Decision, Failure> {
        let (catalog, tool) = (c.catalog, c.tool);
        let plan = &tool.request;
        let mut request = Request {
            upstream: &plan.upstream.name,
            method: plan.method.as_str(),
            path_shape: &plan.path_shape,
            sent: None,
        };
        let sent = if catalog.policy.needs_request(&tool.id, &request) {
            let parts = render_parts(c)?;
            let sent = Sent::new(
                request.upstream,
                request.method,
                &parts.path,
                &parts.query,
                parts.body.as_ref(),
            );
            c.parts = Some(parts);
            Some(sent)
        } else {
            None
        };
        request.sent = sent.as_ref();
        let needs_grant = catalog.policy.needs_elevation(&tool.id, &request);
        let grant = match &catalog.identity {
            Some(identity) if needs_grant => {
                let store = self.store.as_ref();
                crate::identity::elevation::find(store, identity, &actor.subject, &tool.id, &c.args)
                    .await
                    .map_err(|e| {
                        Failure::State(format!(
                            "cannot read elevation grants, so the call was not sent: {e}"
                        ))
                    })?
            }
            _ => None,
        };
        let elevation = grant.as_ref().map(crate::identity::elevation::Grant::facts);
        c.result.ticket = grant.map(|g| g.ticket);
        let span = record::policy_span();
        let mut decision = evaluate(c, actor, request, elevation.as_ref(), &span);
        // What policy saw, for `mcpd backtest`: a call denied after asking a human is
        // recorded with this; an approved one with the answer as its elevation.
        c.result.policy = Some(PolicySeen {
            actor: actor.facts().clone(),
            env: catalog.env.clone(),
            elevation: match elevation {
                Some(facts) => Elevation::Grant(facts),
                // Without identity no grant can exist: that is known too.
                None if needs_grant || catalog.identity.is_none() => Elevation::None,
                None => Elevation::NotRead,
            },
            sent: sent.clone(),
            denied_by: decision.denial.as_ref().map(|(rule, _)| rule.clone()),
        });
        if let Some(given) = approval::ask(self, c, &decision).await? {
            decision = evaluate(c, actor, request, Some(&given), &span);
            if let Some(seen) = c.result.policy.as_mut() {
                seen.elevation = Elevation::Grant(given);
                seen.denied_by = decision.denial.as_ref().map(|(rule, _)| rule.clone());
            }
        }
        if let Some(t) = &c.result.ticket {
            span.record("ticket", t.as_str());
        }
        report::decision(c, &decision);
        match &decision.denial {
            Some((rule, reason)) => Err(Failure::Denied(format!("{reason} [rule {rule}]"))),
            None => Ok(decision),
        }
    }

    /// Step 8: counts the call against every limit, then takes the concurrency permit.
    async fn admit(
        &self,
        c: &mut Call<'_>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Failure> {
        let (limits, tool) = (&c.catalog.limits, c.tool);
        if limits.counts_repeats() {
            c.digest();
        }
        let counted = match c.counted.take() {
            Some(counted) => counted,
            None => {
                let now = self.clock.now_ms();
                (limits.admit(self.store.as_ref(), &c.metered(), now)).await
            }
        };
        match counted {
            Ok(left) => {
                record::budgets_left(&self.metrics, &left);
                report::budgets(c, &left);
            }
            // A read-only tool may run uncounted while the store is down (on_state_outage).
            Err(Refusal::State(e)) if tool.limits.serve_on_state_outage => {
                tracing::warn!(tool = %tool.id, error = %e,
                    "state store unreachable: serving uncounted (limits.on_state_outage: serve)");
            }
            Err(r) => {
                let actor = c.result.actor.as_str();
                record::refused(&self.metrics, &tool.id, actor, &r);
                return Err(match r {
                    Refusal::Rate(m) => Failure::Limited(m),
                    Refusal::Budget(m) | Refusal::Stop { message: m, .. } => Failure::Denied(m),
                    Refusal::State(_) => Failure::State(r.to_string()),
                });
            }
        }
        match &tool.limits.cap {
            None => Ok(None),
            Some(cap) => cap.try_acquire().map(Some).ok_or_else(|| {
                self.metrics.refusal(&tool.id, "cap");
                Failure::Limited(format!(
                    "tool '{}' already has {} calls in flight (its concurrency cap); retry when one finishes",
                    tool.id, cap.max
                ))
            }),
        }
    }

    /// Step 11: the reply as the model gets it, redacted; charges a cost it reports.
    async fn map(
        &self,
        c: &mut Call<'_>,
        decision: &Decision,
        reply: &Reply,
        secrets: &Secrets,
    ) -> Result<Value, Failure> {
        let (tool, redaction) = (c.tool, &c.catalog.policy.redaction);
        if !(200..300).contains(&reply.status) {
            let upstream = &tool.request.upstream.name;
            let msg = (tool.response).error_message(
                &tool.templates,
                upstream,
                reply.status,
                &reply.body,
                &c.args,
            );
            // Error bodies are results too: the call's detectors apply to them.
            let (msg, _) = redact_text(&msg, decision.detectors, redaction);
            return Err(Failure::UpstreamStatus(reply.status, secrets.scrub(msg)));
        }
        if let Some(described) = present::media(c, reply) {
            return Ok(described);
        }
        let mapped = (tool.response)
            .map_success(&tool.id, &reply.body)
            .map_err(|e| Failure::Response(e.to_string()))?;
        let mut structured = mapped.structured;
        let redacted = redact_value(&mut structured, decision.detectors, redaction);
        c.result.masked = mapped.masked + redacted;
        present::text_reply(c, mapped.text, &structured);
        check_output(tool, &structured)?;
        if let Some(path) = &tool.cost.from_response {
            self.charge_reply(c, path, &reply.body).await;
        }
        Ok(structured)
    }

    /// Adds the cost the reply reports to the budgets; a reply without it is logged.
    async fn charge_reply(
        &self,
        c: &Call<'_>,
        path: &crate::response::jsonpath::JsonPath,
        body: &[u8],
    ) {
        let cost = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| path.select(&v).first().and_then(|n| n.as_f64()));
        let tool = &c.tool.id;
        let Some(cost) = cost else {
            tracing::warn!(tool = %tool, "the reply has no number at cost.from_response; nothing charged");
            return;
        };
        let (store, now) = (self.store.as_ref(), self.clock.now_ms());
        let actor = c.result.actor.as_str();
        if let Err(e) = c
            .catalog
            .limits
            .charge_reply(store, tool, actor, cost, now)
            .await
        {
            tracing::error!(error = %e, tool = %tool, "could not charge the reply's cost to budgets");
        }
    }
}

/// Evaluates the rules for the call (with `elevation` as its elevation), records the
/// decision on `span` and the result.
fn evaluate(
    c: &mut Call<'_>,
    actor: &Actor,
    request: Request<'_>,
    elevation: Option<&Value>,
    span: &tracing::Span,
) -> Decision {
    let decision = span.in_scope(|| {
        c.catalog.policy.evaluate(&Facts {
            tool: &c.tool.id,
            request,
            args: &c.args,
            actor: actor.facts(),
            elevation,
            env: &c.catalog.env,
        })
    });
    let verdict = if decision.denial.is_some() {
        "deny"
    } else {
        "allow"
    };
    tracing::record_all!(
        span,
        decision = verdict,
        rules = decision.matched.join(","),
        shadow = decision.shadow.join(","),
    );
    c.result.rules.clone_from(&decision.matched);
    c.result.shadow.clone_from(&decision.shadow);
    decision
}

/// One call in progress: what its steps read, and the result they fill.
struct Call<'a> {
    catalog: &'a Catalog,
    tool: &'a Tool,
    args: Value,
    trace: TraceContext,
    client_key: Option<&'a str>,
    cancelled: Option<&'a tokio_util::sync::CancellationToken>,
    result: CallResult,
    /// The arguments as templates see them, converted once per call.
    template_args: Option<minijinja::Value>,
    /// The arguments' digest, computed once per call when a step needs it.
    digest: Option<String>,
    /// The claim this call holds on its idempotency key, as stored.
    claimed: Option<ClaimInfo>,
    /// Whether a request may have reached the upstream (anything past a failed connect).
    reached: bool,
    /// The request's parts, when policy judged them before they are sent.
    parts: Option<Parts>,
    /// Who can approve the call, if anyone.
    approver: Option<&'a dyn Approver>,
    /// Where the call's messages go, if anywhere.
    reporter: Option<&'a dyn Reporter>,
    /// What the transport said about the call (for a call it makes in turn: the
    /// ticket system's lookup).
    ctx: &'a CallContext,
    /// The limits already counted with the idempotency claim (step 7), for step 8.
    counted: Option<Result<Vec<crate::limits::Left>, Refusal>>,
}

impl<'a> Call<'a> {
    fn new(
        catalog: &'a Catalog,
        tool: &'a Tool,
        args: Option<Map<String, Value>>,
        ctx: &'a CallContext,
        actor: Result<&Actor, &Failure>,
    ) -> Self {
        let trace = ctx.trace.clone().unwrap_or_else(TraceContext::start);
        let result = CallResult {
            tool: tool.id.clone(),
            outcome: Err(Failure::Denied(String::new())),
            masked: 0,
            status: None,
            elapsed: std::time::Duration::ZERO,
            trace_id: trace.trace_id.clone(),
            actor: actor.map_or_else(|_| "unauthenticated".to_owned(), |a| a.subject.clone()),
            rules: Vec::new(),
            shadow: Vec::new(),
            region: None,
            idempotency_key: None,
            replayed: false,
            held: false,
            intent: None,
            ticket: None,
            forwarded: None,
            approval: None,
            shown: result::Shown::default(),
            policy: None,
        };
        Self {
            catalog,
            tool,
            args: Value::Object(args.unwrap_or_default()),
            trace,
            client_key: ctx.idempotency_key.as_deref(),
            cancelled: ctx.cancelled.as_ref(),
            result,
            template_args: None,
            digest: None,
            claimed: None,
            reached: false,
            parts: None,
            counted: None,
            approver: ctx.approver.as_deref(),
            reporter: ctx.reporter.as_deref(),
            ctx,
        }
    }

    /// Tells the caller `message` at `level`, when it listens.
    fn log(&self, level: Level, message: impl FnOnce() -> String) {
        if let Some(r) = self.reporter
            && r.listens(level)
        {
            r.log(level, &message());
        }
    }

    fn template_args(&mut self) -> &minijinja::Value {
        self.template_args
            .get_or_insert_with(|| crate::template::to_value(&self.args))
    }

    /// The call as limits count it (the digest as computed so far).
    fn metered(&self) -> Metered<'_> {
        Metered {
            tool: &self.tool.id,
            actor: &self.result.actor,
            args_digest: self.digest.as_deref().unwrap_or_default(),
            limits: &self.tool.limits,
            cost: &self.tool.cost,
        }
    }

    fn digest(&mut self) -> &str {
        self.digest
            .get_or_insert_with(|| idempotency::digest(&self.args))
    }
}

/// A rendered request on its way out: the request, the secrets it holds (to scrub from
/// messages) and its `upstream.request` span.
struct Outgoing<'a> {
    request: Prepared,
    secrets: &'a Secrets,
    span: tracing::Span,
}
