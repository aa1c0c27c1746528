//! OpenAPI 3.0 / 3.1 → tool files: one tool per operation (`mcpd import openapi`).
//!
//! The spec is walked as plain JSON (parsed from YAML or JSON) rather than through a
//! typed OpenAPI model: the typed crates cover either 3.0 (`openapiv3`) or 3.1, and the
//! importer needs few fields (paths, operations, parameters, request bodies, responses,
//! security schemes) plus schemas passed through almost verbatim. Local `$ref`s are
//! inlined, because a tool's input schema stands alone. It must not write files: the
//! CLI decides where the generated text goes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value, json};

mod schema;

/// Methods a tool may use, in the order operations are read.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// What to import.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// The upstream name (from `mcpd.yaml`) the tools call.
    pub upstream: String,
    /// Only operations with one of these tags (all when empty).
    pub tags: Vec<String>,
}

/// One generated tool file.
#[derive(Debug, Clone)]
pub(crate) struct Generated {
    /// The tool id, e.g. `petstore.list_pets`.
    pub id: String,
    /// `METHOD /path` of the operation.
    pub operation: String,
    /// The file's text (YAML).
    pub yaml: String,
}

/// The result of an import.
#[derive(Debug, Clone, Default)]
pub(crate) struct Import {
    /// One tool per imported operation.
    pub tools: Vec<Generated>,
    /// What was left out or needs a human, one line each.
    pub notes: Vec<String>,
    /// The first server URL of the spec, for the upstream's `url`.
    pub server_url: Option<String>,
}

/// Why a spec cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// Not YAML or JSON.
    #[error("the spec does not parse: {0}")]
    Parse(String),
    /// Not an OpenAPI 3 document.
    #[error("not an OpenAPI 3 document: {0}")]
    NotOpenApi(String),
    /// The upstream name cannot be used in tool ids.
    #[error("upstream name '{0}' must be letters, digits, '_' or '-' (e.g. petstore)")]
    Upstream(String),
}

