//! What a call does, as policy sees it: the upstream, method and path a rule's `match`
//! selects on, and the rendered request conditions read as `request`.
//!
//! Owns how a path is compared: the path below the upstream's URL as it is sent, with
//! `.`/`..` resolved and `%XX` escapes decoded (what the upstream will route on), and
//! which rules a tool's path template can reach before anything is rendered. It must not
//! render or send: the engine renders once and policy judges exactly what is sent.

use percent_encoding::percent_decode_str;
use reqwest::Url;
use serde_json::{Map, Value};

use crate::config::policy::MatchSpec;
use crate::util::{glob, overlap};

/// What a call of one tool does, known before it is rendered, and the rendered request
/// when a rule asked for it ([`super::Policy::needs_request`]).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The tool's path template with each `{{ }}` as `*` ([`crate::template::shape`]).
    pub path_shape: &'a str,
    /// The rendered request; `None` until a rule needs it.
    pub sent: Option<&'a Sent>,
}

impl Request<'_> {
    /// A call whose request nothing is known of (no rule's `match` selects it).
    pub const UNKNOWN: Request<'static> = Request {
        upstream: "",
        method: "",
        path_shape: "",
        sent: None,
    };
}

/// A rendered request as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// The path below the upstream's URL: `.`/`..` resolved, escapes decoded.
    pub path: String,
    /// What conditions read as `request`: upstream, method, path, query, body.
    pub facts: Value,
}

impl Sent {
    /// The request a tool of `upstream` sends with `method` to `path` (as rendered,
    /// below the upstream's URL) with `query` (rendered, non-empty values) and `body`.
    pub fn new(
        upstream: &str,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Self {
        // The same parse that builds the URL sent: dot segments go, a literal `?` starts
        // the query.
        let url = Url::parse(&format!("http://upstream.invalid{path}")).ok();
        let path = url
            .as_ref()
            .map_or_else(|| decode(path), |u| decode(u.path()));
        let mut q = Map::new();
        let from_path = url.iter().flat_map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect::<Vec<_>>()
        });
        for (k, v) in from_path.chain(query.iter().cloned()) {
            // The first value of a repeated name, as most servers read it.
            q.entry(k).or_insert(Value::String(v));
        }
        let mut facts = Map::new();
        facts.insert("upstream".into(), Value::from(upstream));
        facts.insert("method".into(), Value::from(method));
        facts.insert("path".into(), Value::from(path.as_str()));
        facts.insert("query".into(), Value::Object(q));
        if let Some(b) = body {
            facts.insert("body".into(), b.clone());
        }
        Self {
            path,
            facts: Value::Object(facts),
        }
    }
}

/// Each `/`-separated segment percent-decoded (invalid UTF-8 replaced).
fn decode(path: &str) -> String {
    path.split('/')
        .map(|seg| percent_decode_str(seg).decode_utf8_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// How a rule's `match` selects calls, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Match {
    pub(super) upstream: Option<String>,
    /// Upper case; empty means any.
    pub(super) methods: Vec<String>,
    pub(super) path: Option<String>,
}

/// Whether a rule reaches a tool's calls, before one is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// None of its calls.
    Never,
    /// All of them.
    Always,
    /// Those whose rendered path matches: decided per call.
    PerCall,
}

impl Match {
    pub(super) fn compile(spec: &MatchSpec) -> Self {
        Self {
            upstream: spec.upstream.as_ref().map(|u| u.value.clone()),
            methods: spec
                .methods
                .iter()
                .map(|m| m.value.as_str().to_owned())
                .collect(),
            path: spec.path.as_ref().map(|p| p.value.clone()),
        }
    }

