//! Upstreams: the named HTTP APIs tools call, one shared client each, and egress checks.
//!
//! Owns how a rendered request leaves mcpd: the base URL (or its region variant),
//! timeouts, no redirects, and the egress allow-list on the final URL. It never
//! retries a non-idempotent request and never logs headers (they carry secrets).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::{Located, ServerSpec, Vars, expand_env};
use crate::util::duration::parse as parse_duration;

/// Default time allowed for a whole request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed to connect.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One upstream API, ready to send to.
#[derive(Debug)]
pub struct Upstream {
    /// Its name in `mcpd.yaml`.
    pub name: String,
    /// Base URL (no trailing slash in its path).
    pub base: Url,
    /// Base URLs per data region.
    pub regions: BTreeMap<String, Url>,
    /// Default request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    client: reqwest::Client,
}

/// A request rendered from a tool's templates, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// HTTP method.
    pub method: reqwest::Method,
    /// The final URL.
    pub url: Url,
    /// Headers (values may be secrets: never log them).
    pub headers: Vec<(String, String)>,
    /// JSON body, if any.
    pub body: Option<serde_json::Value>,
    /// Time allowed for the request.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The raw body.
    pub body: bytes::Bytes,
}

/// Why a request got no reply. Messages name the upstream, never a header or secret.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request took longer than allowed.
    #[error("upstream '{upstream}' did not answer within {}ms", .after.as_millis())]
    Timeout {
        /// Upstream name.
        upstream: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// No connection could be made.
    #[error("upstream '{upstream}' could not be reached ({host}): connection failed")]
    Connect {
        /// Upstream name.
        upstream: String,
        /// host:port tried.
        host: String,
    },
    /// Anything else on the wire.
    #[error("upstream '{upstream}' request failed: {reason}")]
    Other {
        /// Upstream name.
        upstream: String,
        /// What failed, without the URL (it may carry secrets in its query).
        reason: String,
    },
}

impl Upstream {
    /// The base URL for `region`, or the default one when `region` is `None`.
    pub fn base_for(&self, region: Option<&str>) -> Option<&Url> {
        match region {
            None => Some(&self.base),
            Some(r) => self.regions.get(r),
        }
    }

    /// Sends a prepared request.
    ///
    /// # Errors
    /// Timeout, connection failure, or another transport error; HTTP error statuses are
    /// replies, not errors.
    pub async fn send(&self, req: Prepared) -> Result<Reply, SendError> {
        let mut builder = self
            .client
            .request(req.method, req.url.clone())
            .timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let result = async {
            let resp = builder.send().await?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(Reply { status, body })
        }
        .await;
        result.map_err(|e| self.classify(e, &req.url, req.timeout))
    }

    fn classify(&self, e: reqwest::Error, url: &Url, timeout: Duration) -> SendError {
        let upstream = self.name.clone();
        if e.is_timeout() {
            SendError::Timeout {
                upstream,
                after: timeout,
            }
        } else if e.is_connect() {
            SendError::Connect {
                upstream,
                host: format!(
                    "{}:{}",
                    url.host_str().unwrap_or_default(),
                    url.port_or_known_default().unwrap_or_default()
                ),
            }
        } else {
            // reqwest's Display includes the URL; strip it, the query may hold secrets.
            SendError::Other {
                upstream,
                reason: e.without_url().to_string(),
            }
        }
    }
}

/// Every upstream of a config, by name.
#[derive(Debug, Default)]
pub struct Upstreams(BTreeMap<String, Arc<Upstream>>);

impl Upstreams {
    /// Builds clients for every upstream in `mcpd.yaml`.
    ///
    /// # Errors
    /// Every bad URL, unset variable or bad duration, with its position.
    /// An upstream of `previous` whose settings are unchanged is reused as is, so a reload
    /// keeps its connection pool (and skips building a TLS client, ~35 ms each).
    pub fn build(
        path: &Path,
        spec: &ServerSpec,
        vars: &Vars,
        previous: Option<&Upstreams>,
    ) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut out = BTreeMap::new();
        for (name, up) in &spec.upstreams {
            let base = parse_base(path, name, &up.url, vars, &mut diags);
            let mut regions = BTreeMap::new();
            for (region, url) in &up.regions {
                if let Some(u) = parse_base(path, name, url, vars, &mut diags) {
                    regions.insert(region.clone(), u);
                }
            }
            let timeout = duration_or(path, up.timeout.as_ref(), DEFAULT_TIMEOUT, &mut diags);
            let connect = duration_or(
                path,
                up.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
                &mut diags,
            );
            if let (Some(base), Some(old)) = (&base, previous.and_then(|p| p.get(name))) {
                let same = old.base == *base
                    && old.regions == regions
                    && old.timeout == timeout
                    && old.connect_timeout == connect;
                if same {
                    out.insert(name.clone(), old.clone());
                    continue;
                }
            }
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(connect)
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .tcp_nodelay(true)
                .build();
            match (base, client) {
                (Some(base), Ok(client)) => {
                    out.insert(
                        name.clone(),
                        Arc::new(Upstream {
                            name: name.clone(),
                            base,
                            regions,
                            timeout,
                            connect_timeout: connect,
                            client,
                        }),
                    );
                }
                (_, Err(e)) => diags.push(Diagnostic::new(
                    path,
                    up.url.pos,
                    format!("upstream '{name}': cannot build an HTTP client: {e}"),
                )),
                (None, _) => {}
            }
        }
        if diags.is_empty() {
            Ok(Self(out))
        } else {
            Err(diags)
        }
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.0.get(name)
    }

    /// Every upstream.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.0.values()
    }
}

