//! The Rust floor for `benches/peers.sh`: the smallest rmcp server that does what the
//! peers do (one tool, `orders_export`: GET /orders on `UPSTREAM` with reqwest, emails
//! masked, the orders returned as structured content and text). Nothing else: no
//! schema validation, policy, limits, redaction engine, audit or tracing. Its cost over
//! `direct` is rmcp's stdio transport plus one HTTP round trip; mcpd's cost over it is
//! mcpd's pipeline.
//!
//! `cargo build --release --example rmcp_floor`, then
//! `UPSTREAM=http://127.0.0.1:PORT target/release/examples/rmcp_floor`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

struct Floor {
    client: reqwest::Client,
    orders: String,
    tool: Tool,
}

/// `a***@` for `alice@`: the first character kept, as the peers do.
fn mask(email: &str) -> String {
    match (email.chars().next(), email.find('@')) {
        (Some(first), Some(at)) => format!("{first}***{}", &email[at..]),
        _ => email.to_owned(),
    }
}

impl ServerHandler for Floor {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![self.tool.clone()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let reply = self
            .client
            .get(&self.orders)
            .query(&[("from", arg("start")), ("to", arg("end"))])
            .send()
            .await;
        let body: Value = match reply {
            Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
            Ok(r) => {
                let msg = format!("upstream answered {}", r.status());
                return Ok(CallToolResult::error(vec![ContentBlock::text(msg)]).into());
            }
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into());
            }
        };
        let mut orders = body.get("orders").cloned().unwrap_or(json!([]));
        for o in orders.as_array_mut().into_iter().flatten() {
            if let Some(e) = o.get("email").and_then(Value::as_str) {
                o["email"] = Value::String(mask(e));
            }
        }
        Ok(CallToolResult::structured(json!({ "orders": orders })).into())
    }
}

#[tokio::main]
async fn main() {
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:18080".into());
    let schema = json!({
        "type": "object",
        "required": ["start", "end"],
        "properties": {"start": {"type": "string"}, "end": {"type": "string"}}
    });
    let Value::Object(schema) = schema else {
        return;
    };
    let floor = Floor {
        client: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .expect("client"),
        orders: format!("{upstream}/orders"),
        tool: Tool::new(
            "orders_export",
            "Export orders in a date range with emails masked.",
            Arc::new(schema),
        ),
    };
    let server = floor
        .serve(rmcp::transport::stdio())
        .await
        .expect("serve over stdio");
    let _ = server.waiting().await;
}
