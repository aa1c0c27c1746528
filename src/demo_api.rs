//! The demo upstream: a small orders and flags HTTP API that ships with mcpd.
//!
//! It behaves like a real internal service so the demo, the tests and the benchmark
//! exercise mcpd end to end: orders with customer emails and card numbers in two data
//! regions (`/orders` is the US store, `/eu/orders` the EU store), filtered by date;
//! flags that store a percent per environment. `/_requests` lets tests see exactly what
//! reached the upstream; `/writes` is a slow (or failing) write endpoint that counts
//! the writes it applied per `Idempotency-Key` (`/_writes`), for tests of "one write per
//! key"; `/echo`, `/probe/...` and `/big` behave like the upstreams that leak or flood
//! (an echo of the request, a 404 naming its path, a reply of any size). `/orders/{id}`
//! answers one order; `/runbooks/{name}` and `/assets/{name}` (`docs.rs`) serve
//! markdown, a PNG and a WAV for the resource and content-type demos; flags live in
//! `flags.rs`, the seed orders in `seed.rs`. It is demo code:
//! in memory, no auth.

mod docs;
mod flags;
mod seed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How many requests `/_requests` remembers.
const REQUEST_LOG: usize = 10_000;

/// One order, as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    /// Order id, e.g. `ord-1001`.
    pub id: String,
    /// Order date, `YYYY-MM-DD`.
    pub date: String,
    /// Data region: `us` or `eu`.
    pub region: String,
    /// Customer name.
    pub customer: String,
    /// Customer email (PII).
    pub email: String,
    /// Payment card number (PCI data; Luhn-valid test numbers).
    pub card: String,
    /// Amount in cents.
    pub amount_cents: u64,
    /// An invoice reference: 16 digits that fail the Luhn check, so not a card number.
    pub invoice_ref: String,
}

/// A request as the demo API saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers of interest (idempotency-key, traceparent, ...); `authorization` only as
    /// `present`.
    pub headers: HashMap<String, String>,
}

/// The API's in-memory state.
#[derive(Debug, Default)]
pub struct DemoState {
    orders: Vec<Order>,
    flags: Mutex<HashMap<(String, String), u8>>,
    seen: Mutex<Vec<Seen>>,
    flaky: Mutex<HashMap<String, u32>>,
    writes: Mutex<Writes>,
    /// `/slow` requests: how many began, and how many ran to their answer (the rest
    /// were dropped when the caller went away, e.g. mcpd aborting a cancelled call).
    slow_started: AtomicUsize,
    slow_answered: AtomicUsize,
}

/// What `/writes` applied.
#[derive(Debug, Default)]
struct Writes {
    /// Writes applied in all.
    total: u64,
    /// Writes applied per `Idempotency-Key` ("" for none).
    by_key: HashMap<String, u64>,
    /// The last write of each `ref`.
    by_ref: HashMap<String, Value>,
    /// The first write of each key, for `dedupe=true` repeats.
    first: HashMap<String, Value>,
    /// Requests seen per `ref`, for `fail_first`.
    attempts: HashMap<String, u32>,
}

impl DemoState {
    /// A fresh state with the seed orders and no flags.
    pub fn new() -> Self {
        Self {
            orders: seed::seed_orders(),
            ..Self::default()
        }
    }

    /// How many API requests (not `/_` ones) have arrived so far.
    pub fn requests_seen(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The router, for embedding or serving.
pub fn router(state: Arc<DemoState>) -> Router {
    Router::new()
        .route("/orders", get(us_orders))
        .route("/eu/orders", get(eu_orders))
        .route(
            "/flags/{env}/{name}",
            get(flags::get_flag).put(flags::put_flag),
        )
        .route("/_requests", get(requests).delete(clear_requests))
        .route("/slow", get(slow).put(slow).post(slow))
        .route("/_slow", get(slow_stats))
        .route("/flaky/{id}", any(flaky))
        .route("/orders/{id}", get(docs::order_by_id))
        .route("/runbooks/{name}", get(docs::runbook))
        .route("/tickets/{id}", get(docs::ticket))
        .route("/assets/{name}", get(docs::asset))
        .route("/writes", axum::routing::post(write))
        .route("/writes/{reference}", get(get_write))
        .route("/_writes", get(writes_applied))
        .route("/echo", any(echo))
        .route("/probe/{*rest}", get(probe))
        .route("/big", get(big))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Binds `addr` (port 0 picks a free one) and serves in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<(SocketAddr, Arc<DemoState>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let state = Arc::new(DemoState::new());
    let app = router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo API stopped");
        }
    });
    Ok((local, state))
}

async fn record(State(state): State<Arc<DemoState>>, req: Request, next: Next) -> Response {
    let uri = req.uri();
    if !uri.path().starts_with("/_") {
        let mut headers = HashMap::new();
        for name in [
            "idempotency-key",
            "traceparent",
            "tracestate",
            "content-type",
        ] {
            if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
                headers.insert(name.to_owned(), v.to_owned());
            }
        }
        if req.headers().contains_key("authorization") {
            headers.insert("authorization".to_owned(), "present".to_owned());
        }
        let seen = Seen {
            method: req.method().to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            headers,
        };
        let mut log = state.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= REQUEST_LOG {
            log.remove(0);
        }
        log.push(seen);
    }
    next.run(req).await
}

