//! The tool file: one MCP tool mapped onto one HTTP request.
//!
//! Field comments here are the user's documentation (and the editor's hover text, via
//! `mcpd schema`). Template strings are kept with their position so the catalog can point
//! at the exact line of a bad template.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::Located;

/// One tool: its MCP face (name, description, schemas) and the HTTP call behind it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The tool id, `[A-Za-z0-9_.-]{1,64}`, e.g. `orders.export`. On the wire dots become
    /// underscores (`orders_export`), because several hosts reject dots; calls accept both.
    pub name: Located<String>,
    /// A short human-readable title shown by hosts.
    #[serde(default)]
    pub title: Option<String>,
    /// What the tool does, written for the model: when to use it and what comes back.
    pub description: String,
    /// MCP hints for hosts. They are hints only; policy is enforced by mcpd.
    #[serde(default)]
    pub annotations: AnnotationsSpec,
    /// JSON Schema (2020-12) of the arguments; must be `type: object`. Every call is
    /// validated against it before anything else happens.
    pub input: Located<Schema>,
    /// Optional JSON Schema of the result (after `response.select`); results that do not
    /// match are tool errors. An object schema (`type: object`) describes the result as
    /// sent. Any other (`type: array`, ...) describes the selection, which is then always
    /// sent wrapped in an object under the select path's last name (`$.orders` →
    /// `{"orders": [...]}`, else `result`) and advertised wrapped in `tools/list`.
    #[serde(default)]
    pub output: Option<Located<Schema>>,
    /// The HTTP request a call becomes.
    pub request: RequestSpec,
    /// How the HTTP response becomes the tool result.
    #[serde(default)]
    pub response: ResponseSpec,
    /// Rate limit and concurrency cap.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Makes a write safe to retry: one key, one upstream write.
    #[serde(default)]
    pub idempotency: Option<IdempotencySpec>,
    /// Cost units one call spends from budgets (e.g. dollars): a number per call, or
    /// `{ per_call: 0.01, from_response: "$.usage.cost" }` to add a number the upstream
    /// reports. Default 0.
    #[serde(default)]
    pub cost: Option<CostSpec>,
    /// Latency objective; a breach is logged as a warning (at most once a minute).
    #[serde(default)]
    pub slo: Option<SloSpec>,
    /// Also serve this tool as an MCP resource (`resources/read`): an HTTP GET an agent
    /// may read, such as a runbook or an order by id, under the same policy as a call.
    #[serde(default)]
    pub resource: Option<ResourceSpec>,
    /// A circuit breaker on this tool's calls: when too many fail, its writes are
    /// refused at once for a while instead of piling onto a failing upstream.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
}

/// A JSON Schema as a tool file declares it. Tools that declare the same schema text
/// share one copy of it once their files are loaded ([`SchemaPool`]): a thousand tools
/// generated from one template hold one input and one output schema between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema(Arc<serde_json::Value>);

impl Schema {
    /// A schema not read from a file.
    pub fn new(value: serde_json::Value) -> Self {
        Self(Arc::new(value))
    }
}

impl std::ops::Deref for Schema {
    type Target = serde_json::Value;

    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::new)
    }
}

impl JsonSchema for Schema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        serde_json::Value::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        serde_json::Value::json_schema(generator)
    }

    fn inline_schema() -> bool {
        serde_json::Value::inline_schema()
    }
}

/// The schemas of the tool files read in one load, by their JSON text: each text is
/// held once, whichever files declare it.
#[derive(Debug, Default)]
pub struct SchemaPool(Mutex<HashMap<String, Arc<serde_json::Value>>>);

impl SchemaPool {
    /// The pool's copy of `schema`, which becomes the pool's if it has none.
    pub fn share(&self, schema: &mut Schema) {
        let key = schema.0.to_string();
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = pool.entry(key).or_insert_with(|| schema.0.clone());
        schema.0 = shared.clone();
    }

