//! Rendering: a tool's compiled request templates and a call's arguments become the
//! HTTP request that is sent.
//!
//! Owns the request plan (method, path, query, headers, body templates, timeout,
//! retries), reading the `secret.NAME` values a tool uses, rendering, and scrubbing
//! secret values out of every message. It never logs a rendered request (headers carry
//! secrets) and never sends one (that is [`super::Upstream::send`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};

use super::Upstream;
use crate::config::Vars;
use crate::template::{RenderError, TemplateSet, Tpl};

/// Default extra attempts for an idempotent request.
pub const DEFAULT_RETRIES: u8 = 2;

/// The most bytes of a reply a tool reads unless its `response.max_bytes` says
/// otherwise: 2 MiB, about half a million tokens, more than a model's context holds.
/// It keeps a call's memory (the reply, its parsed form, the answer) under 100 MB.
pub const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024;

/// A JSON body whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum BodyTpl {
    /// A value with no template in it.
    Literal(Value),
    /// A string leaf.
    Tpl(Tpl),
    /// An object, key by key.
    Object(Vec<(String, BodyTpl)>),
    /// A list, item by item.
    Array(Vec<BodyTpl>),
}

/// The HTTP side of a tool.
#[derive(Debug)]
pub struct RequestPlan {
    /// Where the request goes.
    pub upstream: Arc<Upstream>,
    /// HTTP method.
    pub method: reqwest::Method,
    /// Path template (segments URL-encoded).
    pub path: Tpl,
    /// The path template with every `{{ }}` as `*`: what policy knows of the path
    /// before a call renders it.
    pub path_shape: String,
    /// Query templates.
    pub query: Vec<(String, Tpl)>,
    /// Header templates.
    pub headers: Vec<(String, Tpl)>,
    /// Body template.
    pub body: Option<BodyTpl>,
    /// Time allowed.
    pub timeout: Duration,
    /// Extra attempts after a connection failure or 502/503/504, for idempotent requests.
    pub retries: u8,
    /// The most bytes of a reply read (`response.max_bytes`).
    pub max_bytes: u64,
}

/// The parts of a request rendered from a tool's templates, before it is placed below
/// an upstream URL. Headers may hold secrets: never log them.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The path, its inserted values encoded as path segments.
    pub path: String,
    /// Query parameters with a non-empty value, in order (not yet encoded).
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
}

/// A request rendered from a tool's templates, ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// HTTP method.
    pub method: reqwest::Method,
    /// The final URL.
    pub url: Url,
    /// Headers (values may be secrets: never log them).
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// Time allowed for the request.
    pub timeout: Duration,
    /// The most bytes of the reply read.
    pub max_bytes: u64,
}

/// Why a request could not be built. Messages never carry a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An environment variable a template reads as `secret.NAME` is not set.
    #[error("mcpd is missing secret '{0}': set environment variable {0} for the mcpd process")]
    MissingSecret(String),
    /// A template failed (already scrubbed of secrets).
    #[error("tool '{tool}': {field}: {message}")]
    Template {
        /// The tool id.
        tool: String,
        /// The field, e.g. `request.query.from`.
        field: String,
        /// What failed.
        message: String,
    },
    /// The rendered URL does not parse.
    #[error("tool '{tool}': rendered URL is invalid: {message}")]
    Url {
        /// The tool id.
        tool: String,
        /// Why.
        message: String,
    },
    /// The rendered path names another host.
    #[error("tool '{0}': rendered path changed the host")]
    HostChanged(String),
}

/// The values of the secrets one tool reads (`secret.NAME`), read from the environment
/// once, when the tool is compiled (a process's environment does not change under it).
#[derive(Default)]
pub struct Secrets {
    values: Vec<(String, String)>,
    /// What templates see as `secret`, built once.
    template: minijinja::Value,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.values.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Secrets").field("names", &names).finish()
    }
}

