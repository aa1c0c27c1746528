//! Step 5b: a human's approval of one call, asked in-band through an [`Approver`] the
//! transport puts in the [`CallContext`](super::CallContext).
//!
//! Owns when a human is asked (a denial every rule of which a ticket or a yes could
//! lift, see [`Lift`]; a tool marked `destructiveHint` that policy allowed), what they
//! are told (what will be sent where, in plain words), and what their answer means: a
//! ticket (checked against `elevation.ticket_pattern`, then by a call of
//! `elevation.ticket_tool` as the caller when one is configured) or a yes is this one call's
//! elevation, seen by policy as `elevation` when the rules are evaluated again; a
//! decline, a cancel or no answer in time is a denial. The answer comes only from the
//! approver (for MCP: the elicitation response), never from the arguments or `_meta`.
//! Without an approver (`mcpd call`, `mcpd test`, a client without elicitation) nothing
//! is asked and the call goes on as before: a denial stays a denial.
//!
//! It never knows how the human is reached; `mcp` does.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::result::{CallContext, Failure};
use super::{Call, Engine};
use crate::catalog::{Catalog, Tool};
use crate::policy::{Decision, Lift, Request};
use crate::redact::{DetectorSet, redact_text};

/// Asks the human behind a call. Implemented by the MCP layer over elicitation.
#[async_trait::async_trait]
pub trait Approver: Send + Sync + fmt::Debug {
    /// Puts `request` to the human and waits (at most `request.timeout`) for the answer.
    async fn approve(&self, request: &ApprovalRequest) -> Answer;
}

/// What the human is asked.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The tool id.
    pub tool: String,
    /// What the call will do, in plain words: the request and where it goes.
    pub what: String,
    /// Why approval is needed: the denial's reason, or the tool being destructive.
    pub why: String,
    /// What would lift it: a change ticket, or a yes.
    pub ask: Lift,
    /// The pattern a ticket must match (`elevation.ticket_pattern`), to show the human.
    pub ticket_pattern: Option<String>,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Approved: with a ticket (when one was asked for), by whom.
    Approved {
        /// The change ticket given, if any.
        ticket: Option<String>,
        /// Who answered, as the approver knows them.
        by: String,
    },
    /// The human said no.
    Declined {
        /// Who answered.
        by: String,
    },
    /// The human dismissed the question without answering.
    Cancelled,
    /// No answer within the timeout.
    TimedOut,
    /// Nobody can be asked on this connection (no elicitation capability); the call
    /// goes on as if no approver were there.
    Unavailable,
    /// Asking failed (the connection broke, a malformed answer).
    Failed(String),
    /// The client cancelled the call before the human answered: the question no longer
    /// stands.
    Withdrawn,
}

/// How the call's approval came out, for the audit record and the span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// `ticket`, `confirmed`, `declined`, `cancelled`, `timeout`, `rejected` (a ticket of
    /// the wrong form, or one the ticket system does not confirm), `withdrawn` (the client
    /// cancelled the call first) or `failed`.
    pub outcome: &'static str,
    /// Who answered, when someone did.
    pub by: Option<String>,
}

impl Approval {
    /// Whether the human's answer approved the call.
    pub fn granted(&self) -> bool {
        matches!(self.outcome, "ticket" | "confirmed")
    }
}

/// What a destructive tool's call needs when policy allowed it: a yes, when the client
/// can ask.
fn destructive(c: &Call<'_>) -> bool {
    is_destructive(c.tool)
}

fn is_destructive(tool: &Tool) -> bool {
    (tool.listing.annotations.as_ref()).is_some_and(|a| a.destructive_hint == Some(true))
}