/// Parses a spec (YAML or JSON).
///
/// # Errors
/// When the text parses as neither, or is not an OpenAPI 3.x document.
pub(crate) fn parse(text: &str) -> Result<Value, ImportError> {
    let doc: Value = serde_json::from_str(text)
        .or_else(|_| serde_saphyr::from_str::<Value>(text))
        .map_err(|e| ImportError::Parse(e.to_string()))?;
    // `openapi: 3.1` unquoted reads as a number.
    let version = match doc.get("openapi") {
        Some(Value::String(v)) => Some(v.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match version {
        Some(v) if v.starts_with("3.") => Ok(doc),
        Some(v) => Err(ImportError::NotOpenApi(format!(
            "version {v}; convert Swagger 2 specs to OpenAPI 3 first"
        ))),
        None => Err(ImportError::NotOpenApi(
            "no 'openapi: 3.x' field at the top".to_owned(),
        )),
    }
}

/// A name usable as an upstream and in tool ids, from the spec's title.
pub(crate) fn default_upstream(doc: &Value) -> String {
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("api");
    let name = snake(title);
    if name.is_empty() {
        "api".to_owned()
    } else {
        name
    }
}

/// Generates one tool per operation.
///
/// # Errors
/// When the upstream name is unusable.
pub(crate) fn import(doc: &Value, opts: &Options) -> Result<Import, ImportError> {
    let ok_name = !opts.upstream.is_empty()
        && opts
            .upstream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok_name {
        return Err(ImportError::Upstream(opts.upstream.clone()));
    }
    let mut out = Import {
        server_url: doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Import::default()
    };
    let resolver = schema::Resolver::new(doc);
    let mut ids = BTreeSet::new();
    let paths = doc.get("paths").and_then(Value::as_object);
    for (path, item) in paths.into_iter().flatten() {
        let item = resolver.deref(item);
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let operation = format!("{} {path}", method.to_uppercase());
            if !opts.tags.is_empty() && !has_tag(op, &opts.tags) {
                continue;
            }
            let mut notes = Vec::new();
            match tool(&resolver, opts, path, method, &item, op, &mut notes) {
                Some(mut t) => {
                    let id = unique(&mut ids, t.name.clone());
                    t.name.clone_from(&id);
                    let yaml = render(&t, &operation);
                    out.tools.push(Generated {
                        id,
                        operation: operation.clone(),
                        yaml,
                    });
                }
                None => notes.push("skipped".to_owned()),
            }
            out.notes
                .extend(notes.into_iter().map(|n| format!("{operation}: {n}")));
        }
        for other in ["head", "options", "trace"] {
            if item.get(other).is_some() {
                out.notes.push(format!(
                    "{} {path}: skipped (tools use GET, POST, PUT, PATCH or DELETE)",
                    other.to_uppercase()
                ));
            }
        }
    }
    if out.tools.is_empty() && !opts.tags.is_empty() {
        out.notes
            .push(format!("no operation is tagged {}", opts.tags.join(" or ")));
    }
    Ok(out)
}

fn has_tag(op: &Value, tags: &[String]) -> bool {
    op.get("tags")
        .and_then(Value::as_array)
        .is_some_and(|t| t.iter().any(|t| tags.iter().any(|w| t == w.as_str())))
}

/// The tool file, in the order a person would write it.
#[derive(Debug, Serialize)]
struct ToolOut {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    description: String,
    annotations: BTreeMap<&'static str, bool>,
    input: Value,
    request: RequestOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency: Option<IdempotencyOut>,
}

#[derive(Debug, Serialize)]
struct RequestOut {
    upstream: String,
    method: String,
    path: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    query: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

#[derive(Debug, Serialize)]
struct ResponseOut {
    select: String,
}

#[derive(Debug, Serialize)]
struct IdempotencyOut {
    key: String,
    ttl: &'static str,
}

fn tool(
    resolver: &schema::Resolver<'_>,
    opts: &Options,
    path: &str,
    method: &str,
    item: &Value,
    op: &Value,
    notes: &mut Vec<String>,
) -> Option<ToolOut> {
    let op_id = op.get("operationId").and_then(Value::as_str);
    let base = op_id.map_or_else(|| snake(&format!("{method} {path}")), snake);
    let name: String = format!("{}.{base}", opts.upstream)
        .chars()
        .take(64)
        .collect();

    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut taken = BTreeSet::new();
    let mut query = BTreeMap::new();
    let mut renames: BTreeMap<String, String> = BTreeMap::new();
    for param in parameters(resolver, item, op) {
        let Some(pname) = param.get("name").and_then(Value::as_str) else {
            notes.push("a parameter without a name was left out".to_owned());
            continue;
        };
        let location = param.get("in").and_then(Value::as_str).unwrap_or_default();
        if !matches!(location, "path" | "query") {
            notes.push(format!(
                "{location} parameter '{pname}' left out: add it to request.headers by hand if the API needs it"
            ));
            continue;
        }
        let arg = unique(&mut taken, ident(pname));
        let mut schema = param
            .get("schema")
            .or_else(|| param.pointer("/content/application~1json/schema"))
            .map_or_else(|| json!({"type": "string"}), |s| resolver.schema(s));
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), param.get("description")) {
            obj.entry("description").or_insert_with(|| d.clone());
        }
        let is_array = schema.get("type").and_then(Value::as_str) == Some("array");
        properties.insert(arg.clone(), schema);
        let must = location == "path" || param.get("required") == Some(&Value::Bool(true));
        if must {
            required.push(json!(arg));
        }
        if location == "path" {
            renames.insert(pname.to_owned(), arg);
        } else {
            let value = match (must, is_array) {
                (true, false) => format!("{{{{ args.{arg} }}}}"),
                (false, false) => format!("{{{{ args.{arg} | default('') }}}}"),
                (true, true) => format!("{{{{ args.{arg} | join(',') }}}}"),
                (false, true) => format!("{{{{ args.{arg} | default([]) | join(',') }}}}"),
            };
            query.insert(pname.to_owned(), value);
        }
    }

    let mut body = None;
    if let Some(rb) = op.get("requestBody") {
        let rb = resolver.deref(rb);
        let content = rb.get("content").and_then(Value::as_object);
        let json_schema = content.and_then(|c| {
            c.iter().find(|(media, _)| is_json(media)).map(|(_, m)| {
                m.get("schema")
                    .map_or_else(|| json!({}), |s| resolver.schema(s))
            })
        });
        match json_schema {
            Some(schema) => {
                let arg = unique(&mut taken, "body".to_owned());
                let must = rb.get("required") == Some(&Value::Bool(true));
                let mut schema = schema;
                if let (Some(obj), Some(d)) = (schema.as_object_mut(), rb.get("description")) {
                    obj.entry("description").or_insert_with(|| d.clone());
                }
                properties.insert(arg.clone(), schema);
                if must {
                    required.push(json!(arg));
                    body = Some(format!("{{{{ args.{arg} }}}}"));
                } else {
                    body = Some(format!("{{{{ args.{arg} | default(none) }}}}"));
                }
            }
            None => {
                notes.push(
                    "the request body is not JSON (form or file upload): tools send JSON bodies"
                        .to_owned(),
                );
                return None;
            }
        }
    }

    let mut tpl_path = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest.get(open..).and_then(|r| r.find('}')).map(|c| c + open) else {
            break;
        };
        tpl_path.push_str(rest.get(..open).unwrap_or_default());
        let pname = rest.get(open + 1..close).unwrap_or_default();
        let arg = match renames.get(pname) {
            Some(a) => a.clone(),
            None => {
                // A path parameter the spec forgot to declare: declare it as a string.
                let a = unique(&mut taken, ident(pname));
                properties.insert(a.clone(), json!({"type": "string"}));
                required.push(json!(a));
                notes.push(format!(
                    "path parameter '{pname}' is not declared; imported as a string"
                ));
                a
            }
        };
        tpl_path.push_str(&format!("{{{{ args.{arg} }}}}"));
        rest = rest.get(close + 1..).unwrap_or_default();
    }
    tpl_path.push_str(rest);

    let mut input = Map::new();
    input.insert("type".to_owned(), json!("object"));
    input.insert("additionalProperties".to_owned(), json!(false));
    input.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        input.insert("required".to_owned(), Value::Array(required));
    }
    let input = Value::Object(input);

    let write = method != "get";
    let mut annotations = BTreeMap::new();
    annotations.insert("readOnlyHint", !write);
    annotations.insert("openWorldHint", false);
    if write {
        annotations.insert("destructiveHint", method == "delete");
        annotations.insert("idempotentHint", matches!(method, "put" | "delete"));
    }
    let summary = op.get("summary").and_then(Value::as_str).map(str::trim);
    let detail = op.get("description").and_then(Value::as_str).map(str::trim);
    let operation = format!("{} {path}", method.to_uppercase());
    let description = match (summary, detail) {
        (Some(s), Some(d)) if !d.is_empty() => format!("{s}. {d} ({operation})"),
        (Some(s), _) => format!("{s} ({operation})"),
        (None, Some(d)) => format!("{d} ({operation})"),
        (None, None) => format!("Calls {operation} on the {} API.", opts.upstream),
    };
    Some(ToolOut {
        title: summary.map(str::to_owned),
        description,
        annotations,
        input,
        request: RequestOut {
            upstream: opts.upstream.clone(),
            method: method.to_uppercase(),
            path: tpl_path,
            query,
            headers: security_headers(resolver, op, &opts.upstream, notes),
            body,
        },
        response: select_for(resolver, op).map(|select| ResponseOut { select }),
        idempotency: write.then(|| IdempotencyOut {
            key: format!("{name}:{{{{ args | tojson }}}}"),
            ttl: "24h",
        }),
        name,
    })
}

