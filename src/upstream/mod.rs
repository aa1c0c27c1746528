//! Upstreams: the named HTTP APIs tools call, each with its client (one per serving thread
//! over HTTP: `clients.rs`).
//!
//! Owns how a request leaves mcpd and how much of the reply comes in: the base URL (or
//! its region variant), timeouts, no redirects, sending, the retries the caller allows,
//! and reading at most the tool's `response.max_bytes` of a reply. Rendering a tool's
//! request is [`request`]'s; the allow-list checked on the final URL is [`egress`]'s and
//! the addresses connections may use are [`address`]'s (every client resolves through
//! it). It never decides whether a request may be retried and never logs headers (they
//! carry secrets).

pub mod address;
mod clients;
pub mod egress;
mod keeper;
pub mod request;

pub use address::{AddressRefused, Allowed};
pub(crate) use clients::own_clients;
pub use egress::{Egress, EgressDenied};
pub use request::{BodyTpl, Prepared, RequestError, RequestPlan, Secrets};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::{Located, ServerSpec};
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
    /// It deduplicates requests on their `Idempotency-Key` header.
    pub dedupes: bool,
    /// The addresses its connections may use beyond global ones (`egress` entries).
    allowed: Arc<Allowed>,
    client: clients::Clients,
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The raw body.
    pub body: bytes::Bytes,
    /// The `Content-Type` header, if the reply had one.
    pub content_type: Option<String>,
}

/// One retry of a request, as [`Upstream::send_retrying`] reports it before waiting.
#[derive(Debug, Clone)]
pub struct Retry {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// How many attempts are allowed.
    pub attempts: u32,
    /// What went wrong, e.g. `answered HTTP 503`.
    pub why: String,
    /// How long until the next attempt.
    pub backoff: Duration,
}

