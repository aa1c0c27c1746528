//! The catalog: every tool compiled once into an immutable snapshot.
//!
//! Owns the step from what the user wrote (`config`) to what the call path reads:
//! templates compiled, schemas turned into validators, JSONPaths parsed, upstreams
//! resolved, cross-file checks done. Every problem is collected as a diagnostic. The
//! call path only reads a `Catalog`; it never parses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::tool::{CostSpec, RequestSpec, ResponseSpec};
use crate::config::{Loaded, Located, ToolFile, ToolSpec, Vars};
use crate::limits::{Cap, Rate};
use crate::policy::Policy;
use crate::response::{Path as JsonPath, ResponseMap, StatusMatch};
use crate::telemetry::slo::Slo;
use crate::template::{Slot, TemplateSet, Tpl};
use crate::upstream::{Egress, Upstream, Upstreams};
use crate::util::duration::parse as parse_duration;

/// Longest tool id (hosts reject longer names).
const MAX_NAME: usize = 64;

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
}

/// Default extra attempts for an idempotent request.
const DEFAULT_RETRIES: u8 = 2;

/// What one call spends from cost budgets.
#[derive(Debug, Default)]
pub struct CostPlan {
    /// Charged when the call is admitted.
    pub per_call: f64,
    /// A number read from the reply, charged after the call.
    pub from_response: Option<crate::response::jsonpath::JsonPath>,
}

/// A tool's limits.
#[derive(Debug, Default)]
pub struct ToolLimits {
    /// Calls per actor per window.
    pub rate: Option<Rate>,
    /// Calls of all actors together per window.
    pub total_rate: Option<Rate>,
    /// Calls in flight at once.
    pub cap: Option<Cap>,
}

/// A tool's idempotency: the key template and how long results replay.
#[derive(Debug)]
pub struct IdemPlan {
    /// Key template over `args`.
    pub key: Tpl,
    /// How long a completed result is replayed.
    pub ttl: Duration,
}

/// Default time a completed idempotent call is replayed.
pub const DEFAULT_IDEM_TTL: Duration = Duration::from_secs(24 * 3600);

/// One compiled tool.
#[derive(Debug)]
pub struct Tool {
    /// The id from the file, e.g. `orders.export`.
    pub id: String,
    /// The name on the wire, e.g. `orders_export`.
    pub wire: String,
    /// The file it came from.
    pub file: PathBuf,
    /// What `tools/list` shows for it.
    pub listing: rmcp::model::Tool,
    /// Validator of the arguments.
    pub input: jsonschema::Validator,
    /// Validator of the structured result, if declared.
    pub output: Option<jsonschema::Validator>,
    /// The HTTP request a call becomes.
    pub request: RequestPlan,
    /// How replies become results.
    pub response: ResponseMap,
    /// Environment variables its templates read as `secret.NAME`.
    pub secrets: Vec<String>,
    /// Its rate limit and concurrency cap.
    pub limits: ToolLimits,
    /// How its calls are made idempotent, for writes.
    pub idempotency: Option<IdemPlan>,
    /// Cost units one call spends.
    pub cost: CostPlan,
    /// Its latency objective, with the recent latencies it is judged on.
    pub slo: Option<Slo>,
    /// Its compiled templates.
    pub templates: TemplateSet,
    /// The fingerprint of the file it was compiled from.
    pub fingerprint: u64,
}

/// The compiled snapshot of one config directory.
#[derive(Debug)]
pub struct Catalog {
    /// Tools in file order.
    pub tools: Vec<Arc<Tool>>,
    by_name: HashMap<String, usize>,
    /// Upstream clients.
    pub upstreams: Upstreams,
    /// Hosts requests may go to.
    pub egress: Egress,
    /// The decision for calls no rule decides.
    pub policy: Policy,
    /// The actor of calls without a token (`default_actor`), or null: such calls are
    /// refused.
    pub actor: Value,
    /// What conditions see as `env`.
    pub env: Value,
    /// Budgets and stop rules.
    pub spend: crate::limits::Spend,
    /// Token verification and issuing, when `identity:` is configured.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Rules for elevation grants.
    pub elevation: crate::identity::elevation::Rules,
}

