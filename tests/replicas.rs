//! Two `mcpd serve --http` replicas on loopback sharing one Redis: a global rate limit,
//! an idempotency key and a budget hold across both; a replica killed mid-load leaves
//! the other serving, and no write reaches the upstream twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys, try_rpc_at};
use crate::util::{ConfigDir, DEADLINE, DemoApi, RedisServer};

/// The shipped config with state in `redis` and no default actor (tokens only).
fn replica_config(redis: &RedisServer) -> ConfigDir {
    ConfigDir::token_only(&format!("\nstate: \"{}\"\n", redis.url))
}

/// Two replicas on one Redis, each with its own copy of `cfg`'s directory.
fn two_replicas(cfg: &ConfigDir, keys: &Keys, api: &DemoApi) -> (HttpServer, HttpServer) {
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let copy = ConfigDir::shipped();
    for file in [
        "mcpd.yaml",
        "policies.yaml",
        "tools.d/orders.export.yaml",
        "tools.d/flag.set.yaml",
    ] {
        copy.write(file, &cfg.read(file));
    }
    (
        HttpServer::start(cfg.path(), &env, &[]),
        HttpServer::start(copy.path(), &env, &[]),
    )
}

/// A session on `authority`, or why not.
fn session(authority: &str, token: &str) -> std::io::Result<String> {
    let init = try_rpc_at(
        authority,
        Some(token),
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "replica-test", "version": "0"}}}),
    )?;
    let id = init
        .header("mcp-session-id")
        .ok_or_else(|| std::io::Error::other(format!("no session: {init:?}")))?
        .to_owned();
    try_rpc_at(
        authority,
        Some(token),
        Some(&id),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )?;
    Ok(id)
}

/// `tools/call`; the result object, or why there is none.
fn call(
    authority: &str,
    token: &str,
    session: &str,
    tool: &str,
    args: Value,
    key: Option<&str>,
) -> std::io::Result<Value> {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(k) = key {
        params["_meta"] = json!({"dev.mcpd/idempotencyKey": k});
    }
    let reply = try_rpc_at(
        authority,
        Some(token),
        Some(session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}),
    )?;
    if reply.status != 200 {
        return Err(std::io::Error::other(format!(
            "HTTP {}: {}",
            reply.status, reply.body
        )));
    }
    // A replica killed mid-answer leaves a stream without a message: a failed call.
    let msg = reply
        .try_message()
        .ok_or_else(|| std::io::Error::other(format!("no message in {:?}", reply.body)))?;
    msg.get("result")
        .cloned()
        .ok_or_else(|| std::io::Error::other(format!("no result: {msg}")))
}

fn text(result: &Value) -> String {
    crate::util::text(result)
}

#[test]
fn replicas_share_a_global_rate_an_idempotency_key_and_a_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = replica_config(&redis);
    cfg.edit(
        "tools.d/orders.export.yaml",
        "rate: 60/min",
        "rate: 60/min\n  total_rate: 5/min",
    );
    cfg.edit("policies.yaml", "calls: 200", "calls: 3");
    let keys = Keys::new(&cfg);
    let (a, b) = two_replicas(&cfg, &keys, &api);

    // A global rate of 5/min: twelve callers (four actors), split across the replicas,
    // all at once; exactly five calls pass and reach the upstream.
    let barrier = Arc::new(Barrier::new(12));
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let target = if i % 2 == 0 {
                a.authority()
            } else {
                b.authority()
            }
            .to_owned();
            let token = keys.token(&cfg, &format!("agent:r{}", i % 4), &["*"]);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let s = session(&target, &token).unwrap();
                barrier.wait();
                let args = json!({"from": "2025-08-01", "to": "2025-08-31"});
                call(&target, &token, &s, "orders_export", args, None).unwrap()
            })
        })
        .collect();
    let results: Vec<Value> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let passed = results.iter().filter(|r| r["isError"] != true).count();
    let limited: Vec<String> = results
        .iter()
        .filter(|r| r["isError"] == true)
        .map(text)
        .collect();
    assert_eq!(passed, 5, "{limited:?}");
    assert!(
        limited.iter().all(|t| t.contains("rate limit")),
        "{limited:?}"
    );
    let gets = api
        .requests()
        .iter()
        .filter(|r| r["method"] == "GET" && r["path"] == "/orders")
        .count();
    assert_eq!(gets, 5);

    // An idempotency key used on A replays on B.
    let token = keys.token(&cfg, "agent:writer", &["*"]);
    let (sa, sb) = (
        session(a.authority(), &token).unwrap(),
        session(b.authority(), &token).unwrap(),
    );
    let staging = |p: u8| json!({"env": "staging", "name": "checkout_v2", "percent": p});
    let first = call(a.authority(), &token, &sa, "flag_set", staging(40), None).unwrap();
    assert_ne!(first["isError"], true, "{first}");
    let again = call(b.authority(), &token, &sb, "flag_set", staging(40), None).unwrap();
    assert_eq!(again["_meta"]["dev.mcpd/replayed"], true, "{again}");
    assert_eq!(again["structuredContent"], first["structuredContent"]);
    assert_eq!(api.puts_by_key().values().sum::<usize>(), 1);

    // A budget of 3 flag writes spent on A and B together.
    for (on, p) in [(&a, 41), (&b, 42)] {
        let s = if on.authority() == a.authority() {
            &sa
        } else {
            &sb
        };
        let r = call(on.authority(), &token, s, "flag_set", staging(p), None).unwrap();
        assert_ne!(r["isError"], true, "{r}");
    }
    let over = call(a.authority(), &token, &sa, "flag_set", staging(43), None).unwrap();
    assert!(
        text(&over).contains("budget 'prod-flag-writes' is spent: 3 of 3"),
        "{}",
        text(&over)
    );
    assert_eq!(api.puts_by_key().values().sum::<usize>(), 3);
}

