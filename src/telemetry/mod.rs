//! Logging and trace export: the tracing subscriber mcpd runs under.
//!
//! Logs always go to stderr (stdout belongs to the stdio protocol), as text or JSON
//! (`MCPD_LOG_FORMAT=json`), and every line passes redaction on its way out (every
//! detector, and the known secret values), whoever wrote it; rmcp's debug and trace
//! lines, which print whole requests and results, are never shown. When OTLP is configured (`telemetry.otlp` in mcpd.yaml, or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), mcpd's own spans (`mcp.request`, `tool.call`,
//! `policy.evaluate`, `upstream.request`) are also exported over OTLP/HTTP by a batch
//! processor on its own thread, parent-based sampled, and flushed on exit. This module
//! owns the W3C link between the two worlds: a caller's `traceparent` becomes the OTel
//! parent, and the upstream's `traceparent` names the `upstream.request` span.
//!
//! Beside the subscriber: [`trace`] (W3C trace context), [`metrics`] (the Prometheus
//! registry and `/metrics`) and [`slo`] (latency objectives).

pub mod metrics;
pub mod rpc_errors;
pub mod slo;
pub mod trace;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::server::OtlpSpec;
use crate::config::{ExpandError, Vars};
use crate::telemetry::trace::TraceContext;

/// Set once the OTLP layer is installed: only then are OTel ids looked up.
static ENABLED: OnceLock<()> = OnceLock::new();

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes what is queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every span still queued (bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("warning: could not flush traces to the OTLP collector: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
        self.provider = None;
    }
}

/// The OTLP settings in effect: mcpd.yaml's, else the standard environment variables.
pub fn otlp_settings(spec: Option<&OtlpSpec>, vars: &Vars) -> Option<OtlpSpec> {
    if let Some(s) = spec {
        return Some(s.clone());
    }
    let endpoint = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    Some(OtlpSpec {
        endpoint,
        headers: Default::default(),
        sampling_ratio: None,
        service_name: vars.get("OTEL_SERVICE_NAME"),
    })
}

/// Why a URL does not parse (reqwest's `Url` is the `url` crate's).
type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why telemetry could not be set up. Each message names the setting to fix and ends
/// with its cause: the CLI prints it as is (`{}`), not with its sources.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber is already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    /// `telemetry.otlp.endpoint` names a variable that is not set.
    #[error("telemetry.otlp.endpoint: {0}")]
    EndpointVariable(#[source] ExpandError),
    /// `telemetry.otlp.endpoint` is not a URL.
    #[error(
        "telemetry.otlp.endpoint: '{endpoint}' is not a URL ({source}); write e.g. http://127.0.0.1:4318"
    )]
    EndpointNotUrl {
        /// The endpoint, variables expanded.
        endpoint: String,
        /// Why it does not parse.
        source: UrlError,
    },
    /// `telemetry.otlp.endpoint` has a scheme other than http(s).
    #[error("telemetry.otlp.endpoint: '{0}' must be http or https")]
    EndpointScheme(String),
    /// A `telemetry.otlp.headers` value names a variable that is not set.
    #[error("telemetry.otlp.headers.{header}: {source}")]
    HeaderVariable {
        /// The header's name.
        header: String,
        /// The variable that is missing.
        source: ExpandError,
    },
    /// `telemetry.otlp.sampling_ratio` is outside 0..=1.
    #[error("telemetry.otlp.sampling_ratio must be between 0 and 1, got {0}")]
    SamplingRatio(f64),
    /// The OTLP exporter cannot be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the subscriber: stderr logs filtered by `default_filter` (or `MCPD_LOG`),