fn parse_base(
    path: &Path,
    name: &str,
    url: &Located<String>,
    vars: &Vars,
    diags: &mut Diagnostics,
) -> Option<Url> {
    let expanded = match expand_env(&url.value, vars) {
        Ok(s) => s,
        Err(e) => {
            diags.push(Diagnostic::new(
                path,
                url.pos,
                format!("upstream '{name}': {e}"),
            ));
            return None;
        }
    };
    match Url::parse(expanded.trim_end_matches('/')) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(u) => {
            diags.push(Diagnostic::new(
                path,
                url.pos,
                format!(
                    "upstream '{name}': url must be http(s) with a host, got scheme '{}'",
                    u.scheme()
                ),
            ));
            None
        }
        Err(e) => {
            diags.push(Diagnostic::new(
                path,
                url.pos,
                format!("upstream '{name}': invalid url '{expanded}': {e}"),
            ));
            None
        }
    }
}

fn duration_or(
    path: &Path,
    value: Option<&Located<String>>,
    default: Duration,
    diags: &mut Diagnostics,
) -> Duration {
    match value {
        None => default,
        Some(v) => parse_duration(&v.value).unwrap_or_else(|e| {
            diags.push(Diagnostic::new(path, v.pos, e.to_string()));
            default
        }),
    }
}

/// The hosts requests may go to, from `policies.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allowed: Vec<(String, Option<u16>)>,
}

impl Egress {
    /// Compiles the allow-list; entries are `host` or `host:port`.
    ///
    /// # Errors
    /// A malformed entry, with its position.
    pub fn build(path: &Path, entries: &[Located<String>]) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut allowed = Vec::new();
        for e in entries {
            let raw = e.value.trim().to_ascii_lowercase();
            let (host, port) = match raw.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                    Ok(port) => (h.to_owned(), Some(port)),
                    Err(_) => {
                        diags.push(Diagnostic::new(
                            path,
                            e.pos,
                            format!("egress entry '{}': port must be a number", e.value),
                        ));
                        continue;
                    }
                },
                _ => (raw.clone(), None),
            };
            if host.is_empty() || host.contains('/') {
                diags.push(Diagnostic::new(
                    path,
                    e.pos,
                    format!(
                        "egress entry '{}': write a host or host:port, not a URL",
                        e.value
                    ),
                ));
                continue;
            }
            allowed.push((host, port));
        }
        if diags.is_empty() {
            Ok(Self { allowed })
        } else {
            Err(diags)
        }
    }

    /// Whether a request to `url` may leave.
    ///
    /// # Errors
    /// Names the refused host.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default();
        let ok = self
            .allowed
            .iter()
            .any(|(h, p)| *h == host && (p.is_none() || *p == port));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "egress to host '{host}' is not allowed: add it to 'egress' in policies.yaml"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_allows_listed_hosts_only() {
        let entries = vec![
            Located::unplaced("orders.internal".to_owned()),
            Located::unplaced("127.0.0.1:8080".to_owned()),
        ];
        let eg = Egress::build(Path::new("p.yaml"), &entries).unwrap();
        assert!(
            eg.check(&Url::parse("https://orders.internal/x").unwrap())
                .is_ok()
        );
        assert!(
            eg.check(&Url::parse("http://127.0.0.1:8080/x").unwrap())
                .is_ok()
        );
        assert!(
            eg.check(&Url::parse("http://127.0.0.1:9090/x").unwrap())
                .is_err()
        );
        let err = eg
            .check(&Url::parse("https://evil.example/x").unwrap())
            .unwrap_err();
        assert!(err.contains("'evil.example'"), "{err}");
    }

    #[test]
    fn egress_entry_that_is_a_url_is_rejected() {
        let entries = vec![Located::unplaced("https://orders.internal/".to_owned())];
        assert!(Egress::build(Path::new("p.yaml"), &entries).is_err());
    }
}