async fn requests(State(state): State<Arc<DemoState>>) -> Json<Vec<Seen>> {
    Json(
        state
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
}

async fn clear_requests(State(state): State<Arc<DemoState>>) -> StatusCode {
    state
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct Sleep {
    ms: Option<u64>,
}

/// Answers after `ms` milliseconds (at most 10 s): a slow upstream for tests.
#[derive(Debug, Deserialize)]
struct Flaky {
    fail: Option<u32>,
}

/// Fails with 503 the first `fail` (default 2) requests for each id, then answers 200
/// with the attempt number: for testing which requests mcpd retries.
async fn flaky(
    State(state): State<Arc<DemoState>>,
    Path(id): Path<String>,
    Query(q): Query<Flaky>,
) -> Response {
    let attempt = {
        let mut seen = state.flaky.lock().unwrap_or_else(PoisonError::into_inner);
        let n = seen.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    if attempt <= q.fail.unwrap_or(2) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "try again" })),
        )
            .into_response()
    } else {
        Json(json!({ "id": id, "attempt": attempt })).into_response()
    }
}

#[derive(Debug, Deserialize)]
struct WriteQuery {
    /// Milliseconds before the write is applied.
    ms: Option<u64>,
    /// The status to answer with once it is applied (default 201): a 5xx here is a
    /// write that landed although the client was told it failed.
    status: Option<u16>,
    /// Deduplicate on `Idempotency-Key`: a repeat gets the first answer, nothing applied.
    dedupe: Option<bool>,
    /// The first this many requests for each `ref` fail with 503 and apply nothing.
    fail_first: Option<u32>,
}

/// Applies a write after `ms` (at most 10 s), even when the client stopped waiting, as a
/// service that got the request would; counts it under its `Idempotency-Key`.
async fn write(
    State(state): State<Arc<DemoState>>,
    Query(q): Query<WriteQuery>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ms = q.ms.unwrap_or(0).min(10_000);
    let dedupe = q.dedupe.unwrap_or(false);
    let status = q
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::CREATED);
    let fail_first = q.fail_first.unwrap_or(0);
    let applied = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        let mut w = state.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let reference = body.get("ref").and_then(Value::as_str).map(str::to_owned);
        let attempt = {
            let n = w
                .attempts
                .entry(reference.clone().unwrap_or_default())
                .or_insert(0);
            *n += 1;
            *n
        };
        if attempt <= fail_first {
            return None;
        }
        if dedupe && let Some(first) = w.first.get(&key) {
            let mut again = first.clone();
            if let Some(o) = again.as_object_mut() {
                o.insert("deduplicated".to_owned(), Value::Bool(true));
            }
            return Some(again);
        }
        w.total += 1;
        let n = {
            let n = w.by_key.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let record = json!({ "key": key, "ref": reference, "write": w.total, "applied": n });
        if let Some(r) = reference {
            w.by_ref.insert(r, record.clone());
        }
        w.first.entry(key).or_insert_with(|| record.clone());
        Some(record)
    });
    match applied.await {
        Ok(Some(record)) => (status, Json(record)).into_response(),
        Ok(None) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "try again (nothing was written)",
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the write task failed"),
    }
}

async fn get_write(State(state): State<Arc<DemoState>>, Path(reference): Path<String>) -> Response {
    let w = state.writes.lock().unwrap_or_else(PoisonError::into_inner);
    match w.by_ref.get(&reference) {
        Some(record) => Json(record.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no write with ref '{reference}'"),
        ),
    }
}

async fn writes_applied(State(state): State<Arc<DemoState>>) -> Json<Value> {
    let w = state.writes.lock().unwrap_or_else(PoisonError::into_inner);
    Json(json!({ "total": w.total, "by_key": w.by_key }))
}

async fn slow(State(state): State<Arc<DemoState>>, Query(q): Query<Sleep>) -> Json<Value> {
    let ms = q.ms.unwrap_or(100).min(10_000);
    state.slow_started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    state.slow_answered.fetch_add(1, Ordering::SeqCst);
    Json(json!({ "slept_ms": ms }))
}

/// Answers with what it received (`received`: method, path, query, headers, `doc` from
/// the JSON body, and `raw`, the body's exact bytes, when the query has `raw=1`). A
/// body whose `doc.status` is a number is answered with that status, the echo then
/// serialised in the `error` field: an upstream that echoes requests in its errors.
async fn echo(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = parsed
        .pointer("/doc/status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), Value::from(v.to_str().ok()?))))
        .collect();
    let mut received = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "doc": parsed.get("doc"),
    });
    let raw = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "raw=1"));
    if let (true, Some(fields)) = (raw, received.as_object_mut()) {
        fields.insert("raw".to_owned(), String::from_utf8_lossy(&body).into());
    }
    if status.is_success() {
        Json(json!({ "received": received })).into_response()
    } else {
        error(status, received.to_string())
    }
}

