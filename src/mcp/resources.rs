//! Resources: `resources/list`, `resources/templates/list` and `resources/read`.
//!
//! Owns their protocol mapping: the tools declared as resources (a URI is listed, a URI
//! template is a resource template), the caller's own kept results (listed with their
//! size and expiry), and a read's contents or its JSON-RPC error. Reads go through the
//! engine ([`Engine::read`]): a declared resource is a call of its tool, a kept result
//! is served to the actor who made it only. It decides nothing about who may read what.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use super::content::contents;
use crate::engine::{CallContext, Engine, Failure, Read, ReadError};

/// `resources/list`: the declared resources without template parts the caller's scopes
/// let it read, then the caller's kept results.
pub(crate) async fn list(
    engine: &Engine,
    ctx: &CallContext,
) -> Result<ListResourcesResult, ErrorData> {
    let catalog = engine.catalog();
    let actor = Engine::lister(&catalog, ctx);
    let mut items: Vec<Resource> = (catalog.resources_for(actor.as_deref()))
        .filter(|(_, r)| !r.is_template())
        .map(|(_, r)| {
            let mut res = Resource::new(r.uri.clone(), r.name.clone())
                .with_description(r.description.clone());
            if let Some(m) = &r.mime_type {
                res = res.with_mime_type(m.clone());
            }
            res
        })
        .collect();
    let kept = engine.kept(ctx).await.map_err(internal)?;
    for k in kept {
        let name = k.uri.rsplit('/').next().unwrap_or("result").to_owned();
        items.push(
            Resource::new(k.uri, name)
                .with_title(format!("result of {}", k.kept.tool))
                .with_description(
                    "a result too large to send inline, kept for you until it expires",
                )
                .with_mime_type(k.kept.mime)
                .with_size(k.kept.text.len() as u64),
        );
    }
    Ok(ListResourcesResult::with_all_items(items))
}

/// `resources/templates/list`: the declared resources with template parts the caller's
/// scopes let it read.
pub(crate) fn templates(engine: &Engine, ctx: &CallContext) -> ListResourceTemplatesResult {
    let catalog = engine.catalog();
    let actor = Engine::lister(&catalog, ctx);
    let items = (catalog.resources_for(actor.as_deref()))
        .filter(|(_, r)| r.is_template())
        .map(|(_, r)| {
            let mut t = ResourceTemplate::new(r.uri.clone(), r.name.clone())
                .with_description(r.description.clone());
            if let Some(m) = &r.mime_type {
                t = t.with_mime_type(m.clone());
            }
            t
        })
        .collect();
    ListResourceTemplatesResult::with_all_items(items)
}

/// `resources/read`.
pub(crate) async fn read(
    engine: &Engine,
    uri: &str,
    ctx: &CallContext,
) -> Result<ReadResourceResult, ErrorData> {
    let found = engine.read(uri, ctx).await.map_err(|e| match e {
        ReadError::NotFound(_) => ErrorData::resource_not_found(e.to_string(), None),
        ReadError::Unauthenticated(_) => ErrorData::invalid_request(e.to_string(), None),
        ReadError::State(_) => internal(e),
    })?;
    let content = match found {
        Read::Kept(k) => ResourceContents::TextResourceContents {
            uri: uri.to_owned(),
            mime_type: Some(k.mime),
            text: k.text,
            meta: None,
        },
        Read::Called(result) => {
            let result = *result;
            match result.outcome {
                Ok(structured) => {
                    let mut c = contents(uri, &structured, &result.shown);
                    if let Some(declared) = declared_mime(engine, uri) {
                        set_mime(&mut c, declared);
                    }
                    c
                }
                Err(f) => return Err(failure(&f)),
            }
        }
    };
    Ok(ReadResourceResult::new(vec![content]))
}

/// The MIME type the tool file declares for the resource at `uri`, if any.
fn declared_mime(engine: &Engine, uri: &str) -> Option<String> {
    let catalog = engine.catalog();
    crate::catalog::resolve(&catalog.tools, uri)
        .and_then(|(t, _)| t.resource.as_ref())
        .and_then(|r| r.mime_type.clone())
}

fn set_mime(c: &mut ResourceContents, mime: String) {
    match c {
        ResourceContents::TextResourceContents { mime_type, .. }
        | ResourceContents::BlobResourceContents { mime_type, .. } => *mime_type = Some(mime),
        _ => {}
    }
}

/// A tool's failure, read as a resource: the same words as its `isError` text.
pub(crate) fn failure(f: &Failure) -> ErrorData {
    match f {
        Failure::InvalidArguments(_) => ErrorData::invalid_params(f.message(), None),
        Failure::Denied(_) | Failure::Unauthenticated(_) | Failure::Limited(_) => {
            ErrorData::invalid_request(f.message(), None)
        }
        _ => ErrorData::internal_error(f.message(), None),
    }
}

fn internal(e: ReadError) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}
