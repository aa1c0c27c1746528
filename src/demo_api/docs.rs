//! The demo API's documents and media, for the resource and content-type demos: the
//! team's runbooks as markdown (`/runbooks/{name}`), a one-pixel PNG and a short WAV
//! (`/assets/{name}`), one order by id (`/orders/{id}`), and a ticket system that knows
//! two change tickets (`/tickets/{id}`: `CHG-1234`, `INC-42`; any other is a 404).

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

/// The tickets the demo's ticket system knows: an approved change and an open incident.
const TICKETS: &[(&str, &str, &str)] = &[
    ("CHG-1234", "change", "approved"),
    ("INC-42", "incident", "open"),
];

pub(super) async fn ticket(Path(id): Path<String>) -> Response {
    match TICKETS.iter().find(|(t, ..)| *t == id) {
        Some((t, kind, status)) => {
            Json(json!({"id": t, "kind": kind, "status": status})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no ticket '{id}'")),
    }
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
