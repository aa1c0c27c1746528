//! Forwarding the caller: what an upstream is told of who calls, in a form it can verify.
//!
//! Owns the per-upstream `identity:` setting of mcpd.yaml, compiled once: `assertion`
//! (a short-lived JWT mcpd signs per call with its identity key: `sub` the actor, `aud`
//! the upstream, the actor's scopes, purpose, the call's ticket, trace id and tool) and
//! `token_exchange` (a token from the SSO for that assertion, RFC 8693, in
//! [`super::exchange`]). The caller's own token is never forwarded: it is not even kept
//! (the HTTP edge drops it once verified). It must not decide whether a call is allowed,
//! and it never logs a credential.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::exchange::Exchange;
use super::{Actor, Identity, IdentityError};
use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::server::{ForwardMode, ServerSpec, UpstreamSpec};
use crate::config::{Located, Vars};

/// An assertion's lifetime by default.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// The longest assertion.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// What one call tells the upstream beside the actor.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo<'a> {
    /// The tool's id.
    pub tool: &'a str,
    /// The call's trace id.
    pub trace_id: &'a str,
    /// The change ticket of the elevation the call runs under, if any.
    pub ticket: Option<&'a str>,
}

/// An assertion's claims, as an upstream reads them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    /// mcpd's issuer (`identity.issuer`).
    pub iss: String,
    /// The actor: `agent:copilot`, `user:ana`.
    pub sub: String,
    /// The upstream (`assertion.audience`, default its name).
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds): `iat`.
    pub nbf: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// A fresh id per assertion (an upstream may refuse a repeat).
    pub jti: String,
    /// The actor's scopes, space-separated (the OAuth `scope` claim).
    pub scope: String,
    /// Why the actor calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The change ticket the call runs under (its elevation grant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The call's W3C trace id: the upstream's logs join mcpd's.
    pub trace_id: String,
    /// The tool called.
    pub tool: String,
}

/// Why a call's identity could not be forwarded. Messages carry no credential.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The assertion could not be signed (no signing key, most likely).
    #[error("cannot sign the identity assertion for upstream '{upstream}': {source}")]
    Sign {
        /// The upstream.
        upstream: String,
        /// Why.
        source: IdentityError,
    },
    /// A client credential of a token exchange is not set.
    #[error(
        "mcpd is missing secret '{0}' (the token exchange's client credential): set environment variable {0} for the mcpd process"
    )]
    MissingSecret(String),
    /// The SSO refused the exchange or could not be reached.
    #[error("token exchange for upstream '{upstream}' failed: {reason}")]
    Exchange {
        /// The upstream.
        upstream: String,
        /// What the SSO said (its `error` and `error_description`), or why it was not
        /// reached.
        reason: String,
    },
}

/// Where a credential goes.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// The header's name.
    pub name: String,
    /// `Bearer ` before the value (the `Authorization` header).
    pub bearer: bool,
}

impl Header {
    pub(crate) fn compile(spec: Option<&Located<String>>) -> Result<Self, (Pos, String)> {
        let name = spec.map_or("Authorization", |h| h.value.trim());
        let pos = spec.map(|h| h.pos).unwrap_or_default();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err((pos, format!("'{name}' is not an HTTP header name")));
        }
        Ok(Self {
            name: name.to_owned(),
            bearer: name.eq_ignore_ascii_case("authorization"),
        })
    }

    /// The header with `credential` as its value.
    pub(crate) fn with(&self, credential: &str) -> (String, String) {
        let value = if self.bearer {
            format!("Bearer {credential}")
        } else {
            credential.to_owned()
        };
        (self.name.clone(), value)
    }
}

/// `identity: assertion` for one upstream.
#[derive(Debug)]
pub struct Assertion {
    upstream: String,
    audience: String,
    header: Header,
    ttl: Duration,
}

