//! The steps of a call that need no engine state: identify, validate, route, the
//! idempotency key, render and send, and the output check. `Engine::steps` calls them
//! in order.
//!
//! Owns adapting each step's module to the call (filling the result, turning errors
//! into [`Failure`]s). It decides nothing the step's own module decides.

use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument as _;

use super::record;
use super::report::{Level, retry_message};
use super::result::{CallContext, CallResult, Failure};
use super::{Call, Outgoing};
use crate::catalog::{Catalog, Tool};
use crate::idempotency::{self, Claim, Stored};
use crate::identity::Actor;
use crate::policy::Decision;
use crate::store::StoreError;
use crate::upstream::request::Parts;
use crate::upstream::{Reply, Retry, SendError};

/// Step 2: the transport's verified actor, the stdio caller's token, or the configured
/// default actor; otherwise the call is refused.
pub(super) fn identify(catalog: &Catalog, ctx: &CallContext) -> Result<Arc<Actor>, Failure> {
    if let Some(a) = &ctx.actor {
        return Ok(Arc::clone(a));
    }
    if let Some(identity) = &catalog.identity {
        match identity.stdio_actor() {
            Ok(Some(actor)) => return Ok(actor),
            Ok(None) => {}
            Err(e) => return Err(Failure::Unauthenticated(e.to_string())),
        }
    }
    if let Some(a) = &catalog.default_actor {
        return Ok(Arc::clone(a));
    }
    Err(Failure::Unauthenticated(match &catalog.identity {
        Some(identity) => crate::identity::TokenError::Missing(identity.token_source()).to_string(),
        None => "no actor: this mcpd has neither identity (tokens) nor a default_actor in mcpd.yaml; configure one (docs/identity.md)".to_owned(),
    }))
}

/// Step 3: every way the arguments miss the input schema, each at its JSON pointer.
pub(super) fn validate(tool: &Tool, args: &Value) -> Result<(), Failure> {
    // The common case without collecting errors (that walks the schema boxing each step).
    if tool.input.is_valid(args) {
        return Ok(());
    }
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

/// Step 6: the base URL for the decided region; a region the upstream cannot serve is
/// refused, never sent elsewhere.
pub(super) fn route<'c>(
    c: &mut Call<'c>,
    decision: &Decision,
) -> Result<&'c reqwest::Url, Failure> {
    let upstream = &c.tool.request.upstream;
    let base = match &decision.route {
        None => &upstream.base,
        Some(region) => upstream.base_for(Some(region)).ok_or_else(|| {
            Failure::Denied(format!(
                "this call's data must stay in region '{region}', and upstream '{}' has no '{region}' endpoint",
                upstream.name
            ))
        })?,
    };
    c.result.region.clone_from(&decision.route);
    Ok(base)
}

/// The key for this call: the client's (from `_meta`) or the tool's template.
pub(super) fn idempotency_key(c: &mut Call<'_>) -> Result<Option<String>, Failure> {
    let key = match (c.client_key, &c.tool.idempotency) {
        (Some(k), _) => k.to_owned(),
        (None, Some(plan)) => {
            let templates = &c.tool.templates;
            let ctx = minijinja::context! { args => c.template_args().clone() };
            templates
                .render_text(&plan.key, &ctx)
                .map_err(|e| Failure::Request(format!("idempotency key template failed: {e}")))?
        }
        (None, None) => return Ok(None),
    };
    idempotency::check_key(&key).map_err(|e| Failure::InvalidArguments(e.to_string()))?;
    Ok(Some(key))
}

/// A stored outcome, returned as this call's.
pub(super) fn replay(stored: Stored, result: &mut CallResult) -> Result<Value, Failure> {
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

pub(super) fn state_failure(e: StoreError) -> Failure {
    Failure::State(format!(
        "mcpd's state store failed, so the call was not sent: {e}"
    ))
}

/// The request's path, query, headers and body from the tool's templates (step 9, or
/// step 5 when policy judges them).
pub(super) fn render_parts(c: &mut Call<'_>) -> Result<Parts, Failure> {
    let tool = c.tool;
    let secrets = (tool.secrets.as_ref()).map_err(|e| Failure::Request(e.to_string()))?;
    let args = c.template_args().clone();
    (tool.request)
        .render_parts(&tool.id, &tool.templates, &args, secrets)
        .map_err(|e| Failure::Request(e.to_string()))
}

/// Step 9: the request rendered from the tool's templates (the parts policy judged, if
/// it did), with the trace and key headers and the caller's identity where the upstream
/// asks for it, checked against egress on its final URL.
pub(super) async fn render<'a>(
    c: &mut Call<'a>,
    base: &reqwest::Url,
    claim: Option<&Claim>,
    actor: &Actor,
) -> Result<Outgoing<'a>, Failure> {
    let tool = c.tool;
    let secrets = (tool.secrets.as_ref()).map_err(|e| Failure::Request(e.to_string()))?;
    let parts = match c.parts.take() {
        Some(parts) => parts,
        None => render_parts(c)?,
    };
    let mut request = (tool.request)
        .assemble(&tool.id, base, parts)
        .map_err(|e| Failure::Request(e.to_string()))?;
    let span = record::upstream_span(tool, request.url.host_str().unwrap_or_default());
    // The upstream continues the trace under this request's span (exported or not).
    let traceparent = crate::telemetry::ids(&span).map_or_else(
        || c.trace.child_traceparent(),
        |(trace_id, span_id)| format!("00-{trace_id}-{span_id}-{}", c.trace.flags),
    );
    let headers = &mut request.headers;
    headers.push(("traceparent".to_owned(), traceparent));
    if let Some(state) = &c.trace.tracestate {
        headers.push(("tracestate".to_owned(), state.clone()));
    }
    if let Some(claim) = claim {
        headers.push(("Idempotency-Key".to_owned(), claim.key.clone()));
    }
    if let Some((h, record)) = forwarded_identity(c, actor).await? {
        c.result.forwarded = Some(record);
        request
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(&h.0));
        request.headers.push(h);
    }
    (c.catalog.egress)
        .check(&request.url)
        .map_err(|e| Failure::Denied(e.to_string()))?;
    Ok(Outgoing {
        request,
        secrets,
        span,
    })
}

