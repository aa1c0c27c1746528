//! The direct path over Streamable HTTP through the real binary: a `tools/call` that
//! cannot need a stream is answered as `application/json`, with the same result the SSE
//! path gives; a call that may stream (progress asked, a client that can be asked for
//! approval calling a tool that may ask) still gets its SSE stream, and a reload that
//! makes a tool ask moves its calls back to the stream at once; sessions end and are
//! unknown exactly as before.

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys, call, open_session, rpc, token_only};
use crate::util::{ConfigDir, DEADLINE, DemoApi, Reply, request};

/// The shipped `orders_export`'s arguments for August 2025.
fn august() -> Value {
    json!({"from": "2025-08-01", "to": "2025-08-31"})
}

fn content_type(reply: &Reply) -> &str {
    reply.header("content-type").unwrap_or_default()
}

/// Waits until the direct path knows `session`: its handler registers it when it
/// handles `notifications/initialized`, which rmcp accepts (202) before it runs. Polls
/// with a call of an unknown tool, which reaches no upstream.
fn until_direct(server: &HttpServer, token: &str, session: &str) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let probe = call(
            server,
            Some(token),
            session,
            "no_such_tool",
            json!({}),
            None,
        );
        if content_type(&probe) == "application/json" {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "the direct path never took a call of session {session}: {probe:?}"
        );
    }
}

/// A server on a token-only config (kept for the server's lifetime), a token of
/// `agent:reader` with `scopes`, and a session the direct path knows.
fn direct(scopes: &[&str]) -> (DemoApi, ConfigDir, HttpServer, String, String) {
    let api = DemoApi::start();
    let cfg = token_only();
    let (server, token) = serve(&api, &cfg, scopes, false);
    let session = open_session(&server, Some(&token));
    until_direct(&server, &token, &session);
    (api, cfg, server, token, session)
}

/// `cfg` served over HTTP against `api` (reloading on file changes when `watching`),
/// and a token of `agent:reader` with `scopes`.
fn serve(api: &DemoApi, cfg: &ConfigDir, scopes: &[&str], watching: bool) -> (HttpServer, String) {
    let keys = Keys::new(cfg);
    let token = keys.token(cfg, "agent:reader", scopes);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let server = if watching {
        HttpServer::start_watching(cfg.path(), &env, &[])
    } else {
        HttpServer::start(cfg.path(), &env, &[])
    };
    (server, token)
}

/// A session whose client declares `capabilities`.
fn open_with(server: &HttpServer, token: &str, capabilities: Value) -> String {
    let init = rpc(
        server,
        Some(token),
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": capabilities,
            "clientInfo": {"name": "mcpd-tests", "version": "0"}}}),
    );
    assert_eq!(init.status, 200, "initialize: {init:?}");
    let session = init.header("mcp-session-id").unwrap().to_owned();
    let done = rpc(
        server,
        Some(token),
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(done.status, 202, "initialized: {done:?}");
    session
}

#[test]
fn a_call_that_cannot_stream_is_answered_as_json_with_the_result_the_stream_would_carry() {
    let (_api, _cfg, server, token, session) = direct(&["orders.export", "flag.set:staging"]);

    let plain = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        august(),
        None,
    );
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(content_type(&plain), "application/json", "{plain:?}");
    let plain = plain.message();
    assert_eq!(plain["id"], json!(2), "{plain}");
    assert_eq!(plain["result"]["isError"], json!(false), "{plain}");

    // Progress asked: the call's stream carries it, as before.
    let streamed = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        august(),
        Some(json!({"progressToken": "p1"})),
    );
    assert_eq!(streamed.status, 200, "{streamed:?}");
    assert!(
        content_type(&streamed).starts_with("text/event-stream"),
        "{streamed:?}"
    );
    assert_eq!(
        streamed.message()["result"],
        plain["result"],
        "the same result either way"
    );

    // A client that can be asked for approval keeps the stream the question rides on for
    // a tool some call of which may ask (flag_set: a prod write above 10 percent needs a
    // ticket, which a human can give); for one that cannot ask it gets JSON. A call
    // through rmcp registers its session before it answers, so the second call finds the
    // session known.
    let asking = open_with(&server, &token, json!({"elicitation": {}}));
    let staging = json!({"env": "staging", "name": "checkout_v2", "percent": 5});
    for _ in 0..2 {
        let reply = call(
            &server,
            Some(&token),
            &asking,
            "flag_set",
            staging.clone(),
            None,
        );
        assert!(
            content_type(&reply).starts_with("text/event-stream"),
            "{reply:?}"
        );
        assert_eq!(
            reply.message()["result"]["isError"],
            json!(false),
            "{reply:?}"
        );
    }
    let reply = call(
        &server,
        Some(&token),
        &asking,
        "orders_export",
        august(),
        None,
    );
    assert_eq!(content_type(&reply), "application/json", "{reply:?}");
    assert_eq!(reply.message()["result"], plain["result"]);

    // Who calls is the token's subject on this path too: a scope miss is a tool error.
    let refused = call(
        &server,
        Some(&token),
        &session,
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 5}),
        None,
    );
    assert_eq!(content_type(&refused), "application/json", "{refused:?}");
    let text = refused.message()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("agent:reader lacks scope 'flag.set:prod'"),
        "{text}"
    );

    // An unknown tool is the same JSON-RPC error as on the stream.
    let unknown = call(
        &server,
        Some(&token),
        &session,
        "no_such_tool",
        json!({}),
        None,
    );
    let over_sse = call(
        &server,
        Some(&token),
        &session,
        "no_such_tool",
        json!({}),
        Some(json!({"progressToken": "p2"})),
    );
    assert_eq!(content_type(&unknown), "application/json", "{unknown:?}");
    assert_eq!(unknown.message()["error"], over_sse.message()["error"]);
    assert_eq!(unknown.message()["error"]["code"], json!(-32602));
}

