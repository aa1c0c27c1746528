//! Compiling one tool file entry into a [`Tool`], collecting every problem.
//!
//! Owns the checks of a tool's own fields: its name, input and output schemas,
//! templates (their variables are `template_check.rs`'s), JSONPaths, durations, limits, cost and its
//! `tools/list` entry. Cross-file checks (duplicate names, upstream hosts in egress)
//! are the catalog's. It never touches the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::shared::Shared;
use super::tool::{Tool, wire_name};
use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::tool::{CostSpec, Method, RequestSpec, ResponseSpec, Schema, StateOutage};
use crate::config::{Located, ToolSpec, Vars};
use crate::limits::{Breaker, Cap, CostPlan, Rate, ToolLimits};
use crate::response::cost::PARSED_PER_BYTE;
use crate::response::{Path as JsonPath, ResponseMap, StatusMatch, Wrap};
use crate::telemetry::slo::Slo;
use crate::template::{Slot, TemplateSet, Tpl};
use crate::upstream::request::{DEFAULT_MAX_BYTES, DEFAULT_RETRIES};
use crate::upstream::{BodyTpl, RequestPlan, Secrets, Upstreams};
use crate::util::duration::parse as parse_duration;

/// Longest tool id (hosts reject longer names).
const MAX_NAME: usize = 64;

/// Compiles one tool, collecting its diagnostics.
pub(super) struct ToolCompiler<'a> {
    pub(super) file: &'a Path,
    pub(super) id: &'a str,
    pub(super) templates: TemplateSet,
    pub(super) diags: Diagnostics,
    pub(super) secrets: BTreeSet<String>,
    /// Where `secret.NAME` values come from.
    pub(super) vars: &'a Vars,
    /// What the request's path, query and body templates read (`args.env`, `secret.K`).
    pub(super) request_reads: BTreeSet<String>,
    /// Validators and schemas shared with the other tools of this compile.
    pub(super) shared: &'a Shared,
}

