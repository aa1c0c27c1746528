//! The documentation's examples, run as written: the README's tool file and the
//! reference pages' files (docs/tools.md, docs/policy.md, docs/testing.md) are copied
//! out of the Markdown and checked by the binary, so a page cannot drift from mcpd.

use std::process::Command;

use crate::util::{ConfigDir, bin, repo, run, validate};

/// The `n`th (0-based) fenced block of `lang` after the heading `heading` of `page`.
pub(crate) fn block(page: &str, heading: &str, lang: &str, n: usize) -> String {
    let text = format!("\n{}", std::fs::read_to_string(repo().join(page)).unwrap());
    let section = text
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("{page} has no heading {heading:?}"));
    section
        .split(&format!("```{lang}\n"))
        .nth(n + 1)
        .unwrap_or_else(|| panic!("{page} {heading:?} has no {lang} block {n}"))
        .split("```")
        .next()
        .unwrap()
        .to_owned()
}

/// `text` with the indentation its lines share taken off (a block inside a list item).
pub(crate) fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_readme_tool_file_validates_in_place_of_the_seed_tool() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/orders.export.yaml",
        &block("README.md", "## One tool file", "yaml", 0),
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_tools_page_annotated_tool_file_validates_in_place_of_the_seed_tool() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "tools.d/orders.export.yaml",
        &block("docs/tools.md", "## Writing a tool file", "yaml", 0),
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_policy_page_policies_file_validates() {
    let cfg = ConfigDir::shipped();
    cfg.write(
        "policies.yaml",
        &block("docs/policy.md", "# Policy: policies.yaml", "yaml", 0),
    );
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_testing_page_example_case_file_passes() {
    let example = block("docs/testing.md", "## Writing tests", "yaml", 0);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), example).unwrap();
    let (code, out, err) = run(Command::new(bin())
        .arg("test")
        .arg(repo())
        .args(["--cases", file.path().to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
}

#[test]
fn the_testing_page_region_cases_pass_and_a_wrong_region_fails_naming_both() {
    let example = block(
        "docs/testing.md",
        "### Which upstream, which region",
        "yaml",
        0,
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &example).unwrap();
    let run_cases = |path: &std::path::Path| {
        run(Command::new(bin())
            .env_remove("DEMO_API_URL")
            .arg("test")
            .arg(repo())
            .args(["--cases", path.to_str().unwrap()]))
    };
    let (code, out, err) = run_cases(file.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // The same call made by an actor outside the EU must not pass for the EU endpoint.
    let wrong = example.replace(
        "      actor: { subject: \"user:ana\", region: eu, scopes: [orders.export] }\n",
        "",
    );
    assert_ne!(wrong, example);
    std::fs::write(file.path(), &wrong).unwrap();
    let (code, out, _) = run_cases(file.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(upstream 'orders', region 'eu')\"], it received [\"GET http://127.0.0.1:8080/orders?from=2025-08-01&to=2025-08-02 (upstream 'orders', main url)"),
        "{out}"
    );
}

#[test]
fn the_before_you_enforce_examples_run_as_written() {
    const PAGE: &str = "docs/policy.md";
    // The candidate: the page's rule in place of the shipped prod rule, replayed on the
    // demo's recorded flows, says what the page says it says.
    let rule = block(
        PAGE,
        "### Backtest a candidate on recorded calls: `mcpd backtest`",
        "yaml",
        0,
    );
    let rule = rule.strip_prefix("rules:\n").unwrap();
    let cfg = ConfigDir::shipped();
    cfg.append("mcpd.yaml", "\naudit:\n  path: state/audit.jsonl\n");
    let shipped = cfg.read("policies.yaml");
    let start = shipped.find("  - id: prod-write-needs-ticket").unwrap();
    let end = shipped.find("  - id: redact-pii").unwrap();
    let candidate = format!("{}{rule}\n{}", &shipped[..start], &shipped[end..]);
    cfg.write("candidate.yaml", &candidate);
    let key = ("MCPD_AUDIT_KEY", "docs-audit-key-0123456789abcdef");
    let mcpd = |args: &[&str]| {
        run(Command::new(bin())
            .args(args)
            .current_dir(cfg.path())
            .env(key.0, key.1))
    };
    let (code, out, err) = mcpd(&["demo"]);
    assert_eq!(code, 0, "{out}{err}");
    let shown = block(
        PAGE,
        "### Backtest a candidate on recorded calls: `mcpd backtest`",
        "sh",
        0,
    );
    let (code, out, err) = mcpd(&[
        "backtest",
        "--policies",
        "candidate.yaml",
        "--fail-if-denies-more-than",
        "0",
    ]);
    let out = format!("{out}{err}");
    assert_eq!(code, 1, "{out}");
    for line in shown
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            ["summary", "calls", "  newly denies", "rule "]
                .iter()
                .any(|p| l.starts_with(p))
        })
    {
        assert!(
            out.contains(line),
            "the page shows {line:?}; mcpd printed:\n{out}"
        );
    }
    let shown = block(
        PAGE,
        "### What shadow rules did: `mcpd shadow report`",
        "sh",
        0,
    );
    let (code, out, _) = mcpd(&["shadow", "report"]);
    assert_eq!(code, 0, "{out}");
    for line in shown.lines().filter_map(|l| l.strip_prefix("# ")) {
        if line.starts_with("rule ")
            || line.starts_with("  would have")
            || line.starts_with("calls")
        {
            assert!(
                out.contains(line),
                "the page shows {line:?}; mcpd printed:\n{out}"
            );
        }
    }
    // The breaker of the page, on a tool: it validates.
    let breaker = block(PAGE, "### Circuit breakers", "yaml", 0);
    let cfg = ConfigDir::shipped();
    cfg.append("tools.d/flag.set.yaml", &breaker);
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
}
