//! What commands open from a config directory: the audit log and the state store
//! `mcpd.yaml` names, and the config itself, loaded and compiled (every problem of both
//! steps reported at once).

use std::path::Path;

use crate::catalog::Catalog;
use crate::config::{self, Vars};

/// Opens the audit log `mcpd.yaml` asks for, if any.
pub(crate) fn open_audit(
    dir: &Path,
    server: &crate::config::ServerSpec,
) -> anyhow::Result<Option<crate::audit::AuditLog>> {
    let Some(spec) = &server.audit else {
        return Ok(None);
    };
    let key = std::env::var(&spec.key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| crate::audit::AuditError::NoKey(spec.key_env.clone()))?;
    let signer = match spec.signing {
        crate::config::server::AuditSigning::Hmac => crate::audit::Signer::Hmac(key.into_bytes()),
        crate::config::server::AuditSigning::Ed25519 => {
            crate::audit::Signer::ed25519_from_hex(&key).map_err(|why| {
                crate::audit::AuditError::BadKey {
                    env: spec.key_env.clone(),
                    why,
                }
            })?
        }
    };
    let path = dir.join(&spec.path);
    Ok(Some(crate::audit::AuditLog::open(&path, signer)?))
}

/// Where state lives when `mcpd.yaml` does not say: a file under the config directory.
pub const DEFAULT_STATE: &str = ".mcpd/state.redb";

/// Opens the state store `mcpd.yaml` names (relative paths are under `dir`).
pub(crate) async fn open_store(
    dir: &Path,
    server: &crate::config::ServerSpec,
) -> anyhow::Result<std::sync::Arc<dyn crate::store::Store>> {
    let spec = server.state.as_deref().unwrap_or(DEFAULT_STATE).trim();
    let spec = if spec == "memory:" || spec.contains("://") {
        spec.to_owned()
    } else {
        let path = Path::new(spec.strip_prefix("file:").unwrap_or(spec));
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the state directory '{}': {e}",
                    parent.display()
                )
            })?;
        }
        format!("file:{}", path.display())
    };
    Ok(crate::store::connect(&spec).await?)
}

/// Loads and compiles a config directory, or fails with every diagnostic.
pub(crate) fn load_catalog(dir: &Path, vars: &Vars) -> anyhow::Result<Catalog> {
    load(dir, vars).map(|(_, c)| c)
}

/// As [`load_catalog`], keeping what was loaded (the server file's settings).
pub(crate) fn load(dir: &Path, vars: &Vars) -> anyhow::Result<(config::Loaded, Catalog)> {
    load_settled(dir, vars, &config::Settle::IMMEDIATE)
}

/// As [`load`], reading each file only once it has settled (`mcpd serve` at start: a
/// file being written is never served half-way).
pub(crate) fn load_settled(
    dir: &Path,
    vars: &Vars,
    settle: &config::Settle,
) -> anyhow::Result<(config::Loaded, Catalog)> {
    check_settled(dir, vars, settle).map_err(|d| {
        anyhow::anyhow!(
            "invalid configuration in '{}' (run 'mcpd validate'):\n{d}",
            dir.display()
        )
    })
}

/// Loads and compiles, collecting the problems of both steps.
pub(crate) fn check(
    dir: &Path,
    vars: &Vars,
) -> Result<(config::Loaded, Catalog), crate::config::diag::Diagnostics> {
    check_settled(dir, vars, &config::Settle::IMMEDIATE)
}

/// As [`check`], reading files as `settle` says.
fn check_settled(
    dir: &Path,
    vars: &Vars,
    settle: &config::Settle,
) -> Result<(config::Loaded, Catalog), crate::config::diag::Diagnostics> {
    let (loaded, mut diags) = config::load_dir_with(dir, vars, None, settle);
    let compiled = Catalog::compile(&loaded, vars);
    match compiled {
        Ok(catalog) if diags.is_empty() => Ok((loaded, catalog)),
        Ok(_) => Err(diags),
        Err(more) => {
            // A file that did not load was compiled as its empty default: leave out what
            // follows only from that (no upstreams, no egress), not the user's mistakes.
            let broken = |path: &Path| diags.0.iter().any(|d| d.file == path);
            let (server_broken, policy_broken) =
                (broken(&loaded.server.0), broken(&loaded.policy.0));
            let more = more.0.into_iter().filter(|d| {
                !(server_broken
                    && (d.message.contains("request.upstream: unknown upstream")
                        || d.message.contains("match.upstream: no upstream is named"))
                    || policy_broken
                        && d.file == loaded.server.0
                        && d.message.contains("egress to host"))
            });
            diags.extend(crate::config::diag::Diagnostics(more.collect()));
            diags.sort();
            diags.0.dedup();
            Err(diags)
        }
    }
}
