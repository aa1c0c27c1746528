//! `mcpd shadow report`: what each shadow rule recorded it would have done over a log's
//! period, so a rule can be promoted (or dropped) on evidence.
//!
//! Owns reading the shadow outcomes call records carry (`shadow: ["id:effect"]`, written
//! when the call was made, by the policy in force then) and setting them against the
//! calls each rule covers. It evaluates nothing: replaying a policy is the backtest's.

use serde::Serialize;

use std::path::PathBuf;

use super::log::{CallRecord, Log, LogError};
use super::{Tally, mode_name};
use crate::audit::Verifier;
use crate::catalog::Catalog;
use crate::config::policy::Mode;
use crate::policy::RuleInfo;

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

/// Verifies the log in `paths` and summarises the shadow outcomes its call records
/// carry; `current` (the config now, compiled with placeholder secrets) says which rules
/// are in shadow mode now and which calls each can select. Nothing is reported unless
/// the whole log verified.
///
/// # Errors
/// The log does not verify.
pub fn shadow_report(
    paths: &[PathBuf],
    verifier: &Verifier,
    current: Option<&Catalog>,
    examples: usize,
) -> Result<ShadowReport, LogError> {
    let mut tally = Shadows::new(current, examples);
    let log = super::log::read(paths, verifier, |rec| tally.add(rec))?;
    Ok(tally.finish(&log))
}

/// The shadow outcomes gathered so far.
struct Shadows<'a> {
    current: Option<&'a Catalog>,
    info: Vec<RuleInfo>,
    /// Per rule of the current policy (file order): calls that reached policy and that
    /// it can select.
    covered: Vec<usize>,
    rules: Vec<ShadowRule>,
    reached: usize,
    examples: usize,
}

impl<'a> Shadows<'a> {
    fn new(current: Option<&'a Catalog>, examples: usize) -> Self {
        let info = current.map(|c| c.policy.rules_info()).unwrap_or_default();
        let rules = info
            .iter()
            .filter(|r| r.mode == Mode::Shadow)
            .map(|r| ShadowRule {
                id: r.id.clone(),
                effect: crate::policy::effect_name(r.effect).to_owned(),
                now: "shadow",
                covered: None,
                fired: Tally::default(),
                fired_allowed: 0,
            })
            .collect();
        Self {
            current,
            covered: vec![0; info.len()],
            info,
            rules,
            reached: 0,
            examples,
        }
    }

    fn add(&mut self, rec: &CallRecord) {
        if rec.seen().is_none() {
            return;
        }
        self.reached += 1;
        let before = match (rec.allowed_then(), rec.denied_by()) {
            (Some(false), Some(by)) => format!("denied by {by}"),
            (Some(false), None) => "denied".to_owned(),
            _ => "allowed".to_owned(),
        };
        for entry in &rec.shadow {
            let (id, effect) = entry.split_once(':').unwrap_or((entry.as_str(), ""));
            let at = match self.rules.iter().position(|r| r.id == id) {
                Some(at) => at,
                None => {
                    let now = self
                        .info
                        .iter()
                        .find(|r| r.id == id)
                        .map_or("absent", |r| mode_name(r.mode));
                    self.rules.push(ShadowRule {
                        id: id.to_owned(),
                        effect: effect.to_owned(),
                        now,
                        covered: None,
                        fired: Tally::default(),
                        fired_allowed: 0,
                    });
                    self.rules.len() - 1
                }
            };
            if let Some(r) = self.rules.get_mut(at) {
                let after = format!("would {}", if effect.is_empty() { "act" } else { effect });
                r.fired.add(rec, &before, &after, self.examples);
                if rec.allowed_then() == Some(true) {
                    r.fired_allowed += 1;
                }
            }
        }
        if let Some((catalog, tool)) = self.current.and_then(|c| c.get(&rec.tool).map(|t| (c, t))) {
            let request = super::request_of(tool);
            for (i, r) in self.info.iter().enumerate() {
                let covers = catalog.policy.rule_covers(&r.id, &tool.id, &request);
                if let (Some(n), Some(true)) = (self.covered.get_mut(i), covers) {
                    *n += 1;
                }
            }
        }
    }

    fn finish(mut self, log: &Log) -> ShadowReport {
        for r in &mut self.rules {
            r.covered = self
                .info
                .iter()
                .position(|i| i.id == r.id)
                .and_then(|i| self.covered.get(i).copied());
        }
        ShadowReport {
            files: log.files.clone(),
            records: log.records,
            chains: log.chains(),
            period: log.period.clone(),
            calls: log.calls,
            reached_policy: self.reached,
            rules: self.rules,
        }
    }
}
