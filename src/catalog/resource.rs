//! A tool served as a resource, and how its results are presented: compiling a tool's
//! `resource:` block (a URI or a URI template over its arguments) and its
//! `response.text`, `response.max_inline_bytes`, `response.keep_for` and
//! `response.resource`, collecting every problem.
//!
//! Owns URI templates: the parts of `runbook://{name}`, which arguments they bind, and
//! matching a URI against them (each `{name}` matches one non-empty path segment,
//! percent-decoded, and becomes the argument with the type its input schema declares).
//! It never reads a resource (the engine calls the tool).

use std::collections::BTreeSet;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

use super::compile::ToolCompiler;
use super::tool::Tool;
use crate::config::ToolSpec;
use crate::config::tool::ResponseSpec;
use crate::response::present::{DEFAULT_KEEP_FOR, DEFAULT_MAX_INLINE, PresentPlan};
use crate::template::Slot;
use crate::util::duration::parse as parse_duration;

/// A tool's resource: its URI (or template) and what `resources/list` says of it.
#[derive(Debug, Clone)]
pub struct ResourceDecl {
    /// The URI or template as written.
    pub uri: String,
    parts: Vec<Part>,
    /// The type each template variable has in the tool's input schema.
    types: Vec<(String, String)>,
    /// The name hosts show.
    pub name: String,
    /// What it holds.
    pub description: String,
    /// Its MIME type, when declared.
    pub mime_type: Option<String>,
    /// Whether the tool is also listed as a tool.
    pub tool: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

impl ResourceDecl {
    /// Whether the URI has `{name}` parts (a template), rather than naming one resource.
    pub fn is_template(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(_)))
    }

    /// The tool's arguments when `uri` matches, else `None`.
    pub fn matches(&self, uri: &str) -> Option<Map<String, Value>> {
        let mut args = Map::new();
        let mut rest = uri;
        let mut parts = self.parts.iter().peekable();
        while let Some(part) = parts.next() {
            match part {
                Part::Literal(l) => rest = rest.strip_prefix(l.as_str())?,
                Part::Var(name) => {
                    // A variable runs to the next literal (or the end), within one segment.
                    let end = match parts.peek() {
                        Some(Part::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.len(),
                    };
                    let raw = rest.get(..end)?;
                    if raw.is_empty() || raw.contains('/') {
                        return None;
                    }
                    let value = percent_decode_str(raw).decode_utf8().ok()?;
                    args.insert(name.clone(), self.typed(name, &value)?);
                    rest = rest.get(end..)?;
                }
            }
        }
        rest.is_empty().then_some(args)
    }

    /// A URI segment as the argument's declared type.
    fn typed(&self, name: &str, value: &str) -> Option<Value> {
        let ty = self
            .types
            .iter()
            .find(|(n, _)| n == name)
            .map_or("string", |(_, t)| t.as_str());
        Some(match ty {
            "integer" => Value::from(value.parse::<i64>().ok()?),
            "number" => Value::from(value.parse::<f64>().ok()?),
            "boolean" => Value::from(value.parse::<bool>().ok()?),
            _ => Value::from(value),
        })
    }
}

/// The parts of a URI template; `Err` says what is wrong with it.
fn parse(uri: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = uri;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("'{{' without '}}' in '{uri}'"))?;
        let name = &after[..close];
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!(
                "'{{{name}}}' is not an argument name (letters, digits, '_'; the simple form of RFC 6570 only)"
            ));
        }
        if matches!(parts.last(), Some(Part::Var(_))) {
            return Err(format!(
                "two parts in a row ('{{...}}{{{name}}}') cannot be told apart: put text between them"
            ));
        }
        parts.push(Part::Var(name.to_owned()));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("'}}' without '{{' in '{uri}'"));
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_owned()));
    }
    Ok(parts)
}

