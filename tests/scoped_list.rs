//! Listing follows calling: `tools/list` shows an actor only the tools its scopes let
//! it call (stdio and HTTP), a new token's scopes show in the next list, and
//! `tools_list: all` keeps the full list. A tool outside the scopes stays uncallable
//! whether listed or not.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys, open_session, rpc};
use crate::identity::{issue, keygen};
use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

fn staging() -> Value {
    json!({"env": "staging", "name": "checkout_v2", "percent": 10})
}

fn names(reply: &Value) -> Vec<String> {
    let mut n: Vec<String> = reply["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn over_stdio_the_list_follows_the_token_files_scopes_and_an_unlisted_tool_is_not_callable() {
    let api = DemoApi::start();
    let cfg = ConfigDir::token_only("\nstate: \"memory:\"\n");
    cfg.edit(
        "mcpd.yaml",
        "  audience: mcpd-demo\n",
        "  audience: mcpd-demo\n  token_file: token.jwt\n",
    );
    let (key, _) = keygen(&cfg, "k1");
    cfg.write(
        "token.jwt",
        &issue(&cfg, &key, "agent:a", &["orders.*"], "15m"),
    );
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", key.as_str()),
    ];
    let mut c = StdioClient::start(cfg.path(), &env);
    assert_eq!(c.tool_names(), ["orders_export"]);
    let r = c.call("flag_set", staging());
    assert!(
        is_error(&r) && text(&r).contains("lacks scope 'flag.set:staging'"),
        "{r}"
    );
    assert!(api.requests().iter().all(|r| r["method"] != "PUT"));

    // A refresher writes a token with more scopes: the next list shows them.
    let tmp = cfg.path().join("token.jwt.tmp");
    std::fs::write(
        &tmp,
        issue(
            &cfg,
            &key,
            "agent:a",
            &["orders.*", "flag.set:staging"],
            "15m",
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20)); // a new modification time
    std::fs::rename(&tmp, cfg.path().join("token.jwt")).unwrap();
    let mut listed = c.tool_names();
    listed.sort();
    assert_eq!(listed, ["flag_set", "orders_export"]);
    assert!(!is_error(&c.call("flag_set", staging())));

    // A scope limited to a purpose the token does not carry lists nothing.
    std::fs::write(
        &tmp,
        issue(&cfg, &key, "agent:a", &["orders.*@audit"], "15m"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::rename(&tmp, cfg.path().join("token.jwt")).unwrap();
    assert!(c.tool_names().is_empty());
}

#[test]
fn tools_list_all_lists_every_tool_and_still_refuses_the_call() {
    let api = DemoApi::start();
    let cfg = ConfigDir::token_only("\nstate: \"memory:\"\ntools_list: all\n");
    let (key, _) = keygen(&cfg, "k1");
    let token = issue(&cfg, &key, "agent:a", &["orders.export"], "15m");
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", key.as_str()),
        ("MCPD_TOKEN", token.as_str()),
    ];
    let mut c = StdioClient::start(cfg.path(), &env);
    let mut listed = c.tool_names();
    listed.sort();
    assert_eq!(listed, ["flag_set", "orders_export"]);
    let r = c.call("flag_set", staging());
    assert!(is_error(&r) && text(&r).contains("lacks scope"), "{r}");
}

#[test]
fn over_http_each_requests_token_decides_the_list() {
    let api = DemoApi::start();
    let cfg = crate::http::token_only();
    let keys = Keys::new(&cfg);
    let server = HttpServer::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_TOKEN_KEY", &keys.key)],
        &[],
    );
    let narrow = keys.token(&cfg, "agent:a", &["orders.export"]);
    let wide = keys.token(&cfg, "agent:a", &["orders.export", "flag.set"]);
    let session = open_session(&server, Some(&narrow));
    let list = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"});
    assert_eq!(
        names(&rpc(&server, Some(&narrow), Some(&session), &list).message()),
        ["orders_export"]
    );
    // The same session with a new token: its scopes show at once.
    assert_eq!(
        names(&rpc(&server, Some(&wide), Some(&session), &list).message()),
        ["flag_set", "orders_export"]
    );
    let none = keys.token(&cfg, "agent:b", &["audit.*"]);
    assert!(names(&rpc(&server, Some(&none), Some(&session), &list).message()).is_empty());
}

/// Resources declared in tool files are listed as tools are: `resources/list`,
/// `resources/templates/list` and a template part's completion show an actor only what
/// its scopes let it read (reading is a call of the tool), `tools_list: all` shows all.
#[test]
fn resource_lists_and_completion_follow_the_scopes_as_tools_list_does() {
    let resources = "\
name: runbooks.get
description: A runbook.
input:
  type: object
  required: [name]
  properties: { name: { type: string, enum: [deploy, rollback] } }
request: { upstream: orders, method: GET, path: \"/runbooks/{{ args.name }}\" }
resource: { uri: \"runbook://{name}\", tool: false }
---
name: orders.today
description: Today's orders.
input: { type: object }
request: { upstream: orders, method: GET, path: /orders }
resource: { uri: \"orders://today\" }
";
    let seen = |server: &str, scopes: &[&str]| {
        let cfg = ConfigDir::token_only(server);
        cfg.write("tools.d/resources.yaml", resources);
        let (key, _) = keygen(&cfg, "k1");
        let token = issue(&cfg, &key, "agent:a", scopes, "15m");
        let env = [
            ("DEMO_API_URL", "http://127.0.0.1:9"),
            ("MCPD_TOKEN_KEY", key.as_str()),
            ("MCPD_TOKEN", token.as_str()),
        ];
        let mut c = StdioClient::start(cfg.path(), &env);
        let uris = |reply: Value, list: &str, field: &str| -> Vec<String> {
            let items = reply["result"][list].as_array().cloned();
            let items = items.unwrap_or_else(|| panic!("{reply}"));
            items
                .iter()
                .map(|r| r[field].as_str().unwrap().to_owned())
                .collect()
        };
        let listed = uris(c.request("resources/list", json!({})), "resources", "uri");
        let templates = uris(
            c.request("resources/templates/list", json!({})),
            "resourceTemplates",
            "uriTemplate",
        );
        let completion = c.request(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "runbook://{name}"},
                   "argument": {"name": "name", "value": ""}}),
        );
        let offered = completion["result"]["completion"]["values"].clone();
        (listed, templates, offered)
    };
    let state = "\nstate: \"memory:\"\n";
    let (listed, templates, offered) = seen(state, &["orders.*"]);
    assert_eq!(listed, ["orders://today"]);
    assert!(templates.is_empty(), "{templates:?}");
    assert_eq!(offered, json!([]));

    let (listed, templates, offered) = seen(state, &["orders.*", "runbooks.get"]);
    assert_eq!(listed, ["orders://today"]);
    assert_eq!(templates, ["runbook://{name}"]);
    assert_eq!(offered, json!(["deploy", "rollback"]));

    let all = "\nstate: \"memory:\"\ntools_list: all\n";
    let (listed, templates, _) = seen(all, &["flag.*"]);
    assert_eq!(listed, ["orders://today"]);
    assert_eq!(templates, ["runbook://{name}"]);
}
