//! Flows through a client we did not write: the official Python MCP SDK (`mcp` from
//! PyPI) drives `mcpd serve` over stdio (scripts in tests/clients/).

use std::path::PathBuf;
use std::process::Command;

use crate::util::{ConfigDir, DemoApi, bin, repo};

/// The Python with the `mcp` SDK: $MCPD_TEST_PYTHON, else the venv scripts/test makes.
pub(crate) fn python() -> PathBuf {
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

/// Runs a client script against `config`; returns its stdout, failing with its output.
fn run_client(script: &str, config: &std::path::Path, api: &DemoApi) -> String {
    let out = Command::new(python())
        .arg(repo().join("tests/clients").join(script))
        .env("MCPD_BIN", bin())
        .env("MCPD_CONFIG", config)
        .env("DEMO_API_URL", &api.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

#[test]
fn golden_flow_with_the_official_python_sdk() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let stdout = run_client("golden_stdio.py", cfg.path(), &api);
    assert!(
        stdout.contains("golden stdio: all checks passed"),
        "{stdout}"
    );
}

#[test]
fn python_sdk_sees_list_changed_and_the_new_tool() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    let stdout = run_client("reload_stdio.py", cfg.path(), &api);
    assert!(
        stdout.contains("reload stdio: all checks passed"),
        "{stdout}"
    );
}
