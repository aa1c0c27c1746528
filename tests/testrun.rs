//! `mcpd test`: the shipped cases pass; broken expectations, broken case files and
//! unrecorded requests fail with exit code 1 and a message saying what went wrong.

use std::path::Path;
use std::process::Command;

use crate::util::{ConfigDir, bin, repo, run};

/// `mcpd test DIR [args]`: (exit code, stdout, stderr).
fn mcpd_test(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run(Command::new(bin()).arg("test").arg(dir).args(args))
}

#[test]
fn shipped_cases_pass_and_write_junit() {
    let junit = tempfile::NamedTempFile::new().unwrap();
    let (code, out, err) = mcpd_test(&repo(), &["--junit", junit.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("15 passed, 0 failed"), "{out}");
    assert!(
        out.contains("PASS  tests.d/seed.yaml: adversarial: checkout_v2 to 50 percent in prod"),
        "{out}"
    );
    assert!(
        out.contains("PASS  tests.d/seed.yaml: golden: with a change ticket, prod 50 percent"),
        "{out}"
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(
        xml.contains(r#"<testsuites name="mcpd test" tests="15" skipped="0" failures="0""#),
        "{xml}"
    );
}

const BROKEN: &str = r#"
upstream: demo
cases:
  - name: wrong count
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-31" } }
    expect:
      assert: [{ path: "$.orders[*]", count: 3 }]
  - name: expects a denial that does not come
    call: { tool: flag.set, args: { env: staging, name: checkout_v2, percent: 10 } }
    expect: { decision: deny, upstream_called: false }
  - name: wrong reason
    call: { tool: flag.set, args: { env: prod, name: checkout_v2, percent: 50 } }
    expect: { decision: deny, reason_contains: "weekend freeze" }
  - name: shadow rule that does not match
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-02" } }
    expect: { shadow: [no-bulk-exports] }
  - name: still passes
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-02" } }
"#;

#[test]
fn broken_expectations_fail_with_what_was_expected_and_exit_1() {
    let cfg = ConfigDir::shipped();
    cfg.write("tests.d/broken.yaml", BROKEN);
    let junit = cfg.path().join("junit.xml");
    let (code, out, _) = mcpd_test(cfg.path(), &["--junit", junit.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("1 passed, 4 failed"), "{out}");
    for needle in [
        "FAIL  tests.d/broken.yaml: wrong count",
        "assert '$.orders[*]': expected 3 node(s), it selects 18",
        "expected decision deny, got allow",
        "expected the upstream not to be called, it received 1 request(s)",
        "expected the message to contain \"weekend freeze\"",
        "expected shadow rule 'no-bulk-exports' to match; shadow rules that matched: []",
        "PASS  tests.d/broken.yaml: still passes",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(
        xml.contains(r#"tests="5" skipped="0" failures="4""#),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"assert &apos;$.orders[*]&apos;"),
        "{xml}"
    );
}

#[test]
fn raw_pii_in_a_result_fails_the_case_naming_where() {
    let cfg = ConfigDir::shipped();
    // Without the redact rule and the tool's own mask, emails leave unmasked.
    cfg.edit(
        "policies.yaml",
        "detectors: [email, pan, secret]",
        "detectors: [secret]",
    );
    cfg.edit(
        "tools.d/orders.export.yaml",
        "    - \"$[*].email\"",
        "    - \"$[*].nothing\"",
    );
    cfg.write(
        "tests.d/pii.yaml",
        r#"
cases:
  - name: leaks
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-01" } }
    recorded:
      - body: { orders: [{ id: ord-1, date: "2025-08-01", amount_cents: 100, region: us, email: "jane.doe@example.com", card: "4111111111111111" }] }
    expect: { no_raw_pii: true }
"#,
    );
    let (code, out, _) = mcpd_test(cfg.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("raw PII in the result at /orders/0/card, /orders/0/email"),
        "{out}"
    );
}

#[test]
fn a_request_without_a_recorded_response_fails_the_case() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tests.d/short.yaml",
        r#"
cases:
  - name: nothing recorded
    call: { tool: flag.set, args: { env: staging, name: checkout_v2, percent: 10 } }
"#,
    );
    let (code, out, _) = mcpd_test(cfg.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expected decision allow, got error"), "{out}");
    assert!(
        out.contains("the upstream got 1 request(s) more than the case recorded responses for"),
        "{out}"
    );
}

#[test]
fn a_malformed_case_file_fails_with_its_position() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tests.d/typo.yaml",
        "cases:\n  - name: typo\n    call: { tool: flag.set }\n    expect: { decison: deny }\n",
    );
    cfg.write(
        "tests.d/badpath.yaml",
        "cases:\n  - name: bad path\n    call: { tool: nope.tool }\n    expect: { assert: [{ path: \"$.[\", count: 1 }, { path: \"$.a\" }] }\n",
    );
    let (code, out, _) = mcpd_test(cfg.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("tests.d/typo.yaml:4:"), "{out}");
    assert!(out.contains("unknown field `decison`"), "{out}");
    assert!(out.contains("assert[0].path '$.['"), "{out}");
    assert!(out.contains("assert[1] ('$.a') checks nothing"), "{out}");
}

#[test]
fn no_case_files_is_an_error_that_says_what_to_add() {
    let cfg = ConfigDir::shipped();
    let (code, _, err) = mcpd_test(cfg.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no test cases in")
            && err.contains("tests.d': add YAML files with a 'cases:' list"),
        "{err}"
    );
}

#[test]
fn github_actions_example_runs_validate_and_test() {
    let text = std::fs::read_to_string(repo().join("examples/github-actions.yml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let runs: Vec<&str> = doc["jobs"]["check"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    assert!(runs.contains(&"mcpd validate ."), "{runs:?}");
    assert!(
        runs.contains(&"mcpd test . --junit mcpd-test.xml"),
        "{runs:?}"
    );
    let template =
        std::fs::read_to_string(repo().join(".github/pull_request_template.md")).unwrap();
    assert!(template.contains("**golden** case") && template.contains("**adversarial** case"));
}

#[test]
fn a_request_expectation_that_is_not_a_request_says_how_to_write_one() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tests.d/requests.yaml",
        r#"
cases:
  - name: no method
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-02" } }
    recorded: [{ body: { orders: [] } }]
    expect:
      requests: ["/orders?from=2025-08-01&to=2025-08-02"]
  - name: a URL where the path goes
    call: { tool: orders.export, args: { from: "2025-08-01", to: "2025-08-02" } }
    recorded: [{ body: { orders: [] } }]
    expect:
      requests: [{ request: "GET http://127.0.0.1:8080/orders", upstream: orders }]
"#,
    );
    cfg.write(
        "tests.d/shape.yaml",
        "cases:\n  - name: typo\n    call: { tool: orders.export }\n    expect:\n      requests: [{ request: \"GET /orders\", upstrem: orders }]\n",
    );
    cfg.write(
        "tests.d/empty.yaml",
        "cases:\n  - name: empty decision\n    call: { tool: orders.export }\n    expect:\n      decision:\n",
    );
    let (code, out, _) = mcpd_test(cfg.path(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("requests[0]: write 'METHOD /path?query' or 'METHOD https://host/path?query', e.g. 'GET /orders?from=2025-08-01'\n"),
        "{out}"
    );
    assert!(out.contains("(with upstream:, the path only)"), "{out}");
    assert!(
        out.contains("tests.d/shape.yaml:5:18: expected `METHOD /path?query` (or `METHOD https://host/path`), or `{ request: \"METHOD /path?query\", upstream: NAME, region: NAME }`"),
        "{out}"
    );
    assert!(
        out.contains("tests.d/empty.yaml:5:15: this key has no value: write one of allow, deny, invalid, error"),
        "{out}"
    );
}
