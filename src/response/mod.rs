//! Response mapping: an HTTP reply becomes a tool result or a tool error.
//!
//! Owns status-to-error mapping, the JSONPath selection, per-tool masks, the rule that
//! `structuredContent` is always an object, and refusing a reply too costly to parse
//! (`cost.rs`). It never sends requests.

use serde_json::Value;

use crate::redact;
use crate::template::{TemplateSet, Tpl};

/// Which error statuses a message applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// One status, e.g. 404.
    Exact(u16),
    /// A class, e.g. 4 for `4xx`.
    Class(u16),
}

impl StatusMatch {
    /// Parses `"404"` or `"4xx"`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        if let Some(class) = s.strip_suffix("xx") {
            let c: u16 = class.parse().ok()?;
            return (3..=5).contains(&c).then_some(Self::Class(c));
        }
        let code: u16 = s.parse().ok()?;
        (300..=599).contains(&code).then_some(Self::Exact(code))
    }

    fn matches(self, status: u16) -> bool {
        match self {
            Self::Exact(c) => c == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

pub mod cost;
pub(crate) mod json;
pub mod jsonpath;
pub mod present;

pub use jsonpath::JsonPath as Path;

/// Why a reply could not be mapped, or a path could not be compiled. A message includes
/// its cause: it becomes a tool error or a diagnostic as is (`{}`), not with its sources.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// A JSONPath that does not parse; the parser's message.
    #[error(transparent)]
    InvalidPath(#[from] jsonpath_rust::parser::errors::JsonPathError),
    /// A 2xx body that is not JSON where a selection or mask needs JSON.
    #[error("upstream answered with a body that is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    /// A reply whose parsed form would take more memory than the tool allows.
    #[error(
        "the upstream's reply ({} bytes, {} values in {} objects) would take about {} MB of memory once parsed, more than tool '{tool}' allows ({} times response.max_bytes, {} MB); nothing of it was used: ask for less (a narrower range, a page), or raise response.max_bytes in its tool file",
        shape.bytes, shape.values, shape.objects, shape.parsed_bytes() / 1_000_000,
        cost::PARSED_PER_BYTE, limit / 1_000_000
    )]
    TooCostly {
        /// The tool.
        tool: String,
        /// What the reply holds.
        shape: cost::Shape,
        /// The most its parsed form may take.
        limit: u64,
    },
}

/// How one tool maps replies.
#[derive(Debug, Clone, Default)]
pub struct ResponseMap {
    /// `response.select`.
    pub select: Option<Path>,
    /// `response.mask`.
    pub masks: Vec<Path>,
    /// `response.errors`, most specific first.
    pub errors: Vec<(StatusMatch, Tpl)>,
    /// The most memory a reply may take once parsed, in bytes.
    pub max_parsed: u64,
    /// When a selection is wrapped in an object (`structuredContent` must be one).
    pub wrap: Wrap,
}

/// When a selection is wrapped, under [`ResponseMap::wrap_key`]. With an `output:`
/// schema the schema decides, so every result has the shape `tools/list` advertises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wrap {
    /// No `output:` schema: a selection that is not an object is wrapped.
    #[default]
    NonObjects,
    /// `output:` describes something other than an object: always wrapped.
    Always,
    /// `output:` is an object schema: never wrapped (a non-object selection then fails
    /// the output check).
    Never,
}

/// A successful mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The object sent as `structuredContent` (a non-object only with [`Wrap::Never`],
    /// where the output check refuses it).
    pub structured: Value,
    /// How many values masks replaced.
    pub masked: usize,
    /// The body was text, not JSON: the result is `{"result": "<the text>"}`.
    pub text: bool,
}

impl ResponseMap {
    /// Maps a 2xx body of `tool`'s.
    ///
    /// # Errors
    /// A body that is not JSON where a selection needs JSON; a body too costly to parse.
    pub fn map_success(&self, tool: &str, body: &[u8]) -> Result<Mapped, ResponseError> {
        if let Some(shape) = cost::Shape::over(body, self.max_parsed) {
            return Err(ResponseError::TooCostly {
                tool: tool.to_owned(),
                shape,
                limit: self.max_parsed,
            });
        }
        let mut text = false;
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) if self.select.is_none() && self.masks.is_empty() => {
                text = true;
                Value::String(String::from_utf8_lossy(body).into_owned())
            }
            Err(e) => return Err(ResponseError::NotJson(e)),
        };
        let mut selected = match &self.select {
            None => parsed,
            Some(path) => select(path, parsed),
        };
        let mut masked = 0;
        for m in &self.masks {
            masked += apply_mask(m, &mut selected);
        }
        let structured = match selected {
            Value::Object(_) if self.wrap != Wrap::Always => selected,
            other if self.wrap == Wrap::Never => other,
            other => Value::Object(serde_json::Map::from_iter([(self.wrap_key(), other)])),
        };
        Ok(Mapped {
            structured,
            masked,
            text,
        })
    }

    /// The key a selection is wrapped under: the select path's last name, else `result`.
    pub fn wrap_key(&self) -> String {
        self.select
            .as_ref()
            .map_or_else(|| "result".to_owned(), wrap_key)
    }

    /// The selection inside a mapped result, and its JSON pointer there (`""` when the
    /// result is the selection itself).
    pub fn selection<'v>(&self, structured: &'v Value) -> (&'v Value, String) {
        if self.wrap != Wrap::Always {
            return (structured, String::new());
        }
        let key = self.wrap_key();
        let inner = structured.get(&key).unwrap_or(&Value::Null);
        (
            inner,
            format!("/{}", key.replace('~', "~0").replace('/', "~1")),
        )
    }

    /// The message for an error status.
    pub fn error_message(
        &self,
        templates: &TemplateSet,
        upstream: &str,
        status: u16,
        body: &[u8],
        args: &Value,
    ) -> String {
        // A body too costly to parse is shown as text (its excerpt is short anyway).
        let affordable = cost::Shape::over(body, self.max_parsed).is_none();
        let parsed: Value = affordable
            .then(|| serde_json::from_slice(body).ok())
            .flatten()
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
        let custom = self
            .errors
            .iter()
            .find(|(m, _)| m.matches(status))
            .map(|(_, tpl)| {
                let ctx = minijinja::context! {
                    args => crate::template::to_value(args),
                    status => status,
                    body => crate::template::to_value(&parsed),
                };
                templates.render_text(tpl, &ctx)
            });
        match custom {
            Some(Ok(msg)) => msg,
            other => {
                let detail = excerpt(&parsed);
                let mut msg = format!("upstream '{upstream}' answered HTTP {status}");
                if (300..400).contains(&status) {
                    msg.push_str(" (a redirect; mcpd does not follow redirects)");
                }
                if !detail.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&detail);
                }
                if let Some(Err(e)) = other {
                    tracing::warn!(status, error = %e, "error message template failed");
                }
                msg
            }
        }
    }
}

