//! Backtesting a policy on recorded calls (`mcpd backtest`) and reading what shadow
//! rules did (`mcpd shadow report`): evidence before a rule is enforced.
//!
//! Owns replaying each verified call record through a candidate policy, as it was
//! recorded (arguments redacted as logged, the actor's scopes, purpose and region, the
//! elevation grant that applied, `env`), and comparing the outcome with the decision
//! recorded then; nothing is sent anywhere. What a call's request does (upstream,
//! method, path, query, body: what `match` and `request.*` read) comes from the tool as
//! the config declares it now, rendered again from the recorded arguments with
//! placeholder secrets when a rule needs it. A rule that reads a value the record hides
//! is counted apart, never guessed (`policy::replay`). Calls that ended before policy
//! (identity, arguments, scope) cannot change and are only counted. It must not print
//! (the CLI renders [`Report`]) and must not read a log that did not verify ([`log`]).

pub mod log;
mod shadow;

pub use log::{CallRecord, FileSummary, Log, LogError};
pub use shadow::{ShadowReport, ShadowRule, shadow_report};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit::Verifier;
use crate::catalog::{Catalog, Tool};
use crate::config::policy::Mode;
use crate::policy::{Facts, Hidden, Policy, Recorded, Request, Sent, effect_name, template_hidden};

/// What a candidate policy would have changed over a log.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The log's files, in the order read.
    pub files: Vec<FileSummary>,
    /// Records of every kind in the log.
    pub records: u64,
    /// Chains the files form (1 when each continues the one before).
    pub chains: usize,
    /// The first and last call records' times.
    pub period: Option<(String, String)>,
    /// Call records.
    pub calls: usize,
    /// Calls that ended before policy (identity, arguments, scope): no policy changes them.
    pub before_policy: usize,
    /// Call records written before mcpd recorded what policy saw: not replayed.
    pub not_recorded: usize,
    /// Calls of tools the config no longer declares: not replayed (what their request
    /// did is unknown).
    pub tool_gone: usize,
    /// Calls replayed through the candidate.
    pub replayed: usize,
    /// Replayed calls allowed then and denied by the candidate.
    pub newly_denied: usize,
    /// Replayed calls denied then and allowed by the candidate.
    pub newly_allowed: usize,
    /// Replayed calls whose decision under the candidate depends on a value the record
    /// hides (redacted, or not recorded).
    pub undecided: usize,
    /// Replayed calls decided as they were then.
    pub unchanged: usize,
    /// Per rule of the candidate (file order), then `default`, then rules that denied
    /// calls then and are gone from the candidate.
    pub rules: Vec<RuleReport>,
}

/// What one rule would change.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule id, or `default`.
    pub id: String,
    /// `enforce`, `shadow`, or `absent` (not in the candidate).
    pub mode: &'static str,
    /// Its effect (empty for `default` and absent rules).
    pub effect: &'static str,
    /// Calls allowed then that it denies (for a shadow rule: would deny if enforced).
    pub newly_denies: Tally,
    /// Calls it denied then that the candidate allows.
    pub newly_allows: Tally,
    /// Calls it applies to but cannot be judged on: it reads a value that was redacted
    /// before it was recorded.
    pub unjudged_redacted: Tally,
    /// Calls it applies to but cannot be judged on: it reads what the record does not
    /// hold (elevation, where the caller's grants were not looked up).
    pub unjudged_not_recorded: Tally,
}

/// Calls counted, by tool and actor, with a few examples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// How many.
    pub calls: usize,
    /// By tool id.
    pub by_tool: BTreeMap<String, usize>,
    /// By actor (subject).
    pub by_actor: BTreeMap<String, usize>,
    /// The first few, as recorded.
    pub examples: Vec<Example>,
}

/// One call, as recorded (arguments redacted as in the log), with the decision before
/// and after.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// Its `seq`.
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    /// Who.
    pub actor: String,
    /// The tool.
    pub tool: String,
    /// The arguments, as recorded.
    pub args: Value,
    /// The decision recorded then: `allowed` or `denied by RULE`.
    pub before: String,
    /// The candidate's: `allowed`, `denied by RULE`, or `undecided`.
    pub after: String,
}

impl Tally {
    fn add(&mut self, rec: &CallRecord, before: &str, after: &str, examples: usize) {
        self.calls += 1;
        *self.by_tool.entry(rec.tool.clone()).or_default() += 1;
        *self.by_actor.entry(rec.actor.clone()).or_default() += 1;
        if self.examples.len() < examples {
            self.examples.push(Example {
                seq: rec.seq,
                time: rec.time.clone(),
                actor: rec.actor.clone(),
                tool: rec.tool.clone(),
                args: rec.args.clone(),
                before: before.to_owned(),
                after: after.to_owned(),
            });
        }
    }
}

