//! `serve --http` as clients meet its edges (issue 15, items 2 to 4 and 6): the official
//! Python SDK reads a scope miss as a tool result, closes its session without a warning,
//! and finds OAuth metadata only where there is an authorization server to sign in with;
//! raw HTTP checks the exact 401s and the DELETE statuses.

use serde_json::{Value, json};

use crate::http::{HttpServer, Keys, open_session, rpc, token_only};
use crate::util::{ConfigDir, DemoApi, request};

/// Runs tests/clients/http_auth_edges.py against `serve --http` on `cfg`; `sso` is the
/// authorization server `cfg` names ("" for none).
fn python_sdk_meets_the_edges(cfg: &ConfigDir, sso: &str) {
    let api = DemoApi::start();
    let keys = Keys::new(cfg);
    let token = keys.token(cfg, "agent:reader", &["orders.export", "flag.set:staging"]);
    let server = HttpServer::start(
        cfg.path(),
        &[("DEMO_API_URL", &api.url), ("MCPD_TOKEN_KEY", &keys.key)],
        &[],
    );
    let mut client = crate::python_client::client("http_auth_edges.py");
    client
        .env("MCPD_URL", server.mcp_url())
        .env("MCPD_TOKEN", &token)
        .env("MCPD_SSO", sso)
        .env("DEMO_API_URL", &api.url);
    crate::python_client::assert_passes(&mut client, "http auth edges", &|| server.stderr());
}

#[test]
fn python_sdk_gets_scope_misses_as_results_closes_cleanly_and_is_told_how_to_get_a_token() {
    python_sdk_meets_the_edges(&token_only(), "");
}

#[test]
fn python_sdk_discovers_the_sso_where_one_is_configured() {
    let cfg = token_only();
    cfg.append(
        "mcpd.yaml",
        "\nhttp:\n  authorization_servers: [https://sso.example.com]\n",
    );
    python_sdk_meets_the_edges(&cfg, "https://sso.example.com");
}

#[test]
fn without_an_authorization_server_the_401_advertises_no_metadata_and_says_how_to_get_a_token() {
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let server = HttpServer::start(cfg.path(), &[("MCPD_TOKEN_KEY", &keys.key)], &[]);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}});

    let reply = rpc(&server, None, None, &init);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"mcpd\"")
    );
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    let described = body["error_description"].as_str().unwrap();
    assert!(
        described.starts_with("this endpoint needs 'Authorization: Bearer TOKEN'. This server has no OAuth sign-in: ask an operator of this mcpd for a token ('mcpd token issue"),
        "{described}"
    );

    // An expired or bad token: the reason, and the same way to a new one.
    let reply = rpc(&server, Some("not.a.token"), None, &init);
    let challenge = reply.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with(
            "Bearer error=\"invalid_token\", error_description=\"the bearer token is not accepted: "
        ) && challenge.contains("no OAuth sign-in")
            && challenge.ends_with("realm=\"mcpd\"")
            && !challenge.contains("resource_metadata"),
        "{challenge}"
    );

    // Nothing to discover: the well-known documents are 404, saying why.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let doc = request(server.authority(), "GET", path, &[], None);
        assert_eq!(doc.status, 404, "{path}: {doc:?}");
        assert!(
            doc.body.contains("names no OAuth authorization server"),
            "{}",
            doc.body
        );
    }
}

#[test]
fn delete_of_an_unknown_session_is_404_and_of_a_live_one_204() {
    let cfg = token_only();
    let keys = Keys::new(&cfg);
    let token = keys.token(&cfg, "agent:t", &["*"]);
    let server = HttpServer::start(cfg.path(), &[("MCPD_TOKEN_KEY", &keys.key)], &[]);
    let session = open_session(&server, Some(&token));
    let bearer = format!("Bearer {token}");
    let delete = |id: &str| {
        request(
            server.authority(),
            "DELETE",
            "/mcp",
            &[("Authorization", &bearer), ("Mcp-Session-Id", id)],
            None,
        )
    };
    assert_eq!(delete("never-was").status, 404);
    assert_eq!(delete(&session).status, 204);
    let again = delete(&session);
    assert_eq!(again.status, 404, "{again:?}");
    assert!(again.body.contains("no session"), "{}", again.body);
    // The closed session is gone for every request, not only DELETE.
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    assert_eq!(
        rpc(&server, Some(&token), Some(&session), &list).status,
        404
    );
}
