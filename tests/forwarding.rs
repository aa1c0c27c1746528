//! The caller reaches the upstream (`upstreams.*.identity`): an upstream that verifies
//! JWTs with `jose` against mcpd's JWKS (`mcpd token jwks` for stdio, the served
//! `/.well-known/jwks.json` over HTTP) receives, per call, an assertion of the actor for
//! its own audience, and refuses it for another audience, once expired, or tampered.

use std::process::Command;

use serde_json::{Value, json};

use crate::http::{HttpServer, call, open_session};
use crate::identity::{issue, keygen};
use crate::util::{ConfigDir, NodeProgram, StdioClient, bin, is_error, request, run, text};

/// A tool that asks the verifying upstream who it thinks calls.
const WHOAMI: &str = r#"
name: whoami
description: Who the upstream sees calling.
input: { type: object, additionalProperties: false, properties: {} }
request:
  upstream: verified
  method: GET
  path: /whoami
"#;

/// The shipped config without a default actor, plus the verifying upstream.
fn config(upstream: &str) -> ConfigDir {
    let cfg = ConfigDir::token_only("\nstate: \"memory:\"\n");
    cfg.edit(
        "mcpd.yaml",
        "upstreams:\n",
        &format!(
            "upstreams:\n  verified:\n    url: \"${{VERIFIED_URL:-http://127.0.0.1:9}}\"\n{upstream}"
        ),
    );
    cfg.write("tools.d/whoami.yaml", WHOAMI);
    cfg
}

const ASSERTION: &str =
    "    identity: assertion\n    assertion: { audience: orders-api, ttl: 30s }\n";

/// The upstream with `env`; `None` when the npm packages are missing (skipped loudly).
fn upstream(env: &[(&str, &str)]) -> Option<NodeProgram> {
    let mut all = vec![("AUDIENCE", "orders-api"), ("ISSUER", "mcpd")];
    all.extend_from_slice(env);
    NodeProgram::start("upstream.mjs", &all)
}

/// The upstream's verification of `token` with an `audience` and at a time `at`.
fn reverify(
    up: &NodeProgram,
    token: &str,
    audience: Option<&str>,
    at: Option<u64>,
) -> (u16, Value) {
    let body = json!({"token": token, "audience": audience, "at": at}).to_string();
    let r = request(
        up.authority(),
        "POST",
        "/_verify",
        &[("Content-Type", "application/json")],
        Some(&body),
    );
    (r.status, serde_json::from_str(&r.body).unwrap())
}

fn seen(up: &NodeProgram) -> Vec<Value> {
    let r = request(up.authority(), "GET", "/_seen", &[], None);
    serde_json::from_str::<Value>(&r.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What a call's verified claims must be, and what the upstream must refuse of the same
/// assertion: another audience, a time past its expiry, a changed signature.
fn check_claims(up: &NodeProgram, result: &Value, subject: &str, scopes: &str) -> String {
    assert!(!is_error(result), "{}", text(result));
    let claims = &result["structuredContent"]["claims"];
    assert_eq!(result["structuredContent"]["verified"], true, "{result}");
    assert_eq!(claims["sub"], subject);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["iss"], "mcpd");
    assert_eq!(claims["tool"], "whoami");
    assert_eq!(claims["scope"], scopes);
    assert_eq!(claims["trace_id"].as_str().unwrap().len(), 32, "{claims}");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 30, "assertion.ttl is 30s: {claims}");
    let sent = seen(up);
    let token = sent.last().unwrap()["credential"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    // The same assertion, checked again: fine now, refused for another API, once
    // expired, and with its signature changed.
    assert_eq!(reverify(up, &token, None, None).0, 200);
    let (status, why) = reverify(up, &token, Some("billing-api"), None);
    assert_eq!(
        (status, why["error"].as_str()),
        (401, Some("ERR_JWT_CLAIM_VALIDATION_FAILED")),
        "{why}"
    );
    assert!(why["message"].as_str().unwrap().contains("aud"), "{why}");
    let (status, why) = reverify(up, &token, None, Some(exp + 1));
    assert_eq!(
        (status, why["error"].as_str()),
        (401, Some("ERR_JWT_EXPIRED")),
        "{why}"
    );
    // A character well inside the signature (the last one's low bits are padding).
    let at = token.len() - 10;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    let (status, why) = reverify(up, &forged, None, None);
    assert_eq!(
        (status, why["error"].as_str()),
        (401, Some("ERR_JWS_SIGNATURE_VERIFICATION_FAILED")),
        "{why}"
    );
    token
}

#[test]
fn over_stdio_the_upstream_verifies_each_calls_assertion_with_the_jwks_from_mcpd_token_jwks() {
    let cfg = config(ASSERTION);
    let (key, _) = keygen(&cfg, "k1");
    let (code, jwks, err) = run(Command::new(bin())
        .args(["token", "jwks", "--config"])
        .arg(cfg.path())
        .env("MCPD_TOKEN_KEY", &key));
    assert_eq!(code, 0, "{err}");
    let jwks_file = cfg.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();
    let doc: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(doc["keys"][0]["kty"], "OKP");
    assert_eq!(doc["keys"][0]["kid"], "k1");
    let Some(up) = upstream(&[("JWKS_FILE", jwks_file.to_str().unwrap())]) else {
        return;
    };
    let token = issue(&cfg, &key, "agent:release", &["whoami", "orders.*"], "15m");
    cfg.append("mcpd.yaml", "\naudit:\n  path: audit.jsonl\n");
    let mut c = StdioClient::start(
        cfg.path(),
        &[
            ("VERIFIED_URL", &up.url),
            ("MCPD_TOKEN_KEY", &key),
            ("MCPD_TOKEN", &token),
            ("MCPD_AUDIT_KEY", "forwarding-test-audit-key-0123456789"),
        ],
    );
    let first = c.call("whoami", json!({}));
    let a = check_claims(&up, &first, "agent:release", "whoami orders.*");
    // One assertion per call: a new id each time, never the caller's token.
    let second = c.call("whoami", json!({}));
    let b = check_claims(&up, &second, "agent:release", "whoami orders.*");
    assert_ne!(a, b);
    assert_ne!(
        first["structuredContent"]["claims"]["jti"],
        second["structuredContent"]["claims"]["jti"]
    );
    assert!(seen(&up).iter().all(|s| !s.to_string().contains(&token)));
    // Each call's audit record names the assertion it sent (its id, never the JWT).
    drop(c);
    let audit = cfg.read("audit.jsonl");
    assert!(!audit.contains(&a) && !audit.contains(&b));
    let ids: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| {
            assert_eq!(r["forwarded"]["as"], "assertion", "{r}");
            assert_eq!(r["forwarded"]["audience"], "orders-api", "{r}");
            r["forwarded"]["id"].clone()
        })
        .collect();
    assert_eq!(
        ids,
        [
            first["structuredContent"]["claims"]["jti"].clone(),
            second["structuredContent"]["claims"]["jti"].clone()
        ]
    );
}

