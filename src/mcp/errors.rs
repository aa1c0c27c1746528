//! The JSON-RPC errors mcpd answers itself, worded so a client's developer knows what
//! to send instead: a method this server does not serve (-32601), params of
//! the wrong shape (-32602), a `tools/list` cursor it never handed out (-32602).
//!
//! Owns the words and codes only; `mcp` decides when each applies. A tool failure is
//! never one of these: it is an `isError` result (`to_mcp_result`).

use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, ErrorCode, PaginatedRequestParams};
use serde_json::{Value, json};

/// The request methods a client may send to mcpd.
const SERVED: &str = "initialize, ping, tools/list, tools/call, resources/list, \
resources/templates/list, resources/read, prompts/list, prompts/get, completion/complete, \
logging/setLevel";

/// MCP request methods (2024-11-05 to 2026-07-28). rmcp reads a request whose params
/// do not fit its method as an unknown method; for these it is an invalid-params error.
const STANDARD: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "resources/templates/list",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
];

/// -32601 for a method mcpd does not serve, saying which ones it does.
pub(crate) fn unsupported(method: &str) -> ErrorData {
    let hint = match method {
        "resources/subscribe" | "resources/unsubscribe" => {
            "; a resource is read when asked for, and a reload that changes the list sends \
             notifications/resources/list_changed"
        }
        _ => "",
    };
    ErrorData::new(
        ErrorCode::METHOD_NOT_FOUND,
        format!("method '{method}' is not supported: mcpd serves {SERVED}{hint}"),
        Some(json!({ "method": method })),
    )
}

/// The answer to a request rmcp could not read as its method: -32602 saying what is wrong
/// with the params when the method is a standard one, else [`unsupported`].
pub(crate) fn unreadable_request(method: &str, params: Option<&Value>) -> ErrorData {
    if !STANDARD.contains(&method) {
        return unsupported(method);
    }
    let empty = json!({});
    let params = params.unwrap_or(&empty);
    let why = match method {
        "tools/call" => tools_call_problem(params),
        "tools/list" => serde_json::from_value::<PaginatedRequestParams>(params.clone())
            .err()
            .map(|e| e.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| "they do not match the method's parameters in the MCP schema".to_owned());
    ErrorData::new(
        ErrorCode::INVALID_PARAMS,
        format!("invalid params for '{method}': {why}"),
        Some(json!({ "method": method })),
    )
}

/// What is wrong with `tools/call` params, in the words of the request's shape.
fn tools_call_problem(params: &Value) -> Option<String> {
    let Value::Object(p) = params else {
        return Some(format!(
            "params must be an object {{\"name\": TOOL, \"arguments\": {{...}}}}, not {}",
            kind(params)
        ));
    };
    match p.get("name") {
        None => return Some("'name' (the tool's name from tools/list) is missing".to_owned()),
        Some(Value::String(_)) => {}
        Some(other) => return Some(format!("'name' must be a string, not {}", kind(other))),
    }
    match p.get("arguments") {
        None | Some(Value::Object(_) | Value::Null) => {}
        Some(other) => {
            return Some(format!(
                "'arguments' must be an object of the tool's arguments by name, not {}",
                kind(other)
            ));
        }
    }
    serde_json::from_value::<CallToolRequestParams>(params.clone())
        .err()
        .map(|e| e.to_string())
}

/// -32602 for a `tools/list` cursor: mcpd lists every tool in one page, so any cursor is
/// one it never gave out.
pub(crate) fn unknown_cursor(cursor: &str) -> ErrorData {
    let shown: String = cursor.chars().take(80).collect();
    ErrorData::new(
        ErrorCode::INVALID_PARAMS,
        format!(
            "invalid cursor '{shown}': tools/list returns every tool in one page and never \
             gives out a cursor (there is no nextCursor); call it without one"
        ),
        None,
    )
}

/// A JSON value's kind, as a message names it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_method_says_what_is_served() {
        let e = unsupported("resources/subscribe");
        assert_eq!(e.code, ErrorCode::METHOD_NOT_FOUND);
        assert!(
            e.message.contains("'resources/subscribe' is not supported"),
            "{}",
            e.message
        );
        assert!(e.message.contains("tools/call") && e.message.contains("list_changed"));
    }

    #[test]
    fn tools_call_arguments_that_are_not_an_object_are_invalid_params() {
        let e = unreadable_request("tools/call", Some(&json!({"name": "x", "arguments": [1]})));
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(
            e.message,
            "invalid params for 'tools/call': 'arguments' must be an object of the tool's arguments by name, not an array"
        );
        let e = unreadable_request("tools/call", Some(&json!({"arguments": {}})));
        assert!(e.message.contains("'name'"), "{}", e.message);
        let e = unreadable_request("tools/call", Some(&json!("x")));
        assert!(e.message.contains("not a string"), "{}", e.message);
    }

    #[test]
    fn an_unknown_method_is_not_found_and_a_known_one_with_bad_params_is_invalid() {
        assert_eq!(
            unreadable_request("foo/bar", None).code,
            ErrorCode::METHOD_NOT_FOUND
        );
        let e = unreadable_request("tools/list", Some(&json!({"cursor": 5})));
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert!(
            e.message
                .starts_with("invalid params for 'tools/list': invalid type"),
            "{}",
            e.message
        );
    }
}
