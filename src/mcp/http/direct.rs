//! The direct path for a `tools/call` over Streamable HTTP: a POST naming a session
//! this replica holds, for a call that cannot need the session's stream, is answered by
//! the engine at once as one `application/json` response instead of through rmcp's
//! session worker as an SSE stream.
//!
//! Owns which POSTs take it, the sessions it knows (their handler and peer, registered
//! by the handler itself, see [`Live::register`]), the calls in flight on it (so a
//! `notifications/cancelled` reaches them), and keeping rmcp's session alive while only
//! this path is used. A call takes it only when nothing in it can need a stream: no
//! `progressToken` (no progress notifications), and no way to ask a human (the client
//! did not declare form elicitation, so the approver would not ask; or no call of the
//! tool can ask, [`crate::engine::may_ask`], on the snapshot the call then runs on).
//! Everything else
//! (initialize, lists, notifications, responses, calls that may stream, unknown or
//! restored sessions, protocol revisions with per-request metadata) goes to rmcp
//! unchanged. The call itself is the same [`McpServer::call`] rmcp's path runs: the same
//! actor, trace, idempotency key, reporter and cancellation; it runs on the request's
//! own task and outlives a client that goes away ([`super::finish`]), and the body is
//! read as rmcp reads it ([`super::read`]).
//!
//! It must not answer anything rmcp would answer differently: a request it is not sure
//! of is passed on byte for byte.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, CustomNotification, RequestId, ServerJsonRpcMessage,
};
use rmcp::service::ElicitationMode;
use rmcp::transport::streamable_http_server::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use super::finish::Finish;
use super::read::{Read, read};
use crate::catalog::Catalog;
use crate::mcp::McpServer;

/// How often a session used only through this path tells rmcp it is in use (rmcp ends a
/// session whose worker hears nothing for 5 minutes).
const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// The protocol revisions whose requests rmcp serves in a session without per-request
/// checks (later ones carry their version in `_meta` and standard headers).
const SESSION_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The sessions this replica holds, as the direct path needs them.
#[derive(Debug, Default)]
pub(crate) struct Live {
    sessions: Mutex<HashMap<Arc<str>, Held>>,
}

/// One session: its handler, its peer, its calls in flight here.
#[derive(Debug)]
struct Held {
    server: McpServer,
    peer: Peer<RoleServer>,
    calls: HashMap<RequestId, CancellationToken>,
    touched: Instant,
}

impl Live {
    /// Remembers session `id`'s handler and peer (once: a session's later requests find
    /// it known; a session rebuilt after its worker ended replaces the closed one).
    /// Forgets sessions whose transport has closed.
    pub(crate) fn register(&self, id: &str, server: &McpServer, peer: &Peer<RoleServer>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions
            .get(id)
            .is_some_and(|held| !held.peer.is_transport_closed())
        {
            return;
        }
        sessions.retain(|_, h| !h.peer.is_transport_closed());
        sessions.insert(
            Arc::from(id),
            Held {
                server: server.clone(),
                peer: peer.clone(),
                calls: HashMap::new(),
                touched: Instant::now(),
            },
        );
    }

    /// Forgets session `id` (closed with `DELETE`).
    pub(crate) fn forget(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.remove(id);
    }

    /// The handler and peer of session `id` for a call `call_id`, when the call may take
    /// the direct path; whether rmcp's session should be told it is in use.
    fn enter(&self, id: &str, call_id: &RequestId, tool: &str) -> Option<Entered> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let held = sessions.get_mut(id)?;
        if held.peer.is_transport_closed() {
            sessions.remove(id);
            return None;
        }
        // The approver asks in form mode only; without it nothing is asked. A client that
        // can be asked keeps its stream for a tool some call of which might ask; for any
        // other tool the call runs on the snapshot this was decided on.
        let catalog = if (held.peer.supported_elicitation_modes()).contains(&ElicitationMode::Form)
        {
            let catalog = held.server.engine.catalog();
            if crate::engine::may_ask(&catalog, tool) {
                return None;
            }
            Some(catalog)
        } else {
            None
        };
        // A request id in flight twice is the client's error: rmcp's path reports it.
        if held.calls.contains_key(call_id) {
            return None;
        }
        let cancel = CancellationToken::new();
        held.calls.insert(call_id.clone(), cancel.clone());
        let touch = held.touched.elapsed() >= TOUCH_EVERY;
        if touch {
            held.touched = Instant::now();
        }
        Some(Entered {
            server: held.server.clone(),
            peer: held.peer.clone(),
            cancel,
            touch,
            catalog,
        })
    }

    fn leave(&self, id: &str, call_id: &RequestId) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = sessions.get_mut(id) {
            held.calls.remove(call_id);
        }
    }

    /// Cancels call `call_id` of session `id` if it runs here.
    fn cancel(&self, id: &str, call_id: &RequestId) {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = sessions.get(id).and_then(|h| h.calls.get(call_id)) {
            token.cancel();
        }
    }
}

