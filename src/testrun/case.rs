//! The test case file (`tests.d/*.yaml`): what the user wrote, strict and documented.
//!
//! The file model only; running and judging cases is `super`'s job. `mcpd schema tests`
//! prints its JSON Schema, generated from these structs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::server::ActorSpec;

/// A file of test cases.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaseFile {
    /// Where the tools' upstream requests go while these cases run: `recorded` (the
    /// default: each case's `recorded` responses, served by a stub mcpd starts) or `demo`
    /// (the bundled demo API, started fresh for this file). Either way every upstream in
    /// `mcpd.yaml`, and each of its region URLs, is pointed at it, keeping the URL's path
    /// (`https://api.internal/v1` becomes `http://127.0.0.1:PORT/v1`), and `127.0.0.1` is
    /// added to the egress allow-list, so no real backend is reached.
    #[serde(default)]
    pub upstream: UpstreamMode,
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// Where upstream requests go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UpstreamMode {
    /// Each case's `recorded` responses, in order.
    #[default]
    Recorded,
    /// The bundled demo orders/flags API (`mcpd demo-api`).
    Demo,
}

/// One case: a call and what must come of it. The cases of one file run in order and
/// share one in-memory state store (idempotency records, rate and budget counters), so
/// a second identical write can be expected to replay.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Case {
    /// What the case shows, e.g. `golden: August export masks emails`.
    pub name: String,
    /// The call.
    pub call: CallSpec,
    /// With `upstream: recorded`: the responses the upstream gives, one per request, in
    /// order. A request beyond the list gets a 500 and fails the case.
    #[serde(default)]
    pub recorded: Vec<Recorded>,
    /// What must come of the call. With nothing else said, the call must succeed.
    #[serde(default)]
    pub expect: Expect,
}

/// The call a case makes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallSpec {
    /// The tool id (`orders.export`) or wire name (`orders_export`).
    pub tool: String,
    /// The arguments.
    #[serde(default)]
    pub args: Map<String, Value>,
    /// Who calls (default: `default_actor` from `mcpd.yaml`, else `anonymous`).
    #[serde(default)]
    pub actor: Option<ActorSpec>,
    /// An elevation grant the actor holds for this call, as `mcpd elevate` would record
    /// it: for the called tool, checked against `elevation.ticket_pattern`, removed after
    /// the call. Needs an `identity:` section in `mcpd.yaml` (grants are signed; the run
    /// signs with a throwaway key).
    #[serde(default)]
    pub elevation: Option<GrantSpec>,
}

/// An elevation grant.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantSpec {
    /// The change ticket, e.g. `CHG-1234`.
    pub ticket: String,
    /// Limit the grant to calls whose `env` argument is this, e.g. `prod`.
    #[serde(default)]
    pub env: Option<String>,
    /// Who granted it (default `mcpd-test`).
    #[serde(default)]
    pub granted_by: Option<String>,
}

/// One recorded upstream response.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Recorded {
    /// The HTTP status (default 200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// The JSON body (default: none).
    #[serde(default)]
    pub body: Option<Value>,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn ok_status() -> u16 {
    200
}

/// What must come of a call. Every field given is checked; all must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expect {
    /// `allow` (the default: the call succeeds), `deny` (policy refuses it), `invalid`
    /// (the arguments are refused before policy) or `error` (any other tool error,
    /// such as an upstream error status).
    #[serde(default)]
    pub decision: Decision,
    /// Text the refusal or error message must contain (for `deny`, the reason).
    #[serde(default)]
    pub reason_contains: Option<String>,
    /// JSONPath assertions over the result (`structuredContent`).
    #[serde(default)]
    pub assert: Vec<Assertion>,
    /// When true, the result must hold no raw PII: the email, card-number and secret
    /// detectors find nothing (masked values such as `j***@example.com` pass).
    #[serde(default)]
    pub no_raw_pii: bool,
    /// Whether the upstream received any request.
    #[serde(default)]
    pub upstream_called: Option<bool>,
    /// Exactly how many requests the upstream received.
    #[serde(default)]
    pub upstream_requests: Option<usize>,
    /// With `upstream: recorded`: the requests the upstream must have received, in
    /// order. Each is `METHOD /path?query` (e.g. `GET /v1/pets?limit=2`: any upstream),
    /// `METHOD URL` with the URL the request went to (the upstream's or region's base URL
    /// from `mcpd.yaml`, then the path: `GET https://eu.api.internal/v1/pets`), or
    /// `{ request: "METHOD /path?query", upstream: NAME, region: NAME }` naming the
    /// upstream and the region (no `region`: the upstream's main `url`). Query
    /// parameters are in the tool file's order.
    #[serde(default)]
    pub requests: Option<Vec<ExpectedRequest>>,
    /// Whether the result must be a replay of an earlier call's (same idempotency key
    /// within the file): the upstream is not called again.
    #[serde(default)]
    pub replayed: Option<bool>,
    /// Shadow rules (ids) that must have matched: recorded, not enforced.
    #[serde(default)]
    pub shadow: Vec<String>,
    /// Enforced rules (ids) that must have matched.
    #[serde(default)]
    pub rules: Vec<String>,
}

/// One request the upstream must have received.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum ExpectedRequest {
    /// `METHOD /path?query`, or `METHOD URL` (the base URL it went to, then the path).
    Line(String),
    /// A request and the upstream (and region) it was sent to.
    Routed(RoutedRequest),
}

/// A request and where it was sent.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutedRequest {
    /// `METHOD /path?query`, e.g. `GET /orders?from=2025-08-01`.
    pub request: String,
    /// The upstream's name in `mcpd.yaml`.
    pub upstream: String,
    /// The region whose URL it went to (`regions:` in `mcpd.yaml`); without it, the
    /// upstream's main `url`.
    #[serde(default)]
    pub region: Option<String>,
}

/// The expected decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Decision {
    /// The call succeeds.
    #[default]
    Allow,
    /// Policy denies the call.
    Deny,
    /// The arguments do not match the input schema.
    Invalid,
    /// Any other tool error (upstream status, unreachable, limits, ...).
    Error,
}

/// One JSONPath assertion. Give `path` and at least one check.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assertion {
    /// JSONPath into the result, e.g. `$.orders[*]` or `$.orders[0].email`.
    pub path: String,
    /// How many nodes the path must select (`$.orders[*]` selects each order).
    #[serde(default)]
    pub count: Option<usize>,
    /// The value the path must select (a single node; several are compared as a list).
    #[serde(default)]
    pub equals: Option<Value>,
    /// Text every selected node must contain (strings as they are, others as JSON).
    #[serde(default)]
    pub contains: Option<String>,
    /// Whether the path must select anything at all.
    #[serde(default)]
    pub exists: Option<bool>,
}
