//! Tickets checked where they live: `elevation.ticket_check` looks a change ticket up in
//! the ticket system over HTTP and says whether it lets this elevation happen now.
//!
//! Owns the compiled check (the URL and header templates, the secrets they read, the
//! JSONPath conditions, the environment and change-window fields), the lookup, and a
//! brief cache of tickets that passed. [`TicketCheck::check`] is the one entry point:
//! `mcpd elevate` calls it, and so may any approval. It fails closed: a ticket system
//! that cannot be reached, an answer that is not JSON or misses a field, refuses, with
//! the reason. It never decides policy and never logs a secret or a ticket's body.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::Vars;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::server::TicketCheckSpec;
use crate::response::jsonpath::JsonPath;
use crate::template::{Slot, TemplateSet, Tpl};
use crate::util::Clock;

/// How long a ticket that passed is reused by default.
const DEFAULT_CACHE: Duration = Duration::from_secs(30);
/// The time allowed for a lookup by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of a ticket read.
const MAX_BYTES: usize = 1024 * 1024;

/// Why a ticket does not let an elevation happen; each message names the ticket and says
/// what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketRefused {
    /// The ticket system could not be asked, or its answer could not be read.
    #[error(
        "ticket '{ticket}' could not be checked ({reason}), so it is refused (the check fails closed); retry when the ticket system answers"
    )]
    Unchecked {
        /// The ticket.
        ticket: String,
        /// Why.
        reason: String,
    },
    /// The ticket system does not know it.
    #[error("ticket '{0}' does not exist in the ticket system")]
    Unknown(String),
    /// A condition of `require` does not hold.
    #[error("ticket '{ticket}' is not approved: {path} is {got}, not {want}")]
    Condition {
        /// The ticket.
        ticket: String,
        /// The JSONPath.
        path: String,
        /// What the ticket has.
        got: String,
        /// What is required.
        want: String,
    },
    /// The ticket is for another environment.
    #[error("ticket '{ticket}' is for environment '{got}', not '{want}'")]
    Environment {
        /// The ticket.
        ticket: String,
        /// The ticket's environment.
        got: String,
        /// The call's (or grant's).
        want: String,
    },
    /// The environment must match, and the elevation names none.
    #[error("ticket '{0}' is checked against an environment: name one (--env)")]
    NoEnvironment(String),
    /// Outside the ticket's change window.
    #[error("ticket '{ticket}''s change window {when}")]
    Window {
        /// The ticket.
        ticket: String,
        /// `opens at ...` or `closed at ...`.
        when: String,
    },
}

/// What a ticket that passed allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketOk {
    /// When its change window closes (Unix seconds), if it has one: an elevation under
    /// it should end then.
    pub window_end: Option<u64>,
}

/// A ticket and the environment it was checked for.
type TicketKey = (String, Option<String>);

/// The compiled `elevation.ticket_check`.
pub struct TicketCheck {
    templates: TemplateSet,
    url: Tpl,
    headers: Vec<(String, Tpl)>,
    /// The secrets the templates read, or the first one that is not set.
    secrets: Result<minijinja::Value, String>,
    require: Vec<(String, JsonPath, Value)>,
    environment: Option<(String, JsonPath)>,
    window: Option<((String, JsonPath), (String, JsonPath))>,
    cache_for: Duration,
    http: reqwest::Client,
    /// Tickets that passed, by (ticket, environment): their body and when it was read.
    cache: Mutex<HashMap<TicketKey, (Value, u64)>>,
    clock: Clock,
}

impl std::fmt::Debug for TicketCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketCheck").finish_non_exhaustive()
    }
}

