//! Bearer authentication on `/mcp`, as the MCP authorization spec asks of a resource
//! server.
//!
//! Owns: reading `Authorization: Bearer`, verifying the token with the catalog's
//! `identity` (so a reload of keys applies at once) or, for an external issuer's token,
//! its JWKS ([`super::jwks`]), and the 401 saying how to get a token. Where an
//! authorization server is known (`http.authorization_servers`, else the `http.jwks`
//! issuer) the 401's `WWW-Authenticate` points at the RFC 9728 protected-resource
//! metadata that names it; where none is, neither is advertised (the spec requires at
//! least one, and a host would start a sign-in with nowhere to go). The verified actor
//! goes to the handler in the request's extensions; the `Authorization` header is
//! removed before rmcp sees the request, so the token can never reach an upstream. It
//! must not decide what the actor may do: the engine checks scopes (a miss is a tool
//! result with the reason, on every transport) and runs the rules.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{HttpError, HttpOptions, MCP_PATH};
use crate::engine::Engine;

/// The RFC 9728 well-known path.
pub(crate) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The authentication settings and what verifies tokens.
#[derive(Clone)]
pub(crate) struct Auth {
    engine: Arc<Engine>,
    jwks: Option<Arc<super::jwks::Jwks>>,
    required: bool,
    resource_url: Option<String>,
    authorization_servers: Vec<String>,
    max_body_bytes: usize,
}

impl Auth {
    /// Checks that tokens can be verified when auth is on; warns loudly when it is off.
    ///
    /// # Errors
    /// [`HttpError::NoVerifier`]: auth is on and `mcpd.yaml` has neither `identity:` nor
    /// `http.jwks`.
    pub(crate) fn new(
        engine: &Arc<Engine>,
        opts: &HttpOptions,
        jwks: Option<Arc<super::jwks::Jwks>>,
    ) -> Result<Self, HttpError> {
        if opts.auth && engine.catalog().identity.is_none() && jwks.is_none() {
            return Err(HttpError::NoVerifier);
        }
        if !opts.auth {
            tracing::warn!(
                addr = %opts.addr,
                "AUTHENTICATION IS OFF (--no-auth / http.auth: false): anyone who can reach this \
                 address calls tools as default_actor; use this on a developer machine only"
            );
        }
        // The SSO that issues the tokens mcpd accepts is where a host signs in.
        let mut authorization_servers = opts.authorization_servers.clone();
        if let (true, Some(j)) = (authorization_servers.is_empty(), &jwks) {
            authorization_servers.push(j.issuer().to_owned());
        }
        Ok(Self {
            engine: Arc::clone(engine),
            jwks,
            required: opts.auth,
            resource_url: opts.resource_url.clone(),
            authorization_servers,
            max_body_bytes: opts.max_body_bytes,
        })
    }

    /// How a caller gets a token here: the SSO's sign-in where there is one, else an
    /// operator.
    fn how_to_get_a_token(&self, headers: &HeaderMap) -> String {
        const OPERATOR: &str = "ask an operator of this mcpd for a token ('mcpd token issue \
                                --subject YOU --scope TOOL' makes one) and have your host send \
                                it as 'Authorization: Bearer TOKEN'";
        if self.authorization_servers.is_empty() {
            format!("This server has no OAuth sign-in: {OPERATOR}")
        } else {
            format!(
                "Sign in with {} (a host that supports MCP authorization does this itself, \
                 from {}), or {OPERATOR}",
                self.authorization_servers.join(", "),
                self.metadata_url(headers)
            )
        }
    }

    /// The MCP endpoint's URL as clients know it.
    fn resource(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.resource_url {
            return url.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}{MCP_PATH}")
    }

    /// Where the metadata for `resource` lives: the well-known path inserted before the
    /// resource's path (RFC 9728 section 3.1).
    fn metadata_url(&self, headers: &HeaderMap) -> String {
        metadata_url_for(&self.resource(headers))
    }
}

fn metadata_url_for(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("http", resource));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    format!("{scheme}://{authority}{METADATA_PATH}{path}")
}

