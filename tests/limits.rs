//! Limits through the real binary: a concurrency cap refuses the call over the cap at
//! once, with a reason that says when to retry, and the upstream never sees it.

use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error, text};

const SLOW_TOOL: &str = "name: slow.echo
description: Answers slowly.
input: { type: object, properties: { ms: { type: integer } } }
request: { upstream: orders, method: GET, path: /slow, query: { ms: \"{{ args.ms }}\" } }
limits: { concurrency: 1 }
";

#[test]
fn concurrency_cap_refuses_the_call_over_the_cap() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.write("tools.d/slow.yaml", SLOW_TOOL);
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let first = c.send_request(
        "tools/call",
        json!({"name": "slow_echo", "arguments": {"ms": 600}}),
    );
    // Wait until the first call has reached the upstream, so it holds the permit.
    let end = std::time::Instant::now() + crate::util::DEADLINE;
    while api.requests().is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "first call never reached the upstream"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = c.call("slow_echo", json!({"ms": 1}));
    assert!(is_error(&second), "{second}");
    assert!(
        text(&second).contains("concurrency cap"),
        "{}",
        text(&second)
    );
    let first = c.wait_for_id(first);
    assert!(!is_error(&first["result"]), "{first}");
    assert_eq!(
        api.requests().len(),
        1,
        "the refused call must not reach the upstream"
    );
    // With the permit released, the next call goes through.
    let third = c.call("slow_echo", json!({"ms": 1}));
    assert!(!is_error(&third), "{third}");
}

#[test]
fn invalid_limits_are_validation_errors() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/slow.yaml",
        &SLOW_TOOL.replace("concurrency: 1", "concurrency: 0, rate: 60 per minute"),
    );
    let (code, out, _) = crate::util::validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("limits.rate: invalid rate '60 per minute'"),
        "{out}"
    );
    assert!(
        out.contains("limits.concurrency: must be at least 1"),
        "{out}"
    );
}
