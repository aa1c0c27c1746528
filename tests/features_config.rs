//! Issue 16's files through the binary: `mcpd validate` reports bad prompts and bad
//! resource declarations at their place, `mcpd host-config` lists the prompts a host
//! will see, and a config that produces a flood of messages cannot flood a session (at
//! most a burst, then what was dropped is counted).

use std::process::Command;

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, bin, run, validate};

#[test]
fn bad_prompts_and_resource_declarations_are_reported_at_their_place() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "prompts.d/bad.yaml",
        "name: bad.prompt\ndescription: d\narguments:\n  - { name: id, complete_from: { tool: no.such.tool, select: \"$.x\" } }\n\
         messages:\n  - text: \"{{ args.nope }}\"\n---\nname: flags.set-staging\ndescription: a second one\nmessages:\n  - text: x\n",
    );
    cfg.write(
        "tools.d/resources.yaml",
        "name: res.a\ndescription: d\ninput: { type: object, required: [id, other], properties: { id: { type: string }, other: { type: string } } }\n\
         request: { upstream: orders, method: GET, path: /orders }\nresource: { uri: \"order://{id}/{nope}\" }\n---\n\
         name: res.b\ndescription: d\ninput: { type: object, properties: {} }\n\
         request: { upstream: orders, method: GET, path: /orders }\nresource: { uri: \"mcpd://mine\" }\n---\n\
         name: res.c\ndescription: d\ninput: { type: object, properties: {} }\n\
         request: { upstream: orders, method: GET, path: /orders }\nresource: { uri: \"runbook://x\" }\n---\n\
         name: res.d\ndescription: d\ninput: { type: object, properties: {} }\n\
         request: { upstream: orders, method: GET, path: /orders }\nresource: { uri: \"runbook://x\" }\n---\n\
         name: res.e\ndescription: d\ninput: { type: object, properties: {} }\n\
         request: { upstream: orders, method: GET, path: /orders }\n\
         response: { max_inline_bytes: 0, keep_for: forever, text: \"{{ secret.X }}\" }\n",
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        "prompts.d/bad.yaml:4:40: prompt 'bad.prompt': arguments.id.complete_from.tool: no tool is named 'no.such.tool'",
        "prompts.d/bad.yaml:6:11: prompt 'bad.prompt': messages[0].text: 'args.nope' is not an argument of the prompt (it has: id)",
        "prompts.d/seed.yaml:25:7: prompt 'flags.set-staging': name is already used by prompt 'flags.set-staging' in ",
        "tools.d/resources.yaml:5:18: tool 'res.a': resource.uri: '{nope}' is not an argument the input schema declares",
        "tools.d/resources.yaml:5:18: tool 'res.a': resource.uri: required argument 'other' is not a part of the URI, so a read could never give it: add {other}",
        "tools.d/resources.yaml:11:18: tool 'res.b': resource.uri: mcpd:// is mcpd's own (kept results): choose another scheme",
        "tools.d/resources.yaml:23:18: tool 'res.d': resource.uri: 'runbook://x' is already the resource of tool 'res.c'",
        "tool 'res.e': response.max_inline_bytes: must be above 0",
        "tool 'res.e': response.keep_for: invalid duration 'forever'",
        "tool 'res.e': response.text: unknown variable 'secret.X' (templates here can read: result, args)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn a_ticket_tool_that_is_missing_or_takes_no_ticket_is_reported_at_its_place() {
    let cfg = ConfigDir::shipped();
    cfg.edit(
        "mcpd.yaml",
        "  max_ttl: 1h\n",
        "  max_ttl: 1h\n  ticket_tool: tickets.lookup\n",
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("mcpd.yaml:34:16: elevation.ticket_tool: 'tickets.lookup': no tool has this id; name the tools.d tool that looks a ticket up"),
        "{out}"
    );
    cfg.edit("mcpd.yaml", "tickets.lookup", "orders.export");
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("elevation.ticket_tool: 'orders.export': the tool has no 'ticket' argument; mcpd calls it with {\"ticket\": \"...\"}"),
        "{out}"
    );
}