/// Path-level parameters overridden by the operation's (same name and location).
fn parameters(resolver: &schema::Resolver<'_>, item: &Value, op: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for list in [item.get("parameters"), op.get("parameters")] {
        for p in list.and_then(Value::as_array).into_iter().flatten() {
            let p = resolver.deref(p);
            let key = (p.get("name").cloned(), p.get("in").cloned());
            out.retain(|q| (q.get("name").cloned(), q.get("in").cloned()) != key);
            out.push(p);
        }
    }
    out
}

fn is_json(media: &str) -> bool {
    let m = media.split(';').next().unwrap_or_default().trim();
    m == "application/json" || m.ends_with("+json")
}

/// `$.field` when the success response is an object with exactly one list in it
/// (`{"items": [...], "next": ...}`), so the tool returns the list.
fn select_for(resolver: &schema::Resolver<'_>, op: &Value) -> Option<String> {
    let responses = op.get("responses")?.as_object()?;
    let (_, ok) = responses.iter().find(|(code, _)| code.starts_with('2'))?;
    let ok = resolver.deref(ok);
    let schema = ok
        .get("content")?
        .as_object()?
        .iter()
        .find(|(m, _)| is_json(m))?
        .1
        .get("schema")?;
    let schema = resolver.schema(schema);
    let props = schema.get("properties")?.as_object()?;
    let lists: Vec<&String> = props
        .iter()
        .filter(|(_, s)| s.get("type").and_then(Value::as_str) == Some("array"))
        .map(|(k, _)| k)
        .collect();
    match lists.as_slice() {
        [one] if one.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Some(format!("$.{one}"))
        }
        _ => None,
    }
}

