//! `mcpd backtest` and `mcpd shadow report`: a candidate policy replayed on a recorded
//! audit log, and what shadow rules recorded, printed for people (or as JSON for CI).
//! Exit 1 when a `--fail-if-*` threshold is passed, 2 when the log or the candidate
//! cannot be used (a log that does not verify is never read).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::audit::Verifier;
use crate::backtest::{self, FileSummary, Report, ShadowReport, Tally};
use crate::catalog::Catalog;
use crate::config::{self, Vars};
use crate::policy::{Policy, ToolArgs};

/// Which log to read and how to check it.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// The audit log: every file of a rotated log, in any order (default: `audit.path`
    /// from mcpd.yaml).
    #[arg(long = "audit", value_name = "FILE", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The environment variable holding the HMAC signing key (default: `audit.key_env`
    /// from mcpd.yaml, else MCPD_AUDIT_KEY).
    #[arg(long, value_name = "ENV")]
    pub key_env: Option<String>,
    /// Verify Ed25519 signatures with this public key (64 hex digits, or a file holding
    /// them) instead of the HMAC key.
    #[arg(long, value_name = "HEX|FILE")]
    pub public_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// How many example calls to show per count.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub examples: usize,
}

/// `mcpd backtest`'s own options.
#[derive(Debug, Clone, clap::Args)]
pub struct BacktestArgs {
    /// The log.
    #[command(flatten)]
    pub log: LogArgs,
    /// The candidate policy file (default: the config directory's policies.yaml).
    #[arg(long, value_name = "FILE")]
    pub policies: Option<PathBuf>,
    /// Exit 1 when the candidate denies more than N calls that were allowed.
    #[arg(long, value_name = "N")]
    pub fail_if_denies_more_than: Option<usize>,
    /// Exit 1 when the candidate allows more than N calls that were denied.
    #[arg(long, value_name = "N")]
    pub fail_if_allows_more_than: Option<usize>,
}

