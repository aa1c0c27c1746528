//! `mcpd serve` over stdio, spoken to in raw JSON-RPC: the protocol edges a real client
//! would hit (wire names, unknown tools, bad arguments, upstream failures) and the rule
//! that stdout carries nothing but MCP messages.

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, RecordingProxy, StdioClient, is_error, text};

fn serve_shipped(api: &DemoApi) -> StdioClient {
    StdioClient::shipped(&[("DEMO_API_URL", &api.url)])
}

#[test]
fn tools_list_shows_wire_names_and_schemas() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    let resp = c.request("tools/list", json!({}));
    let tools = resp["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["flag_set", "orders_export"]);
    for t in tools {
        let name = t["name"].as_str().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_eq!(t["inputSchema"]["type"], "object");
    }
    let orders = tools.iter().find(|t| t["name"] == "orders_export").unwrap();
    assert_eq!(orders["inputSchema"]["required"], json!(["from", "to"]));
    assert_eq!(orders["annotations"]["readOnlyHint"], json!(true));
    // All of it, as a host sees it: names, titles, descriptions, schemas, annotations.
    insta::assert_json_snapshot!("shipped_tools_list", resp["result"]);
}

#[test]
fn orders_export_masks_every_email_and_card() {
    let api = DemoApi::start();
    let truth = api.get("/orders?from=2025-08-01&to=2025-08-31");
    let mut c = serve_shipped(&api);
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&result), "{result}");
    let orders = result["structuredContent"]["orders"].as_array().unwrap();
    assert_eq!(orders.len() as u64, truth["count"].as_u64().unwrap());
    let dump = result.to_string();
    for o in truth["orders"].as_array().unwrap() {
        assert!(
            !dump.contains(o["email"].as_str().unwrap()),
            "raw email leaked: {}",
            o["email"]
        );
        assert!(
            !dump.contains(o["card"].as_str().unwrap()),
            "raw card leaked: {}",
            o["card"]
        );
    }
    assert!(
        orders
            .iter()
            .all(|o| o["email"].as_str().unwrap().contains("***@"))
    );
    // content carries the same result as text, for hosts that ignore structuredContent
    let text_json: Value = serde_json::from_str(&text(&result)).unwrap();
    assert_eq!(text_json, result["structuredContent"]);
    // ... byte for byte the result's compact JSON (it is serialised once, for both)
    assert_eq!(
        text(&result),
        serde_json::to_string(&result["structuredContent"]).unwrap()
    );
}

#[test]
fn a_call_waiting_on_its_upstream_holds_up_no_other_message() {
    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let cfg = ConfigDir::shipped();
    cfg.edit("tools.d/orders.export.yaml", "timeout: 5s", "timeout: 2s");
    let mut c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &url)]);
    let stuck = c.send_request(
        "tools/call",
        json!({"name": "orders_export", "arguments": {"from": "2025-08-01", "to": "2025-08-31"}}),
    );
    // stdio is served on one thread: the call waiting on its upstream must not keep it
    let pings: Vec<u64> = (0..8).map(|_| c.send_request("ping", json!({}))).collect();
    for id in pings {
        assert_eq!(c.wait_for_id(id)["result"], json!({}));
    }
    let answered_first = c
        .seen
        .iter()
        .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["id"] == json!(stuck)));
    assert!(
        !answered_first,
        "the stuck call was answered before the pings"
    );
    let result = c.wait_for_id(stuck);
    assert_eq!(
        text(&result["result"]),
        "upstream 'orders' did not answer within 2000ms"
    );
}

