//! Write tools that escape a rule guarding their upstream's other writes: the warning
//! `mcpd validate` gives when a new tool file reaches an endpoint family that a deny or
//! require rule protects, under an id (or a path) the rule does not select.
//!
//! Owns that check, on what tools are before any call (upstream, method, path
//! template). It must not decide calls, and a warning never fails validation: a tool
//! may escape on purpose.

use std::path::Path;

use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::policy::{Effect, Mode};

use super::request::Reach;
use super::{Policy, Request};

/// Methods that change something upstream.
const WRITES: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];

/// A tool as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct WriteTool<'a> {
    /// The tool id.
    pub id: &'a str,
    /// Its upstream.
    pub upstream: &'a str,
    /// Its HTTP method, upper case.
    pub method: &'a str,
    /// Its path template with each `{{ }}` as `*`.
    pub path_shape: &'a str,
    /// The file it is declared in.
    pub file: &'a Path,
    /// Where its `name` is.
    pub pos: Pos,
}

impl Policy {
    /// One warning per write tool and enforced deny or require rule that selects some
    /// of the other write tools on the tool's upstream but can never select this one.
    pub fn escapes(&self, tools: &[WriteTool<'_>]) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let writes: Vec<&WriteTool<'_>> = tools
            .iter()
            .filter(|t| WRITES.contains(&t.method))
            .collect();
        let guards = self.rules.iter().filter(|r| {
            r.mode == Mode::Enforce
                && matches!(r.effect, Effect::Deny | Effect::Require)
                && (!r.tools.is_empty() || r.matches.is_some())
        });
        for rule in guards {
            let reaches = |t: &WriteTool<'_>| {
                let request = Request {
                    upstream: t.upstream,
                    method: t.method,
                    path_shape: t.path_shape,
                    sent: None,
                };
                rule.reach(t.id, &request) != Reach::Never
            };
            for t in writes.iter().filter(|t| !reaches(t)) {
                let guarded: Vec<&str> = writes
                    .iter()
                    .filter(|o| o.upstream == t.upstream && reaches(o))
                    .map(|o| o.id)
                    .collect();
                if guarded.is_empty() {
                    continue;
                }
                diags.push(Diagnostic::new(
                    t.file,
                    t.pos,
                    format!(
                        "warning: tool '{}' ({} {} on upstream '{}') escapes rule '{}', which guards the other writes to '{}' ({}): add it to the rule's tools, or select what calls do with match: {{ upstream: {}, methods: [...], path: \"...\" }}",
                        t.id,
                        t.method,
                        t.path_shape,
                        t.upstream,
                        rule.id,
                        t.upstream,
                        guarded.join(", "),
                        t.upstream,
                    ),
                ));
            }
        }
        diags.sort();
        diags
    }
}
