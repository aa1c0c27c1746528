//! The JSON-RPC edges of `mcpd serve` over stdio, through the binary (issue 14, item 8;
//! issue 15, item 8): every line gets an answer (a line that does not parse or is over
//! 16 MiB, a batch on a version without batches), params of the wrong shape are
//! -32602, -32601 says what mcpd serves, and each error is one clean log line.

use serde_json::{Value, json};

use crate::util::{ConfigDir, DemoApi, StdioClient};

fn serve(api: &DemoApi, version: &str, env: &[(&str, &str)]) -> (StdioClient, ConfigDir) {
    let cfg = ConfigDir::shipped();
    let mut all = vec![("DEMO_API_URL", api.url.as_str())];
    all.extend_from_slice(env);
    let c = StdioClient::start_on(cfg.path(), &all, &[], version);
    (c, cfg)
}

fn error_of(v: &Value) -> (Value, i64, String) {
    (
        v["id"].clone(),
        v["error"]["code"].as_i64().unwrap_or_default(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The next answer on stdout that no request of ours is waiting for by id.
fn next_unmatched(c: &mut StdioClient) -> Value {
    c.wait_for(|v| v.is_array() || v["id"].is_null() || v.get("error").is_some())
}

#[test]
fn a_line_that_does_not_parse_gets_a_parse_error_and_the_session_goes_on() {
    let api = DemoApi::start();
    let (mut c, _cfg) = serve(&api, "2025-11-25", &[]);
    c.send_line("not json");
    let (id, code, msg) = error_of(&next_unmatched(&mut c));
    assert_eq!((id, code), (json!(null), -32700), "{msg}");
    assert!(
        msg.contains("not JSON") && msg.contains("one JSON-RPC message per line"),
        "{msg}"
    );

    c.send_line("1e400");
    let (id, code, msg) = error_of(&next_unmatched(&mut c));
    assert_eq!((id, code), (json!(null), -32700));
    assert!(msg.contains("number out of range"), "{msg}");

    // A request whose line does not parse is answered under its own id, so the client's
    // pending request ends now instead of at its timeout.
    c.send_line(r#"{"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":"flag_set","arguments":{"env":"staging","name":"x","percent":1e400}}}"#);
    let answer = c.wait_for_id(77);
    let (_, code, msg) = error_of(&answer);
    assert_eq!(code, -32700, "{answer}");
    assert!(msg.contains("number out of range"), "{msg}");

    assert_eq!(c.tool_names(), ["flag_set", "orders_export"]);
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[test]
fn a_line_over_16_mib_gets_a_parse_error_under_its_id() {
    let api = DemoApi::start();
    let (mut c, _cfg) = serve(&api, "2025-11-25", &[]);
    let pad = "x".repeat(17 * 1024 * 1024);
    c.send_line(&format!(
        r#"{{"jsonrpc":"2.0","id":88,"method":"tools/call","params":{{"name":"orders_export","arguments":{{"from":"2025-08-01","to":"2025-08-02","pad":"{pad}"}}}}}}"#
    ));
    let answer = c.wait_for_id(88);
    let (_, code, msg) = error_of(&answer);
    assert_eq!(code, -32700, "{answer}");
    assert!(
        msg.contains("over the limit of 16777216 bytes (16 MiB)"),
        "{msg}"
    );
    assert_eq!(c.tool_names(), ["flag_set", "orders_export"]);
    assert!(api.requests().is_empty());
}

#[test]
fn a_batch_is_refused_per_request_on_versions_without_batches() {
    let api = DemoApi::start();
    for version in ["2025-06-18", "2025-11-25"] {
        let (mut c, _cfg) = serve(&api, version, &[]);
        c.send_line(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":"two","method":"tools/call","params":{"name":"flag_set","arguments":{"env":"staging","name":"b","percent":3}}}]"#);
        let answers = c.wait_for(Value::is_array);
        let answers = answers.as_array().unwrap();
        let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
        assert_eq!(ids, [&json!(1), &json!("two")], "{answers:?}");
        for a in answers {
            let (_, code, msg) = error_of(a);
            assert_eq!(code, -32600);
            assert!(
                msg.contains(&format!(
                    "protocol version ({version}; only 2025-03-26 has them)"
                )),
                "{msg}"
            );
        }
    }
    assert!(api.requests().is_empty(), "a refused batch sends nothing");
}

#[test]
fn a_batch_on_2025_03_26_is_run_and_answered_as_one_array() {
    let api = DemoApi::start();
    let (mut c, _cfg) = serve(&api, "2025-03-26", &[]);
    c.send_line(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"flag_set","arguments":{"env":"staging","name":"batched","percent":7}}},{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},{"jsonrpc":"2.0","id":3,"method":"no/such"}]"#);
    let answers = c.wait_for(Value::is_array);
    let mut by_id: Vec<(i64, Value)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_i64().unwrap(), a.clone()))
        .collect();
    by_id.sort_by_key(|(id, _)| *id);
    let ids: Vec<i64> = by_id.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        [1, 2, 3],
        "one answer per request, none for the notification"
    );
    assert_eq!(by_id[0].1["result"]["structuredContent"]["percent"], 7);
    assert_eq!(by_id[1].1["result"], json!({}));
    assert_eq!(by_id[2].1["error"]["code"], -32601);
    assert_eq!(api.get("/flags/staging/batched")["percent"], 7);
}

#[test]
fn arguments_that_are_not_an_object_are_invalid_params_saying_so() {
    let api = DemoApi::start();
    let (mut c, _cfg) = serve(&api, "2025-11-25", &[]);
    for (arguments, kind) in [
        ("[1,2]", "an array"),
        ("\"env=prod\"", "a string"),
        ("5", "a number"),
    ] {
        let resp = c.request(
            "tools/call",
            json!({"name": "flag_set", "arguments": serde_json::from_str::<Value>(arguments).unwrap()}),
        );
        let (_, code, msg) = error_of(&resp);
        assert_eq!(code, -32602, "{resp}");
        assert_eq!(
            msg,
            format!(
                "invalid params for 'tools/call': 'arguments' must be an object of the tool's arguments by name, not {kind}"
            )
        );
    }
    assert!(api.requests().is_empty());
}

#[test]
fn unsupported_methods_and_a_cursor_say_what_to_send_in_one_clean_log_line_each() {
    let api = DemoApi::start();
    for json_logs in [false, true] {
        let env: &[(&str, &str)] = if json_logs {
            &[("MCPD_LOG_FORMAT", "json")]
        } else {
            &[]
        };
        let (mut c, _cfg) = serve(&api, "2025-11-25", env);
        let resp = c.request("resources/subscribe", json!({"uri": "mcpd://runbooks/x"}));
        let (_, code, msg) = error_of(&resp);
        assert_eq!(code, -32601);
        assert_eq!(
            msg,
            "method 'resources/subscribe' is not supported: mcpd serves initialize, ping, tools/list, tools/call, resources/list, resources/templates/list, resources/read, prompts/list, prompts/get, completion/complete, logging/setLevel; a resource is read when asked for, and a reload that changes the list sends notifications/resources/list_changed"
        );
        let (_, code, msg) = error_of(&c.request("sampling/createMessage", json!({})));
        assert_eq!(code, -32601);
        assert!(msg.contains("mcpd serves initialize"), "{msg}");
        let (_, code, msg) = error_of(&c.request("tools/list", json!({"cursor": "page-2"})));
        assert_eq!(code, -32602);
        assert!(
            msg.starts_with("invalid cursor 'page-2': tools/list returns every tool in one page"),
            "{msg}"
        );

        // One line per error, without rmcp's debug form.
        let log = c.wait_stderr("invalid cursor");
        assert!(!log.contains("ErrorData"), "{log}");
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("json-rpc error"))
            .collect();
        assert_eq!(lines.len(), 3, "{log}");
        if json_logs {
            let first: Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(first["fields"]["code"], -32601, "{first}");
            assert_eq!(first["fields"]["id"], "2", "{first}");
        } else {
            assert!(lines[0].contains("json-rpc error id=\"2\" code=-32601 error=\"method 'resources/subscribe' is not supported"), "{}", lines[0]);
        }
    }
}
