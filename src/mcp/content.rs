//! An engine result as MCP content: `tools/call` results and `resources/read`
//! contents.
//!
//! Owns the content blocks of a result: the text the model reads (the tool's
//! `response.text` rendering, a text reply's text, or the result's JSON), image and
//! audio blocks for media replies, an embedded resource for `response.resource`, and
//! for a result kept behind a link its summary, its first rows and a `resource_link`;
//! `structuredContent` is the result's JSON (its first rows when linked; none for
//! media). Failures are `isError` results whose text says what to change. It decides
//! nothing about the result itself.

use base64::Engine as _;
use rmcp::model::{CallToolResult, ContentBlock, MetaObject, Resource, ResourceContents};
use serde_json::Value;

use super::{IDEMPOTENCY_META, OUTCOME_META, REPLAYED_META};
use crate::engine::{CallResult, Shown};

/// The result `_meta` key that names where a result too large to send inline is kept.
pub(crate) const LINK_META: &str = "dev.mcpd/result";

/// Turns an engine result into an MCP tool result.
pub(crate) fn to_mcp_result(r: CallResult) -> CallToolResult {
    let mut meta = serde_json::Map::new();
    let mut result = match r.outcome {
        Ok(structured) => success(structured, r.shown, &mut meta),
        Err(f) => CallToolResult::error(vec![ContentBlock::text(f.message())]),
    };
    // A keyed call says which key it ran under, and whether this is a stored result.
    if let Some(key) = r.idempotency_key {
        meta.insert(IDEMPOTENCY_META.to_owned(), key.into());
        meta.insert(REPLAYED_META.to_owned(), r.replayed.into());
        if r.held {
            meta.insert(OUTCOME_META.to_owned(), "unknown".into());
        }
    }
    if !meta.is_empty() {
        result.meta = Some(MetaObject(meta));
    }
    result
}

fn success(
    structured: Value,
    mut shown: Shown,
    meta: &mut serde_json::Map<String, Value>,
) -> CallToolResult {
    let mut blocks = Vec::new();
    if let Some(link) = &shown.link {
        blocks.push(ContentBlock::text(link.summary.clone()));
        meta.insert(
            LINK_META.to_owned(),
            serde_json::json!({ "uri": link.uri, "bytes": link.bytes }),
        );
    }
    let base64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    match &shown.media {
        Some((mime, data)) => {
            if let Some(text) = &shown.text {
                blocks.push(ContentBlock::text(text.clone()));
            }
            let block = if mime.starts_with("audio/") {
                ContentBlock::audio(base64(data), mime.clone())
            } else {
                ContentBlock::image(base64(data), mime.clone())
            };
            blocks.push(block);
        }
        None => blocks.push(ContentBlock::text(match (&shown.text, shown.json.take()) {
            (Some(text), _) => text.clone(),
            (None, Some(json)) => json,
            (None, None) => structured.to_string(),
        })),
    }
    if let Some(uri) = &shown.embed {
        blocks.push(ContentBlock::resource(contents(uri, &structured, &shown)));
    }
    if let Some(link) = &shown.link {
        let name = link.uri.rsplit('/').next().unwrap_or("result").to_owned();
        let resource = Resource::new(link.uri.clone(), name)
            .with_mime_type(link.mime.clone())
            .with_size(link.bytes)
            .with_description("the whole result; only its caller can read it, until it expires");
        blocks.push(ContentBlock::resource_link(resource));
    }
    let mut result = CallToolResult::success(blocks);
    if shown.media.is_none() {
        result.structured_content = Some(structured);
    }
    result
}

/// A result as the contents of the resource `uri`: media as a blob, a text reply as its
/// text, anything else as JSON.
pub(crate) fn contents(uri: &str, structured: &Value, shown: &Shown) -> ResourceContents {
    if let Some((mime, data)) = &shown.media {
        return ResourceContents::BlobResourceContents {
            uri: uri.to_owned(),
            mime_type: Some(mime.clone()),
            blob: base64::engine::general_purpose::STANDARD.encode(data),
            meta: None,
        };
    }
    let text_reply = (shown.mime.as_deref())
        .filter(|m| m.starts_with("text/"))
        .zip(structured.get("result").and_then(Value::as_str));
    let (mime, text) = match text_reply {
        Some((mime, text)) => (Some(mime.to_owned()), text.to_owned()),
        None => (Some("application/json".to_owned()), structured.to_string()),
    };
    ResourceContents::TextResourceContents {
        uri: uri.to_owned(),
        mime_type: mime,
        text,
        meta: None,
    }
}
