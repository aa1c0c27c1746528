//! Redis trouble under `mcpd serve --http`: while Redis is down (killed, or not
//! answering) calls that need state fail closed with a tool error saying so and nothing
//! reaches the upstream, a read-only tool with `limits.on_state_outage: serve` keeps
//! working, `/readyz` is 503; when Redis is back (same append-only file) calls resume
//! without a restart and no acknowledged key is lost: a completed write replays.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys, call, open_session};
use crate::util::{ConfigDir, DEADLINE, DemoApi, RedisServer, request, text, validate};

fn result(reply: &crate::util::Reply) -> Value {
    reply.message()["result"].clone()
}

fn puts(api: &DemoApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| r["method"] == "PUT")
        .count()
}

/// Polls `/readyz` until it answers `status`.
fn wait_ready(server: &HttpServer, status: u16) {
    let end = Instant::now() + DEADLINE;
    loop {
        let r = request(server.authority(), "GET", "/readyz", &[], None);
        if r.status == status {
            return;
        }
        assert!(
            Instant::now() < end,
            "/readyz stayed {}: {}",
            r.status,
            r.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shipped tools on `redis`, plus `orders.peek`: orders.export without its rate,
/// allowed to run uncounted while the store is down.
fn config(redis: &RedisServer) -> ConfigDir {
    let cfg = ConfigDir::token_only(&format!("\nstate: \"{}\"\n", redis.url));
    let peek = cfg
        .read("tools.d/orders.export.yaml")
        .replace("name: orders.export", "name: orders.peek")
        .replace("  rate: 60/min\n", "  on_state_outage: serve\n");
    assert!(peek.contains("on_state_outage: serve"), "{peek}");
    cfg.write("tools.d/orders.peek.yaml", &peek);
    cfg
}

#[test]
fn calls_fail_closed_while_redis_is_down_and_resume_when_it_returns() {
    let Some(mut redis) = RedisServer::start_durable() else {
        return;
    };
    let api = DemoApi::start();
    let cfg = config(&redis);
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:outage", &["*"]);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", keys.key.as_str()),
    ];
    let server = HttpServer::start(cfg.path(), &env, &[]);
    let s = open_session(&server, Some(&token));
    let flag = |p: u8| json!({"env": "staging", "name": "outage", "percent": p});
    let key = |k: &str| Some(json!({"dev.mcpd/idempotencyKey": k}));
    let august = json!({"from": "2025-08-01", "to": "2025-08-31"});

    let first = result(&call(
        &server,
        Some(&token),
        &s,
        "flag_set",
        flag(1),
        key("k1"),
    ));
    assert_ne!(first["isError"], true, "{first}");
    assert_eq!(puts(&api), 1);
    wait_ready(&server, 200);

    for down in ["killed", "not answering"] {
        if down == "killed" {
            redis.kill();
        } else {
            redis.answering(false);
        }
        wait_ready(&server, 503);
        let before = api.requests().len();
        // A keyed write, a rated read: refused, saying why, nothing sent.
        for (tool, args, k) in [
            ("flag_set", flag(2), key("k2")),
            ("orders_export", august.clone(), None),
        ] {
            let started = Instant::now();
            let r = result(&call(&server, Some(&token), &s, tool, args, k));
            assert_eq!(r["isError"], true, "{down}: {tool}: {r}");
            let t = text(&r);
            assert!(
                t.contains("state store is unreachable") && t.contains("not sent"),
                "{down}: {tool}: {t}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{down}: {tool} took {:?}",
                started.elapsed()
            );
        }
        assert_eq!(api.requests().len(), before, "{down}: something was sent");
        // The read-only tool that may run uncounted does.
        let peek = result(&call(
            &server,
            Some(&token),
            &s,
            "orders_peek",
            august.clone(),
            None,
        ));
        assert_ne!(peek["isError"], true, "{down}: {peek}");
        assert!(
            server.stderr().contains("serving uncounted"),
            "{}",
            server.stderr()
        );

        if down == "killed" {
            redis.restart();
        } else {
            redis.answering(true);
        }
        // No restart of mcpd: ready again, and calls resume.
        wait_ready(&server, 200);
        let again = result(&call(
            &server,
            Some(&token),
            &s,
            "flag_set",
            flag(1),
            key("k1"),
        ));
        assert_eq!(again["_meta"]["dev.mcpd/replayed"], true, "{down}: {again}");
        assert_eq!(puts(&api), 1, "{down}: k1 was written again");
        let r = result(&call(
            &server,
            Some(&token),
            &s,
            "orders_export",
            august.clone(),
            None,
        ));
        assert_ne!(r["isError"], true, "{down}: {r}");
    }
}

#[test]
fn on_state_outage_serve_is_refused_on_a_tool_that_needs_the_store() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cfg = config(&redis);
    for (file, from, to, why) in [
        (
            "flag.set",
            "limits:\n",
            "limits:\n  on_state_outage: serve\n",
            "not a GET",
        ),
        (
            "orders.export",
            "  concurrency: 8",
            "  concurrency: 8\n  on_state_outage: serve",
            "has a rate",
        ),
    ] {
        let path = format!("tools.d/{file}.yaml");
        let before = cfg.read(&path);
        cfg.write(&path, &before.replacen(from, to, 1));
        let (code, out, err) = validate(cfg.path());
        assert_ne!(code, 0, "{file}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(
            all.contains("limits.on_state_outage") && all.contains(why),
            "{file}: {all}"
        );
        cfg.write(&path, &before);
    }
}