/// Headers for the operation's security (or the spec's default security): bearer
/// tokens and header API keys read from an environment variable named after the
/// upstream; other schemes are noted for a human.
fn security_headers(
    resolver: &schema::Resolver<'_>,
    op: &Value,
    upstream: &str,
    notes: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    let Some(reqs) = op
        .get("security")
        .or_else(|| resolver.doc.get("security"))
        .and_then(Value::as_array)
    else {
        return headers;
    };
    // The first alternative is enough: any one of them satisfies the API.
    let Some(first) = reqs.first().and_then(Value::as_object) else {
        return headers;
    };
    let prefix = upstream.to_uppercase().replace('-', "_");
    for scheme_name in first.keys() {
        let pointer = format!(
            "/components/securitySchemes/{}",
            escape_pointer(scheme_name)
        );
        let Some(scheme) = resolver.doc.pointer(&pointer).map(|s| resolver.deref(s)) else {
            continue;
        };
        let kind = scheme
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let http_scheme = scheme
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match (kind, http_scheme.to_ascii_lowercase().as_str()) {
            ("http", "bearer") | ("oauth2" | "openIdConnect", _) => {
                headers.insert(
                    "Authorization".to_owned(),
                    format!("Bearer {{{{ secret.{prefix}_TOKEN }}}}"),
                );
            }
            ("apiKey", _) if scheme.get("in").and_then(Value::as_str) == Some("header") => {
                if let Some(h) = scheme.get("name").and_then(Value::as_str) {
                    headers.insert(h.to_owned(), format!("{{{{ secret.{prefix}_API_KEY }}}}"));
                }
            }
            _ => notes.push(format!(
                "security scheme '{scheme_name}' ({kind}) is not mapped: add its header by hand"
            )),
        }
    }
    headers
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn render(t: &ToolOut, operation: &str) -> String {
    let yaml = serde_saphyr::to_string(t).unwrap_or_default();
    format!(
        "# Generated by `mcpd import openapi` from {operation}; edit freely.\n\
         # Check it with `mcpd validate`; add a golden and an adversarial case in tests.d/.\n{yaml}"
    )
}

/// `listPets` → `list_pets`, `GET /pets/{id}` → `get_pets_id`.
fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    out.trim_end_matches('_').to_owned()
}

/// A name usable as `args.NAME` in a template.
fn ident(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `name`, or `name_2`, `name_3`, ... when taken; records the result.
fn unique(taken: &mut BTreeSet<String>, name: String) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_snake_case_ids_and_template_identifiers() {
        assert_eq!(snake("listPets"), "list_pets");
        assert_eq!(snake("get /pets/{petId}"), "get_pets_pet_id");
        assert_eq!(snake("Swagger Petstore"), "swagger_petstore");
        assert_eq!(ident("pet-id"), "pet_id");
        assert_eq!(ident("2fa"), "_2fa");
        let mut taken = BTreeSet::new();
        assert_eq!(unique(&mut taken, "a".into()), "a");
        assert_eq!(unique(&mut taken, "a".into()), "a_2");
    }

    #[test]
    fn swagger_2_is_refused_with_what_to_do() {
        let err = parse("swagger: '2.0'\npaths: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no 'openapi: 3.x'"), "{err}");
        let err = parse("openapi: '2.0'\n").unwrap_err().to_string();
        assert!(err.contains("convert Swagger 2"), "{err}");
    }
}
