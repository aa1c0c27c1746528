//! `mcpd host-config`: each host gets its own file shape with this machine's absolute
//! paths; --write merges without dropping other servers; the checked-in templates in
//! examples/hosts/ are what the command generates.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::{bin, repo, run};

fn host_config(args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin())
        .arg("host-config")
        .args(args)
        .current_dir(repo()))
}

fn printed(host: &str) -> String {
    let (code, out, err) = host_config(&[host]);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn each_host_gets_its_shape_with_absolute_paths_and_the_token_variable() {
    let root = repo().canonicalize().unwrap();
    let root = root.to_str().unwrap();
    let own_bin = Path::new(bin()).canonicalize().unwrap();
    for (host, key) in [
        ("claude", "mcpServers"),
        ("cursor", "mcpServers"),
        ("vscode", "servers"),
        ("claude-code", "mcpServers"),
    ] {
        let doc: Value = serde_json::from_str(&printed(host)).unwrap();
        let server = &doc[key]["mcpd"];
        let command = server["command"].as_str().unwrap();
        assert!(Path::new(command).is_absolute(), "{host}: {command}");
        assert_eq!(
            Path::new(command).canonicalize().unwrap(),
            own_bin,
            "{host}"
        );
        assert_eq!(server["args"], json!(["serve", "--config", root]), "{host}");
        assert!(server["env"]["MCPD_TOKEN"].is_string(), "{host}: {server}");
        if host == "claude-code" {
            assert_eq!(server["type"], "stdio");
            assert_eq!(server["env"]["MCPD_TOKEN"], "${MCPD_TOKEN}");
        }
        if host == "vscode" {
            assert_eq!(server["type"], "stdio");
            assert_eq!(server["env"]["MCPD_TOKEN"], "${input:mcpd-token}");
            assert_eq!(doc["inputs"][0]["id"], "mcpd-token");
            assert_eq!(doc["inputs"][0]["password"], true);
        }
    }
    let (_, _, err) = host_config(&["claude"]);
    assert!(
        err.contains("the host will see 2 tool(s)") && err.contains("orders_export"),
        "{err}"
    );

    let block: Value = serde_saphyr::from_str(&printed("continue")).unwrap();
    assert_eq!(block["schema"], "v1");
    let server = &block["mcpServers"][0];
    assert_eq!(server["name"], "mcpd");
    assert_eq!(server["type"], "stdio");
    assert_eq!(server["args"], json!(["serve", "--config", root]));
    assert_eq!(server["env"]["MCPD_TOKEN"], "${{ secrets.MCPD_TOKEN }}");
}

#[test]
fn checked_in_templates_are_what_the_command_generates() {
    let common = [
        "--bin",
        "/absolute/path/to/mcpd/target/release/mcpd",
        "--env",
        "DEMO_API_URL=http://127.0.0.1:8080",
    ];
    for (host, config, file) in [
        (
            "claude",
            "/absolute/path/to/mcpd",
            "claude_desktop_config.json",
        ),
        ("vscode", "${workspaceFolder}", "vscode-mcp.json"),
        ("cursor", "/absolute/path/to/mcpd", "cursor-mcp.json"),
        (
            "claude-code",
            "/absolute/path/to/mcpd",
            "claude-code-mcp.json",
        ),
        ("continue", "/absolute/path/to/mcpd", "continue-mcpd.yaml"),
    ] {
        let mut args = vec![host, "--config", config];
        args.extend(common);
        let (code, out, err) = host_config(&args);
        assert_eq!(code, 0, "{err}");
        let shipped = std::fs::read_to_string(repo().join("examples/hosts").join(file)).unwrap();
        assert!(
            out == shipped,
            "examples/hosts/{file} is out of date; regenerate it with: mcpd host-config {}",
            args.join(" ")
        );
    }
}

#[test]
fn write_merges_into_the_hosts_file_keeping_other_servers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("claude_desktop_config.json");
    std::fs::write(
        &file,
        r#"{"globalShortcut": "Ctrl+Space", "mcpServers": {"other": {"command": "/usr/bin/other", "args": []}}}"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    for _ in 0..2 {
        let (code, _, err) = host_config(&["claude", "--write", "--file", f]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("wrote server 'mcpd'"), "{err}");
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["globalShortcut"], "Ctrl+Space");
    assert_eq!(doc["mcpServers"]["other"]["command"], "/usr/bin/other");
    assert_eq!(doc["mcpServers"].as_object().unwrap().len(), 2);
    assert!(doc["mcpServers"]["mcpd"]["command"].is_string());
    assert!(dir.path().join("claude_desktop_config.bak").exists());

    // VS Code: existing inputs and servers stay; the token input is added once.
    let vs = dir.path().join("mcp.json");
    std::fs::write(
        &vs,
        r#"{"inputs": [{"type": "promptString", "id": "gh"}], "servers": {"github": {"type": "http", "url": "https://api.example"}}}"#,
    )
    .unwrap();
    for _ in 0..2 {
        assert_eq!(
            host_config(&["vscode", "--write", "--file", vs.to_str().unwrap()]).0,
            0
        );
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&vs).unwrap()).unwrap();
    assert_eq!(doc["servers"]["github"]["url"], "https://api.example");
    assert_eq!(doc["servers"]["mcpd"]["type"], "stdio");
    let ids: Vec<&str> = doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gh", "mcpd-token"]);

    // Continue: a block file's other servers stay; ours is replaced, not duplicated.
    let block = dir.path().join("servers.yaml");
    std::fs::write(
        &block,
        "name: team\nversion: 0.0.1\nschema: v1\nmcpServers:\n  - name: other\n    command: /usr/bin/other\n  - name: mcpd\n    command: /old/mcpd\n",
    )
    .unwrap();
    assert_eq!(
        host_config(&["continue", "--write", "--file", block.to_str().unwrap()]).0,
        0
    );
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&block).unwrap()).unwrap();
    assert_eq!(doc["name"], "team");
    let servers = doc["mcpServers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["name"], "other");
    assert_ne!(servers[1]["command"], "/old/mcpd");
}

