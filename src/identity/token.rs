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
//! Owns: key handling, issuing, verifying (audience, issuer, expiry, key id), reading a
//! stdio caller's token from the environment or a file, the actor a token stands for,
//! and the scope check. It never decides policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Vars;
use crate::config::server::IdentitySpec;
use crate::util::glob;

/// Where the signing key is read from by default.
pub const DEFAULT_KEY_ENV: &str = "MCPD_TOKEN_KEY";
/// Where a stdio caller's token is read from by default.
pub const DEFAULT_TOKEN_ENV: &str = "MCPD_TOKEN";
/// The issuer tokens name by default.
pub const DEFAULT_ISSUER: &str = "mcpd";
/// The longest token by default.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 5;

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

/// Why a token was refused. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token where one was expected, and no default actor.
    #[error(
        "no token: set {0} in the host's config for this server to a token from 'mcpd token issue' (or configure a default_actor for local use)"
    )]
    Missing(String),
    /// Not a JWT at all.
    #[error("the token is malformed ({0}); issue a new one with 'mcpd token issue'")]
    Malformed(String),
    /// Signed with a key this mcpd does not know.
    #[error(
        "the token was signed with key '{0}', which this mcpd does not trust; issue a new token, or add the key's public half to identity.keys"
    )]
    UnknownKey(String),
    /// The signature does not match: tampered, or another key with the same id.
    #[error(
        "the token's signature is invalid (tampered, or signed with another key); issue a new one"
    )]
    BadSignature,
    /// Past its expiry.
    #[error(
        "the token expired {0}; issue a new one with 'mcpd token issue' and update the host's config"
    )]
    Expired(String),
    /// For another deployment.
    #[error("the token is for audience '{got}', not this mcpd ('{want}'); issue one for '{want}'")]
    WrongAudience {
        /// The token's.
        got: String,
        /// Ours.
        want: String,
    },
    /// From another issuer.
    #[error("the token was issued by '{got}', not '{want}'")]
    WrongIssuer {
        /// The token's.
        got: String,
        /// Ours.
        want: String,
    },
    /// Not valid yet, or any other claim problem.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// This mcpd has no verification key.
    #[error(
        "this mcpd cannot verify tokens: it has no key (set {0} from 'mcpd token keygen', or list public keys in identity.keys)"
    )]
    NoKeys(String),
}

struct Signer {
    kid: String,
    key: EncodingKey,
    public: String,
}

/// The compiled `identity:` section.
pub struct Identity {
    audience: String,
    issuer: String,
    key_env: String,
    signer: Option<Signer>,
    verifiers: HashMap<String, DecodingKey>,
    token_env: String,
    token_file: Option<PathBuf>,
    /// The longest token `issue` makes.
    pub max_ttl: Duration,
    /// The caller's token and its claims, as last read and verified (tokens are reused
    /// for many calls; the signature is checked once per token, the expiry every call).
    cache: Mutex<Option<(String, Claims)>>,
    file: Mutex<Option<(SystemTime, String)>>,
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
pub fn keygen(kid: &str) -> Result<(String, String), String> {
    use aws_lc_rs::signature::KeyPair as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| "cannot generate a key: the system random source failed".to_owned())?;
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| "cannot read the generated key".to_owned())?;
    Ok((
        format!("{kid}:{}", B64.encode(pkcs8.as_ref())),
        B64.encode(pair.public_key().as_ref()),
    ))
}

