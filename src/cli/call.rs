//! `mcpd call TOOL --args JSON`: one call through the same pipeline as `serve`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Vars;
use crate::engine::Engine;
use crate::mcp::to_mcp_result;

/// Prints the MCP result as JSON; exit 0 on success, 1 on a tool error.
pub async fn run(dir: &Path, tool: &str, args: &str) -> anyhow::Result<ExitCode> {
    let args: serde_json::Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    let serde_json::Value::Object(args) = args else {
        anyhow::bail!("--args must be a JSON object, e.g. '{{\"from\": \"2025-08-01\"}}'");
    };
    let engine = Engine::new(super::load_catalog(dir, &Vars::from_env())?);
    let result = engine.call(tool, Some(args)).await?;
    let mcp = to_mcp_result(result);
    let failed = mcp.is_error == Some(true);
    println!("{}", serde_json::to_string_pretty(&mcp)?);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
