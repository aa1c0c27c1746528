//! `mcpd audit verify`: check the audit log has not been altered, reordered or cut.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// Prints `OK: N records` or the first broken record; exit 0 or 1.
pub fn verify(file: &Path, key_env: &str) -> anyhow::Result<ExitCode> {
    let key = std::env::var(key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .with_context(|| {
            format!("environment variable {key_env} must hold the audit signing key")
        })?;
    match crate::audit::verify(file, key.as_bytes()) {
        Ok(n) => {
            println!(
                "OK: {n} records, signatures and chain intact ({})",
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            println!("FAILED: {}: {broken}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
