//! `${VAR}` in config files: where variables come from ([`Vars`]), the expansion rule
//! ([`expand_env`]), and the fields it applies to, expanded once when a file is loaded.
//!
//! Owns the list of expanded fields, so every file follows one rule. It must not expand
//! anything else: tool files are templates that read the environment through
//! `{{ secret.NAME }}` (kept out of logs and errors), and a `${` there is reported by the
//! catalog rather than filled in with a value nobody can see.

use std::path::Path;

use super::Located;
use super::diag::{Diagnostic, Diagnostics, Pos};
use super::policy::PolicySpec;
use super::server::ServerSpec;

/// Where environment variables come from while loading: the process environment, with
/// overrides on top (the demo and the tests point upstreams at a local API this way,
/// without touching the process environment).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    overrides: Vec<(String, String)>,
    /// Templates' `secret.NAME` reads a placeholder, never the environment.
    placeholder_secrets: bool,
}

/// What `{{ secret.NAME }}` renders as where no real secret may be used (`mcpd test`,
/// `mcpd explain`): `placeholder-NAME`.
pub fn placeholder_secret(name: &str) -> String {
    format!("placeholder-{name}")
}

impl Vars {
    /// The process environment, no overrides.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// Adds an override that wins over the process environment.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.overrides.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Looks a variable up.
    pub fn get(&self, name: &str) -> Option<String> {
        self.overrides
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    }

    /// Templates read every secret as its placeholder ([`placeholder_secret`]) instead
    /// of the environment: a run against recorded or demo upstreams needs no real secret
    /// and never sends one.
    pub fn with_placeholder_secrets(mut self) -> Self {
        self.placeholder_secrets = true;
        self
    }

    /// The value of the secret `name` (`{{ secret.NAME }}`): environment variable
    /// `NAME`, or its placeholder in a test run.
    pub fn secret(&self, name: &str) -> Option<String> {
        if self.placeholder_secrets {
            Some(placeholder_secret(name))
        } else {
            self.get(name)
        }
    }
}

/// Why `${VAR}` expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A `${` with no closing `}`; holds the whole input.
    #[error("unclosed '${{' in '{input}'")]
    Unclosed {
        /// The text being expanded.
        input: String,
    },
    /// A variable that is unset and has no default.
    #[error(
        "environment variable '{name}' is not set (write '${{{name}:-default}}' to give a default)"
    )]
    Unset {
        /// The variable's name.
        name: String,
    },
}

/// Expands `${VAR}` and `${VAR:-default}` in `input`.
///
/// # Errors
/// Names the first variable that is unset and has no default, or an unclosed `${`.
pub fn expand_env(input: &str, vars: &Vars) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(rest.get(..start).unwrap_or_default());
        let after = rest.get(start + 2..).unwrap_or_default();
        let Some(end) = after.find('}') else {
            return Err(ExpandError::Unclosed {
                input: input.to_owned(),
            });
        };
        let inner = after.get(..end).unwrap_or_default();
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (vars.get(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ExpandError::Unset {
                    name: name.to_owned(),
                });
            }
            (Some(v), None) => out.push_str(&v),
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands, in place, the fields of `mcpd.yaml` that take `${VAR}`, reporting a variable
/// that is unset (with no default) at its field. The fields: `upstreams.*.url`,
/// `regions` and `token_exchange.token_url`, `state`, `elevation.ticket_check.url`, `audit.path`, `identity.audience`, `issuer` and `token_file`,
/// `telemetry.otlp.endpoint` and `headers`, and under `http:` `allowed_hosts`,
/// `allowed_origins`, `resource_url`, `authorization_servers` and `jwks` (`url`,
/// `issuer`, `audience`).
pub fn expand_server(path: &Path, spec: &mut ServerSpec, vars: &Vars, diags: &mut Diagnostics) {
    let mut x = Expander { path, vars, diags };
    for (name, up) in &mut spec.upstreams {
        x.located(&format!("upstreams.{name}.url"), &mut up.url);
        for (region, url) in &mut up.regions {
            x.located(&format!("upstreams.{name}.regions.{region}"), url);
        }
        if let Some(te) = &mut up.token_exchange {
            x.located(
                &format!("upstreams.{name}.token_exchange.token_url"),
                &mut te.token_url,
            );
        }
    }
    if let Some(state) = &mut spec.state {
        x.plain("state", state);
    }
    if let Some(check) = &mut spec.elevation.ticket_check {
        x.located("elevation.ticket_check.url", &mut check.url);
    }
    if let Some(audit) = &mut spec.audit {
        x.plain("audit.path", &mut audit.path);
    }
    if let Some(id) = &mut spec.identity {
        x.plain("identity.audience", &mut id.audience);
        x.optional("identity.issuer", &mut id.issuer);
        x.optional("identity.token_file", &mut id.token_file);
    }
    if let Some(otlp) = &mut spec.telemetry.otlp {
        x.plain("telemetry.otlp.endpoint", &mut otlp.endpoint);
        for (k, v) in &mut otlp.headers {
            x.plain(&format!("telemetry.otlp.headers.{k}"), v);
        }
    }
    let http = &mut spec.http;
    x.list("http.allowed_hosts", &mut http.allowed_hosts);
    x.list("http.allowed_origins", &mut http.allowed_origins);
    x.optional("http.resource_url", &mut http.resource_url);
    x.list(
        "http.authorization_servers",
        &mut http.authorization_servers,
    );
    if let Some(jwks) = &mut http.jwks {
        x.plain("http.jwks.url", &mut jwks.url);
        x.plain("http.jwks.issuer", &mut jwks.issuer);
        x.plain("http.jwks.audience", &mut jwks.audience);
    }
}

