//! The MCP face: an rmcp `ServerHandler` that serves the engine's catalog over stdio
//! (here) and Streamable HTTP (`mcp_http`, the same handler).
//!
//! Owns protocol mapping only: tools/list from the current snapshot, tools/call into
//! `Engine::call`, results as `content` + `structuredContent`, tool failures as
//! `isError` results, unknown tools as JSON-RPC errors. It writes nothing but protocol
//! to stdout (logs go to stderr, see `cli`).

mod errors;
pub(crate) mod hosts;
pub(crate) mod http;
mod stdio;

use std::sync::Arc;

use tracing::Instrument as _;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ContentBlock, CustomRequest, CustomResult, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use crate::engine::{CallContext, CallResult, Engine};
use crate::identity::Actor;
use crate::telemetry::trace::TraceContext;

/// What the server tells hosts about itself.
/// The `_meta` key a client sets to supply its own idempotency key for a write.
pub(crate) const IDEMPOTENCY_META: &str = "dev.mcpd/idempotencyKey";

/// The result `_meta` key that says a result was replayed for its idempotency key.
pub(crate) const REPLAYED_META: &str = "dev.mcpd/replayed";

/// The result `_meta` key that says a write's outcome is unknown (its key is held).
pub(crate) const OUTCOME_META: &str = "dev.mcpd/outcome";

const INSTRUCTIONS: &str = "mcpd serves an organisation's internal APIs as tools. Every call \
is checked against policy; a refused call comes back as an error whose text says why and \
what would be allowed.";

/// The MCP protocol revisions mcpd speaks: every one its rmcp knows. `initialize`
/// negotiates among them and `mcpd --version` lists them, so the two cannot disagree.
pub(crate) fn protocol_versions() -> &'static [rmcp::model::ProtocolVersion] {
    rmcp::model::ProtocolVersion::KNOWN_VERSIONS
}

/// Why serving over stdio stopped with an error. The messages are rmcp's and tokio's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StdioError {
    /// The session never started: the client did not complete the handshake.
    #[error(transparent)]
    Handshake(Box<rmcp::service::ServerInitializeError>),
    /// The session's task panicked or was cancelled.
    #[error(transparent)]
    SessionTask(#[from] tokio::task::JoinError),
}

/// The rmcp handler.
#[derive(Debug, Clone)]
pub(crate) struct McpServer {
    engine: Arc<Engine>,
}

impl McpServer {
    /// A handler over `engine`.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Serves MCP over this process's stdin and stdout until the client goes away.
    ///
    /// # Errors
    /// When the transport fails before the session starts.
    pub(crate) async fn serve_stdio(self) -> Result<(), StdioError> {
        let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
        let running = self
            .serve(stdio::LineTransport::new(stdin, stdout))
            .await
            .map_err(|e| StdioError::Handshake(Box::new(e)))?;
        running.waiting().await?;
        Ok(())
    }
}

/// Turns an engine result into an MCP tool result.
pub(crate) fn to_mcp_result(r: CallResult) -> CallToolResult {
    let mut result = match r.outcome {
        Ok(structured) => CallToolResult::structured(structured),
        Err(f) => CallToolResult::error(vec![ContentBlock::text(f.message())]),
    };
    // A keyed call says which key it ran under, and whether this is a stored result.
    if let Some(key) = r.idempotency_key {
        let mut meta = serde_json::Map::new();
        meta.insert(IDEMPOTENCY_META.to_owned(), key.into());
        meta.insert(REPLAYED_META.to_owned(), r.replayed.into());
        if r.held {
            meta.insert(OUTCOME_META.to_owned(), "unknown".into());
        }
        result.meta = Some(rmcp::model::MetaObject(meta));
    }
    result
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("mcpd", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(
        &self,
    ) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        std::borrow::Cow::Borrowed(protocol_versions())
    }

    /// Every tool in one page: a cursor is one this server never gave out.
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if let Some(cursor) = request.and_then(|r| r.cursor) {
            return Err(errors::unknown_cursor(&cursor));
        }
        Ok(ListToolsResult::with_all_items(
            self.engine.catalog().listing(),
        ))
    }

    // The methods of capabilities mcpd does not have: -32601 saying what it serves (rmcp's
    // own answer carries only the method's name).
    #[allow(deprecated)] // logging is deprecated (SEP-2577); hosts still send setLevel
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Err(errors::unsupported("logging/setLevel"))
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        Err(errors::unsupported("completion/complete"))
    }

    async fn get_prompt(
        &self,
        _request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Err(errors::unsupported("prompts/get"))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Err(errors::unsupported("prompts/list"))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Err(errors::unsupported("resources/list"))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Err(errors::unsupported("resources/templates/list"))
    }

    async fn read_resource(
        &self,
        _request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Err(errors::unsupported("resources/read"))
    }

    /// An unknown method, or a known one whose params rmcp could not read (`arguments`
    /// that is not an object): -32601 or -32602 saying which, and what was wrong.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        Err(errors::unreadable_request(
            &request.method,
            request.params.as_ref(),
        ))
    }

    /// Sessions that began with `initialize` (protocol up to 2025-11-25) get
    /// `notifications/tools/list_changed` after every catalog swap. Armed at `initialize`,
    /// not at `notifications/initialized`: over HTTP without affinity the two may reach
    /// different replicas, and the replica that answered `initialize` may hold the
    /// client's stream (a replica that rebuilds the session replays `initialize`).
    async fn initialize(
        &self,
        request: rmcp::model::InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let result = self.negotiate_initialize(&request)?;
        let mut swaps = self.engine.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            while swaps.changed().await.is_ok() {
                if peer.notify_tool_list_changed().await.is_err() {
                    break; // the client went away
                }
            }
        });
        Ok(result)
    }

    /// Sessions on 2026-07-28 ask for notifications with `subscriptions/listen`.
    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut swaps = self.engine.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = swaps.changed() => {
                    if changed.is_err() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // rmcp moves the request's `_meta` into the context; read both to be safe.
        let metas = [Some(&context.meta), request.meta.as_ref()];
        let metas = metas.iter().flatten();
        // The caller's trace, parsed once: the request's span continues it, and
        // tool.call is its child.
        let trace = TraceContext::continue_or_start(
            metas.clone().find_map(|m| m.get_traceparent()),
            metas.clone().find_map(|m| m.get_tracestate()),
        );
        let span =
            tracing::info_span!("mcp.request", mcp.method = "tools/call", mcp.tool = %request.name);
        crate::telemetry::continue_trace(&span, &trace);
        let ctx = CallContext {
            trace: Some(trace),
            idempotency_key: metas
                .clone()
                .find_map(|m| m.get(IDEMPOTENCY_META).and_then(|v| v.as_str()))
                .map(str::to_owned),
            // Over HTTP, the caller the bearer token proved (see `http::auth`).
            actor: context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<Arc<Actor>>())
                .cloned(),
            // rmcp cancels it on `notifications/cancelled` for this request.
            cancelled: Some(context.ct.clone()),
        };
        match self
            .engine
            .call(&request.name, request.arguments, &ctx)
            .instrument(span)
            .await
        {
            Ok(result) => Ok(to_mcp_result(result).into()),
            Err(unknown) => Err(ErrorData::invalid_params(
                format!("{unknown}: tools/list names the tools this server has"),
                None,
            )),
        }
    }
}
