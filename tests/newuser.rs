//! A new user wraps an API mcpd has never seen, from docs/tools.md alone: the upstream,
//! the tool file, the cases and the commands are copied out of the page and run as
//! written against a local stub, with the shipped policies.yaml untouched and no real
//! secret. Then the friction that user met, one case each: `${VAR}` in policies.yaml
//! and mcpd.yaml, secrets in `mcpd test`, query order and optional parameters, `${VAR}`
//! written in a tool file.

use std::process::Command;

use serde_json::{Value, json};

use crate::docs::{block, dedent};
use crate::util::{ConfigDir, StubApi, bin, repo, run, validate};

const PAGE: &str = "docs/tools.md";
const WALKTHROUGH: &str = "## Wrap a new API, step by step";

/// What the stub weather API answers.
fn forecast() -> Value {
    json!({ "city": "Lisbon", "days": [{ "date": "2025-08-01", "max_c": 31 }] })
}

/// The shipped config with the page's upstream, tool file and case file added.
fn new_user_config() -> ConfigDir {
    let cfg = ConfigDir::shipped();
    let upstream = dedent(&block(PAGE, WALKTHROUGH, "yaml", 0));
    let entry = upstream.strip_prefix("upstreams:\n").unwrap();
    cfg.edit("mcpd.yaml", "upstreams:\n", &format!("upstreams:\n{entry}"));
    cfg.write(
        "tools.d/weather.forecast.yaml",
        &dedent(&block(PAGE, WALKTHROUGH, "yaml", 1)),
    );
    cfg.write(
        "tests.d/weather.yaml",
        &dedent(&block(PAGE, WALKTHROUGH, "yaml", 2)),
    );
    cfg
}

/// A command of the page, run by `sh` in the config directory with `mcpd` the binary
/// under test and the page's stub port the stub's; no weather variable is inherited.
fn page_command(cfg: &ConfigDir, line: &str, stub: &StubApi) -> (i32, String, String) {
    let port = stub.url.rsplit(':').next().unwrap();
    let line = line
        .replace("mcpd ", &format!("{} ", bin()))
        .replace("127.0.0.1:8099", &format!("127.0.0.1:{port}"));
    run(Command::new("sh")
        .args(["-c", &line])
        .current_dir(cfg.path())
        .env_remove("WEATHER_URL")
        .env_remove("WEATHER_TOKEN")
        .env_remove("MCPD_TOKEN")
        .env_remove("MCPD_EGRESS_EXTRA"))
}

#[test]
fn a_new_api_from_the_tools_page_validates_tests_and_calls_with_the_shipped_policy_and_no_secret() {
    let cfg = new_user_config();
    let stub = StubApi::start(forecast());
    let commands = block(PAGE, WALKTHROUGH, "sh", 0);
    let lines: Vec<&str> = commands
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split("  #").next().unwrap().trim())
        .collect();
    let [validate_line, test_line, call_line] = lines.as_slice() else {
        panic!("the page's commands changed: {lines:?}");
    };

    let (code, out, err) = page_command(&cfg, validate_line, &stub);
    assert_eq!(code, 0, "{validate_line}\n{out}{err}");
    assert!(out.contains("ok: 3 tools in 3 files, 3 upstreams"), "{out}");

    // No WEATHER_TOKEN and no stub needed: recorded replies and a placeholder secret.
    let (code, out, err) = page_command(&cfg, test_line, &stub);
    assert_eq!(code, 0, "{test_line}\n{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    assert!(stub.requests().is_empty(), "{:?}", stub.requests());

    let (code, out, err) = page_command(&cfg, call_line, &stub);
    assert_eq!(code, 0, "{call_line}\n{out}{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["structuredContent"]["days"][0]["max_c"], 31, "{out}");
    let seen = stub.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/v1/forecast");
    // Optional arguments not given are left out of the query.
    assert_eq!(seen[0]["query"], "city=Lisbon");
    assert_eq!(seen[0]["headers"]["authorization"], "Bearer any-test-value");

    // What the page says of a run without the stub: the API's host is not in egress.
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("egress to host 'api.weather.example' is not allowed"),
        "{out}"
    );
    let shipped = std::fs::read_to_string(repo().join("policies.yaml")).unwrap();
    assert_eq!(cfg.read("policies.yaml"), shipped);
}

