//! Identity: who calls (the typed [`Actor`]), short-lived signed tokens ([`token`]),
//! scopes ([`scope`]), just-in-time elevation grants ([`elevation`]), and what an
//! upstream is told of the caller ([`forward`], [`exchange`]), and change tickets
//! checked in the ticket system ([`ticket`]).
//!
//! Owns proving and describing the caller. An actor is built once, when a token is
//! verified (or the default actor compiled), and shared as `Arc<Actor>`: its scopes are
//! parsed then, and what policy conditions see of it is serialized then. It never decides
//! policy: the engine checks the actor's scopes, then policy rules read the actor.

pub mod elevation;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod scope;
pub mod ticket;
pub mod token;

pub use error::{IdentityError, TokenError};
pub use scope::{Scope, ScopeDenied};
pub use token::{Claims, DEFAULT_ISSUER, DEFAULT_KEY_ENV, DEFAULT_TOKEN_ENV, Identity};
pub use token::{TokenRequest, keygen};

use serde_json::{Map, Value, json};

use crate::config::server::ActorSpec;

/// Where an actor's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// One of mcpd's own tokens (`mcpd token issue`).
    Token,
    /// An external issuer's JWT, verified with its JWKS.
    Jwks,
    /// No token: `default_actor` from mcpd.yaml.
    DefaultActor,
    /// Declared by a case of `mcpd test` (`call.actor`).
    TestCase,
}

impl Source {
    /// As spans, logs and policy name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Jwks => "jwks",
            Self::DefaultActor => "default_actor",
            Self::TestCase => "test_case",
        }
    }
}

/// A caller mcpd has established.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Who: `agent:copilot`, `user:ana`.
    pub subject: String,
    /// What it may call, parsed once.
    pub scopes: Vec<Scope>,
    /// Why it calls.
    pub purpose: Option<String>,
    /// The data region it works in.
    pub region: Option<String>,
    /// How it was established.
    pub source: Source,
    /// What policy conditions see as `actor`: built once with the actor.
    facts: Value,
}

impl Actor {
    /// An actor; `extra` adds what its source knows beside the common fields (a token's
    /// id and expiry, an issuer) to what policy conditions see.
    pub fn new(
        subject: String,
        scopes: Vec<String>,
        purpose: Option<String>,
        region: Option<String>,
        source: Source,
        extra: Map<String, Value>,
    ) -> Self {
        let mut facts = Map::from_iter([
            ("subject".to_owned(), json!(subject)),
            ("scopes".to_owned(), json!(scopes)),
            ("purpose".to_owned(), json!(purpose)),
            ("region".to_owned(), json!(region)),
        ]);
        facts.extend(extra);
        facts.insert("source".to_owned(), json!(source.as_str()));
        Self {
            subject,
            scopes: scopes.iter().map(|s| Scope::parse(s)).collect(),
            purpose,
            region,
            source,
            facts: Value::Object(facts),
        }
    }

    /// An actor written in a file: mcpd.yaml's `default_actor`, or a test case's.
    pub fn declared(spec: &ActorSpec, source: Source) -> Self {
        Self::new(
            spec.subject.clone(),
            spec.scopes.clone(),
            spec.purpose.clone(),
            spec.region.clone(),
            source,
            Map::new(),
        )
    }

    /// What policy conditions see as `actor` (and `mcpd token verify` prints).
    pub fn facts(&self) -> &Value {
        &self.facts
    }

    /// Whether the actor's scopes let it call `tool` at all: `tools/list` shows it.
    pub fn may_call(&self, tool: &str) -> bool {
        scope::may_call(&self.scopes, tool, self.purpose.as_deref())
    }

    /// Whether the actor's scopes cover a call of `tool` with `args`.
    ///
    /// # Errors
    /// The scope it lacks, named the way a token would have to carry it.
    pub fn check_scope(&self, tool: &str, args: &Value) -> Result<(), ScopeDenied> {
        scope::check(
            &self.subject,
            &self.scopes,
            self.purpose.as_deref(),
            tool,
            args,
        )
    }
}