/// Reads `KID:BASE64URL-PKCS8`.
fn parse_signing_key(env: &str, value: &str) -> Result<Signer, String> {
    use aws_lc_rs::signature::KeyPair as _;
    let bad = |why: &str| {
        format!("{env} is not a signing key ({why}); make one with 'mcpd token keygen'")
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
    /// Compiles the section. A missing signing key is not an error here (a verifying
    /// deployment needs only public keys, and `mcpd validate` needs none); it is when a
    /// token is issued or verified.
    ///
    /// # Errors
    /// A signing key or public key that does not parse, or a bad `max_ttl`.
    pub fn compile(
        spec: &IdentitySpec,
        vars: &Vars,
        dir: &std::path::Path,
    ) -> Result<Self, String> {
        let key_env = spec
            .signing_key_env
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_ENV.to_owned());
        let signer = match vars.get(&key_env).filter(|v| !v.trim().is_empty()) {
            Some(v) => Some(parse_signing_key(&key_env, &v)?),
            None => None,
        };
        let mut verifiers = HashMap::new();
        for (kid, public) in &spec.keys {
            let key = DecodingKey::from_ed_components(public.trim()).map_err(|e| {
                format!("identity.keys.{kid}: not an Ed25519 public key in base64url ({e})")
            })?;
            verifiers.insert(kid.clone(), key);
        }
        if let Some(s) = &signer {
            let key = DecodingKey::from_ed_components(&s.public)
                .map_err(|e| format!("{key_env}: cannot derive its public key ({e})"))?;
            verifiers.insert(s.kid.clone(), key);
        }
        let max_ttl = match &spec.max_ttl {
            None => DEFAULT_MAX_TTL,
            Some(t) => crate::util::duration::parse(&t.value)
                .map_err(|e| format!("identity.max_ttl: {e}"))?,
        };
        Ok(Self {
            audience: spec.audience.clone(),
            issuer: spec
                .issuer
                .clone()
                .unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            key_env,
            signer,
            verifiers,
            token_env: spec
                .token_env
                .clone()
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned()),
            token_file: spec.token_file.as_ref().map(|f| dir.join(f)),
            max_ttl,
            cache: Mutex::new(None),
            file: Mutex::new(None),
        })
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs a token.
    ///
    /// # Errors
    /// No signing key, a lifetime over `max_ttl`, an empty subject or scope.
    pub fn issue(&self, req: &TokenRequest) -> Result<String, String> {
        if req.subject.trim().is_empty() {
            return Err("--subject is required, e.g. agent:copilot".into());
        }
        if req.scopes.is_empty() {
            return Err("give at least one --scope (a tool id, TOOL:ENV or TOOL@PURPOSE)".into());
        }
        for s in &req.scopes {
            check_scope_syntax(s)?;
        }
        if req.ttl.is_zero() || req.ttl > self.max_ttl {
            return Err(format!(
                "--ttl must be between 1s and identity.max_ttl ({}s)",
                self.max_ttl.as_secs()
            ));
        }
        let now = now_s();
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
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, String> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            format!(
                "no signing key: set {} to a key from 'mcpd token keygen'",
                self.key_env
            )
        })?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &signer.key).map_err(|e| format!("cannot sign: {e}"))
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
        v.leeway = LEEWAY_S;
        match jsonwebtoken::decode::<T>(token, key, &v) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired(self.expiry_of(token)),
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

    fn expiry_of(&self, token: &str) -> String {
        let exp = unverified_claim(token, "exp").parse::<u64>().unwrap_or(0);
        let ago = now_s().saturating_sub(exp);
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
    pub fn stdio_actor(&self) -> Result<Option<Value>, TokenError> {
        let Some(token) = self.stdio_token() else {
            return Ok(None);
        };
        self.actor_for(&token).map(Some)
    }

    /// The actor `token` stands for, verifying it once and its expiry every time.
    ///
    /// # Errors
    /// A token that does not verify or has expired.
    pub fn actor_for(&self, token: &str) -> Result<Value, TokenError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let claims = match cache.as_ref() {
            Some((t, c)) if t == token => c.clone(),
            _ => {
                let c = self.verify(token)?;
                *cache = Some((token.to_owned(), c.clone()));
                c
            }
        };
        drop(cache);
        if claims.exp + LEEWAY_S < now_s() {
            return Err(TokenError::Expired(self.expiry_of(token)));
        }
        Ok(actor_of(&claims))
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

/// The actor a token's claims stand for, as policy conditions see it.
pub fn actor_of(c: &Claims) -> Value {
    json!({
        "subject": c.sub,
        "scopes": c.scopes,
        "purpose": c.purpose,
        "region": c.region,
        "token_id": c.jti,
        "expires": c.exp,
        "source": "token",
    })
}

/// A claim read without verifying, for error messages only.
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

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a scope's form: `TOOL[:ENV][@PURPOSE]`.
///
/// # Errors
/// Says the form.
pub fn check_scope_syntax(scope: &str) -> Result<(), String> {
    let (rest, purpose) = scope
        .split_once('@')
        .map_or((scope, None), |(r, p)| (r, Some(p)));
    let (tool, env) = rest
        .split_once(':')
        .map_or((rest, None), |(t, e)| (t, Some(e)));
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'))
    };
    if word(tool) && env.is_none_or(word) && purpose.is_none_or(word) {
        Ok(())
    } else {
        Err(format!(
            "invalid scope '{scope}': write TOOL, TOOL:ENV or TOOL@PURPOSE (TOOL may be a glob such as orders.*)"
        ))
    }
}

/// Whether `actor`'s scopes allow this call, else the scope it lacks (named the way a
/// token would have to carry it).
///
/// # Errors
/// The denial message.
pub fn check_scope(actor: &Value, tool: &str, args: &Value) -> Result<(), String> {
    let scopes: Vec<&str> = actor
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let env = args.get("env").and_then(Value::as_str);
    let purpose = actor.get("purpose").and_then(Value::as_str);
    let allowed = scopes.iter().any(|s| {
        let (rest, want_purpose) = s.split_once('@').map_or((*s, None), |(r, p)| (r, Some(p)));
        let (pattern, want_env) = rest
            .split_once(':')
            .map_or((rest, None), |(t, e)| (t, Some(e)));
        glob(pattern, tool)
            && want_env.is_none_or(|e| env == Some(e))
            && want_purpose.is_none_or(|p| purpose == Some(p))
    });
    if allowed {
        return Ok(());
    }
    let needed = env.map_or_else(|| tool.to_owned(), |e| format!("{tool}:{e}"));
    let subject = actor
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or("the caller");
    Err(format!(
        "{subject} lacks scope '{needed}' (it has: {}); ask for a token that includes it",
        if scopes.is_empty() {
            "none".to_owned()
        } else {
            scopes.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_by_env_and_purpose() {
        let actor = json!({"subject": "agent:a", "scopes": ["orders.*", "flag.set:staging", "audit.read@compliance"], "purpose": "support"});
        assert!(check_scope(&actor, "orders.export", &json!({})).is_ok());
        assert!(check_scope(&actor, "flag.set", &json!({"env": "staging"})).is_ok());
        let e = check_scope(&actor, "flag.set", &json!({"env": "prod"})).unwrap_err();
        assert!(e.contains("lacks scope 'flag.set:prod'"), "{e}");
        let e = check_scope(&actor, "audit.read", &json!({})).unwrap_err();
        assert!(e.contains("lacks scope 'audit.read'"), "{e}");
        assert!(check_scope_syntax("flag.set:prod@release").is_ok());
        assert!(check_scope_syntax("flag set").is_err());
    }
}