#[test]
fn the_shipped_prompts_and_the_conformance_fixture_validate() {
    let (code, out, err) = validate(&crate::util::repo());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(", 2 prompts in 1 files"), "{out}");
    let fixture = crate::util::repo().join("tests/conformance");
    let (code, out, err) = run(Command::new(bin())
        .arg("validate")
        .arg(&fixture)
        .env("DEMO_API_URL", "http://127.0.0.1:8080"));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn host_config_lists_the_prompts_and_resources_the_host_will_see() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/runbook.yaml",
        "name: runbooks.get\ndescription: d\ninput: { type: object, required: [name], properties: { name: { type: string } } }\n\
         request: { upstream: orders, method: GET, path: \"/runbooks/{{ args.name }}\" }\n\
         resource: { uri: \"runbook://{name}\", tool: false }\n",
    );
    let (code, _, err) = run(Command::new(bin())
        .args(["host-config", "claude", "--config"])
        .arg(cfg.path()));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the host will see 2 tool(s)"), "{err}");
    assert!(
        err.contains("and 2 prompt(s) from prompts.d: orders_export-masked, flags_set-staging"),
        "{err}"
    );
    assert!(err.contains("and 1 resource(s): runbook://{name}"), "{err}");
}

#[test]
fn a_flood_of_config_problems_reaches_a_session_as_a_burst_then_a_count() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\nstate: \"memory:\"\n");
    let mut c = StdioClient::start_with(cfg.path(), &[("DEMO_API_URL", &api.url)], &["--no-watch"]);
    // 60 broken tool files, then one reload: 60 problems, each a message at error.
    for i in 0..60 {
        cfg.write(&format!("tools.d/broken{i:02}.yaml"), "name: [\n");
    }
    let status = Command::new("kill")
        .args(["-HUP", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    c.wait_stderr("broken59.yaml");
    // Nothing more is said for a moment, so the bucket refills; then one more message.
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.request("logging/setLevel", json!({"level": "debug"}));
    c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-02"}),
    );
    // The call's messages are sent before its result, so they are among those seen.
    let dropped: serde_json::Value = c
        .seen
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["params"]["data"]
                .as_str()
                .is_some_and(|d| d.starts_with("mcpd dropped"))
        })
        .expect("a message saying how many were dropped");
    let messages: Vec<&str> = c
        .seen
        .iter()
        .filter(|l| l.contains("notifications/message"))
        .map(String::as_str)
        .collect();
    let problems = messages
        .iter()
        .filter(|m| m.contains("config problem"))
        .count();
    // The burst, and at most a token or two refilled while the reload ran.
    assert!(
        (25..=32).contains(&problems),
        "about a burst of 30 reached the session, got {problems}"
    );
    let text = dropped["params"]["data"].as_str().unwrap();
    let n: usize = text
        .trim_start_matches("mcpd dropped ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        problems + n,
        60,
        "every message was either sent or counted: {problems} + {n} ({text})"
    );
}

#[test]
fn the_mcp_features_page_s_files_validate_as_written() {
    use crate::docs::block;
    let page = "docs/mcp-features.md";
    let cfg = ConfigDir::shipped();
    let rules = block(page, "## Human approval through elicitation", "yaml", 0);
    let rules = rules.split_once("rules:\n").unwrap().1;
    cfg.edit("policies.yaml", "rules:\n", &format!("rules:\n{rules}\n"));
    let elevation = block(page, "## Human approval through elicitation", "yaml", 1);
    let line = |key: &str| elevation.lines().find(|l| l.contains(key)).unwrap();
    let (timeout, ticket_tool) = (line("approval_timeout"), line("ticket_tool"));
    cfg.edit(
        "mcpd.yaml",
        "  max_ttl: 1h\n",
        &format!("  max_ttl: 1h\n{timeout}\n{ticket_tool}\n"),
    );
    cfg.write(
        "tools.d/tickets.yaml",
        &block(page, "## Human approval through elicitation", "yaml", 2),
    );
    cfg.write(
        "tools.d/runbooks.yaml",
        &block(page, "## Resources declared in tool files", "yaml", 0),
    );
    cfg.write(
        "tools.d/orders.table.yaml",
        &block(page, "## Content types", "yaml", 0),
    );
    cfg.write(
        "prompts.d/orders.yaml",
        &block(page, "## Prompts", "yaml", 0),
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok: 6 tools in 5 files") && out.contains("3 prompts in 2 files"),
        "{out}"
    );
}
