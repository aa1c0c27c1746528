//! What one reload did, and how it is told: one log line (tools and rules added,
//! removed, changed), a warning per weakened rule and per held policy change, the
//! `mcpd_reloads_total` and `mcpd_policy_changes_total` counters, and an audit record
//! (`"kind": "config"`) for every policy change applied or held.
//!
//! Owns the wording and the fields; it decides nothing about what is applied.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Trigger;
use crate::audit::{ConfigEntry, Weakened};
use crate::config::diag::Diagnostics;
use crate::engine::Engine;
use crate::policy::Changes;

/// What one reload did.
#[derive(Debug, Default)]
pub struct Report {
    /// What started it.
    pub trigger: Trigger,
    /// Whether a new catalog was swapped in.
    pub applied: bool,
    /// Tool ids that appeared.
    pub added: Vec<String>,
    /// Tool ids that went away.
    pub removed: Vec<String>,
    /// Tool ids whose file changed.
    pub changed: Vec<String>,
    /// Whether a changed `policies.yaml` was applied.
    pub policy_applied: bool,
    /// The rules added, removed, changed and weakened by the applied policy.
    pub rules: Changes,
    /// A changed `policies.yaml` not applied because policy is pinned.
    pub held: Option<Held>,
    /// A changed `reload:` section of `mcpd.yaml` not applied because policy is pinned.
    pub held_reload_section: bool,
    /// Files kept at their last good version because the new one is broken (or still
    /// being written).
    pub kept: Vec<PathBuf>,
    /// Every problem found.
    pub problems: Diagnostics,
    /// Time from start to swap.
    pub elapsed: Duration,
    /// True when what would be compiled is what is already served.
    pub unchanged: bool,
}

/// A policy change waiting for a deliberate reload.
#[derive(Debug, Clone)]
pub struct Held {
    /// What applying it would change.
    pub changes: Changes,
    /// The fingerprint of the `policies.yaml` held.
    pub fingerprint: u64,
    /// The same file was already reported as held by an earlier reload.
    pub reported_before: bool,
}

/// A report as `mcpd reload` receives and prints it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The server's process id.
    pub pid: u32,
    /// `stdio` or `http`.
    pub transport: String,
    /// `applied`, `unchanged` or `failed`.
    pub outcome: String,
    /// Tool ids added, removed, changed.
    pub tools_added: Vec<String>,
    /// Tool ids removed.
    pub tools_removed: Vec<String>,
    /// Tool ids changed.
    pub tools_changed: Vec<String>,
    /// Rule ids added.
    pub rules_added: Vec<String>,
    /// Rule ids removed.
    pub rules_removed: Vec<String>,
    /// Rule ids changed.
    pub rules_changed: Vec<String>,
    /// `rule: change` for every weakening applied.
    pub weakened: Vec<String>,
    /// Files kept at their last good version.
    pub kept: Vec<String>,
    /// Every problem, as `file:line:col: message`.
    pub problems: Vec<String>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: f64,
}

impl Report {
    /// The summary `mcpd reload` prints for a server of this `transport`.
    pub fn summary(&self, transport: &str) -> Summary {
        let outcome = if self.unchanged {
            "unchanged"
        } else if self.applied {
            "applied"
        } else {
            "failed"
        };
        Summary {
            pid: std::process::id(),
            transport: transport.to_owned(),
            outcome: outcome.to_owned(),
            tools_added: self.added.clone(),
            tools_removed: self.removed.clone(),
            tools_changed: self.changed.clone(),
            rules_added: self.rules.added.clone(),
            rules_removed: self.rules.removed.clone(),
            rules_changed: self.rules.changed.clone(),
            weakened: weakened(&self.rules),
            kept: self.kept.iter().map(|p| p.display().to_string()).collect(),
            problems: self.problems.0.iter().map(ToString::to_string).collect(),
            elapsed_ms: self.elapsed.as_secs_f64() * 1000.0,
        }
    }
}

fn weakened(c: &Changes) -> Vec<String> {
    c.weakened
        .iter()
        .map(|w| format!("{}: {}", w.rule, w.change))
        .collect()
}

