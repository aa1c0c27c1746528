//! `identity: token_exchange` against a real authorization server: oidc-provider with
//! the RFC 8693 grant (`tests/sso/provider.mjs`) exchanges mcpd's assertion of the actor
//! for an access token of the upstream's audience; the test upstream verifies that token
//! with the SSO's JWKS. Tokens are cached per subject until shortly before they expire;
//! a refused exchange sends nothing upstream.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{HttpServer, call, open_session};
use crate::identity::{issue, keygen};
use crate::util::{
    ConfigDir, DEADLINE, NodeProgram, StdioClient, bin, is_error, request, run, text,
};

const SECRET: &str = "s3cr3t-sso-client-secret";

const WHOAMI: &str = r#"
name: whoami
description: Who the upstream sees calling.
input: { type: object, additionalProperties: false, properties: { n: { type: integer } } }
request:
  upstream: verified
  method: GET
  path: /whoami
"#;

struct Sso {
    cfg: ConfigDir,
    key: String,
    sso: NodeProgram,
    up: NodeProgram,
}

impl Sso {
    /// mcpd's config, its JWKS given to the SSO, the SSO, and an upstream that trusts
    /// the SSO; `None` when the npm packages are missing (skipped loudly).
    fn start(audience: &str, ttl: u32) -> Option<Self> {
        let cfg = ConfigDir::token_only("\nstate: \"memory:\"\n");
        cfg.edit(
            "mcpd.yaml",
            "upstreams:\n",
            &format!(
                "upstreams:\n  verified:\n    url: \"${{VERIFIED_URL:-http://127.0.0.1:9}}\"\n    \
                 identity: token_exchange\n    token_exchange:\n      \
                 token_url: \"${{SSO_URL:-http://127.0.0.1:9}}/token\"\n      \
                 audience: {audience}\n      scopes: [orders.read, admin]\n      \
                 client_id_env: SSO_CLIENT_ID\n      client_secret_env: SSO_CLIENT_SECRET\n"
            ),
        );
        cfg.write("tools.d/whoami.yaml", WHOAMI);
        let (key, _) = keygen(&cfg, "k1");
        let (code, jwks, err) = run(Command::new(bin())
            .args(["token", "jwks", "--config"])
            .arg(cfg.path())
            .env("MCPD_TOKEN_KEY", &key));
        assert_eq!(code, 0, "{err}");
        let jwks_file = cfg.path().join("jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();
        let ttl = ttl.to_string();
        let sso = NodeProgram::start(
            "provider.mjs",
            &[
                ("MCPD_JWKS_FILE", jwks_file.to_str().unwrap()),
                ("CLIENT_SECRET", SECRET),
                ("AUDIENCES", "orders-api"),
                ("TTL", &ttl),
            ],
        )?;
        let up = NodeProgram::start(
            "upstream.mjs",
            &[
                ("AUDIENCE", "orders-api"),
                ("ISSUER", &sso.url),
                ("ALGORITHMS", "ES256"),
            ],
        )?;
        let jwks = json!({"url": format!("{}/jwks", sso.url)}).to_string();
        assert_eq!(
            request(up.authority(), "POST", "/_jwks", &[], Some(&jwks)).status,
            200
        );
        Some(Self { cfg, key, sso, up })
    }

    fn env<'a>(&'a self, secret: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("VERIFIED_URL", self.up.url.as_str()),
            ("SSO_URL", self.sso.url.as_str()),
            ("MCPD_TOKEN_KEY", self.key.as_str()),
            ("SSO_CLIENT_ID", "mcpd"),
            ("SSO_CLIENT_SECRET", secret),
        ]
    }

    fn exchanges(&self) -> u64 {
        let r = request(self.sso.authority(), "GET", "/_exchanges", &[], None);
        serde_json::from_str::<Value>(&r.body).unwrap()["exchanges"]
            .as_u64()
            .unwrap()
    }

    fn upstream_calls(&self) -> usize {
        let r = request(self.up.authority(), "GET", "/_seen", &[], None);
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    }
}

fn claims_of(result: &Value) -> Value {
    assert!(!is_error(result), "{}", text(result));
    assert_eq!(result["structuredContent"]["verified"], true, "{result}");
    result["structuredContent"]["claims"].clone()
}

