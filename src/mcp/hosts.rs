//! What MCP hosts leave out or refuse of a tool, found before a host is pointed at mcpd:
//! `mcpd validate` warns about it, `mcpd host-config HOST` lists it for that host.
//!
//! Owns the hosts' known limits and the words for them: a wire name that passes a
//! host's length limit once the host adds its prefix (Cursor: server name + tool name
//! at most 60; Claude Code: `mcp__SERVER__TOOL` at most 64), and input schemas or
//! descriptions that the models behind hosts refuse (top-level `oneOf`/`anyOf`/`allOf`,
//! `type` lists with `null`, `$ref`, descriptions over 1024 characters). It reads what
//! was loaded and changes nothing that is served: these are warnings, never errors.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

use crate::catalog::wire_name;
use crate::config::Loaded;
use crate::config::diag::{Diagnostic, Pos};

/// The hosts mcpd knows the limits of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HostKind {
    ClaudeDesktop,
    ClaudeCode,
    VsCode,
    Cursor,
    Continue,
}

impl HostKind {
    /// Every host, in the order messages name them.
    pub(crate) const ALL: [Self; 5] = [
        Self::ClaudeDesktop,
        Self::ClaudeCode,
        Self::VsCode,
        Self::Cursor,
        Self::Continue,
    ];

    /// The host's name as its users know it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "Claude Desktop",
            Self::ClaudeCode => "Claude Code",
            Self::VsCode => "VS Code",
            Self::Cursor => "Cursor",
            Self::Continue => "Continue",
        }
    }
}

/// Cursor leaves out a tool whose server name and tool name together pass this.
const CURSOR_MAX: usize = 60;
/// Claude Code's `mcp__SERVER__TOOL` must stay within this.
const CLAUDE_CODE_MAX: usize = 64;
/// OpenAI models take function descriptions up to this many characters.
const DESCRIPTION_MAX: usize = 1024;
/// The hosts whose models may be OpenAI's or Gemini's (the user picks the model).
const MULTI_MODEL: &[HostKind] = &[HostKind::VsCode, HostKind::Cursor, HostKind::Continue];

/// One tool a host will leave out or refuse, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostWarning {
    /// The tool file.
    pub file: PathBuf,
    /// Where in it.
    pub pos: Pos,
    /// The tool's id.
    pub tool: String,
    /// The hosts it applies to.
    pub hosts: Vec<HostKind>,
    /// What they do with it, and what to change.
    pub message: String,
}

impl HostWarning {
    /// Whether `host` is among the hosts it applies to.
    pub(crate) fn applies_to(&self, host: HostKind) -> bool {
        self.hosts.contains(&host)
    }

    /// As a `file:line:col: warning: ...` line.
    pub(crate) fn diagnostic(&self) -> Diagnostic {
        Diagnostic::new(&self.file, self.pos, self.to_string())
    }
}

impl fmt::Display for HostWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: tool '{}': {}", self.tool, self.message)
    }
}

/// Every tool in `loaded` a host will leave out or refuse, served under `server` (the
/// server's name in the host's config).
pub(crate) fn check(loaded: &Loaded, server: &str) -> Vec<HostWarning> {
    let mut out = Vec::new();
    for file in &loaded.tools {
        for spec in &file.tools {
            let id = &spec.name.value;
            let wire = wire_name(id);
            let mut warn = |pos: Pos, hosts: &[HostKind], message: String| {
                out.push(HostWarning {
                    file: file.path.clone(),
                    pos,
                    tool: id.clone(),
                    hosts: hosts.to_vec(),
                    message,
                });
            };
            let at_name = spec.name.pos;
            let cursor = server.len() + wire.len();
            if cursor > CURSOR_MAX {
                warn(
                    at_name,
                    &[HostKind::Cursor],
                    format!(
                        "Cursor leaves it out: server name '{server}' and tool name '{wire}' \
                         together are {cursor} characters, over Cursor's {CURSOR_MAX}; \
                         shorten the tool's name (or the server's, host-config --name)"
                    ),
                );
            }
            let claude_code = format!("mcp__{server}__{wire}");
            if claude_code.len() > CLAUDE_CODE_MAX {
                warn(
                    at_name,
                    &[HostKind::ClaudeCode],
                    format!(
                        "Claude Code leaves it out: it names the tool '{claude_code}', {} \
                         characters, over its {CLAUDE_CODE_MAX}; shorten the tool's name (or \
                         the server's, host-config --name)",
                        claude_code.len()
                    ),
                );
            }
            let chars = spec.description.chars().count();
            if chars > DESCRIPTION_MAX {
                warn(
                    at_name,
                    MULTI_MODEL,
                    format!(
                        "its description is {chars} characters; OpenAI models take at most \
                         {DESCRIPTION_MAX}, so VS Code, Cursor and Continue cut or refuse it \
                         with one: keep it short and move detail into the arguments' \
                         descriptions"
                    ),
                );
            }
            let schema: &Value = &spec.input.value;
            let at_input = spec.input.pos;
            if let Some(k) = ["oneOf", "anyOf", "allOf"]
                .into_iter()
                .find(|k| schema.get(k).is_some())
            {
                warn(
                    at_input,
                    &HostKind::ALL,
                    format!(
                        "its input schema has '{k}' at the top level, which the Anthropic API \
                         refuses (Claude Desktop and Claude Code, and the other hosts with a \
                         Claude model): move the alternatives into a property, or describe \
                         them in the description"
                    ),
                );
            }
            if let Some(at) = find(schema, "", &|v| {
                v.get("type")
                    .and_then(Value::as_array)
                    .is_some_and(|types| types.iter().any(|t| t == "null"))
            }) {
                warn(
                    at_input,
                    MULTI_MODEL,
                    format!(
                        "its input schema has a type list with null at '{}' (type: [..., \
                         null]), which Gemini models refuse and VS Code, Cursor and Continue \
                         pass on to them: make the argument optional instead (leave it out of \
                         'required')",
                        or_root(&at)
                    ),
                );
            }
            if let Some(at) = find(schema, "", &|v| v.get("$ref").is_some()) {
                let target = schema
                    .pointer(&at)
                    .and_then(|v| v.get("$ref"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let resolves = target
                    .strip_prefix('#')
                    .is_some_and(|p| schema.pointer(p).is_some());
                let (hosts, why): (&[HostKind], &str) = if resolves {
                    (
                        MULTI_MODEL,
                        "hosts pass the schema on as is, and models that do not resolve \
                         references (Gemini, in VS Code, Cursor and Continue) refuse it",
                    )
                } else {
                    (
                        &HostKind::ALL,
                        "it does not resolve within the schema, so no host can read it",
                    )
                };
                warn(
                    at_input,
                    hosts,
                    format!(
                        "its input schema has '$ref: {target}' at '{}': {why}; inline the \
                         definition",
                        or_root(&at)
                    ),
                );
            }
        }
    }
    out
}

/// The JSON pointer of the first place in `v` (depth first) where `pred` holds.
fn find(v: &Value, at: &str, pred: &dyn Fn(&Value) -> bool) -> Option<String> {
    if pred(v) {
        return Some(at.to_owned());
    }
    match v {
        Value::Object(o) => o.iter().find_map(|(k, child)| {
            let key = k.replace('~', "~0").replace('/', "~1");
            find(child, &format!("{at}/{key}"), pred)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, child)| find(child, &format!("{at}/{i}"), pred)),
        _ => None,
    }
}

fn or_root(at: &str) -> &str {
    if at.is_empty() { "/" } else { at }
}

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod tests;
