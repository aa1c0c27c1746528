//! MCP over Streamable HTTP: `mcpd serve --http ADDR`.
//!
//! Owns the HTTP edge: rmcp's `StreamableHttpService` at `/mcp` over the same
//! [`McpServer`] handler stdio uses (with [`direct`] in front of it for a `tools/call`
//! that cannot stream), bearer authentication ([`auth`]) with the RFC 9728
//! protected-resource metadata, `/healthz` and `/readyz` (and `/metrics` when asked),
//! allowed hosts and origins, the body limit, and a graceful shutdown that stops
//! accepting, drains the calls in flight, then closes the sessions. It must not decide
//! anything about a call beyond who makes it: the engine does the rest.

pub(crate) mod auth;
mod cores;
pub(crate) mod direct;
mod finish;
pub(crate) mod jwks;
mod read;
pub(crate) mod sessions;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::engine::Engine;
use crate::mcp::McpServer;

/// Why the HTTP server cannot start or stopped with an error. The CLI prints it with its
/// causes (`{:#}`), so a message does not repeat its source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// The external issuer cannot be set up.
    #[error(transparent)]
    Jwks(#[from] jwks::JwksError),
    /// Auth is on and nothing can verify a token.
    #[error(
        "serve --http authenticates callers with bearer tokens, but mcpd.yaml has no \
         identity: section (or http.jwks) to verify them: add one (docs/identity.md), \
         or pass --no-auth (or http.auth: false) for local use"
    )]
    NoVerifier,
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The bound socket's address cannot be read.
    #[error(transparent)]
    LocalAddr(std::io::Error),
    /// The server failed while serving.
    #[error(transparent)]
    Serve(std::io::Error),
}

/// Where the MCP endpoint is mounted.
pub(crate) const MCP_PATH: &str = "/mcp";

/// How `serve --http` runs: `mcpd.yaml`'s `http:` section with the flags applied.
#[derive(Debug, Clone)]
pub(crate) struct HttpOptions {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// `Host` values accepted.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted (empty: any).
    pub allowed_origins: Vec<String>,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Require a bearer token on `/mcp`.
    pub auth: bool,
    /// The MCP endpoint's public URL, for the protected-resource metadata.
    pub resource_url: Option<String>,
    /// Authorization servers named in the protected-resource metadata.
    pub authorization_servers: Vec<String>,
    /// How long shutdown waits for calls in flight.
    pub shutdown_grace: Duration,
    /// Serve `/metrics` on this listener too.
    pub metrics: bool,
    /// An external token issuer, verified with its JWKS.
    pub jwks: Option<crate::config::server::JwksSpec>,
}

/// Calls in flight, and whether the server is draining.
#[derive(Debug, Default)]
struct Inflight {
    count: AtomicUsize,
    draining: AtomicBool,
    idle: tokio::sync::Notify,
}

impl Inflight {
    fn enter(self: &Arc<Self>) -> InflightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InflightGuard(Arc::clone(self))
    }

    /// Waits until nothing is in flight, or `grace` passes; returns what was left.
    async fn drained(&self, grace: Duration) -> usize {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.count.load(Ordering::SeqCst)
    }
}

