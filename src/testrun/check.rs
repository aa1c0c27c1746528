//! Judging one call against a case's expectations. Every expectation is checked and
//! every miss is reported, each saying what was expected and what came instead.

use serde_json::Value;

use super::case::{Assertion, Case, Decision, Expect, ExpectedRequest, UpstreamMode};
use super::stub::StubRequest;
use crate::engine::{CallResult, Failure};
use crate::redact::{DetectorSet, redact_value};
use crate::response::jsonpath::JsonPath;

/// What the upstream saw during the call.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// Requests it received.
    pub requests: usize,
    /// Requests that found no recorded response.
    pub unanswered: usize,
    /// The requests, when the upstream is the stub.
    pub targets: Option<Vec<StubRequest>>,
}

/// Problems in the case itself, found before it runs.
pub(super) fn well_formed(case: &Case, mode: UpstreamMode) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if mode == UpstreamMode::Demo && !case.recorded.is_empty() {
        problems.push(
            "'recorded' responses are only served with 'upstream: recorded'; remove them or change the file's upstream"
                .to_owned(),
        );
    }
    if mode == UpstreamMode::Demo && case.expect.requests.is_some() {
        problems.push(
            "'expect.requests' can only be checked with 'upstream: recorded'; use upstream_requests for a count"
                .to_owned(),
        );
    }
    for (i, r) in case.recorded.iter().enumerate() {
        if !(100..=599).contains(&r.status) {
            problems.push(format!(
                "recorded[{i}].status {} is not an HTTP status (100-599)",
                r.status
            ));
        }
        for (k, v) in &r.headers {
            if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(v).is_err()
            {
                problems.push(format!(
                    "recorded[{i}].headers: '{k}' is not a valid header"
                ));
            }
        }
    }
    for (i, r) in case.expect.requests.iter().flatten().enumerate() {
        let ok = match r {
            ExpectedRequest::Line(line) => parse_line(line).is_some(),
            ExpectedRequest::Routed(r) => {
                parse_line(&r.request).is_some_and(|(_, at)| at.starts_with('/'))
            }
        };
        if !ok {
            problems.push(format!(
                "requests[{i}]: write 'METHOD /path?query' or 'METHOD https://host/path?query', e.g. 'GET /orders?from=2025-08-01'{}",
                if matches!(r, ExpectedRequest::Routed(_)) {
                    " (with upstream:, the path only)"
                } else {
                    ""
                }
            ));
        }
    }
    for (i, a) in case.expect.assert.iter().enumerate() {
        if let Err(e) = JsonPath::compile(&a.path) {
            problems.push(format!("assert[{i}].path '{}': {e}", a.path));
        }
        if a.count.is_none() && a.equals.is_none() && a.contains.is_none() && a.exists.is_none() {
            problems.push(format!(
                "assert[{i}] ('{}') checks nothing: give count, equals, contains or exists",
                a.path
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every expectation that does not hold for `result`.
pub(super) fn judge(expect: &Expect, result: &CallResult, seen: &Seen) -> Vec<String> {
    let mut problems = judge_call(expect, result);
    if seen.unanswered > 0 {
        problems.push(format!(
            "the upstream got {} request(s) more than the case recorded responses for",
            seen.unanswered
        ));
    }
    if let Some(want) = expect.upstream_called
        && want != (seen.requests > 0)
    {
        problems.push(format!(
            "expected the upstream {}called, it received {} request(s)",
            if want { "to be " } else { "not to be " },
            seen.requests
        ));
    }
    if let Some(want) = expect.upstream_requests
        && want != seen.requests
    {
        problems.push(format!(
            "expected {want} upstream request(s), it received {}",
            seen.requests
        ));
    }
    if let (Some(want), Some(got)) = (&expect.requests, &seen.targets)
        && !requests_match(want, got)
    {
        // Shown in the form the expectations were written in.
        let plain = want.iter().all(|w| matches!(w, ExpectedRequest::Line(l) if parse_line(l).is_some_and(|(_, at)| at.starts_with('/'))));
        let want: Vec<String> = want.iter().map(describe_expected).collect();
        let got: Vec<String> = got
            .iter()
            .map(|r| {
                if plain {
                    format!("{} {}", r.method, r.target)
                } else {
                    describe_seen(r)
                }
            })
            .collect();
        problems.push(format!(
            "expected the upstream to receive {want:?}, it received {got:?}"
        ));
    }
    problems
}

/// `METHOD rest` split at the first space; `None` unless `rest` is a path (`/...`) or
/// an absolute http(s) URL.
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let (method, at) = line.trim().split_once(' ')?;
    let at = at.trim();
    let ok = at.starts_with('/') || at.starts_with("http://") || at.starts_with("https://");
    (ok && !method.is_empty()).then_some((method, at))
}

/// Whether the requests seen are the ones expected, in order.
fn requests_match(want: &[ExpectedRequest], got: &[StubRequest]) -> bool {
    want.len() == got.len() && want.iter().zip(got).all(|(w, g)| request_matches(w, g))
}

fn request_matches(want: &ExpectedRequest, got: &StubRequest) -> bool {
    match want {
        ExpectedRequest::Line(line) => match parse_line(line) {
            Some((method, at)) if at.starts_with('/') => method == got.method && at == got.target,
            Some((method, url)) => {
                method == got.method
                    && got
                        .route
                        .as_ref()
                        .is_some_and(|r| format!("{}{}", r.origin, got.target) == url)
            }
            None => false,
        },
        ExpectedRequest::Routed(want) => {
            parse_line(&want.request).is_some_and(|(m, at)| m == got.method && at == got.target)
                && got
                    .route
                    .as_ref()
                    .is_some_and(|r| r.upstream == want.upstream && r.region == want.region)
        }
    }
}

fn describe_expected(want: &ExpectedRequest) -> String {
    match want {
        ExpectedRequest::Line(line) => line.clone(),
        ExpectedRequest::Routed(r) => format!(
            "{} (upstream '{}', {})",
            r.request,
            r.upstream,
            r.region
                .as_ref()
                .map_or_else(|| "main url".to_owned(), |g| format!("region '{g}'"))
        ),
    }
}

/// A request as it would have gone to the real backend, and where.
fn describe_seen(r: &StubRequest) -> String {
    match &r.route {
        Some(route) => format!(
            "{} {}{} (upstream '{}', {})",
            r.method,
            route.origin,
            r.target,
            route.upstream,
            route
                .region
                .as_ref()
                .map_or_else(|| "main url".to_owned(), |g| format!("region '{g}'"))
        ),
        None => format!("{} {}", r.method, r.target),
    }
}

/// The expectations about the call's result, decision and rules.
fn judge_call(expect: &Expect, result: &CallResult) -> Vec<String> {
    let mut problems = Vec::new();
    let got = match &result.outcome {
        Ok(_) => Decision::Allow,
        Err(Failure::Denied(_)) => Decision::Deny,
        Err(Failure::InvalidArguments(_)) => Decision::Invalid,
        Err(_) => Decision::Error,
    };
    if got != expect.decision {
        let detail = match &result.outcome {
            Ok(v) => format!("result {}", excerpt(&v.to_string())),
            Err(f) => f.message(),
        };
        problems.push(format!(
            "expected decision {}, got {}: {detail}",
            name(expect.decision),
            name(got)
        ));
    }
    if let Some(want) = &expect.reason_contains {
        match &result.outcome {
            Err(f) if f.message().contains(want.as_str()) => {}
            Err(f) => problems.push(format!(
                "expected the message to contain {want:?}, got {:?}",
                f.message()
            )),
            Ok(_) => problems.push(format!(
                "expected a refusal containing {want:?}, but the call succeeded"
            )),
        }
    }
    let result_value = result.outcome.as_ref().ok();
    for a in &expect.assert {
        match result_value {
            Some(v) => problems.extend(assertion(a, v)),
            None => problems.push(format!(
                "assert '{}': the call has no result to check",
                a.path
            )),
        }
    }
    if expect.no_raw_pii
        && let Some(v) = result_value
    {
        let mut found = Vec::new();
        raw_pii(v, &mut String::new(), &mut found);
        if !found.is_empty() {
            problems.push(format!(
                "raw PII in the result at {} (mask it in response.mask or a redact rule)",
                found.join(", ")
            ));
        }
    }
    if let Some(want) = expect.replayed
        && want != result.replayed
    {
        problems.push(if want {
            "expected a replay of an earlier call's result, the call ran anew".to_owned()
        } else {
            "expected a fresh call, the result was replayed from an earlier one".to_owned()
        });
    }
    let shadow_ids: Vec<&str> = result
        .shadow
        .iter()
        .map(|s| s.split_once(':').map_or(s.as_str(), |(id, _)| id))
        .collect();
    for id in &expect.shadow {
        if !shadow_ids.contains(&id.as_str()) {
            problems.push(format!(
                "expected shadow rule '{id}' to match; shadow rules that matched: [{}]",
                shadow_ids.join(", ")
            ));
        }
    }
    for id in &expect.rules {
        if !result.rules.contains(id) {
            problems.push(format!(
                "expected rule '{id}' to match; rules that matched: [{}]",
                result.rules.join(", ")
            ));
        }
    }
    problems
}

fn name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Invalid => "invalid",
        Decision::Error => "error",
    }
}

fn assertion(a: &Assertion, root: &Value) -> Vec<String> {
    let Ok(path) = JsonPath::compile(&a.path) else {
        return vec![format!("assert '{}': not a JSONPath", a.path)];
    };
    let nodes = path.select(root);
    let mut problems = Vec::new();
    if let Some(want) = a.exists
        && want == nodes.is_empty()
    {
        problems.push(format!(
            "assert '{}': expected {}, it selects {} node(s)",
            a.path,
            if want { "a match" } else { "no match" },
            nodes.len()
        ));
    }
    if let Some(want) = a.count
        && want != nodes.len()
    {
        problems.push(format!(
            "assert '{}': expected {want} node(s), it selects {}",
            a.path,
            nodes.len()
        ));
    }
    if let Some(want) = &a.equals {
        let got = match nodes.as_slice() {
            [one] => (*one).clone(),
            many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
        };
        if &got != want {
            problems.push(format!(
                "assert '{}': expected {want}, got {}",
                a.path,
                excerpt(&got.to_string())
            ));
        }
    }
    if let Some(want) = &a.contains {
        if nodes.is_empty() {
            problems.push(format!(
                "assert '{}': expected text containing {want:?}, it selects nothing",
                a.path
            ));
        }
        for node in &nodes {
            let text = match node {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !text.contains(want.as_str()) {
                problems.push(format!(
                    "assert '{}': expected text containing {want:?}, got {}",
                    a.path,
                    excerpt(&text)
                ));
                break;
            }
        }
    }
    problems
}

/// JSON pointers of the leaves in which a detector finds something.
fn raw_pii(v: &Value, at: &mut String, found: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                raw_pii(child, at, found);
                at.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                raw_pii(child, at, found);
                at.truncate(len);
            }
        }
        leaf => {
            let mut copy = leaf.clone();
            if redact_value(&mut copy, DetectorSet::ALL, &Default::default()) > 0 {
                found.push(if at.is_empty() {
                    "/".to_owned()
                } else {
                    at.clone()
                });
            }
        }
    }
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}