    /// Shares the input and output schemas of `spec`.
    pub fn share_all(&self, spec: &mut ToolSpec) {
        self.share(&mut spec.input.value);
        if let Some(out) = &mut spec.output {
            self.share(&mut out.value);
        }
    }
}

/// A tool served as a resource: reading the URI calls the tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource's URI, e.g. `runbook://deploy`, or a URI template whose `{name}`
    /// parts are the tool's arguments, e.g. `runbook://{name}` (each matches one path
    /// segment). A URI without parts is listed by `resources/list`; a template by
    /// `resources/templates/list`. Every required argument must be a part. `mcpd://` is
    /// mcpd's own.
    pub uri: Located<String>,
    /// A short name hosts show (default: the tool's title, else its id).
    #[serde(default)]
    pub name: Option<String>,
    /// What it holds (default: the tool's description).
    #[serde(default)]
    pub description: Option<String>,
    /// Its MIME type, e.g. `text/markdown` (default: the upstream's `Content-Type`).
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Also list it as a tool in `tools/list` (default `true`); `false` serves it only
    /// as a resource.
    #[serde(default = "default_true")]
    pub tool: bool,
}

fn default_true() -> bool {
    true
}

/// A circuit breaker, e.g. `{ errors: 50%, over: 1m, min_calls: 20, open_for: 5m }`:
/// when at least `min_calls` calls were made in the last `over` and `errors` of them
/// failed (a 5xx reply, a timeout or a failed connection; a 4xx reply is an answer, not
/// a failure), it opens: for `open_for`, writes are refused at once, saying when to
/// retry (reads too with `refuse_reads`). Its counts live in the state store, so
/// replicas sharing one store share one breaker.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// The share of failed calls that opens it, e.g. `50%`.
    pub errors: Located<String>,
    /// The window the share is measured over, e.g. `1m` (a sliding window).
    pub over: Located<String>,
    /// The fewest calls in the window for the share to count (default 20).
    #[serde(default)]
    pub min_calls: Option<Located<u64>>,
    /// How long it stays open, e.g. `5m`; then calls go through again and counting
    /// starts afresh.
    pub open_for: Located<String>,
    /// Refuse reads (GET, HEAD, OPTIONS) too while it is open (default `false`: reads
    /// still go, and still count).
    #[serde(default)]
    pub refuse_reads: bool,
}

/// What one call costs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CostSpec {
    /// A fixed cost per call.
    PerCall(f64),
    /// A fixed part and a part read from the upstream's reply.
    Detailed {
        /// Charged before the call is sent.
        #[serde(default)]
        per_call: f64,
        /// A JSONPath into the reply body selecting a number, added after the call.
        #[serde(default)]
        from_response: Option<Located<String>>,
    },
}

/// A latency objective for one tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// The 95th percentile of call latency must stay under this, e.g. `800ms`.
    pub p95: Located<String>,
}

/// Limits on calls to one tool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Calls allowed per actor in a window: `60/min`, `10/s`, `1000/hour`, `5000/day`.
    #[serde(default)]
    pub rate: Option<Located<String>>,
    /// Calls allowed for all actors together in a window, e.g. `600/min`.
    #[serde(default)]
    pub total_rate: Option<Located<String>>,
    /// Calls in flight at once for this tool, across all actors.
    #[serde(default)]
    pub concurrency: Option<Located<u32>>,
    /// What a call does when the state store cannot count it against the budgets that
    /// cover it (Redis unreachable): `refuse` (default: the call fails closed with a
    /// tool error) or `serve` (it runs uncounted). `serve` is for a read-only tool: a GET
    /// with no idempotency, `rate` or `total_rate`.
    #[serde(default)]
    pub on_state_outage: StateOutage,
}

/// What a call does when the state store is unreachable (`limits.on_state_outage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateOutage {
    /// Fail closed: the call is refused with a tool error and nothing is sent.
    #[default]
    Refuse,
    /// Run uncounted: budgets are not charged while the store is unreachable.
    Serve,
}

