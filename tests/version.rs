//! `mcpd --version`: the version, the git commit it was built from, and the MCP
//! protocol versions; each version listed that has an `initialize` handshake is one
//! `mcpd serve` agrees to.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{ConfigDir, DEADLINE, bin, repo, run};

/// The commit build.rs should have recorded: this checkout's HEAD, or "unknown".
fn head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn listed_protocols() -> Vec<String> {
    let (code, out, err) = run(Command::new(bin()).arg("--version"));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("mcpd {}", env!("CARGO_PKG_VERSION")).as_str()),
        "{out}"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("commit: {}", head()).as_str())
    );
    let protocols = lines
        .get(2)
        .and_then(|l| l.strip_prefix("MCP protocol versions: "))
        .unwrap_or_else(|| panic!("no protocol line: {out}"));
    protocols.split(", ").map(str::to_owned).collect()
}

#[test]
fn version_names_the_commit_and_the_protocol_versions() {
    let protocols = listed_protocols();
    assert!(
        protocols.contains(&"2025-11-25".to_owned()),
        "{protocols:?}"
    );
    assert!(protocols.windows(2).all(|w| w[0] < w[1]), "{protocols:?}");
    let (code, out, _) = run(Command::new(bin()).arg("-V"));
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("mcpd {} ({})", env!("CARGO_PKG_VERSION"), head())
    );
}

/// Starts `mcpd serve`, sends `initialize` asking for `version`, returns the answer.
fn initialize(dir: &std::path::Path, version: &str) -> Value {
    let mut child = Command::new(bin())
        .args(["serve", "--no-watch", "--config"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "mcpd-tests", "version": "0"}}});
    writeln!(stdin, "{msg}").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("no answer to initialize");
    drop(stdin);
    child.wait().unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn every_listed_version_with_a_handshake_is_agreed_to_by_serve() {
    let cfg = ConfigDir::shipped();
    let handshake: Vec<String> = listed_protocols()
        .into_iter()
        .filter(|v| v.as_str() <= "2025-11-25")
        .collect();
    assert!(handshake.len() >= 2, "{handshake:?}");
    for v in handshake {
        let answer = initialize(cfg.path(), &v);
        assert_eq!(answer["result"]["protocolVersion"], v.as_str(), "{answer}");
    }
}