/// Held by a request (and its response body) from arrival until the last byte is sent.
#[derive(Debug)]
struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted in flight until it is fully sent (a
/// tools/call answered over SSE finishes when its stream ends, not when headers go out).
struct GuardedBody {
    inner: Body,
    _guard: InflightGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    inflight: Arc<Inflight>,
}

/// Serves until `shutdown` resolves, then drains: no new connections, calls in flight
/// finish (up to the grace period), then sessions close. Logs the bound address as
/// `listening on http://ADDR/mcp`.
///
/// # Errors
/// When the address cannot be bound or auth is on without a way to verify tokens.
pub(crate) async fn serve(
    engine: Arc<Engine>,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let jwks = match &opts.jwks {
        Some(spec) => Some(Arc::new(jwks::Jwks::new(spec.clone()).await?)),
        None => None,
    };
    let verifier = auth::Auth::new(&engine, &opts, jwks)?;
    let base = StreamableHttpServerConfig::default();
    let sessions_closed = base.cancellation_token.clone();
    let mut config = base
        .with_allowed_hosts(opts.allowed_hosts.clone())
        .with_max_request_body_bytes(opts.max_body_bytes);
    if !opts.allowed_origins.is_empty() {
        config = config.with_allowed_origins(opts.allowed_origins.clone());
    }
    // Sessions live in the state store too: any replica serves any request (sessions).
    let stored = sessions::StoredSessions::new(engine.store().clone());
    config.session_store = Some(Arc::new(stored.clone()));
    // One handler per session: each has its own log level, rate limit and queue.
    let for_sessions = engine.clone();
    let sessions = Arc::new(LocalSessionManager::default());
    let live = Arc::new(direct::Live::default());
    let for_live = Arc::clone(&live);
    let mcp = Arc::new(StreamableHttpService::new(
        move || Ok(McpServer::over_http(for_sessions.clone(), for_live.clone())),
        Arc::clone(&sessions),
        config,
    ));
    // axum clones a route's service for every request (and each middleware its inner
    // one), and rmcp's service clones its whole config: behind an `Arc`, a clone is a
    // count.
    let mcp = axum::routing::any(rmcp_session).with_state(mcp);
    // A call that cannot stream is answered in front of rmcp (direct).
    let direct_path = direct::Direct {
        live,
        sessions: Arc::clone(&sessions),
        max_body_bytes: opts.max_body_bytes,
    };
    let state = AppState {
        engine: engine.clone(),
        inflight: Arc::new(Inflight::default()),
    };
    // One middleware in front of rmcp (not one per concern): axum boxes a future and
    // clones the state and inner service of each layer for every request.
    let edge = Arc::new(Edge {
        state: state.clone(),
        auth: verifier.clone(),
        sessions,
        stored,
        direct: direct_path,
    });
    let mut app = Router::new()
        .nest_service(MCP_PATH, mcp)
        .layer(middleware::from_fn_with_state(edge, mcp_edge))
        .merge(auth::metadata_routes(verifier))
        .route(JWKS_PATH, get(publish_jwks).with_state(state.clone()))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready).with_state(state.clone()));
    if opts.metrics {
        app = app.merge(crate::telemetry::metrics::router(engine.metrics().clone()));
    }

    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: opts.addr,
            source,
        })?;
    let local = listener.local_addr().map_err(HttpError::LocalAddr)?;
    // Each connection is served for its whole life by one of the threads (cores): a
    // call's request, its upstream request and its answer wake no other thread.
    let stop_accepting = tokio_util::sync::CancellationToken::new();
    let mut cores = cores::Cores::start(cores::count(), &app, &stop_accepting, local)
        .map_err(HttpError::Serve)?;
    tracing::info!(
        addr = %local,
        auth = opts.auth,
        allowed_hosts = ?opts.allowed_hosts,
        "listening on http://{local}{MCP_PATH}"
    );

    let inflight = state.inflight.clone();
    let grace = opts.shutdown_grace;
    let stop = stop_accepting.clone();
    tokio::spawn(async move {
        shutdown.await;
        inflight.draining.store(true, Ordering::SeqCst);
        let waiting = inflight.count.load(Ordering::SeqCst);
        tracing::info!(
            in_flight = waiting,
            grace = ?grace,
            "shutting down: no new connections, draining calls in flight"
        );
        stop.cancel();
        let left = inflight.drained(grace).await;
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "grace period over: closing with calls still in flight"
            );
        }
        // Standalone SSE streams never end on their own: closing the sessions lets the
        // graceful shutdown finish.
        sessions_closed.cancel();
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_accepting.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // SSE answers go out as several small writes (headers, priming event,
                // message): with Nagle on, each call would wait for the client's
                // delayed ACK (~40 ms).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
                }
                cores.hand(tcp, peer);
            }
            Err(e) => accept_failed(e).await,
        }
    }
    drop(listener);
    cores.join().await;
    tracing::info!("http server stopped");
    Ok(())
}

/// After a failed `accept`: a connection that failed before it was taken is skipped; any
/// other error (out of file descriptors) is logged and accepting pauses a second, as
/// axum's own listener does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// rmcp's Streamable HTTP service, as mcpd builds it.
type Mcp = StreamableHttpService<McpServer, LocalSessionManager>;

