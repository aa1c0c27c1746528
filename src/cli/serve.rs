//! `mcpd serve`: MCP over stdio.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Vars;
use crate::engine::Engine;
use crate::mcp::McpServer;

/// Serves until the client closes stdin.
pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let catalog = super::load_catalog(dir, &Vars::from_env())?;
    tracing::info!(tools = catalog.tools.len(), config = %dir.display(), "serving MCP over stdio");
    let engine = Arc::new(Engine::new(catalog));
    McpServer::new(engine).serve_stdio().await?;
    Ok(ExitCode::SUCCESS)
}
