//! A compiled tool: what one `tools.d` entry becomes, and all the call path reads of it.
//!
//! Owns the runtime shape of a tool (templates, validators, request plan, response map,
//! limits, idempotency, cost, SLO). A leaf of the catalog: it imports the types its
//! steps define and nothing that imports it back. It never parses or compiles.

use std::path::PathBuf;
use std::time::Duration;

use super::resource::ResourceDecl;
use crate::idempotency::Scope;
use crate::limits::{Breaker, CostPlan, ToolLimits};
use crate::response::ResponseMap;
use crate::response::jsonpath::JsonPath;
use crate::response::present::PresentPlan;
use crate::telemetry::slo::Slo;
use crate::template::{TemplateSet, Tpl};
use crate::upstream::request::{RequestError, RequestPlan, Secrets};

/// A tool's idempotency: the key template, how long keys live, whose they are, and
/// what may be done with a key whose outcome is unknown.
#[derive(Debug)]
pub struct IdemPlan {
    /// Key template over `args`.
    pub key: Tpl,
    /// How long a completed result is replayed (and an unknown outcome held).
    pub ttl: Duration,
    /// Whose key it is.
    pub scope: Scope,
    /// The endpoint deduplicates on `Idempotency-Key` (the tool's word, else the
    /// upstream's).
    pub dedupes: bool,
    /// The GET that tells whether a held write landed.
    pub reconcile: Option<Reconcile>,
}

/// A reconcile request: a GET and the condition on its reply that says the write landed.
#[derive(Debug)]
pub struct Reconcile {
    /// The GET (on the tool's upstream; no body, no retries beyond its own).
    pub request: RequestPlan,
    /// Selects the node that shows the write.
    pub landed: JsonPath,
    /// What that node must equal (a typed template over `args`), if anything.
    pub equals: Option<Tpl>,
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
    pub input: std::sync::Arc<jsonschema::Validator>,
    /// Validator of the structured result, if declared.
    pub output: Option<std::sync::Arc<jsonschema::Validator>>,
    /// The HTTP request a call becomes.
    pub request: RequestPlan,
    /// How replies become results.
    pub response: ResponseMap,
    /// How results are shown: text rendering, inline limit, embedding.
    pub present: PresentPlan,
    /// The resource it also serves, if any.
    pub resource: Option<ResourceDecl>,
    /// The values of the environment variables its templates read as `secret.NAME`,
    /// read when it was compiled; a missing one fails each call that needs it, not the
    /// compile (`mcpd validate` runs without secrets).
    pub secrets: Result<Secrets, RequestError>,
    /// Its rate limit and concurrency cap.
    pub limits: ToolLimits,
    /// How its calls are made idempotent, for writes.
    pub idempotency: Option<IdemPlan>,
    /// Cost units one call spends.
    pub cost: CostPlan,
    /// Its latency objective, with the recent latencies it is judged on.
    pub slo: Option<Slo>,
    /// Its own circuit breaker (its upstream's is the catalog's).
    pub breaker: Option<Breaker>,
    /// What its request's path, query and body templates read (`args.env`,
    /// `secret.KEY`): a replayed call whose recorded arguments hide one of them cannot
    /// show policy the request it sent.
    pub request_reads: std::collections::BTreeSet<String>,
    /// Its compiled templates.
    pub templates: TemplateSet,
    /// The fingerprint of the file it was compiled from.
    pub fingerprint: u64,
}

impl Tool {
    /// Whether the tool's endpoint deduplicates on `Idempotency-Key` (for a client key on
    /// a tool without `idempotency:`, the upstream's word).
    pub fn dedupes(&self) -> bool {
        self.idempotency
            .as_ref()
            .map_or(self.request.upstream.dedupes, |p| p.dedupes)
    }
}

impl Tool {
    /// Whether `tools/list` shows it and `tools/call` calls it (a tool declared as a
    /// resource with `tool: false` is only a resource).
    pub fn is_tool(&self) -> bool {
        self.resource.as_ref().is_none_or(|r| r.tool)
    }
}

/// The wire name of a tool id: dots become underscores.
pub fn wire_name(id: &str) -> String {
    id.replace('.', "_")
}