/// Replays the log through the candidate and prints what would change.
pub(super) fn run(dir: &Path, args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    // Requests are rendered again from recorded arguments: never with a real secret.
    let vars = Vars::from_env().with_placeholder_secrets();
    let (loaded, catalog) = super::load(dir, &vars)?;
    let candidate = match &args.policies {
        None => None,
        Some(path) => Some(compile_candidate(&loaded, &catalog, path, &vars)?),
    };
    let (files, verifier) = log_files(dir, &loaded.server.1, &args.log)?;
    let policy = candidate.as_ref().unwrap_or(&catalog.policy);
    let report = backtest::backtest(&files, &verifier, policy, &catalog, args.log.examples)?;
    let shown = args
        .policies
        .as_ref()
        .map_or_else(|| loaded.policy.0.clone(), Clone::clone);
    if args.log.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", render(&report, &shown));
    }
    let mut failed = Vec::new();
    if let Some(n) = args.fail_if_denies_more_than
        && report.newly_denied > n
    {
        failed.push(format!(
            "{} call(s) newly denied, more than --fail-if-denies-more-than {n}",
            report.newly_denied
        ));
    }
    if let Some(n) = args.fail_if_allows_more_than
        && report.newly_allowed > n
    {
        failed.push(format!(
            "{} call(s) newly allowed, more than --fail-if-allows-more-than {n}",
            report.newly_allowed
        ));
    }
    for f in &failed {
        eprintln!("FAIL: {f}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints what each shadow rule recorded over the log.
pub(super) fn run_shadow(dir: &Path, args: &LogArgs) -> anyhow::Result<ExitCode> {
    let vars = Vars::from_env().with_placeholder_secrets();
    let (loaded, catalog) = super::load(dir, &vars)?;
    let (files, verifier) = log_files(dir, &loaded.server.1, args)?;
    let report = backtest::shadow_report(&files, &verifier, Some(&catalog), args.examples)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", render_shadow(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The candidate, checked as `mcpd validate` would check it in place of policies.yaml
/// (against this config's tools and upstreams), and its conditions' arguments against
/// the tools they cover (a misspelt one would make a rule silently never match, and the
/// backtest report it as loosening); every problem at its line in the file.
fn compile_candidate(
    loaded: &config::Loaded,
    catalog: &Catalog,
    path: &Path,
    vars: &Vars,
) -> anyhow::Result<Policy> {
    let spec = config::load_policy_file(path, vars).map_err(|d| {
        anyhow::anyhow!(
            "the candidate policy '{}' does not load:\n{d}",
            path.display()
        )
    })?;
    let mut with = loaded.clone();
    with.policy = (path.to_path_buf(), spec);
    let policy = Catalog::compile(&with, vars)
        .map(|c| c.policy)
        .map_err(|d| {
            anyhow::anyhow!(
                "the candidate policy '{}' does not compile with the config in '{}':\n{d}",
                path.display(),
                loaded.root.display()
            )
        })?;
    let schemas: Vec<(String, Vec<String>)> = catalog
        .tools
        .iter()
        .map(|t| {
            let args = t
                .listing
                .input_schema
                .get("properties")
                .and_then(serde_json::Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            (t.id.clone(), args)
        })
        .collect();
    let tools: Vec<ToolArgs<'_>> = schemas
        .iter()
        .map(|(id, args)| ToolArgs {
            id,
            args: args.iter().map(String::as_str).collect(),
        })
        .collect();
    let problems = policy.check_tools(path, &tools);
    if !problems.is_empty() {
        anyhow::bail!(
            "the candidate policy '{}' does not fit the tools in '{}':\n{problems}",
            path.display(),
            loaded.root.display()
        );
    }
    Ok(policy)
}

/// The log's files (given, or mcpd.yaml's `audit.path`) and what checks them.
fn log_files(
    dir: &Path,
    server: &config::ServerSpec,
    args: &LogArgs,
) -> anyhow::Result<(Vec<PathBuf>, Verifier)> {
    let files = if args.files.is_empty() {
        let spec = server
            .audit
            .as_ref()
            .context("no audit log: pass --audit FILE, or configure 'audit:' in mcpd.yaml")?;
        vec![dir.join(&spec.path)]
    } else {
        args.files.clone()
    };
    let key_env = args
        .key_env
        .clone()
        .or_else(|| server.audit.as_ref().map(|a| a.key_env.clone()))
        .unwrap_or_else(|| "MCPD_AUDIT_KEY".to_owned());
    let verifier = super::audit::verifier(&key_env, args.public_key.as_deref())?;
    Ok((files, verifier))
}

fn render(r: &Report, candidate: &Path) -> String {
    let mut out = String::new();
    log_lines(&mut out, &r.files, r.records, r.chains, r.period.as_ref());
    let _ = writeln!(
        out,
        "calls      {} call records: {} replayed; not replayed: {} ended before policy (identity, arguments, scope), {} written without what policy saw, {} of tools no longer declared",
        r.calls, r.replayed, r.before_policy, r.not_recorded, r.tool_gone
    );
    let _ = writeln!(
        out,
        "candidate  {} (compared with the decisions recorded then)",
        candidate.display()
    );
    for rule in &r.rules {
        let effect = if rule.effect.is_empty() {
            String::new()
        } else {
            format!(" {}", rule.effect)
        };
        let _ = writeln!(out, "\nrule {} ({}{effect})", rule.id, rule.mode);
        let denies = if rule.mode == "shadow" {
            "would newly deny (if enforced)"
        } else {
            "newly denies"
        };
        let mut any = false;
        for (what, t) in [
            (denies, &rule.newly_denies),
            ("newly allows", &rule.newly_allows),
            (
                "cannot be judged: reads a value redacted in the log",
                &rule.unjudged_redacted,
            ),
            (
                "cannot be judged: reads what the log does not record (elevation)",
                &rule.unjudged_not_recorded,
            ),
        ] {
            if t.calls > 0 {
                any = true;
                tally(&mut out, what, t);
            }
        }
        if !any {
            out.push_str("  no change\n");
        }
    }
    let _ = writeln!(
        out,
        "\nsummary    {} newly denied, {} newly allowed, {} undecided (hidden values), {} unchanged, of {} replayed",
        r.newly_denied, r.newly_allowed, r.undecided, r.unchanged, r.replayed
    );
    out
}

fn render_shadow(r: &ShadowReport) -> String {
    let mut out = String::new();
    log_lines(&mut out, &r.files, r.records, r.chains, r.period.as_ref());
    let _ = writeln!(
        out,
        "calls      {} call records, {} reached policy",
        r.calls, r.reached_policy
    );
    if r.rules.is_empty() {
        out.push_str("\nno shadow rule in policies.yaml, and none recorded in the log\n");
    }
    for rule in &r.rules {
        let now = match rule.now {
            "shadow" => "shadow",
            "enforce" => "enforced now",
            _ => "no longer in policies.yaml",
        };
        let _ = writeln!(out, "\nrule {} ({now}, {})", rule.id, rule.effect);
        let of = match rule.covered {
            Some(n) if n > 0 => format!(
                " of {n} call(s) it covers ({:.0}%)",
                100.0 * rule.fired.calls as f64 / n as f64
            ),
            Some(_) => " of 0 calls it covers".to_owned(),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  would have acted on {} call(s){of}; {} of them were allowed then",
            rule.fired.calls, rule.fired_allowed
        );
        if rule.fired.calls > 0 {
            tally(&mut out, "acted on", &rule.fired);
        }
    }
    out
}

fn log_lines(
    out: &mut String,
    files: &[FileSummary],
    records: u64,
    chains: usize,
    period: Option<&(String, String)>,
) {
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let _ = writeln!(
        out,
        "log        {}: {records} records in {} file(s), {chains} chain(s); signatures, sequence and chain verified",
        names.join(", "),
        files.len()
    );
    for f in files.iter().skip(1).filter(|f| f.new_chain) {
        let _ = writeln!(
            out,
            "           note: {} starts a new chain: nothing proves no record is missing before it",
            f.path.display()
        );
    }
    if let Some((from, to)) = period {
        let _ = writeln!(out, "period     {from} .. {to}");
    }
}

fn tally(out: &mut String, what: &str, t: &Tally) {
    let list = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "  {what}: {} call(s); by tool: {}; by actor: {}",
        t.calls,
        list(&t.by_tool),
        list(&t.by_actor)
    );
    for e in &t.examples {
        let _ = writeln!(
            out,
            "    seq {} {} {} {} {}: {} -> {}",
            e.seq, e.time, e.actor, e.tool, e.args, e.before, e.after
        );
    }
}
