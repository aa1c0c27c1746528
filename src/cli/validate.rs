//! `mcpd validate`: the CI gate. Prints every problem as `file:line:col: message`, and
//! warnings (`file:line:col: warning: ...`) that do not fail it: write tools that escape
//! a rule, and what MCP hosts would leave out or refuse (`mcpd.yaml`, `policies.yaml`,
//! `tools.d/`, `prompts.d/`). `--strict` also runs the cases of `tests.d/` and requires
//! every enforced deny or require rule to be matched by a passing case and not matched
//! by another.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Vars;
use crate::testrun;

/// Checks a config directory; exit 0 when clean, 1 with diagnostics.
pub(super) async fn run(dir: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    match super::check(dir, &Vars::from_env()) {
        Ok((loaded, catalog)) => {
            for w in &warnings(&loaded, &catalog).0 {
                outln!("{w}");
            }
            // As the server's default name in a host's config (host-config --name).
            for w in crate::mcp::hosts::check(&loaded, super::host_config::DEFAULT_NAME) {
                outln!("{}", w.diagnostic());
            }
            if strict {
                let diags = coverage_problems(dir, &loaded.policy.0).await?;
                if !diags.is_empty() {
                    return Ok(report(&diags));
                }
            }
            let prompts = match catalog.prompts.len() {
                0 => String::new(),
                n => format!(", {n} prompts in {} files", loaded.prompts.len()),
            };
            outln!(
                "ok: {} tools in {} files, {} upstreams, policy {}{prompts}",
                catalog.tools.len(),
                loaded.tools.len(),
                catalog.upstreams.iter().count(),
                loaded.policy.0.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => Ok(report(&diags)),
    }
}

fn report(diags: &crate::config::diag::Diagnostics) -> ExitCode {
    for d in &diags.0 {
        outln!("{d}");
    }
    let n = diags.0.len();
    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
    ExitCode::FAILURE
}

/// Runs tests.d and reports every enforced deny or require rule it does not cover both
/// ways.
async fn coverage_problems(
    dir: &Path,
    policy_file: &Path,
) -> anyhow::Result<crate::config::diag::Diagnostics> {
    let cases_dir = dir.join(testrun::TESTS_DIR);
    let paths = testrun::case_paths(&cases_dir).map_err(|e| {
        anyhow::anyhow!("--strict runs the cases of tests.d to check rule coverage: {e}")
    })?;
    let reports = testrun::run(dir, &paths).await?;
    let rules = super::test::policy_rules(dir)?;
    let cov = testrun::coverage::coverage(&rules, &reports);
    Ok(testrun::coverage::strict_problems(policy_file, &cov))
}

/// Write tools that escape a rule guarding their upstream's other writes.
fn warnings(
    loaded: &crate::config::Loaded,
    catalog: &crate::catalog::Catalog,
) -> crate::config::diag::Diagnostics {
    let specs: Vec<(&Path, &crate::config::ToolSpec, String)> = loaded
        .tools
        .iter()
        .flat_map(|f| f.tools.iter().map(move |t| (f.path.as_path(), t)))
        .map(|(file, t)| (file, t, crate::template::shape(&t.request.path.value)))
        .collect();
    let tools: Vec<crate::policy::WriteTool<'_>> = specs
        .iter()
        .map(|(file, t, shape)| crate::policy::WriteTool {
            id: &t.name.value,
            upstream: &t.request.upstream.value,
            method: t.request.method.as_str(),
            path_shape: shape,
            file,
            pos: t.name.pos,
        })
        .collect();
    catalog.policy.escapes(&tools)
}
