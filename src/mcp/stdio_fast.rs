//! The fast path for a `tools/call` over stdio: a line that is a plain `tools/call`
//! request is read straight into rmcp's `CallToolRequestParams`, run on a task of its
//! own by [`McpServer::call`] (the same call rmcp's path runs: actor, trace, idempotency
//! key, reporter, cancellation) and answered from that task, instead of being read as
//! rmcp's `ClientJsonRpcMessage` (an untagged enum over a flattened request, which
//! serde buffers several times) and passed through rmcp's service loop.
//!
//! Owns which lines take it, the session's handler and peer (registered by the handler
//! at `initialize`, see [`Fast::register`]), the calls in flight on it (so a
//! `notifications/cancelled` reaches them and the end of stdin waits for their answers,
//! as rmcp's loop does), and the answer's shape. A line takes it only when nothing in
//! it can be answered differently by rmcp: a single JSON-RPC request of exactly the
//! members `jsonrpc`, `id`, `method` and `params`; no `progressToken` and no per-request
//! protocol metadata (`io.modelcontextprotocol/...`) in its `_meta`; no
//! `inputResponses` or `requestState`; a session that negotiated a protocol revision
//! before 2026-07-28 through `initialize`, whose client did not declare form
//! elicitation (the approver would ask through it), with no batch being answered.
//! Everything else goes to rmcp unchanged.
//!
//! It must answer byte for byte what rmcp's path answers (tests/stdio_fast.rs runs the
//! same calls both ways and compares the lines).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rmcp::model::{ProtocolVersion, RequestId};
use rmcp::service::ElicitationMode;
use rmcp::{Peer, RoleServer};
use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use crate::engine::CallResult;
use crate::mcp::plain::{PlainCall, for_rmcp};
use crate::mcp::{McpServer, legacy_answer, to_mcp_result};

/// How long the end of stdin waits for calls in flight on the fast path to be answered
/// (rmcp's loop waits as long for its own), before cancelling the rest.
const DRAIN: Duration = Duration::from_secs(5);

/// The fast path's share of a stdio session.
#[derive(Debug, Default)]
pub(crate) struct Fast {
    state: Mutex<State>,
    /// Woken when the last call in flight is answered.
    idle: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The session's handler and peer, once `initialize` has been handled.
    held: Option<(McpServer, Peer<RoleServer>)>,
    calls: HashMap<RequestId, CancellationToken>,
}