impl TicketCheck {
    /// Compiles `elevation.ticket_check` of `path`, reporting a template, JSONPath or
    /// duration that does not compile.
    pub fn compile(
        path: &Path,
        spec: &TicketCheckSpec,
        vars: &Vars,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let before = diags.len();
        let mut bad = |field: &str, msg: String| {
            diags.push(Diagnostic::new(
                path,
                spec.url.pos,
                format!("elevation.ticket_check.{field}: {msg}"),
            ));
        };
        let mut templates = TemplateSet::new();
        let mut secrets = std::collections::BTreeSet::new();
        let mut add = |name: &str, source: &str, slot, bad: &mut dyn FnMut(&str, String)| {
            match templates.add(&format!("ticket_check.{name}"), source, slot) {
                Ok((tpl, used)) => {
                    for v in used {
                        match v.split_once('.') {
                            Some(("secret", s)) => {
                                secrets.insert(s.to_owned());
                            }
                            None if v == "ticket" || v == "env" => {}
                            _ => bad(
                                name,
                                format!("unknown variable '{v}' (use ticket, env or secret.NAME)"),
                            ),
                        }
                    }
                    Some(tpl)
                }
                Err(e) => {
                    bad(name, e.to_string());
                    None
                }
            }
        };
        let url = add("url", &spec.url.value, Slot::Path, &mut bad);
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            if let Some(t) = add(&format!("headers.{k}"), v, Slot::Text, &mut bad) {
                headers.push((k.clone(), t));
            }
        }
        let mut path_of = |field: &str, p: &str| match JsonPath::compile(p) {
            Ok(j) => Some((p.to_owned(), j)),
            Err(e) => {
                bad(field, e.to_string());
                None
            }
        };
        let require: Vec<_> = (spec.require.iter())
            .filter_map(|(p, want)| path_of("require", p).map(|(p, j)| (p, j, want.clone())))
            .collect();
        let environment = spec
            .environment
            .as_deref()
            .and_then(|p| path_of("environment", p));
        let window = match &spec.window {
            None => None,
            Some(w) => match (
                path_of("window.start", &w.start),
                path_of("window.end", &w.end),
            ) {
                (Some(s), Some(e)) => Some((s, e)),
                _ => None,
            },
        };
        let duration = |field: &str, v: Option<&crate::config::Located<String>>, default| match v {
            None => Ok(default),
            Some(v) => crate::util::duration::parse(&v.value)
                .map_err(|e| (field.to_owned(), e.to_string())),
        };
        let cache_for = duration("cache", spec.cache.as_ref(), DEFAULT_CACHE);
        let timeout = duration("timeout", spec.timeout.as_ref(), DEFAULT_TIMEOUT);
        let (cache_for, timeout) = match (cache_for, timeout) {
            (Ok(c), Ok(t)) => (c, t),
            (Err((f, m)), _) | (_, Err((f, m))) => {
                bad(&f, m);
                (DEFAULT_CACHE, DEFAULT_TIMEOUT)
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            .build();
        let http = match http {
            Ok(h) => h,
            Err(e) => {
                bad("url", format!("cannot build an HTTP client: {e}"));
                return None;
            }
        };
        let secrets = read_secrets(&secrets, vars);
        let url = url?;
        (diags.len() == before).then(|| Self {
            templates,
            url,
            headers,
            secrets,
            require,
            environment,
            window,
            cache_for,
            http,
            cache: Mutex::new(HashMap::new()),
            clock: Clock::system(),
        })
    }

    /// The same check on `clock` (tests move time instead of waiting).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether `ticket` lets an elevation in `env` happen now: it exists, every
    /// `require` condition holds, its environment is `env` (when `environment` is
    /// set), and its change window is open (when `window` is set). A ticket that passed
    /// is reused for `cache` (its window is checked again each time).
    ///
    /// # Errors
    /// Why not, including a ticket system that could not be asked (fails closed).
    pub async fn check(&self, ticket: &str, env: Option<&str>) -> Result<TicketOk, TicketRefused> {
        let now = self.clock.now_s();
        let key = (ticket.to_owned(), env.map(str::to_owned));
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(_, at)| now < at.saturating_add(self.cache_for.as_secs()))
            .map(|(body, _)| body.clone());
        let body = match cached {
            Some(body) => body,
            None => self.fetch(ticket, env).await?,
        };
        let ok = self.judge(ticket, env, &body, now)?;
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert((body, now));
        Ok(ok)
    }