#[test]
fn calls_in_flight_up_to_the_tools_cap_each_get_their_own_answer() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    // The shipped orders tool allows 8 calls in flight (limits.concurrency).
    let days: Vec<String> = (1..=8).map(|d| format!("2025-08-{d:02}")).collect();
    let ids: Vec<(u64, &String)> = days
        .iter()
        .map(|day| {
            let args = json!({"from": day, "to": day});
            let id = c.send_request(
                "tools/call",
                json!({"name": "orders_export", "arguments": args}),
            );
            (id, day)
        })
        .collect();
    for (id, day) in ids {
        let resp = c.wait_for_id(id);
        let result = &resp["result"];
        assert!(!is_error(result), "{resp}");
        let truth = api.get(&format!("/orders?from={day}&to={day}"));
        let orders = result["structuredContent"]["orders"].as_array().unwrap();
        assert_eq!(
            orders.len() as u64,
            truth["count"].as_u64().unwrap(),
            "{day}"
        );
        let ids_of = |v: &[Value]| v.iter().map(|o| o["id"].clone()).collect::<Vec<_>>();
        assert_eq!(
            ids_of(orders),
            ids_of(truth["orders"].as_array().unwrap()),
            "{day}"
        );
    }
}

#[test]
fn dotted_id_is_accepted_in_tools_call() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    let result = c.call(
        "flag.set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
    );
    assert!(!is_error(&result), "{result}");
    assert_eq!(api.get("/flags/staging/checkout_v2")["percent"], 10);
}

#[test]
fn flag_set_sends_percent_as_a_json_number() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    let result = c.call(
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 5}),
    );
    assert!(!is_error(&result), "{result}");
    assert_eq!(result["structuredContent"]["percent"], json!(5));
    let seen = api.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["method"], "PUT");
    assert_eq!(seen[0]["path"], "/flags/prod/checkout_v2");
}

/// `requests` with what differs from run to run replaced by a stand-in, once checked:
/// the proxy's own address in `host`, the fresh trace context in `traceparent`.
fn stable_requests(requests: Vec<Value>, proxy: &RecordingProxy) -> Vec<Value> {
    let authority = proxy.url.trim_start_matches("http://");
    requests
        .into_iter()
        .map(|mut r| {
            let headers = r["headers"].as_object_mut().unwrap();
            if let Some(host) = headers.get_mut("host") {
                assert_eq!(host, authority);
                *host = json!("[proxy]");
            }
            if let Some(tp) = headers.get_mut("traceparent") {
                let fields: Vec<&str> = tp.as_str().unwrap().split('-').collect();
                let lengths: Vec<usize> = fields.iter().map(|f| f.len()).collect();
                assert!(
                    lengths == [2, 32, 16, 2]
                        && fields
                            .iter()
                            .all(|f| f.chars().all(|c| c.is_ascii_hexdigit())),
                    "not a W3C traceparent: {tp}"
                );
                *tp = json!("[traceparent]");
            }
            r
        })
        .collect()
}

#[test]
fn the_seed_tools_render_these_upstream_requests() {
    let api = DemoApi::start();
    let proxy = RecordingProxy::start(&api.url);
    let mut c = StdioClient::shipped(&[("DEMO_API_URL", &proxy.url)]);
    let orders = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-03"}),
    );
    assert!(!is_error(&orders), "{orders}");
    let flag = c.call(
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 5}),
    );
    assert!(!is_error(&flag), "{flag}");
    let sent = proxy.requests();
    // What the proxy recorded is what reached the demo API.
    let line = |r: &Value| format!("{} {}?{}", r["method"], r["path"], r["query"]);
    assert_eq!(
        api.requests().iter().map(line).collect::<Vec<_>>(),
        sent.iter().map(line).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "seed_tools_upstream_requests",
        stable_requests(sent, &proxy)
    );
}

#[test]
fn unknown_tool_is_a_json_rpc_error() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    let resp = c.request(
        "tools/call",
        json!({"name": "no_such_tool", "arguments": {}}),
    );
    assert_eq!(resp["error"]["code"], -32602, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_tool")
    );
}