#[test]
fn a_host_file_that_is_not_json_is_left_alone_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mcp.json");
    let jsonc = "{\n  // my servers\n  \"servers\": {}\n}\n";
    std::fs::write(&file, jsonc).unwrap();
    let (code, _, err) = host_config(&["vscode", "--write", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("comments and trailing commas are not supported"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), jsonc);

    let (code, _, err) = host_config(&["claude", "--env", "NOEQUALS"]);
    assert_eq!(code, 2);
    assert!(err.contains("--env 'NOEQUALS': write KEY=VALUE"), "{err}");
}

#[test]
fn the_token_variable_follows_identity_token_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mcpd.yaml"),
        "identity:\n  audience: acme\n  token_env: ACME_MCP_TOKEN\n",
    )
    .unwrap();
    let (code, out, err) = host_config(&["cursor", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["mcpServers"]["mcpd"]["env"],
        json!({"ACME_MCP_TOKEN": "${env:ACME_MCP_TOKEN}"})
    );
    assert!(
        err.contains("does not load"),
        "a config without policies.yaml is flagged: {err}"
    );
}

#[test]
fn launcher_uvx_and_npx_write_the_one_line_form_with_the_version_pinned() {
    let root = repo().canonicalize().unwrap();
    let root = root.to_str().unwrap();
    let pinned = format!("mcpd@{}", env!("CARGO_PKG_VERSION"));
    // The PyPI package uvx runs is the one pyproject.toml builds.
    let pyproject = std::fs::read_to_string(repo().join("pyproject.toml")).unwrap();
    let pypi = pyproject
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap();
    let from = format!("{pypi}=={}", env!("CARGO_PKG_VERSION"));
    for (launcher, command, prefix) in [
        ("uvx", "uvx", vec!["--from", from.as_str(), "mcpd"]),
        ("npx", "npx", vec!["-y", pinned.as_str()]),
    ] {
        let mut args = prefix.clone();
        args.extend(["serve", "--config", root]);
        for (host, key) in [("claude", "mcpServers"), ("vscode", "servers")] {
            let (code, out, err) = host_config(&[host, "--launcher", launcher]);
            assert_eq!(code, 0, "{err}");
            let doc: Value = serde_json::from_str(&out).unwrap();
            let server = &doc[key]["mcpd"];
            assert_eq!(server["command"], command, "{host} {launcher}: {out}");
            assert_eq!(server["args"], json!(args), "{host} {launcher}");
            assert!(server["env"]["MCPD_TOKEN"].is_string(), "{out}");
        }
        let (code, out, err) = host_config(&["continue", "--launcher", launcher]);
        assert_eq!(code, 0, "{err}");
        let block: Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(block["mcpServers"][0]["command"], command);
        assert_eq!(block["mcpServers"][0]["args"], json!(args));
    }

    // --bin names a binary; a launcher starts the package instead: not both.
    let (code, _, err) = host_config(&["claude", "--launcher", "npx", "--bin", "/usr/bin/mcpd"]);
    assert_eq!(code, 2);
    assert!(err.contains("--bin") && err.contains("--launcher"), "{err}");
    let (code, _, err) = host_config(&["claude", "--launcher", "cargo"]);
    assert_eq!(code, 2);
    assert!(err.contains("binary, uvx, npx"), "{err}");
}

