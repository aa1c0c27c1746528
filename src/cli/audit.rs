//! `mcpd audit verify` and `mcpd audit keygen`: check the audit log has not been altered,
//! reordered or cut; make an Ed25519 key pair for signing it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit::Verifier;

/// Prints `OK: N records` or the first broken record; exit 0 or 1. With `public_key`
/// the log's Ed25519 signatures are checked, otherwise its HMAC with the key in `key_env`.
pub(super) fn verify(
    file: &Path,
    key_env: &str,
    public_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let verifier = verifier(key_env, public_key)?;
    match crate::audit::verify(file, verifier) {
        Ok(n) => {
            outln!(
                "OK: {n} records, signatures and chain intact ({})",
                file.display()
            );
            let open = crate::audit::open_intents(file)
                .with_context(|| format!("cannot read '{}'", file.display()))?;
            if !open.is_empty() {
                outln!(
                    "note: {} write(s) have a record of intent but no outcome: mcpd stopped after (or while) sending them, or they are still in flight. Check each in its upstream:",
                    open.len()
                );
            }
            for o in open {
                let key = o
                    .idempotency_key
                    .map(|k| format!(" key '{k}'"))
                    .unwrap_or_default();
                outln!(
                    "  line {} (seq {}) {} {}{key} trace {}",
                    o.line,
                    o.seq,
                    o.time,
                    o.tool,
                    o.trace_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            outln!("FAILED: {}: {broken}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What checks a log's signatures: the Ed25519 public key (hex, or a file holding it),
/// else the HMAC key in the environment variable `key_env`.
pub(super) fn verifier(key_env: &str, public_key: Option<&str>) -> anyhow::Result<Verifier> {
    Ok(match public_key {
        Some(arg) => {
            // A file holding the key, or the key itself.
            let text = match std::fs::read_to_string(arg) {
                Ok(text) => text,
                Err(_) => arg.to_owned(),
            };
            Verifier::ed25519_from_hex(&text)
                .map_err(|why| anyhow::anyhow!("--public-key: {why}"))?
        }
        None => {
            let key = std::env::var(key_env)
                .ok()
                .filter(|k| !k.is_empty())
                .with_context(|| {
                    format!(
                        "environment variable {key_env} must hold the audit signing key \
                         (or pass --public-key for an Ed25519-signed log)"
                    )
                })?;
            Verifier::Hmac(key.into_bytes())
        }
    })
}

/// Prints a new key pair: the private key for mcpd's environment, the public key for
/// whoever verifies.
pub(super) fn keygen() -> anyhow::Result<ExitCode> {
    let (private, public) = crate::audit::ed25519_keygen()?;
    outln!("# audit: {{ signing: ed25519 }} in mcpd.yaml; keep the private key secret");
    outln!("MCPD_AUDIT_KEY={private}");
    outln!("# mcpd audit verify FILE --public-key {public}");
    outln!("public_key={public}");
    Ok(ExitCode::SUCCESS)
}
