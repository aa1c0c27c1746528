//! `mcpd validate`: the CI gate. Prints every problem as `file:line:col: message`
//! (`mcpd.yaml`, `policies.yaml`, `tools.d/`, `prompts.d/`).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Vars;

/// Checks a config directory; exit 0 when clean, 1 with diagnostics.
pub(super) fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    match super::check(dir, &Vars::from_env()) {
        Ok((loaded, catalog)) => {
            let prompts = match catalog.prompts.len() {
                0 => String::new(),
                n => format!(", {n} prompts in {} files", loaded.prompts.len()),
            };
            println!(
                "ok: {} tools in {} files, {} upstreams, policy {}{prompts}",
                catalog.tools.len(),
                loaded.tools.len(),
                catalog.upstreams.iter().count(),
                loaded.policy.0.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            for d in &diags.0 {
                println!("{d}");
            }
            let n = diags.0.len();
            eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
            Ok(ExitCode::FAILURE)
        }
    }
}
