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
}

fn flows() -> Vec<Flow> {
    vec![
        Flow {
            title: "golden: export August's orders; emails and cards come back masked",
            tool: "orders.export",
            args: json!({"from": "2025-08-01", "to": "2025-08-31"}),
            expect_ok: true,
        },
        Flow {
            title: "golden: roll checkout_v2 out to 10 percent in staging",
            tool: "flag.set",
            args: json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
            expect_ok: true,
        },
        Flow {
            title: "safe retry: the same write again replays the first result; the flags service sees nothing",
            tool: "flag.set",
            args: json!({"env": "staging", "name": "checkout_v2", "percent": 10}),
            expect_ok: true,
        },
        Flow {
            title: "adversarial: set checkout_v2 to 50 percent in prod without a ticket",
            tool: "flag.set",
            args: json!({"env": "prod", "name": "checkout_v2", "percent": 50}),
            expect_ok: false,
        },
        Flow {
            title: "shadow: a 5-month export passes, and the shadow rule records it would deny",
            tool: "orders.export",
            args: json!({"from": "2025-05-01", "to": "2025-09-30"}),
            expect_ok: true,
        },
        Flow {
            title: "bad input: a percent over 100 is refused before any request is sent",
            tool: "flag.set",
            args: json!({"env": "staging", "name": "checkout_v2", "percent": 150}),
            expect_ok: false,
        },
    ]
}

/// Starts the demo API on a free loopback port and plays the flows.
pub async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let (addr, state) = demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let url = format!("http://{addr}");
    let vars = Vars::from_env().with("DEMO_API_URL", &url);
    let catalog = super::load_catalog(dir, &vars)?;
    println!(
        "mcpd demo: demo API on {url}; {} tools from {}",
        catalog.tools.len(),
        dir.join(crate::config::TOOLS_DIR).display()
    );
    // The demo starts from nothing each run: its state is in memory.
    let engine = Engine::new(
        catalog,
        std::sync::Arc::new(crate::store::MemoryStore::new()),
    );
    let mut unexpected = 0;
    for (i, flow) in flows().iter().enumerate() {
        let before = state_requests(&state);
        println!("\n[{}] {}", i + 1, flow.title);
        println!("    call  {} {}", flow.tool, flow.args);
        let Value::Object(args) = flow.args.clone() else {
            continue;
        };
        let result = engine
            .call(flow.tool, Some(args), &CallContext::default())
            .await?;
        print_result(&result, state_requests(&state) - before);
        if result.outcome.is_ok() != flow.expect_ok {
            unexpected += 1;
        }
    }
    println!();
    if unexpected == 0 {
        println!("demo finished: every flow behaved as expected");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("demo finished: {unexpected} flow(s) did not behave as expected");
        Ok(ExitCode::FAILURE)
    }
}

fn state_requests(state: &demo_api::DemoState) -> usize {
    state.requests_seen()
}

fn print_result(r: &CallResult, upstream_requests: usize) {
    let ms = r.elapsed.as_secs_f64() * 1000.0;
    if !r.rules.is_empty() || !r.shadow.is_empty() {
        println!(
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
    if r.replayed {
        status.push_str(" (replayed: idempotency key ");
        status.push_str(r.idempotency_key.as_deref().unwrap_or_default());
        status.push(')');
    }
    match &r.outcome {
        Ok(v) => {
            println!(
                "    ok    HTTP {status}, {} values masked, {upstream_requests} upstream request(s), {ms:.1} ms",
                r.masked
            );
            println!("    result {}", preview(v));
        }
        Err(f) => {
            println!(
                "    error ({}) {upstream_requests} upstream request(s), {ms:.1} ms",
                f.kind()
            );
            println!("    reason {}", f.message());
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
pub async fn run_api(port: u16) -> anyhow::Result<ExitCode> {
    let (addr, _state) = demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    println!("http://{addr}");
    tracing::info!(%addr, "demo API listening");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}
