//! `mcpd token`: make signing keys, issue short-lived tokens, check a token, publish
//! the verification keys (JWKS).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Vars;
use crate::identity::{TokenRequest, keygen};

/// `mcpd token keygen`: prints a new key pair.
pub(super) fn run_keygen(kid: &str) -> anyhow::Result<ExitCode> {
    let (private, public) = keygen(kid).map_err(anyhow::Error::msg)?;
    outln!("# Signing key: keep it secret (a secret manager, the CI's secrets). mcpd token issue,");
    outln!("# mcpd elevate and every mcpd that verifies tokens read it from MCPD_TOKEN_KEY:");
    outln!("MCPD_TOKEN_KEY={private}");
    outln!("# Its public half, for mcpd.yaml on hosts that only verify (or during rotation):");
    outln!("#   identity:");
    outln!("#     keys:");
    outln!("#       {kid}: {public}");
    Ok(ExitCode::SUCCESS)
}

/// `mcpd token issue`: prints a signed token.
pub(super) fn run_issue(dir: &Path, req: &TokenRequest) -> anyhow::Result<ExitCode> {
    let catalog = super::load_catalog(dir, &Vars::from_env())?;
    let identity = catalog.identity.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "mcpd.yaml has no 'identity:' section: add one (at least 'audience:') to issue tokens"
        )
    })?;
    let token = identity.issue(req).map_err(anyhow::Error::msg)?;
    outln!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `mcpd token jwks`: prints mcpd's verification keys as a JWKS document, for an
/// upstream that checks its assertions (stdio deployments have no `/.well-known/jwks.json`).
pub(super) fn run_jwks(dir: &Path) -> anyhow::Result<ExitCode> {
    let catalog = super::load_catalog(dir, &Vars::from_env())?;
    let identity = catalog
        .identity
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("mcpd.yaml has no 'identity:' section"))?;
    let jwks = identity.jwks();
    if jwks
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        anyhow::bail!(
            "no keys to publish: set MCPD_TOKEN_KEY (or identity.signing_key_env) to the signing key, or list public keys in identity.keys"
        );
    }
    outln!("{}", serde_json::to_string_pretty(&jwks)?);
    Ok(ExitCode::SUCCESS)
}

/// `mcpd token verify`: prints the token's actor, or why it is refused (exit 1).
pub(super) fn run_verify(dir: &Path, token: &str) -> anyhow::Result<ExitCode> {
    let catalog = super::load_catalog(dir, &Vars::from_env())?;
    let identity = catalog
        .identity
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("mcpd.yaml has no 'identity:' section"))?;
    match identity.actor_for(token.trim()) {
        Ok(actor) => {
            outln!("{}", serde_json::to_string_pretty(actor.facts())?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
