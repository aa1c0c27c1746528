//! `mcpd budget`: what each budget in policies.yaml has left, read from the state store.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Vars;
use crate::limits::amount;
use crate::util::duration::human;

/// Prints one line per budget counter the actor spends from.
pub(super) async fn run(dir: &Path, actor: Option<&str>) -> anyhow::Result<ExitCode> {
    let (loaded, catalog) = super::load(dir, &Vars::from_env())?;
    let subject = actor.unwrap_or_else(|| catalog.default_subject());
    if catalog.limits.budgets().is_empty() {
        outln!("no budgets declared in policies.yaml");
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::open_store(dir, &loaded.server.1).await?;
    let tools: Vec<&str> = catalog.tools.iter().map(|t| t.id.as_str()).collect();
    let now = crate::util::Clock::system().now_ms();
    let rows = (catalog.limits)
        .remaining(store.as_ref(), subject, &tools, now)
        .await?;
    outln!(
        "{:<24} {:<36} {:>16} {:>20}  resets in",
        "budget",
        "counts",
        "calls",
        "cost"
    );
    for r in rows {
        let calls = r.calls.map_or_else(
            || "-".to_owned(),
            |(used, limit)| format!("{used}/{limit} ({} left)", limit.saturating_sub(used)),
        );
        let cost = r.cost.map_or_else(
            || "-".to_owned(),
            |(used, limit)| {
                format!(
                    "{}/{} ({} left)",
                    amount(used),
                    amount(limit),
                    amount((limit - used).max(0.0))
                )
            },
        );
        outln!(
            "{:<24} {:<36} {calls:>16} {cost:>20}  {}",
            r.budget,
            r.scope,
            human(r.resets_in)
        );
    }
    Ok(ExitCode::SUCCESS)
}