/// Whether a call of `name` on `catalog` could ever be put to a human, whatever its
/// arguments, caller and grants: the tool is destructive, or an enforced rule that can
/// reach its calls could deny one in a way an answer might lift. `false` is exact for
/// every call of the tool run on this `catalog` (an unknown tool is never asked about);
/// `true` means some call might be.
pub fn may_ask(catalog: &Catalog, name: &str) -> bool {
    let Some(tool) = catalog.get(name).filter(|t| t.is_tool()) else {
        return false;
    };
    let plan = &tool.request;
    let request = Request {
        upstream: &plan.upstream.name,
        method: plan.method.as_str(),
        path_shape: &plan.path_shape,
        sent: None,
    };
    is_destructive(tool) || catalog.policy.may_lift(&tool.id, &request)
}

/// Step 5b: asks when `decision` is a denial a human could lift, or the tool is
/// destructive; returns the elevation the answer gives this call (to evaluate the rules
/// again with), `None` when nothing was asked or nobody could be asked.
///
/// # Errors
/// A denial when the human declined, cancelled, did not answer in time, or gave a
/// ticket of the wrong form.
pub(super) async fn ask(
    engine: &Engine,
    c: &mut Call<'_>,
    decision: &Decision,
) -> Result<Option<Value>, Failure> {
    let Some(approver) = c.approver else {
        return Ok(None);
    };
    let (ask, why) = match (&decision.denial, decision.lift) {
        (Some(_), None) => return Ok(None),
        (Some((rule, reason)), Some(lift)) => (lift, format!("{reason} [rule {rule}]")),
        (None, _) if destructive(c) => (
            Lift::Confirm,
            format!(
                "tool '{}' is marked destructive (destructiveHint): a human approves each call",
                c.tool.id
            ),
        ),
        (None, _) => return Ok(None),
    };
    let rules = &c.catalog.elevation;
    let request = ApprovalRequest {
        tool: c.tool.id.clone(),
        what: describe(c, decision),
        why,
        ask,
        ticket_pattern: rules.ticket_pattern().map(str::to_owned),
        timeout: rules.approval_timeout(),
    };
    // The client may give up on the call while the human is asked: the question is
    // withdrawn and an answer that comes later grants nothing.
    let answer = match c.cancelled {
        Some(token) => tokio::select! {
            answer = approver.approve(&request) => answer,
            () = token.cancelled() => Answer::Withdrawn,
        },
        None => approver.approve(&request).await,
    };
    // Whoever answered did so in the caller's session: the caller, through their client.
    let who = |client: String| format!("{} via {client}", c.result.actor);
    let (outcome, by, ticket) = match answer {
        Answer::Unavailable => return Ok(None),
        Answer::Approved { ticket, by } => match (ask, ticket, who(by)) {
            (Lift::Ticket, t, by) => {
                let t = t.unwrap_or_default().trim().to_owned();
                let refused = if t.is_empty() {
                    Some("no ticket was given".to_owned())
                } else if let Err(e) = rules.check_ticket(&t) {
                    Some(e.to_string())
                } else if let Err(e) = checked_ticket(c, &t).await {
                    Some(e.to_string())
                } else {
                    in_ticket_system(engine, c, &t).await.err()
                };
                if let Some(why) = refused {
                    c.result.approval = Some(Approval {
                        outcome: "rejected",
                        by: Some(by),
                    });
                    return Err(Failure::Denied(format!(
                        "the answer to the approval was refused: {why}; the call was not sent"
                    )));
                }
                ("ticket", Some(by), Some(t))
            }
            (Lift::Confirm, t, by) => ("confirmed", Some(by), t),
        },
        Answer::Declined { by } => ("declined", Some(who(by)), None),
        Answer::Cancelled => ("cancelled", None, None),
        Answer::TimedOut => ("timeout", None, None),
        Answer::Withdrawn => ("withdrawn", None, None),
        Answer::Failed(why) => {
            tracing::warn!(tool = %c.tool.id, error = %why, "asking for approval failed");
            ("failed", None, None)
        }
    };
    let approval = Approval { outcome, by };
    let denial = match outcome {
        "declined" => Some(format!(
            "a human declined this call when asked to approve it ({})",
            approval.by.as_deref().unwrap_or("unknown")
        )),
        "cancelled" => Some("the approval was dismissed without an answer".to_owned()),
        "timeout" => Some(format!(
            "no one approved this call within {} (elevation.approval_timeout)",
            crate::util::duration::human(request.timeout)
        )),
        "failed" => Some("the approval could not be asked or its answer read".to_owned()),
        "withdrawn" => {
            Some("the client cancelled the call while a human was asked to approve it".to_owned())
        }
        _ => None,
    };
    let by = approval.by.clone().unwrap_or_default();
    c.result.approval = Some(approval);
    if let Some(why) = denial {
        return Err(Failure::Denied(format!("{why}; the call was not sent")));
    }
    if let Some(t) = &ticket {
        c.result.ticket = Some(t.clone());
    }
    Ok(Some(json!({
        "ticket": ticket,
        "granted_by": by,
        "approval": outcome,
        "tool": c.tool.id,
    })))
}