#[test]
fn over_http_the_upstream_verifies_assertions_with_the_served_jwks_and_never_sees_the_callers_token()
 {
    let cfg = config(ASSERTION);
    let (key, _) = keygen(&cfg, "k1");
    let Some(up) = upstream(&[]) else {
        return;
    };
    let server = HttpServer::start(
        cfg.path(),
        &[("VERIFIED_URL", &up.url), ("MCPD_TOKEN_KEY", &key)],
        &[],
    );
    // The JWKS is public: no token needed.
    let jwks = request(
        server.authority(),
        "GET",
        "/.well-known/jwks.json",
        &[],
        None,
    );
    assert_eq!(jwks.status, 200, "{jwks:?}");
    let url = format!("http://{}/.well-known/jwks.json", server.authority());
    let set = request(
        up.authority(),
        "POST",
        "/_jwks",
        &[],
        Some(&json!({"url": url}).to_string()),
    );
    assert_eq!(set.status, 200);
    for (subject, scopes) in [
        ("agent:copilot", vec!["whoami"]),
        ("agent:release", vec!["whoami", "flag.set"]),
    ] {
        let token = issue(&cfg, &key, subject, &scopes, "15m");
        let session = open_session(&server, Some(&token));
        let reply = call(&server, Some(&token), &session, "whoami", json!({}), None);
        let result = reply.message()["result"].clone();
        check_claims(&up, &result, subject, &scopes.join(" "));
        assert!(seen(&up).iter().all(|s| !s.to_string().contains(&token)));
    }
}

#[test]
fn an_assertion_in_a_header_of_the_upstreams_choosing_and_bad_settings_are_refused_by_validate() {
    let cfg = config(
        "    identity: assertion\n    assertion: { audience: orders-api, header: X-Actor-Assertion }\n",
    );
    let (key, _) = keygen(&cfg, "k1");
    let (_, jwks, _) = run(Command::new(bin())
        .args(["token", "jwks", "--config"])
        .arg(cfg.path())
        .env("MCPD_TOKEN_KEY", &key));
    let jwks_file = cfg.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks).unwrap();
    let Some(up) = upstream(&[
        ("JWKS_FILE", jwks_file.to_str().unwrap()),
        ("HEADER", "x-actor-assertion"),
    ]) else {
        return;
    };
    let token = issue(&cfg, &key, "agent:copilot", &["whoami"], "15m");
    let mut c = StdioClient::start(
        cfg.path(),
        &[
            ("VERIFIED_URL", &up.url),
            ("MCPD_TOKEN_KEY", &key),
            ("MCPD_TOKEN", &token),
        ],
    );
    let r = c.call("whoami", json!({}));
    assert!(!is_error(&r), "{}", text(&r));
    assert_eq!(r["structuredContent"]["claims"]["sub"], "agent:copilot");
    let last = seen(&up).last().unwrap().clone();
    assert!(last["authorization"].is_null(), "{last}");
    assert!(!last["credential"].as_str().unwrap().starts_with("Bearer "));

    // Settings that cannot work are refused with what to fix.
    for (yaml, says) in [
        (
            "    identity: assertion\n    assertion: { audience: mcpd-demo }\n",
            "is mcpd's own",
        ),
        (
            "    identity: assertion\n    assertion: { ttl: 2h }\n",
            "assertion.ttl must be between 1s and 1h",
        ),
        (
            "    identity: assertion\n    assertion: { header: \"bad header\" }\n",
            "is not an HTTP header name",
        ),
        (
            "    assertion: { audience: x }\n",
            "has 'assertion:' settings but identity is not set",
        ),
        (
            "    identity: token_exchange\n",
            "needs a 'token_exchange:' section",
        ),
    ] {
        let bad = config(yaml);
        let (code, out, err) = crate::util::validate(bad.path());
        assert_ne!(code, 0, "{yaml}");
        assert!(
            format!("{out}{err}").contains(says),
            "{says:?} not in {out}{err}"
        );
    }
}
