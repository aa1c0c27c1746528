//! Benchmark: policy decision time with 10, 100 and 1,000 rules (with the prod rule
//! selecting by tool id, and by what the call does: `match` on the rendered request),
//! and redaction throughput in MB/s on a ~1 MB JSON result (with PII, and with none to
//! find).
//!
//! `cargo bench --bench policy`. Targets: under 5 us per decision at 100 rules;
//! redaction over 200 MB/s.
//
// A benchmark is a test harness: a failed expect is its failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use mcpd::config::PolicySpec;
use mcpd::policy::{Facts, Policy, Request, Sent};
use mcpd::redact::Redactor;
use serde_json::{Value, json};

/// `n` rules like a real deployment's: spread over 25 teams' tools, so a call meets the
/// global rules and about one in 25 of the rest; most carry conditions, some are shadow.
fn rules(n: usize, by_request: bool) -> String {
    let mut y = String::from("default: allow\nrules:\n");
    if by_request {
        y.push_str("  - id: prod-write-needs-ticket\n    match: { upstream: flags, methods: [PUT, POST, PATCH, DELETE], path: \"/flags/prod/*\" }\n    when: not (request.body.percent is number and request.body.percent <= 10) and not elevation.ticket\n    effect: deny\n    reason: need a ticket\n");
    } else {
        y.push_str("  - id: prod-write-needs-ticket\n    tools: [flag.set]\n    when: args.env == \"prod\" and args.percent > 10 and not elevation.ticket\n    effect: deny\n    reason: need a ticket\n");
    }
    y.push_str("  - id: redact-pii\n    effect: redact\n    detectors: [email, pan, secret]\n");
    for i in 2..n {
        let tools = if i % 25 == 0 {
            "flag.*".to_owned()
        } else {
            format!("team{}.*", i % 25)
        };
        match i % 3 {
            0 => y.push_str(&format!("  - id: r{i}\n    tools: [{tools}]\n    when: args.env == \"prod\" and args.percent > {}\n    effect: deny\n    reason: capped\n", i % 100)),
            1 => y.push_str(&format!("  - id: r{i}\n    tools: [{tools}]\n    when: actor.purpose == \"support\"\n    effect: allow\n")),
            _ => y.push_str(&format!("  - id: r{i}\n    mode: shadow\n    tools: [{tools}]\n    when: args.percent > {}\n    effect: deny\n    reason: measuring\n", i % 100)),
        }
    }
    y
}

fn decision_time(n: usize, by_request: bool) -> Duration {
    let spec: PolicySpec = serde_saphyr::from_str(&rules(n, by_request)).expect("rules parse");
    let mut diags = mcpd::config::diag::Diagnostics::default();
    let policy =
        Policy::compile(Path::new("policies.yaml"), &spec, &mut diags).expect("rules compile");
    let args = json!({"env": "staging", "name": "checkout_v2", "percent": 10});
    let actor =
        json!({"subject": "agent:bench", "scopes": [], "purpose": "support", "region": "us"});
    let env = json!({"name": "bench"});
    // What the engine passes: the rendered request only when a rule needs it.
    let sent = Sent::new(
        "flags",
        "PUT",
        "/flags/prod/checkout_v2",
        &[],
        Some(&json!({"percent": 10})),
    );
    let mut request = Request {
        upstream: "flags",
        method: "PUT",
        path_shape: "/flags/*/*",
        sent: None,
    };
    if policy.needs_request("flag.set", &request) {
        request.sent = Some(&sent);
    }
    let facts = Facts {
        tool: "flag.set",
        request,
        args: &args,
        actor: &actor,
        elevation: None,
        env: &env,
    };
    assert!(policy.evaluate(&facts).allowed);
    let iters = (200_000 / n).max(200);
    let mut samples = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(policy.evaluate(std::hint::black_box(&facts)));
        }
        samples.push(t.elapsed() / u32::try_from(iters).unwrap());
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// How much PII a benchmark result carries.
#[derive(Clone, Copy)]
enum Pii {
    /// Every row has an email, a card and a token.
    Full,
    /// One row in ten has an email and a card: a realistic export.
    Some,
    /// Nothing to find.
    None,
}

/// A ~1 MB orders-like result: ids, dates, amounts, addresses, free-text notes.
fn result(pii: Pii) -> Value {
    let rows: Vec<Value> = (0..3200)
        .map(|i| {
            let with = match pii {
                Pii::Full => true,
                Pii::Some => i % 10 == 0,
                Pii::None => false,
            };
            let (email, card, note) = if with {
                (
                    format!("customer.{i}@example.com"),
                    "4111 1111 1111 1111".to_owned(),
                    if matches!(pii, Pii::Full) {
                        format!("called back about order {i}; token Bearer abcdefghijklmnop{i}")
                    } else {
                        format!("called back about order {i}; customer asked for a refund")
                    },
                )
            } else {
                (
                    "withheld".to_owned(),
                    "withheld".to_owned(),
                    format!("called back about order {i}; nothing sensitive here at all"),
                )
            };
            json!({"id": format!("ord-{i}"), "placed": "2025-08-14T09:30:00Z", "email": email, "card": card,
                   "note": note, "amount": i * 7, "invoice": "7000000000001001", "status": "shipped",
                   "address": "12 Rue de la Paix, 75002 Paris, France", "items": ["widget", "gadget", "sprocket"]})
        })
        .collect();
    json!({ "orders": rows })
}

fn redaction(pii: Pii) -> (f64, usize, usize) {
    let base = result(pii);
    let bytes = base.to_string().len();
    let r = Redactor::all();
    let mut best = f64::MAX;
    let mut found = 0;
    for _ in 0..9 {
        let mut v = base.clone();
        let t = Instant::now();
        found = r.redact_value(&mut v);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(v);
    }
    (bytes as f64 / best / 1e6, bytes, found)
}

fn main() {
    println!("mcpd policy benchmark");
    for (by_request, how) in [(false, "by tool id"), (true, "by request")] {
        for n in [10, 100, 1000] {
            let t = decision_time(n, by_request);
            println!(
                "decision with {n:>4} rules, prod rule {how:<10}: {:>8.2} us (median)",
                t.as_secs_f64() * 1e6
            );
        }
    }
    for (pii, what) in [
        (Pii::Full, "full of PII (every row)"),
        (Pii::Some, "some PII (1 row in 10)"),
        (Pii::None, "with nothing to find"),
    ] {
        let (mbs, bytes, found) = redaction(pii);
        println!(
            "redaction, {:.2} MB result {what}: {mbs:.0} MB/s ({found} values redacted)",
            bytes as f64 / 1e6
        );
    }
}