/// What rmcp answers to a request at `/mcp`.
async fn rmcp_session(State(mcp): State<Arc<Mcp>>, req: Request) -> Response {
    mcp.handle(req).await.map(Body::new)
}

/// What stands in front of rmcp on `/mcp`, in this order: the drain and the count of
/// calls in flight, bearer authentication ([`auth`]), `DELETE` of a session, the direct
/// path ([`direct`]).
struct Edge {
    state: AppState,
    auth: auth::Auth,
    sessions: Arc<LocalSessionManager>,
    stored: sessions::StoredSessions,
    direct: direct::Direct,
}

/// Counts `/mcp` POSTs (the requests that carry calls) in flight, and refuses new
/// requests while draining. A GET is a standalone SSE stream that lasts as long as its
/// session: it is not waited for, the sessions are closed after the drain.
async fn mcp_edge(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    if edge.state.inflight.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            "mcpd is shutting down: retry on another replica\n",
        )
            .into_response();
    }
    if req.method() != axum::http::Method::POST {
        return admitted(&edge, req, next).await;
    }
    let guard = edge.state.inflight.enter();
    let response = admitted(&edge, req, next).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            _guard: guard,
        }),
    )
}

/// After the count: authentication, then `DELETE`, then the direct path or rmcp.
async fn admitted(edge: &Edge, req: Request, next: Next) -> Response {
    let req = match auth::admit(&edge.auth, req).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    if req.method() == axum::http::Method::DELETE {
        return delete_session(edge, req, next).await;
    }
    direct::direct(&edge.direct, req, next).await
}

/// `DELETE /mcp` for a session neither this replica nor the state store has is 404 (as
/// the spec asks of any request naming an unknown session), and a closed one is 204 No
/// Content: rmcp answers both 202, which clients read as a failed close (the Python SDK
/// warns). A closed session is forgotten by the direct path too.
async fn delete_session(edge: &Edge, req: Request, next: Next) -> Response {
    use rmcp::transport::streamable_http_server::SessionManager as _;
    let id = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::<str>::from);
    let known = match &id {
        Some(id) => {
            edge.sessions.has_session(id).await.unwrap_or(true)
                || edge.stored.has(id).await.unwrap_or(true)
        }
        None => true,
    };
    match id {
        Some(id) if !known => (
            StatusCode::NOT_FOUND,
            format!("no session '{id}': it has ended; there is nothing to close\n"),
        )
            .into_response(),
        _ => {
            if let Some(id) = &id {
                edge.direct.live.forget(id);
            }
            let mut response = next.run(req).await;
            if response.status() == StatusCode::ACCEPTED {
                *response.status_mut() = StatusCode::NO_CONTENT;
            }
            response
        }
    }
}

/// Where mcpd's verification keys are published (for upstreams checking its assertions).
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";

/// mcpd's verification keys as a JWKS document, from the current catalog (a reload that
/// adds a key publishes it at once); 404 saying why when there is no `identity:`.
async fn publish_jwks(State(state): State<AppState>) -> Response {
    match &state.engine.catalog().identity {
        Some(identity) => (
            [(axum::http::header::CACHE_CONTROL, "max-age=300")],
            axum::Json(identity.jwks()),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this mcpd has no identity: section, so it signs nothing and publishes no keys\n",
        )
            .into_response(),
    }
}

/// Ready when not draining and the state store answers.
async fn ready(State(state): State<AppState>) -> Response {
    if state.inflight.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        state.engine.store().get("ready:probe"),
    )
    .await;
    match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("state store failing: {e}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "state store did not answer within 2s\n",
        )
            .into_response(),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops mcpd");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn startup_errors_read_as_before() {
        assert_eq!(
            HttpError::NoVerifier.to_string(),
            "serve --http authenticates callers with bearer tokens, but mcpd.yaml has no identity: section (or http.jwks) to verify them: add one (docs/identity.md), or pass --no-auth (or http.auth: false) for local use"
        );
        let bind = HttpError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 80)),
            source: std::io::Error::other("address in use"),
        };
        // The CLI prints an error with its causes (`{:#}`): the cause comes once.
        assert_eq!(
            format!("{bind}: {}", bind.source().unwrap()),
            "cannot listen on 127.0.0.1:80: address in use"
        );
        assert!(bind.source().unwrap().source().is_none());
    }
}
