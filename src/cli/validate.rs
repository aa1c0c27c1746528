//! `mcpd validate`: the CI gate. Prints every problem as `file:line:col: message`, and
//! what MCP hosts would leave out or refuse as `file:line:col: warning: ...` (warnings
//! do not fail it).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Vars;

/// Checks a config directory; exit 0 when clean, 1 with diagnostics.
pub(super) fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let (loaded, _) = crate::config::load_dir(dir);
    // As the server's default name in a host's config (host-config --name changes it).
    for w in crate::mcp::hosts::check(&loaded, super::host_config::DEFAULT_NAME) {
        println!("{}", w.diagnostic());
    }
    match super::check(dir, &Vars::from_env()) {
        Ok((loaded, catalog)) => {
            println!(
                "ok: {} tools in {} files, {} upstreams, policy {}",
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
