//! `mcpd idempotency list` and `mcpd idempotency resolve`: the keys operators look after,
//! read from (and written to) the state store a running `mcpd serve` shares.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::Vars;
use crate::idempotency::operator::{self, Resolution, State};
use crate::util::duration::human;

/// What to do.
#[derive(Debug)]
pub(super) enum Action {
    /// List keys (of one tool; only the held ones).
    List { tool: Option<String>, held: bool },
    /// Settle a held key.
    Resolve {
        key: String,
        tool: String,
        actor: Option<String>,
        to: Resolution,
        by: String,
    },
}

/// What a resolution leaves in the audit log.
#[derive(Debug, Serialize)]
struct Resolved<'a> {
    event: &'static str,
    tool: &'a str,
    idempotency_key: &'a str,
    owner: &'a str,
    resolution: &'static str,
    by: &'a str,
    /// The held call's trace: its record of intent is closed by this one.
    trace_id: &'a str,
}

/// Runs one action against the state store the config names.
pub(super) async fn run(dir: &Path, action: Action) -> anyhow::Result<ExitCode> {
    let (loaded, catalog) = super::load(dir, &Vars::from_env())?;
    let store = super::open_store(dir, &loaded.server.1).await?;
    let now = crate::util::Clock::system().now_ms();
    match action {
        Action::List { tool, held } => {
            let entries = operator::list(store.as_ref(), tool.as_deref()).await?;
            let entries: Vec<_> = entries
                .into_iter()
                .filter(|e| !held || matches!(e.state, State::Held(_)))
                .collect();
            if entries.is_empty() {
                outln!("no {}idempotency keys", if held { "held " } else { "" });
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{:<20} {:<32} {:<20} {:<9} {:>9} {:>13}  detail",
                "tool",
                "key",
                "actor",
                "state",
                "age",
                "expires in"
            );
            for e in entries {
                let age = if e.call.at_ms > 0 {
                    human(std::time::Duration::from_millis(
                        now.saturating_sub(e.call.at_ms),
                    ))
                } else {
                    "-".to_owned()
                };
                let detail = match &e.state {
                    State::InFlight(lapses_in) => format!("lease lapses in {}", human(*lapses_in)),
                    State::Held(why) => format!("outcome unknown: {why}"),
                    State::Done(status, None) => format!("status {status}"),
                    State::Done(status, Some(by)) => format!("status {status}, settled by {by}"),
                };
                let trace = if e.call.trace_id.is_empty() {
                    String::new()
                } else {
                    format!(" (trace {})", e.call.trace_id)
                };
                outln!(
                    "{:<20} {:<32} {:<20} {:<9} {age:>9} {:>13}  {detail}{trace}",
                    e.tool,
                    e.key,
                    e.owner,
                    e.state.word(),
                    human(e.expires_in)
                );
            }
        }
        Action::Resolve {
            key,
            tool,
            actor,
            to,
            by,
        } => {
            if catalog.get(&tool).is_none() {
                eprintln!(
                    "note: no tool '{tool}' in this config; resolving its key in the state store anyway"
                );
            }
            // A resolution is audited like a call: open the log before changing anything.
            let audit = super::open_audit(dir, &loaded.server.1)?;
            let entry =
                operator::resolve(store.as_ref(), &tool, &key, actor.as_deref(), to, &by, now)
                    .await?;
            let word = match to {
                Resolution::SentOk => "sent-ok",
                Resolution::NotSent => "not-sent",
            };
            if let Some(audit) = &audit {
                audit.record(&Resolved {
                    event: "resolve",
                    tool: &entry.tool,
                    idempotency_key: &entry.key,
                    owner: &entry.owner,
                    resolution: word,
                    by: &by,
                    trace_id: &entry.call.trace_id,
                });
                audit.flush();
            }
            match to {
                Resolution::SentOk => outln!(
                    "resolved {tool} key '{key}' ({}) as sent: retries now get a success and nothing is sent",
                    entry.owner
                ),
                Resolution::NotSent => outln!(
                    "resolved {tool} key '{key}' ({}) as not sent: the key is released and the next call sends the write",
                    entry.owner
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
