//! Stop rules against runaway agent loops: `stop.max_calls` (one actor, all tools) and
//! `stop.repeats` (one actor, one tool, the same arguments).
//!
//! Owns their compiled form, their counter keys and their refusal messages. Counting is
//! done by [`super::Limits::admit`] with the other limits, in one store write.

use std::path::Path;
use std::time::Duration;

use super::Rate;
use crate::config::Located;
use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::policy::PolicySpec;
use crate::store::ns;
use crate::util::duration::human;

/// The compiled `stop` section of policies.yaml.
#[derive(Debug, Default)]
pub struct StopRules {
    /// Calls per actor, all tools.
    pub max_calls: Option<Rate>,
    /// Identical calls (same actor, tool and arguments).
    pub repeats: Option<Rate>,
}

impl StopRules {
    /// Compiles the section, reporting a bad rate at its position in `path`.
    pub fn compile(path: &Path, spec: &PolicySpec, diags: &mut Diagnostics) -> Self {
        let mut rate = |field: &str, r: Option<&Located<String>>| {
            r.and_then(|r| {
                Rate::parse(&r.value)
                    .map_err(|e| diags.push(Diagnostic::new(path, r.pos, format!("{field}: {e}"))))
                    .ok()
            })
        };
        Self {
            max_calls: rate("stop.max_calls", spec.stop.max_calls.as_ref()),
            repeats: rate("stop.repeats", spec.stop.repeats.as_ref()),
        }
    }
}

/// The counter of `max_calls` for `actor`.
pub(super) fn max_calls_key(actor: &str) -> String {
    format!("{}*stop:{actor}", ns::RATE)
}

/// The counter of `repeats` for `actor` calling `tool` with arguments of `digest`.
pub(super) fn repeats_key(actor: &str, tool: &str, digest: &str) -> String {
    format!("{}*repeat:{actor}:{tool}:{digest}", ns::RATE)
}

/// What the model reads when `max_calls` stops `actor`.
pub(super) fn max_calls_message(
    actor: &str,
    rate: Rate,
    total: u64,
    resets_in: Duration,
) -> String {
    format!(
        "stop rule max_calls: '{actor}' made {total} calls in {} (limit {rate}); this looks like a runaway loop, so further calls are refused for {}. Stop and report to the user instead of retrying",
        window_name(rate.window),
        human(resets_in)
    )
}

/// What the model reads when `repeats` stops `actor` on `tool`.
pub(super) fn repeats_message(
    actor: &str,
    tool: &str,
    rate: Rate,
    total: u64,
    resets_in: Duration,
) -> String {
    format!(
        "stop rule repeats: '{actor}' called {tool} with the same arguments {total} times in {} (limit {rate}); repeating will not change the answer. Change the arguments or stop; identical calls are refused for {}",
        window_name(rate.window),
        human(resets_in)
    )
}

fn window_name(d: Duration) -> String {
    match d.as_secs() {
        1 => "1 s".to_owned(),
        60 => "1 min".to_owned(),
        3600 => "1 hour".to_owned(),
        _ => "1 day".to_owned(),
    }
}
