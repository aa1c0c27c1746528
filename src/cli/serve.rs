//! `mcpd serve`: MCP over stdio, with hot reload of the config directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Vars;
use crate::engine::Engine;
use crate::mcp::McpServer;
use crate::reload::{self, Reloader};

/// Serves until the client closes stdin.
pub async fn run(dir: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let vars = Vars::from_env();
    let (loaded, catalog) = super::check(dir, &vars).map_err(|d| {
        anyhow::anyhow!(
            "invalid configuration in '{}' (run 'mcpd validate'):\n{d}",
            dir.display()
        )
    })?;
    tracing::info!(tools = catalog.tools.len(), config = %dir.display(), watch, "serving MCP over stdio");
    let engine = Arc::new(Engine::new(catalog));
    let reloader = Arc::new(Reloader::new(dir, vars, engine.clone(), loaded));
    let _watcher = reload::spawn(reloader, watch)?;
    McpServer::new(engine).serve_stdio().await?;
    Ok(ExitCode::SUCCESS)
}