impl Secrets {
    /// Reads the secrets `names` from `vars` (the environment, or placeholders in a
    /// test run).
    ///
    /// # Errors
    /// The first one that is not set.
    pub fn read(names: &[String], vars: &Vars) -> Result<Self, RequestError> {
        let values = names
            .iter()
            .map(|name| {
                vars.secret(name)
                    .map(|v| (name.clone(), v))
                    .ok_or_else(|| RequestError::MissingSecret(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Known from now on: scrubbed from everything that leaves, whatever it looks like.
        for (name, value) in &values {
            crate::redact::register_secret(name, value);
        }
        let map: Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let template = crate::template::to_value(&map);
        Ok(Self { values, template })
    }

    /// Replaces every secret value in `text`, so no error or log carries one.
    pub fn scrub(&self, mut text: String) -> String {
        for (name, value) in &self.values {
            if !value.is_empty() && text.contains(value.as_str()) {
                text = text.replace(value.as_str(), &format!("[secret {name}]"));
            }
        }
        text
    }
}

impl RequestPlan {
    /// Renders the request for `args` against `base` (the upstream's URL, or its region's),
    /// with the tool's `templates`.
    ///
    /// # Errors
    /// A template that fails, a URL that does not parse, a path that changes the host.
    pub fn render(
        &self,
        tool: &str,
        templates: &TemplateSet,
        base: &Url,
        args: &minijinja::Value,
        secrets: &Secrets,
    ) -> Result<Prepared, RequestError> {
        let parts = self.render_parts(tool, templates, args, secrets)?;
        self.assemble(tool, base, parts)
    }

    /// Renders what does not depend on where the request goes: path, query, headers and
    /// body. Policy judges these parts (`request.*`) and [`Self::assemble`] sends exactly
    /// them.
    ///
    /// # Errors
    /// A template that fails (its message scrubbed of secrets).
    pub fn render_parts(
        &self,
        tool: &str,
        templates: &TemplateSet,
        args: &minijinja::Value,
        secrets: &Secrets,
    ) -> Result<Parts, RequestError> {
        let ctx = minijinja::context! { args => args.clone(), secret => secrets.template.clone() };
        let fail = |field: &str, e: RenderError| RequestError::Template {
            tool: tool.to_owned(),
            field: field.to_owned(),
            message: secrets.scrub(e.to_string()),
        };
        let path = templates
            .render_text(&self.path, &ctx)
            .map_err(|e| fail("request.path", e))?;
        let mut query = Vec::with_capacity(self.query.len());
        for (k, t) in &self.query {
            let v = templates
                .render_text(t, &ctx)
                .map_err(|e| fail(&format!("request.query.{k}"), e))?;
            if !v.is_empty() {
                query.push((k.clone(), v));
            }
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, t) in &self.headers {
            let v = templates
                .render_text(t, &ctx)
                .map_err(|e| fail(&format!("request.headers.{k}"), e))?;
            headers.push((k.clone(), v));
        }
        let body = match &self.body {
            Some(b) => Some(render_body(templates, b, &ctx).map_err(|e| fail("request.body", e))?),
            None => None,
        };
        Ok(Parts {
            path,
            query,
            headers,
            body,
        })
    }

    /// The request to send: `parts` below `base`.
    ///
    /// # Errors
    /// A URL that does not parse, a path that changes the host.
    pub fn assemble(&self, tool: &str, base: &Url, parts: Parts) -> Result<Prepared, RequestError> {
        let mut url = match below(base, &parts.path) {
            Some(url) => url,
            None => parsed_below(tool, base, &parts.path)?,
        };
        if !parts.query.is_empty() {
            url.query_pairs_mut().extend_pairs(parts.query);
        }
        Ok(Prepared {
            method: self.method.clone(),
            url,
            headers: parts.headers,
            body: parts.body,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
        })
    }

    /// Whether a failed attempt may be sent again: GET, PUT and DELETE are idempotent by
    /// definition; any other method only when the call carries an idempotency key that
    /// the upstream deduplicates on (`deduped`). A key alone is not enough: a POST that
    /// got a 503 may have been acted on, and sending it again would be a second write.
    pub fn retryable(&self, deduped: bool) -> bool {
        use reqwest::Method;
        deduped
            || self.method == Method::GET
            || self.method == Method::PUT
            || self.method == Method::DELETE
    }
}

/// `base`, with `path` after its path (its trailing `/`s dropped), as the whole string
/// would parse: without parsing base's scheme and host again (the host goes through IDNA
/// on every parse). Only for a `path` that the whole parse reads as a path and nothing
/// else, and that the path setter reads the same way: it starts with `/` (so it cannot
/// reach the host) and holds only characters that neither end a path (`?`, `#`), nor get
/// trimmed, skipped or rewritten (spaces, controls, `\`, anything not ASCII); `base`
/// has no query or fragment. `None` for anything else: [`parsed_below`] then parses.
fn below(base: &Url, path: &str) -> Option<Url> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@%".contains(&b);
    if !path.starts_with('/')
        || !path.bytes().all(plain)
        || base.cannot_be_a_base()
        || base.query().is_some()
        || base.fragment().is_some()
    {
        return None;
    }
    let mut url = base.clone();
    let mut joined = String::with_capacity(base.path().len() + path.len());
    joined.push_str(base.path().trim_end_matches('/'));
    joined.push_str(path);
    url.set_path(&joined);
    Some(url)
}

/// `base` and `path` joined as strings and parsed whole; the host must stay base's.
fn parsed_below(tool: &str, base: &Url, path: &str) -> Result<Url, RequestError> {
    let root = base.as_str().trim_end_matches('/');
    let url = Url::parse(&format!("{root}{path}")).map_err(|e| RequestError::Url {
        tool: tool.to_owned(),
        message: e.to_string(),
    })?;
    if url.host_str() != base.host_str() {
        return Err(RequestError::HostChanged(tool.to_owned()));
    }
    Ok(url)
}

fn render_body(
    templates: &TemplateSet,
    body: &BodyTpl,
    ctx: &minijinja::Value,
) -> Result<Value, RenderError> {
    Ok(match body {
        BodyTpl::Literal(v) => v.clone(),
        BodyTpl::Tpl(t) => templates.render_value(t, ctx)?,
        BodyTpl::Object(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(k.clone(), render_body(templates, v, ctx)?);
            }
            Value::Object(m)
        }
        BodyTpl::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_body(templates, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::{Url, below, parsed_below};
    use proptest::prelude::*;

    fn bases() -> impl Strategy<Value = Url> {
        prop::sample::select(vec![
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "https://orders.internal/api",
            "https://orders.internal/api/",
            "https://orders.internal/api//",
            "http://[fd00::5]:9/v1/x",
            "https://Bücher.example/a%20b/",
        ])
        .prop_map(|b| Url::parse(b).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
        ))]

        /// Every path the shortcut takes gives the URL the whole parse gives, and every
        /// path that could end the path, change the host or be rewritten is left to it.
        #[test]
        fn a_path_below_the_base_is_the_url_the_whole_string_parses_to(
            base in bases(),
            path in "[/a-z0-9.%@:?#\\\\ \\t;=&+~-]{0,12}|/[a-zé./%2eE]{0,10}",
        ) {
            let whole = parsed_below("t", &base, &path);
            match below(&base, &path) {
                Some(fast) => {
                    let whole = whole.expect("a path the shortcut takes parses");
                    prop_assert_eq!(fast.as_str(), whole.as_str());
                    prop_assert_eq!(fast.host_str(), base.host_str());
                }
                None => prop_assert!(
                    !path.starts_with('/')
                        || path.bytes().any(|b| b"?#\\ \t".contains(&b) || !b.is_ascii())
                ),
            }
        }
    }

    #[test]
    fn a_path_that_would_leave_the_host_is_refused() {
        let base = Url::parse("http://127.0.0.1:8080").unwrap();
        assert!(below(&base, "@evil.example/x").is_none());
        assert!(parsed_below("t", &base, "@evil.example/x").is_err());
    }
}
