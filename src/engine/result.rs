//! What a call takes beside its arguments, and what it gives back: [`CallContext`] in,
//! [`CallResult`] out, with the [`Failure`] kinds a model can act on.
//!
//! Owns these shapes and the words for them (a failure's message and kind, the
//! decision a result stands for). It never turns them into MCP (that is `mcp`'s job).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::approval::{Approval, Approver};
use super::report::Reporter;
use crate::identity::Actor;
use crate::telemetry::trace::TraceContext;

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
    /// An earlier call with this idempotency key ended with its outcome unknown: the key
    /// is held and nothing was sent; says what is known and what to do.
    OutcomeUnknown(String),
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
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::State(_) => "state",
            Self::Unauthenticated(_) => "unauthenticated",
        }
    }

    /// The same failure with `note` added to its message (for a send whose outcome is
    /// unknown); other kinds are returned as they are.
    #[must_use]
    pub fn noted(self, note: &str) -> Self {
        let add = |m: String| {
            let sep = if m.ends_with('.') { " " } else { ". " };
            format!("{m}{sep}{note}")
        };
        match self {
            Self::Unreachable(m) => Self::Unreachable(add(m)),
            Self::UpstreamStatus(s, m) => Self::UpstreamStatus(s, add(m)),
            Self::Response(m) => Self::Response(add(m)),
            other => other,
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
            | Self::OutcomeUnknown(m)
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
    /// The call's idempotency key is held: this call's outcome (or an earlier one's) is
    /// unknown, and nothing will send the write again.
    pub held: bool,
    /// The `seq` of the audit record of intent written before the request was sent.
    pub intent: Option<u64>,
    /// The ticket of the elevation grant the call ran under, or the one a human gave
    /// when asked.
    pub ticket: Option<String>,
    /// What the upstream was told of the caller, as the audit record shows it.
    pub forwarded: Option<Value>,
    /// How a human's approval came out, when one was asked for.
    pub approval: Option<Approval>,
    /// How the result is shown beside its JSON (text, media, a link to a kept result).
    pub shown: Shown,
    /// What policy saw of the call and decided (step 5); `None` when the call ended
    /// before policy.
    pub policy: Option<PolicySeen>,
}

/// How a successful result is shown to the model beside `outcome`'s JSON.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    /// Text to send instead of the JSON: the tool's `response.text` rendering, or a
    /// `text/*` reply's text (redacted).
    pub text: Option<String>,
    /// An image or audio reply: its MIME type and bytes.
    pub media: Option<(String, bytes::Bytes)>,
    /// The reply's MIME type (its `Content-Type` without parameters).
    pub mime: Option<String>,
    /// The result was too large to send inline: where it is kept and what it holds.
    pub link: Option<Link>,
    /// The URI to embed the reply at (`response.resource`).
    pub embed: Option<String>,
    /// The result's JSON as sent inline, serialised once when its size was measured:
    /// the text block reuses it rather than serialising the result again.
    pub json: Option<String>,
    /// `json` as a JSON string (quoted, escaped), written in the same pass: the stdio
    /// answer line's text block.
    pub quoted: Option<String>,
}

/// A result kept behind a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `mcpd://results/<id>`.
    pub uri: String,
    /// What the model reads about it: size, where it is, the rows shown.
    pub summary: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its MIME type.
    pub mime: String,
}

/// What policy saw of a call and what it decided: the audit log records it so the call
/// can be replayed through another policy (`mcpd backtest`), and `mcpd test --coverage`
/// replays it through the same one.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySeen {
    /// The actor as conditions saw it (`subject`, `scopes`, `purpose`, `region`, ...).
    pub actor: Value,
    /// What conditions saw as `env`.
    pub env: Value,
    /// The elevation grant, as far as the call looked.
    pub elevation: Elevation,
    /// The rendered request, when a rule needed it before the call was decided (not
    /// recorded: a replay renders it again from the recorded arguments).
    pub sent: Option<crate::policy::Sent>,
    /// The rule (or `default`) that denied the call, if policy denied it.
    pub denied_by: Option<String>,
}

/// What a call knew of its caller's elevation grants.
#[derive(Debug, Clone, PartialEq)]
pub enum Elevation {
    /// No rule covering the tool reads elevation, so the grants were not looked up.
    NotRead,
    /// The grants were looked up (or none can exist) and none applied.
    None,
    /// This grant applied (its facts, as conditions see them).
    Grant(Value),
}

impl CallResult {
    /// The decision this result stands for, as the audit log, spans and metrics name it.
    pub fn decision(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "allowed",
            Err(Failure::Denied(_) | Failure::Unauthenticated(_)) => "denied",
            Err(Failure::Limited(_)) => "limited",
            Err(Failure::OutcomeUnknown(_)) => "held",
            Err(Failure::InvalidArguments(_)) => "invalid",
            Err(_) => "error",
        }
    }
}

/// What the caller sent beside the arguments (from the request's `_meta`) and who the
/// transport proved it is.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The caller's W3C trace (`traceparent`, `tracestate`), parsed once by the
    /// transport; `None` starts a new trace.
    pub trace: Option<TraceContext>,
    /// Idempotency key the client supplied in `_meta` (`dev.mcpd/idempotencyKey`);
    /// it takes precedence over the tool's key template.
    pub idempotency_key: Option<String>,
    /// The verified caller; `None` runs as the stdio caller's token or the configured
    /// default actor.
    pub actor: Option<Arc<Actor>>,
    /// Who can approve this call when policy needs a human (the client, through
    /// elicitation); `None` asks nobody and a denial stays a denial.
    pub approver: Option<Arc<dyn Approver>>,
    /// Where the call's log messages and progress go; `None` says nothing.
    pub reporter: Option<Arc<dyn Reporter>>,
    /// Cancelled when the client gives up on the call (`notifications/cancelled`): the
    /// upstream request is aborted, its concurrency slot freed, and the call settles as
    /// after a timeout (its outcome is unknown).
    pub cancelled: Option<tokio_util::sync::CancellationToken>,
    /// The answer is written around the result's JSON (the stdio fast path, HTTP's
    /// direct path): step 11b writes the text block's form of that JSON (quoted,
    /// escaped) in the same pass as the JSON. Other paths leave it to rmcp.
    pub quote_json: bool,
}
