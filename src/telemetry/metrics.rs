//! Metrics: counters and histograms in Prometheus text, served on an optional listener.
//!
//! Owns metric names and labels. Label values are tool ids, decisions and kinds, never
//! arguments, actors' data or anything else a caller controls beyond the tool name.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    tool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
    unit: String,
    scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric mcpd keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabel, Histogram, fn() -> Histogram>,
    redactions: Family<ToolLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    replays: Family<ToolLabel, Counter>,
    budget_left: Family<BudgetLabels, Gauge<f64, AtomicU64>>,
    breaker_open: Family<BreakerLabel, Gauge>,
    breaker_openings: Family<BreakerLabel, Counter>,
    policy_changes: Family<ChangeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcpd");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<ToolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let redactions = Family::<ToolLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "calls",
            "Tool calls by tool and decision (allowed, denied, limited, invalid, error)",
            calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "Time from tools/call to answer, by tool",
            latency.clone(),
        );
        registry.register(
            "pii_redactions",
            "Values masked or redacted in results, by tool",
            redactions.clone(),
        );
        registry.register(
            "reloads",
            "Config reloads by result (applied, unchanged, failed)",
            reloads.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        let replays = Family::<ToolLabel, Counter>::default();
        let budget_left = Family::<BudgetLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "refusals",
            "Calls refused before reaching the upstream by a limit, by tool and reason (rate, cap, in_flight, budget, stop, breaker)",
            refusals.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Calls answered from a stored result for their idempotency key, by tool",
            replays.clone(),
        );
        registry.register(
            "budget_remaining",
            "What a budget has left after the last call it counted, by budget, unit (calls, cost) and scope",
            budget_left.clone(),
        );
        let breaker_open = Family::<BreakerLabel, Gauge>::default();
        let breaker_openings = Family::<BreakerLabel, Counter>::default();
        registry.register(
            "breaker_open",
            "1 while a circuit breaker is open as this mcpd last saw it, else 0, by breaker (tool:ID, upstream:NAME[@REGION])",
            breaker_open.clone(),
        );
        registry.register(
            "breaker_openings",
            "Times this mcpd opened a circuit breaker (a burst of upstream failures), by breaker",
            breaker_openings.clone(),
        );
        let policy_changes = Family::<ChangeLabel, Counter>::default();
        registry.register(
            "policy_changes",
            "Policy rule changes reloads applied (added, removed, changed, weakened: an enforced rule removed or weakened) and policy changes held by reload.policy: manual (held)",
            policy_changes.clone(),
        );
        Self {
            breaker_open,
            breaker_openings,
            registry,
            policy_changes,
            calls,
            latency,
            redactions,
            reloads,
            refusals,
            replays,
            budget_left,
        }
    }

    /// Counts one call.
    pub fn call(&self, tool: &str, decision: &str, seconds: f64, redacted: usize) {
        self.calls
            .get_or_create(&CallLabels {
                tool: tool.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
        let label = ToolLabel {
            tool: tool.to_owned(),
        };
        self.latency.get_or_create(&label).observe(seconds);
        if redacted > 0 {
            self.redactions
                .get_or_create(&label)
                .inc_by(u64::try_from(redacted).unwrap_or(u64::MAX));
        }
    }

    /// Counts a call refused by a limit.
    pub fn refusal(&self, tool: &str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                tool: tool.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a replayed result.
    pub fn replay(&self, tool: &str) {
        self.replays
            .get_or_create(&ToolLabel {
                tool: tool.to_owned(),
            })
            .inc();
    }

    /// Sets what a budget has left.
    pub fn budget_left(&self, budget: &str, unit: &str, scope: &str, left: f64) {
        self.budget_left
            .get_or_create(&BudgetLabels {
                budget: budget.to_owned(),
                unit: unit.to_owned(),
                scope: scope.to_owned(),
            })
            .set(left);
    }

    /// Sets whether a circuit breaker is open, as this process saw it last.
    pub fn breaker_state(&self, breaker: &str, open: bool) {
        self.breaker_open
            .get_or_create(&BreakerLabel {
                breaker: breaker.to_owned(),
            })
            .set(i64::from(open));
    }

    /// Counts a circuit breaker this process opened.
    pub fn breaker_opened(&self, breaker: &str) {
        self.breaker_openings
            .get_or_create(&BreakerLabel {
                breaker: breaker.to_owned(),
            })
            .inc();
        self.breaker_state(breaker, true);
    }

    /// Counts one reload.
    pub fn reload(&self, result: &str) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts `n` policy changes of one kind (`added`, `removed`, `changed`, `weakened`,
    /// `held`); the series exists from the first reload that reports one.
    pub fn policy_changes(&self, change: &str, n: usize) {
        if n > 0 {
            self.policy_changes
                .get_or_create(&ChangeLabel {
                    change: change.to_owned(),
                })
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(addr = %local, "metrics on /metrics");
    Ok(local)
}

/// `/metrics` alone, to mount on another listener (`serve --http` with `--metrics` on
/// the same address).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_latency_appear_in_the_exposition() {
        let m = Metrics::new();
        m.call("orders.export", "allowed", 0.004, 3);
        m.call("orders.export", "denied", 0.0001, 0);
        m.reload("applied");
        let text = m.render();
        assert!(
            text.contains("mcpd_calls_total{tool=\"orders.export\",decision=\"allowed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_calls_total{tool=\"orders.export\",decision=\"denied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_call_duration_seconds_count{tool=\"orders.export\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_pii_redactions_total{tool=\"orders.export\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("mcpd_reloads_total{result=\"applied\"} 1"),
            "{text}"
        );
    }
}

#[cfg(test)]
mod dashboard_tests {
    use super::*;

    /// The shipped Grafana dashboard must only query metrics mcpd exports.
    #[test]
    fn shipped_dashboard_queries_only_exported_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/grafana/mcpd-dashboard.json");
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let m = Metrics::new();
        m.call("t", "allowed", 0.001, 1);
        m.reload("applied");
        m.refusal("t", "rate");
        m.replay("t");
        m.budget_left("b", "calls", "a", 1.0);
        m.breaker_opened("upstream:u");
        let exposition = m.render();
        let exported: Vec<&str> = exposition
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let mut queried = 0;
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                    if word.starts_with("mcpd_") {
                        queried += 1;
                        let family = word.trim_end_matches("_total").trim_end_matches("_bucket");
                        assert!(
                            exported.contains(&family),
                            "dashboard queries {word}, not exported ({exported:?})"
                        );
                    }
                }
            }
        }
        assert!(queried >= 6);
    }
}
