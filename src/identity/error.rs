//! Why identity refused: a token that does not verify ([`TokenError`]), or keys and
//! tokens that could not be made or read ([`IdentityError`]). Each message says what
//! to fix; none carries a token or a key.

use super::scope::ScopeSyntaxError;
use crate::util::duration::DurationError;

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

/// Why keys could not be made or read, or a token could not be issued. Each message
/// says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The system random source failed.
    #[error("cannot generate a key: the system random source failed")]
    Random,
    /// A freshly generated key did not read back.
    #[error("cannot read the generated key")]
    Generated,
    /// The signing key's variable holds something else.
    #[error("{env} is not a signing key ({why}); make one with 'mcpd token keygen'")]
    SigningKey {
        /// The variable.
        env: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A listed public key does not parse.
    #[error("identity.keys.{kid}: not an Ed25519 public key in base64url ({reason})")]
    PublicKey {
        /// Its key id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// The signing key's public half could not be derived.
    #[error("{env}: cannot derive its public key ({reason})")]
    Derive {
        /// The variable.
        env: String,
        /// Why.
        reason: String,
    },
    /// `identity.max_ttl` is not a duration.
    #[error("identity.max_ttl: {0}")]
    MaxTtl(DurationError),
    /// `mcpd token issue` without a subject.
    #[error("--subject is required, e.g. agent:copilot")]
    NoSubject,
    /// `mcpd token issue` without a scope.
    #[error("give at least one --scope (a tool id, TOOL:ENV or TOOL@PURPOSE)")]
    NoScope,
    /// A scope of the wrong form.
    #[error(transparent)]
    Scope(#[from] ScopeSyntaxError),
    /// A lifetime of zero or over `identity.max_ttl`.
    #[error("--ttl must be between 1s and identity.max_ttl ({0}s)")]
    Ttl(u64),
    /// No signing key is configured.
    #[error("no signing key: set {0} to a key from 'mcpd token keygen'")]
    NoSigningKey(String),
    /// The JWT library refused to sign.
    #[error("cannot sign: {0}")]
    Sign(String),
}
