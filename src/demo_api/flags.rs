//! The demo API's flags: a percent per environment and name, read and set.

use std::sync::{Arc, PoisonError};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{DemoState, error};

const ENVS: &[&str] = &["staging", "prod"];

pub(super) async fn get_flag(
    State(s): State<Arc<DemoState>>,
    Path((env, name)): Path<(String, String)>,
) -> Response {
    if !ENVS.contains(&env.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown environment '{env}' (staging, prod)"),
        );
    }
    let flags = s.flags.lock().unwrap_or_else(PoisonError::into_inner);
    match flags.get(&(env.clone(), name.clone())) {
        Some(p) => Json(json!({ "env": env, "name": name, "percent": p })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no flag '{name}' in {env}")),
    }
}

pub(super) async fn put_flag(
    State(s): State<Arc<DemoState>>,
    Path((env, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if !ENVS.contains(&env.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown environment '{env}' (staging, prod)"),
        );
    }
    let Some(percent) = body
        .get("percent")
        .and_then(Value::as_u64)
        .filter(|p| *p <= 100)
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "'percent' must be an integer from 0 to 100",
        );
    };
    let percent = u8::try_from(percent).unwrap_or(100);
    let mut flags = s.flags.lock().unwrap_or_else(PoisonError::into_inner);
    let previous = flags.insert((env.clone(), name.clone()), percent);
    Json(json!({ "env": env, "name": name, "percent": percent, "previous": previous }))
        .into_response()
}