/// `mcpd call weather.forecast` in `cfg` with `env`, against `stub`.
fn call_weather(cfg: &ConfigDir, stub: &StubApi, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["call", "weather.forecast", "--args", r#"{"city":"Lisbon"}"#])
        .arg("--config")
        .arg(cfg.path())
        .env("WEATHER_URL", &stub.url)
        .env("WEATHER_TOKEN", "t")
        .env_remove("MCPD_EGRESS_EXTRA")
        .env_remove("MCPD_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (code, out, err) = run(&mut cmd);
    (code, format!("{out}{err}"))
}

#[test]
fn an_egress_entry_from_a_variable_allows_a_local_stub_for_one_run_and_nothing_otherwise() {
    // The user's own config: only their API, and a policy that lists only its host.
    let cfg = ConfigDir {
        dir: tempfile::tempdir().unwrap(),
    };
    let upstream = dedent(&block(PAGE, WALKTHROUGH, "yaml", 0));
    cfg.write(
        "mcpd.yaml",
        &format!("{upstream}default_actor: {{ subject: \"user:me\", scopes: [\"*\"] }}\n"),
    );
    cfg.write(
        "tools.d/weather.forecast.yaml",
        &dedent(&block(PAGE, WALKTHROUGH, "yaml", 1)),
    );
    let policy = dedent(&block(
        "docs/policy.md",
        "### Allowing a local stub",
        "yaml",
        0,
    ));
    cfg.write("policies.yaml", &format!("default: allow\n{policy}"));
    let stub = StubApi::start(forecast());
    let port = stub.url.rsplit(':').next().unwrap().to_owned();

    // Unset, the entry is left out: the file is valid and the stub is refused.
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 0, "{out}");
    for extra in [None, Some("127.0.0.1:1")] {
        // Another port on the same host is not the stub's either.
        let env: Vec<(&str, &str)> = extra
            .map(|e| ("MCPD_EGRESS_EXTRA", e))
            .into_iter()
            .collect();
        let (code, out) = call_weather(&cfg, &stub, &env);
        assert_ne!(code, 0, "{out}");
        assert!(
            out.contains("upstream 'weather': egress to host '127.0.0.1' is not allowed"),
            "{extra:?}: {out}"
        );
    }
    assert!(stub.requests().is_empty());

    for extra in [
        format!("127.0.0.1:{port}"),
        format!("localhost, 127.0.0.1:{port}"),
    ] {
        let (code, out) = call_weather(&cfg, &stub, &[("MCPD_EGRESS_EXTRA", &extra)]);
        assert_eq!(code, 0, "{extra}: {out}");
    }
    assert_eq!(stub.requests().len(), 2);
}

#[test]
fn the_egress_entry_the_new_user_tried_now_expands_instead_of_failing_on_a_port() {
    let cfg = new_user_config();
    cfg.edit(
        "policies.yaml",
        "  - localhost\n",
        "  - localhost\n  - \"${MCPD_EXTRA_EGRESS:-api.weather.example}\"\n",
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");

    cfg.edit(
        "policies.yaml",
        "${MCPD_EXTRA_EGRESS:-api.weather.example}",
        "${MCPD_T_SURELY_UNSET}",
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("policies.yaml:11:5: egress[2]: environment variable 'MCPD_T_SURELY_UNSET' is not set (write '${MCPD_T_SURELY_UNSET:-default}' to give a default)"),
        "{out}"
    );
    // One problem, not a cascade of upstreams refused by an empty egress list.
    assert!(err.contains("1 problem found"), "{out}{err}");
}

#[test]
fn state_and_audit_paths_in_mcpd_yaml_expand_variables_too() {
    let cfg = new_user_config();
    let elsewhere = tempfile::tempdir().unwrap();
    cfg.append(
        "mcpd.yaml",
        "state: \"${MCPD_T_STATE_DIR}/state.redb\"\naudit: { path: \"${MCPD_T_STATE_DIR}/audit.jsonl\" }\n",
    );
    let stub = StubApi::start(forecast());
    let dir = elsewhere.path().to_str().unwrap();
    let (code, out) = call_weather(
        &cfg,
        &stub,
        &[("MCPD_T_STATE_DIR", dir), ("MCPD_AUDIT_KEY", "k")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(elsewhere.path().join("state.redb").exists());
    let audit = std::fs::read_to_string(elsewhere.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("weather.forecast"), "{audit}");
}

#[test]
fn a_shell_variable_written_in_a_tool_file_says_to_read_it_as_a_secret() {
    let cfg = new_user_config();
    cfg.edit(
        "tools.d/weather.forecast.yaml",
        "Bearer {{ secret.WEATHER_TOKEN }}",
        "Bearer ${WEATHER_TOKEN}",
    );
    let (code, out, _) = validate(cfg.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("tool 'weather.forecast': request.headers.Authorization: '${WEATHER_TOKEN}' is not expanded in tool files: read environment variable WEATHER_TOKEN with '{{ secret.WEATHER_TOKEN }}'"),
        "{out}"
    );
}

#[test]
fn mcpd_test_sends_a_placeholder_for_every_secret_even_when_the_real_one_is_set() {
    let cfg = new_user_config();
    cfg.edit(
        "tools.d/weather.forecast.yaml",
        "    units: \"{{ args.units | default('') }}\"\n",
        "    units: \"{{ args.units | default('') }}\"\n    key: \"{{ secret.WEATHER_KEY }}\"\n",
    );
    cfg.write(
        "tests.d/weather.yaml",
        r#"cases:
  - name: the key in the query is the placeholder
    call: { tool: weather.forecast, args: { city: Lisbon } }
    recorded: [{ body: { days: [] } }]
    expect:
      requests: ["GET /v1/forecast?city=Lisbon&key=placeholder-WEATHER_KEY"]
"#,
    );
    let (code, out, err) = run(Command::new(bin())
        .arg("test")
        .arg(cfg.path())
        .env("WEATHER_KEY", "real-key-never-sent")
        .env("WEATHER_TOKEN", "real-token-never-sent"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains("never-sent"), "{out}{err}");
}

#[test]
fn query_parameters_go_out_in_the_files_order_and_empty_ones_are_left_out() {
    let cfg = new_user_config();
    cfg.edit(
        "tools.d/weather.forecast.yaml",
        "    city: \"{{ args.city }}\"\n    days: \"{{ args.days | default('') }}\"      # an empty value is left out\n    units: \"{{ args.units | default('') }}\"\n",
        "    units: \"{{ args.units | default('') }}\"\n    city: \"{{ args.city }}\"\n    days: \"{{ args.days | default('') }}\"\n",
    );
    let case = |requests: &str| {
        format!(
            "cases:\n  - name: order\n    call: {{ tool: weather.forecast, args: {{ city: Lisbon, units: metric }} }}\n    recorded: [{{ body: {{ days: [] }} }}]\n    expect:\n      requests: [\"{requests}\"]\n"
        )
    };
    cfg.write(
        "tests.d/weather.yaml",
        &case("GET /v1/forecast?units=metric&city=Lisbon"),
    );
    let (code, out, err) = run(Command::new(bin()).arg("test").arg(cfg.path()));
    assert_eq!(code, 0, "{out}{err}");
    // Sorted is not the file's order.
    cfg.write(
        "tests.d/weather.yaml",
        &case("GET /v1/forecast?city=Lisbon&units=metric"),
    );
    let (code, out, _) = run(Command::new(bin()).arg("test").arg(cfg.path()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("it received [\"GET /v1/forecast?units=metric&city=Lisbon\"]"),
        "{out}"
    );

    // The same order on the wire, live.
    let stub = StubApi::start(forecast());
    let mut cmd = Command::new(bin());
    cmd.args(["call", "weather.forecast", "--args"])
        .arg(r#"{"city":"Lisbon","days":2,"units":"metric"}"#)
        .arg("--config")
        .arg(cfg.path())
        .env("WEATHER_URL", &stub.url)
        .env("WEATHER_TOKEN", "t")
        .env_remove("MCPD_TOKEN");
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        stub.requests()[0]["query"],
        "units=metric&city=Lisbon&days=2"
    );
}