#[test]
fn a_replica_killed_mid_load_leaves_the_other_serving_and_writes_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = replica_config(&redis);
    let keys = Keys::new(&cfg);
    let (mut a, b) = two_replicas(&cfg, &keys, &api);
    const CLIENTS: usize = 6;
    const WRITES: usize = 10;

    let a_dead = Arc::new(AtomicBool::new(false));
    let after_kill_on_b = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            // Each client is its own actor (per-actor rates stay out of the way) and
            // starts on A or B; on a dead replica it retries the same key on the other.
            let token = keys.token(&cfg, &format!("agent:load{i}"), &["*"]);
            let (addr_a, addr_b) = (a.authority().to_owned(), b.authority().to_owned());
            let (a_dead, after_kill_on_b) = (a_dead.clone(), after_kill_on_b.clone());
            std::thread::spawn(move || {
                let mut sessions: BTreeMap<String, String> = BTreeMap::new();
                let mut outcomes = Vec::new();
                for j in 0..WRITES {
                    let key = format!("load-{i}-{j}");
                    let args = json!({"env": "staging", "name": format!("load_{i}"), "percent": j});
                    let end = Instant::now() + DEADLINE;
                    let mut on_a = i % 2 == 0;
                    let outcome = loop {
                        assert!(Instant::now() < end, "write {key} never completed");
                        let target = if on_a { &addr_a } else { &addr_b };
                        let killed = a_dead.load(Ordering::SeqCst);
                        let s = match sessions.get(target) {
                            Some(s) => s.clone(),
                            None => match session(target, &token) {
                                Ok(s) => {
                                    sessions.insert(target.clone(), s.clone());
                                    s
                                }
                                Err(_) => {
                                    on_a = !on_a;
                                    continue;
                                }
                            },
                        };
                        match call(target, &token, &s, "flag_set", args.clone(), Some(&key)) {
                            Ok(r) if r["isError"] == true && text(&r).contains("in flight") => {
                                // A held the key when it died: its outcome is unknown, so
                                // the write must not be sent again (a retry after the
                                // claim lapses would carry the same Idempotency-Key).
                                break ("in_flight", r);
                            }
                            Ok(r) => {
                                assert_ne!(r["isError"], true, "{key}: {r}");
                                if killed && !on_a {
                                    after_kill_on_b.fetch_add(1, Ordering::SeqCst);
                                }
                                break ("done", r);
                            }
                            Err(_) => {
                                sessions.remove(target);
                                on_a = !on_a;
                            }
                        }
                    };
                    outcomes.push((key, outcome.0));
                }
                outcomes
            })
        })
        .collect();

    // Kill A (SIGKILL, no drain) once the load is well under way.
    let end = Instant::now() + DEADLINE;
    while api.puts_by_key().len() < CLIENTS * WRITES / 3 {
        assert!(Instant::now() < end, "the load never got going");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    a.kill();
    a_dead.store(true, Ordering::SeqCst);

    let outcomes: Vec<(String, &str)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(outcomes.len(), CLIENTS * WRITES);
    let in_flight: Vec<&String> = outcomes
        .iter()
        .filter(|(_, o)| *o == "in_flight")
        .map(|(k, _)| k)
        .collect();
    // At most one write per client can have been in flight on A when it died.
    assert!(in_flight.len() <= CLIENTS, "{in_flight:?}");
    // B kept serving after A died.
    assert!(after_kill_on_b.load(Ordering::SeqCst) > 0);
    // No write reached the upstream twice, and every completed write reached it.
    let puts = api.puts_by_key();
    let twice: Vec<_> = puts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    for (key, outcome) in &outcomes {
        if *outcome == "done" {
            assert_eq!(puts.get(key), Some(&1), "{key} completed without a write");
        }
    }
    let ready = crate::util::request(b.authority(), "GET", "/readyz", &[], None);
    assert_eq!(ready.status, 200, "B is not ready: {}", b.stderr());
}