/// plus OTLP export of mcpd's spans when `otlp` is given.
///
/// # Errors
/// A bad endpoint, header or sampling ratio: says which.
pub fn init(
    default_filter: &str,
    otlp: Option<&OtlpSpec>,
    vars: &Vars,
) -> Result<Telemetry, TelemetryError> {
    let filter = level_filter(std::env::var("MCPD_LOG").ok().as_deref(), default_filter);
    // rmcp logs raw arguments ("received request") and whole results ("response
    // message") at debug level: none of its lines below info are shown, at any MCPD_LOG.
    // Its debug-formatted line for each JSON-RPC error becomes one clean line.
    use tracing_subscriber::filter::{FilterExt as _, filter_fn};
    let shown = filter.and(filter_fn(|meta| {
        !(meta.target().starts_with("rmcp") && *meta.level() > tracing::Level::INFO)
    }));
    // The lines shown, and rmcp's error events, which the log layer turns into the clean
    // line (never the original): one filtered layer, so a span entered or left is looked
    // up once, not once per layer.
    let filter = shown
        .or(filter_fn(rpc_errors::is_rmcp_error_event).with_max_level_hint(tracing::Level::WARN));
    let json = std::env::var("MCPD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(RedactedStderr)
        .with_ansi(false);
    // MCPD_LOG_FORMAT=json: one JSON object per line, with the call's span fields.
    let fmt = if json {
        rpc_errors::CleanRpcErrors::around(fmt.json().with_current_span(true).with_span_list(false))
            .with_filter(filter)
            .boxed()
    } else {
        rpc_errors::CleanRpcErrors::around(fmt)
            .with_filter(filter)
            .boxed()
    };
    let (provider, otel) = match otlp {
        None => (None, None),
        Some(spec) => {
            let provider = provider(spec, vars)?;
            let tracer = provider.tracer("mcpd");
            let only_mcpd = tracing_subscriber::filter::Targets::new()
                .with_target("mcpd", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(only_mcpd);
            (Some(provider), Some(layer))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(TelemetryError::Subscriber)?;
    if provider.is_some() {
        let _ = ENABLED.set(());
    }
    Ok(Telemetry { provider })
}

/// The stderr log filter: `MCPD_LOG` when it parses, else `default_filter`.
///
/// A filter whose directives name no span (`target=level` only, no `[span{field}]`)
/// decides from each span's or event's target and level alone, so it is asked nothing
/// when a span opens, is entered, left, recorded or closed: an `EnvFilter` would take a
/// lock and hash the span's id for each (a call enters its spans some twenty times).
fn level_filter(
    var: Option<&str>,
    default_filter: &str,
) -> Box<dyn tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync> {
    let (directives, filter) = match var.map(|v| (v, tracing_subscriber::EnvFilter::try_new(v))) {
        Some((v, Ok(f))) => (v, f),
        _ => (
            default_filter,
            tracing_subscriber::EnvFilter::new(default_filter),
        ),
    };
    if directives.contains('[') {
        Box::new(filter)
    } else {
        Box::new(LevelsOnly(filter))
    }
}

/// An `EnvFilter` whose directives name no span: its span hooks, which only track
/// spans for span directives, are skipped; every decision is the filter's own.
struct LevelsOnly(tracing_subscriber::EnvFilter);

impl<S> tracing_subscriber::layer::Filter<S> for LevelsOnly {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        tracing_subscriber::layer::Filter::<S>::enabled(&self.0, meta, cx)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing_subscriber::layer::Filter::<S>::callsite_enabled(&self.0, meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        tracing_subscriber::layer::Filter::<S>::max_level_hint(&self.0)
    }
}

/// Where log lines go: stderr, each line redacted first (every detector, known secret
/// values), so no log carries PII or a secret whichever crate wrote it.
#[derive(Debug, Clone, Copy)]
struct RedactedStderr;

impl tracing_subscriber::fmt::MakeWriter<'_> for RedactedStderr {
    type Writer = RedactedLine;

    fn make_writer(&self) -> RedactedLine {
        // A line logged while the thread is being torn down gets a buffer of its own.
        RedactedLine(LINE.try_with(std::cell::Cell::take).unwrap_or_default())
    }
}

thread_local! {
    /// The buffer a thread's log lines are gathered in, kept between lines.
    static LINE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The style log lines are redacted with: every detector's default.
static LOG_STYLE: std::sync::LazyLock<crate::config::policy::RedactionSpec> =
    std::sync::LazyLock::new(crate::config::policy::RedactionSpec::default);

/// One log line as it is formatted; redacted and written to stderr when dropped.
struct RedactedLine(Vec<u8>);

impl std::io::Write for RedactedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let mut buf = std::mem::take(&mut self.0);
        if !buf.is_empty() {
            let line = String::from_utf8_lossy(&buf);
            let redacted =
                crate::redact::redacted_text(&line, crate::redact::DetectorSet::ALL, &LOG_STYLE);
            let out = redacted.as_deref().unwrap_or(&line);
            // Nowhere to report a failed log write.
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
        // A line far longer than most is not kept.
        if buf.capacity() <= 4096 {
            buf.clear();
            let _ = LINE.try_with(|l| l.set(buf));
        }
    }
}

fn provider(spec: &OtlpSpec, vars: &Vars) -> Result<SdkTracerProvider, TelemetryError> {
    let base = crate::config::expand_env(&spec.endpoint, vars)
        .map_err(TelemetryError::EndpointVariable)?;
    let url = match reqwest::Url::parse(&base) {
        Ok(url) => url,
        Err(source) => {
            return Err(TelemetryError::EndpointNotUrl {
                endpoint: base,
                source,
            });
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TelemetryError::EndpointScheme(base));
    }
    let endpoint = if base.trim_end_matches('/').ends_with("/v1/traces") {
        base
    } else {
        format!("{}/v1/traces", base.trim_end_matches('/'))
    };
    let mut headers = std::collections::HashMap::new();
    for (k, v) in &spec.headers {
        let v = crate::config::expand_env(v, vars).map_err(|source| {
            TelemetryError::HeaderVariable {
                header: k.clone(),
                source,
            }
        })?;
        headers.insert(k.clone(), v);
    }
    let ratio = spec.sampling_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(TelemetryError::SamplingRatio(ratio));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_headers(headers)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(TelemetryError::Exporter)?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            spec.service_name
                .clone()
                .unwrap_or_else(|| "mcpd".to_owned()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.get().is_some()
}

/// Makes the caller's W3C trace `span`'s parent, so exported spans continue it.
pub fn continue_trace(span: &tracing::Span, trace: &TraceContext) {
    if !enabled() {
        return;
    }
    let Some(parent) = &trace.parent_span else {
        return;
    };
    let (Ok(trace_id), Ok(span_id)) =
        (TraceId::from_hex(&trace.trace_id), SpanId::from_hex(parent))
    else {
        return;
    };
    let flags = u8::from_str_radix(&trace.flags, 16).map_or(TraceFlags::SAMPLED, TraceFlags::new);
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let cx = opentelemetry::Context::new()
        .with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state));
    let _ = span.set_parent(cx);
}

/// The exported trace id and span id of `span`, when spans are exported.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoint: &str) -> OtlpSpec {
        OtlpSpec {
            endpoint: endpoint.to_owned(),
            headers: Default::default(),
            sampling_ratio: None,
            service_name: None,
        }
    }

    fn refusal(spec: &OtlpSpec) -> String {
        provider(spec, &Vars::default()).unwrap_err().to_string()
    }

    #[test]
    fn bad_otlp_settings_name_the_setting_to_fix() {
        assert_eq!(
            refusal(&spec("collector:4318")),
            "telemetry.otlp.endpoint: 'collector:4318' must be http or https"
        );
        assert_eq!(
            refusal(&spec("not a url")),
            "telemetry.otlp.endpoint: 'not a url' is not a URL (relative URL without a base); write e.g. http://127.0.0.1:4318"
        );
        assert_eq!(
            refusal(&spec("${MCPD_T_SURELY_UNSET}")),
            "telemetry.otlp.endpoint: environment variable 'MCPD_T_SURELY_UNSET' is not set (write '${MCPD_T_SURELY_UNSET:-default}' to give a default)"
        );
        let mut headers = spec("http://127.0.0.1:4318");
        headers
            .headers
            .insert("x-key".to_owned(), "${MCPD_T_SURELY_UNSET}".to_owned());
        assert_eq!(
            refusal(&headers),
            "telemetry.otlp.headers.x-key: environment variable 'MCPD_T_SURELY_UNSET' is not set (write '${MCPD_T_SURELY_UNSET:-default}' to give a default)"
        );
        let mut ratio = spec("http://127.0.0.1:4318");
        ratio.sampling_ratio = Some(1.5);
        assert_eq!(
            refusal(&ratio),
            "telemetry.otlp.sampling_ratio must be between 0 and 1, got 1.5"
        );
    }
}
