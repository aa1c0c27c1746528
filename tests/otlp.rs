//! OTLP export through the real binary: a call carrying a W3C traceparent in `_meta`
//! yields `mcp.request` → `tool.call` → `policy.evaluate` / `upstream.request` spans in
//! the caller's trace, received by an OTLP/HTTP endpoint inside the test; the upstream
//! sees a traceparent naming the `upstream.request` span; nothing raw leaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

use crate::util::{ConfigDir, DemoApi, StdioClient, is_error};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP trace receiver on a loopback port: every export request, raw.
pub(crate) struct Collector {
    /// Where mcpd sends spans (`telemetry.otlp.endpoint`).
    pub(crate) url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    pub(crate) fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = bodies.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body.to_vec());
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            bodies,
            _runtime: runtime,
        }
    }

    pub(crate) fn spans(&self) -> Vec<Span> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.as_slice())
                    .unwrap()
                    .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    fn raw(&self) -> String {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

pub(crate) fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            Any::BoolValue(b) => Some(b.to_string()),
            Any::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

#[test]
fn spans_continue_the_callers_trace_and_reach_the_collector() {
    let api = DemoApi::start();
    let collector = Collector::start();
    let cfg = ConfigDir::shipped();
    cfg.append(
        "mcpd.yaml",
        &format!(
            "\ntelemetry:\n  otlp:\n    endpoint: {}\n    service_name: mcpd-test\n",
            collector.url
        ),
    );
    let mut c = StdioClient::with_api(cfg.path(), &api);
    let r = c.request(
        "tools/call",
        json!({"name": "orders_export",
               "arguments": {"from": "2025-08-01", "to": "2025-08-31"},
               "_meta": {"traceparent": format!("00-{TRACE_ID}-{PARENT}-01")}}),
    );
    assert!(!is_error(&r["result"]), "{r}");
    // The host quits: mcpd flushes its spans before exiting.
    assert!(c.close(), "mcpd exits cleanly when stdin closes");

    let spans = collector.spans();
    let by_name: HashMap<&str, &Span> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    for name in [
        "mcp.request",
        "tool.call",
        "policy.evaluate",
        "upstream.request",
    ] {
        assert!(
            by_name.contains_key(name),
            "no {name} span in {:?}",
            by_name.keys()
        );
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for s in &spans {
        assert_eq!(hex(&s.trace_id), TRACE_ID, "{} is in another trace", s.name);
    }
    let id = |n: &str| hex(&by_name[n].span_id);
    let parent = |n: &str| hex(&by_name[n].parent_span_id);
    assert_eq!(
        parent("mcp.request"),
        PARENT,
        "the caller's span is the root's parent"
    );
    assert_eq!(parent("tool.call"), id("mcp.request"));
    assert_eq!(parent("policy.evaluate"), id("tool.call"));
    assert_eq!(parent("upstream.request"), id("tool.call"));

    let call = by_name["tool.call"];
    assert_eq!(attr(call, "tool").as_deref(), Some("orders.export"));
    assert_eq!(attr(call, "actor").as_deref(), Some("user:local-dev"));
    assert_eq!(attr(call, "actor.source").as_deref(), Some("default_actor"));
    assert_eq!(attr(call, "decision").as_deref(), Some("allowed"));
    assert_eq!(attr(call, "http.status").as_deref(), Some("200"));
    assert!(attr(call, "pii.count").is_some_and(|n| n != "0"));
    assert_eq!(
        attr(by_name["policy.evaluate"], "rules").as_deref(),
        Some("redact-pii")
    );
    let up = by_name["upstream.request"];
    assert_eq!(attr(up, "http.status").as_deref(), Some("200"));
    assert_eq!(attr(up, "server.address").as_deref(), Some("127.0.0.1"));

    // The upstream was handed the same trace, under the upstream.request span.
    let seen = api.requests();
    let tp = seen.last().unwrap()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tp, format!("00-{TRACE_ID}-{}-01", id("upstream.request")));

    // No raw customer data, and the service is named.
    let raw = collector.raw();
    assert!(!raw.contains("@example"), "an email reached the collector");
    assert!(raw.contains("mcpd-test"));
}

#[test]
fn a_bad_otlp_endpoint_is_reported_and_calls_still_work() {
    let api = DemoApi::start();
    let cfg = ConfigDir::shipped();
    cfg.append(
        "mcpd.yaml",
        "\ntelemetry:\n  otlp:\n    endpoint: collector:4318\n",
    );
    let mut c = StdioClient::with_api(cfg.path(), &api);
    c.wait_stderr("telemetry.otlp.endpoint: 'collector:4318' must be http or https");
    let r = c.call(
        "orders_export",
        json!({"from": "2025-08-01", "to": "2025-08-31"}),
    );
    assert!(!is_error(&r), "{r}");
}
