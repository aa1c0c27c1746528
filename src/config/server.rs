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
    /// Short-lived signed tokens for non-human callers (`mcpd token issue`).
    #[serde(default)]
    pub identity: Option<IdentitySpec>,
    /// Just-in-time elevation grants (`mcpd elevate`).
    #[serde(default)]
    pub elevation: ElevationSpec,
    /// What `tools/list` (and `resources/list`, `resources/templates/list`) shows an
    /// actor: `scoped` (the default) lists only the tools (and resources) its scopes let
    /// it call; `all` lists every one to everyone (calls are checked either way).
    #[serde(default)]
    pub tools_list: ToolsList,
    /// Where traces go. Read at start.
    #[serde(default)]
    pub telemetry: TelemetrySpec,
    /// Serving MCP over Streamable HTTP (`mcpd serve --http ADDR`). Read at start.
    #[serde(default)]
    pub http: HttpSpec,
    /// How `mcpd serve` applies changes to this directory while it runs: whether a
    /// changed `policies.yaml` applies by itself or waits for a deliberate reload.
    #[serde(default)]
    pub reload: ReloadSpec,
}

/// What `tools/list` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolsList {
    /// The tools the actor's scopes let it call.
    #[default]
    Scoped,
    /// Every tool.
    All,
}

/// How `mcpd serve` applies config changes (docs/operations.md, "Hot reload").
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// `auto` (the default): a changed `policies.yaml` applies once it has settled.
    /// `manual`: a change is reported (a warning, `mcpd_policy_changes_total{change="held"}`,
    /// an audit record) but applied only by a deliberate act: `mcpd reload`, SIGHUP or a
    /// restart. While it is `manual`, an edit of this setting waits for one too.
    #[serde(default)]
    pub policy: PolicyReload,
    /// How long a changed config file must stay unchanged before it is read, e.g.
    /// `250ms` (default `100ms`); a file written in parts is never read half-way.
    /// Raise it when files arrive slowly (a network file system, a slow deploy tool).
    #[serde(default)]
    pub settle: Option<Located<String>>,
}

impl ReloadSpec {
    /// How files are read on a reload: `settle` parsed (the default when unset).
    ///
    /// # Errors
    /// `settle` is not a duration, or is longer than the settle deadline.
    pub fn read_settle(&self) -> Result<super::Settle, String> {
        let Some(s) = &self.settle else {
            return Ok(super::Settle::default());
        };
        let quiet = crate::util::duration::parse(&s.value).map_err(|e| e.to_string())?;
        if quiet >= super::settle::DEFAULT_DEADLINE {
            return Err(format!(
                "'{}' is too long: a file must settle within {}",
                s.value,
                crate::util::duration::human(super::settle::DEFAULT_DEADLINE)
            ));
        }
        Ok(super::Settle::quiet(quiet))
    }
}

/// When a change to `policies.yaml` applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyReload {
    /// When the file changes (and has settled).
    #[default]
    Auto,
    /// Only on `mcpd reload`, SIGHUP or a restart.
    Manual,
}

/// `mcpd serve --http`: who may connect and how callers authenticate.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `Host` header values accepted (`name` or `name:port`), against DNS rebinding.
    /// Default: loopback only (`localhost`, `127.0.0.1`, `::1`); list the names clients
    /// use to reach this mcpd. `--allow-host` adds to it.
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Browser origins accepted when a request carries `Origin`, with scheme and port
    /// (`https://app.example.com:443`, `http://localhost:*`). Empty (the default): any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted, in bytes (default 4 MiB); larger gets 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Callers must present a bearer token (`Authorization: Bearer ...`) that the
    /// `identity:` section verifies (default `true`). `false` (or `--no-auth`) is for
    /// local use only: calls run as `default_actor`, and mcpd says so loudly at start.
    #[serde(default = "default_true")]
    pub auth: bool,
    /// The URL clients use for the MCP endpoint, e.g. `https://mcpd.example.com/mcp`:
    /// the `resource` of the protected-resource metadata (RFC 9728). Default: built from
    /// the request's `Host` as `http://HOST/mcp`; set it behind TLS or a proxy.
    #[serde(default)]
    pub resource_url: Option<String>,
    /// Authorization servers that issue tokens for this mcpd (your SSO), listed in the
    /// protected-resource metadata so OAuth-capable hosts know where to sign in. Empty:
    /// the `jwks` issuer, if there is one; with neither, no metadata is advertised (a 401
    /// says how to get a token instead: there would be nowhere to sign in).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// How long a shutdown (SIGTERM, SIGINT) waits for calls in flight, e.g. `30s`
    /// (default `30s`).
    #[serde(default)]
    pub shutdown_grace: Option<Located<String>>,
    /// Also accept JWTs from an external issuer (your SSO), verified with its published
    /// keys (JWKS). mcpd's own tokens (`identity:`) keep working beside them.
    #[serde(default)]
    pub jwks: Option<JwksSpec>,
}