#[test]
fn a_session_started_on_one_replica_is_served_by_the_other_and_closed_from_either() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = replica_config(&redis);
    let keys = Keys::new(&cfg);
    let (a, b) = two_replicas(&cfg, &keys, &api);
    let token = keys.token(&cfg, "agent:roamer", &["*"]);

    // Started on A; B has never seen it and serves it all the same, as A does after.
    let s = session(a.authority(), &token).unwrap();
    let args = json!({"env": "staging", "name": "roam", "percent": 7});
    let on_b = call(b.authority(), &token, &s, "flag_set", args.clone(), None).unwrap();
    assert_ne!(on_b["isError"], true, "{on_b}");
    let on_a = call(a.authority(), &token, &s, "flag_set", args, None).unwrap();
    assert_ne!(on_a["isError"], true, "{on_a}");

    // A session nobody started is still unknown everywhere.
    let none = call(
        b.authority(),
        &token,
        "never-was",
        "flag_set",
        json!({}),
        None,
    );
    assert!(
        none.as_ref()
            .is_err_and(|e| e.to_string().contains("HTTP 404")),
        "{none:?}"
    );

    // Closed through B: B drops it and so does the store, so no replica restores it.
    let bearer = format!("Bearer {token}");
    let delete = |on: &HttpServer| {
        crate::util::request(
            on.authority(),
            "DELETE",
            "/mcp",
            &[("Authorization", &bearer), ("Mcp-Session-Id", &s)],
            None,
        )
    };
    assert_eq!(delete(&b).status, 204);
    let again = call(b.authority(), &token, &s, "flag_set", json!({}), None);
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("HTTP 404")),
        "{again:?}"
    );
}

#[test]
fn a_session_outlives_a_restart_of_its_server_on_the_embedded_store() {
    let api = DemoApi::start();
    let cfg = ConfigDir::token_only("");
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:restart", &["*"]);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let mut first = HttpServer::start(cfg.path(), &env, &[]);
    let s = session(first.authority(), &token).unwrap();
    first.kill();
    let second = HttpServer::start(cfg.path(), &env, &[]);
    let args = json!({"env": "staging", "name": "restart", "percent": 3});
    let r = call(second.authority(), &token, &s, "flag_set", args, None).unwrap();
    assert_ne!(r["isError"], true, "{r}");
}

/// A client's `initialize` answered by A, its `notifications/initialized` by B, its
/// stream held by A (a balancer without affinity does this): A serves its calls at once,
/// and a reload still reaches its stream.
#[test]
fn list_changed_reaches_a_stream_on_the_replica_that_answered_initialize_only() {
    use std::io::{Read as _, Write as _};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = replica_config(&redis);
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:split", &["*"]);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let a = HttpServer::start_watching(cfg.path(), &env, &[]);
    let b = HttpServer::start_watching(cfg.path(), &env, &[]);
    let init = try_rpc_at(
        a.authority(),
        Some(&token),
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "split", "version": "0"}}}),
    )
    .unwrap();
    let s = init.header("mcp-session-id").unwrap().to_owned();
    let done = try_rpc_at(
        b.authority(),
        Some(&token),
        Some(&s),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .unwrap();
    assert_eq!(done.status, 202, "{done:?}");

    // A's copy of the session serves a call at once (its log to the client, which a call
    // flushes before answering, was started by `initialize`: a call used to wait 2 s).
    let started = Instant::now();
    let args = json!({"env": "staging", "name": "split", "percent": 4});
    let r = call(a.authority(), &token, &s, "flag_set", args, None).unwrap();
    assert_ne!(r["isError"], true, "{r}");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "took {took:?}"
    );

    let mut stream = std::net::TcpStream::connect(a.authority()).unwrap();
    write!(
        stream,
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\nMcp-Session-Id: {s}\r\n\r\n",
        a.authority()
    )
    .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the SSE stream did not open");
    let recent = cfg
        .read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders.recent");
    cfg.write("tools.d/orders.recent.yaml", &recent);
    a.wait_stderr("reload applied added=[\"orders.recent\"]");
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let mut seen = String::new();
    while !seen.contains("notifications/tools/list_changed") {
        assert!(
            Instant::now() < end,
            "no list_changed on A's stream: {seen}"
        );
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}