impl Assertion {
    /// Signs an assertion of `actor` for this call with `audience` and `ttl`.
    pub(crate) fn mint(
        identity: &Identity,
        audience: &str,
        ttl: Duration,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<String, IdentityError> {
        Self::mint_with_id(identity, audience, ttl, actor, call).map(|(jwt, _)| jwt)
    }

    /// As [`Self::mint`], with the assertion's id (`jti`).
    pub(crate) fn mint_with_id(
        identity: &Identity,
        audience: &str,
        ttl: Duration,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<(String, String), IdentityError> {
        let now = identity.clock().now_s();
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = AssertionClaims {
            iss: identity.issuer().to_owned(),
            sub: actor.subject.clone(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
            jti: jti.clone(),
            scope: (actor.scopes.iter())
                .map(super::Scope::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            purpose: actor.purpose.clone(),
            ticket: call.ticket.map(str::to_owned),
            trace_id: call.trace_id.to_owned(),
            tool: call.tool.to_owned(),
        };
        identity.sign(&claims, "JWT").map(|jwt| (jwt, jti))
    }
}

/// What one upstream is told of the caller.
#[derive(Debug)]
pub enum Forward {
    /// A JWT mcpd signs per call.
    Assertion(Assertion),
    /// A token from the SSO (RFC 8693).
    Exchange(Arc<Exchange>),
}

impl Forward {
    /// The header that carries the caller's identity for this call, and what the
    /// call's audit record says of it (never the credential: the mode, the audience,
    /// an assertion's id and ticket).
    ///
    /// # Errors
    /// No signing key, a missing client credential, the SSO refusing the exchange.
    pub async fn header(
        &self,
        identity: &Identity,
        actor: &Actor,
        call: &CallInfo<'_>,
    ) -> Result<((String, String), serde_json::Value), ForwardError> {
        match self {
            Self::Assertion(a) => {
                let (jwt, jti) = Assertion::mint_with_id(identity, &a.audience, a.ttl, actor, call)
                    .map_err(|source| ForwardError::Sign {
                        upstream: a.upstream.clone(),
                        source,
                    })?;
                let record = serde_json::json!({
                    "as": "assertion", "audience": a.audience, "id": jti, "ticket": call.ticket,
                });
                Ok((a.header.with(&jwt), record))
            }
            Self::Exchange(x) => x.header(identity, actor, call).await,
        }
    }
}

/// Every upstream's `identity:` setting, by upstream name.
#[derive(Debug, Default)]
pub struct Forwarding(BTreeMap<String, Forward>);

impl Forwarding {
    /// Compiles the `identity:` settings of mcpd.yaml's upstreams (`path`), reporting
    /// a mode without the `identity:` section it signs with, an audience that is mcpd's
    /// own, a bad header, duration or token URL, and settings of a mode not chosen.
    pub fn compile(
        path: &Path,
        spec: &ServerSpec,
        identity: Option<&Identity>,
        vars: &Vars,
        diags: &mut Diagnostics,
    ) -> Self {
        let mut out = BTreeMap::new();
        for (name, up) in &spec.upstreams {
            match compile_one(name, up, identity, vars) {
                Ok(Some(f)) => {
                    out.insert(name.clone(), f);
                }
                Ok(None) => {}
                Err((pos, msg)) => diags.push(Diagnostic::new(
                    path,
                    pos,
                    format!("upstream '{name}': {msg}"),
                )),
            }
        }
        Self(out)
    }

    /// What upstream `name` is told of the caller, if anything.
    pub fn get(&self, name: &str) -> Option<&Forward> {
        self.0.get(name)
    }
}

fn compile_one(
    name: &str,
    up: &UpstreamSpec,
    identity: Option<&Identity>,
    vars: &Vars,
) -> Result<Option<Forward>, (Pos, String)> {
    let pos = up.url.pos;
    let unused = match up.identity {
        Some(ForwardMode::Assertion) => up.token_exchange.as_ref().map(|_| "token_exchange"),
        Some(ForwardMode::TokenExchange) => up.assertion.as_ref().map(|_| "assertion"),
        None => (up.assertion.as_ref().map(|_| "assertion"))
            .or(up.token_exchange.as_ref().map(|_| "token_exchange")),
    };
    if let Some(section) = unused {
        return Err((
            pos,
            format!(
                "has '{section}:' settings but identity is {}: set 'identity: {section}' or remove them",
                up.identity.map_or("not set", |m| match m {
                    ForwardMode::Assertion => "assertion",
                    ForwardMode::TokenExchange => "token_exchange",
                })
            ),
        ));
    }
    let Some(mode) = up.identity else {
        return Ok(None);
    };
    let Some(identity) = identity else {
        return Err((
            pos,
            "identity forwarding signs with mcpd's identity key: add an 'identity:' section (docs/identity.md)"
                .to_owned(),
        ));
    };
    match mode {
        ForwardMode::Assertion => {
            let spec = up.assertion.clone().unwrap_or_default();
            let audience = spec
                .audience
                .as_ref()
                .map_or(name, |a| a.value.as_str())
                .to_owned();
            let own = identity.audience();
            if audience == own || audience == format!("{own}/elevation") || audience.is_empty() {
                let pos = spec.audience.as_ref().map_or(pos, |a| a.pos);
                return Err((
                    pos,
                    format!(
                        "assertion.audience '{audience}' is mcpd's own (identity.audience): an assertion must never pass for a token of this mcpd; name the upstream"
                    ),
                ));
            }
            let ttl = match &spec.ttl {
                None => DEFAULT_TTL,
                Some(t) => match crate::util::duration::parse(&t.value) {
                    Ok(d) if !d.is_zero() && d <= MAX_TTL => d,
                    Ok(_) => return Err((t.pos, "assertion.ttl must be between 1s and 1h".into())),
                    Err(e) => return Err((t.pos, format!("assertion.ttl: {e}"))),
                },
            };
            let header = Header::compile(spec.header.as_ref())
                .map_err(|(p, m)| (p, format!("assertion.header: {m}")))?;
            Ok(Some(Forward::Assertion(Assertion {
                upstream: name.to_owned(),
                audience,
                header,
                ttl,
            })))
        }
        ForwardMode::TokenExchange => {
            let Some(spec) = &up.token_exchange else {
                return Err((
                    pos,
                    "identity: token_exchange needs a 'token_exchange:' section (token_url, audience, client_id_env, client_secret_env)"
                        .to_owned(),
                ));
            };
            if spec.token_url.value.contains("${") {
                // A variable that could not be expanded: reported when the file was loaded.
                return Ok(None);
            }
            Exchange::compile(name, spec, vars).map(|x| Some(Forward::Exchange(Arc::new(x))))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::server::IdentitySpec;
    use crate::identity::Source;

    #[test]
    fn an_assertion_carries_the_actor_the_call_and_its_ticket() {
        let (key, _) = crate::identity::keygen("k1").unwrap();
        let spec: IdentitySpec = serde_saphyr::from_str("audience: mcpd-test\n").unwrap();
        let vars = Vars::default().with(crate::identity::DEFAULT_KEY_ENV, &key);
        let mut diags = Diagnostics::default();
        let identity = Identity::compile(Path::new("mcpd.yaml"), &spec, &vars, &mut diags).unwrap();
        let actor = Actor::new(
            "agent:release".into(),
            vec!["flag.set:prod".into(), "orders.*".into()],
            Some("release".into()),
            None,
            Source::Token,
            serde_json::Map::new(),
        );
        let call = CallInfo {
            tool: "flag.set",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            ticket: Some("CHG-1234"),
        };
        let (jwt, jti) = Assertion::mint_with_id(
            &identity,
            "flags-api",
            Duration::from_secs(60),
            &actor,
            &call,
        )
        .unwrap();
        // Verified as any upstream would: mcpd's key, the upstream's audience.
        let claims: AssertionClaims = identity.verify_as(&jwt, "flags-api").unwrap();
        assert_eq!(claims.jti, jti);
        assert_eq!(claims.sub, "agent:release");
        assert_eq!(claims.scope, "flag.set:prod orders.*");
        assert_eq!(claims.purpose.as_deref(), Some("release"));
        assert_eq!(claims.ticket.as_deref(), Some("CHG-1234"));
        assert_eq!(claims.tool, "flag.set");
        assert_eq!(claims.trace_id, call.trace_id);
        assert_eq!(claims.exp - claims.iat, 60);
        // Never a token of mcpd: its audience is the upstream's.
        assert!(identity.verify(&jwt).is_err());
    }
}