impl ToolCompiler<'_> {
    /// `response.text`, `response.max_inline_bytes`, `response.keep_for`,
    /// `response.resource`.
    pub(super) fn present(&mut self, spec: &ResponseSpec, args: &BTreeSet<String>) -> PresentPlan {
        let text = spec
            .text
            .as_ref()
            .and_then(|t| self.template("response.text", t, Slot::Text, args, &["result", "args"]));
        let embed = spec
            .resource
            .as_ref()
            .and_then(|t| self.template("response.resource", t, Slot::Text, args, &["args"]));
        let max_inline = match &spec.max_inline_bytes {
            None => DEFAULT_MAX_INLINE,
            Some(m) if m.value == 0 => {
                self.err(m.pos, "response.max_inline_bytes", "must be above 0");
                DEFAULT_MAX_INLINE
            }
            Some(m) => m.value,
        };
        let keep_for = match &spec.keep_for {
            None => DEFAULT_KEEP_FOR,
            Some(k) => parse_duration(&k.value).unwrap_or_else(|e| {
                self.err(k.pos, "response.keep_for", e);
                DEFAULT_KEEP_FOR
            }),
        };
        PresentPlan {
            text,
            max_inline,
            keep_for,
            embed,
        }
    }

    /// The `resource:` block: every part an argument the input schema declares, every
    /// required argument a part.
    pub(super) fn resource(
        &mut self,
        spec: &ToolSpec,
        input: &Map<String, Value>,
    ) -> Option<ResourceDecl> {
        let r = spec.resource.as_ref()?;
        let (uri, pos) = (&r.uri.value, r.uri.pos);
        let scheme_ok = uri.split_once("://").is_some_and(|(s, _)| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        if !scheme_ok {
            self.err(
                pos,
                "resource.uri",
                format!("'{uri}' is not a URI: write scheme://..., e.g. runbook://{{name}}"),
            );
            return None;
        }
        if uri.starts_with("mcpd://") {
            self.err(
                pos,
                "resource.uri",
                "mcpd:// is mcpd's own (kept results): choose another scheme",
            );
            return None;
        }
        let parts = parse(uri)
            .map_err(|e| self.err(pos, "resource.uri", e))
            .ok()?;
        let props = input.get("properties").and_then(Value::as_object);
        let vars: Vec<&str> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(v) => Some(v.as_str()),
                Part::Literal(_) => None,
            })
            .collect();
        let mut types = Vec::new();
        for v in &vars {
            match props.and_then(|p| p.get(*v)) {
                Some(schema) => types.push((
                    (*v).to_owned(),
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("string")
                        .to_owned(),
                )),
                None => self.err(
                    pos,
                    "resource.uri",
                    format!("'{{{v}}}' is not an argument the input schema declares"),
                ),
            }
        }
        let required = input.get("required").and_then(Value::as_array);
        for arg in required.into_iter().flatten().filter_map(Value::as_str) {
            if !vars.contains(&arg) {
                self.err(
                    pos,
                    "resource.uri",
                    format!("required argument '{arg}' is not a part of the URI, so a read could never give it: add {{{arg}}}"),
                );
            }
        }
        Some(ResourceDecl {
            uri: uri.clone(),
            parts,
            types,
            name: r
                .name
                .clone()
                .or_else(|| spec.title.clone())
                .unwrap_or_else(|| spec.name.value.clone()),
            description: r
                .description
                .clone()
                .unwrap_or_else(|| spec.description.clone()),
            mime_type: r.mime_type.clone(),
            tool: r.tool,
        })
    }
}

/// The tool declaring `uri` (or a template it matches) and the arguments it gives;
/// exact URIs are tried before templates.
pub fn resolve<'a>(
    tools: &'a [Arc<Tool>],
    uri: &str,
) -> Option<(&'a Arc<Tool>, Map<String, Value>)> {
    let declared = || {
        tools
            .iter()
            .filter_map(|t| t.resource.as_ref().map(|r| (t, r)))
    };
    declared()
        .find(|(_, r)| !r.is_template() && r.uri == uri)
        .or_else(|| declared().find(|(_, r)| r.is_template() && r.matches(uri).is_some()))
        .and_then(|(t, r)| r.matches(uri).map(|args| (t, args)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(uri: &str, types: &[(&str, &str)]) -> ResourceDecl {
        ResourceDecl {
            uri: uri.into(),
            parts: parse(uri).unwrap(),
            types: types
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
            name: "n".into(),
            description: "d".into(),
            mime_type: None,
            tool: true,
        }
    }

    #[test]
    fn a_template_binds_one_decoded_segment_per_part_with_its_declared_type() {
        let d = decl("test://template/{id}/data", &[("id", "integer")]);
        assert!(d.is_template());
        assert_eq!(
            d.matches("test://template/123/data"),
            Some(json!({"id": 123}).as_object().unwrap().clone())
        );
        assert_eq!(
            d.matches("test://template/abc/data"),
            None,
            "not an integer"
        );
        assert_eq!(d.matches("test://template//data"), None, "empty");
        assert_eq!(d.matches("test://template/1/2/data"), None, "two segments");
        assert_eq!(d.matches("test://template/1/data/x"), None, "trailing text");
        let d = decl("runbook://{name}", &[("name", "string")]);
        assert_eq!(
            d.matches("runbook://deploy%20v2"),
            Some(json!({"name": "deploy v2"}).as_object().unwrap().clone())
        );
        assert_eq!(d.matches("runbook://a/../b"), None);
        let exact = decl("test://static-text", &[]);
        assert!(!exact.is_template());
        assert_eq!(exact.matches("test://static-text"), Some(Map::new()));
        assert_eq!(exact.matches("test://static-text2"), None);
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(
            parse("x://{a}{b}")
                .unwrap_err()
                .contains("two parts in a row")
        );
        assert!(parse("x://{a").unwrap_err().contains("without '}'"));
        assert!(
            parse("x://{a-b}")
                .unwrap_err()
                .contains("not an argument name")
        );
        assert!(parse("x://a}").unwrap_err().contains("without '{'"));
    }
}