/// Idempotency for a write tool: one key, at most one upstream write (docs/safe-writes.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySpec {
    /// Template of the key, over `args`: calls with the same key are one write. A client
    /// may send its own key in `_meta["dev.mcpd/idempotencyKey"]`, which wins.
    pub key: Located<String>,
    /// How long a key is remembered, e.g. `24h` (default `24h`): a completed call's result
    /// is replayed, and a key whose outcome is unknown stays held, for this long.
    #[serde(default)]
    pub ttl: Option<Located<String>>,
    /// Whose key it is: `actor` (default: each actor has its own keys, and one actor can
    /// never replay or block another's) or `tool` (one key space for the tool: two agents
    /// retrying one business key, such as an order reference, make one write, and the
    /// second gets the first one's result).
    #[serde(default)]
    pub scope: IdempotencyScope,
    /// Whether this endpoint deduplicates requests on their `Idempotency-Key` header
    /// (default: the upstream's `dedupes_idempotency_key`). When it does, a write whose
    /// outcome is unknown may be sent again with the same key, and keyed requests are
    /// retried on connection failures and 502/503/504.
    #[serde(default)]
    pub upstream_dedupes: Option<bool>,
    /// A GET that tells whether a write whose outcome is unknown landed: a retry of a
    /// held key sends it first, and sends the write only when it proves the write did
    /// not land.
    #[serde(default)]
    pub reconcile: Option<ReconcileSpec>,
}

/// Whose idempotency key it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyScope {
    /// Each actor has its own keys.
    #[default]
    Actor,
    /// All actors of the tool share one key space.
    Tool,
}

/// The reconcile request of a keyed write: a GET on the tool's upstream and a condition
/// on its JSON reply.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSpec {
    /// Path of the GET below the upstream's base URL (a template over `args`, as
    /// `request.path`), e.g. `/orders/by-ref/{{ args.ref }}`.
    pub path: Located<String>,
    /// Query parameters; each value is a template.
    #[serde(default)]
    pub query: IndexMap<String, Located<String>>,
    /// Request headers (templates); default: the tool's `request.headers`.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Located<String>>>,
    /// JSONPath into the reply: the write landed when it selects a node (equal to
    /// `equals`, when given). A 2xx reply where it does not, or a 404, proves the write
    /// did not land; any other answer leaves the outcome unknown.
    pub landed: Located<String>,
    /// The value the selected node must equal, a template over `args` (a string that is
    /// exactly `{{ expr }}` keeps its JSON type), e.g. `"{{ args.amount }}"`.
    #[serde(default)]
    pub equals: Option<Located<String>>,
}

/// MCP tool annotations (hints to hosts).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnnotationsSpec {
    /// The tool does not change anything.
    #[serde(default)]
    pub read_only_hint: Option<bool>,
    /// The tool may destroy or overwrite data.
    #[serde(default)]
    pub destructive_hint: Option<bool>,
    /// Calling it twice with the same arguments has no further effect.
    #[serde(default)]
    pub idempotent_hint: Option<bool>,
    /// The tool reaches outside the organisation.
    #[serde(default)]
    pub open_world_hint: Option<bool>,
}

/// HTTP methods a tool may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Method {
    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// The method as reqwest knows it.
    pub fn to_http(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// The HTTP request of a call. Strings are minijinja templates over `args` (the validated
/// arguments) and `secret` (environment variables: `{{ secret.ORDERS_TOKEN }}`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The name of an upstream declared in `mcpd.yaml`.
    pub upstream: Located<String>,
    /// The HTTP method.
    pub method: Method,
    /// Path below the upstream's base URL, starting with `/`. Values inserted by
    /// `{{ ... }}` are URL-encoded as one path segment each.
    pub path: Located<String>,
    /// Query parameters, sent in the order written; each value is a template. A value
    /// that renders empty is left out, so an optional argument is written
    /// `"{{ args.limit | default('') }}"`.
    #[serde(default)]
    pub query: IndexMap<String, Located<String>>,
    /// Request headers; each value is a template. Use `secret.*` for credentials.
    #[serde(default)]
    pub headers: BTreeMap<String, Located<String>>,
    /// JSON body. Strings are templates; a string that is exactly `{{ expr }}` keeps the
    /// value's JSON type (a number stays a number).
    #[serde(default)]
    pub body: Option<Located<serde_json::Value>>,
    /// Time allowed for the whole request, e.g. `5s`, `800ms` (default: the upstream's).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
    /// Extra attempts after a connection failure or a 502/503/504 (default 2). Only
    /// idempotent requests are retried: GET, PUT, DELETE, or a keyed call to an upstream
    /// that deduplicates on `Idempotency-Key` (it sees the same key); any other POST or
    /// PATCH is sent once.
    #[serde(default)]
    pub retries: Option<u8>,
}