/// Logs the report, counts its policy changes and audits them.
pub(super) fn record(r: &Report, engine: &Engine) {
    tell_sessions(r, engine);
    for d in &r.problems.0 {
        tracing::warn!(problem = %d, "config problem");
    }
    let ms = format!("{:.1}", r.elapsed.as_secs_f64() * 1000.0);
    let trigger = r.trigger.name();
    if r.unchanged {
        tracing::info!(kept_last_good = ?r.kept, trigger, elapsed_ms = ms, "reload: nothing new to apply");
    } else if r.applied {
        tracing::info!(
            added = ?r.added,
            removed = ?r.removed,
            changed = ?r.changed,
            rules_added = ?r.rules.added,
            rules_removed = ?r.rules.removed,
            rules_changed = ?r.rules.changed,
            kept_last_good = ?r.kept,
            trigger,
            elapsed_ms = ms,
            "reload applied"
        );
    } else {
        tracing::warn!(
            trigger,
            elapsed_ms = ms,
            "reload failed; the last good catalog stays"
        );
    }
    let metrics = engine.metrics();
    if r.policy_applied {
        for w in &r.rules.weakened {
            tracing::warn!(
                rule = %w.rule,
                change = %w.change,
                trigger,
                "policy weakened: an enforced rule was removed or weakened (or default/egress opened up)"
            );
        }
        metrics.policy_changes("added", r.rules.added.len());
        metrics.policy_changes("removed", r.rules.removed.len());
        metrics.policy_changes("changed", r.rules.changed.len());
        metrics.policy_changes("weakened", r.rules.weakened.len());
        audit(engine, "policy_applied", trigger, &r.rules);
    }
    if r.held_reload_section {
        tracing::warn!(
            trigger,
            "mcpd.yaml's reload: section changed and is NOT applied while reload.policy is manual; apply it with `mcpd reload` or SIGHUP"
        );
    }
    if let Some(h) = r.held.as_ref().filter(|h| !h.reported_before) {
        tracing::warn!(
            rules_added = ?h.changes.added,
            rules_removed = ?h.changes.removed,
            rules_changed = ?h.changes.changed,
            weakened = ?weakened(&h.changes),
            "policies.yaml changed and is NOT applied: reload.policy is manual; apply it with `mcpd reload` or SIGHUP"
        );
        metrics.policy_changes("held", 1);
        audit(engine, "policy_held", trigger, &h.changes);
    }
}

fn audit(engine: &Engine, event: &str, trigger: &str, c: &Changes) {
    let Some(log) = engine.audit() else {
        return;
    };
    log.record_config(&ConfigEntry {
        kind: "config",
        event: event.to_owned(),
        file: crate::config::POLICY_FILE.to_owned(),
        trigger: trigger.to_owned(),
        rules_added: c.added.clone(),
        rules_removed: c.removed.clone(),
        rules_changed: c.changed.clone(),
        weakened: c
            .weakened
            .iter()
            .map(|w| Weakened {
                rule: w.rule.clone(),
                change: w.change.clone(),
            })
            .collect(),
    });
}

/// What a remote user needs to know about this reload, for the MCP sessions that listen
/// (over HTTP nobody sees mcpd's stderr): each problem, what was kept, a failed reload,
/// and a weakened or held policy.
fn tell_sessions(r: &Report, engine: &Engine) {
    use crate::engine::Level;
    for d in &r.problems.0 {
        engine.notice(Level::Error, format!("config problem: {d}"));
    }
    if !r.kept.is_empty() {
        let kept: Vec<String> = r.kept.iter().map(|p| p.display().to_string()).collect();
        engine.notice(
            Level::Warning,
            format!(
                "reload kept the last good version of {} (the new one has the problems above)",
                kept.join(", ")
            ),
        );
    }
    if !r.applied && !r.unchanged {
        engine.notice(
            Level::Warning,
            "reload failed; the last good catalog stays".to_owned(),
        );
    }
    if r.policy_applied {
        for w in &r.rules.weakened {
            engine.notice(
                Level::Warning,
                format!("policy weakened: rule '{}' {}", w.rule, w.change),
            );
        }
    }
    if r.held.as_ref().is_some_and(|h| !h.reported_before) {
        engine.notice(
            Level::Warning,
            "policies.yaml changed and is NOT applied (reload.policy: manual)".to_owned(),
        );
    }
}