/// Answers 404 naming the path as it arrived (still percent-encoded), as many servers'
/// "not found" pages do.
async fn probe(uri: axum::http::Uri) -> Response {
    error(StatusCode::NOT_FOUND, format!("not found {}", uri.path()))
}

#[derive(Debug, Deserialize)]
struct Big {
    bytes: u64,
    shape: Option<String>,
    /// `true` (any case) or `1`.
    chunked: Option<String>,
}

/// A generated JSON reply of exactly `bytes` bytes, produced as it is sent (the demo
/// API holds none of it): `shape=string` (one long string, the default), `numbers`
/// (`[0,0,...]`), `objects` (`[{"id":0},...]`) or `orders` (orders with an email and a
/// card each). With `chunked=true` it has no
/// Content-Length. For testing how much of a reply mcpd reads.
async fn big(Query(q): Query<Big>) -> Response {
    let (prefix, unit, suffix): (&[u8], &[u8], &[u8]) = match q.shape.as_deref() {
        Some("numbers") => (b"{\"n\":[0", b",0", b"]}"),
        Some("objects") => (b"{\"o\":[{\"id\":0}", b",{\"id\":0}", b"]}"),
        Some("orders") => (
            b"{\"orders\":[{\"id\":0}",
            b",{\"id\":\"ord-1001\",\"date\":\"2025-08-01\",\"region\":\"us\",\"customer\":\"ana silva\",\"email\":\"ana.silva1@example.com\",\"card\":\"4111111111111111\",\"amount_cents\":1000}",
            b"]}",
        ),
        _ => (b"{\"s\":\"", b"x", b"\"}"),
    };
    let fixed = (prefix.len() + suffix.len()) as u64;
    if q.bytes < fixed {
        return error(
            StatusCode::BAD_REQUEST,
            format!("bytes must be at least {fixed}"),
        );
    }
    let body = Generated {
        prefix,
        unit,
        suffix,
        units: (q.bytes - fixed) / unit.len() as u64,
        total: q.bytes,
        pos: 0,
        exact: !q
            .chunked
            .is_some_and(|c| c.eq_ignore_ascii_case("true") || c == "1"),
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// The body of [`big`]: prefix, `units` copies of a unit, spaces to fill, suffix.
struct Generated {
    prefix: &'static [u8],
    unit: &'static [u8],
    suffix: &'static [u8],
    units: u64,
    total: u64,
    pos: u64,
    exact: bool,
}

impl Generated {
    fn byte(&self, i: u64) -> u8 {
        let (p, s, u) = (
            self.prefix.len() as u64,
            self.suffix.len() as u64,
            self.unit.len() as u64,
        );
        let at = |b: &[u8], i: u64| b.get(usize::try_from(i).unwrap_or(usize::MAX)).copied();
        if i < p {
            at(self.prefix, i)
        } else if i >= self.total - s {
            at(self.suffix, i - (self.total - s))
        } else if i - p < self.units * u {
            at(self.unit, (i - p) % u)
        } else {
            Some(b' ')
        }
        .unwrap_or(b' ')
    }
}

impl http_body::Body for Generated {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        const CHUNK: u64 = 64 * 1024;
        let this = self.get_mut();
        if this.pos >= this.total {
            return std::task::Poll::Ready(None);
        }
        let end = (this.pos + CHUNK).min(this.total);
        let chunk: Vec<u8> = (this.pos..end).map(|i| this.byte(i)).collect();
        this.pos = end;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.total
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact {
            http_body::SizeHint::with_exact(self.total - self.pos)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// How many `/slow` requests began and how many were answered; the difference were
/// dropped mid-sleep because their caller went away.
async fn slow_stats(State(state): State<Arc<DemoState>>) -> Json<Value> {
    Json(json!({
        "started": state.slow_started.load(Ordering::SeqCst),
        "answered": state.slow_answered.load(Ordering::SeqCst),
    }))
}

#[derive(Debug, Deserialize)]
struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The bearer token the ticket system checks when one is sent (`mcpd demo` sends it
/// from a secret; a wrong one is refused with 401).
pub const TICKETS_TOKEN: &str = "demo-tickets-token";

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn us_orders(State(s): State<Arc<DemoState>>, Query(r): Query<Range>) -> Response {
    orders_in(&s, "us", r)
}

async fn eu_orders(State(s): State<Arc<DemoState>>, Query(r): Query<Range>) -> Response {
    orders_in(&s, "eu", r)
}

fn orders_in(state: &DemoState, region: &str, r: Range) -> Response {
    let (Some(from), Some(to)) = (r.from, r.to) else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameters 'from' and 'to' are required (YYYY-MM-DD)",
        );
    };
    for d in [&from, &to] {
        if !is_date(d) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("'{d}' is not a date (YYYY-MM-DD)"),
            );
        }
    }
    if from > to {
        return error(
            StatusCode::BAD_REQUEST,
            format!("'from' ({from}) is after 'to' ({to})"),
        );
    }
    let orders: Vec<&Order> = state
        .orders
        .iter()
        .filter(|o| o.region == region && o.date >= from && o.date <= to)
        .collect();
    Json(json!({ "region": region, "count": orders.len(), "orders": orders })).into_response()
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests;