/// Expands, in place, the fields of `policies.yaml` that take `${VAR}`: the `egress`
/// entries. An entry that expands to nothing is left out and one that expands to a
/// comma-separated list becomes one entry per item, so
/// `"${MCPD_EGRESS_EXTRA:-}"` adds hosts for one run and nothing otherwise.
pub fn expand_policy(path: &Path, spec: &mut PolicySpec, vars: &Vars, diags: &mut Diagnostics) {
    let mut x = Expander { path, vars, diags };
    let entries = std::mem::take(&mut spec.egress);
    for (i, e) in entries.into_iter().enumerate() {
        if !e.value.contains("${") {
            spec.egress.push(e);
            continue;
        }
        let Some(v) = x.expand(&format!("egress[{i}]"), e.pos, &e.value) else {
            continue;
        };
        spec.egress.extend(split_list(&v).map(|item| Located {
            value: item.to_owned(),
            pos: e.pos,
        }));
    }
}

/// The items of an expanded list entry: comma-separated, trimmed, empty ones left out.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Expands fields of one file, collecting a diagnostic per failure.
struct Expander<'a> {
    path: &'a Path,
    vars: &'a Vars,
    diags: &'a mut Diagnostics,
}

impl Expander<'_> {
    /// The expansion of `value`, or `None` after reporting why it failed.
    fn expand(&mut self, field: &str, pos: Pos, value: &str) -> Option<String> {
        match expand_env(value, self.vars) {
            Ok(v) => Some(v),
            Err(e) => {
                self.diags
                    .push(Diagnostic::new(self.path, pos, format!("{field}: {e}")));
                None
            }
        }
    }

    fn plain(&mut self, field: &str, value: &mut String) {
        if value.contains("${")
            && let Some(v) = self.expand(field, Pos::default(), value)
        {
            *value = v;
        }
    }

    fn optional(&mut self, field: &str, value: &mut Option<String>) {
        if let Some(v) = value {
            self.plain(field, v);
        }
    }

    fn located(&mut self, field: &str, value: &mut Located<String>) {
        if value.value.contains("${")
            && let Some(v) = self.expand(field, value.pos, &value.value)
        {
            value.value = v;
        }
    }

    /// A list: each entry expanded, empty ones left out, comma lists split.
    fn list(&mut self, field: &str, values: &mut Vec<String>) {
        let entries = std::mem::take(values);
        for (i, e) in entries.into_iter().enumerate() {
            if !e.contains("${") {
                values.push(e);
            } else if let Some(v) = self.expand(&format!("{field}[{i}]"), Pos::default(), &e) {
                values.extend(split_list(&v).map(str::to_owned));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_variables_and_defaults() {
        let vars = Vars::default().with("MCPD_T_HOST", "10.0.0.1");
        assert_eq!(
            expand_env("http://${MCPD_T_HOST}:${MCPD_T_PORT:-8080}/x", &vars),
            Ok("http://10.0.0.1:8080/x".to_owned())
        );
    }

    #[test]
    fn unset_variable_without_default_is_an_error_naming_it() {
        let err = expand_env("${MCPD_T_SURELY_UNSET}", &Vars::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'MCPD_T_SURELY_UNSET'"), "{err}");
    }

    #[test]
    fn expansion_errors_say_what_to_write() {
        assert_eq!(
            expand_env("a ${B", &Vars::default())
                .unwrap_err()
                .to_string(),
            "unclosed '${' in 'a ${B'"
        );
        assert_eq!(
            expand_env("${MCPD_T_SURELY_UNSET}", &Vars::default())
                .unwrap_err()
                .to_string(),
            "environment variable 'MCPD_T_SURELY_UNSET' is not set (write '${MCPD_T_SURELY_UNSET:-default}' to give a default)"
        );
    }

    fn policy(egress: &[&str]) -> PolicySpec {
        let yaml = format!("default: allow\negress: [{}]\n", egress.join(", "));
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn egress_entries_expand_drop_when_empty_and_split_comma_lists() {
        let vars = Vars::default()
            .with("MCPD_T_ONE", "stub.local:8099")
            .with("MCPD_T_TWO", " a.example , b.example:443 ,");
        let mut spec = policy(&[
            "api.example",
            "\"${MCPD_T_NOTHING:-}\"",
            "\"${MCPD_T_ONE}\"",
            "\"${MCPD_T_TWO}\"",
        ]);
        let mut diags = Diagnostics::default();
        expand_policy(Path::new("p.yaml"), &mut spec, &vars, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        let hosts: Vec<&str> = spec.egress.iter().map(|e| e.value.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "api.example",
                "stub.local:8099",
                "a.example",
                "b.example:443"
            ]
        );
    }

    #[test]
    fn an_unset_variable_in_egress_is_reported_at_its_entry_and_left_out() {
        let mut spec = policy(&["api.example", "\"${MCPD_T_SURELY_UNSET}\""]);
        let mut diags = Diagnostics::default();
        expand_policy(Path::new("p.yaml"), &mut spec, &Vars::default(), &mut diags);
        assert_eq!(spec.egress.len(), 1);
        let text = diags.to_string();
        assert!(
            text.starts_with(
                "p.yaml:2:23: egress[1]: environment variable 'MCPD_T_SURELY_UNSET' is not set"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_listed_server_field_expands() {
        let yaml = r#"
upstreams:
  a: { url: "${MCPD_T_H}/v1", regions: { eu: "${MCPD_T_H}/eu" } }
state: "${MCPD_T_H}/state.redb"
audit: { path: "${MCPD_T_H}/audit.jsonl" }
identity: { audience: "${MCPD_T_H}", issuer: "${MCPD_T_H}", token_file: "${MCPD_T_H}" }
telemetry: { otlp: { endpoint: "${MCPD_T_H}", headers: { k: "${MCPD_T_H}" } } }
http:
  allowed_hosts: ["${MCPD_T_H}"]
  allowed_origins: ["${MCPD_T_H}"]
  resource_url: "${MCPD_T_H}"
  authorization_servers: ["${MCPD_T_H}"]
  jwks: { url: "${MCPD_T_H}", issuer: "${MCPD_T_H}", audience: "${MCPD_T_H}" }
"#;
        let mut spec: ServerSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut diags = Diagnostics::default();
        let vars = Vars::default().with("MCPD_T_H", "X");
        expand_server(Path::new("m.yaml"), &mut spec, &vars, &mut diags);
        assert!(diags.is_empty(), "{diags}");
        let debug = format!("{spec:?}");
        assert!(!debug.contains("${"), "{debug}");
        assert_eq!(debug.matches("\"X").count(), 16, "{debug}");
    }

    #[test]
    fn a_placeholder_run_never_reads_a_secret_from_the_environment() {
        let vars = Vars::default().with("MCPD_T_KEY", "real");
        assert_eq!(vars.secret("MCPD_T_KEY").as_deref(), Some("real"));
        let vars = vars.with_placeholder_secrets();
        assert_eq!(
            vars.secret("MCPD_T_KEY").as_deref(),
            Some("placeholder-MCPD_T_KEY")
        );
    }
}