impl Catalog {
    /// Compiles everything that was loaded.
    ///
    /// # Errors
    /// Every problem in every file.
    pub fn compile(loaded: &Loaded, vars: &Vars) -> Result<Self, Diagnostics> {
        Self::compile_with(loaded, vars, None)
    }

    /// Compiles, reusing the unchanged upstream clients of `previous` (hot reload).
    ///
    /// # Errors
    /// Every problem in every file.
    pub fn compile_with(
        loaded: &Loaded,
        vars: &Vars,
        previous: Option<&Catalog>,
    ) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let (server_path, server) = &loaded.server;
        let (policy_path, policy) = &loaded.policy;
        let upstreams = Upstreams::build(server_path, server, vars, previous.map(|c| &c.upstreams))
            .unwrap_or_else(|d| {
                diags.extend(d);
                Upstreams::default()
            });
        let compiled_policy = Policy::compile(policy_path, policy)
            .map_err(|d| diags.extend(d))
            .ok();
        let spend = crate::limits::Spend::compile(policy_path, policy)
            .map_err(|d| diags.extend(d))
            .unwrap_or_default();
        let actor = match &server.default_actor {
            Some(a) => {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("source".into(), "default_actor".into());
                }
                v
            }
            None => Value::Null,
        };
        let identity = match &server.identity {
            None => None,
            Some(spec) => {
                let dir = server_path
                    .parent()
                    .unwrap_or_else(|| std::path::Path::new("."));
                crate::identity::Identity::compile(spec, vars, dir)
                    .map(Arc::new)
                    .map_err(|e| diags.push(Diagnostic::new(server_path, Pos::default(), e)))
                    .ok()
            }
        };
        let elevation = crate::identity::elevation::Rules::compile(&server.elevation)
            .map_err(|(pos, e)| diags.push(Diagnostic::new(server_path, pos, e)))
            .unwrap_or_default();
        let egress = Egress::build(policy_path, &policy.egress).unwrap_or_else(|d| {
            diags.extend(d);
            Egress::default()
        });
        for up in upstreams.iter() {
            for url in std::iter::once(&up.base).chain(up.regions.values()) {
                if let Err(e) = egress.check(url) {
                    let pos = server
                        .upstreams
                        .get(&up.name)
                        .map(|u| u.url.pos)
                        .unwrap_or_default();
                    diags.push(Diagnostic::new(
                        server_path,
                        pos,
                        format!("upstream '{}': {e}", up.name),
                    ));
                }
            }
        }

        let mut tools = Vec::new();
        let mut seen: HashMap<String, (PathBuf, Pos, String)> = HashMap::new();
        let have_upstreams = diags.is_empty();
        for file in &loaded.tools {
            for spec in &file.tools {
                let tool = match reusable(previous, file, spec, &upstreams) {
                    Some(tool) => Some(tool),
                    None => {
                        let mut c = ToolCompiler {
                            file: &file.path,
                            id: &spec.name.value,
                            templates: TemplateSet::new(),
                            diags: Diagnostics::default(),
                            secrets: BTreeSet::new(),
                        };
                        let tool = c.compile(spec, file.fingerprint, &upstreams, have_upstreams);
                        diags.extend(c.diags);
                        tool.map(Arc::new)
                    }
                };
                let id = spec.name.value.clone();
                let wire = wire_name(&id);
                let keys = if wire == id {
                    vec![id.clone()]
                } else {
                    vec![id.clone(), wire]
                };
                for key in keys {
                    if let Some((other, pos, other_id)) = seen.get(&key) {
                        diags.push(Diagnostic::new(
                            &file.path,
                            spec.name.pos,
                            format!(
                                "tool '{id}': name '{key}' is already used by tool '{other_id}' at {}:{}:{}",
                                other.display(),
                                pos.line,
                                pos.col
                            ),
                        ));
                        // One report per tool: its wire name collides for the same reason.
                        break;
                    }
                    seen.insert(key, (file.path.clone(), spec.name.pos, id.clone()));
                }
                let Some(tool) = tool else { continue };
                tools.push(tool);
            }
        }
        let Some(compiled_policy) = compiled_policy.filter(|_| diags.is_empty()) else {
            diags.sort();
            return Err(diags);
        };
        let by_name = tools
            .iter()
            .enumerate()
            .flat_map(|(i, t)| [(t.id.clone(), i), (t.wire.clone(), i)])
            .collect();
        Ok(Self {
            tools,
            by_name,
            upstreams,
            egress,
            policy: compiled_policy,
            actor,
            env: serde_json::json!({ "name": vars.get("MCPD_ENV").unwrap_or_else(|| "default".to_owned()) }),
            spend,
            identity,
            elevation,
        })
    }

    /// The tool called `name`, by wire name or by id.
    pub fn get(&self, name: &str) -> Option<&Arc<Tool>> {
        self.by_name.get(name).and_then(|i| self.tools.get(*i))
    }

    /// The `tools/list` entries.
    pub fn listing(&self) -> Vec<rmcp::model::Tool> {
        self.tools.iter().map(|t| t.listing.clone()).collect()
    }
}