/// The header that tells the upstream who calls (`upstreams.*.identity`), if it asks,
/// and what the audit record says of it.
async fn forwarded_identity(
    c: &Call<'_>,
    actor: &Actor,
) -> Result<Option<((String, String), Value)>, Failure> {
    let catalog = c.catalog;
    let (Some(forward), Some(identity)) = (
        catalog.forwarding.get(&c.tool.request.upstream.name),
        catalog.identity.as_deref(),
    ) else {
        return Ok(None);
    };
    let call = crate::identity::forward::CallInfo {
        tool: &c.tool.id,
        trace_id: &c.trace.trace_id,
        ticket: c.result.ticket.as_deref(),
    };
    (forward.header(identity, actor, &call).await)
        .map(Some)
        .map_err(|e| Failure::Request(e.to_string()))
}

/// Step 10: sends, retrying a connection failure or a 502/503/504 only when the request
/// is idempotent (GET, PUT, DELETE, or keyed to an upstream that deduplicates); never
/// after a timeout, a refused address or a reply over `response.max_bytes`. Notes
/// whether anything may have reached the upstream. The client's cancellation aborts the
/// request.
pub(super) async fn send(
    c: &mut Call<'_>,
    out: &Outgoing<'_>,
    deduped: bool,
) -> Result<Reply, Failure> {
    let plan = &c.tool.request;
    let retries = if plan.retryable(deduped) {
        plan.retries
    } else {
        0
    };
    let (upstream, request) = (&plan.upstream.name, &out.request);
    c.log(Level::Debug, || {
        // Decoded, so the session log's detectors see values as they are (an email in a
        // query is `%40`-encoded on the wire) and secrets are scrubbed in their own form.
        let url = request.url.to_string();
        let url = out.secrets.scrub(
            percent_encoding::percent_decode_str(&url)
                .decode_utf8_lossy()
                .into_owned(),
        );
        format!(
            "{}: sending {} {url} (upstream '{upstream}')",
            c.tool.id, request.method
        )
    });
    let on_retry = |r: &Retry| {
        let message = retry_message(upstream, r);
        c.log(Level::Info, || message.clone());
        if let Some(reporter) = c.reporter {
            reporter.progress(&message);
        }
    };
    let started = std::time::Instant::now();
    let sending = (plan.upstream)
        .send_retrying(&c.tool.id, request, retries, &on_retry)
        .instrument(out.span.clone());
    let sent = match c.cancelled {
        None => sending.await,
        // Cancelled before anything went out: nothing reached the upstream.
        Some(token) if token.is_cancelled() => {
            return Err(Failure::Unreachable(
                "the client cancelled the call before it was sent; nothing reached the upstream"
                    .to_owned(),
            ));
        }
        Some(token) => tokio::select! {
            () = token.cancelled() => None,
            sent = sending => Some(sent),
        }
        .ok_or_else(|| {
            // Dropping the request aborts it. Once begun it may have reached the
            // upstream, as a timed-out one may: the call settles the same way.
            c.reached = true;
            tracing::info!(tool = %c.tool.id, "the client cancelled the call: upstream request aborted");
            Failure::Unreachable(
                "the client cancelled the call; the upstream request was aborted, so \
                 whether it took effect is unknown"
                    .to_owned(),
            )
        })?,
    };
    if let Ok(reply) = &sent.reply {
        c.log(Level::Debug, || {
            format!(
                "{}: upstream '{upstream}' answered HTTP {} in {} ms",
                c.tool.id,
                reply.status,
                started.elapsed().as_millis()
            )
        });
    }
    c.reached = sent.reached;
    let reply = match sent.reply {
        Ok(reply) => reply,
        // Never connected: the name resolved only to addresses egress does not list.
        Err(SendError::Refused(r)) => return Err(Failure::Denied(r.to_string())),
        // The upstream answered, with more than the tool reads.
        Err(e @ SendError::TooLarge { status, .. }) => {
            c.result.status = Some(status);
            return Err(Failure::Response(e.to_string()));
        }
        Err(e) => return Err(Failure::Unreachable(out.secrets.scrub(e.to_string()))),
    };
    out.span.record("http.status", reply.status);
    c.result.status = Some(reply.status);
    Ok(reply)
}

/// Step 11's last check: the selection against the tool's output schema, if it has one.
/// The message names where (a JSON pointer into `structuredContent`) and what, never
/// the value itself: a reply can be large, and it is the tool's author who must act.
pub(super) fn check_output(tool: &Tool, structured: &Value) -> Result<(), Failure> {
    let Some(out) = &tool.output else {
        return Ok(());
    };
    let (selection, prefix) = tool.response.selection(structured);
    let errors: Vec<String> = out
        .iter_errors(selection)
        .take(3)
        .map(|e| {
            let at = format!("{prefix}{}", e.instance_path());
            if at.is_empty() {
                e.masked_with("the result").to_string()
            } else {
                format!("'{at}': {}", e.masked_with("the value"))
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Response(format!(
            "the upstream's reply does not match the tool's output schema: {}",
            errors.join("; ")
        )))
    }
}

fn pointer_or_root(p: &str) -> String {
    if p.is_empty() {
        "(arguments)".to_owned()
    } else {
        format!("'{p}'")
    }
}
