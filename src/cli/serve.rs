//! `mcpd serve`: MCP over stdio, with hot reload of the config directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Vars;
use crate::engine::Engine;
use crate::mcp::McpServer;
use crate::reload::{self, Reloader};

/// Serves until the client closes stdin.
pub async fn run(
    dir: &Path,
    watch: bool,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let vars = Vars::from_env();
    let (loaded, catalog) = super::check(dir, &vars).map_err(|d| {
        anyhow::anyhow!(
            "invalid configuration in '{}' (run 'mcpd validate'):\n{d}",
            dir.display()
        )
    })?;
    tracing::info!(tools = catalog.tools.len(), config = %dir.display(), watch, "serving MCP over stdio");
    let store = super::open_store(dir, &loaded.server.1).await?;
    let mut engine = Engine::new(catalog, store);
    if let Some(audit) = super::open_audit(dir, &loaded.server.1)? {
        engine = engine.with_audit(audit);
    }
    let engine = Arc::new(engine);
    if let Some(addr) = metrics {
        crate::metrics::serve(addr, engine.metrics().clone()).await?;
    }
    let reloader = Arc::new(Reloader::new(dir, vars, engine.clone(), loaded));
    let _watcher = reload::spawn(reloader, watch)?;
    McpServer::new(engine.clone()).serve_stdio().await?;
    if let Some(audit) = engine.audit() {
        audit.flush();
    }
    Ok(ExitCode::SUCCESS)
}
