//! `mcpd shadow report`: what each shadow rule recorded it would have done over a log's
//! period, so a rule can be promoted (or dropped) on evidence.
//!
//! Owns reading the shadow outcomes call records carry (`shadow: ["id:effect"]`, written
//! when the call was made, by the policy in force then) and setting them against the
//! calls each rule covers. It evaluates nothing: replaying a policy is the backtest's.

use serde::Serialize;

use super::log::Log;
use super::{Tally, mode_name};
use crate::catalog::Catalog;
use crate::policy::Policy;

/// What each shadow rule did over a log.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The log's files, in the order read.
    pub files: Vec<super::FileSummary>,
    /// Records of every kind.
    pub records: u64,
    /// Chains the files form.
    pub chains: usize,
    /// The first and last call records' times.
    pub period: Option<(String, String)>,
    /// Call records.
    pub calls: usize,
    /// Call records that reached policy (the only ones a rule can act on).
    pub reached_policy: usize,
    /// The shadow rules of the current policy (file order), then rules the log names
    /// that the current policy no longer has in shadow mode.
    pub rules: Vec<ShadowRule>,
}

/// One shadow rule over the period.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRule {
    /// The rule id.
    pub id: String,
    /// What it would have done (`deny`, `route`, ...), as recorded; else from the policy.
    pub effect: String,
    /// Its mode in the current policy: `shadow`, `enforce`, or `absent`.
    pub now: &'static str,
    /// Calls that reached policy with a tool the rule can select (per the current policy
    /// and tools; `None` when the rule is no longer there).
    pub covered: Option<usize>,
    /// Calls it recorded it would have acted on.
    pub fired: Tally,
    /// Of those, how many policy allowed then: what enforcing a deny rule would have
    /// refused.
    pub fired_allowed: usize,
}

/// Summarises the shadow outcomes recorded in `log`; `policy` (the current one) says
/// which rules are in shadow mode now and which tools each covers.
pub fn shadow_report(log: &Log, current: Option<&Catalog>, examples: usize) -> ShadowReport {
    let policy = current.map(|c| &c.policy);
    let mut rules: Vec<ShadowRule> = Vec::new();
    let info = policy.map(Policy::rules_info).unwrap_or_default();
    for r in info
        .iter()
        .filter(|r| r.mode == crate::config::policy::Mode::Shadow)
    {
        rules.push(ShadowRule {
            id: r.id.clone(),
            effect: crate::policy::effect_name(r.effect).to_owned(),
            now: "shadow",
            covered: Some(0),
            fired: Tally::default(),
            fired_allowed: 0,
        });
    }
    let mut reached = 0;
    for rec in &log.calls {
        if rec.seen().is_none() {
            continue;
        }
        reached += 1;
        let before = match (rec.allowed_then(), rec.denied_by()) {
            (Some(false), Some(by)) => format!("denied by {by}"),
            (Some(false), None) => "denied".to_owned(),
            _ => "allowed".to_owned(),
        };
        for entry in &rec.shadow {
            let (id, effect) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
            let at = match rules.iter().position(|r| r.id == id) {
                Some(at) => at,
                None => {
                    let now = info
                        .iter()
                        .find(|r| r.id == id)
                        .map_or("absent", |r| mode_name(r.mode));
                    rules.push(ShadowRule {
                        id: id.to_owned(),
                        effect: effect.to_owned(),
                        now,
                        covered: (now != "absent").then_some(0),
                        fired: Tally::default(),
                        fired_allowed: 0,
                    });
                    rules.len() - 1
                }
            };
            if let Some(r) = rules.get_mut(at) {
                let after = format!("would {}", if effect.is_empty() { "act" } else { effect });
                r.fired.add(rec, &before, &after, examples);
                if rec.allowed_then() == Some(true) {
                    r.fired_allowed += 1;
                }
            }
        }
        if let Some(tool) = current.and_then(|c| c.get(&rec.tool)) {
            let request = super::request_of(tool);
            for r in &mut rules {
                let covers = policy.and_then(|p| p.rule_covers(&r.id, &tool.id, &request));
                if let (Some(n), Some(true)) = (&mut r.covered, covers) {
                    *n += 1;
                }
            }
        }
    }
    ShadowReport {
        files: log.files.clone(),
        records: log.records,
        chains: log.chains(),
        period: log.period().map(|(a, b)| (a.to_owned(), b.to_owned())),
        calls: log.calls.len(),
        reached_policy: reached,
        rules,
    }
}
