//! `mcpd reload`: a deliberate reload of every `mcpd serve` running on the config
//! directory (over its control socket), printing what each one applied.

use std::path::Path;
use std::process::ExitCode;

use crate::reload::Summary;
use crate::reload::control::{RUN_DIR, Reached, reload_all};

/// Asks every server to reload; exit 0 when each applied (or had nothing new) without a
/// problem, 1 when none runs, one failed or one reported problems.
pub(super) async fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let reached = reload_all(dir).await?;
    if reached.is_empty() {
        eprintln!(
            "no mcpd serve is running on '{}' (none listens in {}); nothing was reloaded",
            dir.display(),
            dir.join(RUN_DIR).display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut ok = true;
    for r in &reached {
        match r {
            Reached::Answered(s) => {
                print(s);
                ok &= s.outcome != "failed" && s.problems.is_empty();
            }
            Reached::Failed { socket, why } => {
                outln!("{}: not reloaded: {why}", socket.display());
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(s: &Summary) {
    let list = |v: &[String]| format!("[{}]", v.join(", "));
    outln!(
        "pid {} ({}): {} in {:.0} ms",
        s.pid,
        s.transport,
        s.outcome,
        s.elapsed_ms
    );
    if s.outcome == "applied" {
        outln!(
            "  rules  added {} removed {} changed {}",
            list(&s.rules_added),
            list(&s.rules_removed),
            list(&s.rules_changed)
        );
        for w in &s.weakened {
            outln!("  WEAKENED {w}");
        }
        outln!(
            "  tools  added {} removed {} changed {}",
            list(&s.tools_added),
            list(&s.tools_removed),
            list(&s.tools_changed)
        );
    }
    for k in &s.kept {
        outln!("  kept last good: {k}");
    }
    for p in &s.problems {
        outln!("  problem: {p}");
    }
}