fn select(path: &Path, mut value: Value) -> Value {
    // One node: moved out of the parsed body, not copied.
    if let Some(one) = path.take(&mut value) {
        return one.unwrap_or(Value::Null);
    }
    let found = path.select(&value);
    if path.is_multi() {
        Value::Array(found.into_iter().cloned().collect())
    } else {
        found.into_iter().next().cloned().unwrap_or(Value::Null)
    }
}

fn apply_mask(path: &Path, value: &mut Value) -> usize {
    path.update(value, &mut redact::mask_value)
}

/// The key a non-object selection is wrapped under in `structuredContent`: the path's
/// last name (`$.orders` → `orders`), else `result`.
pub fn wrap_key(path: &Path) -> String {
    path.last_name().unwrap_or("result").to_owned()
}

/// A short, single-line excerpt of an error body: its `error`/`message` field if any.
fn excerpt(body: &Value) -> String {
    const MAX: usize = 200;
    let text = match body {
        Value::Object(o) => ["error", "message", "detail"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| body.to_string()),
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX {
        format!("{}…", line.chars().take(MAX).collect::<String>())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(select: Option<&str>, masks: &[&str]) -> ResponseMap {
        ResponseMap {
            select: select.map(|s| Path::compile(s).unwrap()),
            masks: masks.iter().map(|m| Path::compile(m).unwrap()).collect(),
            errors: vec![],
            max_parsed: 1_000_000,
            wrap: Wrap::NonObjects,
        }
    }

    #[test]
    fn selected_list_is_wrapped_under_its_name_and_masked() {
        let body = json!({"orders": [{"id": 1, "email": "ann@example.com"}, {"id": 2, "email": "bob@example.org"}]});
        let m = map(Some("$.orders"), &["$[*].email"])
            .map_success("t", body.to_string().as_bytes())
            .unwrap();
        assert_eq!(m.masked, 2);
        assert_eq!(
            m.structured,
            json!({"orders": [{"id": 1, "email": "a***@example.com"}, {"id": 2, "email": "b***@example.org"}]})
        );
    }

    #[test]
    fn object_body_is_structured_content_as_is() {
        let m = map(None, &[])
            .map_success("t", br#"{"percent": 10}"#)
            .unwrap();
        assert_eq!(m.structured, json!({"percent": 10}));
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_when_a_selection_needs_json() {
        let err = map(Some("$.orders"), &[])
            .map_success("t", b"<html>")
            .unwrap_err();
        assert!(matches!(err, ResponseError::NotJson(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "upstream answered with a body that is not JSON (expected value at line 1 column 1)"
        );
    }

    #[test]
    fn a_non_object_output_schema_wraps_every_selection_even_an_object() {
        let mut m = map(Some("$.data"), &[]);
        m.wrap = Wrap::Always;
        let list = m.map_success("t", br#"{"data": [1, 2]}"#).unwrap();
        assert_eq!(list.structured, json!({"data": [1, 2]}));
        let object = m.map_success("t", br#"{"data": {"a": 1}}"#).unwrap();
        assert_eq!(object.structured, json!({"data": {"a": 1}}));
        assert_eq!(
            m.selection(&object.structured),
            (&json!({"a": 1}), "/data".to_owned())
        );
    }

    #[test]
    fn an_object_output_schema_never_wraps_so_a_list_fails_its_check() {
        let mut m = map(Some("$.data"), &[]);
        m.wrap = Wrap::Never;
        let list = m.map_success("t", br#"{"data": [1, 2]}"#).unwrap();
        assert_eq!(list.structured, json!([1, 2]));
        assert_eq!(
            m.selection(&list.structured),
            (&json!([1, 2]), String::new())
        );
    }

    #[test]
    fn status_classes_parse() {
        assert_eq!(StatusMatch::parse("404"), Some(StatusMatch::Exact(404)));
        assert_eq!(StatusMatch::parse("5xx"), Some(StatusMatch::Class(5)));
        assert_eq!(StatusMatch::parse("200"), None);
        assert_eq!(StatusMatch::parse("nope"), None);
    }

    #[test]
    fn generic_error_names_upstream_status_and_error_field() {
        let msg = map(None, &[]).error_message(
            &TemplateSet::new(),
            "flags",
            422,
            br#"{"error": "percent must be 0-100"}"#,
            &json!({}),
        );
        assert_eq!(
            msg,
            "upstream 'flags' answered HTTP 422: percent must be 0-100"
        );
    }
}
