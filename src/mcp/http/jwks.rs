//! Tokens from an external issuer (an SSO), verified with the keys it publishes (JWKS).
//!
//! Owns fetching the key set (at start, and again when a token names an unknown key id,
//! at most every [`REFRESH_EVERY`]), verifying signature, issuer, audience and expiry
//! with an asymmetric algorithm only (an `HS*` token is refused, so a public key can
//! never be used as an HMAC secret), and turning the claims into the actor policy sees.
//! It must not decide what the actor may do: the scope check and policy do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::config::server::JwksSpec;
use crate::identity::{Actor, Source};

/// The shortest time between two fetches of the key set.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Algorithms accepted: asymmetric only.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why the issuer's keys cannot be used, or why a token from it is refused. The refusal
/// messages end up in the 401's `error_description`, after "the bearer token is not
/// accepted: ". A message includes its cause: it is printed as is (`{}`), not with its
/// sources.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwksError {
    /// The HTTP client for the key set cannot be built.
    #[error(transparent)]
    Client(reqwest::Error),
    /// `http.jwks.leeway` is not a duration, or too long.
    #[error("http.jwks.leeway: {0}")]
    Leeway(String),
    /// The key set cannot be fetched.
    #[error("fetching {url} failed: {source}")]
    Fetch {
        /// The key set's URL.
        url: String,
        /// Why the request failed.
        source: reqwest::Error,
    },
    /// The key set's URL answers with something that is not a key set.
    #[error("{url} is not a JWKS document: {source}")]
    NotJwks {
        /// The key set's URL.
        url: String,
        /// Why the body does not parse.
        source: reqwest::Error,
    },
    /// The token is not a JWT.
    #[error("the token is not a JWT ({0})")]
    NotJwt(#[source] jsonwebtoken::errors::Error),
    /// The token is signed with an algorithm that is not asymmetric.
    #[error("it is signed with {alg:?}; tokens from {issuer} must use an asymmetric algorithm")]
    SymmetricAlgorithm {
        /// The token's algorithm.
        alg: Algorithm,
        /// The issuer it claims.
        issuer: String,
    },
    /// The token's header has no `kid`.
    #[error("the token names no key id (kid)")]
    NoKeyId,
    /// The token's key id is not among the issuer's keys, even after a fetch.
    #[error("key id '{kid}' is not in {issuer}'s published keys")]
    UnknownKeyId {
        /// The key id the token names.
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// The signature, issuer, audience or expiry does not check out.
    #[error(transparent)]
    Invalid(jsonwebtoken::errors::Error),
}

/// An external issuer and its cached keys.
pub(crate) struct Jwks {
    spec: JwksSpec,
    client: reqwest::Client,
    keys: tokio::sync::RwLock<HashMap<String, DecodingKey>>,
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (`http.jwks.leeway`).
    leeway_s: u64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.spec.url)
            .field("issuer", &self.spec.issuer)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// Sets up the issuer and fetches its keys once; a failed first fetch is logged
    /// (mcpd's own tokens keep working) and retried when a token needs the keys.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(crate) async fn new(spec: JwksSpec) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(JwksError::Client)?;
        let leeway = match &spec.leeway {
            None => crate::identity::token::DEFAULT_LEEWAY,
            Some(l) => crate::identity::token::parse_leeway(l).map_err(JwksError::Leeway)?,
        };
        let jwks = Self {
            leeway_s: leeway.as_secs(),
            spec,
            client,
            keys: tokio::sync::RwLock::default(),
            fetched: tokio::sync::Mutex::default(),
        };
        match jwks.refresh().await {
            Ok(n) => tracing::info!(url = %jwks.spec.url, keys = n, "external issuer keys loaded"),
            Err(e) => {
                tracing::warn!(url = %jwks.spec.url, error = %e, "cannot load the external issuer's keys yet; retrying when a token needs them")
            }
        }
        Ok(jwks)
    }

    /// The issuer whose tokens this verifies.
    pub(crate) fn issuer(&self) -> &str {
        &self.spec.issuer
    }

    /// Fetches the key set now, unless it was fetched within [`REFRESH_EVERY`].
    async fn refresh(&self) -> Result<usize, JwksError> {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
            return Ok(self.keys.read().await.len());
        }
        *fetched = Some(Instant::now());
        let set: JwkSet = self
            .client
            .get(&self.spec.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| JwksError::Fetch {
                url: self.spec.url.clone(),
                source,
            })?
            .json()
            .await
            .map_err(|source| JwksError::NotJwks {
                url: self.spec.url.clone(),
                source,
            })?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(e) => tracing::warn!(kid, error = %e, "skipping a JWKS key mcpd cannot use"),
            }
        }
        let n = keys.len();
        *self.keys.write().await = keys;
        Ok(n)
    }

    /// Verifies `token` and returns the actor it stands for.
    ///
    /// # Errors
    /// Why the token is refused.
    pub(crate) async fn verify(&self, token: &str) -> Result<Arc<Actor>, JwksError> {
        let header = jsonwebtoken::decode_header(token).map_err(JwksError::NotJwt)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(JwksError::SymmetricAlgorithm {
                alg: header.alg,
                issuer: self.spec.issuer.clone(),
            });
        }
        let kid = header.kid.ok_or(JwksError::NoKeyId)?;
        let mut key = self.keys.read().await.get(&kid).cloned();
        if key.is_none() {
            // A rotated key: fetch the set again (rate-limited) before refusing.
            self.refresh().await?;
            key = self.keys.read().await.get(&kid).cloned();
        }
        let Some(key) = key else {
            return Err(JwksError::UnknownKeyId {
                kid,
                issuer: self.spec.issuer.clone(),
            });
        };
        let mut v = Validation::new(header.alg);
        v.set_audience(&[&self.spec.audience]);
        v.set_issuer(&[&self.spec.issuer]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        v.leeway = self.leeway_s;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &v)
            .map_err(JwksError::Invalid)?
            .claims;
        Ok(Arc::new(self.actor(&claims)))
    }

    /// The actor verified `claims` stand for.
    fn actor(&self, claims: &Value) -> Actor {
        let name = self.spec.scopes_claim.as_deref().unwrap_or("scope");
        let scopes: Vec<String> = match claims.get(name) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let text = |field: &str| claims.get(field).and_then(Value::as_str).map(str::to_owned);
        let subject = match claims.get("sub") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Actor::new(
            subject,
            scopes,
            text("purpose"),
            text("region"),
            Source::Jwks,
            serde_json::Map::from_iter([
                ("issuer".to_owned(), json!(self.spec.issuer)),
                (
                    "expires".to_owned(),
                    claims.get("exp").cloned().unwrap_or(Value::Null),
                ),
            ]),
        )
    }
}

