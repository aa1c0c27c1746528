//! The MCP face: an rmcp `ServerHandler` that serves the engine's catalog over stdio
//! (here) and Streamable HTTP (`mcp_http`, the same handler).
//!
//! Owns protocol mapping only: tools/list from the current snapshot, tools/call into
//! `Engine::call`, results as `content` + `structuredContent`, tool failures as
//! `isError` results, unknown tools as JSON-RPC errors. It writes nothing but protocol
//! to stdout (logs go to stderr, see `cli`).

mod approval;
mod content;
mod errors;
pub(crate) mod hosts;
pub(crate) mod http;
mod logging;
mod plain;
mod progress;
mod prompts;
mod resources;
mod stdio;

pub(crate) use content::to_mcp_result;

use std::sync::Arc;

use tracing::Instrument as _;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, CustomRequest,
    CustomResult, GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};

use crate::engine::{CallContext, Engine};
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

/// The answer rmcp's handler gives a session before 2026-07-28 to a `tools/call`: the
/// legacy shape of a result. Both fast paths (stdio, HTTP) answer with it.
pub(crate) fn legacy_answer(
    out: Result<CallToolResponse, ErrorData>,
    id: rmcp::model::RequestId,
) -> rmcp::model::ServerJsonRpcMessage {
    use rmcp::model::{ServerJsonRpcMessage, ServerResult};
    match out {
        Ok(response) => {
            let mut result = ServerResult::from(response);
            result.strip_result_type_for_legacy_peer();
            result.strip_non_object_output_for_legacy_peer();
            ServerJsonRpcMessage::response(result, id)
        }
        Err(error) => ServerJsonRpcMessage::error(error, Some(id)),
    }
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

/// The rmcp handler, one per session (HTTP makes one for each session it opens).
#[derive(Debug, Clone)]
pub(crate) struct McpServer {
    engine: Arc<Engine>,
    /// This session's log to the client (its level, rate limit and queue).
    log: Arc<logging::ClientLog>,
    /// Over HTTP: the sessions the direct path serves, which this one joins.
    live: Option<Arc<http::direct::Live>>,
    /// Over stdio: the `tools/call` fast path, which this session joins at `initialize`.
    stdio: Option<Arc<stdio::Fast>>,
}

/// The session a `tools/call` came through, for [`McpServer::call_result`].
pub(crate) struct Via {
    /// The session's peer (a human's approval is asked through it).
    pub(crate) peer: Peer<RoleServer>,
    /// Cancelled when the client gives up on the call.
    pub(crate) cancelled: tokio_util::sync::CancellationToken,
    /// The caller writes the answer around the result's JSON (the stdio fast path,
    /// HTTP's direct path): see `CallContext::quote_json`.
    pub(crate) quote_json: bool,
}

impl McpServer {
    /// A handler for a new session over `engine`.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let log = Arc::new(logging::ClientLog::new(crate::util::Clock::system()));
        Self {
            engine,
            log,
            live: None,
            stdio: None,
        }
    }

    /// A handler for a new HTTP session, which the direct path may serve once it knows
    /// the session's id (`http::direct`).
    pub(crate) fn over_http(engine: Arc<Engine>, live: Arc<http::direct::Live>) -> Self {
        Self {
            live: Some(live),
            ..Self::new(engine)
        }
    }

    /// Over HTTP, makes this session known to the direct path, by the id a request of
    /// the session carries.
    fn join_live(&self, extensions: &rmcp::model::Extensions, peer: &Peer<RoleServer>) {
        let Some(live) = &self.live else { return };
        let id = extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok());
        if let Some(id) = id {
            live.register(id, self, peer);
        }
    }

    /// A `tools/call`: `request` with the `_meta` rmcp took from it (if any), by
    /// `actor`, asking the human through `peer`, cancelled by `cancelled`, on `catalog`
    /// (the snapshot the caller decided on) or else the current one. rmcp's session and
    /// the direct path over HTTP both run this.
    pub(crate) async fn call(
        &self,
        request: CallToolRequestParams,
        taken_meta: Option<&rmcp::model::RequestMetaObject>,
        actor: Option<Arc<Actor>>,
        peer: Peer<RoleServer>,
        cancelled: tokio_util::sync::CancellationToken,
        catalog: Option<Arc<crate::catalog::Catalog>>,
    ) -> Result<CallToolResponse, ErrorData> {
        let via = Via {
            peer,
            cancelled,
            quote_json: false,
        };
        let result = self
            .call_result(request, taken_meta, actor, via, catalog)
            .await;
        result.map(|r| to_mcp_result(r).into())
    }

    /// [`Self::call`]'s engine result, before it is made an MCP result (the stdio fast
    /// path and HTTP's direct path write some results themselves).
    pub(crate) async fn call_result(
        &self,
        request: CallToolRequestParams,
        taken_meta: Option<&rmcp::model::RequestMetaObject>,
        actor: Option<Arc<Actor>>,
        via: Via,
        catalog: Option<Arc<crate::catalog::Catalog>>,
    ) -> Result<crate::engine::CallResult, ErrorData> {
        let Via {
            peer,
            cancelled,
            quote_json,
        } = via;
        // rmcp moves the request's `_meta` into the context; read both to be safe.
        let metas = [taken_meta, request.meta.as_ref()];
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
        let token = metas.clone().find_map(|m| m.get_progress_token());
        let report = Arc::new(progress::CallReport::new(self.log.clone(), token));
        let ctx = CallContext {
            trace: Some(trace),
            idempotency_key: metas
                .clone()
                .find_map(|m| m.get(IDEMPOTENCY_META).and_then(|v| v.as_str()))
                .map(str::to_owned),
            // Over HTTP, the caller the bearer token proved (see `http::auth`).
            actor,
            // A human's approval comes only from this session's elicitation answers.
            approver: Some(Arc::new(approval::ElicitApprover::new(peer))),
            reporter: Some(report.clone()),
            // rmcp cancels it on `notifications/cancelled` for this request (the direct
            // path does too).
            cancelled: Some(cancelled),
            quote_json,
        };
        let catalog = catalog.unwrap_or_else(|| self.engine.catalog());
        let call = (self.engine).call_on(&catalog, &request.name, request.arguments, &ctx);
        match report.around(&request.name, call).instrument(span).await {
            Ok(result) => Ok(result),
            Err(unknown) => Err(ErrorData::invalid_params(
                format!("{unknown}: tools/list names the tools this server has"),
                None,
            )),
        }
    }

    /// Serves MCP over this process's stdin and stdout until the client goes away.
    ///
    /// # Errors
    /// When the transport fails before the session starts.
    pub(crate) async fn serve_stdio(self) -> Result<(), StdioError> {
        let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
        let transport = stdio::LineTransport::new(stdin, stdout);
        let server = Self {
            stdio: Some(transport.fast()),
            ..self
        };
        let running = server
            .serve(transport)
            .await
            .map_err(|e| StdioError::Handshake(Box::new(e)))?;
        running.waiting().await?;
        Ok(())
    }
}

