//! Flows through a client we did not write: the official Python MCP SDK (`mcp` from
//! PyPI) drives `mcpd serve` over stdio (scripts in tests/clients/).

use std::path::PathBuf;
use std::process::Command;

use crate::util::{ConfigDir, DemoApi, bin, repo, run};

/// The Python with the `mcp` SDK: $MCPD_TEST_PYTHON, else the venv scripts/test makes.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("MCPD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join("target/pyenv/bin/python");
    assert!(
        venv.exists(),
        "the Python MCP SDK is not set up: run scripts/test (it creates target/pyenv), \
         or set MCPD_TEST_PYTHON to a python that has `pip install -r tests/clients/requirements.txt`"
    );
    venv
}

/// A client script of tests/clients, run by the SDK's Python.
pub(crate) fn client(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/clients").join(script));
    cmd
}

/// Runs a client script to its end; it passes when it exits 0 and prints
/// "LABEL: all checks passed". Otherwise fails with its output and `log` (what the mcpd
/// it talked to logged, when the test started that one).
pub(crate) fn assert_passes(client: &mut Command, label: &str, log: &dyn Fn() -> String) {
    let (code, stdout, stderr) = run(client);
    assert!(
        code == 0 && stdout.contains(&format!("{label}: all checks passed")),
        "{label} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nmcpd:\n{}",
        log()
    );
}

/// Runs a client script that starts `mcpd serve` on `config` over stdio itself.
fn assert_passes_over_stdio(script: &str, label: &str, config: &std::path::Path, api: &DemoApi) {
    let mut cmd = client(script);
    cmd.env("MCPD_BIN", bin())
        .env("MCPD_CONFIG", config)
        .env("DEMO_API_URL", &api.url);
    assert_passes(&mut cmd, label, &String::new);
}

#[test]
fn golden_flow_with_the_official_python_sdk() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    assert_passes_over_stdio("golden_stdio.py", "golden stdio", cfg.path(), &api);
}

#[test]
fn python_sdk_sees_list_changed_and_the_new_tool() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    assert_passes_over_stdio("reload_stdio.py", "reload stdio", cfg.path(), &api);
}

/// Issue 15, item 1: a non-object `output:` schema (the README's own `type: array`)
/// failed every call of its tool, because the wrapped result was checked against the
/// unwrapped schema. The SDK checks each result against what tools/list advertised.
#[test]
fn python_sdk_accepts_every_result_of_tools_with_output_schemas() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let strict = cfg
        .read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders.strict");
    let strict = strict.replace(
        "required: [id, date, amount_cents, region]",
        "required: [id, total]",
    );
    assert!(strict.contains("required: [id, total]"), "{strict}");
    cfg.write("tools.d/orders.strict.yaml", &strict);
    assert_passes_over_stdio("output_schema.py", "output schema", cfg.path(), &api);
}

/// Adds cancel.py's tools over the demo API's `/slow`: `slow.read` (concurrency 1),
/// `slow.write` and `slow.write.short` (keyed writes, timeouts 10 s and 400 ms).
fn with_slow_tools(cfg: &ConfigDir) {
    let tool = |name: &str, method: &str, extra: &str| {
        format!(
            "name: {name}\ndescription: Answers slowly.\ninput: {{ type: object, properties: {{ ms: {{ type: integer }}, n: {{ type: integer }} }} }}\nrequest: {{ upstream: orders, method: {method}, path: /slow, query: {{ ms: \"{{{{ args.ms }}}}\", n: \"{{{{ args.n }}}}\" }}{extra} }}\n"
        )
    };
    cfg.write(
        "tools.d/slow.read.yaml",
        &format!(
            "{}limits: {{ concurrency: 1 }}\n",
            tool("slow.read", "GET", ", timeout: 10s")
        ),
    );
    for (name, timeout) in [("slow.write", "10s"), ("slow.write.short", "400ms")] {
        cfg.write(
            &format!("tools.d/{name}.yaml"),
            &format!(
                "{}idempotency: {{ key: \"w-{{{{ args.n }}}}\" }}\n",
                tool(name, "POST", &format!(", timeout: {timeout}"))
            ),
        );
    }
}

/// Issue 15, item 7: after `notifications/cancelled` the upstream request ran to its
/// end and kept its concurrency slot.
#[test]
fn python_sdk_cancellation_aborts_the_upstream_request_and_settles_its_key() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    with_slow_tools(&cfg);
    assert_passes_over_stdio("cancel.py", "cancel", cfg.path(), &api);
}

/// The same over Streamable HTTP, where such a call is answered on the direct path
/// (no progress asked, no elicitation): a cancel reaches it there too.
#[test]
fn python_sdk_cancellation_over_http_aborts_the_upstream_request_and_settles_its_key() {
    use crate::http::{HttpServer, Keys, token_only};
    let api = DemoApi::start();
    let cfg = token_only();
    with_slow_tools(&cfg);
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:python", &["*"]);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", &keys.key),
    ];
    let server = HttpServer::start(cfg.path(), &env, &[]);
    let mut cmd = client("cancel.py");
    cmd.env("MCPD_URL", server.mcp_url())
        .env("MCPD_TOKEN", &token)
        .env("DEMO_API_URL", &api.url);
    assert_passes(&mut cmd, "cancel http", &|| server.stderr());
}
