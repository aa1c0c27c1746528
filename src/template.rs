//! Templates: minijinja sources compiled once per catalog, rendered on the call path.
//!
//! Owns the rules of the file format: undefined variables are errors, a string that is
//! exactly `{{ expr }}` keeps its JSON type, values inserted into a URL path are encoded
//! as one path segment. It never sees the network and never logs what it renders
//! (rendered strings may hold secrets).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters encoded in a path segment: all but RFC 3986's unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The auto-escape mode of path templates; the formatter encodes what they insert.
const PATH_ESCAPE: &str = "path-segment";

/// A template name suffix that turns on path-segment encoding.
const PATH_SUFFIX: &str = "#path";

/// Fuel per render: bounds a runaway template (a loop over a huge range) to a few ms.
const FUEL: u64 = 100_000;

/// Globals minijinja provides; they are not variables a template must be given.
const BUILTIN_GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "true",
    "false",
    "none",
];

/// Where a template is used, which decides how its output is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Rendered to a string.
    Text,
    /// Rendered to a string; each inserted value is URL-encoded as a path segment.
    Path,
    /// A JSON value: exactly `{{ expr }}` keeps the value's type, anything else is a string.
    Value,
}

/// One compiled template, referred to by name inside its [`TemplateSet`].
#[derive(Debug, Clone, PartialEq)]
pub enum Tpl {
    /// A string with no template syntax: used as is, no engine involved.
    Literal(String),
    /// A template rendered to a string.
    Text(String),
    /// `{{ expr }}` in a value slot: rendered through `tojson` and parsed back.
    Typed(String),
}

/// A template that does not compile, as minijinja describes it (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(String);

/// An error while rendering; never carries rendered output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

/// All templates of one catalog, in one minijinja environment.
///
/// A template is compiled when it is added (to report its syntax errors and the
/// variables it reads) and that compiled form is dropped; the environment compiles it
/// again on its first render and keeps it from then on. A compiled template holds
/// about 13 KB however short it is, so a thousand tools that are never called hold
/// none.
pub struct TemplateSet {
    env: Environment<'static>,
    /// The source of every template added, by its name in the environment: what the
    /// environment's loader compiles on first use.
    sources: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TemplateSet")
    }
}

impl Default for TemplateSet {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateSet {
    /// An empty set with mcpd's rules: strict undefined, fuel, path-segment escaping.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(|name| {
            if name.ends_with(PATH_SUFFIX) {
                AutoEscape::Custom(PATH_ESCAPE.into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(name) if name == PATH_ESCAPE) {
                let text = value.to_string();
                if text == "." || text == ".." {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        "a path segment may not be '.' or '..'",
                    ));
                }
                write!(out, "{}", utf8_percent_encode(&text, SEGMENT)).map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                })
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        let sources: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let lookup = sources.clone();
        env.set_loader(move |name| {
            Ok(lookup
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .cloned())
        });
        Self { env, sources }
    }

    /// Compiles `source` under a unique `name` for use in `slot`.
    ///
    /// Returns the template and the variables it reads (dotted: `args.from`).
    ///
    /// # Errors
    /// minijinja's syntax error.
    pub fn add(
        &mut self,
        name: &str,
        source: &str,
        slot: Slot,
    ) -> Result<(Tpl, BTreeSet<String>), SyntaxError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok((Tpl::Literal(source.to_owned()), BTreeSet::new()));
        }
        let (stored_name, stored_source, tpl) = match (slot, single_expression(source)) {
            (Slot::Value, Some(expr)) => (
                name.to_owned(),
                format!("{{{{ ({expr}) | tojson }}}}"),
                Tpl::Typed(name.to_owned()),
            ),
            (Slot::Path, _) => (
                format!("{name}{PATH_SUFFIX}"),
                source.to_owned(),
                Tpl::Text(format!("{name}{PATH_SUFFIX}")),
            ),
            _ => (
                name.to_owned(),
                source.to_owned(),
                Tpl::Text(name.to_owned()),
            ),
        };
        let vars = self
            .env
            .template_from_named_str(&stored_name, &stored_source)
            .map_err(|e| SyntaxError(describe(&e)))?
            .undeclared_variables(true)
            .into_iter()
            .filter(|v| !BUILTIN_GLOBALS.contains(&v.split('.').next().unwrap_or_default()))
            .collect();
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stored_name, stored_source);
        Ok((tpl, vars))
    }

    /// Renders a template to a string.
    ///
    /// # Errors
    /// An undefined variable, a failing filter, or running out of fuel.
    pub fn render_text(&self, tpl: &Tpl, ctx: &minijinja::Value) -> Result<String, RenderError> {
        match tpl {
            Tpl::Literal(s) => Ok(s.clone()),
            Tpl::Text(name) | Tpl::Typed(name) => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(|e| RenderError(describe(&e))),
        }
    }

    /// Renders a template to a JSON value (typed for `{{ expr }}`, else a string).
    ///
    /// # Errors
    /// As [`Self::render_text`], or a value that has no JSON form.
    pub fn render_value(
        &self,
        tpl: &Tpl,
        ctx: &minijinja::Value,
    ) -> Result<serde_json::Value, RenderError> {
        match tpl {
            Tpl::Typed(_) => {
                let json = self.render_text(tpl, ctx)?;
                serde_json::from_str(&json)
                    .map_err(|e| RenderError(format!("value has no JSON form: {e}")))
            }
            _ => self.render_text(tpl, ctx).map(serde_json::Value::String),
        }
    }
}

