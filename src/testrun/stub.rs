//! The recorded-response upstream: a loopback HTTP server that answers every request
//! with the next response a test case recorded, and remembers what it was asked.
//!
//! It stands in for the user's real backend while `mcpd test` runs; it must not
//! interpret requests beyond logging them.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::case::Recorded;

/// A request the stub received.
#[derive(Debug, Clone)]
pub(crate) struct StubRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
}

#[derive(Debug, Default)]
struct Inner {
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

async fn answer(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let seen = StubRequest {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
    };
    let next = {
        let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.seen.push(seen.clone());
        let next = inner.queue.pop_front();
        if next.is_none() {
            inner.unanswered += 1;
        }
        next
    };
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
