//! `mcpd serve --http` through the real binary: the official Python SDK over Streamable
//! HTTP, bearer auth (401 with the RFC 9728 metadata where an authorization server is
//! configured; a scope miss is a tool result), the Host check, and a SIGTERM that drains
//! the call in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};

use crate::util::{ConfigDir, DEADLINE, DemoApi, Reply, bin, request, try_request};

/// `mcpd serve --http 127.0.0.1:0` as a child process; killed on drop.
pub(crate) struct HttpServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl HttpServer {
    /// Starts it on `dir` with `env` and extra `args`, not watching the config; waits
    /// until it listens.
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut all = vec!["--no-watch"];
        all.extend_from_slice(args);
        Self::start_watching(dir, env, &all)
    }

    /// As [`HttpServer::start`], watching the config (hot reload).
    pub(crate) fn start_watching(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(["serve", "--http", "127.0.0.1:0", "--config"])
            .arg(dir)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on http://") {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches("/mcp")
                        .to_owned();
                    let _ = tx.send(url);
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let base = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "mcpd serve --http did not start:\n{}",
                stderr.lock().unwrap()
            )
        });
        Self {
            child,
            base,
            stderr,
        }
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub(crate) fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle` (its reader thread may lag the reply).
    pub(crate) fn wait_stderr(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.stderr();
            if s.contains(needle) || Instant::now() >= end {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        signal(self.pid(), "TERM");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < end, "mcpd did not exit after SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl HttpServer {
    /// Kills it at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// A JSON-RPC POST to `/mcp` with an optional bearer token and session.
pub(crate) fn rpc(
    server: &HttpServer,
    token: Option<&str>,
    session: Option<&str>,
    message: &Value,
) -> Reply {
    rpc_at(server.authority(), token, session, message)
}

/// As [`rpc`], to a `host:port`.
pub(crate) fn rpc_at(
    authority: &str,
    token: Option<&str>,
    session: Option<&str>,
    message: &Value,
) -> Reply {
    try_rpc_at(authority, token, session, message)
        .unwrap_or_else(|e| panic!("POST {authority}/mcp: {e}"))
}

/// As [`rpc_at`], with connection failures (a dead server) as errors.
pub(crate) fn try_rpc_at(
    authority: &str,
    token: Option<&str>,
    session: Option<&str>,
    message: &Value,
) -> std::io::Result<Reply> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    if let Some(s) = session {
        headers.push(("Mcp-Session-Id", s));
    }
    try_request(
        authority,
        "POST",
        "/mcp",
        &headers,
        Some(&message.to_string()),
    )
}

/// A session over HTTP: initialize, then requests; returns the session id.
pub(crate) fn open_session(server: &HttpServer, token: Option<&str>) -> String {
    let init = rpc(
        server,
        token,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "mcpd-tests", "version": "0"}}}),
    );
    assert_eq!(init.status, 200, "initialize: {init:?}");
    assert!(init.message().get("result").is_some(), "{init:?}");
    let session = init.header("mcp-session-id").unwrap().to_owned();
    let done = rpc(
        server,
        token,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(done.status, 202, "initialized: {done:?}");
    session
}

/// `tools/call` in a session; returns the whole reply.
pub(crate) fn call(
    server: &HttpServer,
    token: Option<&str>,
    session: &str,
    tool: &str,
    args: Value,
    meta: Option<Value>,
) -> Reply {
    call_at(server.authority(), token, session, tool, args, meta)
}

/// As [`call`], to a `host:port`.
pub(crate) fn call_at(
    authority: &str,
    token: Option<&str>,
    session: &str,
    tool: &str,
    args: Value,
    meta: Option<Value>,
) -> Reply {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(m) = meta {
        params["_meta"] = m;
    }
    rpc_at(
        authority,
        token,
        Some(session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}),
    )
}

/// `slow_echo` for `ms` on a thread of its own, as another client would call it while
/// the test goes on.
pub(crate) fn slow_call_in_background(
    server: &HttpServer,
    token: &str,
    session: &str,
    ms: u64,
) -> std::thread::JoinHandle<Reply> {
    let (authority, t, s) = (
        server.authority().to_owned(),
        token.to_owned(),
        session.to_owned(),
    );
    std::thread::spawn(move || {
        call_at(
            &authority,
            Some(&t),
            &s,
            "slow_echo",
            json!({"ms": ms}),
            None,
        )
    })
}

/// A signing key and tokens for the shipped config's `identity:` (audience mcpd-demo).
pub(crate) struct Keys {
    pub key: String,
}

impl Keys {
    pub(crate) fn new(cfg: &ConfigDir) -> Self {
        let (key, _public) = crate::identity::keygen(cfg, "k1");
        Self { key }
    }

    pub(crate) fn token(&self, cfg: &ConfigDir, subject: &str, scopes: &[&str]) -> String {
        crate::identity::issue(cfg, &self.key, subject, scopes, "15m")
    }
}

/// The shipped config with no default actor: every HTTP call needs a token.
pub(crate) fn token_only() -> ConfigDir {
    ConfigDir::token_only("\nstate: \"memory:\"\n")
}

/// Runs a Python SDK client script against `mcpd serve --http` (watching its config or
/// not) on a token-only config, with a token for every tool; returns the server.
fn python_sdk_over_http(script: &str, label: &str, watch: bool) -> HttpServer {
    let api = DemoApi::start();
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:python", &["*"]);
    let env = [
        ("DEMO_API_URL", api.url.as_str()),
        ("MCPD_TOKEN_KEY", &keys.key),
    ];
    let server = if watch {
        HttpServer::start_watching(cfg.path(), &env, &[])
    } else {
        HttpServer::start(cfg.path(), &env, &[])
    };
    let mut client = crate::python_client::client(script);
    client
        .env("MCPD_URL", server.mcp_url())
        .env("MCPD_TOKEN", &token)
        .env("MCPD_CONFIG", cfg.path())
        .env("DEMO_API_URL", &api.url);
    crate::python_client::assert_passes(&mut client, label, &|| server.stderr());
    server
}

#[test]
fn python_sdk_golden_flow_over_streamable_http_with_a_token() {
    let server = python_sdk_over_http("golden_http.py", "golden http", false);
    let stderr = server.wait_stderr("http request refused: 401");
    assert!(stderr.contains("http request refused: 401"), "{stderr}");
}

#[test]
fn python_sdk_gets_list_changed_over_http_after_a_reload() {
    python_sdk_over_http("reload_http.py", "reload http", true);
}

#[test]
fn no_token_gets_401_pointing_at_the_protected_resource_metadata() {
    let cfg = token_only();
    // An authorization server to sign in with: only then is the metadata advertised.
    cfg.append(
        "mcpd.yaml",
        "\nhttp:\n  authorization_servers: [https://sso.example.com]\n",
    );
    let keys = Keys::new(&cfg);
    let server = HttpServer::start(cfg.path(), &[("MCPD_TOKEN_KEY", &keys.key)], &[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});

    let reply = rpc(&server, None, None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", server.base);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{metadata_url}\"").as_str())
    );

    // The document it points at names this endpoint and the tools as scopes.
    let path = metadata_url.trim_start_matches(&server.base);
    let doc = request(server.authority(), "GET", path, &[], None);
    assert_eq!(doc.status, 200);
    let doc: Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(doc["resource"], server.mcp_url());
    assert_eq!(
        doc["authorization_servers"],
        json!(["https://sso.example.com"])
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        doc["scopes_supported"],
        json!(["flag.set", "orders.export"])
    );

    // A token that does not verify: 401 invalid_token, saying why.
    let reply = rpc(&server, Some("not.a.token"), None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\"")
            && challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );

    // A token for another deployment (wrong audience) is refused the same way.
    let other = token_only();
    other.edit("mcpd.yaml", "audience: mcpd-demo", "audience: mcpd-other");
    let foreign = keys.token(&other, "agent:elsewhere", &["*"]);
    let reply = rpc(&server, Some(&foreign), None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.body.contains("mcpd-demo"), "{}", reply.body);
}

#[test]
fn a_call_outside_the_tokens_scopes_is_a_tool_error_naming_the_scope_and_sends_nothing() {
    let api = DemoApi::start();
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:reader", &["orders.export", "flag.set:staging"]);
    let server = HttpServer::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_TOKEN_KEY", &keys.key)],
        &[],
    );
    let session = open_session(&server, Some(&token));

    // Issue 15, item 2: this was an HTTP 403 whose reason clients lose; an argument-
    // dependent scope cannot be fixed by an OAuth step-up anyway. Over stdio it is a tool
    // result with the reason, and now over HTTP too.
    let reply = call(
        &server,
        Some(&token),
        &session,
        "flag_set",
        json!({"env": "prod", "name": "checkout_v2", "percent": 5}),
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.message()["result"];
    assert_eq!(result["isError"], json!(true), "{result}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("agent:reader lacks scope 'flag.set:prod'"),
        "{text}"
    );
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    // Within its scopes the same token works, and the caller is the token's subject.
    let reply = call(
        &server,
        Some(&token),
        &session,
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 5}),
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.message()["result"];
    assert_ne!(result["isError"], json!(true), "{result}");
    // The bearer token never reaches the upstream.
    let seen = api.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(api.get("/flags/staging/checkout_v2")["percent"], 5);
    let stderr = server.wait_stderr("agent:reader");
    assert!(stderr.contains("agent:reader"), "{stderr}");
    assert!(!seen[0].to_string().contains(&token), "{seen:?}");
}

#[test]
fn a_host_not_allowed_is_refused_and_allow_host_admits_it() {
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let env = [("MCPD_TOKEN_KEY", keys.key.as_str())];
    let token = keys.token(&cfg, "agent:t", &["*"]);
    let bearer = format!("Bearer {token}");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
    .to_string();
    let headers = |host: &'static str| {
        vec![
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ]
    };
    let server = HttpServer::start(cfg.path(), &env, &[]);
    let mut h = headers("mcpd.example.com");
    h.push(("Authorization", &bearer));
    let reply = request(server.authority(), "POST", "/mcp", &h, Some(&init));
    assert_eq!(reply.status, 403, "{reply:?}");
    drop(server);

    let server = HttpServer::start(cfg.path(), &env, &["--allow-host", "mcpd.example.com"]);
    let reply = request(server.authority(), "POST", "/mcp", &h, Some(&init));
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn serve_http_without_identity_or_no_auth_refuses_to_start() {
    let cfg = ConfigDir::shipped();
    let server = cfg.read("mcpd.yaml");
    let (head, _) = server.split_once("# Who calls").unwrap();
    cfg.write("mcpd.yaml", head);
    let out = Command::new(bin())
        .args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity:") && stderr.contains("--no-auth"),
        "{stderr}"
    );
}

#[test]
fn no_auth_runs_as_default_actor_and_says_so_loudly() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\nstate: \"memory:\"\n");
    let server = HttpServer::start(cfg.path(), &[("DEMO_API_URL", &api.url)], &["--no-auth"]);
    assert!(
        server.stderr().contains("AUTHENTICATION IS OFF"),
        "{}",
        server.stderr()
    );
    let session = open_session(&server, None);
    let reply = call(
        &server,
        None,
        &session,
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
        None,
    );
    assert_eq!(
        reply.message()["result"]["isError"],
        json!(false),
        "{reply:?}"
    );
    // Health, readiness and metrics on the same listener when --metrics names it.
    assert_eq!(
        request(server.authority(), "GET", "/healthz", &[], None).status,
        200
    );
    assert_eq!(
        request(server.authority(), "GET", "/readyz", &[], None).status,
        200
    );
}

#[test]
fn metrics_share_the_http_listener_when_given_the_same_address() {
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\nstate: \"memory:\"\n");
    // A free port, so --http and --metrics can name the same one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--no-auth",
            "--no-watch",
            "--http",
            &addr,
            "--metrics",
            &addr,
        ])
        .arg("--config")
        .arg(cfg.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let reply = loop {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break request(&addr, "GET", "/metrics", &[], None);
        }
        assert!(Instant::now() < end, "mcpd never listened on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{reply:?}"
    );
    assert!(reply.body.trim_end().ends_with("# EOF"), "{}", reply.body);
}

/// `slow.echo`: answers after `ms` milliseconds (the demo API's `/slow`).
pub(crate) const SLOW_TOOL: &str = "name: slow.echo
description: Answers slowly.
input: { type: object, properties: { ms: { type: integer } } }
request: { upstream: orders, method: GET, path: /slow, query: { ms: \"{{ args.ms }}\" } }
";

#[test]
fn sigterm_lets_the_call_in_flight_finish_then_exits() {
    let api = DemoApi::start();
    let cfg = token_only();
    cfg.write("tools.d/slow.yaml", SLOW_TOOL);
    cfg.append("mcpd.yaml", "\nhttp:\n  shutdown_grace: 60s\n");
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:t", &["*"]);
    let mut server = HttpServer::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_TOKEN_KEY", &keys.key)],
        &[],
    );
    let session = open_session(&server, Some(&token));
    // A client holding the session's standalone SSE stream open (as SDK clients do)
    // must not hold up the shutdown: only calls are waited for (shutdown_grace is 60s,
    // past terminate()'s deadline).
    let stream = std::net::TcpStream::connect(server.authority()).unwrap();
    write!(
        &stream,
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\nMcp-Session-Id: {session}\r\n\r\n",
        server.authority()
    )
    .unwrap();
    let mut first = [0u8; 12];
    (&stream).read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the SSE stream did not open");
    let in_flight = slow_call_in_background(&server, &token, &session, 1500);
    let end = Instant::now() + DEADLINE;
    while api.requests().is_empty() {
        assert!(Instant::now() < end, "the call never reached the upstream");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        server.terminate(),
        "mcpd exited with an error after SIGTERM"
    );
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.message()["result"]["structuredContent"]["slept_ms"],
        1500,
        "{reply:?}"
    );
    let log = server.stderr();
    assert!(
        log.contains("draining calls in flight in_flight=1"),
        "{log}"
    );
}

/// Serves `body` as JSON to every request on a loopback port; returns its URL.
fn serve_json(body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A JWT signed with the Ed25519 key `private` (`KID:BASE64URL-PKCS8`).
fn sign(private: &str, claims: &Value) -> String {
    use base64::Engine as _;
    let (kid, b64) = private.split_once(':').unwrap();
    let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap()
}

#[test]
fn an_external_issuers_jwt_is_verified_with_its_jwks() {
    let api = DemoApi::start();
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let (sso_key, sso_public) = crate::identity::keygen(&cfg, "sso1");
    let (rogue_key, _) = crate::identity::keygen(&cfg, "rogue");
    let jwks = serve_json(
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": sso_public, "kid": "sso1",
            "alg": "EdDSA", "use": "sig"}]})
        .to_string(),
    );
    cfg.append(
        "mcpd.yaml",
        &format!(
            "\nhttp:\n  jwks:\n    url: {jwks}\n    issuer: https://sso.test/\n    audience: mcpd-demo\n"
        ),
    );
    let server = HttpServer::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_TOKEN_KEY", &keys.key)],
        &[],
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": "user:ana", "aud": "mcpd-demo", "iss": "https://sso.test/",
        "exp": exp, "scope": "orders.export"});
    let token = sign(&sso_key, &claims);

    let session = open_session(&server, Some(&token));
    let reply = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
        None,
    );
    assert_eq!(
        reply.message()["result"]["isError"],
        json!(false),
        "{reply:?}"
    );
    // Regression: read right after the reply, stderr could miss the call's log line
    // under load (the reader thread lags); wait for it.
    let stderr = server.wait_stderr("actor=user:ana");
    assert!(stderr.contains("actor=user:ana"), "{stderr}");
    // Its scopes come from the `scope` claim: a flag write is outside them.
    let reply = call(
        &server,
        Some(&token),
        &session,
        "flag_set",
        json!({"env": "staging", "name": "checkout_v2", "percent": 5}),
        None,
    );
    let result = &reply.message()["result"];
    assert_eq!(result["isError"], json!(true), "{reply:?}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("lacks scope 'flag.set:staging'"),
        "{result}"
    );
    // The issuer is the authorization server a host signs in with (issue 15, item 4).
    let doc = request(
        server.authority(),
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        &[],
        None,
    );
    let doc: Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(doc["authorization_servers"], json!(["https://sso.test/"]));
    // mcpd's own tokens keep working beside the issuer's.
    let own = keys.token(&cfg, "agent:own", &["*"]);
    open_session(&server, Some(&own));

    // Signed by a key the issuer never published, or for another audience: 401.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});
    let forged = sign(&rogue_key, &claims);
    let reply = rpc(&server, Some(&forged), None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.body.contains("key id 'rogue'"), "{}", reply.body);
    let mut other = claims.clone();
    other["aud"] = json!("another-service");
    let reply = rpc(&server, Some(&sign(&sso_key, &other)), None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
}

#[test]
fn an_oversized_body_gets_413_and_a_foreign_origin_403() {
    let cfg = token_only();
    cfg.append(
        "mcpd.yaml",
        "\nhttp:\n  max_body_bytes: 2000\n  allowed_origins: [\"https://console.example.com:443\"]\n",
    );
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:t", &["*"]);
    let server = HttpServer::start(cfg.path(), &[("MCPD_TOKEN_KEY", &keys.key)], &[]);
    let session = open_session(&server, Some(&token));

    let big = call(
        &server,
        Some(&token),
        &session,
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31", "pad": "x".repeat(5000)}),
        None,
    );
    assert_eq!(big.status, 413, "{big:?}");
    assert!(big.body.contains("max_body_bytes"), "{}", big.body);

    let bearer = format!("Bearer {token}");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
    .to_string();
    let with_origin = |origin: &'static str| {
        request(
            server.authority(),
            "POST",
            "/mcp",
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
                ("Authorization", &bearer),
                ("Origin", origin),
            ],
            Some(&init),
        )
    };
    assert_eq!(with_origin("https://evil.example.com").status, 403);
    assert_eq!(with_origin("https://console.example.com").status, 200);
}