/// The `iss` of a token, read without verifying: only to choose who verifies it.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JwksSpec {
        JwksSpec {
            url: "http://127.0.0.1:1/jwks.json".into(),
            issuer: "https://sso.test/".into(),
            audience: "mcpd".into(),
            scopes_claim: None,
            leeway: None,
        }
    }

    #[tokio::test]
    async fn an_hmac_token_is_refused_whatever_its_key_id() {
        let jwks = Jwks::new(spec()).await.unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("k".into());
        let token = jsonwebtoken::encode(
            &header,
            &json!({"sub": "x", "iss": "https://sso.test/", "aud": "mcpd", "exp": u64::MAX / 2}),
            &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        let err = jwks.verify(&token).await.unwrap_err().to_string();
        assert!(err.contains("asymmetric"), "{err}");
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("https://sso.test/")
        );
    }

    /// A token with this header; only the header is ever read.
    fn unsigned(header: &Value) -> String {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(header), b64(&json!({"sub": "x"})))
    }

    #[tokio::test]
    async fn a_refused_token_says_why() {
        let jwks = Jwks::new(spec()).await.unwrap();
        let err = jwks.verify("not a token").await.unwrap_err();
        assert!(matches!(err, JwksError::NotJwt(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("the token is not a JWT ("),
            "{err}"
        );
        let err = jwks
            .verify(&unsigned(&json!({"alg": "RS256", "typ": "JWT"})))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the token names no key id (kid)");
        let err = jwks
            .verify(&unsigned(&json!({"alg": "RS256", "kid": "k9"})))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key id 'k9' is not in https://sso.test/'s published keys"
        );
        let err = jwks
            .verify(&unsigned(&json!({"alg": "HS256", "kid": "k9"})))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is signed with HS256; tokens from https://sso.test/ must use an asymmetric algorithm"
        );
    }

    #[tokio::test]
    async fn scopes_come_from_a_string_or_an_array_claim() {
        let mut s = spec();
        let jwks = Jwks::new(s.clone()).await.unwrap();
        let actor = jwks.actor(&json!({"sub": "u", "scope": "orders.export flag.set:staging"}));
        assert_eq!(
            actor.facts()["scopes"],
            json!(["orders.export", "flag.set:staging"])
        );
        s.scopes_claim = Some("scp".into());
        let jwks = Jwks::new(s).await.unwrap();
        let actor = jwks.actor(&json!({"sub": "u", "scp": ["orders.*"]}));
        assert_eq!(actor.facts()["scopes"], json!(["orders.*"]));
        assert_eq!(actor.facts()["source"], "jwks");
    }
}