    async fn fetch(&self, ticket: &str, env: Option<&str>) -> Result<Value, TicketRefused> {
        let unchecked = |reason: String| TicketRefused::Unchecked {
            ticket: ticket.to_owned(),
            reason,
        };
        let secrets = self.secrets.clone().map_err(&unchecked)?;
        let ctx = minijinja::context! { ticket => ticket, env => env, secret => secrets };
        let url = (self.templates.render_text(&self.url, &ctx))
            .map_err(|e| unchecked(format!("url: {e}")))?;
        let mut req = self.http.get(&url);
        for (name, tpl) in &self.headers {
            let value = (self.templates.render_text(tpl, &ctx))
                .map_err(|e| unchecked(format!("headers.{name}: {e}")))?;
            req = req.header(name, value);
        }
        let reply = (req.send().await).map_err(|e| unchecked(e.without_url().to_string()))?;
        let status = reply.status().as_u16();
        if status == 404 {
            return Err(TicketRefused::Unknown(ticket.to_owned()));
        }
        if !(200..300).contains(&status) {
            return Err(unchecked(format!("the ticket system answered {status}")));
        }
        if reply.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(unchecked("the answer is over 1 MiB".to_owned()));
        }
        let bytes = (reply.bytes().await).map_err(|e| unchecked(e.without_url().to_string()))?;
        if bytes.len() > MAX_BYTES {
            return Err(unchecked("the answer is over 1 MiB".to_owned()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| unchecked(format!("the answer is not JSON: {e}")))
    }

    fn judge(
        &self,
        ticket: &str,
        env: Option<&str>,
        body: &Value,
        now: u64,
    ) -> Result<TicketOk, TicketRefused> {
        let t = ticket.to_owned();
        let one = |p: &JsonPath| p.select(body).first().map(|v| (*v).clone());
        for (raw, path, want) in &self.require {
            let got = one(path);
            if got.as_ref() != Some(want) {
                return Err(TicketRefused::Condition {
                    ticket: t,
                    path: raw.clone(),
                    got: got.map_or_else(|| "missing".to_owned(), |v| v.to_string()),
                    want: want.to_string(),
                });
            }
        }
        if let Some((raw, path)) = &self.environment {
            let Some(want) = env else {
                return Err(TicketRefused::NoEnvironment(t));
            };
            let got = one(path);
            if got.as_ref().and_then(Value::as_str) != Some(want) {
                return Err(TicketRefused::Environment {
                    ticket: t,
                    got: got.map_or_else(
                        || format!("missing at {raw}"),
                        |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    ),
                    want: want.to_owned(),
                });
            }
        }
        let Some(((start_raw, start), (end_raw, end))) = &self.window else {
            return Ok(TicketOk { window_end: None });
        };
        let time = |raw: &str, p: &JsonPath| {
            let v = one(p);
            v.as_ref()
                .and_then(timestamp)
                .ok_or_else(|| TicketRefused::Unchecked {
                    ticket: ticket.to_owned(),
                    reason: format!(
                        "{raw} is {}, not a time (RFC 3339 or Unix seconds)",
                        v.map_or_else(|| "missing".to_owned(), |v| v.to_string())
                    ),
                })
        };
        let (opens, closes) = (time(start_raw, start)?, time(end_raw, end)?);
        let when = if now < opens {
            Some(format!(
                "opens at {} (in {})",
                rfc3339(opens),
                crate::util::duration::human(Duration::from_secs(opens - now))
            ))
        } else if now >= closes {
            Some(format!("closed at {}", rfc3339(closes)))
        } else {
            None
        };
        match when {
            Some(when) => Err(TicketRefused::Window { ticket: t, when }),
            None => Ok(TicketOk {
                window_end: Some(closes),
            }),
        }
    }
}

fn read_secrets(
    names: &std::collections::BTreeSet<String>,
    vars: &Vars,
) -> Result<minijinja::Value, String> {
    let mut map = Map::new();
    for name in names {
        let value = vars
            .secret(name)
            .ok_or_else(|| format!("mcpd is missing secret '{name}': set environment variable {name} for the mcpd process"))?;
        crate::redact::register_secret(name, &value);
        map.insert(name.clone(), Value::String(value));
    }
    Ok(crate::template::to_value(&map))
}

/// A time as RFC 3339 text or Unix seconds.
fn timestamp(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        _ => None,
    }
}

fn rfc3339(s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
}

#[cfg(test)]
#[path = "ticket_tests.rs"]
mod tests;