#[test]
fn checked_in_launcher_templates_are_what_the_command_generates() {
    for (host, launcher, config, file) in [
        (
            "claude",
            "npx",
            "/absolute/path/to/your/config",
            "claude_desktop_config.npx.json",
        ),
        ("vscode", "uvx", "${workspaceFolder}", "vscode-mcp.uvx.json"),
    ] {
        let args = [host, "--launcher", launcher, "--config", config];
        let (code, out, err) = host_config(&args);
        assert_eq!(code, 0, "{err}");
        let shipped = std::fs::read_to_string(repo().join("examples/hosts").join(file)).unwrap();
        assert!(
            out == shipped,
            "examples/hosts/{file} is out of date (a version bump changes the pinned version); regenerate it with: mcpd host-config {} > examples/hosts/{file}",
            args.join(" ")
        );
    }
}

/// Issue 15, item 9: nothing warned about tools a host will leave out or refuse.
#[test]
fn host_config_lists_what_that_host_leaves_out_and_strict_refuses() {
    let cfg = crate::util::ConfigDir::shipped();
    // 'mcpd' + 56 characters fits Cursor's 60; 'mcp__mcpd__' + 56 passes Claude Code's 64.
    let long = "a".repeat(56);
    let orders = cfg.read("tools.d/orders.export.yaml");
    cfg.write(
        "tools.d/long.yaml",
        &orders.replace("name: orders.export", &format!("name: {long}")),
    );
    let dir = cfg.path().to_str().unwrap();

    let (code, out, err) = host_config(&["cursor", "--config", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("leave out"), "{err}");
    assert!(out.contains("mcpServers"));

    let (code, out, err) = host_config(&["claude-code", "--config", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mcpServers"), "{out}");
    assert!(
        err.contains(&format!(
            "warning: Claude Code will leave out or refuse 1 tool(s): {long}"
        )) && err.contains("tools.d/long.yaml:2:7: warning: tool")
            && err.contains("67 characters, over its 64"),
        "{err}"
    );

    // A longer server name pushes it past Cursor's limit too.
    let (_, _, err) = host_config(&["cursor", "--config", dir, "--name", "internal-apis"]);
    assert!(
        err.contains("Cursor leaves it out: server name 'internal-apis'"),
        "{err}"
    );

    let (code, out, err) = host_config(&["claude-code", "--config", dir, "--strict"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("--strict: not configuring Claude Code"),
        "{err}"
    );
    // Nothing is written under --strict either.
    let file = cfg.path().join("host.json");
    let (code, _, _) = host_config(&[
        "claude-code",
        "--config",
        dir,
        "--strict",
        "--write",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(!file.exists());
}
