//! Token exchange (RFC 8693): a token the SSO issues for one upstream, in exchange for
//! an assertion of the actor that mcpd signs (the SSO trusts mcpd's JWKS for it).
//!
//! Owns the `token_exchange:` settings of one upstream, the exchange request (mcpd
//! authenticates as a confidential client with HTTP Basic), and the tokens it got,
//! cached per subject until shortly before they expire. It never forwards the caller's
//! own token (mcpd does not keep it) and never logs a token or the client secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::forward::{Assertion, CallInfo, ForwardError, Header};
use super::{Actor, Identity};
use crate::config::Vars;
use crate::config::diag::Pos;
use crate::config::server::TokenExchangeSpec;

/// The grant type of RFC 8693.
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The subject token is a JWT (mcpd's assertion of the actor).
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// What mcpd asks for.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// How long the assertion sent as the subject token is valid.
const SUBJECT_TTL: Duration = Duration::from_secs(60);
/// A token is exchanged again this long before it expires (or at half its life, when
/// that is sooner), so none is sent that expires on the way.
const REFRESH_BEFORE_S: u64 = 30;
/// The time allowed for an exchange.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A cached token: its value, when it expires and when it is exchanged again.
#[derive(Debug, Clone)]
struct Cached {
    token: String,
    refresh_at: u64,
}

/// `identity: token_exchange` for one upstream.
pub struct Exchange {
    upstream: String,
    token_url: Url,
    audience: String,
    scope: String,
    client: Result<(String, String), ForwardError>,
    header: Header,
    http: reqwest::Client,
    /// Tokens by subject.
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("upstream", &self.upstream)
            .field("token_url", &self.token_url.as_str())
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The SSO's answer (RFC 8693 section 2.2).
#[derive(Deserialize)]
struct Issued {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The SSO's refusal (RFC 6749 section 5.2).
#[derive(Deserialize)]
struct Refused {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Exchange {
    /// Compiles one upstream's `token_exchange:` section. A client credential that is not
    /// set is reported when a call needs it, as a tool's missing secret is.
    pub(crate) fn compile(
        upstream: &str,
        spec: &TokenExchangeSpec,
        vars: &Vars,
    ) -> Result<Self, (Pos, String)> {
        let url = &spec.token_url;
        let token_url = match Url::parse(&url.value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                return Err((
                    url.pos,
                    format!(
                        "token_exchange.token_url '{}' is not an http(s) URL",
                        url.value
                    ),
                ));
            }
        };
        if spec.audience.trim().is_empty() {
            return Err((url.pos, "token_exchange.audience is empty".to_owned()));
        }
        let header = Header::compile(spec.header.as_ref())
            .map_err(|(p, m)| (p, format!("token_exchange.header: {m}")))?;
        let read = |name: &str| {
            vars.secret(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ForwardError::MissingSecret(name.to_owned()))
        };
        let client = read(&spec.client_id_env).and_then(|id| {
            let secret = read(&spec.client_secret_env)?;
            crate::redact::register_secret(&spec.client_secret_env, &secret);
            Ok((id, secret))
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| (url.pos, format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            upstream: upstream.to_owned(),
            token_url,
            audience: spec.audience.clone(),
            scope: spec.scopes.join(" "),
            client,
            header,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The header with the actor's token for this upstream: the cached one while it is
    /// fresh, else a new exchange.
    pub(crate) async fn header(
        &self,
        identity: &Identity,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<((String, String), serde_json::Value), ForwardError> {
        let record = serde_json::json!({
            "as": "token_exchange", "audience": self.audience, "ticket": call.ticket,
        });
        self.token(identity, actor, call)
            .await
            .map(|t| (self.header.with(&t), record))
    }

    /// The actor's token: the cached one while it is fresh, else a new exchange.
    async fn token(
        &self,
        identity: &Identity,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<String, ForwardError> {
        let now = identity.clock().now_s();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&actor.subject)
            .filter(|c| now < c.refresh_at)
            .map(|c| c.token.clone());
        if let Some(token) = cached {
            return Ok(token);
        }
        let (token, expires_in) = self.exchange(identity, actor, call).await?;
        let margin = REFRESH_BEFORE_S.min(expires_in / 2);
        let refresh_at = now + expires_in.saturating_sub(margin);
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                actor.subject.clone(),
                Cached {
                    token: token.clone(),
                    refresh_at,
                },
            );
        Ok(token)
    }

    /// One exchange: the actor's assertion (audience: the token endpoint) for a token
    /// of the upstream's audience and scopes. Returns it and its lifetime in seconds.
    async fn exchange(
        &self,
        identity: &Identity,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<(String, u64), ForwardError> {
        let (client_id, secret) = self.client.as_ref().map_err(|e| match e {
            ForwardError::MissingSecret(n) => ForwardError::MissingSecret(n.clone()),
            other => self.failed(other.to_string()),
        })?;
        let subject = Assertion::mint(identity, self.token_url.as_str(), SUBJECT_TTL, actor, call)
            .map_err(|source| ForwardError::Sign {
                upstream: self.upstream.clone(),
                source,
            })?;
        let mut form = vec![
            ("grant_type", GRANT),
            ("subject_token", subject.as_str()),
            ("subject_token_type", JWT_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", self.audience.as_str()),
        ];
        if !self.scope.is_empty() {
            form.push(("scope", self.scope.as_str()));
        }
        let reply = self
            .http
            .post(self.token_url.clone())
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| self.failed(e.without_url().to_string()))?;
        let status = reply.status();
        let body = reply
            .bytes()
            .await
            .map_err(|e| self.failed(e.without_url().to_string()))?;
        if !status.is_success() {
            let reason = match serde_json::from_slice::<Refused>(&body) {
                Ok(r) => format!(
                    "the SSO answered {}: {}{}",
                    status.as_u16(),
                    r.error,
                    r.error_description
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
                Err(_) => format!("the SSO answered {}", status.as_u16()),
            };
            return Err(self.failed(reason));
        }
        let issued: Issued = serde_json::from_slice(&body)
            .map_err(|e| self.failed(format!("the SSO's answer is not a token response: {e}")))?;
        // Without expires_in, the token is used for one minute.
        Ok((issued.access_token, issued.expires_in.unwrap_or(60)))
    }

    fn failed(&self, reason: String) -> ForwardError {
        ForwardError::Exchange {
            upstream: self.upstream.clone(),
            reason,
        }
    }
}