/// How the upstream's response becomes the tool result.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// JSONPath selecting the part of the JSON body to return (default: the whole body).
    /// A path that can match several nodes (`$.orders[*]`) returns them as a list.
    #[serde(default)]
    pub select: Option<Located<String>>,
    /// JSONPaths (relative to the selected value) whose values are always masked:
    /// emails keep their first letter and domain (`j***@example.com`), anything else
    /// becomes `***`.
    #[serde(default)]
    pub mask: Vec<Located<String>>,
    /// Messages for upstream error statuses, keyed by status (`"404"`) or class (`"4xx"`,
    /// `"5xx"`). Templates over `args`, `status` and `body` (the parsed error body).
    /// Unlisted error statuses get a generic message with the status and a short excerpt.
    #[serde(default)]
    pub errors: BTreeMap<String, Located<String>>,
    /// A template rendering the result for the model (over `result`, the result as
    /// `structuredContent` holds it, and `args`), e.g. a compact table: sent as the
    /// text content instead of the result's JSON, which stays in `structuredContent`.
    #[serde(default)]
    pub text: Option<Located<String>>,
    /// The largest result sent inline, in bytes of its JSON (default 100000, about 25k
    /// tokens). A larger one is kept for the caller (see `keep_for`) and the tool
    /// returns a summary (row count, the first rows, the fields) and a `resource_link`
    /// that `resources/read` serves to the same caller only.
    #[serde(default)]
    pub max_inline_bytes: Option<Located<u64>>,
    /// How long a result over `max_inline_bytes` is kept, e.g. `1h` (default `1h`).
    #[serde(default)]
    pub keep_for: Option<Located<String>>,
    /// Also return the reply as an embedded resource at this URI (a template over
    /// `args`), e.g. `runbook://{{ args.name }}`, so a host can keep it as a document.
    #[serde(default)]
    pub resource: Option<Located<String>>,
    /// The most bytes of a reply mcpd reads (default 2097152, 2 MiB). A larger reply is
    /// cut off as it streams in (or refused by its Content-Length), and a reply whose
    /// parsed form would take more than 12 times this much memory is refused unparsed;
    /// either way the call fails with an error naming this field and nothing of the
    /// reply reaches the model. A call's memory grows with this limit.
    #[serde(default)]
    pub max_bytes: Option<Located<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, input: &str) -> ToolSpec {
        let yaml = format!(
            "name: {name}\ndescription: d\ninput: {input}\n\
             request: {{ upstream: u, method: GET, path: /x }}\n"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn tools_declaring_the_same_schema_share_one_copy_and_others_keep_theirs() {
        let pool = SchemaPool::default();
        let mut a = spec("a", "{ type: object, required: [from] }");
        let mut b = spec("b", "{ type: object, required: [from] }");
        let mut c = spec("c", "{ type: object, required: [to] }");
        for s in [&mut a, &mut b, &mut c] {
            pool.share_all(s);
        }
        assert!(Arc::ptr_eq(&a.input.value.0, &b.input.value.0));
        assert!(!Arc::ptr_eq(&a.input.value.0, &c.input.value.0));
        assert_eq!(c.input.value["required"][0], "to");
        // Positions stay each file's own.
        assert_eq!((a.input.pos.line, b.input.pos.line), (3, 3));
    }
}