/// Takes a call out of its session's calls in flight when dropped.
struct Leave<'a> {
    live: &'a Live,
    session: &'a str,
    id: &'a RequestId,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.live.leave(self.session, self.id);
    }
}

struct Entered {
    server: McpServer,
    peer: Peer<RoleServer>,
    cancel: CancellationToken,
    touch: bool,
    /// The snapshot whether the call may ask was decided on, when that was asked.
    catalog: Option<Arc<Catalog>>,
}

/// What the direct path needs.
pub(crate) struct Direct {
    pub(crate) live: Arc<Live>,
    pub(crate) sessions: Arc<LocalSessionManager>,
    pub(crate) max_body_bytes: usize,
}

/// In front of rmcp on `/mcp`: answers a `tools/call` POST that may take the direct
/// path, cancels a direct call on `notifications/cancelled`, passes everything else on.
pub(crate) async fn direct(direct: &Direct, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST
        || !eligible_headers(req.headers(), direct.max_body_bytes)
    {
        return next.run(req).await;
    }
    let Some(session) = session_id(req.headers()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, direct.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}\n"),
            )
                .into_response();
        }
    };
    let pass_on = |parts, bytes| next.run(Request::from_parts(parts, Body::from(bytes)));
    let (id, params, meta) = match read(&bytes) {
        Read::Call(id, params, meta) => (id, params, meta),
        Read::Cancelled(call_id) => {
            direct.live.cancel(&session, &call_id);
            return pass_on(parts, bytes).await;
        }
        Read::Other => return pass_on(parts, bytes).await,
    };
    if crate::mcp::plain::for_rmcp(&params, Some(&meta)) {
        return pass_on(parts, bytes).await;
    }
    let Some(entered) = direct.live.enter(&session, &id, &params.name) else {
        return pass_on(parts, bytes).await;
    };
    // Out of the session's calls when answered, or when the client went away.
    let _leave = Leave {
        live: &direct.live,
        session: &session,
        id: &id,
    };
    if entered.touch {
        touch(&direct.sessions, &session).await;
    }
    let actor = parts
        .extensions
        .get::<Arc<crate::identity::Actor>>()
        .cloned();
    // On this connection's task (no hand-off to a task of its own and back); a client
    // that disconnects does not stop a call midway (a write is finished and recorded):
    // `Finish` moves what is left of it to a task of its own. `notifications/cancelled`
    // does stop it.
    let Entered {
        server,
        peer,
        cancel,
        catalog,
        ..
    } = entered;
    let answered = Finish::new({
        let (id, cancel) = (id.clone(), cancel.clone());
        async move {
            // The call's log line waits until its answer is out (below); a call finished
            // after its client went away writes it when it ends.
            let via = crate::mcp::Via {
                peer,
                cancelled: cancel,
                quote_json: true,
            };
            let call = server.call_result(params, Some(&meta), actor, via, catalog);
            let (out, lines) = crate::engine::after_answer(call).await;
            // Every session revision is before 2026-07-28: the answer is the stdio fast
            // path's line, the bytes rmcp's serialisation of it gives (a result that is
            // its JSON alone is written around that JSON, not through rmcp's types).
            (crate::mcp::stdio::answer_line(out, id), lines)
        }
    })
    .await;
    let (answered, lines) = match answered {
        Ok((message, lines)) => (Ok(message), Some(lines)),
        Err(e) => (Err(e), None),
    };
    let response = respond(answered, &cancel, &id);
    if let Some(lines) = lines {
        // Runs once this connection's task has written the response and yielded.
        tokio::spawn(async move { lines.write() });
    }
    response
}