#[test]
fn bad_arguments_are_a_tool_error_naming_the_field_and_nothing_is_sent() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    for (args, needle) in [
        (
            json!({"env": "staging", "name": "x", "percent": 150}),
            "'/percent'",
        ),
        (
            json!({"env": "staging", "name": "x", "percent": "50"}),
            "'/percent'",
        ),
        (json!({"env": "qa", "name": "x", "percent": 5}), "'/env'"),
        (
            json!({"env": "staging", "name": "x", "percent": 5, "extra": 1}),
            "extra",
        ),
        (
            json!({"env": "staging", "name": "../admin", "percent": 5}),
            "'/name'",
        ),
    ] {
        let result = c.call("flag_set", args.clone());
        assert!(is_error(&result), "{args} -> {result}");
        let msg = text(&result);
        assert!(
            msg.starts_with("invalid arguments:") && msg.contains(needle),
            "{args} -> {msg}"
        );
    }
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "August"}),
    );
    assert!(
        is_error(&result) && text(&result).contains("'/to'"),
        "{result}"
    );
    assert!(
        api.requests().is_empty(),
        "upstream saw {:?}",
        api.requests()
    );
}

#[test]
fn upstream_error_status_is_a_readable_tool_error() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    // Valid for the schema, refused by the service: 'from' after 'to'.
    let result = c.call(
        "orders_export",
        json!({"from": "2025-09-01", "to": "2025-08-01"}),
    );
    assert!(is_error(&result), "{result}");
    assert_eq!(
        text(&result),
        "the orders service refused the range: 'from' (2025-09-01) is after 'to' (2025-08-01)"
    );
}

#[test]
fn unreachable_upstream_is_a_tool_error_not_a_crash() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut c = StdioClient::shipped(&[("DEMO_API_URL", &url)]);
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(is_error(&result), "{result}");
    assert!(
        text(&result).contains("upstream 'orders' could not be reached"),
        "{result}"
    );
    // the server is still alive and answering
    let list = c.request("tools/list", json!({}));
    assert!(list.get("result").is_some());
}

#[test]
fn slow_upstream_times_out_as_a_tool_error() {
    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "tools.d/orders.export.yaml",
        "timeout: 5s",
        "timeout: 300ms",
    );
    let mut c = StdioClient::start(cfg.path(), &[("DEMO_API_URL", &url)]);
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(is_error(&result), "{result}");
    assert_eq!(
        text(&result),
        "upstream 'orders' did not answer within 300ms"
    );
}

#[test]
fn missing_secret_is_named_and_its_value_never_appears() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "tools.d/orders.export.yaml",
        "  timeout: 5s",
        "  headers:\n    Authorization: \"Bearer {{ secret.MCPD_TEST_ORDERS_TOKEN }}\"\n  timeout: 5s",
    );
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(is_error(&result));
    assert!(
        text(&result).contains("missing secret 'MCPD_TEST_ORDERS_TOKEN'"),
        "{result}"
    );
    drop(c);

    let token = "tok-5ecr3t-value";
    let mut c = StdioClient::start(
        cfg.path(),
        &[
            ("DEMO_API_URL", &api.url),
            ("MCPD_TEST_ORDERS_TOKEN", token),
        ],
    );
    let result = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&result), "{result}");
    assert_eq!(
        api.requests().last().unwrap()["headers"]["authorization"],
        "present"
    );
    let all_output = format!("{}{}", c.seen.join("\n"), c.stderr());
    assert!(!all_output.contains(token), "secret leaked");
}

#[test]
fn default_deny_refuses_and_the_upstream_sees_nothing() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.edit("policies.yaml", "default: allow", "default: deny");
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let result = c.call(
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
    );
    assert!(is_error(&result));
    assert!(text(&result).starts_with("denied by policy:"), "{result}");
    assert!(api.requests().is_empty());
}

#[test]
fn stdout_carries_only_json_rpc_messages() {
    let api = DemoApi::start();
    let mut c = serve_shipped(&api);
    c.request("tools/list", json!({}));
    c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    c.call(
        "flag_set",
        json!({"env": "staging", "name": "x", "percent": 500}),
    );
    c.request("tools/call", json!({"name": "nope"}));
    assert!(c.seen.len() >= 5);
    for line in &c.seen {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
    }
    // and the logs did go somewhere: stderr
    assert!(c.stderr().contains("call completed"), "{}", c.stderr());
}
