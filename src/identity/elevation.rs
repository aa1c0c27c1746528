//! Just-in-time elevation: a signed, expiring grant that lets one subject make one kind
//! of sensitive call (a tool, optionally in one environment) under a change ticket.
//!
//! Owns the `grant:` keys. A grant is a JWT signed with the identity key (audience
//! `<audience>/elevation`, so it is never accepted as a token) and stored until it
//! expires. Reading verifies the signature again: a record written into the state file
//! without the key is ignored. Policy sees the grant that matches a call as `elevation`
//! (`ticket`, `granted_by`, `expires`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Located;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::server::ElevationSpec;
use crate::identity::{Identity, IdentityError};
use crate::store::{Store, StoreError, ns};
use crate::util::duration::human;
use crate::util::glob;

/// The longest grant by default.
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);

/// A grant's claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    /// Grant id.
    pub jti: String,
    /// Who may make the call.
    pub sub: String,
    /// `<audience>/elevation`.
    pub aud: String,
    /// The issuer (as tokens).
    pub iss: String,
    /// The tool id or glob.
    pub tool: String,
    /// The environment (`args.env`) it is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The change ticket.
    pub ticket: String,
    /// Who granted it.
    pub granted_by: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
}

impl Grant {
    /// What policy conditions see as `elevation`.
    pub fn facts(&self) -> Value {
        json!({
            "id": self.jti,
            "ticket": self.ticket,
            "granted_by": self.granted_by,
            "expires": self.exp,
            "tool": self.tool,
            "env": self.env,
        })
    }
}

/// Why a grant could not be made, listed or removed. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ElevationError {
    /// `mcpd elevate` without a subject or tool.
    #[error("--subject and --tool are required")]
    Incomplete,
    /// `mcpd elevate` without a ticket.
    #[error("--ticket is required: an elevation is always tied to a change ticket")]
    NoTicket,
    /// A ticket of another form than `elevation.ticket_pattern`.
    #[error("ticket '{ticket}' does not match elevation.ticket_pattern '{pattern}'")]
    Ticket {
        /// The ticket given.
        ticket: String,
        /// The pattern.
        pattern: String,
    },
    /// A lifetime of zero or over the maximum.
    #[error("--ttl must be between 1s and elevation.max_ttl ({})", human(*.0))]
    Ttl(Duration),
    /// The grant could not be signed.
    #[error(transparent)]
    Sign(#[from] IdentityError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `mcpd elevate` asks for.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Who.
    pub subject: String,
    /// Tool id or glob.
    pub tool: String,
    /// Environment, if limited to one.
    pub env: Option<String>,
    /// Change ticket.
    pub ticket: String,
    /// Who grants it.
    pub granted_by: String,
    /// Lifetime.
    pub ttl: Duration,
}

/// How long a human has to answer an approval by default.
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The compiled `elevation:` section.
#[derive(Debug, Clone)]
pub struct Rules {
    ticket: Option<regex::Regex>,
    max_ttl: Duration,
    approval_timeout: Duration,
    /// The tool that checks a ticket against the ticket system, and where it is named.
    ticket_tool: Option<Located<String>>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            ticket: None,
            max_ttl: DEFAULT_MAX_TTL,
            approval_timeout: DEFAULT_APPROVAL_TIMEOUT,
            ticket_tool: None,
        }
    }
}

