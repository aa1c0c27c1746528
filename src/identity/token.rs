//! Identity: short-lived signed tokens for non-human callers, and the scope check.
//!
//! Tokens are JWTs signed with Ed25519 (the algorithm is pinned: a token that names any
//! other is refused, so algorithm confusion cannot happen). mcpd signs with the key in
//! `MCPD_TOKEN_KEY` (`KID:BASE64URL-PKCS8`, from `mcpd token keygen`) and verifies with
//! that key's public half plus the public keys listed in `identity.keys`, chosen by the
//! token's `kid`: rotating is adding the new key, issuing with it, and removing the old
//! one once its tokens have expired. The same keys sign elevation grants (a different
//! audience, so a grant is never accepted as a token).
//!
//! Owns: key handling, issuing, verifying (audience, issuer, expiry on the injected
//! [`Clock`], key id), reading a stdio caller's token from the environment or a file,
//! and the actor a token stands for. It never decides policy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{IdentityError, TokenError};
use super::scope::check_syntax;
use super::{Actor, Source};
use crate::config::Vars;
use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::server::IdentitySpec;
use crate::util::Clock;

/// Where the signing key is read from by default.
pub const DEFAULT_KEY_ENV: &str = "MCPD_TOKEN_KEY";
/// Where a stdio caller's token is read from by default.
pub const DEFAULT_TOKEN_ENV: &str = "MCPD_TOKEN";
/// The issuer tokens name by default.
pub const DEFAULT_ISSUER: &str = "mcpd";
/// The longest token by default.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on `exp` by default (`identity.leeway`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// The most `identity.leeway` may be.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who: `agent:copilot`, `ci:deploy`.
    pub sub: String,
    /// The deployment it is for.
    pub aud: String,
    /// Who issued it.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// Tools it may call: `TOOL[:ENV][@PURPOSE]`, globs allowed (`orders.*`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Why it calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The data region it works in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// What `mcpd token issue` asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Subject.
    pub subject: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Purpose.
    pub purpose: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
}

struct Signer {
    kid: String,
    key: EncodingKey,
    public: String,
}

/// How many verified tokens an identity remembers; past it, it forgets them all and
/// verifies again (only tokens that verified are remembered).
pub const VERIFIED_TOKENS: usize = 4096;

/// The compiled `identity:` section.
pub struct Identity {
    audience: String,
    issuer: String,
    key_env: String,
    signer: Option<Signer>,
    verifiers: HashMap<String, DecodingKey>,
    /// The verification keys' public halves (base64url), by key id: the JWKS.
    publics: std::collections::BTreeMap<String, String>,
    token_env: String,
    token_file: Option<PathBuf>,
    /// The longest token `issue` makes.
    pub max_ttl: Duration,
    /// Seconds a token or grant is still accepted after its `exp` (clock skew).
    leeway_s: u64,
    /// Callers' tokens, their actors and expiries, as verified (tokens are reused for
    /// many calls; the signature is checked once per token, the expiry every call).
    cache: Mutex<HashMap<String, (Arc<Actor>, u64)>>,
    file: Mutex<Option<(SystemTime, String)>>,
    /// What "now" is for expiry and issuing.
    clock: Clock,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("keys", &self.verifiers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A new Ed25519 key: `(KID:PRIVATE for MCPD_TOKEN_KEY, PUBLIC for identity.keys)`.
///
/// # Errors
/// The system random source failed.
pub fn keygen(kid: &str) -> Result<(String, String), IdentityError> {
    use aws_lc_rs::signature::KeyPair as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| IdentityError::Random)?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| IdentityError::Generated)?;
    Ok((
        format!("{kid}:{}", B64.encode(pkcs8.as_ref())),
        B64.encode(pair.public_key().as_ref()),
    ))
}

/// Reads a clock-skew leeway: a duration of at most [`MAX_LEEWAY`].
///
/// # Errors
/// Not a duration, or longer than 5 minutes.
pub fn parse_leeway(text: &str) -> Result<Duration, String> {
    let d = crate::util::duration::parse(text).map_err(|e| e.to_string())?;
    if d > MAX_LEEWAY {
        return Err(format!(
            "'{text}' is more than the 5m a clock can reasonably be off"
        ));
    }
    Ok(d)
}

/// Reads `KID:BASE64URL-PKCS8`.
fn parse_signing_key(env: &str, value: &str) -> Result<Signer, IdentityError> {
    use aws_lc_rs::signature::KeyPair as _;
    let bad = |why: &'static str| IdentityError::SigningKey {
        env: env.to_owned(),
        why,
    };
    let (kid, b64) = value
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("expected KID:KEY"))?;
    if kid.is_empty() {
        return Err(bad("the key id is empty"));
    }
    let der = B64
        .decode(b64)
        .map_err(|_| bad("the key is not base64url"))?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|_| bad("not an Ed25519 PKCS#8 key"))?;
    Ok(Signer {
        kid: kid.to_owned(),
        key: EncodingKey::from_ed_der(&der),
        public: B64.encode(pair.public_key().as_ref()),
    })
}

