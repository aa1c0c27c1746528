//! `mcpd call TOOL --args JSON`: one call through the same pipeline as `serve`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Vars;
use crate::engine::{CallContext, Engine};
use crate::mcp::to_mcp_result;

/// Prints the MCP result as JSON; exit 0 on success, 1 on a tool error.
pub(super) async fn run(dir: &Path, tool: &str, args: &str) -> anyhow::Result<ExitCode> {
    let args: serde_json::Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    let serde_json::Value::Object(args) = args else {
        anyhow::bail!("--args must be a JSON object, e.g. '{{\"from\": \"2025-08-01\"}}'");
    };
    let (loaded, catalog) = super::load(dir, &Vars::from_env())?;
    let store = super::open_store(dir, &loaded.server.1).await?;
    let mut engine = Engine::new(catalog, store);
    if let Some(audit) = super::open_audit(dir, &loaded.server.1)? {
        engine = engine.with_audit(audit);
    }
    let result = engine
        .call(tool, Some(args), &CallContext::default())
        .await?;
    if let Some(audit) = engine.audit() {
        audit.flush();
    }
    let mcp = to_mcp_result(result);
    let failed = mcp.is_error == Some(true);
    outln!("{}", serde_json::to_string_pretty(&mcp)?);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
