//! `mcpd demo` and `mcpd demo-api`: the bundled demo API, and the flows played through
//! the real pipeline against it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::config::Vars;
use crate::demo_api;
use crate::engine::{CallContext, CallResult, Engine};

/// One scripted call of the demo.
struct Flow {
    title: &'static str,
    tool: &'static str,
    args: Value,
    expect_ok: bool,
    /// Call with a token for this subject and these scopes (else as the default actor).
    token: Option<(&'static str, &'static [&'static str])>,
    /// First ask for an elevation grant for the token's subject under each ticket, in
    /// order (the ticket system may refuse one).
    elevate: &'static [&'static str],
}

impl Flow {
    fn new(title: &'static str, tool: &'static str, args: Value, expect_ok: bool) -> Self {
        Self {
            title,
            tool,
            args,
            expect_ok,
            token: None,
            elevate: &[],
        }
    }

    fn with_token(mut self, subject: &'static str, scopes: &'static [&'static str]) -> Self {
        self.token = Some((subject, scopes));
        self
    }
}

fn flows() -> Vec<Flow> {
    vec![
        Flow::new(
            "golden: export August's orders; emails and cards come back masked",
            "orders.export",
            json!({"from": "2025-08-01", "to": "2025-08-31"}),
            true,
        ),
        Flow::new(
            "golden: roll checkout_v2 out to 10 percent in staging",
            "flag.set",
            json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
            true,
        ),
        Flow::new(
            "safe retry: the same write again replays the first result; the flags service sees nothing",
            "flag.set",
            json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
            true,
        ),
        Flow::new(
            "adversarial: set checkout_v2 to 50 percent in prod without a ticket",
            "flag.set",
            json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
            false,
        ),
        Flow::new(
            "shadow: a 5-month export passes, and the shadow rule records it would deny",
            "orders.export",
            json!({"from": "2025-05-01", "to": "2025-09-30"}),
            true,
        ),
        Flow::new(
            "bad input: a percent over 100 is refused before any request is sent",
            "flag.set",
            json!({"env": "staging", "name": "checkout_v2", "percent": 150}),
            false,
        ),
        Flow::new(
            "identity: agent:copilot's token (orders.export, flag.set:staging) exports orders",
            "orders.export",
            json!({"from": "2025-08-01", "to": "2025-08-31"}),
            true,
        )
        .with_token("agent:copilot", &["orders.export", "flag.set:staging"]),
        Flow::new(
            "adversarial: the same token tries a prod write, outside its scopes",
            "flag.set",
            json!({"env": "prod", "name": "checkout_v2", "percent": 5}),
            false,
        )
        .with_token("agent:copilot", &["orders.export", "flag.set:staging"]),
        Flow::new(
            "adversarial: agent:release (scope flag.set) sets prod to 50 percent without an elevation",
            "flag.set",
            json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
            false,
        )
        .with_token("agent:release", &["flag.set"]),
        Flow {
            elevate: &["CHG-1300", "CHG-1234"],
            ..Flow::new(
                "elevation: the ticket system refuses CHG-1300 (not approved); under CHG-1234 (approved for prod, change window open) an operator grants agent:release flag.set in prod for 10 min; the write goes",
                "flag.set",
                json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
                true,
            )
            .with_token("agent:release", &["flag.set"])
        },
    ]
}

/// Starts the demo API on a free loopback port and plays the flows.
pub(super) async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let (addr, state) = demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let url = format!("http://{addr}");
    // A throwaway signing key, so the identity flows can issue tokens and grants.
    let (key, _) = crate::identity::keygen("demo").map_err(anyhow::Error::msg)?;
    let vars = Vars::from_env()
        .with("DEMO_API_URL", &url)
        .with(crate::identity::DEFAULT_KEY_ENV, &key);
    let (loaded, mut catalog) = super::load(dir, &vars)?;
    if catalog.elevation.ticket_check.is_none() {
        catalog.elevation.ticket_check = Some(demo_ticket_check(dir, &url)?);
    }
    outln!(
        "mcpd demo: demo API on {url}; {} tools from {}",
        catalog.tools.len(),
        dir.join(crate::config::TOOLS_DIR).display()
    );
    // The demo starts from nothing each run: its state is in memory.
    let mut engine = Engine::new(
        catalog,
        std::sync::Arc::new(crate::store::MemoryStore::new()),
    );
    // With `audit:` in mcpd.yaml the flows are recorded like any call (`mcpd backtest`
    // can replay them).
    if let Some(audit) = super::open_audit(dir, &loaded.server.1)? {
        if let Some(spec) = &loaded.server.1.audit {
            outln!("audit log {}", dir.join(&spec.path).display());
        }
        engine = engine.with_audit(audit);
    }
    let mut unexpected = 0;
    let catalog = engine.catalog();
    for (i, flow) in flows().iter().enumerate() {
        outln!("\n[{}] {}", i + 1, flow.title);
        let mut ctx = CallContext::default();
        if let Some((subject, scopes)) = flow.token {
            let Some(identity) = &catalog.identity else {
                outln!("    skipped: mcpd.yaml has no identity section");
                continue;
            };
            let token = identity
                .issue(&crate::identity::TokenRequest {
                    subject: subject.to_owned(),
                    scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                    ttl: std::time::Duration::from_secs(900),
                    ..Default::default()
                })
                .map_err(anyhow::Error::msg)?;
            outln!(
                "    token mcpd token issue --subject {subject} --scope {} --ttl 15m",
                scopes.join(" --scope ")
            );
            ctx.actor = Some(identity.actor_for(&token)?);
            for &ticket in flow.elevate {
                let req = crate::identity::elevation::GrantRequest {
                    subject: subject.to_owned(),
                    tool: flow.tool.to_owned(),
                    env: flow
                        .args
                        .get("env")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    ticket: ticket.to_owned(),
                    granted_by: "user:ops-demo".to_owned(),
                    ttl: std::time::Duration::from_secs(600),
                };
                let granted = crate::identity::elevation::grant(
                    engine.store().as_ref(),
                    identity,
                    &catalog.elevation,
                    &req,
                )
                .await;
                let outcome = match granted {
                    Ok(g) => g.jti,
                    Err(e) => format!("refused: {e}"),
                };
                outln!(
                    "    grant mcpd elevate --subject {subject} --tool {} --env {} --ticket {ticket} --ttl 10m  -> {outcome}",
                    flow.tool,
                    req.env.as_deref().unwrap_or("-"),
                );
            }
        }
        outln!("    call  {} {}", flow.tool, flow.args);
        let Value::Object(args) = flow.args.clone() else {
            continue;
        };
        // The ticket lookup of a grant is not the call's.
        let before = state_requests(&state);
        let result = engine.call(flow.tool, Some(args), &ctx).await?;
        print_result(&result, state_requests(&state) - before);
        if result.outcome.is_ok() != flow.expect_ok {
            unexpected += 1;
        }
    }
    outln!();
    if unexpected == 0 {
        outln!("demo finished: every flow behaved as expected");
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("demo finished: {unexpected} flow(s) did not behave as expected");
        Ok(ExitCode::FAILURE)
    }
}

/// The demo API's ticket system as `elevation.ticket_check`, when mcpd.yaml has none:
/// what docs/identity.md shows, pointed at the demo API.
fn demo_ticket_check(
    dir: &Path,
    url: &str,
) -> anyhow::Result<std::sync::Arc<crate::identity::ticket::TicketCheck>> {
    let yaml = format!(
        "url: \"{url}/tickets/{{{{ ticket }}}}\"\n\
         headers: {{ Authorization: \"Bearer {{{{ secret.DEMO_TICKETS_TOKEN }}}}\" }}\n\
         require: {{ \"$.status\": approved }}\n\
         environment: \"$.environment\"\n\
         window: {{ start: \"$.window.start\", end: \"$.window.end\" }}\n"
    );
    let spec: crate::config::server::TicketCheckSpec = serde_saphyr::from_str(&yaml)?;
    let vars = Vars::default().with("DEMO_TICKETS_TOKEN", demo_api::TICKETS_TOKEN);
    let mut diags = crate::config::diag::Diagnostics::default();
    let path = dir.join("mcpd.yaml");
    crate::identity::ticket::TicketCheck::compile(&path, &spec, &vars, &mut diags)
        .map(std::sync::Arc::new)
        .ok_or_else(|| anyhow::anyhow!("the demo's ticket check does not compile: {diags}"))
}

fn state_requests(state: &demo_api::DemoState) -> usize {
    state.requests_seen()
}

fn print_result(r: &CallResult, upstream_requests: usize) {
    let ms = r.elapsed.as_secs_f64() * 1000.0;
    if !r.rules.is_empty() || !r.shadow.is_empty() {
        outln!(
            "    rules {}{}",
            r.rules.join(", "),
            if r.shadow.is_empty() {
                String::new()
            } else {
                format!("; shadow: {}", r.shadow.join(", "))
            }
        );
    }
    let mut status = r.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    if let Some(t) = &r.ticket {
        status.push_str(" (elevated: ticket ");
        status.push_str(t);
        status.push(')');
    }
    if r.replayed {
        status.push_str(" (replayed: idempotency key ");
        status.push_str(r.idempotency_key.as_deref().unwrap_or_default());
        status.push(')');
    }
    match &r.outcome {
        Ok(v) => {
            outln!(
                "    ok    HTTP {status}, {} values masked, {upstream_requests} upstream request(s), {ms:.1} ms",
                r.masked
            );
            outln!("    result {}", preview(v));
        }
        Err(f) => {
            outln!(
                "    error ({}) {upstream_requests} upstream request(s), {ms:.1} ms",
                f.kind()
            );
            outln!("    reason {}", f.message());
        }
    }
}

/// The result with long lists cut to their first two items.
fn preview(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let parts: Vec<String> = o
                .iter()
                .map(|(k, v)| match v {
                    Value::Array(items) if items.len() > 2 => format!(
                        "\"{k}\": [{}, {}, ... {} more]",
                        items.first().map(Value::to_string).unwrap_or_default(),
                        items.get(1).map(Value::to_string).unwrap_or_default(),
                        items.len() - 2
                    ),
                    other => format!("\"{k}\": {other}"),
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Runs the demo API alone until interrupted.
pub(super) async fn run_api(port: u16) -> anyhow::Result<ExitCode> {
    let (addr, _state) = demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    outln!("http://{addr}");
    tracing::info!(%addr, "demo API listening");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}