impl Rules {
    /// Compiles the section of `path`, reporting a pattern that is not a regular
    /// expression, or a bad duration, at its position.
    pub fn compile(path: &Path, spec: &ElevationSpec, diags: &mut Diagnostics) -> Option<Self> {
        let ticket = match &spec.ticket_pattern {
            None => None,
            Some(Located { value, pos }) => match regex::Regex::new(value) {
                Ok(r) => Some(r),
                Err(e) => {
                    let msg = format!("elevation.ticket_pattern: not a regular expression: {e}");
                    diags.push(Diagnostic::new(path, *pos, msg));
                    return None;
                }
            },
        };
        let duration =
            |field: &str, value: &Option<Located<String>>, default, diags: &mut Diagnostics| {
                match value {
                    None => Some(default),
                    Some(t) => match crate::util::duration::parse(&t.value) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            let msg = format!("elevation.{field}: {e}");
                            diags.push(Diagnostic::new(path, t.pos, msg));
                            None
                        }
                    },
                }
            };
        let max_ttl = duration("max_ttl", &spec.max_ttl, DEFAULT_MAX_TTL, diags);
        let approval_timeout = duration(
            "approval_timeout",
            &spec.approval_timeout,
            DEFAULT_APPROVAL_TIMEOUT,
            diags,
        );
        Some(Self {
            ticket,
            max_ttl: max_ttl?,
            approval_timeout: approval_timeout?,
            ticket_tool: spec.ticket_tool.clone(),
        })
    }

    /// The tool that checks a ticket against the ticket system (`ticket_tool`), with
    /// where it is named.
    pub fn ticket_tool(&self) -> Option<&Located<String>> {
        self.ticket_tool.as_ref()
    }

    /// The pattern every ticket must match, as written.
    pub fn ticket_pattern(&self) -> Option<&str> {
        self.ticket.as_ref().map(regex::Regex::as_str)
    }

    /// Checks a ticket against `ticket_pattern` (any non-empty ticket without one).
    ///
    /// # Errors
    /// An empty ticket, or one of another form.
    pub fn check_ticket(&self, ticket: &str) -> Result<(), ElevationError> {
        if ticket.trim().is_empty() {
            return Err(ElevationError::NoTicket);
        }
        match &self.ticket {
            Some(p) if !p.is_match(ticket) => Err(ElevationError::Ticket {
                ticket: ticket.to_owned(),
                pattern: p.as_str().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// How long a human has to answer an approval.
    pub fn approval_timeout(&self) -> Duration {
        self.approval_timeout
    }
}

fn audience(identity: &Identity) -> String {
    format!("{}/elevation", identity.audience())
}

/// Signs and stores a grant.
///
/// # Errors
/// A ticket that does not match the pattern, a lifetime over the maximum, no signing
/// key, a failing store.
pub async fn grant(
    store: &dyn Store,
    identity: &Identity,
    rules: &Rules,
    req: &GrantRequest,
) -> Result<Grant, ElevationError> {
    if req.subject.trim().is_empty() || req.tool.trim().is_empty() {
        return Err(ElevationError::Incomplete);
    }
    if req.ticket.trim().is_empty() {
        return Err(ElevationError::NoTicket);
    }
    rules.check_ticket(&req.ticket)?;
    if req.ttl.is_zero() || req.ttl > rules.max_ttl {
        return Err(ElevationError::Ttl(rules.max_ttl));
    }
    let now = identity.clock().now_s();
    let grant = Grant {
        jti: format!("g-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        sub: req.subject.clone(),
        aud: audience(identity),
        iss: identity.issuer().to_owned(),
        tool: req.tool.clone(),
        env: req.env.clone(),
        ticket: req.ticket.clone(),
        granted_by: req.granted_by.clone(),
        iat: now,
        exp: now + req.ttl.as_secs().max(1),
    };
    let signed = identity.sign(&grant, "mcpd-grant")?;
    let key = format!("{}{}:{}", ns::GRANT, grant.sub, grant.jti);
    store.put(&key, signed.as_bytes(), req.ttl).await?;
    Ok(grant)
}

/// Every live, correctly signed grant, optionally of one subject.
///
/// # Errors
/// A failing store.
pub async fn list(
    store: &dyn Store,
    identity: &Identity,
    subject: Option<&str>,
) -> Result<Vec<Grant>, StoreError> {
    let prefix = match subject {
        Some(s) => format!("{}{s}:", ns::GRANT),
        None => ns::GRANT.to_owned(),
    };
    let entries = store.scan_prefix(&prefix).await?;
    let aud = audience(identity);
    let mut out = Vec::new();
    for (key, value) in entries {
        let token = String::from_utf8_lossy(&value);
        match identity.verify_as::<Grant>(&token, &aud) {
            Ok(g) if subject.is_none_or(|s| g.sub == s) => out.push(g),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key, error = %e, "ignoring an elevation grant that does not verify")
            }
        }
    }
    Ok(out)
}

/// The grant that covers this call, if the subject holds one.
///
/// # Errors
/// A failing store.
pub async fn find(
    store: &dyn Store,
    identity: &Identity,
    subject: &str,
    tool: &str,
    args: &Value,
) -> Result<Option<Grant>, StoreError> {
    let env = args.get("env").and_then(Value::as_str);
    Ok(list(store, identity, Some(subject))
        .await?
        .into_iter()
        .filter(|g| glob(&g.tool, tool) && g.env.as_deref().is_none_or(|e| env == Some(e)))
        .max_by_key(|g| g.exp))
}

/// Removes a grant by id (of any subject). Returns whether one was removed.
///
/// # Errors
/// A failing store.
pub async fn revoke(store: &dyn Store, identity: &Identity, id: &str) -> Result<bool, StoreError> {
    for g in list(store, identity, None).await? {
        if g.jti == id {
            let key = format!("{}{}:{}", ns::GRANT, g.sub, g.jti);
            return store.delete(&key).await;
        }
    }
    Ok(false)
}
