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
    /// A host's variable reference that the host passed on as is, instead of a token.
    #[error(
        "the token is '{0}': a placeholder the host did not expand, not a token. Each host \
         spells its variables its own way: VS Code '${{input:mcpd-token}}' (declared under \
         \"inputs\"), Cursor '${{env:MCPD_TOKEN}}', Claude Code '${{MCPD_TOKEN}}', Continue \
         '${{{{ secrets.MCPD_TOKEN }}}}'; Claude Desktop expands none, so put the token itself \
         there ('mcpd host-config HOST' writes the right form)"
    )]
    Unexpanded(String),
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

impl TokenError {
    /// [`TokenError::Unexpanded`] when `token` is a variable reference rather than a
    /// token (`${env:MCPD_TOKEN}`, `${{ secrets.X }}`, `$MCPD_TOKEN`, `%MCPD_TOKEN%`): a
    /// JWT has none of these characters, so nothing real is refused this way.
    pub fn unexpanded(token: &str) -> Option<Self> {
        let t = token.trim();
        let var =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let placeholder = t.contains("${")
            || t.contains("{{")
            || t.strip_prefix('$').is_some_and(var)
            || t.strip_prefix('%')
                .and_then(|r| r.strip_suffix('%'))
                .is_some_and(var);
        placeholder.then(|| {
            let shown: String = t.chars().take(60).collect();
            Self::Unexpanded(shown)
        })
    }
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

#[cfg(test)]
mod tests {
    use super::TokenError;

    #[test]
    fn a_hosts_unexpanded_variable_is_named_a_placeholder_and_a_jwt_never_is() {
        for placeholder in [
            "${env:MCPD_TOKEN}",
            "${input:mcpd-token}",
            "${MCPD_TOKEN}",
            "${{ secrets.MCPD_TOKEN }}",
            "$MCPD_TOKEN",
            "%MCPD_TOKEN%",
            " ${env:MCPD_TOKEN} ",
        ] {
            let e = TokenError::unexpanded(placeholder);
            assert_eq!(
                e,
                Some(TokenError::Unexpanded(placeholder.trim().to_owned())),
                "{placeholder}"
            );
        }
        let message = TokenError::unexpanded("${env:MCPD_TOKEN}")
            .unwrap()
            .to_string();
        assert!(
            message.contains("placeholder the host did not expand")
                && message.contains("Cursor '${env:MCPD_TOKEN}'")
                && message.contains("Continue '${{ secrets.MCPD_TOKEN }}'")
                && message.contains("Claude Desktop expands none"),
            "{message}"
        );
        for token in [
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
            "not-a-token",
            "$",
            "%%",
        ] {
            assert_eq!(TokenError::unexpanded(token), None, "{token}");
        }
    }
}
