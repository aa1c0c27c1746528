//! Prompts and completion: `prompts/list`, `prompts/get` and `completion/complete`.
//!
//! Owns their protocol mapping: the prompts of `prompts.d` from the current snapshot,
//! a prompt's messages rendered with the arguments given (a `resource` or `image`
//! message is read through the engine, as `resources/read` would read it: same caller,
//! same policy), and completion suggestions for a prompt's arguments (fixed values, or
//! a lookup that is a call of a tool by the caller) and for a resource template's parts
//! (the values the tool's input schema lists in `enum`). Suggestions are those starting
//! with what was typed, case-insensitive, at most 100. A failed lookup suggests nothing
//! and says why in the session's log.

use std::collections::HashMap;

use rmcp::ErrorData;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock, GetPromptResult,
    ListPromptsResult, PromptMessage, Reference, ResourceContents,
};
use serde_json::{Map, Value};

use super::content::contents;
use super::resources::failure;
use crate::catalog::{Body, Complete, Prompt};
use crate::engine::{CallContext, Engine, Level, Read, ReadError};

/// `prompts/list`.
pub(crate) fn list(engine: &Engine) -> ListPromptsResult {
    let catalog = engine.catalog();
    ListPromptsResult::with_all_items(catalog.prompts.iter().map(|p| p.listing.clone()).collect())
}

/// `prompts/get`: the prompt's messages for `arguments`.
pub(crate) async fn get(
    engine: &Engine,
    name: &str,
    arguments: Option<Map<String, Value>>,
    ctx: &CallContext,
) -> Result<GetPromptResult, ErrorData> {
    let catalog = engine.catalog();
    let prompt = catalog.prompt(name).ok_or_else(|| {
        ErrorData::invalid_params(
            format!("unknown prompt '{name}': prompts/list names the prompts this server has"),
            None,
        )
    })?;
    let args = arguments.unwrap_or_default();
    check_args(prompt, &args)?;
    let template_args = crate::template::to_value(&Value::Object(args));
    let vars = minijinja::context! { args => template_args };
    let mut messages = Vec::new();
    for m in &prompt.messages {
        let render = |tpl| {
            prompt.templates.render_text(tpl, &vars).map_err(|e| {
                ErrorData::invalid_params(format!("prompt '{}': {e}", prompt.id), None)
            })
        };
        let content = match &m.body {
            Body::Text(t) => ContentBlock::text(render(t)?),
            Body::Resource(t) => ContentBlock::resource(read(engine, &render(t)?, ctx).await?),
            Body::Image(t) => {
                let uri = render(t)?;
                match read(engine, &uri, ctx).await? {
                    ResourceContents::BlobResourceContents {
                        mime_type: Some(mime),
                        blob,
                        ..
                    } if mime.starts_with("image/") => ContentBlock::image(blob, mime),
                    _ => {
                        return Err(ErrorData::internal_error(
                            format!("prompt '{}': resource '{uri}' is not an image", prompt.id),
                            None,
                        ));
                    }
                }
            }
        };
        messages.push(PromptMessage::new(m.role.clone(), content));
    }
    let description = prompt.listing.description.clone().unwrap_or_default();
    Ok(GetPromptResult::new(messages).with_description(description))
}

/// Every required argument given, and no argument the prompt does not have.
fn check_args(prompt: &Prompt, args: &Map<String, Value>) -> Result<(), ErrorData> {
    let names: Vec<&str> = prompt.arguments.iter().map(|a| a.name.as_str()).collect();
    if let Some(unknown) = args.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ErrorData::invalid_params(
            format!(
                "prompt '{}' has no argument '{unknown}' (it has: {})",
                prompt.id,
                names.join(", ")
            ),
            None,
        ));
    }
    let missing: Vec<&str> = (prompt.arguments.iter())
        .filter(|a| a.required && args.get(&a.name).is_none_or(Value::is_null))
        .map(|a| a.name.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ErrorData::invalid_params(
            format!(
                "prompt '{}' needs argument(s) {}",
                prompt.id,
                missing.join(", ")
            ),
            None,
        ))
    }
}

/// A resource a prompt embeds, read as `resources/read` would.
async fn read(
    engine: &Engine,
    uri: &str,
    ctx: &CallContext,
) -> Result<ResourceContents, ErrorData> {
    match engine.read(uri, ctx).await {
        Ok(Read::Kept(k)) => Ok(ResourceContents::TextResourceContents {
            uri: uri.to_owned(),
            mime_type: Some(k.mime),
            text: k.text,
            meta: None,
        }),
        Ok(Read::Called(r)) => match r.outcome {
            Ok(structured) => Ok(contents(uri, &structured, &r.shown)),
            Err(f) => Err(failure(&f)),
        },
        Err(e @ ReadError::NotFound(_)) => Err(ErrorData::resource_not_found(e.to_string(), None)),
        Err(e) => Err(ErrorData::internal_error(e.to_string(), None)),
    }
}