/// Converts any serialisable value into a template value.
pub fn to_value<T: serde::Serialize>(v: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(v))
}

/// What a template can render to, as a glob: its literal text with each `{{ expr }}`
/// as `*` (any run of characters). From the first `{% %}` or `{# #}` on, whose blocks
/// may drop literal text, it is `*`. Every string the template renders matches it.
pub fn shape(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    loop {
        let next = [rest.find("{{"), rest.find("{%"), rest.find("{#")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(rest.get(..at).unwrap_or_default());
        if !out.ends_with('*') {
            out.push('*');
        }
        let after = rest.get(at..).unwrap_or_default();
        if !after.starts_with("{{") {
            return out;
        }
        match after.find("}}") {
            Some(end) => rest = after.get(end + 2..).unwrap_or_default(),
            None => return out,
        }
    }
}

/// The expression of a template that is exactly one `{{ expr }}`, if it is one.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-').trim();
    let plain = !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%");
    (plain && !inner.is_empty()).then_some(inner)
}

/// A minijinja error as one line, without the template name (ours are internal).
fn describe(e: &minijinja::Error) -> String {
    let mut msg = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    if let Some(line) = e.line().filter(|l| *l > 1) {
        msg.push_str(&format!(" (template line {line})"));
    }
    if msg.starts_with("undefined value") || e.kind() == minijinja::ErrorKind::UndefinedError {
        return format!("undefined variable: {msg}");
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: serde_json::Value) -> minijinja::Value {
        to_value(&v)
    }

    #[test]
    fn a_template_first_rendered_by_several_threads_at_once_renders_the_same_for_each() {
        let mut set = TemplateSet::new();
        let (t, _) = set.add("t", "/orders/{{ args.id }}", Slot::Path).unwrap();
        let outs: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| set.render_text(&t, &ctx(json!({"args": {"id": "a b"}})))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        assert!(outs.iter().all(|o| o == "/orders/a%20b"), "{outs:?}");
    }

    #[test]
    fn exact_expression_keeps_json_type() {
        let mut set = TemplateSet::new();
        let (tpl, vars) = set.add("t", "{{ args.percent }}", Slot::Value).unwrap();
        assert_eq!(vars, BTreeSet::from(["args.percent".to_owned()]));
        let v = set
            .render_value(&tpl, &ctx(json!({"args": {"percent": 10}})))
            .unwrap();
        assert_eq!(v, json!(10));
    }

    #[test]
    fn mixed_text_renders_to_string() {
        let mut set = TemplateSet::new();
        let (tpl, _) = set.add("t", "p{{ args.percent }}", Slot::Value).unwrap();
        let v = set
            .render_value(&tpl, &ctx(json!({"args": {"percent": 10}})))
            .unwrap();
        assert_eq!(v, json!("p10"));
    }

    #[test]
    fn undefined_variable_is_an_error_not_empty() {
        let mut set = TemplateSet::new();
        let (tpl, _) = set.add("t", "x={{ args.form }}", Slot::Text).unwrap();
        let err = set
            .render_text(&tpl, &ctx(json!({"args": {"from": "a"}})))
            .unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn path_values_are_encoded_as_one_segment() {
        let mut set = TemplateSet::new();
        let (tpl, _) = set.add("t", "/flags/{{ args.name }}", Slot::Path).unwrap();
        let out = set
            .render_text(&tpl, &ctx(json!({"args": {"name": "a/b?c d"}})))
            .unwrap();
        assert_eq!(out, "/flags/a%2Fb%3Fc%20d");
    }

    #[test]
    fn dot_segments_are_refused_in_paths() {
        let mut set = TemplateSet::new();
        let (tpl, _) = set.add("t", "/flags/{{ args.name }}", Slot::Path).unwrap();
        assert!(
            set.render_text(&tpl, &ctx(json!({"args": {"name": ".."}})))
                .is_err()
        );
    }

    #[test]
    fn strings_without_syntax_are_literals() {
        let mut set = TemplateSet::new();
        let (tpl, vars) = set.add("t", "/orders", Slot::Path).unwrap();
        assert_eq!(tpl, Tpl::Literal("/orders".to_owned()));
        assert!(vars.is_empty());
    }

    #[test]
    fn a_shape_has_a_star_for_every_expression_and_ends_at_a_block() {
        assert_eq!(shape("/orders"), "/orders");
        assert_eq!(shape("/flags/{{ args.env }}/{{ args.name }}"), "/flags/*/*");
        assert_eq!(shape("/f/{{ a }}{{ b }}x"), "/f/*x");
        assert_eq!(shape("/a/{% if x %}b/{% endif %}c"), "/a/*");
        assert_eq!(shape("/a/{# note #}b"), "/a/*");
        assert_eq!(shape("/a/{{ unclosed"), "/a/*");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let mut set = TemplateSet::new();
        assert!(set.add("t", "{{ args.from ", Slot::Text).is_err());
    }
}