impl RuleReport {
    fn new(id: &str, mode: &'static str, effect: &'static str) -> Self {
        Self {
            id: id.to_owned(),
            mode,
            effect,
            newly_denies: Tally::default(),
            newly_allows: Tally::default(),
            unjudged_redacted: Tally::default(),
            unjudged_not_recorded: Tally::default(),
        }
    }
}

/// The facts a call record holds, as policy reads them.
pub(crate) struct RecordFacts {
    actor: Value,
    env: Value,
    elevation: Option<Value>,
    elevation_known: bool,
}

impl RecordFacts {
    /// From a record's `policy` (what policy saw): the actor with its subject back in.
    pub(crate) fn of(rec: &CallRecord, seen: &Value) -> Self {
        let mut actor = match seen.get("actor") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        actor.insert("subject".to_owned(), Value::String(rec.actor.clone()));
        let elevation = seen.get("elevation");
        Self {
            actor: Value::Object(actor),
            env: seen.get("env").cloned().unwrap_or(Value::Null),
            elevation: elevation.filter(|e| !e.is_null()).cloned(),
            elevation_known: elevation.is_some(),
        }
    }

    pub(crate) fn recorded<'a>(
        &'a self,
        rec: &'a CallRecord,
        request: Request<'a>,
        request_hidden: Option<Hidden>,
    ) -> Recorded<'a> {
        Recorded {
            facts: Facts {
                tool: &rec.tool,
                request,
                args: &rec.args,
                actor: &self.actor,
                elevation: self.elevation.as_ref(),
                env: &self.env,
            },
            redacted: &rec.redacted,
            elevation_known: self.elevation_known,
            request_hidden,
        }
    }
}

/// What a call of `tool` does, as policy selects on it (not rendered).
fn request_of(tool: &Tool) -> Request<'_> {
    Request {
        upstream: &tool.request.upstream.name,
        method: tool.request.method.as_str(),
        path_shape: &tool.request.path_shape,
        sent: None,
    }
}

/// The request a recorded call sent, rendered again from its recorded arguments (with
/// placeholder secrets), or why it cannot be trusted.
fn render(tool: &Tool, rec: &CallRecord) -> (Option<Sent>, Option<Hidden>) {
    let hidden = template_hidden(&tool.request_reads, &rec.redacted);
    let Ok(secrets) = tool.secrets.as_ref() else {
        return (None, Some(Hidden::NotRecorded));
    };
    let args = crate::template::to_value(&rec.args);
    match (tool.request).render_parts(&tool.id, &tool.templates, &args, secrets) {
        Ok(p) => {
            let sent = Sent::new(
                &tool.request.upstream.name,
                tool.request.method.as_str(),
                &p.path,
                &p.query,
                p.body.as_ref(),
            );
            (Some(sent), hidden)
        }
        Err(_) => (None, Some(hidden.unwrap_or(Hidden::NotRecorded))),
    }
}

/// A candidate policy replaying call records one at a time (as [`log::read`] hands them
/// on), gathering the report.
#[derive(Debug)]
pub struct Replay<'a> {
    candidate: &'a Policy,
    catalog: &'a Catalog,
    examples: usize,
    rules: Vec<RuleReport>,
    /// `default` and rules gone from the candidate.
    extra: Vec<RuleReport>,
    report: Report,
}

impl<'a> Replay<'a> {
    /// Replays through `candidate`; `catalog` (compiled with placeholder secrets) says
    /// what each tool's request does. `examples` caps the examples kept per count.
    pub fn new(candidate: &'a Policy, catalog: &'a Catalog, examples: usize) -> Self {
        let rules = candidate
            .rules_info()
            .iter()
            .map(|r| RuleReport::new(&r.id, mode_name(r.mode), effect_name(r.effect)))
            .collect();
        Self {
            candidate,
            catalog,
            examples,
            rules,
            extra: Vec::new(),
            report: Report {
                files: Vec::new(),
                records: 0,
                chains: 0,
                period: None,
                calls: 0,
                before_policy: 0,
                not_recorded: 0,
                tool_gone: 0,
                replayed: 0,
                newly_denied: 0,
                newly_allowed: 0,
                undecided: 0,
                unchanged: 0,
                rules: Vec::new(),
            },
        }
    }

