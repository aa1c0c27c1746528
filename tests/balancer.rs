//! Replicas behind a real load balancer: HAProxy round-robin with no affinity in front
//! of three `mcpd serve --http` replicas on one Redis and one shared config directory
//! (each with its own audit log). The official Python SDK runs the golden flow through
//! it; its sessions are served by every replica; a tool file added to the shared
//! directory reaches every replica and every client; one replica is killed (-9) under
//! keyed writes, and the clients carry on through the others with no write repeated or
//! lost; `mcpd audit verify` passes on every replica's log. The official TypeScript SDK
//! runs the golden flow and gets `list_changed` through HAProxy in front of two replicas.

use std::collections::BTreeMap;
use std::process::Command;

use crate::http::{HttpServer, Keys};
use crate::python_client::{assert_passes, client};
use crate::util::{ConfigDir, DemoApi, Haproxy, RedisServer, bin, run};

const AUDIT_KEY: &str = "audit-key-for-balancer-tests-0123456789";

#[test]
fn replicas_behind_haproxy_without_affinity_serve_reload_and_survive_a_kill() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = ConfigDir::token_only(&format!(
        "\nstate: \"{}\"\naudit:\n  path: \"${{AUDIT_LOG:-state/audit.jsonl}}\"\n",
        redis.url
    ));
    let keys = Keys::new(&cfg);
    let logs = tempfile::tempdir().unwrap();
    let names = ["r1", "r2", "r3"];
    let replicas: Vec<HttpServer> = names
        .iter()
        .map(|name| {
            let log = logs.path().join(format!("{name}.jsonl"));
            let log = log.to_str().unwrap();
            let env = [
                ("DEMO_API_URL", api.url.as_str()),
                ("MCPD_TOKEN_KEY", keys.key.as_str()),
                ("MCPD_AUDIT_KEY", AUDIT_KEY),
                ("AUDIT_LOG", log),
            ];
            HttpServer::start_watching(cfg.path(), &env, &[])
        })
        .collect();
    let backends: Vec<(&str, &str)> = names
        .iter()
        .zip(&replicas)
        .map(|(n, r)| (*n, r.authority()))
        .collect();
    let Some(lb) = Haproxy::start(&backends) else {
        return;
    };
    let url = format!("http://{}/mcp", lb.authority);
    let logs_of = || {
        replicas
            .iter()
            .zip(names)
            .map(|(r, n)| format!("--- {n}\n{}", r.stderr()))
            .collect::<String>()
    };

    // The golden flow, through the balancer.
    let token = keys.token(&cfg, "agent:golden", &["*"]);
    let mut golden = client("golden_http.py");
    golden
        .env("MCPD_URL", &url)
        .env("MCPD_TOKEN", &token)
        .env("DEMO_API_URL", &api.url);
    assert_passes(&mut golden, "golden http", &logs_of);

    // Sessions spread over every replica, a reload reaching all, a kill under load.
    let tokens: Vec<String> = (0..4)
        .map(|i| keys.token(&cfg, &format!("agent:lb{i}"), &["*"]))
        .collect();
    let pids: Vec<String> = names
        .iter()
        .zip(&replicas)
        .map(|(n, r)| format!("{n}={}", r.pid()))
        .collect();
    let mut balancer = client("balancer.py");
    balancer
        .env("MCPD_URL", &url)
        .env("MCPD_TOKENS", tokens.join(","))
        .env("MCPD_CONFIG", cfg.path())
        .env("MCPD_REPLICAS", pids.join(","))
        .env("MCPD_KILL", "r2")
        .env("DEMO_API_URL", &api.url);
    let (code, stdout, stderr) = run(&mut balancer);
    assert!(
        code == 0 && stdout.contains("balancer: all checks passed"),
        "balancer failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nmcpd:\n{}",
        logs_of()
    );

    // No keyed write reached the upstream twice, and every acknowledged one reached it.
    let outcomes: BTreeMap<String, String> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOMES "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap();
    assert_eq!(outcomes.len(), 4 * 8, "{outcomes:?}");
    let puts = api.puts_by_key();
    let twice: Vec<_> = puts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    for (key, outcome) in &outcomes {
        match outcome.as_str() {
            "done" => assert_eq!(puts.get(key), Some(&1), "{key} acknowledged, not written"),
            // The killed replica held it: sent at most once (checked above), never resent.
            "in_flight" => {}
            other => panic!("{key}: {other}"),
        }
    }
    let in_flight = outcomes.values().filter(|o| *o == "in_flight").count();
    assert!(in_flight <= tokens.len(), "{outcomes:?}");

    // Every replica's audit log verifies, the killed one's too.
    for n in names {
        let log = logs.path().join(format!("{n}.jsonl"));
        let (code, out, err) = run(Command::new(bin())
            .args(["audit", "verify"])
            .arg(&log)
            .env("MCPD_AUDIT_KEY", AUDIT_KEY));
        assert_eq!(code, 0, "audit verify {n}: {out}{err}");
    }
}

/// The official TypeScript SDK's node_modules (scripts/test installs it), or `None`.
fn typescript_sdk() -> Option<std::path::PathBuf> {
    let dir = crate::util::repo().join("target/tsclient/node_modules");
    if dir.join("@modelcontextprotocol/sdk/package.json").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: the MCP TypeScript SDK is not installed in target/tsclient (scripts/test installs it)"
        );
        None
    }
}

#[test]
fn the_typescript_sdk_runs_the_golden_flow_and_gets_list_changed_through_haproxy() {
    let Some(sdk) = typescript_sdk() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = ConfigDir::token_only(&format!("\nstate: \"{}\"\n", redis.url));
    let keys = Keys::new(&cfg);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let names = ["r1", "r2"];
    let replicas: Vec<HttpServer> = names
        .iter()
        .map(|_| HttpServer::start_watching(cfg.path(), &env, &[]))
        .collect();
    let backends: Vec<(&str, &str)> = names
        .iter()
        .zip(&replicas)
        .map(|(n, r)| (*n, r.authority()))
        .collect();
    let Some(lb) = Haproxy::start(&backends) else {
        return;
    };
    let token = keys.token(&cfg, "agent:ts", &["*"]);
    let (code, stdout, stderr) = run(Command::new("node")
        .arg(crate::util::repo().join("tests/clients/balancer_ts.mjs"))
        .env("MCPD_URL", format!("http://{}/mcp", lb.authority))
        .env("MCPD_TOKEN", &token)
        .env("MCPD_CONFIG", cfg.path())
        .env("MCPD_REPLICAS", names.join(","))
        .env("MCPD_TS_SDK", &sdk)
        .env("DEMO_API_URL", &api.url));
    assert!(
        code == 0 && stdout.contains("typescript balancer: all checks passed"),
        "typescript balancer failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nmcpd:\n{}",
        replicas.iter().map(HttpServer::stderr).collect::<String>()
    );
}