impl McpServer {
    /// The caller of a request other than `tools/call` (which reads its `_meta` too): who
    /// the transport proved it is, and how to reach the human and the session's log.
    fn context(&self, context: &RequestContext<RoleServer>) -> CallContext {
        CallContext {
            actor: context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.extensions.get::<Arc<Actor>>())
                .cloned(),
            approver: Some(Arc::new(approval::ElicitApprover::new(
                context.peer.clone(),
            ))),
            reporter: Some(Arc::new(progress::CallReport::new(self.log.clone(), None))),
            ..CallContext::default()
        }
    }
}

impl ServerHandler for McpServer {
    // `enable_logging` is deprecated with logging itself (see `set_level`).
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_logging()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_completions()
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

    /// Every tool the caller may call, in one page: a cursor is one this server never
    /// gave out. Over HTTP the caller is the request's bearer token's (so a new token
    /// shows at once), over stdio the current token's.
    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        if let Some(cursor) = request.and_then(|r| r.cursor) {
            return Err(errors::unknown_cursor(&cursor));
        }
        let actor = (context.extensions.get::<axum::http::request::Parts>())
            .and_then(|p| p.extensions.get::<Arc<Actor>>())
            .cloned();
        Ok(ListToolsResult::with_all_items(self.engine.listing(actor)))
    }

    // Subscriptions to a resource's changes are a capability mcpd does not have: -32601
    // saying what it serves (rmcp's own answer carries only the method's name).
    #[allow(deprecated)] // legacy-only (2026-07-28 has subscriptions/listen); still sent
    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Err(errors::unsupported("resources/subscribe"))
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Err(errors::unsupported("resources/unsubscribe"))
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
    /// `notifications/tools/list_changed` (and the resource and prompt lists') after
    /// every catalog swap. Armed at `initialize`, not at `notifications/initialized`: over
    /// HTTP without affinity the two may reach different replicas, and the replica that
    /// answered `initialize` may hold the client's stream (a replica that rebuilds the
    /// session replays `initialize`).
    async fn initialize(
        &self,
        request: rmcp::model::InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let result = self.negotiate_initialize(&request)?;
        if let Some(fast) = &self.stdio {
            fast.register(self, &context.peer);
        }
        // The session's log too (a call waits for it to flush): `initialized` may go to
        // another replica. Starting it twice is harmless.
        self.log.start(context.peer.clone(), &self.engine);
        let mut swaps = self.engine.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            while swaps.changed().await.is_ok() {
                // A reload may change tools, the resources they declare and prompts.
                let sent = async {
                    peer.notify_tool_list_changed().await?;
                    peer.notify_resource_list_changed().await?;
                    peer.notify_prompt_list_changed().await
                };
                if sent.await.is_err() {
                    break; // the client went away
                }
            }
        });
        Ok(result)
    }

    /// The session's log to the client starts once it is initialized (if `initialize`
    /// has not started it).
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.join_live(&context.extensions, &context.peer);
        self.log.start(context.peer.clone(), &self.engine);
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

    // SEP-2577 deprecates logging for 2026-07-28; sessions on earlier versions (every
    // host today) use it, and nobody else sees mcpd's stderr over HTTP.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log.set_level(request.level);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.engine, &self.context(&context)).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates(&self.engine, &self.context(&context)))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let ctx = self.context(&context);
        let span = tracing::info_span!("mcp.request", mcp.method = "resources/read");
        resources::read(&self.engine, &request.uri, &ctx)
            .instrument(span)
            .await
            .map(Into::into)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(prompts::list(&self.engine))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let ctx = self.context(&context);
        let span = tracing::info_span!("mcp.request", mcp.method = "prompts/get");
        prompts::get(&self.engine, &request.name, request.arguments, &ctx)
            .instrument(span)
            .await
            .map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        prompts::complete(&self.engine, request, &self.context(&context)).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.join_live(&context.extensions, &context.peer);
        let actor = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Arc<Actor>>())
            .cloned();
        self.call(
            request,
            Some(&context.meta),
            actor,
            context.peer,
            context.ct,
            None,
        )
        .await
    }
}