/// What [`Upstream::send_retrying`] ended with: the last attempt's reply or error, and
/// whether any attempt may have reached the upstream (anything but a failed connect: a
/// request that got a reply, timed out or broke off may have been acted on).
#[derive(Debug)]
pub struct Sent {
    /// The last attempt's outcome.
    pub reply: Result<Reply, SendError>,
    /// Whether any attempt may have reached the upstream.
    pub reached: bool,
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
    /// The host resolved only to addresses `egress` does not list.
    #[error(transparent)]
    Refused(AddressRefused),
    /// The reply is larger than the tool reads (`response.max_bytes`); it was cut off.
    #[error(
        "upstream '{upstream}' sent more than {limit} bytes ({}), the most tool '{tool}' reads (response.max_bytes); nothing of the reply was used: ask for less (a narrower range, a page), or raise response.max_bytes in its tool file",
        human_bytes(*.limit)
    )]
    TooLarge {
        /// Upstream name.
        upstream: String,
        /// The tool whose limit it is.
        tool: String,
        /// `response.max_bytes`.
        limit: u64,
        /// The reply's status.
        status: u16,
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

    /// Sends a prepared request for `tool` and reads at most `req.max_bytes` of the
    /// reply, as it streams in: a larger reply (by its Content-Length, or once more has
    /// arrived) is dropped, its connection closed.
    ///
    /// # Errors
    /// Timeout, connection failure, a refused address, a reply over the limit, or
    /// another transport error; HTTP error statuses are replies, not errors.
    pub async fn send(&self, tool: &str, req: &Prepared) -> Result<Reply, SendError> {
        let mut builder = (self.client.for_this_thread())
            .request(req.method.clone(), req.url.clone())
            .timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let fail = |e| self.classify(e, &req.url, req.timeout);
        keeper::sending();
        let mut resp = builder.send().await.map_err(fail)?;
        let status = resp.status().as_u16();
        let content_type = (resp.headers().get(reqwest::header::CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let too_large = || SendError::TooLarge {
            upstream: self.name.clone(),
            tool: tool.to_owned(),
            limit: req.max_bytes,
            status,
        };
        let announced = resp.content_length().unwrap_or(0);
        if announced > req.max_bytes {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = resp.chunk().await.map_err(fail)? {
            if (body.len() + chunk.len()) as u64 > req.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            body: body.freeze(),
            content_type,
        })
    }

    /// Sends `req` for `tool`, sending it again after a connection failure or a
    /// 502/503/504 up to `retries` more times, with backoff. A timeout is never retried:
    /// the first attempt may still be running. Records `attempts` on the current span;
    /// tells `on_retry` before each wait.
    pub async fn send_retrying(
        &self,
        tool: &str,
        req: &Prepared,
        retries: u8,
        on_retry: &(dyn Fn(&Retry) + Send + Sync),
    ) -> Sent {
        let attempts = u32::from(retries) + 1;
        let mut attempt = 0;
        let mut reached = false;
        loop {
            attempt += 1;
            let sent = self.send(tool, req).await;
            let transient = match &sent {
                Err(SendError::Connect { .. }) => true,
                Ok(r) => matches!(r.status, 502..=504),
                Err(_) => false,
            };
            // Nothing reached the upstream when no connection was made (or egress refused
            // every address the name resolved to).
            reached |= !matches!(sent, Err(SendError::Connect { .. } | SendError::Refused(_)));
            if !transient || attempt >= attempts {
                tracing::Span::current().record("attempts", attempt);
                return Sent {
                    reply: sent,
                    reached,
                };
            }
            tracing::debug!(tool, attempt, "transient upstream failure; retrying");
            let backoff = Duration::from_millis(50 << attempt.min(6));
            on_retry(&Retry {
                attempt,
                attempts,
                why: match &sent {
                    Ok(r) => format!("answered HTTP {}", r.status),
                    Err(_) => "could not be reached (connection failed)".to_owned(),
                },
                backoff,
            });
            tokio::time::sleep(backoff).await;
        }
    }

    fn classify(&self, e: reqwest::Error, url: &Url, timeout: Duration) -> SendError {
        let upstream = self.name.clone();
        if let Some(refused) = address::refusal(&e) {
            SendError::Refused(refused.clone())
        } else if e.is_timeout() {
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
    /// Builds clients for every upstream in `mcpd.yaml` (`path`, its `${VAR}` already
    /// expanded when it was loaded), reporting every bad URL or bad duration at its
    /// position; their connections may use global addresses and those `allowed` lists.
    /// An upstream of `previous` whose settings (and `allowed`) are unchanged is reused as
    /// is, so a reload keeps its connection pool (and skips building a TLS client, ~35 ms
    /// each).
    pub fn compile(
        path: &Path,
        spec: &ServerSpec,
        allowed: &Arc<Allowed>,
        previous: Option<&Upstreams>,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let before = diags.len();
        let mut out = BTreeMap::new();
        for (name, up) in &spec.upstreams {
            let base = parse_base(path, name, &up.url, diags);
            let mut regions = BTreeMap::new();
            for (region, url) in &up.regions {
                if let Some(u) = parse_base(path, name, url, diags) {
                    regions.insert(region.clone(), u);
                }
            }
            let timeout = duration_or(path, up.timeout.as_ref(), DEFAULT_TIMEOUT, diags);
            let connect = duration_or(
                path,
                up.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
                diags,
            );
            if let (Some(base), Some(old)) = (&base, previous.and_then(|p| p.get(name))) {
                let same = old.base == *base
                    && old.regions == regions
                    && old.timeout == timeout
                    && old.connect_timeout == connect
                    && old.dedupes == up.dedupes_idempotency_key
                    && old.allowed == *allowed;
                if same {
                    out.insert(name.clone(), old.clone());
                    continue;
                }
            }
            let client = clients::Clients::new(connect, timeout, allowed);
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
                            dedupes: up.dedupes_idempotency_key,
                            allowed: Arc::clone(allowed),
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
        (diags.len() == before).then_some(Self(out))
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

/// `n` bytes as people read them: `10 MiB`, `64 KiB`, `1000 B`.
fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match n {
        _ if n >= MIB && n.is_multiple_of(MIB) => format!("{} MiB", n / MIB),
        _ if n >= KIB && n.is_multiple_of(KIB) => format!("{} KiB", n / KIB),
        _ => format!("{n} B"),
    }
}

fn parse_base(
    path: &Path,
    name: &str,
    url: &Located<String>,
    diags: &mut Diagnostics,
) -> Option<Url> {
    if url.value.contains("${") {
        // A variable that could not be expanded: reported when the file was loaded.
        return None;
    }
    let expanded = &url.value;
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