#[test]
fn over_stdio_the_upstream_gets_the_ssos_token_for_the_actor_exchanged_once_per_subject() {
    let Some(s) = Sso::start("orders-api", 600) else {
        return;
    };
    let token = issue(&s.cfg, &s.key, "agent:release", &["whoami"], "15m");
    let mut env = s.env(SECRET);
    env.push(("MCPD_TOKEN", &token));
    let mut c = StdioClient::start(s.cfg.path(), &env);
    let first = claims_of(&c.call("whoami", json!({})));
    assert_eq!(first["sub"], "agent:release");
    assert_eq!(first["aud"], "orders-api");
    assert_eq!(first["iss"], s.sso.url.as_str());
    assert_eq!(first["act"]["sub"], "mcpd", "{first}");
    // The SSO grants what this upstream asked for and it allows: not `admin`.
    assert_eq!(first["scope"], "orders.read");
    let exp = first["exp"].as_u64().unwrap();
    assert!(exp > first["iat"].as_u64().unwrap());
    // The same subject again: the cached token, no new exchange.
    let second = claims_of(&c.call("whoami", json!({})));
    assert_eq!(second["jti"], first["jti"]);
    assert_eq!(s.exchanges(), 1);
    let seen = request(s.up.authority(), "GET", "/_seen", &[], None).body;
    assert!(
        !seen.contains(&token),
        "the caller's token reached the upstream"
    );
}

#[test]
fn a_refused_exchange_fails_the_call_with_the_ssos_reason_and_sends_nothing_upstream() {
    let Some(s) = Sso::start("orders-api", 600) else {
        return;
    };
    let token = issue(&s.cfg, &s.key, "agent:release", &["whoami"], "15m");
    // A wrong client secret.
    let mut env = s.env("not-the-secret");
    env.push(("MCPD_TOKEN", &token));
    let mut c = StdioClient::start(s.cfg.path(), &env);
    let r = c.call("whoami", json!({}));
    assert!(is_error(&r), "{r}");
    let msg = text(&r);
    assert!(
        msg.contains(
            "token exchange for upstream 'verified' failed: the SSO answered 401: invalid_client"
        ),
        "{msg}"
    );
    assert!(!msg.contains("not-the-secret"), "{msg}");
    drop(c);
    // An audience the SSO has no resource server for.
    s.cfg.edit(
        "mcpd.yaml",
        "audience: orders-api\n      scopes",
        "audience: billing-api\n      scopes",
    );
    let mut env = s.env(SECRET);
    env.push(("MCPD_TOKEN", &token));
    let mut c = StdioClient::start(s.cfg.path(), &env);
    let msg = text(&c.call("whoami", json!({})));
    assert!(
        msg.contains("the SSO answered 400: invalid_target"),
        "{msg}"
    );
    // A missing client credential is named, not sent.
    drop(c);
    let env: Vec<_> = s
        .env(SECRET)
        .into_iter()
        .filter(|(k, _)| *k != "SSO_CLIENT_SECRET")
        .chain([("MCPD_TOKEN", token.as_str())])
        .collect();
    let mut c = StdioClient::start(s.cfg.path(), &env);
    let msg = text(&c.call("whoami", json!({})));
    assert!(
        msg.contains("mcpd is missing secret 'SSO_CLIENT_SECRET'"),
        "{msg}"
    );
    assert_eq!(s.upstream_calls(), 0);
}

#[test]
fn over_http_each_subject_gets_its_own_token_and_a_token_is_exchanged_again_before_it_expires() {
    // Tokens live 2 s: mcpd exchanges again 1 s before expiry (half the lifetime).
    let Some(s) = Sso::start("orders-api", 2) else {
        return;
    };
    let server = HttpServer::start(s.cfg.path(), &s.env(SECRET), &[]);
    let mut subjects = Vec::new();
    for subject in ["agent:copilot", "agent:release"] {
        let token = issue(&s.cfg, &s.key, subject, &["whoami"], "15m");
        let session = open_session(&server, Some(&token));
        let reply = call(&server, Some(&token), &session, "whoami", json!({}), None);
        let claims = claims_of(&reply.message()["result"]);
        assert_eq!(claims["sub"], subject);
        subjects.push((token, session, claims["jti"].clone()));
    }
    assert_eq!(s.exchanges(), 2);
    // The first subject's token is replaced before it expires: poll until it is, and
    // every token the upstream accepted on the way was unexpired (it verifies exp).
    let (token, session, first_jti) = &subjects[0];
    let end = Instant::now() + DEADLINE;
    for n in 0.. {
        // Other arguments each time: the same call repeated is a runaway loop.
        let reply = call(
            &server,
            Some(token),
            session,
            "whoami",
            json!({"n": n}),
            None,
        );
        let claims = claims_of(&reply.message()["result"]);
        assert_eq!(claims["sub"], "agent:copilot");
        if claims["jti"] != *first_jti {
            break;
        }
        assert!(Instant::now() < end, "the token was never exchanged again");
        std::thread::sleep(Duration::from_millis(200)); // polling, with a deadline
    }
    assert_eq!(s.exchanges(), 3);
}