/// Checks `ticket` with `elevation.ticket_check`, when configured: it must be approved
/// for this call's `env` argument and inside its change window.
async fn checked_ticket(
    c: &Call<'_>,
    ticket: &str,
) -> Result<(), crate::identity::ticket::TicketRefused> {
    let Some(check) = &c.catalog.elevation.ticket_check else {
        return Ok(());
    };
    let env = c.args.get("env").and_then(serde_json::Value::as_str);
    check.check(ticket, env).await.map(drop)
}

/// Checks `ticket` with the ticket system (`elevation.ticket_tool`), when one is
/// configured: a call of that tool by the caller, through every step of a call (scope,
/// policy, limits, audit), with `{"ticket": ticket}`. Only a success accepts the ticket.
async fn in_ticket_system(engine: &Engine, c: &Call<'_>, ticket: &str) -> Result<(), String> {
    let Some(named) = c.catalog.elevation.ticket_tool() else {
        return Ok(());
    };
    let Some(tool) = c.catalog.get(&named.value) else {
        return Err(format!(
            "the ticket system's tool '{}' (elevation.ticket_tool) is not loaded",
            named.value
        ));
    };
    // The lookup asks nobody (a ticket is never approved by asking) and carries no key.
    let ctx = CallContext {
        trace: Some(c.trace.clone()),
        idempotency_key: None,
        approver: None,
        quote_json: false,
        ..c.ctx.clone()
    };
    let args = serde_json::Map::from_iter([("ticket".to_owned(), json!(ticket))]);
    let looked_up = Box::pin(engine.run(c.catalog, tool, Some(args), &ctx)).await;
    looked_up.outcome.map(drop).map_err(|f| {
        format!(
            "the ticket system did not confirm ticket '{ticket}' ({}: {})",
            tool.id,
            f.message()
        )
    })
}

/// The call in plain words: the tool, the request's method and URL and its body, with
/// secrets scrubbed and sensitive values masked.
fn describe(c: &mut Call<'_>, decision: &Decision) -> String {
    let tool = c.tool;
    let upstream = &tool.request.upstream;
    let title = tool.listing.title.as_deref().unwrap_or(&tool.id);
    let base = upstream
        .base_for(decision.route.as_deref())
        .unwrap_or(&upstream.base);
    let style = &c.catalog.policy.redaction;
    let rendered = match tool.secrets.as_ref() {
        Ok(secrets) => {
            let args = c.template_args().clone();
            (tool.request)
                .render(&tool.id, &tool.templates, base, &args, secrets)
                .ok()
                .map(|p| {
                    let body = p
                        .body
                        .as_ref()
                        .map(|b| format!(" with body {b}"))
                        .unwrap_or_default();
                    secrets.scrub(format!("{} {}{body}", p.method, p.url))
                })
        }
        Err(_) => None,
    };
    let request = rendered.unwrap_or_else(|| {
        format!(
            "{} {} (arguments {})",
            tool.request.method, upstream.name, c.args
        )
    });
    let (request, _) = redact_text(&request, DetectorSet::ALL, style);
    format!(
        "{title} ({}) will send {request} to upstream '{}'",
        tool.id, upstream.name
    )
}
