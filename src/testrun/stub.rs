//! The recorded-response upstream: a loopback HTTP server that answers every request
//! with the next response a test case recorded, and remembers what it was asked.
//!
//! It stands in for the user's real backend while `mcpd test` runs; it must not
//! interpret requests beyond logging them. Each upstream and region URL of the config is
//! pointed at its own prefix of the stub (`/_mcpd/N`), so a logged request says which
//! one it was sent to.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::case::Recorded;

/// The path prefix of route `N`: `/_mcpd/N`.
pub(crate) fn route_prefix(n: usize) -> String {
    format!("/_mcpd/{n}")
}

/// An upstream, or one of its regions, as the config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The upstream's name in `mcpd.yaml`.
    pub upstream: String,
    /// The region, for a region URL.
    pub region: Option<String>,
    /// Its base URL's origin as configured (`https://eu.api.internal`), before the run
    /// pointed it at the stub.
    pub origin: String,
}

/// A request the stub received.
#[derive(Debug, Clone)]
pub(crate) struct StubRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query as the upstream would have received them (the route's prefix
    /// taken off).
    pub target: String,
    /// The upstream (and region) it was sent to, when it came under a route's prefix.
    pub route: Option<Route>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: Vec<Route>,
    queue: VecDeque<Recorded>,
    seen: Vec<StubRequest>,
    /// Requests that found no recorded response left.
    unanswered: usize,
}

/// A running stub; it stops when the runtime does.
#[derive(Debug, Clone)]
pub(crate) struct Stub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Stub {
    /// Binds a free loopback port and serves in the background.
    ///
    /// # Errors
    /// When no port can be bound.
    pub(crate) async fn start() -> std::io::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(answer).with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "mcpd test stub stopped");
            }
        });
        Ok(Self { url, inner })
    }

    /// The routes the config's upstreams were pointed at: route `N` is served under
    /// [`route_prefix`]`(N)`.
    pub(crate) fn set_routes(&self, routes: Vec<Route>) {
        self.lock().routes = routes;
    }

    /// Starts a new case: these responses, in order, and an empty request log.
    pub(crate) fn load(&self, responses: &[Recorded]) {
        let mut inner = self.lock();
        inner.queue = responses.iter().cloned().collect();
        inner.seen.clear();
        inner.unanswered = 0;
    }

    /// The requests received since the last `load`.
    pub(crate) fn requests(&self) -> Vec<StubRequest> {
        self.lock().seen.clone()
    }

    /// How many requests since the last `load` found no recorded response.
    pub(crate) fn unanswered(&self) -> usize {
        self.lock().unanswered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Splits `/_mcpd/N/rest?q` into route `N` and `/rest?q`; other targets have no route.
fn split_route(target: &str) -> (Option<usize>, String) {
    let Some(rest) = target.strip_prefix("/_mcpd/") else {
        return (None, target.to_owned());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (n, tail) = rest.split_at(end);
    match n.parse() {
        Ok(n) if tail.starts_with('/') => (Some(n), tail.to_owned()),
        Ok(n) => (Some(n), format!("/{tail}")),
        Err(_) => (None, target.to_owned()),
    }
}

async fn answer(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let raw = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    let (route, target) = split_route(&raw);
    let next = {
        let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
        let route = route.and_then(|n| inner.routes.get(n).cloned());
        let seen = StubRequest {
            method: req.method().to_string(),
            target,
            route,
        };
        inner.seen.push(seen.clone());
        let next = inner.queue.pop_front();
        if next.is_none() {
            inner.unanswered += 1;
        }
        (next, seen)
    };
    let (next, seen) = next;
    let Some(rec) = next else {
        let body = serde_json::json!({
            "error": format!(
                "mcpd test stub: no recorded response left for {} {}; add one to the case's 'recorded' list",
                seen.method, seen.target
            )
        });
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
    };
    let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match rec.body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    };
    for (k, v) in &rec.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_target_loses_its_prefix_and_keeps_its_query() {
        assert_eq!(
            split_route("/_mcpd/3/v1/pets?limit=2"),
            (Some(3), "/v1/pets?limit=2".to_owned())
        );
        assert_eq!(split_route("/_mcpd/0"), (Some(0), "/".to_owned()));
        assert_eq!(split_route("/_mcpd/1?a=b"), (Some(1), "/?a=b".to_owned()));
        assert_eq!(split_route("/orders?x=1"), (None, "/orders?x=1".to_owned()));
        assert_eq!(split_route("/_mcpd/x/y"), (None, "/_mcpd/x/y".to_owned()));
    }
}
