//! Scopes: what a token lets its holder call, as `TOOL[:ENV][@PURPOSE]` (`orders.*`,
//! `flag.set:staging`, `audit.read@compliance`).
//!
//! Owns parsing a scope once (when the actor is built) and the check that the actor's
//! scopes cover a call. It never decides policy: rules run after the scope check.

use serde_json::Value;

use crate::util::glob;

/// One scope, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// As written.
    raw: String,
    /// The tool id or glob.
    tool: String,
    /// The `args.env` it is limited to.
    env: Option<String>,
    /// The purpose it is limited to.
    purpose: Option<String>,
}

/// A scope that is not `TOOL[:ENV][@PURPOSE]` (checked when a token is issued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope '{0}': write TOOL, TOOL:ENV or TOOL@PURPOSE (TOOL may be a glob such as orders.*)"
)]
pub struct ScopeSyntaxError(pub String);

/// A call outside the actor's scopes; the message names the scope it lacks, the way a
/// token would have to carry it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} lacks scope '{needed}' (it has: {has}); ask for a token that includes it")]
pub struct ScopeDenied {
    /// Who.
    pub subject: String,
    /// The scope the call needs: `TOOL` or `TOOL:ENV`.
    pub needed: String,
    /// The scopes it has, comma-separated, or `none`.
    pub has: String,
}

impl Scope {
    /// Reads a scope leniently (external issuers' scopes are taken as written; a part
    /// that is not a tool glob simply matches no tool).
    pub fn parse(raw: &str) -> Self {
        let (rest, purpose) = raw
            .split_once('@')
            .map_or((raw, None), |(r, p)| (r, Some(p.to_owned())));
        let (tool, env) = rest
            .split_once(':')
            .map_or((rest, None), |(t, e)| (t, Some(e.to_owned())));
        Self {
            raw: raw.to_owned(),
            tool: tool.to_owned(),
            env,
            purpose,
        }
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether this scope lets a caller with `purpose` call `tool` with `env`.
    pub fn covers(&self, tool: &str, env: Option<&str>, purpose: Option<&str>) -> bool {
        glob(&self.tool, tool)
            && self.env.as_deref().is_none_or(|e| env == Some(e))
            && self.purpose.as_deref().is_none_or(|p| purpose == Some(p))
    }
}

/// Whether `scopes` let a caller with `purpose` call `tool` at all (in some environment):
/// what `tools/list` shows it.
pub fn may_call(scopes: &[Scope], tool: &str, purpose: Option<&str>) -> bool {
    scopes
        .iter()
        .any(|s| glob(&s.tool, tool) && s.purpose.as_deref().is_none_or(|p| purpose == Some(p)))
}

/// Checks a scope's form: `TOOL[:ENV][@PURPOSE]`.
///
/// # Errors
/// Says the form.
pub fn check_syntax(scope: &str) -> Result<(), ScopeSyntaxError> {
    let s = Scope::parse(scope);
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*'))
    };
    if word(&s.tool) && s.env.as_deref().is_none_or(word) && s.purpose.as_deref().is_none_or(word) {
        Ok(())
    } else {
        Err(ScopeSyntaxError(scope.to_owned()))
    }
}

/// Whether `scopes` let `subject` (calling for `purpose`) call `tool` with `args`.
///
/// # Errors
/// The scope it lacks.
pub fn check(
    subject: &str,
    scopes: &[Scope],
    purpose: Option<&str>,
    tool: &str,
    args: &Value,
) -> Result<(), ScopeDenied> {
    let env = args.get("env").and_then(Value::as_str);
    if scopes.iter().any(|s| s.covers(tool, env, purpose)) {
        return Ok(());
    }
    Err(ScopeDenied {
        subject: subject.to_owned(),
        needed: env.map_or_else(|| tool.to_owned(), |e| format!("{tool}:{e}")),
        has: if scopes.is_empty() {
            "none".to_owned()
        } else {
            scopes
                .iter()
                .map(Scope::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_narrow_by_env_and_purpose() {
        let scopes: Vec<Scope> = ["orders.*", "flag.set:staging", "audit.read@compliance"]
            .into_iter()
            .map(Scope::parse)
            .collect();
        let check = |tool, args| check("agent:a", &scopes, Some("support"), tool, &args);
        assert!(check("orders.export", json!({})).is_ok());
        assert!(check("flag.set", json!({"env": "staging"})).is_ok());
        let e = check("flag.set", json!({"env": "prod"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lacks scope 'flag.set:prod'"), "{e}");
        let e = check("audit.read", json!({})).unwrap_err().to_string();
        assert!(e.contains("lacks scope 'audit.read'"), "{e}");
        assert!(check_syntax("flag.set:prod@release").is_ok());
        // Listed where some call is allowed: any environment, the actor's purpose only.
        assert!(may_call(&scopes, "flag.set", Some("support")));
        assert!(may_call(&scopes, "orders.export", None));
        assert!(!may_call(&scopes, "audit.read", Some("support")));
        assert!(may_call(&scopes, "audit.read", Some("compliance")));
        assert!(!may_call(&scopes, "flag.get", Some("support")));
        assert!(check_syntax("flag set").is_err());
    }
}