    /// Replays one call record (if it reached policy) and compares the outcome with the
    /// decision recorded then.
    pub fn add(&mut self, rec: &CallRecord) {
        let seen = match &rec.policy {
            None => {
                self.report.not_recorded += 1;
                return;
            }
            Some(None) => {
                self.report.before_policy += 1;
                return;
            }
            Some(Some(seen)) => seen,
        };
        let Some(allowed_then) = rec.allowed_then() else {
            self.report.not_recorded += 1;
            return;
        };
        let Some(tool) = self.catalog.get(&rec.tool) else {
            self.report.tool_gone += 1;
            return;
        };
        self.report.replayed += 1;
        let facts = RecordFacts::of(rec, seen);
        let mut request = request_of(tool);
        let (sent, request_hidden) = if self.candidate.needs_request(&tool.id, &request) {
            render(tool, rec)
        } else {
            (None, None)
        };
        request.sent = sent.as_ref();
        let replayed = self
            .candidate
            .replay(&facts.recorded(rec, request, request_hidden));
        let before = match rec.denied_by() {
            Some(rule) if !allowed_then => format!("denied by {rule}"),
            _ if !allowed_then => "denied".to_owned(),
            _ => "allowed".to_owned(),
        };
        let after = match (&replayed.allowed, &replayed.denial) {
            (None, _) => "undecided".to_owned(),
            (Some(true), _) => "allowed".to_owned(),
            (Some(false), Some((rule, _))) => format!("denied by {rule}"),
            (Some(false), None) => "denied".to_owned(),
        };
        for (i, hidden) in replayed.hidden.iter().enumerate() {
            let Some(r) = self.rules.get_mut(i) else {
                continue;
            };
            match hidden {
                Some(Hidden::Redacted) => {
                    r.unjudged_redacted.add(rec, &before, &after, self.examples)
                }
                Some(Hidden::NotRecorded) => {
                    r.unjudged_not_recorded
                        .add(rec, &before, &after, self.examples);
                }
                None => {}
            }
        }
        if allowed_then {
            // Every rule that would deny it (shadow rules: if they were enforced).
            let mut by_rule = false;
            for (i, o) in replayed.outcomes.iter().enumerate() {
                let known = replayed.hidden.get(i).is_some_and(Option::is_none);
                if known
                    && o.would_deny
                    && let Some(r) = self.rules.get_mut(i)
                {
                    if o.mode == Mode::Shadow {
                        let after = format!("{after} (denied by {} if enforced)", o.id);
                        r.newly_denies.add(rec, &before, &after, self.examples);
                    } else {
                        r.newly_denies.add(rec, &before, &after, self.examples);
                    }
                    by_rule |= o.mode == Mode::Enforce;
                }
            }
            if replayed.allowed == Some(false)
                && !by_rule
                && let Some(r) = rule_entry(&mut self.extra, "default", "enforce", "")
            {
                r.newly_denies.add(rec, &before, &after, self.examples);
            }
        } else if replayed.allowed == Some(true) {
            let id = rec.denied_by().unwrap_or("default");
            let entry = match self.rules.iter_mut().find(|r| r.id == id) {
                Some(r) => Some(r),
                None if id == "default" => rule_entry(&mut self.extra, id, "enforce", ""),
                None => rule_entry(&mut self.extra, id, "absent", ""),
            };
            if let Some(r) = entry {
                r.newly_allows.add(rec, &before, &after, self.examples);
            }
        }
        match (allowed_then, replayed.allowed) {
            (_, None) => self.report.undecided += 1,
            (true, Some(false)) => self.report.newly_denied += 1,
            (false, Some(true)) => self.report.newly_allowed += 1,
            _ => self.report.unchanged += 1,
        }
    }

    /// The report, for the verified `log` the records came from.
    pub fn finish(mut self, log: &Log) -> Report {
        self.extra.sort_by_key(|r| r.id != "default");
        self.rules.extend(self.extra);
        Report {
            files: log.files.clone(),
            records: log.records,
            chains: log.chains(),
            period: log.period.clone(),
            calls: log.calls,
            rules: self.rules,
            ..self.report
        }
    }
}

/// Verifies the log in `paths` and replays every call record that reached policy
/// through `candidate` ([`Replay`]). Nothing is reported unless the whole log verified.
///
/// # Errors
/// The log does not verify.
pub fn backtest(
    paths: &[PathBuf],
    verifier: &Verifier,
    candidate: &Policy,
    catalog: &Catalog,
    examples: usize,
) -> Result<Report, LogError> {
    let mut replay = Replay::new(candidate, catalog, examples);
    let log = log::read(paths, verifier, |rec| replay.add(rec))?;
    Ok(replay.finish(&log))
}

/// The entry for `id` in `list`, added when it is not there yet.
fn rule_entry<'a>(
    list: &'a mut Vec<RuleReport>,
    id: &str,
    mode: &'static str,
    effect: &'static str,
) -> Option<&'a mut RuleReport> {
    match list.iter().position(|r| r.id == id) {
        Some(at) => list.get_mut(at),
        None => {
            list.push(RuleReport::new(id, mode, effect));
            list.last_mut()
        }
    }
}

/// A mode as policies.yaml writes it.
pub(crate) fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}

#[cfg(test)]
mod tests;