impl ToolCompiler<'_> {
    pub(super) fn err(&mut self, pos: Pos, field: &str, msg: impl std::fmt::Display) {
        let msg = if field.is_empty() {
            format!("tool '{}': {msg}", self.id)
        } else {
            format!("tool '{}': {field}: {msg}", self.id)
        };
        self.diags.push(Diagnostic::new(self.file, pos, msg));
    }

    pub(super) fn compile(
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
        let request = self.request("request", &spec.request, &args, upstreams, check_upstream);
        let max_bytes = self.max_bytes(&spec.response);
        let mut response = ResponseMap {
            max_parsed: max_bytes.saturating_mul(PARSED_PER_BYTE),
            ..self.response(&spec.response, &args)
        };
        response.wrap = output_wrap(spec);
        let present = self.present(&spec.response, &args);
        let resource = self.resource(spec, &input_schema);
        let limits = self.limits(spec);
        let idempotency = spec
            .idempotency
            .as_ref()
            .and_then(|i| self.idempotency(i, &spec.request, &args, upstreams, check_upstream));
        let slo = spec.slo.as_ref().and_then(|s| {
            parse_duration(&s.p95.value)
                .map_err(|e| self.err(s.p95.pos, "slo.p95", e))
                .ok()
                .map(Slo::new)
        });
        let cost = self.cost(spec);
        let breaker = spec
            .breaker
            .as_ref()
            .and_then(|b| Breaker::compile(self.file, b, "tool", self.id, &mut self.diags));
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
            request: RequestPlan {
                max_bytes,
                ..request?
            },
            response,
            present,
            resource,
            secrets: Secrets::read(&self.secrets.iter().cloned().collect::<Vec<_>>(), self.vars),
            limits,
            idempotency,
            cost,
            slo,
            breaker,
            request_reads: std::mem::take(&mut self.request_reads),
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
        let serve_on_state_outage = spec.limits.on_state_outage == StateOutage::Serve;
        if serve_on_state_outage {
            let why = if spec.request.method != Method::Get {
                Some("the tool is not a GET")
            } else if spec.idempotency.is_some() {
                Some("the tool has idempotency, which needs the store")
            } else if rate.is_some() || total_rate.is_some() {
                Some("the tool has a rate, which needs the store")
            } else {
                None
            };
            if let Some(why) = why {
                self.err(
                    spec.name.pos,
                    "limits.on_state_outage",
                    format!(
                        "'serve' is for read-only tools without limits, and {why}: \
                         remove it (the call then fails closed while the store is down)"
                    ),
                );
            }
        }
        ToolLimits {
            rate,
            total_rate,
            cap,
            serve_on_state_outage,
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

    fn check_input_schema(&mut self, input: &Located<Schema>) -> serde_json::Map<String, Value> {
        match &*input.value {
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
        schema: &Located<Schema>,
        field: &str,
        _input: bool,
    ) -> Option<Arc<jsonschema::Validator>> {
        let build = || {
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema.value)
        };
        match self.shared.validator(&schema.value, build) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.instance_path().to_string();
                let message = if at.rsplit('/').next() == Some("type") {
                    // The meta-schema's own words ("not valid under any of the schemas
                    // listed in the 'anyOf' keyword") do not say what a type may be.
                    format!(
                        "invalid JSON Schema at {at}: {} is not a type; write string, number, integer, boolean, object, array or null",
                        e.instance()
                    )
                } else {
                    format!("invalid JSON Schema: {e}")
                };
                self.err(schema.pos, field, message);
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
            self.shared.schema(input_schema),
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
        if let Some(Value::Object(out)) = spec.output.as_ref().map(|o| &*o.value) {
            // The result is wrapped exactly when `response.always_wrap` says (the same
            // test), so every result matches what is advertised here.
            let wrapped = if output_wrap(spec) != Wrap::Always {
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
            tool = tool.with_raw_output_schema(self.shared.schema(wrapped));
        }
        tool
    }

    /// Compiles a request; `field` names it in diagnostics (`request`, or
    /// `idempotency.reconcile` for a reconcile GET).
    pub(super) fn request(
        &mut self,
        field: &str,
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
                        &format!("{field}.upstream"),
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
            self.err(
                spec.path.pos,
                &format!("{field}.path"),
                "must start with '/'",
            );
        }
        let path = self.template(
            &format!("{field}.path"),
            &spec.path,
            Slot::Path,
            args,
            ROOTS,
        );
        let mut query = Vec::new();
        for (k, v) in &spec.query {
            if let Some(t) =
                self.template(&format!("{field}.query.{k}"), v, Slot::Text, args, ROOTS)
            {
                query.push((k.clone(), t));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            let name = format!("{field}.headers.{k}");
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                self.err(v.pos, &name, "not a valid header name");
            }
            if let Some(t) = self.template(&name, v, Slot::Text, args, ROOTS) {
                headers.push((k.clone(), t));
            }
        }
        let body = spec.body.as_ref().map(|b| {
            let pos = b.pos;
            self.body(&b.value, &format!("{field}.body"), pos, args, ROOTS)
        });
        let timeout = spec
            .timeout
            .as_ref()
            .and_then(|t| match parse_duration(&t.value) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(t.pos, &format!("{field}.timeout"), e);
                    None
                }
            });
        let upstream = upstream?;
        Some(RequestPlan {
            method: spec.method.to_http(),
            timeout: timeout.unwrap_or(upstream.timeout),
            retries: spec.retries.unwrap_or(DEFAULT_RETRIES),
            max_bytes: DEFAULT_MAX_BYTES,
            upstream,
            path: path?,
            path_shape: crate::template::shape(&spec.path.value),
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

    /// `response.max_bytes`, at least one byte; the default when absent.
    fn max_bytes(&mut self, spec: &ResponseSpec) -> u64 {
        match &spec.max_bytes {
            None => DEFAULT_MAX_BYTES,
            Some(m) if m.value == 0 => {
                self.err(m.pos, "response.max_bytes", "must be at least 1 byte");
                DEFAULT_MAX_BYTES
            }
            Some(m) => m.value,
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
            max_parsed: DEFAULT_MAX_BYTES * PARSED_PER_BYTE,
            wrap: Wrap::NonObjects,
        }
    }
}

/// How the tool's results are wrapped, from its `output:` schema: an object schema
/// (`type: object`) describes the result as sent; any other (`type: array`, no `type`)
/// describes the selection, always wrapped in an object (`structuredContent` must be
/// one) and advertised so in `tools/list`.
fn output_wrap(spec: &ToolSpec) -> Wrap {
    match spec.output.as_ref().map(|o| &*o.value) {
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("object") => {
            Wrap::Never
        }
        Some(Value::Object(_)) => Wrap::Always,
        _ => Wrap::NonObjects,
    }
}