/// An external token issuer whose keys are published as a JWKS document.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksSpec {
    /// The JWKS URL, e.g. `https://sso.example.com/.well-known/jwks.json`. Fetched at
    /// start and again when a token names a key id it does not know (at most every 30s).
    pub url: String,
    /// The `iss` its tokens carry, e.g. `https://sso.example.com/`.
    pub issuer: String,
    /// The `aud` its tokens must name for this mcpd, e.g. `mcpd-prod`.
    pub audience: String,
    /// Where the scopes are: a claim holding a space-separated string (`scope`, the
    /// OAuth default) or an array (`scp`, `roles`). Default `scope`.
    #[serde(default)]
    pub scopes_claim: Option<String>,
    /// Clock skew tolerated on its tokens' `exp` and `nbf`, e.g. `30s` (default `5s`,
    /// at most `5m`).
    #[serde(default)]
    pub leeway: Option<String>,
}

impl Default for HttpSpec {
    /// Secure by default: loopback hosts only, authentication on.
    fn default() -> Self {
        Self {
            allowed_hosts: default_allowed_hosts(),
            allowed_origins: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            auth: true,
            resource_url: None,
            authorization_servers: Vec::new(),
            shutdown_grace: None,
            jwks: None,
        }
    }
}

fn default_allowed_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_true() -> bool {
    true
}

/// Trace export.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Export spans over OTLP (HTTP, protobuf) to a collector. Without it (and without
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), calls are only logged on stderr.
    #[serde(default)]
    pub otlp: Option<OtlpSpec>,
}

/// An OTLP/HTTP destination.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSpec {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces`
    /// is added). `${VAR}` is expanded.
    pub endpoint: String,
    /// Headers sent with every export, e.g. an API key: `{ x-api-key: "${KEY}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The share of traces kept, 0 to 1 (default 1). A call whose caller's trace is
    /// sampled is always kept (parent-based).
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
    /// `service.name` of the exported spans (default `mcpd`).
    #[serde(default)]
    pub service_name: Option<String>,
}

/// How callers prove who they are.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// The audience tokens must name (`aud`), e.g. `mcpd-prod`. A token for another
    /// deployment is refused.
    pub audience: String,
    /// The issuer tokens must name (`iss`), default `mcpd`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The environment variable holding the signing key (`KID:BASE64URL`, made by
    /// `mcpd token keygen`), default `MCPD_TOKEN_KEY`. `mcpd token issue` and
    /// `mcpd elevate` sign with it; its public half also verifies.
    #[serde(default)]
    pub signing_key_env: Option<String>,
    /// More verification keys by key id (base64url Ed25519 public keys): keep the old key
    /// here while tokens signed with it are still alive (rotation).
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Where a stdio caller's token is read: this environment variable of the mcpd
    /// process (default `MCPD_TOKEN`), set in the host's config.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Or a file holding the token, read again whenever it changes: a refresher can
    /// rewrite it before the token expires without restarting the host.
    #[serde(default)]
    pub token_file: Option<String>,
    /// The longest lifetime `mcpd token issue` grants, e.g. `24h` (default `24h`).
    #[serde(default)]
    pub max_ttl: Option<Located<String>>,
    /// Clock skew tolerated on a token's and a grant's expiry: one is accepted until
    /// this long after its `exp`, e.g. `0s` or `30s` (default `5s`, at most `5m`).
    #[serde(default)]
    pub leeway: Option<Located<String>>,
}

/// Rules for elevation grants.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElevationSpec {
    /// A regular expression every ticket must match, e.g. `^(CHG|INC)-[0-9]+$`.
    #[serde(default)]
    pub ticket_pattern: Option<Located<String>>,
    /// The longest grant, e.g. `1h` (default `1h`).
    #[serde(default)]
    pub max_ttl: Option<Located<String>>,
    /// How long mcpd waits for a human to answer an approval it asked for through the
    /// client (a ticket or a yes, see `require: { approval: true }`), e.g. `2m` (default
    /// `2m`). No answer in time is a denial.
    #[serde(default)]
    pub approval_timeout: Option<Located<String>>,
    /// The ticket system: a tool (by id, with a `ticket` argument) mcpd calls as the
    /// caller with the ticket a human gave when asked to approve a call. The ticket is
    /// accepted only when that call succeeds; a failure (e.g. the system's 404 for an
    /// unknown ticket) rejects it. Without it only `ticket_pattern` is checked.
    #[serde(default)]
    pub ticket_tool: Option<Located<String>>,
    /// Look each ticket up in the ticket system before a grant is made under it: it
    /// must exist, meet `require`, be for the grant's environment and be inside its
    /// change window (docs/identity.md). Fails closed.
    #[serde(default)]
    pub ticket_check: Option<TicketCheckSpec>,
}