/// `completion/complete`.
pub(crate) async fn complete(
    engine: &Engine,
    request: CompleteRequestParams,
    ctx: &CallContext,
) -> Result<CompleteResult, ErrorData> {
    let typed = request.argument.value.as_str();
    let given = request
        .context
        .and_then(|c| c.arguments)
        .unwrap_or_default();
    let values = match &request.r#ref {
        Reference::Prompt(p) => {
            let catalog = engine.catalog();
            let prompt = catalog.prompt(&p.name).ok_or_else(|| {
                ErrorData::invalid_params(format!("unknown prompt '{}'", p.name), None)
            })?;
            let arg = (prompt.arguments.iter())
                .find(|a| a.name == request.argument.name)
                .ok_or_else(|| {
                    ErrorData::invalid_params(
                        format!(
                            "prompt '{}' has no argument '{}'",
                            prompt.id, request.argument.name
                        ),
                        None,
                    )
                })?;
            match &arg.complete {
                None => Vec::new(),
                Some(Complete::Values(v)) => v.clone(),
                Some(Complete::Lookup {
                    tool, args, select, ..
                }) => lookup(engine, prompt, (tool, args, select), &given, typed, ctx).await,
            }
        }
        Reference::Resource(r) => schema_enum(engine, &r.uri, &request.argument.name, ctx),
        _ => Vec::new(),
    };
    Ok(CompleteResult::new(suggest(values, typed)))
}

/// The values a lookup's tool call returns (none when it fails; the session is told).
async fn lookup(
    engine: &Engine,
    prompt: &Prompt,
    (tool, args, select): (
        &String,
        &Vec<(String, crate::template::Tpl)>,
        &crate::response::jsonpath::JsonPath,
    ),
    given: &HashMap<String, String>,
    typed: &str,
    ctx: &CallContext,
) -> Vec<String> {
    let vars = minijinja::context! {
        args => crate::template::to_value(&serde_json::to_value(given).unwrap_or_default()),
        value => typed,
    };
    let mut call_args = Map::new();
    for (k, t) in args {
        match prompt.templates.render_value(t, &vars) {
            Ok(v) => {
                call_args.insert(k.clone(), v);
            }
            Err(e) => {
                say(
                    ctx,
                    &format!(
                        "prompt '{}': completion lookup: argument '{k}': {e}",
                        prompt.id
                    ),
                );
                return Vec::new();
            }
        }
    }
    let result = match engine.call(tool, Some(call_args), ctx).await {
        Ok(r) => r,
        Err(e) => {
            say(
                ctx,
                &format!("prompt '{}': completion lookup: {e}", prompt.id),
            );
            return Vec::new();
        }
    };
    match result.outcome {
        Ok(v) => select
            .select(&v)
            .into_iter()
            .filter_map(|n| match n {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        Err(f) => {
            say(
                ctx,
                &format!(
                    "prompt '{}': completion lookup via {tool}: {}",
                    prompt.id,
                    f.message()
                ),
            );
            Vec::new()
        }
    }
}

fn say(ctx: &CallContext, message: &str) {
    if let Some(r) = &ctx.reporter {
        r.log(Level::Warning, message);
    }
}

/// The `enum` of the argument a resource template's part binds, for a template the
/// caller's scopes let it read (as `resources/templates/list` shows it).
fn schema_enum(engine: &Engine, template: &str, arg: &str, ctx: &CallContext) -> Vec<String> {
    let catalog = engine.catalog();
    let actor = Engine::lister(&catalog, ctx);
    let found = catalog
        .resources_for(actor.as_deref())
        .find(|(_, r)| r.uri == template);
    let Some((tool, _)) = found else {
        return Vec::new();
    };
    let schema = tool.listing.input_schema.as_ref();
    (schema.get("properties"))
        .and_then(|p| p.get(arg))
        .and_then(|p| p.get("enum"))
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The values starting with `typed` (case-insensitive), without repeats, at most 100.
fn suggest(values: Vec<String>, typed: &str) -> CompletionInfo {
    let typed = typed.to_lowercase();
    let mut matching: Vec<String> = Vec::new();
    for v in values {
        if v.to_lowercase().starts_with(&typed) && !matching.contains(&v) {
            matching.push(v);
        }
    }
    let total = matching.len();
    matching.truncate(CompletionInfo::MAX_VALUES);
    let has_more = total > matching.len();
    CompletionInfo::with_pagination(matching, u32::try_from(total).ok(), has_more)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_start_with_what_was_typed_and_stop_at_100() {
        let s = suggest(
            vec!["Paris".into(), "park".into(), "Lyon".into(), "park".into()],
            "PA",
        );
        assert_eq!(s.values, vec!["Paris", "park"]);
        assert_eq!((s.total, s.has_more), (Some(2), Some(false)));
        let many: Vec<String> = (0..250).map(|i| format!("v{i}")).collect();
        let s = suggest(many, "");
        assert_eq!(s.values.len(), 100);
        assert_eq!((s.total, s.has_more), (Some(250), Some(true)));
    }
}