    /// Whether it reaches calls that do `request`, judged on the tool alone.
    pub(super) fn reach(&self, request: &Request<'_>) -> Reach {
        if self
            .upstream
            .as_deref()
            .is_some_and(|u| u != request.upstream)
            || !(self.methods.is_empty() || self.methods.iter().any(|m| m == request.method))
        {
            return Reach::Never;
        }
        let Some(pattern) = &self.path else {
            return Reach::Always;
        };
        let shape = request.path_shape;
        // Escapes, dot segments and a query in the template's literal text change the
        // path as sent: judged per call, never ruled out here.
        let plain = !shape.contains(['%', '?', '#']) && !shape.contains("/.") && !shape.is_empty();
        match (plain, shape.contains('*')) {
            (true, false) if glob(pattern, shape) => Reach::Always,
            (true, _) if !overlap(pattern, shape) => Reach::Never,
            _ => Reach::PerCall,
        }
    }

    /// Whether a rendered call's path matches (only asked for [`Reach::PerCall`]).
    pub(super) fn path_matches(&self, sent: &Sent) -> bool {
        self.path.as_ref().is_none_or(|p| glob(p, &sent.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(raw: &str) -> String {
        Sent::new("flags", "PUT", raw, &[], None).path
    }

    #[test]
    fn the_path_policy_sees_is_the_path_the_upstream_routes_on() {
        assert_eq!(path("/flags/prod/checkout_v2"), "/flags/prod/checkout_v2");
        assert_eq!(path("/flags/pr%6Fd/x"), "/flags/prod/x");
        assert_eq!(path("/flags/staging/../prod/x"), "/flags/prod/x");
        assert_eq!(path("/flags/./prod/x"), "/flags/prod/x");
        assert_eq!(path("/flags/x/%2E%2E/prod/y"), "/flags/prod/y");
        assert_eq!(path("/flags/prod/x?env=staging"), "/flags/prod/x");
        assert_eq!(path("/flags/a%20b"), "/flags/a b");
    }

    #[test]
    fn conditions_read_the_query_and_body_as_sent() {
        let s = Sent::new(
            "flags",
            "PUT",
            "/flags/prod/x?dry=1",
            &[("env".into(), "prod".into()), ("dry".into(), "0".into())],
            Some(&json!({"percent": 50})),
        );
        assert_eq!(
            s.facts,
            json!({"upstream": "flags", "method": "PUT", "path": "/flags/prod/x",
                   "query": {"dry": "1", "env": "prod"}, "body": {"percent": 50}})
        );
    }

    fn reach(m: &Match, upstream: &str, method: &str, shape: &str) -> Reach {
        m.reach(&Request {
            upstream,
            method,
            path_shape: shape,
            sent: None,
        })
    }

    #[test]
    fn a_match_rules_out_only_what_no_call_can_reach() {
        let m = Match {
            upstream: Some("flags".into()),
            methods: vec!["PUT".into(), "POST".into()],
            path: Some("/flags/prod/*".into()),
        };
        assert_eq!(reach(&m, "orders", "PUT", "/flags/*/*"), Reach::Never);
        assert_eq!(reach(&m, "flags", "GET", "/flags/*/*"), Reach::Never);
        assert_eq!(reach(&m, "flags", "PUT", "/admin/*"), Reach::Never);
        assert_eq!(reach(&m, "flags", "PUT", "/flags/staging/x"), Reach::Never);
        assert_eq!(reach(&m, "flags", "PUT", "/flags/prod/x"), Reach::Always);
        assert_eq!(reach(&m, "flags", "PUT", "/flags/*/*"), Reach::PerCall);
        // Literal text that changes when sent is never ruled out.
        assert_eq!(reach(&m, "flags", "PUT", "/flags/pr%6Fd/x"), Reach::PerCall);
        assert_eq!(
            reach(&m, "flags", "PUT", "/admin/../flags/prod/x"),
            Reach::PerCall
        );
        let any_path = Match {
            path: None,
            ..m.clone()
        };
        assert_eq!(reach(&any_path, "flags", "POST", "/x"), Reach::Always);
    }
}
