//! `serve --http`'s serving threads through the real binary: each connection is served
//! by one of a thread per core (`TOKIO_WORKER_THREADS` sets how many), each on a
//! runtime of its own. A session opened on one thread is served on every other, on the
//! direct path and on its stream; a call waiting on its upstream holds up no other call
//! on its thread.

use serde_json::{Value, json};

use crate::http::{
    HttpServer, Keys, SLOW_TOOL, call, open_session, slow_call_in_background, token_only,
};
use crate::util::DemoApi;

/// A server with `threads` serving threads, on a token-only config with the slow tool,
/// and a token for every tool.
fn serve(api: &DemoApi, threads: &str) -> (crate::util::ConfigDir, HttpServer, String) {
    let cfg = token_only();
    cfg.write("tools.d/slow.yaml", SLOW_TOOL);
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:t", &["*"]);
    let server = HttpServer::start(
        cfg.path(),
        &[
            ("DEMO_API_URL", api.url.as_str()),
            ("MCPD_TOKEN_KEY", keys.key.as_str()),
            ("TOKIO_WORKER_THREADS", threads),
        ],
        &[],
    );
    (cfg, server, token)
}

/// The names of the server's threads that serve connections.
fn serving_threads(server: &HttpServer) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("mcpd-http-"))
        .count()
}

#[test]
fn a_session_opened_on_one_serving_thread_is_served_on_every_other() {
    let api = DemoApi::start();
    let (_cfg, server, token) = serve(&api, "3");
    assert_eq!(serving_threads(&server), 3);
    // Every request below is a connection of its own, handed to the next thread in turn.
    let session = open_session(&server, Some(&token));
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});
    let mut results: Vec<Value> = Vec::new();
    for i in 0..9 {
        // Every other call asks for progress: it is answered on the session's stream.
        let meta = (i % 2 == 1).then(|| json!({"progressToken": i}));
        let reply = call(
            &server,
            Some(&token),
            &session,
            "orders_export",
            august.clone(),
            meta,
        );
        assert_eq!(reply.status, 200, "call {i}: {reply:?}");
        let message = reply.message();
        assert_eq!(message["result"]["isError"], false, "call {i}: {message}");
        results.push(message["result"]["structuredContent"].clone());
    }
    assert!(results[0].is_object(), "{:?}", results[0]);
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
}

#[test]
fn a_call_waiting_on_its_upstream_holds_up_no_other_call_on_its_thread() {
    let api = DemoApi::start();
    // One serving thread: every connection is served by it.
    let (_cfg, server, token) = serve(&api, "1");
    assert_eq!(serving_threads(&server), 1);
    let session = open_session(&server, Some(&token));
    let slow = slow_call_in_background(&server, &token, &session, 3000);
    api.wait_slow("started", 1, "the slow call never reached the upstream");
    let quick = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
        None,
    );
    assert_eq!(quick.message()["result"]["isError"], false, "{quick:?}");
    assert_eq!(
        api.get("/_slow")["answered"],
        json!(0),
        "the quick call was answered only after the slow one"
    );
    let slow = slow.join().unwrap();
    assert_eq!(
        slow.message()["result"]["structuredContent"]["slept_ms"],
        3000,
        "{slow:?}"
    );
}