impl Identity {
    /// Compiles the `identity:` section of mcpd.yaml (`path`), reporting a signing key or
    /// public key that does not parse, or a bad `max_ttl`. A missing signing key is not a
    /// problem here (a verifying deployment needs only public keys, and `mcpd validate`
    /// needs none); it is when a token is issued or verified.
    pub fn compile(
        path: &Path,
        spec: &IdentitySpec,
        vars: &Vars,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::build(spec, vars, dir)
            .map_err(|e| diags.push(Diagnostic::new(path, Pos::default(), e.to_string())))
            .ok()
    }

    fn build(spec: &IdentitySpec, vars: &Vars, dir: &Path) -> Result<Self, IdentityError> {
        let key_env = spec
            .signing_key_env
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_ENV.to_owned());
        let signer = match vars.get(&key_env).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(parse_signing_key(&key_env, &v)?),
            None => None,
        };
        let mut verifiers = HashMap::new();
        let mut publics = std::collections::BTreeMap::new();
        for (kid, public) in &spec.keys {
            publics.insert(kid.clone(), public.trim().to_owned());
            let key = DecodingKey::from_ed_components(public.trim()).map_err(|e| {
                IdentityError::PublicKey {
                    kid: kid.clone(),
                    reason: e.to_string(),
                }
            })?;
            verifiers.insert(kid.clone(), key);
        }
        if let Some(s) = &signer {
            let key =
                DecodingKey::from_ed_components(&s.public).map_err(|e| IdentityError::Derive {
                    env: key_env.clone(),
                    reason: e.to_string(),
                })?;
            verifiers.insert(s.kid.clone(), key);
            publics.insert(s.kid.clone(), s.public.clone());
        }
        let max_ttl = match &spec.max_ttl {
            None => DEFAULT_MAX_TTL,
            Some(t) => crate::util::duration::parse(&t.value).map_err(IdentityError::MaxTtl)?,
        };
        let leeway = match &spec.leeway {
            None => DEFAULT_LEEWAY,
            Some(l) => parse_leeway(&l.value).map_err(IdentityError::Leeway)?,
        };
        Ok(Self {
            leeway_s: leeway.as_secs(),
            audience: spec.audience.clone(),
            issuer: spec
                .issuer
                .clone()
                .unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            key_env,
            signer,
            verifiers,
            publics,
            token_env: spec
                .token_env
                .clone()
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned()),
            token_file: spec.token_file.as_ref().map(|f| dir.join(f)),
            max_ttl,
            cache: Mutex::new(HashMap::new()),
            file: Mutex::new(None),
            clock: Clock::system(),
        })
    }

    /// The same identity on `clock` (tests issue and verify at a time of their choosing).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// What "now" is for this identity's tokens and grants.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The verification keys as a JWKS document (RFC 7517, Ed25519 keys as RFC 8037
    /// `OKP`): what `/.well-known/jwks.json` serves and `mcpd token jwks` prints, so an
    /// upstream can check mcpd's assertions with any JWT library.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .publics
            .iter()
            .map(|(kid, x)| {
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Signs a token.
    ///
    /// # Errors
    /// No signing key, a lifetime over `max_ttl`, an empty subject or scope.
    pub fn issue(&self, req: &TokenRequest) -> Result<String, IdentityError> {
        if req.subject.trim().is_empty() {
            return Err(IdentityError::NoSubject);
        }
        if req.scopes.is_empty() {
            return Err(IdentityError::NoScope);
        }
        for s in &req.scopes {
            check_syntax(s)?;
        }
        if req.ttl.is_zero() || req.ttl > self.max_ttl {
            return Err(IdentityError::Ttl(self.max_ttl.as_secs()));
        }
        let now = self.clock.now_s();
        let claims = Claims {
            sub: req.subject.clone(),
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + req.ttl.as_secs().max(1),
            jti: uuid::Uuid::new_v4().to_string(),
            scopes: req.scopes.clone(),
            purpose: req.purpose.clone(),
            region: req.region.clone(),
        };
        self.sign(&claims, "JWT")
    }

    /// Signs any claims with the signing key (tokens and grants).
    ///
    /// # Errors
    /// No signing key.
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, IdentityError> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| IdentityError::NoSigningKey(self.key_env.clone()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &signer.key)
            .map_err(|e| IdentityError::Sign(e.to_string()))
    }

    /// Checks a token: Ed25519 only, a known key id, the signature, audience, issuer,
    /// expiry.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_as(token, &self.audience)
    }

    /// As [`Identity::verify`], for claims of any shape with the given audience.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<T, TokenError> {
        if let Some(e) = TokenError::unexpanded(token) {
            return Err(e);
        }
        if self.verifiers.is_empty() {
            return Err(TokenError::NoKeys(self.key_env.clone()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "it is signed with {:?}; mcpd accepts EdDSA (Ed25519) only",
                header.alg
            )));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self
            .verifiers
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[audience]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        // Expiry is checked on mcpd's clock, right after the signature, as the library
        // would check it on the system clock: an expired token is reported as expired
        // even when its audience or issuer is wrong too.
        v.validate_exp = false;
        match jsonwebtoken::decode::<T>(token, key, &v) {
            Ok(_) if self.expired(token) => Err(TokenError::Expired(self.expiry_of(token))),
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer if self.expired(token) => {
                    TokenError::Expired(self.expiry_of(token))
                }
                ErrorKind::InvalidAudience => TokenError::WrongAudience {
                    got: unverified_claim(token, "aud"),
                    want: audience.to_owned(),
                },
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer {
                    got: unverified_claim(token, "iss"),
                    want: self.issuer.clone(),
                },
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                    TokenError::Malformed(e.to_string())
                }
                _ => TokenError::Invalid(e.to_string()),
            }),
        }
    }

    /// Whether a token whose signature verified is past its `exp` (and the leeway).
    fn expired(&self, token: &str) -> bool {
        let exp = unverified_claim(token, "exp").parse::<u64>().unwrap_or(0);
        exp.saturating_add(self.leeway_s) < self.clock.now_s()
    }

    fn expiry_of(&self, token: &str) -> String {
        let exp = unverified_claim(token, "exp").parse::<u64>().unwrap_or(0);
        let ago = self.clock.now_s().saturating_sub(exp);
        format!(
            "{} ago",
            crate::util::duration::human(Duration::from_secs(ago))
        )
    }

    /// The actor a stdio caller is: its token (from the environment variable or the token
    /// file) verified, or `None` when it has no token.
    ///
    /// # Errors
    /// A token that does not verify.
    pub fn stdio_actor(&self) -> Result<Option<Arc<Actor>>, TokenError> {
        let Some(token) = self.stdio_token() else {
            return Ok(None);
        };
        self.actor_for(&token).map(Some)
    }

    /// The actor `token` stands for, verifying it once and its expiry every time. The
    /// tokens verified are remembered for this identity (a reload that builds a new one
    /// forgets them, so a removed key takes effect at once), at most
    /// [`VERIFIED_TOKENS`]: the stdio caller's one token, or each HTTP caller's.
    ///
    /// # Errors
    /// A token that does not verify or has expired.
    pub fn actor_for(&self, token: &str) -> Result<Arc<Actor>, TokenError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .map(|(actor, exp)| (Arc::clone(actor), *exp));
        let (actor, exp) = match cached {
            Some(found) => found,
            None => {
                // Verified outside the lock: a signature check takes tens of µs.
                let c = self.verify(token)?;
                let actor = Arc::new(c.actor());
                let mut cache = self
                    .cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= VERIFIED_TOKENS {
                    cache.clear();
                }
                cache.insert(token.to_owned(), (Arc::clone(&actor), c.exp));
                (actor, c.exp)
            }
        };
        if exp.saturating_add(self.leeway_s) < self.clock.now_s() {
            return Err(TokenError::Expired(self.expiry_of(token)));
        }
        Ok(actor)
    }

    /// The stdio caller's token: the token file when configured (read again when it
    /// changes), else the environment variable.
    fn stdio_token(&self) -> Option<String> {
        if let Some(path) = &self.token_file {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
            let mut file = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, token)) = file.as_ref()
                && *at == modified
            {
                return Some(token.clone());
            }
            let token = std::fs::read_to_string(path).ok()?.trim().to_owned();
            *file = Some((modified, token.clone()));
            return (!token.is_empty()).then_some(token);
        }
        std::env::var(&self.token_env)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// The variable (or file) a stdio caller's token comes from, for messages.
    pub fn token_source(&self) -> String {
        self.token_file.as_ref().map_or_else(
            || self.token_env.clone(),
            |f| format!("the token file {}", f.display()),
        )
    }
}

impl Claims {
    /// The actor these (verified) claims stand for.
    pub fn actor(&self) -> Actor {
        Actor::new(
            self.sub.clone(),
            self.scopes.clone(),
            self.purpose.clone(),
            self.region.clone(),
            Source::Token,
            Map::from_iter([
                ("token_id".to_owned(), json!(self.jti)),
                ("expires".to_owned(), json!(self.exp)),
            ]),
        )
    }
}

/// A claim read without verifying the signature: for error messages, or for `exp` once
/// the signature has been verified.
fn unverified_claim(token: &str, name: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get(name).cloned())
        .map(|v| match v {
            Value::String(s) => s,
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