/// An HTTP lookup of a change ticket.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketCheckSpec {
    /// The ticket's URL, a template with `{{ ticket }}` (and `{{ env }}`), each inserted
    /// value encoded as a path segment, e.g.
    /// `https://tickets.example.com/api/changes/{{ ticket }}`. `${VAR}` is expanded.
    pub url: Located<String>,
    /// Headers sent, templates that may read `secret.NAME` (environment variable NAME),
    /// e.g. `{ Authorization: "Bearer {{ secret.TICKETS_TOKEN }}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Conditions the ticket must meet: a JSONPath into the answer, and the value it
    /// must select, e.g. `{ "$.status": approved }`.
    #[serde(default)]
    pub require: BTreeMap<String, serde_json::Value>,
    /// A JSONPath to the ticket's environment, e.g. `$.environment`: it must equal the
    /// grant's `--env` (a grant without one is refused).
    #[serde(default)]
    pub environment: Option<String>,
    /// JSONPaths to the ticket's change window (RFC 3339 UTC times or Unix seconds):
    /// grants are made only inside it, and end when it closes.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// How long a ticket that passed is reused without asking again, e.g. `30s`
    /// (default `30s`; its window is checked again on every use).
    #[serde(default)]
    pub cache: Option<Located<String>>,
    /// The time allowed for a lookup, e.g. `5s` (default `5s`).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
}

/// Where a ticket's change window is.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// A JSONPath to when it opens, e.g. `$.window.start`.
    pub start: String,
    /// A JSONPath to when it closes, e.g. `$.window.end`.
    pub end: String,
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
    /// The environment variable holding the signing key (default `MCPD_AUDIT_KEY`): the
    /// HMAC secret, or the Ed25519 private key as 64 hex digits (`mcpd audit keygen`).
    #[serde(default = "default_audit_key_env")]
    pub key_env: String,
    /// How records are signed: `hmac` (default; verifying needs the same secret) or
    /// `ed25519` (verifying needs only the public key).
    #[serde(default)]
    pub signing: AuditSigning,
}

/// An audit log's signature scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditSigning {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    Hmac,
    /// Ed25519 signatures.
    Ed25519,
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
    /// The API deduplicates requests on their `Idempotency-Key` header: a repeat with a
    /// key it has seen gets the first answer and changes nothing (default `false`). Then
    /// a keyed write whose outcome is unknown may be sent again, and keyed POSTs are
    /// retried. A tool may say otherwise with `idempotency.upstream_dedupes`.
    #[serde(default)]
    pub dedupes_idempotency_key: bool,
    /// What this upstream is told of the caller, beside the static secrets its tools
    /// send (docs/identity.md): `assertion` (a short-lived JWT mcpd signs per call, its
    /// keys published at `/.well-known/jwks.json` and by `mcpd token jwks`) or
    /// `token_exchange` (a token from your SSO, RFC 8693). Absent: nothing. The caller's
    /// own token is never sent.
    #[serde(default)]
    pub identity: Option<ForwardMode>,
    /// Settings of `identity: assertion` (all optional).
    #[serde(default)]
    pub assertion: Option<AssertionSpec>,
    /// Settings of `identity: token_exchange` (required with it).
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeSpec>,
    /// A circuit breaker on every call to this upstream (each region URL has its own):
    /// when too many fail, writes to it are refused at once for a while. A tool file's
    /// own `breaker:` counts that tool's calls alone; a call is refused when either is
    /// open.
    #[serde(default)]
    pub breaker: Option<super::tool::BreakerSpec>,
}

/// How the caller's identity reaches an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMode {
    /// A JWT mcpd signs per call with its identity key (`sub` the actor, `aud` the
    /// upstream, the actor's scopes, purpose, ticket, trace id and tool).
    Assertion,
    /// A token your SSO issues for this upstream in exchange for an assertion of the
    /// actor (RFC 8693), cached per subject until shortly before it expires.
    TokenExchange,
}

/// `identity: assertion` settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionSpec {
    /// The `aud` the upstream checks, e.g. `orders-api` (default: the upstream's name).
    /// It may not be `identity.audience`: an assertion is never a token for mcpd.
    #[serde(default)]
    pub audience: Option<Located<String>>,
    /// The header that carries it (default `Authorization`, as `Bearer JWT`; any other
    /// header carries the JWT alone), e.g. `X-Actor-Assertion`.
    #[serde(default)]
    pub header: Option<Located<String>>,
    /// How long an assertion is valid, e.g. `60s` (default `60s`, at most `1h`).
    #[serde(default)]
    pub ttl: Option<Located<String>>,
}

/// `identity: token_exchange` settings: where the SSO issues tokens, and for what.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeSpec {
    /// The SSO's token endpoint, e.g. `https://sso.example.com/oauth/token`. `${VAR}`
    /// is expanded.
    pub token_url: Located<String>,
    /// The `audience` asked for: the upstream as the SSO knows it, e.g. `orders-api`.
    pub audience: String,
    /// The `scope` asked for, e.g. `[orders.read]` (default: none asked).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The environment variable holding mcpd's client id at the SSO.
    pub client_id_env: String,
    /// The environment variable holding mcpd's client secret at the SSO (sent with HTTP
    /// Basic authentication).
    pub client_secret_env: String,
    /// The header that carries the token (default `Authorization`, as `Bearer TOKEN`).
    #[serde(default)]
    pub header: Option<Located<String>>,
}