/// The JSON-RPC message of the last SSE `data:` line of `reply`, as sent.
fn sse_data(reply: &Reply) -> &str {
    reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .rfind(|d| d.starts_with('{'))
        .unwrap_or_else(|| panic!("no SSE data line in {reply:?}"))
}

#[test]
fn a_direct_answer_is_byte_for_byte_the_message_the_stream_carries() {
    let (_api, _cfg, server, token, session) = direct(&["orders.export"]);
    // A result (its JSON written around by the direct path), a tool error (through
    // rmcp's types) and a JSON-RPC error, each with and without a stream.
    let cases = [
        ("orders_export", august()),
        ("orders_export", json!({"from": "2025-08-01"})),
        (
            "flag_set",
            json!({"env": "prod", "name": "x", "percent": 5}),
        ),
        ("no_such_tool", json!({})),
    ];
    for (i, (tool, args)) in cases.into_iter().enumerate() {
        let plain = call(&server, Some(&token), &session, tool, args.clone(), None);
        assert_eq!(content_type(&plain), "application/json", "{plain:?}");
        let meta = json!({"progressToken": format!("p{i}")});
        let streamed = call(&server, Some(&token), &session, tool, args, Some(meta));
        assert!(
            content_type(&streamed).starts_with("text/event-stream"),
            "{streamed:?}"
        );
        assert_eq!(plain.body, sse_data(&streamed), "{tool}");
    }
}

#[test]
fn a_closed_or_unknown_session_is_not_found_on_the_direct_path_too() {
    let (api, _cfg, server, token, session) = direct(&["*"]);
    let first = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        august(),
        None,
    );
    assert_eq!(content_type(&first), "application/json", "{first:?}");

    let unknown = call(
        &server,
        Some(&token),
        "no-such-session",
        "orders_export",
        august(),
        None,
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");

    let bearer = format!("Bearer {token}");
    let closed = request(
        server.authority(),
        "DELETE",
        "/mcp",
        &[("Authorization", &bearer), ("Mcp-Session-Id", &session)],
        None,
    );
    assert_eq!(closed.status, 204, "{closed:?}");
    let after = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        august(),
        None,
    );
    assert_eq!(
        after.status, 404,
        "a closed session takes no calls: {after:?}"
    );
    let requests = api.requests().len();
    assert_eq!(requests, 1, "only the first call reached the API");
}

