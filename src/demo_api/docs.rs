//! The demo API's documents and media, for the resource and content-type demos: the
//! team's runbooks as markdown (`/runbooks/{name}`), a one-pixel PNG and a short WAV
//! (`/assets/{name}`), one order by id (`/orders/{id}`), and a ticket system
//! (`/tickets/{id}`: `CHG-1234`, `INC-42`, `CHG-1300`, `CHG-1400`, `INC-77`; any other
//! is a 404).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use serde_json::json;

use super::{DemoState, error};

/// The team's runbooks, as markdown (one names an on-call address, which redaction
/// masks on the way to the model).
const RUNBOOKS: &[(&str, &str)] = &[
    (
        "deploy",
        "# Deploy\n\n1. Check the flags dashboard.\n2. Roll out to staging, then prod at 10 percent.\n3. Page oncall@example.com if errors rise.\n",
    ),
    (
        "rollback",
        "# Rollback\n\nSet the flag back to 0 percent in prod, then open an incident (INC-...).\n",
    ),
];

pub(super) async fn runbook(Path(name): Path<String>) -> Response {
    match RUNBOOKS.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/markdown; charset=utf-8",
            )],
            *text,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no runbook '{name}'")),
    }
}

/// A demo ticket: id, kind, status, environment, change window in hours from now.
type Ticket = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    (i64, i64),
);

/// The tickets the demo's ticket system knows: (id, kind, status, environment, change
/// window as hours from now). CHG-1234 is an approved change for prod with its window
/// open, INC-42 an open incident, CHG-1300 a change pending approval, CHG-1400 an
/// approved change whose window closed yesterday, INC-77 approved for staging.
const TICKETS: &[Ticket] = &[
    ("CHG-1234", "change", "approved", "prod", (-1, 8)),
    ("INC-42", "incident", "open", "prod", (-1, 8)),
    ("CHG-1300", "change", "pending", "prod", (-1, 8)),
    ("CHG-1400", "change", "approved", "prod", (-48, -24)),
    ("INC-77", "incident", "approved", "staging", (-1, 8)),
];

/// A ticket (any other is a 404); a request with a bearer token other than
/// [`super::TICKETS_TOKEN`] is refused with 401.
pub(super) async fn ticket(headers: axum::http::HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(auth) = headers.get("authorization") {
        let bearer = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(super::TICKETS_TOKEN) {
            return error(
                StatusCode::UNAUTHORIZED,
                "the ticket system does not know this bearer token",
            );
        }
    }
    let Some((t, kind, status, env, (opens, closes))) = TICKETS.iter().find(|(t, ..)| *t == id)
    else {
        return error(StatusCode::NOT_FOUND, format!("no ticket '{id}'"));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let time = |hours: i64| {
        let at = now.saturating_add_signed(hours * 3600);
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
        .to_string()
    };
    Json(json!({
        "id": t,
        "kind": kind,
        "status": status,
        "environment": env,
        "window": { "start": time(*opens), "end": time(*closes) },
    }))
    .into_response()
}

/// A 1x1 red PNG.
const PIXEL_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0xc9, 0xfe, 0x92, 0xef, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A tenth of a second of silence as 8 kHz, 8-bit mono WAV.
fn chime_wav() -> Vec<u8> {
    let samples = 800u32;
    let mut w = Vec::with_capacity(44 + samples as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + samples).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&samples.to_le_bytes());
    w.resize(44 + samples as usize, 0x80);
    w
}

/// Small media for the content-type demos: `pixel.png`, `chime.wav`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    use axum::http::header::CONTENT_TYPE;
    match name.as_str() {
        "pixel.png" => ([(CONTENT_TYPE, "image/png")], PIXEL_PNG).into_response(),
        "chime.wav" => ([(CONTENT_TYPE, "audio/wav")], chime_wav()).into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("no asset '{name}'")),
    }
}

/// One order by id, as `/orders` lists it.
pub(super) async fn order_by_id(
    State(s): State<Arc<DemoState>>,
    Path(id): Path<String>,
) -> Response {
    match s.orders.iter().find(|o| o.id == id) {
        Some(o) => Json(json!(o)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no order '{id}'")),
    }
}
