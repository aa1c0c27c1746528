//! `mcpd call`: one call through the same pipeline, result on stdout, exit code says
//! whether the tool failed.

use std::process::Command;

use serde_json::Value;

use crate::util::{ConfigDir, DemoApi, bin, repo};

fn call(api: &DemoApi, tool: &str, args: &str) -> (i32, Value) {
    let cfg = ConfigDir::shipped();
    let out = Command::new(bin())
        .args(["call", tool, "--args", args, "--config"])
        .arg(cfg.path())
        .env("DEMO_API_URL", &api.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.code().unwrap(), v)
}

#[test]
fn call_prints_the_mcp_result() {
    let api = DemoApi::start();
    let truth = api.get("/orders?from=2025-08-01&to=2025-08-03");
    let (code, v) = call(
        &api,
        "orders.export",
        r#"{"from":"2025-08-01","to":"2025-08-03"}"#,
    );
    assert_eq!(code, 0, "{v}");
    let n = v["structuredContent"]["orders"].as_array().unwrap().len();
    assert_eq!(n as u64, truth["count"].as_u64().unwrap());
    assert!(n > 0);
    assert_eq!(v["isError"], false);
}

#[test]
fn call_with_bad_arguments_exits_one() {
    let api = DemoApi::start();
    let (code, v) = call(&api, "flag_set", r#"{"env":"prod"}"#);
    assert_eq!(code, 1);
    assert_eq!(v["isError"], true);
}

#[test]
fn call_with_malformed_json_says_so() {
    let out = Command::new(bin())
        .args(["call", "flag.set", "--args", "{nope", "--config"])
        .arg(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args is not valid JSON"));
}
