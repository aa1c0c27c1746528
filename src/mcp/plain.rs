//! A plain `tools/call`: the request both fast paths (stdio, and the direct path over
//! HTTP) may answer in front of rmcp.
//!
//! Owns reading one straight into rmcp's types and the test of what in a call rmcp
//! alone may read. It decides nothing about the session (whether its client can be
//! asked, whether it is known): each transport does.

use rmcp::model::{
    CallToolRequestMethod, CallToolRequestParams, JsonRpcVersion2_0, RequestId, RequestMetaObject,
};

/// A `tools/call` request with exactly the members clients send, read straight into
/// rmcp's types: rmcp's message type is an untagged enum over a flattened request that
/// buffers the message and tries each kind of message and request in turn (about a
/// hundred allocations a call). Anything else is read by rmcp's type.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlainCall {
    #[allow(dead_code)] // read to check it: "2.0"
    jsonrpc: JsonRpcVersion2_0,
    pub(crate) id: RequestId,
    #[allow(dead_code)] // read to check it: "tools/call"
    method: CallToolRequestMethod,
    pub(crate) params: CallToolRequestParams,
}

impl PlainCall {
    /// `bytes` read as a plain call, if they are one. Its `_meta` stays in the params,
    /// where `McpServer::call` reads it too.
    pub(crate) fn read(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Whether rmcp alone may read the call: it asks for progress, carries per-request
/// protocol metadata (`io.modelcontextprotocol/...`), or is a retry with answers to an
/// earlier `input_required` result. `taken` is the `_meta` rmcp's reader took out of
/// the params, if it read them.
pub(crate) fn for_rmcp(params: &CallToolRequestParams, taken: Option<&RequestMetaObject>) -> bool {
    let streams = [taken, params.meta.as_ref()]
        .into_iter()
        .flatten()
        .any(|m| {
            m.0.0
                .keys()
                .any(|k| k == "progressToken" || k.starts_with("io.modelcontextprotocol/"))
        });
    streams || params.input_responses.is_some() || params.request_state.is_some()
}
