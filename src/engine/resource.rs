//! Reading a resource: a result kept for its caller (`mcpd://results/<id>`), or a tool
//! declared as a resource (its URI or URI template gives the arguments, and the read
//! is a call of the tool: the same identity, scopes, policy, limits, redaction and
//! audit record as `tools/call`).
//!
//! Owns who may read a kept result (the actor who made it, and nobody else: another
//! actor's read is refused exactly like a read of an id that does not exist) and the
//! audit record of such a read. It knows nothing of MCP.

use serde_json::json;

use super::steps::identify;
use super::{CallContext, CallResult, Engine};
use crate::audit::Entry as AuditEntry;
use crate::catalog::resolve;
use crate::results::{self, Kept};
use crate::telemetry::trace::TraceContext;

/// What a read found.
#[derive(Debug)]
pub enum Read {
    /// A result kept for the reader.
    Kept(Kept),
    /// The call of the tool declared at the URI (it may have failed: see its outcome).
    Called(Box<CallResult>),
}

/// Why a read found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No tool declares the URI, and it is no kept result of this caller.
    #[error(
        "no resource '{0}' for this caller: resources/list and resources/templates/list name the resources this server has; a kept result is readable by its caller only, until it expires"
    )]
    NotFound(String),
    /// The caller could not be identified.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The state store failed.
    #[error("mcpd's state store failed: {0}")]
    State(String),
}

impl Engine {
    /// Reads `uri` as the caller `ctx` names.
    ///
    /// # Errors
    /// A URI that names nothing this caller may read, an unknown caller, a failing
    /// store. A tool's failure is a [`Read::Called`] whose outcome says why.
    pub async fn read(&self, uri: &str, ctx: &CallContext) -> Result<Read, ReadError> {
        let catalog = self.catalog();
        if results::id_of(uri).is_some() {
            let actor =
                identify(&catalog, ctx).map_err(|f| ReadError::Unauthenticated(f.message()))?;
            let kept = results::read(self.store.as_ref(), &actor.subject, uri)
                .await
                .map_err(|e| ReadError::State(e.to_string()))?;
            self.audit_read(&actor.subject, uri, kept.as_ref(), ctx);
            return kept
                .map(Read::Kept)
                .ok_or_else(|| ReadError::NotFound(uri.to_owned()));
        }
        let Some((tool, args)) = resolve(&catalog.tools, uri) else {
            return Err(ReadError::NotFound(uri.to_owned()));
        };
        let tool = tool.clone();
        Ok(Read::Called(Box::new(
            self.run(&catalog, &tool, Some(args), ctx).await,
        )))
    }

    /// Every result kept for the caller `ctx` names (none for an unknown caller).
    ///
    /// # Errors
    /// A failing store.
    pub async fn kept(&self, ctx: &CallContext) -> Result<Vec<results::Listed>, ReadError> {
        let Ok(actor) = identify(&self.catalog(), ctx) else {
            return Ok(Vec::new());
        };
        results::list(self.store.as_ref(), &actor.subject)
            .await
            .map_err(|e| ReadError::State(e.to_string()))
    }

    /// The audit record of a read of a kept result: who, which, and whether it was theirs.
    fn audit_read(&self, actor: &str, uri: &str, kept: Option<&Kept>, ctx: &CallContext) {
        let outcome = if kept.is_some() { "allowed" } else { "denied" };
        tracing::info!(
            actor,
            resource = uri,
            decision = outcome,
            "kept result read"
        );
        let Some(audit) = &self.audit else { return };
        let trace = ctx.trace.clone().unwrap_or_else(TraceContext::start);
        audit.record(&AuditEntry {
            actor: actor.to_owned(),
            tool: kept.map_or_else(|| "resources/read".to_owned(), |k| k.tool.clone()),
            args: json!({ "resource": uri }),
            decision: outcome.to_owned(),
            reason: kept
                .is_none()
                .then(|| "no kept result with this id for this caller".to_owned()),
            trace_id: trace.trace_id,
            ..AuditEntry::default()
        });
    }
}