/// Verifies the bearer token of every `/mcp` request: the request to pass on (the token
/// taken out of it, its actor in its extensions, a POST's body read within the limit), or
/// the refusal to answer with.
pub(crate) async fn admit(auth: &Auth, req: Request) -> Result<Request, Response> {
    let mut req = req;
    // The token is mcpd's alone: nothing after this point sees it.
    let token = req
        .headers_mut()
        .remove(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok().map(str::to_owned));
    if !auth.required {
        return Ok(req);
    }
    let token = token.as_deref().and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(unauthorized(
            auth,
            req.headers(),
            None,
            "this endpoint needs 'Authorization: Bearer TOKEN'",
        ));
    };
    if let Some(e) = crate::identity::TokenError::unexpanded(token) {
        let msg = format!("the bearer token is not accepted: {e}");
        return Err(unauthorized(
            auth,
            req.headers(),
            Some("invalid_token"),
            &msg,
        ));
    }
    let catalog = auth.engine.catalog();
    // The token's issuer picks the verifier: the external one's JWKS, else mcpd's keys.
    let external = auth
        .jwks
        .as_ref()
        .filter(|j| super::jwks::unverified_issuer(token).as_deref() == Some(j.issuer()));
    let verified = match (external, &catalog.identity) {
        (Some(jwks), _) => jwks.verify(token).await.map_err(|e| e.to_string()),
        (None, Some(identity)) => identity.actor_for(token).map_err(|e| e.to_string()),
        (None, None) => Err(match &auth.jwks {
            Some(j) => format!("only tokens issued by {} are accepted", j.issuer()),
            None => "this mcpd has no identity: section to verify tokens with".to_owned(),
        }),
    };
    let actor = match verified {
        Ok(actor) => actor,
        Err(why) => {
            let msg = format!("the bearer token is not accepted: {why}");
            return Err(unauthorized(
                auth,
                req.headers(),
                Some("invalid_token"),
                &msg,
            ));
        }
    };
    if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, auth.max_body_bytes).await else {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is over the limit of {} bytes (http.max_body_bytes)\n",
                    auth.max_body_bytes
                ),
            )
                .into_response());
        };
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(actor);
    Ok(req)
}

/// A quoted-string for `WWW-Authenticate` (RFC 9110): no quotes or backslashes inside.
fn quoted(s: &str) -> String {
    s.chars()
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

fn challenge(params: &str) -> HeaderValue {
    HeaderValue::from_str(params)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

fn unauthorized(auth: &Auth, headers: &HeaderMap, error: Option<&str>, msg: &str) -> Response {
    let description = format!("{msg}. {}", auth.how_to_get_a_token(headers));
    // Without an authorization server, no metadata: a host would start a sign-in with
    // nowhere to go. A request without a token gets no error code (RFC 6750 3.1).
    let pointer = if auth.authorization_servers.is_empty() {
        "realm=\"mcpd\"".to_owned()
    } else {
        format!("resource_metadata=\"{}\"", auth.metadata_url(headers))
    };
    let value = match error {
        Some(e) => format!(
            "Bearer error=\"{e}\", error_description=\"{}\", {pointer}",
            quoted(&description)
        ),
        None => format!("Bearer {pointer}"),
    };
    tracing::info!(reason = msg, "http request refused: 401");
    let body =
        json!({ "error": error.unwrap_or("invalid_request"), "error_description": description });
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge(&value))],
        axum::Json(body),
    )
        .into_response()
}

/// The protected-resource metadata, at the well-known path and with `/mcp` appended.
pub(crate) fn metadata_routes(auth: Auth) -> Router {
    Router::new()
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}{MCP_PATH}"), get(metadata))
        .with_state(auth)
}

async fn metadata(State(auth): State<Auth>, headers: HeaderMap) -> Response {
    if auth.authorization_servers.is_empty() {
        let why = format!(
            "this mcpd names no OAuth authorization server (http.authorization_servers or \
             http.jwks in mcpd.yaml), so there is no sign-in to discover. {}",
            auth.how_to_get_a_token(&headers)
        );
        let body = json!({ "error": "not_found", "error_description": why });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let catalog = auth.engine.catalog();
    let mut scopes: Vec<&str> = catalog.tools.iter().map(|t| t.id.as_str()).collect();
    scopes.sort_unstable();
    axum::Json(json!({
        "resource": auth.resource(&headers),
        "authorization_servers": auth.authorization_servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_name": "mcpd",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_path_before_the_resource_path() {
        assert_eq!(
            metadata_url_for("https://mcpd.example.com/mcp"),
            "https://mcpd.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url_for("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn quoted_strings_lose_their_quotes() {
        assert_eq!(quoted(r#"lacks "x" \ y"#), "lacks 'x' ' y");
    }
}
