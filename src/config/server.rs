//! `mcpd.yaml`: the server's own settings, starting with the upstream APIs tools call.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Located;

/// The server file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Named upstream APIs. Tools refer to them by name in `request.upstream`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// The signed, hash-chained audit log (one record per call). Read at start: a
    /// change takes effect on restart.
    #[serde(default)]
    pub audit: Option<AuditSpec>,
    /// The actor of calls that carry no token, for local use only (a developer's own
    /// machine). It is explicit here and shows in every trace and audit record; without
    /// it, such calls run as `anonymous` with no scopes, purpose or region.
    #[serde(default)]
    pub default_actor: Option<ActorSpec>,
    /// Where state that outlives a call is kept (idempotency records, rate and budget
    /// counters, elevation grants): a file path relative to the config directory
    /// (default `.mcpd/state.redb`), `memory:` (lost on exit), or `redis://...` for
    /// several replicas. Read at start.
    #[serde(default)]
    pub state: Option<String>,
}

/// An actor: who makes calls, for what, from where.
#[derive(Debug, Clone, Deserialize, JsonSchema, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSpec {
    /// Who, e.g. `agent:copilot` or `user:ana`.
    pub subject: String,
    /// Tools (and `tool:env`) the actor may call.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Why it calls, e.g. `support`.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The data region it works in, e.g. `eu`.
    #[serde(default)]
    pub region: Option<String>,
}

/// Where the audit log goes and how it is signed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    /// The log file (JSON lines), relative to the config directory.
    pub path: String,
    /// The environment variable holding the HMAC signing key (default `MCPD_AUDIT_KEY`).
    #[serde(default = "default_audit_key_env")]
    pub key_env: String,
}

fn default_audit_key_env() -> String {
    "MCPD_AUDIT_KEY".to_owned()
}

/// One upstream API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Base URL, `http` or `https`. `${VAR}` and `${VAR:-default}` are expanded from
    /// the environment when the file is loaded.
    pub url: Located<String>,
    /// The same API's base URL per data region (e.g. `eu`), for region routing.
    #[serde(default)]
    pub regions: BTreeMap<String, Located<String>>,
    /// Default time allowed for a request, e.g. `10s` (default `10s`).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
    /// Time allowed to open a connection, e.g. `2s` (default `2s`).
    #[serde(default)]
    pub connect_timeout: Option<Located<String>>,
}