/// The previous catalog's compiled tool, when nothing it was built from changed: same
/// file text, same upstream client. Reuse keeps a reload of 1,000 files fast and keeps
/// an unchanged tool's runtime state.
fn reusable(
    previous: Option<&Catalog>,
    file: &ToolFile,
    spec: &ToolSpec,
    upstreams: &Upstreams,
) -> Option<Arc<Tool>> {
    let old = previous?.get(&spec.name.value)?;
    let same_file =
        old.file == file.path && old.fingerprint == file.fingerprint && old.id == spec.name.value;
    let same_upstream = upstreams
        .get(&spec.request.upstream.value)
        .is_some_and(|u| Arc::ptr_eq(u, &old.request.upstream));
    (same_file && same_upstream).then(|| old.clone())
}

/// The wire name of a tool id: dots become underscores.
pub fn wire_name(id: &str) -> String {
    id.replace('.', "_")
}

/// Compiles one tool, collecting its diagnostics.
struct ToolCompiler<'a> {
    file: &'a Path,
    id: &'a str,
    templates: TemplateSet,
    diags: Diagnostics,
    secrets: BTreeSet<String>,
}

impl ToolCompiler<'_> {
    fn err(&mut self, pos: Pos, field: &str, msg: impl std::fmt::Display) {
        let msg = if field.is_empty() {
            format!("tool '{}': {msg}", self.id)
        } else {
            format!("tool '{}': {field}: {msg}", self.id)
        };
        self.diags.push(Diagnostic::new(self.file, pos, msg));
    }

    fn compile(
        &mut self,
        spec: &ToolSpec,
        fingerprint: u64,
        upstreams: &Upstreams,
        check_upstream: bool,
    ) -> Option<Tool> {
        self.check_name(&spec.name);
        let input_schema = self.check_input_schema(&spec.input);
        let input = self.validator(&spec.input, "input", true);
        let output = spec
            .output
            .as_ref()
            .and_then(|o| self.validator(o, "output", false));
        let args: BTreeSet<String> = input_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let request = self.request(&spec.request, &args, upstreams, check_upstream);
        let response = self.response(&spec.response, &args);
        let limits = self.limits(spec);
        let idempotency = spec.idempotency.as_ref().and_then(|i| {
            let key = self.template("idempotency.key", &i.key, Slot::Text, &args, &["args"]);
            let ttl = match &i.ttl {
                None => Some(DEFAULT_IDEM_TTL),
                Some(t) => parse_duration(&t.value)
                    .map_err(|e| self.err(t.pos, "idempotency.ttl", e))
                    .ok(),
            };
            Some(IdemPlan {
                key: key?,
                ttl: ttl?,
            })
        });
        let slo = spec.slo.as_ref().and_then(|s| {
            parse_duration(&s.p95.value)
                .map_err(|e| self.err(s.p95.pos, "slo.p95", e))
                .ok()
                .map(Slo::new)
        });
        let cost = self.cost(spec);
        let listing = self.listing(spec, input_schema);
        if !self.diags.is_empty() {
            return None;
        }
        Some(Tool {
            id: self.id.to_owned(),
            wire: wire_name(self.id),
            file: self.file.to_path_buf(),
            listing,
            input: input?,
            output,
            request: request?,
            response,
            secrets: self.secrets.iter().cloned().collect(),
            limits,
            idempotency,
            cost,
            slo,
            templates: std::mem::take(&mut self.templates),
            fingerprint,
        })
    }

    fn cost(&mut self, spec: &ToolSpec) -> CostPlan {
        let (per_call, from) = match &spec.cost {
            None => (0.0, None),
            Some(CostSpec::PerCall(c)) => (*c, None),
            Some(CostSpec::Detailed {
                per_call,
                from_response,
            }) => (*per_call, from_response.as_ref()),
        };
        if !per_call.is_finite() || per_call < 0.0 {
            self.err(spec.name.pos, "cost", "must be a number of at least 0");
        }
        let from_response = from.and_then(|p| {
            crate::response::jsonpath::JsonPath::compile(&p.value)
                .map_err(|e| self.err(p.pos, "cost.from_response", e))
                .ok()
        });
        CostPlan {
            per_call,
            from_response,
        }
    }

    fn rate(&mut self, field: &str, r: Option<&Located<String>>) -> Option<Rate> {
        r.and_then(|r| {
            Rate::parse(&r.value)
                .map_err(|e| self.err(r.pos, field, e))
                .ok()
        })
    }

    fn limits(&mut self, spec: &ToolSpec) -> ToolLimits {
        let rate = self.rate("limits.rate", spec.limits.rate.as_ref());
        let total_rate = self.rate("limits.total_rate", spec.limits.total_rate.as_ref());
        let cap = spec.limits.concurrency.as_ref().and_then(|c| {
            if c.value == 0 {
                self.err(c.pos, "limits.concurrency", "must be at least 1");
                None
            } else {
                Some(Cap::new(c.value))
            }
        });
        ToolLimits {
            rate,
            total_rate,
            cap,
        }
    }

    fn check_name(&mut self, name: &Located<String>) {
        let ok_chars = name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if name.value.is_empty() || name.value.len() > MAX_NAME || !ok_chars {
            self.err(
                name.pos,
                "name",
                format!(
                    "must be 1 to {MAX_NAME} of A-Z a-z 0-9 _ . - (got '{}')",
                    name.value
                ),
            );
        }
    }

    fn check_input_schema(&mut self, input: &Located<Value>) -> serde_json::Map<String, Value> {
        match &input.value {
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("object") => {
                o.clone()
            }
            _ => {
                self.err(
                    input.pos,
                    "input",
                    "the input schema must be an object schema ('type: object')",
                );
                serde_json::Map::new()
            }
        }
    }

    fn validator(
        &mut self,
        schema: &Located<Value>,
        field: &str,
        _input: bool,
    ) -> Option<jsonschema::Validator> {
        match jsonschema::options()
            .should_validate_formats(true)
            .build(&schema.value)
        {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(schema.pos, field, format!("invalid JSON Schema: {e}"));
                None
            }
        }
    }

    fn listing(
        &self,
        spec: &ToolSpec,
        input_schema: serde_json::Map<String, Value>,
    ) -> rmcp::model::Tool {
        let mut tool = rmcp::model::Tool::new(
            wire_name(self.id),
            spec.description.clone(),
            Arc::new(input_schema),
        );
        if let Some(title) = &spec.title {
            tool = tool.with_title(title.clone());
        }
        let a = &spec.annotations;
        let mut ann = rmcp::model::ToolAnnotations::new();
        ann.title = spec.title.clone();
        ann.read_only_hint = a.read_only_hint;
        ann.destructive_hint = a.destructive_hint;
        ann.idempotent_hint = a.idempotent_hint;
        ann.open_world_hint = a.open_world_hint;
        tool = tool.with_annotations(ann);
        if let Some(Located {
            value: Value::Object(out),
            ..
        }) = &spec.output
        {
            let wrapped = if out.get("type").and_then(Value::as_str) == Some("object") {
                out.clone()
            } else {
                let key = spec
                    .response
                    .select
                    .as_ref()
                    .and_then(|s| JsonPath::compile(&s.value).ok())
                    .map_or_else(|| "result".to_owned(), |p| crate::response::wrap_key(&p));
                serde_json::Map::from_iter([
                    ("type".to_owned(), Value::from("object")),
                    (
                        "properties".to_owned(),
                        Value::Object(serde_json::Map::from_iter([(
                            key.clone(),
                            Value::Object(out.clone()),
                        )])),
                    ),
                    ("required".to_owned(), Value::Array(vec![Value::from(key)])),
                ])
            };
            tool = tool.with_raw_output_schema(Arc::new(wrapped));
        }
        tool
    }

    /// Compiles a template and checks the variables it reads.
    fn template(
        &mut self,
        field: &str,
        src: &Located<String>,
        slot: Slot,
        args: &BTreeSet<String>,
        roots: &[&str],
    ) -> Option<Tpl> {
        let name = format!("{}/{field}", self.id);
        match self.templates.add(&name, &src.value, slot) {
            Ok((tpl, vars)) => {
                let mut ok = true;
                for var in vars {
                    if let Err(e) = self.check_var(&var, args, roots) {
                        self.err(src.pos, field, e);
                        ok = false;
                    }
                }
                ok.then_some(tpl)
            }
            Err(e) => {
                self.err(src.pos, field, format!("template error: {e}"));
                None
            }
        }
    }

    fn check_var(
        &mut self,
        var: &str,
        args: &BTreeSet<String>,
        roots: &[&str],
    ) -> Result<(), String> {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        if !roots.contains(&root) {
            return Err(format!(
                "unknown variable '{var}' (templates here can read: {})",
                roots.join(", ")
            ));
        }
        match (root, field) {
            ("args", Some(f)) if !args.contains(f) => {
                let declared = args.iter().cloned().collect::<Vec<_>>().join(", ");
                Err(format!(
                    "unknown variable '{var}': the input schema declares no argument '{f}' (it declares: {declared})"
                ))
            }
            ("secret", None) => {
                Err("name the secret: 'secret.NAME' reads environment variable NAME".to_owned())
            }
            ("secret", Some(name)) => {
                self.secrets.insert(name.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn request(
        &mut self,
        spec: &RequestSpec,
        args: &BTreeSet<String>,
        upstreams: &Upstreams,
        check: bool,
    ) -> Option<RequestPlan> {
        const ROOTS: &[&str] = &["args", "secret"];
        let upstream = match upstreams.get(&spec.upstream.value) {
            Some(u) => Some(u.clone()),
            None => {
                if check {
                    self.err(
                        spec.upstream.pos,
                        "request.upstream",
                        format!(
                            "unknown upstream '{}' (declare it under 'upstreams' in mcpd.yaml)",
                            spec.upstream.value
                        ),
                    );
                }
                None
            }
        };
        if !spec.path.value.starts_with('/') {
            self.err(spec.path.pos, "request.path", "must start with '/'");
        }
        let path = self.template("request.path", &spec.path, Slot::Path, args, ROOTS);
        let mut query = Vec::new();
        for (k, v) in &spec.query {
            if let Some(t) =
                self.template(&format!("request.query.{k}"), v, Slot::Text, args, ROOTS)
            {
                query.push((k.clone(), t));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                self.err(
                    v.pos,
                    &format!("request.headers.{k}"),
                    "not a valid header name",
                );
            }
            if let Some(t) =
                self.template(&format!("request.headers.{k}"), v, Slot::Text, args, ROOTS)
            {
                headers.push((k.clone(), t));
            }
        }
        let body = spec.body.as_ref().map(|b| {
            let pos = b.pos;
            self.body(&b.value, "request.body", pos, args, ROOTS)
        });
        let timeout = spec
            .timeout
            .as_ref()
            .and_then(|t| match parse_duration(&t.value) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(t.pos, "request.timeout", e);
                    None
                }
            });
        let upstream = upstream?;
        Some(RequestPlan {
            method: spec.method.to_http(),
            timeout: timeout.unwrap_or(upstream.timeout),
            retries: spec.retries.unwrap_or(DEFAULT_RETRIES),
            upstream,
            path: path?,
            query,
            headers,
            body,
        })
    }

    fn body(
        &mut self,
        v: &Value,
        field: &str,
        pos: Pos,
        args: &BTreeSet<String>,
        roots: &[&str],
    ) -> BodyTpl {
        match v {
            Value::String(s) => {
                let located = Located {
                    value: s.clone(),
                    pos,
                };
                match self.template(field, &located, Slot::Value, args, roots) {
                    Some(Tpl::Literal(s)) => BodyTpl::Literal(Value::String(s)),
                    Some(t) => BodyTpl::Tpl(t),
                    None => BodyTpl::Literal(Value::Null),
                }
            }
            Value::Object(o) => BodyTpl::Object(
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            self.body(v, &format!("{field}.{k}"), pos, args, roots),
                        )
                    })
                    .collect(),
            ),
            Value::Array(a) => BodyTpl::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| self.body(v, &format!("{field}[{i}]"), pos, args, roots))
                    .collect(),
            ),
            other => BodyTpl::Literal(other.clone()),
        }
    }

    fn response(&mut self, spec: &ResponseSpec, args: &BTreeSet<String>) -> ResponseMap {
        let select = spec
            .select
            .as_ref()
            .and_then(|s| match JsonPath::compile(&s.value) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.err(
                        s.pos,
                        "response.select",
                        format!("invalid JSONPath '{}': {e}", s.value),
                    );
                    None
                }
            });
        let mut masks = Vec::new();
        for m in &spec.mask {
            match JsonPath::compile(&m.value) {
                Ok(p) => masks.push(p),
                Err(e) => self.err(
                    m.pos,
                    "response.mask",
                    format!("invalid JSONPath '{}': {e}", m.value),
                ),
            }
        }
        let mut errors: BTreeMap<(u8, u16), Tpl> = BTreeMap::new();
        for (k, v) in &spec.errors {
            let field = format!("response.errors.{k}");
            let Some(m) = StatusMatch::parse(k) else {
                self.err(
                    v.pos,
                    &field,
                    "key must be an error status ('404') or class ('4xx', '5xx')",
                );
                continue;
            };
            if let Some(t) = self.template(&field, v, Slot::Text, args, &["args", "status", "body"])
            {
                // Exact statuses are tried before classes.
                let order = match m {
                    StatusMatch::Exact(c) => (0, c),
                    StatusMatch::Class(c) => (1, c),
                };
                errors.insert(order, t);
            }
        }
        let errors = errors
            .into_iter()
            .map(|((kind, code), t)| {
                let m = if kind == 0 {
                    StatusMatch::Exact(code)
                } else {
                    StatusMatch::Class(code)
                };
                (m, t)
            })
            .collect();
        ResponseMap {
            select,
            masks,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_tools_are_reused_across_compiles_and_changed_ones_rebuilt() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (loaded, diags) = crate::config::load_dir(root);
        assert!(diags.is_empty(), "{diags}");
        let vars = Vars::default();
        let first = Catalog::compile(&loaded, &vars).unwrap();
        let mut edited = loaded.clone();
        edited.tools[0].fingerprint ^= 1;
        let second = Catalog::compile_with(&edited, &vars, Some(&first)).unwrap();
        let id0 = &edited.tools[0].tools[0].name.value;
        let id1 = &edited.tools[1].tools[0].name.value;
        assert!(!Arc::ptr_eq(
            first.get(id0).unwrap(),
            second.get(id0).unwrap()
        ));
        assert!(Arc::ptr_eq(
            first.get(id1).unwrap(),
            second.get(id1).unwrap()
        ));
        // the upstream clients (and their connection pools) were kept too
        let up = |c: &Catalog| c.upstreams.get("orders").unwrap().clone();
        assert!(Arc::ptr_eq(&up(&first), &up(&second)));
    }
}
