//! `mcpd test [DIR]`: runs the cases in `DIR/tests.d/` and prints one line per case, the
//! reasons of each failure, and `N passed, N failed`; `--junit FILE` writes JUnit XML
//! for CI; `--coverage` adds, per enforced policy rule, whether some passing case made it
//! match and some made it not match. Exit 1 when any case fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::testrun::{self, CaseReport, Verdict};

/// Runs the cases and reports them.
///
/// # Errors
/// When the config does not compile, no case file is found, or the JUnit file cannot
/// be written.
pub(super) async fn run(
    dir: &Path,
    cases: Option<&Path>,
    junit: Option<&Path>,
    coverage: bool,
) -> anyhow::Result<ExitCode> {
    let cases_path = cases.map_or_else(|| dir.join(testrun::TESTS_DIR), Path::to_path_buf);
    let paths = testrun::case_paths(&cases_path)?;
    let reports = testrun::run(dir, &paths).await?;
    let (mut passed, mut failed) = (0, 0);
    for r in &reports {
        let ms = r.elapsed.as_secs_f64() * 1000.0;
        let label = format!("{}: {}", shown(&r.file, dir), r.name);
        match &r.verdict {
            Verdict::Pass => {
                passed += 1;
                outln!("PASS  {label} ({ms:.0} ms)");
            }
            Verdict::Fail(problems) => {
                failed += 1;
                outln!("FAIL  {label} ({ms:.0} ms)");
                for p in problems {
                    outln!("      - {p}");
                }
            }
        }
    }
    outln!("{passed} passed, {failed} failed");
    if coverage {
        print_coverage(dir, &reports)?;
    }
    if let Some(path) = junit {
        let xml = junit_report(&reports, dir)?;
        std::fs::write(path, xml)
            .with_context(|| format!("cannot write the JUnit report '{}'", path.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The coverage of every enforced rule of the config's policy by the passing cases.
fn print_coverage(dir: &Path, reports: &[CaseReport]) -> anyhow::Result<()> {
    let rules = policy_rules(dir)?;
    let cov = testrun::coverage::coverage(&rules, reports);
    outln!("\nrule coverage (enforced rules; passing cases that reached policy)");
    let width = cov.iter().map(|c| c.info.id.len()).max().unwrap_or(0);
    let first = |n: &(usize, Option<String>)| match &n.1 {
        Some(name) => format!("{} (first: {name})", n.0),
        None => n.0.to_string(),
    };
    for c in &cov {
        let unmatched = if c.can_miss() {
            first(&c.unmatched)
        } else {
            "n/a (no condition, every tool)".to_owned()
        };
        let failed = if c.failed > 0 {
            format!("; condition failed: {}", c.failed)
        } else {
            String::new()
        };
        outln!(
            "  {:width$}  {:7} {}  matched: {}; not matched: {unmatched}{failed}",
            c.info.id,
            crate::policy::effect_name(c.info.effect),
            if c.full() { "covered  " } else { "PARTIAL  " },
            first(&c.matched),
        );
    }
    let full = cov.iter().filter(|c| c.full()).count();
    outln!("{full} of {} enforced rules covered both ways", cov.len());
    Ok(())
}

/// The rules of `dir`'s policies.yaml.
pub(super) fn policy_rules(dir: &Path) -> anyhow::Result<Vec<crate::policy::RuleInfo>> {
    let (loaded, diags) = crate::config::load_dir(dir);
    let (path, spec) = &loaded.policy;
    let mut diags = diags;
    crate::policy::Policy::compile(path, spec, &mut diags)
        .filter(|_| diags.is_empty())
        .map(|p| p.rules_info())
        .with_context(|| {
            format!(
                "invalid configuration in '{}' (run 'mcpd validate'):\n{diags}",
                dir.display()
            )
        })
}

/// The case file's path relative to the config dir when it is inside it.
fn shown(file: &Path, dir: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

/// One test suite per case file, one test case per case.
fn junit_report(reports: &[CaseReport], dir: &Path) -> anyhow::Result<String> {
    let mut report = Report::new("mcpd test");
    let mut suites: Vec<(PathBuf, TestSuite)> = Vec::new();
    for r in reports {
        let status = match &r.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail(problems) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(problems.first().cloned().unwrap_or_default());
                s.set_description(problems.join("\n"));
                s
            }
        };
        let mut case = TestCase::new(r.name.clone(), status);
        case.set_classname(shown(&r.file, dir));
        case.set_time(r.elapsed);
        match suites.iter_mut().find(|(f, _)| *f == r.file) {
            Some((_, suite)) => {
                suite.add_test_case(case);
            }
            None => {
                let mut suite = TestSuite::new(shown(&r.file, dir));
                suite.add_test_case(case);
                suites.push((r.file.clone(), suite));
            }
        }
    }
    report.add_test_suites(suites.into_iter().map(|(_, s)| s));
    report.to_string().context("cannot render the JUnit report")
}
