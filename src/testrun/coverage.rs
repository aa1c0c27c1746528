//! Rule coverage (`mcpd test --coverage`, `mcpd validate --strict`): for every enforced
//! rule, whether some passing case made it match and some made it not match.
//!
//! Owns what counts. A case's call is replayed through the same policy with exactly
//! what policy saw of it (the engine's record of the actor, grant and `env`), so the
//! per-rule outcomes are the ones that decided the call. A rule *matches* a case when it
//! covers the case's tool and its condition holds (a rule without a condition: when it
//! covers the tool); it *does not match* when it covers the tool and its condition is
//! false, or its `match.path` turns the call away (without a condition: when the case
//! calls a tool it does not select). A rule
//! with no condition that covers every tool cannot not match, and needs only a match.
//! A condition that failed to evaluate counts as neither. Only passing cases count: a
//! case that fails its expectations proves nothing about the rules. It must not print.

use serde_json::{Map, Value};

use super::{CaseReport, Verdict};
use crate::catalog::Catalog;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::policy::{Effect, Mode};
use crate::engine::{CallResult, Elevation};
use crate::policy::{Facts, Request, RuleInfo, RuleOutcome};

/// How each rule came out for a call, replayed with what policy saw of it; `None` when
/// the call ended before policy.
pub(crate) fn outcomes(
    catalog: &Catalog,
    args: &Map<String, Value>,
    result: &CallResult,
) -> Option<Vec<RuleOutcome>> {
    let seen = result.policy.as_ref()?;
    let tool = catalog.get(&result.tool)?;
    let args = Value::Object(args.clone());
    let elevation = match &seen.elevation {
        Elevation::Grant(g) => Some(g),
        Elevation::None | Elevation::NotRead => None,
    };
    let request = Request {
        upstream: &tool.request.upstream.name,
        method: tool.request.method.as_str(),
        path_shape: &tool.request.path_shape,
        sent: seen.sent.as_ref(),
    };
    let decision = catalog.policy.explain(&Facts {
        tool: &result.tool,
        request,
        args: &args,
        actor: &seen.actor,
        elevation,
        env: &seen.env,
    });
    Some(decision.outcomes)
}

/// One enforced rule's coverage.
#[derive(Debug, Clone)]
pub(crate) struct RuleCoverage {
    /// The rule.
    pub info: RuleInfo,
    /// Passing cases that made it match: how many, and the first one's name.
    pub matched: (usize, Option<String>),
    /// Passing cases that made it not match.
    pub unmatched: (usize, Option<String>),
    /// Passing cases whose call failed its condition (fail closed).
    pub failed: usize,
}

impl RuleCoverage {
    /// Whether some call can fail to match it.
    pub(crate) fn can_miss(&self) -> bool {
        self.info.conditional || !self.info.every_tool
    }

    /// Whether both ways (or the one it has) were seen.
    pub(crate) fn full(&self) -> bool {
        self.matched.0 > 0 && (self.unmatched.0 > 0 || !self.can_miss())
    }

    /// A rule `validate --strict` holds to both: an enforced deny or require rule.
    pub(crate) fn guards(&self) -> bool {
        matches!(self.info.effect, Effect::Deny | Effect::Require)
    }
}

/// Coverage of every enforced rule of `rules` (file order) by the passing cases.
pub(crate) fn coverage(rules: &[RuleInfo], reports: &[CaseReport]) -> Vec<RuleCoverage> {
    let mut out: Vec<(usize, RuleCoverage)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.mode == Mode::Enforce)
        .map(|(i, r)| {
            let c = RuleCoverage {
                info: r.clone(),
                matched: (0, None),
                unmatched: (0, None),
                failed: 0,
            };
            (i, c)
        })
        .collect();
    for report in reports {
        let (Verdict::Pass, Some(outcomes)) = (&report.verdict, &report.rules) else {
            continue;
        };
        for (i, c) in &mut out {
            let Some(o) = outcomes.get(*i) else { continue };
            let bump = |slot: &mut (usize, Option<String>)| {
                slot.0 += 1;
                slot.1.get_or_insert_with(|| report.name.clone());
            };
            match (o.applies, o.matched, &o.error) {
                (true, _, Some(_)) => c.failed += 1,
                (true, true, None) => bump(&mut c.matched),
                (true, false, None) => bump(&mut c.unmatched),
                (false, _, _) if !c.info.conditional || o.path_mismatch => {
                    bump(&mut c.unmatched);
                }
                (false, _, _) => {}
            }
        }
    }
    out.into_iter().map(|(_, c)| c).collect()
}

/// What `validate --strict` reports: every enforced deny or require rule no passing case
/// makes match, or makes not match, at its place in policies.yaml.
pub(crate) fn strict_problems(policy_file: &std::path::Path, cov: &[RuleCoverage]) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for c in cov.iter().filter(|c| c.guards()) {
        let mut missing = Vec::new();
        if c.matched.0 == 0 {
            missing.push("makes it match");
        }
        if c.can_miss() && c.unmatched.0 == 0 {
            missing.push("makes it not match");
        }
        if !missing.is_empty() {
            diags.push(Diagnostic::new(
                policy_file,
                c.info.pos,
                format!(
                    "rule '{}': no passing case in tests.d {} (--strict wants a case each way for every enforced deny or require rule)",
                    c.info.id,
                    missing.join(" and none ")
                ),
            ));
        }
    }
    diags
}