#[test]
fn a_request_the_direct_path_does_not_take_is_answered_by_the_session_as_before() {
    let (_api, _cfg, server, token, session) = direct(&["*"]);
    let bearer = format!("Bearer {token}");
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "orders_export", "arguments": august()}})
    .to_string();
    let post = |extra: &[(&str, &str)]| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Authorization", bearer.as_str()),
            ("Mcp-Session-Id", session.as_str()),
        ];
        headers.extend_from_slice(extra);
        request(server.authority(), "POST", "/mcp", &headers, Some(&body))
    };
    // Accepting only JSON is refused, as the session always refused it.
    let json_only = post(&[("Accept", "application/json")]);
    assert_eq!(json_only.status, 406, "{json_only:?}");
    // A protocol revision mcpd does not know is refused, as before.
    let unknown_revision = post(&[
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", "1999-01-01"),
    ]);
    assert_eq!(unknown_revision.status, 400, "{unknown_revision:?}");
    // A known one is served directly.
    let known = post(&[
        ("Accept", "application/json, text/event-stream"),
        ("MCP-Protocol-Version", "2025-11-25"),
    ]);
    assert_eq!(known.status, 200, "{known:?}");
    assert_eq!(content_type(&known), "application/json", "{known:?}");
    assert_eq!(known.message()["id"], json!(5));
    // tools/list is the session's, over its stream.
    let list = rpc(
        &server,
        Some(&token),
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}),
    );
    assert!(
        content_type(&list).starts_with("text/event-stream"),
        "{list:?}"
    );
    assert!(list.message()["result"]["tools"].is_array(), "{list:?}");
}

#[test]
fn a_reload_that_makes_a_tool_ask_puts_its_next_call_to_the_human_on_the_stream() {
    let api = DemoApi::start();
    let cfg = token_only();
    cfg.edit(
        "mcpd.yaml",
        "  max_ttl: 1h\n",
        "  max_ttl: 1h\n  approval_timeout: 1s\n",
    );
    let (server, token) = serve(&api, &cfg, &["orders.export"], true);
    let asking = open_with(&server, &token, json!({"elicitation": {}}));
    let export = || {
        call(
            &server,
            Some(&token),
            &asking,
            "orders_export",
            august(),
            None,
        )
    };
    // The first call goes through rmcp (registering the session), then JSON.
    let end = std::time::Instant::now() + DEADLINE;
    while content_type(&export()) != "application/json" {
        assert!(std::time::Instant::now() < end, "never answered as JSON");
    }

    // Now every export needs a human's yes: the next calls are asked, on their stream.
    cfg.edit(
        "policies.yaml",
        "rules:\n",
        "rules:\n  - id: exports-need-a-yes\n    tools: [orders.*]\n    effect: require\n    \
         reason: each export needs a human's yes\n    require: { approval: true }\n",
    );
    let asked = loop {
        let reply = export();
        if content_type(&reply).starts_with("text/event-stream") {
            break reply;
        }
        assert_eq!(content_type(&reply), "application/json", "{reply:?}");
        assert!(
            std::time::Instant::now() < end,
            "the reload never moved the call to the stream: {reply:?}"
        );
    };
    assert!(
        asked.body.contains("elicitation/create"),
        "the question rode the call's stream: {asked:?}"
    );
    let text = asked.message()["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("no one approved this call within 1 s"),
        "{text}"
    );
}

#[test]
fn a_client_that_disconnects_mid_call_does_not_stop_the_call_on_the_direct_path() {
    use std::io::Write as _;
    let api = DemoApi::start();
    let cfg = token_only();
    cfg.write(
        "tools.d/slow.read.yaml",
        "name: slow.read\ndescription: Answers slowly.\ninput: { type: object, properties: { ms: { type: integer } } }\nrequest: { upstream: orders, method: GET, path: /slow, query: { ms: \"{{ args.ms }}\" }, timeout: 10s }\n",
    );
    let (server, token) = serve(&api, &cfg, &["*"], false);
    let session = open_session(&server, Some(&token));
    until_direct(&server, &token, &session);

    // The call goes out on a connection the client then closes, before the answer.
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "slow_read", "arguments": {"ms": 300}}})
    .to_string();
    let mut conn = std::net::TcpStream::connect(server.authority()).unwrap();
    write!(
        conn,
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nMcp-Session-Id: {session}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        server.authority(),
        body.len()
    )
    .unwrap();
    api.wait_slow("started", 1, "the call never reached the API");
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);

    // The upstream request runs to its answer: the call was not dropped with the client.
    api.wait_slow("answered", 1, "the call stopped when its client went away");
    // Its log line is written when it ends, though no answer went out (a direct call's
    // line waits for its answer).
    let log = server.wait_stderr("tool=slow.read");
    assert!(
        (log.lines()).any(|l| l.contains("call completed") && l.contains("tool=slow.read")),
        "{log}"
    );
    // The server goes on serving the session.
    let next = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        august(),
        None,
    );
    assert_eq!(content_type(&next), "application/json", "{next:?}");
    assert_eq!(
        next.message()["result"]["isError"],
        json!(false),
        "{next:?}"
    );
}