/// The HTTP response to a direct call: its JSON-RPC answer, or an empty stream for a
/// cancelled call.
fn respond(
    answered: Result<serde_json::Result<Vec<u8>>, String>,
    cancel: &CancellationToken,
    id: &RequestId,
) -> Response {
    // No answer for a cancelled call (as on rmcp's path): its stream ends empty.
    if cancel.is_cancelled() {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            "",
        )
            .into_response();
    }
    let body = match answered {
        Ok(body) => body,
        Err(e) => serde_json::to_vec(&ServerJsonRpcMessage::error(
            rmcp::ErrorData::internal_error(format!("the call failed: {e}"), None),
            Some(id.clone()),
        )),
    };
    match body {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the response: {e}\n"),
        )
            .into_response(),
    }
}

/// Tells rmcp's session worker the session is in use (a notification nobody answers).
async fn touch(sessions: &LocalSessionManager, id: &Arc<str>) {
    let touch = ClientJsonRpcMessage::notification(ClientNotification::CustomNotification(
        CustomNotification::new("notifications/dev.mcpd/in-use", None),
    ));
    if let Err(e) = sessions.accept_message(id, touch).await {
        tracing::debug!(session = %id, error = %e, "cannot mark the session in use");
    }
}

fn session_id(headers: &HeaderMap) -> Option<Arc<str>> {
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::from)
}

/// A POST rmcp would serve in its session without per-request checks the direct path
/// does not make: JSON in, JSON and SSE accepted (rmcp refuses one without both; an
/// `Accept` with weights is left to rmcp to read), a protocol revision that has
/// sessions, a body of a known length no larger than allowed.
fn eligible_headers(headers: &HeaderMap, max_body_bytes: usize) -> bool {
    let has = |name: header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| {
                let essence = v.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case(want)
            })
    };
    let weighted = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_err() || v.as_bytes().contains(&b';'));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let content_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    let revision = match headers.get_all("mcp-protocol-version").iter().count() {
        0 => true,
        1 => headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| SESSION_REVISIONS.contains(&v)),
        _ => false,
    };
    content_json
        && revision
        && has(header::ACCEPT, "application/json")
        && has(header::ACCEPT, "text/event-stream")
        && !weighted
        && length.is_some_and(|n| n <= max_body_bytes)
        && headers.get(header::TRANSFER_ENCODING).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    const BASE: [(&str, &str); 3] = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("content-length", "100"),
    ];

    #[test]
    fn a_plain_json_post_of_a_session_revision_may_take_the_direct_path() {
        assert!(eligible_headers(&headers(&BASE), 1000));
        let mut with = BASE.to_vec();
        with.push(("mcp-protocol-version", "2025-11-25"));
        assert!(eligible_headers(&headers(&with), 1000));
        with[0] = ("content-type", "application/json; charset=utf-8");
        assert!(eligible_headers(&headers(&with), 1000));
    }

    #[test]
    fn what_rmcp_would_refuse_or_check_further_is_left_to_it() {
        let cases: [&[(&str, &str)]; 8] = [
            &[("accept", "application/json"), BASE[0], BASE[2]],
            &[("accept", "text/event-stream"), BASE[0], BASE[2]],
            &[
                ("accept", "application/json;q=0, text/event-stream"),
                BASE[0],
                BASE[2],
            ],
            &[("content-type", "text/plain"), BASE[1], BASE[2]],
            &[BASE[0], BASE[1]],
            &[BASE[0], BASE[1], ("content-length", "1001")],
            &[
                BASE[0],
                BASE[1],
                BASE[2],
                ("mcp-protocol-version", "2026-07-28"),
            ],
            &[
                BASE[0],
                BASE[1],
                BASE[2],
                ("mcp-protocol-version", "1999-01-01"),
            ],
        ];
        for case in cases {
            assert!(!eligible_headers(&headers(case), 1000), "{case:?}");
        }
    }
}