impl Fast {
    /// Remembers the session's handler and peer (called by the handler at `initialize`).
    pub(crate) fn register(&self, server: &McpServer, peer: &Peer<RoleServer>) {
        // The handler kept here does not point back at this (no cycle).
        let server = McpServer {
            stdio: None,
            ..server.clone()
        };
        self.lock().held = Some((server, peer.clone()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancels call `id` if it runs on the fast path (`notifications/cancelled`).
    pub(crate) fn cancel(&self, id: &RequestId) {
        if let Some(token) = self.lock().calls.get(id) {
            token.cancel();
        }
    }

    /// Takes `line` when it may take the fast path: runs the call on a task of its own,
    /// which writes the answer with `writer`, in a session that negotiated a
    /// [`legacy`] revision. Returns false (nothing done) for a line rmcp is to read.
    pub(crate) fn take<W>(
        self: &Arc<Self>,
        line: &[u8],
        writer: &Arc<tokio::sync::Mutex<W>>,
    ) -> bool
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // Cheap before parsing: most other lines never name the method.
        if !contains(line, b"\"tools/call\"") {
            return false;
        }
        let Some(PlainCall { id, params, .. }) = PlainCall::read(line) else {
            return false;
        };
        if for_rmcp(&params, None) {
            return false;
        }
        let (server, peer, cancel) = {
            let mut state = self.lock();
            let Some((server, peer)) = &state.held else {
                return false;
            };
            if peer.is_transport_closed() || asks_in_forms(peer) {
                return false;
            }
            // A request id in flight twice is the client's error: rmcp's path has it.
            if state.calls.contains_key(&id) {
                return false;
            }
            let (server, peer) = (server.clone(), peer.clone());
            let cancel = CancellationToken::new();
            state.calls.insert(id.clone(), cancel.clone());
            (server, peer, cancel)
        };
        tracing::debug!(id = %id, "tools/call on the fast path");
        let fast = Arc::clone(self);
        let writer = Arc::clone(writer);
        // In the span rmcp runs its handlers in, so log lines read as on its path.
        let span = tracing::Span::current();
        let key = id.clone();
        let task = async move {
            // The call's log line waits until its answer is out.
            let via = crate::mcp::Via {
                peer,
                cancelled: cancel.clone(),
                quote_json: true,
            };
            let call = server.call_result(params, None, None, via, None);
            let (out, lines) = crate::engine::after_answer(call).await;
            // No answer for a cancelled call (as on rmcp's path).
            if !cancel.is_cancelled() {
                let written = match answer_line(out, id) {
                    Ok(line) => super::write_bytes(&writer, line).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e, "cannot write an answer to stdout");
                }
            }
            lines.write();
            fast.leave(&key);
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        true
    }

    fn leave(&self, id: &RequestId) {
        let mut state = self.lock();
        state.calls.remove(id);
        if state.calls.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// At the end of stdin: waits (at most [`DRAIN`]) for the calls in flight to be
    /// answered, then cancels those still running. Cancellation-safe (it only waits).
    pub(crate) async fn drain(&self) {
        let answered = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.lock().calls.is_empty() {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(DRAIN, answered).await.is_err() {
            for token in self.lock().calls.values() {
                token.cancel();
            }
        }
    }
}

/// Whether the negotiated revision `protocol` is one without per-request metadata
/// (before 2026-07-28), whose sessions the fast path may serve.
pub(crate) fn legacy(protocol: &str) -> bool {
    protocol < ProtocolVersion::V_2026_07_28.as_str()
}

/// The answer line (without its newline) rmcp's path gives a session before 2026-07-28.
/// A result sent as its JSON alone is written around the JSON the engine made for it;
/// any other goes through rmcp's types as on its path. HTTP's direct path answers with
/// it too.
pub(crate) fn answer_line(
    out: Result<CallResult, rmcp::ErrorData>,
    id: RequestId,
) -> serde_json::Result<Vec<u8>> {
    let message = match out {
        Ok(mut result) => {
            if let Some(json) = json_only(&mut result) {
                return around(&json, &id);
            }
            legacy_answer(Ok(to_mcp_result(result).into()), id)
        }
        Err(error) => legacy_answer(Err(error), id),
    };
    serde_json::to_vec(&message)
}

/// The JSON of a result whose answer is that JSON alone, twice: as its one text block
/// and as `structuredContent` (an object, so the legacy shape keeps it; no `_meta`:
/// no idempotency key, no link), with the text block's form (the JSON as a JSON
/// string). `None` (the result untouched) for any other.
fn json_only(r: &mut CallResult) -> Option<(String, String)> {
    let s = &r.shown;
    let alone = s.text.is_none() && s.media.is_none() && s.link.is_none() && s.embed.is_none();
    // `shown.json` and `shown.quoted` are the outcome's JSON, both written in one pass at
    // step 11b (present.rs).
    if alone
        && r.idempotency_key.is_none()
        && r.outcome.as_ref().is_ok_and(Value::is_object)
        && s.json.is_some()
        && s.quoted.is_some()
    {
        return r.shown.json.take().zip(r.shown.quoted.take());
    }
    None
}

/// `{"jsonrpc":"2.0","id":..,"result":{"content":[{"type":"text","text":JSON}],
/// "structuredContent":JSON,"isError":false}}`, as rmcp serialises that result;
/// `quoted` is the JSON as a JSON string.
fn around((json, quoted): &(String, String), id: &RequestId) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(json.len() + quoted.len() + 128);
    line.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    serde_json::to_writer(&mut line, id)?;
    line.extend_from_slice(br#","result":{"content":[{"type":"text","text":"#);
    line.extend_from_slice(quoted.as_bytes());
    line.extend_from_slice(br#"}],"structuredContent":"#);
    line.extend_from_slice(json.as_bytes());
    line.extend_from_slice(br#","isError":false}}"#);
    Ok(line)
}

/// Whether the client declared form elicitation (the approver asks through it).
fn asks_in_forms(peer: &Peer<RoleServer>) -> bool {
    peer.peer_info()
        .is_some_and(|info| info.capabilities.elicitation.is_some())
        && peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
